"""Tests for the figure loaders, robustness numbers, figures and figures notebook.

Every test reads a synthetic output tree written to tmp_path: six models, two attack LRs, one
diverged attack (undo_0.3 at lr=0.001) and hand-picked accuracies, so the expected numbers below
can be checked by hand.
"""

import itertools
import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure

from undo_lib import io, plots
from undo_lib.compute import compute_record, timing_record
from undo_lib.config import TrainParams
from undo_lib.losses import lm_loss
from undo_lib.relearn import run_attack, worst_case
from undo_lib.runtime import finish_stage

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "figures.ipynb"

STEPS = (0, 10, 20)
LRS = ("0.001", "0.0003")
DIVERGED_STEP = 7
# Forget accuracy of each (model, attack LR) at STEPS. None marks the diverged attack.
FORGET = {
    ("full", "0.001"): [0.95, 0.96, 0.97],
    ("full", "0.0003"): [0.95, 0.95, 0.96],
    ("oracle", "0.001"): [0.05, 0.20, 0.30],
    ("oracle", "0.0003"): [0.05, 0.10, 0.15],
    ("unlearned", "0.001"): [0.02, 0.80, 0.90],
    ("unlearned", "0.0003"): [0.02, 0.60, 0.85],
    ("distilled", "0.001"): [0.03, 0.40, 0.50],
    ("distilled", "0.0003"): [0.03, 0.45, 0.48],
    ("undo_0.3", "0.001"): None,
    ("undo_0.3", "0.0003"): [0.04, 0.55, 0.70],
    ("undo_0.6", "0.001"): [0.03, 0.30, 0.40],
    ("undo_0.6", "0.0003"): [0.03, 0.35, 0.38],
}
MODELS = ["full", "oracle", "unlearned", "distilled", "undo_0.3", "undo_0.6"]
ORACLE_COMPUTE = {"steps": 4000, "tokens": 1e8, "flops": 1e12, "n_params": 1000, "seconds": 10.0}
STUDENTS = {  # folder, model name, cost fraction (flops, tokens), steps, stopped early
    "distill": ("distilled", (0.35, 0.4), 300, True),
    "undo/alpha_0.3": ("undo_0.3", (0.2, 0.25), 200, True),
    "undo/alpha_0.6": ("undo_0.6", (0.3, 0.35), 250, False),
}


def _history_rows(model, lr, forget):
    if forget is None:
        return [{"step": DIVERGED_STEP, "lr": float(lr), "loss": None, "tokens": None, "forget": None,
                 "retain": None, "acc/multiplication/equation": None,
                 "acc/division/equation": None, "diverged": True, "model": model}]
    # The step-0 lr differs from the folder's grid LR, as a warmup LR would, so the loader must use the folder.
    return [{"step": step, "lr": float(lr) * (0.5 if step == 0 else 1.0), "loss": 2.0 - value,
             "tokens": step * 100, "forget": value, "retain": 0.9,
             "acc/multiplication/equation": value, "acc/division/equation": value / 2, "diverged": False, "model": model}
            for step, value in zip(STEPS, forget)]


def _write_relearn_run(root, model, lr, forget):
    folder = root / "relearn" / model / f"lr_{lr}"
    folder.mkdir(parents=True)
    pd.DataFrame(_history_rows(model, lr, forget)).to_csv(folder / "history.csv", index=False)
    io.write_json(folder / "metrics.json", {"model": model, "lr": float(lr), "diverged": forget is None})


def _stage_record(model, retain, forget, compute):
    return {"model": model, "final": {"retain": retain, "forget": forget, "english_ce": 2.1}, "compute": compute}


def _write_stage_metrics(root):
    io.write_json(root / "pretrain/full/metrics.json", _stage_record("full", 0.99, 0.97, dict(ORACLE_COMPUTE)))
    io.write_json(root / "pretrain/oracle/metrics.json", _stage_record("oracle", 0.98, 0.05, dict(ORACLE_COMPUTE)))
    unlearned = _stage_record("unlearned", 0.95, 0.02, {"steps": 100, "tokens": 2e6, "flops": 5e10})
    io.write_json(root / "unlearn/MaxEnt/metrics.json", dict(unlearned, method="MaxEnt"))
    for folder, (model, (flops, tokens), steps, stopped) in STUDENTS.items():
        record = _stage_record(model, 0.93, 0.03, {"steps": steps, "tokens": 1e6, "flops": 1e10})
        record.update(alpha=plots.undo_alpha(model), beta=0.1, teacher={"retain": 0.95, "forget": 0.02},
                      stopped_early=stopped, cost_fraction={"flops": flops, "tokens": tokens})
        io.write_json(root / folder / "metrics.json", record)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "outputs" / "arithmetic"
    _write_stage_metrics(root)
    for (model, lr), forget in FORGET.items():
        _write_relearn_run(root, model, lr, forget)
    return root


@pytest.fixture
def histories(root):
    return plots.load_relearn_histories(root)


@pytest.fixture
def worst(histories):
    return worst_case(histories)


@pytest.fixture
def summary(root, worst):
    return plots.summary_table(plots.load_stage_metrics(root), worst, robustness_step=20)


# ----------------------------------------------------------------------------------------------
# Names and styles


def test_model_label_known_and_undo():
    assert plots.model_label("full") == "Full model"
    assert plots.model_label("oracle") == "Oracle (data filtering)"
    assert plots.model_label("unlearned") == "Unlearned (MaxEnt)"
    assert plots.model_label("distilled") == "Unlearn-and-Distill"
    assert plots.model_label("undo_0.3") == "UNDO α=0.3"
    assert plots.model_label("something") == "something"


def test_sort_models_puts_undo_by_alpha():
    names = ["undo_0.6", "distilled", "undo_0.25", "full", "oracle", "unlearned", "undo_0.3"]
    assert plots.sort_models(names) == ["full", "oracle", "unlearned", "distilled", "undo_0.25", "undo_0.3", "undo_0.6"]


def test_model_style_consistent_colours():
    assert plots.model_style("undo_0.3") == plots.model_style("undo_0.3")
    assert plots.model_style("undo_0.3")["color"] != plots.model_style("undo_0.6")["color"]
    assert plots.model_style("oracle")["color"] == "black"
    assert plots.model_style("oracle")["linestyle"] == "--"
    assert plots.model_style("unlearned")["color"] == "tab:red"


# ----------------------------------------------------------------------------------------------
# Loaders


def test_load_histories_models_and_order(histories):
    runs = histories[["model", "lr"]].drop_duplicates()
    assert len(runs) == len(FORGET)
    assert list(dict.fromkeys(histories["model"])) == MODELS
    for _, rows in histories.groupby(["model", "lr"]):
        assert list(rows["step"]) == sorted(rows["step"])


def test_load_histories_lr_from_folder(histories):
    # Step 0 rows carry a warmup LR in the csv, and the folder's grid LR replaces it.
    assert set(histories["lr"]) == {0.001, 0.0003}
    step0 = histories[(histories["model"] == "full") & (histories["step"] == 0)]
    assert sorted(step0["lr"]) == [0.0003, 0.001]


def test_load_histories_diverged_flag(histories):
    assert histories["diverged"].dtype == bool
    flagged = histories[histories["diverged"]]
    assert len(flagged) == 1
    assert flagged.iloc[0]["model"] == "undo_0.3"
    assert flagged.iloc[0]["lr"] == 0.001
    assert math.isnan(flagged.iloc[0]["forget"])


def test_load_histories_diverged_from_metrics_json(root):
    csv = root / "relearn/undo_0.3/lr_0.001/history.csv"
    pd.read_csv(csv).drop(columns="diverged").to_csv(csv, index=False)
    histories = plots.load_relearn_histories(root)
    assert histories.loc[histories["diverged"], "model"].tolist() == ["undo_0.3"]


def test_load_histories_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="relearn"):
        plots.load_relearn_histories(tmp_path / "nowhere")


def test_load_histories_invalid_lr_folder(root):
    bad = root / "relearn/full/lr_fast"
    bad.mkdir()
    (bad / "history.csv").write_text("step,forget\n0,0.5\n")
    with pytest.raises(ValueError, match="lr_fast"):
        plots.load_relearn_histories(root)


def test_load_histories_filters_stale_runs(root, caplog):
    _write_relearn_run(root, "undo_0.9", "0.001", [0.1, 0.2, 0.3])
    _write_relearn_run(root, "full", "0.01", [0.9, 0.9, 0.9])
    with caplog.at_level("WARNING", logger="undo_lib.plots"):
        histories = plots.load_relearn_histories(root, alphas=[0.3, 0.6, 0.8], lrs=[0.001, 0.0003])
    assert "undo_0.9" not in set(histories["model"])
    assert 0.01 not in set(histories["lr"])
    assert "alpha 0.8" in caplog.text


def test_load_stage_metrics_keys(root):
    metrics = plots.load_stage_metrics(root)
    assert list(metrics) == MODELS
    assert metrics["unlearned"]["method"] == "MaxEnt"
    assert metrics["undo_0.6"]["cost_fraction"]["flops"] == 0.3


def test_load_stage_metrics_missing_file_warns(root, caplog):
    (root / "distill/metrics.json").unlink()
    with caplog.at_level("WARNING", logger="undo_lib.plots"):
        metrics = plots.load_stage_metrics(root)
    assert "distilled" not in metrics
    assert "distill" in caplog.text


def test_load_stage_metrics_alpha_filter(root):
    metrics = plots.load_stage_metrics(root, alphas=[0.6])
    assert [name for name in metrics if name.startswith("undo_")] == ["undo_0.6"]


def test_load_stage_metrics_none_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stage metrics"):
        plots.load_stage_metrics(tmp_path)


# ----------------------------------------------------------------------------------------------
# Worst case, diverged runs and robustness numbers


def test_worst_case_per_step(worst):
    last = worst[worst["step"] == 20].set_index("model")
    assert last.loc["distilled", "forget"] == 0.50
    assert last.loc["distilled", "best_lr"] == 0.001
    assert last.loc["undo_0.3", "forget"] == 0.70
    assert last.loc["undo_0.3", "best_lr"] == 0.0003
    assert sorted(worst["model"].unique()) == sorted(MODELS)


def test_diverged_runs_listed(histories):
    diverged = plots.diverged_runs(histories)
    assert diverged.to_dict("records") == [{"model": "undo_0.3", "lr": 0.001, "step": DIVERGED_STEP}]


def test_diverged_runs_empty(histories):
    diverged = plots.diverged_runs(histories[~histories["diverged"]])
    assert diverged.empty
    assert list(diverged.columns) == ["model", "lr", "step"]
    assert plots.diverged_note(diverged) == ""


def test_diverged_note_names_run(histories):
    note = plots.diverged_note(plots.diverged_runs(histories))
    assert "UNDO α=0.3 @ lr=0.001 (step 7)" in note


def test_robustness_at_exact_step(worst):
    values = plots.robustness_at(worst, 20)
    assert values["oracle"] == 0.30
    assert values["unlearned"] == 0.90
    assert values["undo_0.6"] == 0.40


def test_robustness_at_falls_back(worst):
    values = plots.robustness_at(worst, 15)  # no evaluation at 15, so step 10 is read
    assert values["distilled"] == 0.45
    assert values["unlearned"] == 0.80
    rows = plots.worst_case_at(worst, 15)
    assert set(rows["step"]) == {10}


def test_robustness_at_before_first_step(worst):
    late = worst[worst["step"] > 0]
    assert plots.robustness_at(late, 5).empty


def test_relative_robustness_scalar():
    assert plots.relative_robustness(0.5, 0.3, 0.9) == pytest.approx(2 / 3)
    assert plots.relative_robustness(0.3, 0.3, 0.9) == pytest.approx(1.0)
    assert plots.relative_robustness(0.9, 0.3, 0.9) == pytest.approx(0.0)


def test_relative_robustness_zero_gap():
    assert math.isnan(plots.relative_robustness(0.5, 0.4, 0.4))
    assert math.isnan(plots.relative_robustness(0.5, None, 0.4))
    assert "same forget metric" in plots.reference_gap_note(0.4, 0.4)
    assert plots.reference_gap_note(0.3, 0.9) == ""


def test_relative_robustness_series():
    values = pd.Series([0.5, 0.4], index=["a", "b"])
    result = plots.relative_robustness(values, 0.3, 0.9)
    assert list(result.index) == ["a", "b"]
    assert result.tolist() == pytest.approx([2 / 3, 5 / 6])
    assert plots.relative_robustness(values, 0.4, 0.4).isna().all()


# ----------------------------------------------------------------------------------------------
# Summary table and summary.json


def test_summary_table_rows(summary):
    assert summary["model"].tolist() == MODELS
    table = summary.set_index("model")
    assert table.loc["undo_0.3", "forget_at_step"] == 0.70
    assert table.loc["undo_0.3", "best_lr_at_step"] == 0.0003
    assert table.loc["distilled", "forget_last"] == 0.50
    assert table.loc["distilled", "last_step"] == 20
    assert table.loc["oracle", "retain_before"] == 0.98
    assert table.loc["unlearned", "forget_before"] == 0.02


def test_summary_table_relative_robustness(summary):
    relative = summary.set_index("model")["relative_robustness"]
    # (P - P_unlearned) / (P_oracle - P_unlearned) with P_oracle = 0.30 and P_unlearned = 0.90
    assert relative["oracle"] == pytest.approx(1.0)
    assert relative["unlearned"] == pytest.approx(0.0)
    assert relative["distilled"] == pytest.approx((0.50 - 0.90) / (0.30 - 0.90))
    assert relative["undo_0.3"] == pytest.approx((0.70 - 0.90) / (0.30 - 0.90))
    assert relative["undo_0.6"] == pytest.approx((0.40 - 0.90) / (0.30 - 0.90))


def test_summary_table_cost_and_steps(summary):
    table = summary.set_index("model")
    assert table.loc["oracle", "cost_fraction_flops"] == 1.0
    assert table.loc["unlearned", "cost_fraction_flops"] == pytest.approx(0.05)
    assert table.loc["unlearned", "cost_fraction_tokens"] == pytest.approx(0.02)
    assert table.loc["distilled", "cost_fraction_flops"] == 0.35
    assert table.loc["undo_0.6", "cost_fraction_tokens"] == 0.35
    assert math.isnan(table.loc["full", "cost_fraction_flops"])
    assert table.loc["undo_0.6", "distill_steps"] == 250
    assert pd.isna(table.loc["unlearned", "distill_steps"])
    assert table.loc["distilled", "stopped_early"] is True


def test_summary_table_without_oracle(root, worst):
    metrics = plots.load_stage_metrics(root)
    summary = plots.summary_table(metrics, worst[worst["model"] != "oracle"], robustness_step=20)
    assert "oracle" in summary["model"].tolist()  # its stage metrics still give a row
    assert summary["relative_robustness"].isna().all()


def test_summary_record_json(tmp_path, summary, histories):
    record = plots.summary_record(summary, 20, plots.diverged_runs(histories))
    io.write_json(tmp_path / "summary.json", record)
    loaded = io.read_json(tmp_path / "summary.json")
    assert loaded["robustness_step"] == 20
    assert [row["model"] for row in loaded["models"]] == MODELS
    assert loaded["models"][0]["relative_robustness"] == pytest.approx((0.97 - 0.90) / (0.30 - 0.90))
    assert loaded["models"][0]["distill_steps"] is None
    assert loaded["diverged_runs"] == [{"model": "undo_0.3", "lr": 0.001, "step": DIVERGED_STEP}]


# ----------------------------------------------------------------------------------------------
# Figures


def _texts(fig):
    """Return the annotations of ``fig`` with line breaks of wrapped notes turned into spaces."""
    return " ".join(" ".join(text.get_text() for ax in fig.axes for text in ax.texts).split())


def test_relearning_curves_lines(worst, histories):
    fig = plots.plot_relearning_curves(worst, plots.diverged_runs(histories))
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == len(MODELS)
    assert ax.get_title() == "Relearning attack (worst case over LRs)"
    assert ax.get_ylim()[0] <= 0.0
    assert ax.get_ylim()[1] >= 1.0
    assert "UNDO α=0.3 @ lr=0.001" in _texts(fig)


def test_relearning_curves_robustness_marker(worst):
    fig = plots.plot_relearning_curves(worst, robustness_step=10)
    assert len(fig.axes[0].get_lines()) == len(MODELS) + 1
    assert _texts(fig) == ""


def test_robustness_vs_compute_points(summary, worst):
    references = plots.robustness_at(worst, 20)
    fig = plots.plot_robustness_vs_compute(summary, references["oracle"], references["unlearned"], 20)
    assert isinstance(fig, Figure)
    ax_forget, ax_relative = fig.axes
    for ax in (ax_forget, ax_relative):
        assert len(ax.collections) == 3  # Unlearn-and-Distill and two UNDO alphas
        assert len(ax.get_lines()) == 3  # UNDO connecting line, oracle and unlearned references
    assert "α=0.3" in _texts(fig)
    assert "α=0.6" in _texts(fig)
    offsets = {round(float(c.get_offsets()[0][0]), 3): float(c.get_offsets()[0][1]) for c in ax_relative.collections}
    assert offsets[0.35] == pytest.approx((0.50 - 0.90) / (0.30 - 0.90))


def test_robustness_vs_compute_zero_gap(summary):
    fig = plots.plot_robustness_vs_compute(summary, 0.5, 0.5, 20)
    ax_forget, ax_relative = fig.axes
    assert len(ax_forget.collections) == 3
    assert len(ax_relative.collections) == 0
    assert "Relative robustness is undefined" in _texts(fig)


def test_robustness_vs_compute_notes_missing(summary):
    rows = summary.to_dict("records")
    for row in rows:
        if row["model"] == "undo_0.6":
            row["forget_at_step"] = float("nan")
    fig = plots.plot_robustness_vs_compute(rows, 0.3, 0.9)
    assert len(fig.axes[0].collections) == 2
    assert "Not plotted (no attack result or cost): UNDO α=0.6" in _texts(fig)


def test_relearning_by_lr_panels(histories):
    fig = plots.plot_relearning_by_lr(histories)
    assert isinstance(fig, Figure)
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    assert list(panels) == [plots.model_label(name) for name in MODELS]
    assert len(panels["Full model"].get_lines()) == 2
    assert len(panels["UNDO α=0.3"].get_lines()) == 1
    assert panels["UNDO α=0.3"].get_title() == "UNDO α=0.3\ndiverged: lr=0.001 (step 7)"
    assert panels["UNDO α=0.6"].get_title() == "UNDO α=0.6"
    assert len(fig.legends[0].get_texts()) == 2


def test_save_figure_png(tmp_path, worst):
    path = plots.save_figure(plots.plot_relearning_curves(worst), tmp_path / "figs" / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]


def test_all_attacks_diverged(tmp_path, recwarn):
    root = tmp_path / "outputs" / "arithmetic"
    _write_stage_metrics(root)
    _write_relearn_run(root, "undo_0.3", "0.001", None)
    histories = plots.load_relearn_histories(root)
    worst = worst_case(histories)
    assert worst.empty

    summary = plots.summary_table(plots.load_stage_metrics(root), worst, robustness_step=20)
    assert summary["model"].tolist() == MODELS
    assert summary["forget_at_step"].isna().all()
    assert summary["relative_robustness"].isna().all()

    diverged = plots.diverged_runs(histories)
    curves = plots.plot_relearning_curves(worst, diverged, 20)
    assert "UNDO α=0.3 @ lr=0.001" in _texts(curves)
    references = plots.robustness_at(worst, 20)
    compute = plots.plot_robustness_vs_compute(summary, references.get("oracle"), references.get("unlearned"))
    assert "Not plotted" in _texts(compute)
    by_lr = plots.plot_relearning_by_lr(histories)
    assert by_lr.axes[0].get_lines() == []
    assert [str(w.message) for w in recwarn] == []


def test_real_diverged_attack_reported(root, tiny_model, tokenizer):
    """A relearning attack that really diverges, saved as the relearn notebook saves it, is named in
    summary.json and in the figure notes."""
    calls = []

    def nan_gradient_from_step_3(model, batch):
        calls.append(1)
        loss, logs = lm_loss(model, batch)
        if len(calls) >= 3:  # one micro-batch per step, so call 3 is step 3
            loss = loss + torch.sqrt(model.model.norm.weight.sum() * 0.0)  # finite loss, NaN gradient
        return loss, logs

    lr = 0.003
    batch = {"input_ids": torch.randint(4, len(tokenizer), (2, 16), generator=torch.Generator().manual_seed(0))}
    batch["loss_mask"] = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    params = TrainParams(steps=6, batch_size=2, warmup_steps=1, eval_every=2)
    rows, diverged, result = run_attack(tiny_model, nan_gradient_from_step_3, itertools.repeat(batch), params, lr,
                                        flops_per_token=1.0, evaluate=lambda model: {"forget": 0.99, "retain": 0.5})
    out_dir = root / "relearn" / "undo_0.6" / f"lr_{lr}"
    metrics = {"model": "undo_0.6", "lr": lr, "diverged": diverged, "final": None,
               "compute": compute_record(result, 1) if result is not None else None}
    finish_stage(out_dir, metrics, history=[dict(row, model="undo_0.6") for row in rows],
                 timing=timing_record(result), timing_path=root / "timing" / "relearn-undo_0.6-lr_0.003.json")

    histories = plots.load_relearn_histories(root)
    diverged_runs = plots.diverged_runs(histories)
    summary = plots.summary_table(plots.load_stage_metrics(root), worst_case(histories), robustness_step=20)
    record = plots.summary_record(summary, 20, diverged_runs)
    worst = worst_case(histories)

    assert diverged and result is None
    assert {"model": "undo_0.6", "lr": lr, "step": 3} in record["diverged_runs"]
    assert "UNDO α=0.6 @ lr=0.003 (step 3)" in _texts(plots.plot_relearning_curves(worst, diverged_runs, 20))
    after = worst[(worst["model"] == "undo_0.6") & (worst["step"] >= 3)]
    assert not after.empty
    assert (after["best_lr"] != lr).all(), "the worst case used the run after its divergence"
    panels = {ax.get_title().split("\n")[0]: ax for ax in plots.plot_relearning_by_lr(histories).axes}
    assert panels["UNDO α=0.6"].get_title() == "UNDO α=0.6\ndiverged: lr=0.003 (step 3)"


def test_relearning_by_lr_single_model(histories):
    fig = plots.plot_relearning_by_lr(histories[histories["model"] == "oracle"])
    (ax,) = fig.axes
    assert ax.get_title() == "Oracle (data filtering)"
    assert len(ax.get_lines()) == 2


# ----------------------------------------------------------------------------------------------
# Notebook


def _notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_commit_ready():
    notebook = _notebook()
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown"
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        assert cell.outputs == []
        assert cell.execution_count is None
    tagged = [cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert tagged[0] is code_cells[0]


def _params_file(tmp_path):
    data = {
        "shared": {},
        "data": {"arithmetic": {}},
        "tokenizer": {"arithmetic": {}},
        "model": {"arithmetic": {}},
        "pretrain": {"arithmetic": {"lr": 1e-3}},
        "unlearn": {"arithmetic": {"train": {"lr": 1e-3}}},
        "distill": {"arithmetic": {"alphas": [0.3, 0.6], "train": {"lr": 1e-3, "eval_every": 10}}},
        "relearn": {"arithmetic": {"lrs": [0.001, 0.0003], "train": {"steps": 20, "eval_every": 10}}},
        "evaluate": {"arithmetic": {}},
        "figures": {"arithmetic": {"robustness_step": 20}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_notebook_cells_run(tmp_path, root, monkeypatch):
    # setup_notebook reconfigures global logging, which would leak into later tests.
    monkeypatch.setattr(io, "setup_notebook", lambda threads=0: None)
    out_dir = tmp_path / "figures"
    namespace = {}
    code_cells = [cell for cell in _notebook().cells if cell.cell_type == "code"]
    exec(code_cells[0].source, namespace)
    namespace.update(params_file=str(_params_file(tmp_path)), setting="arithmetic",
                     outputs_dir=str(root), out_dir=str(out_dir))
    for cell in code_cells[1:]:
        exec(cell.source, namespace)

    for name in ("relearning_curves.png", "robustness_vs_compute.png", "relearning_by_lr.png"):
        assert (out_dir / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["robustness_step"] == 20
    assert [row["model"] for row in summary["models"]] == MODELS
    assert summary["diverged_runs"] == [{"model": "undo_0.3", "lr": 0.001, "step": DIVERGED_STEP}]
    assert np.isclose(summary["models"][3]["relative_robustness"], (0.50 - 0.90) / (0.30 - 0.90))


def test_equation_forget_is_mean(tmp_path):
    frame = pd.DataFrame({"acc/multiplication/equation": [0.5, None], "acc/division/equation": [0.25, 0.5]})
    out = plots.add_equation_forget(frame)
    assert out["forget_equations"].iloc[0] == 0.375
    assert math.isnan(out["forget_equations"].iloc[1]), "a missing score must not be averaged away"


def test_relearning_by_lr_autoscale_covers_all_panels(histories):
    """With no fixed limits (cross-entropies), every panel's data lies inside the shared y range."""
    shifted = histories.assign(forget=histories["forget"] * 10 + 3)  # CE-like values far from [0, 1]
    fig = plots.plot_relearning_by_lr(shifted, forget_label="Korean CE (nats)", limits=None)
    low, high = fig.axes[0].get_ylim()

    values = shifted.dropna(subset=["forget"])["forget"]
    assert low <= values.min()
    assert high >= values.max()
