"""Tests of reading the per-seed runs layout and of the numbers behind experiments E1-E4.

Every test reads the handwritten layout of tests/synthetic_runs.py (two seeds unless a test asks
for one), so the expected numbers below can be checked against its tables by hand.
"""

import math
import shutil

import pandas as pd
import pytest

import synthetic_runs as synthetic
from undo_lib import experiments, io
from undo_lib.config import params_from_dict
from undo_lib.report import results_table


def _load(tmp_path, smoke, setting="arithmetic", seeds=synthetic.SEEDS):
    params = params_from_dict(synthetic.params_dict(smoke, seeds))
    runs_dir = synthetic.write_runs(tmp_path / setting / "runs", setting, seeds)
    return params, runs_dir


@pytest.fixture
def layout(tmp_path, smoke_params_dict):
    return _load(tmp_path, smoke_params_dict)


@pytest.fixture
def runs(layout):
    params, runs_dir = layout
    return experiments.load_runs(params, "arithmetic", runs_dir)


@pytest.fixture
def params(layout):
    return layout[0]


@pytest.fixture
def worst(runs):
    return experiments.worst_case_per_seed(runs.relearn)


def _series(frame, model, column="mean"):
    return frame[frame["model"] == model].sort_values("step")[column].tolist()


def _row(table, model, **keys):
    rows = table[table["model"] == model]
    for key, value in keys.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, f"expected one row for {model} {keys}, found {len(rows)}"
    return rows.iloc[0]


# ----------------------------------------------------------------------------------------------
# Names


def test_folder_names_use_python_floats():
    assert experiments.lr_folder(1e-3) == "lr_0.001"
    assert experiments.lr_folder(3e-4) == "lr_0.0003"
    assert experiments.lr_folder(1e-5) == "lr_1e-05"
    assert experiments.alpha_folder(0.6) == "alpha_0.6"
    assert experiments.sweep_model("MaxEnt", 1e-3) == "MaxEnt_lr_0.001"
    assert experiments.undo_model(0.5) == "undo_0.5"


def test_model_names_parsed():
    assert experiments.sweep_point("RMU_lr_1e-05") == ("RMU", 1e-05)
    assert experiments.sweep_point("distilled_RMU") is None
    assert experiments.model_family("SAM_lr_0.001") == "SAM"
    assert experiments.model_family("unlearn_MaxEnt") == experiments.UNLEARN
    assert experiments.model_family("distilled_GradDiff") == experiments.UNLEARN_AND_DISTILL
    assert experiments.model_family("match_full") == experiments.ORACLE_MATCHING
    assert experiments.model_label("undo_0.8") == "UNDO α=0.8"
    assert experiments.model_label("MaxEnt_lr_0.0003") == "MaxEnt lr=0.0003"
    assert experiments.model_label("unlearn_RMU") == "Unlearn (RMU)"


def test_sort_models_display_order():
    names = ["undo_0.8", "MaxEnt_lr_0.001", "oracle", "distilled_MaxEnt", "undo_0.5", "GradDiff_lr_0.001",
             "match_full", "full", "MaxEnt_lr_0.0003", "unlearn_MaxEnt"]
    assert experiments.sort_models(names) == [
        "full", "oracle", "match_full", "unlearn_MaxEnt", "GradDiff_lr_0.001", "MaxEnt_lr_0.0003",
        "MaxEnt_lr_0.001", "distilled_MaxEnt", "undo_0.5", "undo_0.8"]


# ----------------------------------------------------------------------------------------------
# Loading


def test_load_runs_reads_every_model(runs):
    assert runs.seeds == (0, 1)
    assert sorted(runs.stage["model"].unique()) == sorted(synthetic.models())
    assert len(runs.stage) == 2 * len(synthetic.models())
    runs_per_seed = runs.relearn[["seed", "model", "lr"]].drop_duplicates()
    assert len(runs_per_seed) == 2 * len(synthetic.models()) * len(synthetic.ATTACK_LRS)


def test_load_runs_teachers_per_seed(runs):
    assert runs.teacher(0, "MaxEnt") == "MaxEnt_lr_0.001"
    assert runs.teacher(1, "MaxEnt") == "MaxEnt_lr_0.0003"
    assert runs.teacher(1, "RMU") == "RMU_lr_0.001"


def test_stage_cost_fractions(runs):
    stage = runs.stage.set_index(["seed", "model"])
    assert stage.loc[(0, "oracle"), "cost_fraction_flops"] == 1.0
    assert stage.loc[(0, "MaxEnt_lr_0.001"), "cost_fraction_flops"] == pytest.approx(0.05)
    assert stage.loc[(0, "MaxEnt_lr_0.001"), "cost_fraction_tokens"] == pytest.approx(0.02)
    assert stage.loc[(1, "undo_0.5"), "cost_fraction_flops"] == pytest.approx(0.34)
    assert math.isnan(stage.loc[(0, "full"), "cost_fraction_flops"])


def test_stage_collapsed_flags(runs):
    stage = runs.stage.set_index(["seed", "model"])
    assert stage.loc[(1, "GradDiff_lr_0.001"), "collapsed"]
    assert not stage.loc[(0, "GradDiff_lr_0.001"), "collapsed"]
    assert stage.loc[(0, "SAM_lr_0.001"), "collapsed"]
    assert not stage.loc[(0, "undo_0.5"), "collapsed"]


def test_missing_file_names_path_and_stage(layout):
    params, runs_dir = layout
    missing = runs_dir / "seed_1/relearn/undo/undo_0.8/lr_0.0003/history.csv"
    missing.unlink()
    with pytest.raises(experiments.MissingOutputError) as excinfo:
        experiments.load_runs(params, "arithmetic", runs_dir)
    message = str(excinfo.value)
    assert str(missing) in message
    assert "arithmetic-relearn-undo" in message
    assert "dvc repro arithmetic-figures" in message
    assert message.startswith("1 stage outputs are missing")


def test_missing_seed_lists_first_files(layout):
    params, runs_dir = layout
    shutil.rmtree(runs_dir / "seed_1")
    with pytest.raises(FileNotFoundError) as excinfo:
        experiments.load_runs(params, "arithmetic", runs_dir)
    message = str(excinfo.value)
    assert str(runs_dir / "seed_1/pretrain/full/metrics.json") in message
    assert "more" in message


def test_stale_folders_ignored(layout):
    params, runs_dir = layout
    shutil.copytree(runs_dir / "seed_1", runs_dir / "seed_7")
    shutil.copytree(runs_dir / "seed_0/relearn/undo/undo_0.5", runs_dir / "seed_0/relearn/undo/undo_0.9")
    shutil.copytree(runs_dir / "seed_0/relearn/reference/full/lr_0.001",
                    runs_dir / "seed_0/relearn/reference/full/lr_0.01")
    shutil.copytree(runs_dir / "seed_0/unlearn/RMU/lr_0.001", runs_dir / "seed_0/unlearn/RMU/lr_0.01")
    runs = experiments.load_runs(params, "arithmetic", runs_dir)
    assert set(runs.relearn["seed"]) == {0, 1}
    assert "undo_0.9" not in set(runs.relearn["model"])
    assert "RMU_lr_0.01" not in set(runs.stage["model"])
    assert set(runs.relearn["lr"]) == {0.001, 0.0003}


def test_teacher_outside_sweep_rejected(layout):
    params, runs_dir = layout
    path = runs_dir / "seed_0/teachers/MaxEnt.json"
    io.write_json(path, dict(io.read_json(path), model="MaxEnt_lr_0.5", lr=0.5))
    with pytest.raises(ValueError, match="MaxEnt_lr_0.5"):
        experiments.load_runs(params, "arithmetic", runs_dir)


def test_relearn_folder_names_win(runs):
    step0 = runs.relearn[(runs.relearn["model"] == "full") & (runs.relearn["step"] == 0)]
    assert sorted(step0["lr"]) == [0.0003, 0.0003, 0.001, 0.001]


# ----------------------------------------------------------------------------------------------
# Worst case and seed statistics


def test_worst_case_max_over_lrs(worst):
    oracle = worst[(worst["model"] == "oracle") & (worst["seed"] == 0)].sort_values("step")
    assert oracle["forget"].tolist() == [0.05, 0.25, 0.30]
    assert oracle["best_lr"].tolist()[1:] == [0.0003, 0.001]


def test_worst_case_min_for_language(tmp_path, smoke_params_dict):
    params, runs_dir = _load(tmp_path, smoke_params_dict, "language")
    runs = experiments.load_runs(params, "language", runs_dir)
    worst = experiments.worst_case_per_seed(runs.relearn, higher_is_worse=False)
    oracle = worst[(worst["model"] == "oracle") & (worst["seed"] == 0)].sort_values("step")
    assert oracle["forget"].tolist() == [0.05, 0.20, 0.28]
    assert oracle["best_lr"].tolist()[1:] == [0.001, 0.0003]


def test_worst_case_skips_diverged_attack(runs, worst):
    undo = worst[(worst["model"] == "undo_0.5") & (worst["seed"] == 0)].sort_values("step")
    assert undo["forget"].tolist() == [0.04, 0.40, 0.50]
    assert undo["best_lr"].tolist()[1:] == [0.0003, 0.0003]
    assert runs.diverged.to_dict("records") == [{"seed": 0, "model": "undo_0.5", "lr": 0.001, "step": 3}]


def test_seed_band_mean_min_max(worst):
    band = experiments.seed_band(worst, "forget")
    assert _series(band, "oracle") == pytest.approx([0.10, 0.30, 0.35])
    assert _series(band, "oracle", "min") == pytest.approx([0.05, 0.25, 0.30])
    assert _series(band, "oracle", "max") == pytest.approx([0.15, 0.35, 0.40])
    assert _series(band, "oracle", "n_seeds") == [2, 2, 2]


def test_seed_band_single_seed(tmp_path, smoke_params_dict):
    params, runs_dir = _load(tmp_path, smoke_params_dict, seeds=(0,))
    runs = experiments.load_runs(params, "arithmetic", runs_dir)
    band = experiments.seed_band(experiments.worst_case_per_seed(runs.relearn), "forget")
    assert _series(band, "oracle") == pytest.approx([0.05, 0.25, 0.30])
    assert _series(band, "oracle", "min") == _series(band, "oracle", "max")
    assert set(band["n_seeds"]) == {1}


def test_value_at_step_falls_back(worst):
    values = experiments.value_at_step(worst, 7).set_index(["seed", "model"])
    assert values.loc[(0, "oracle"), "step"] == 5
    assert values.loc[(0, "oracle"), "forget"] == 0.25


def test_equation_forget_is_mean(runs):
    equations = experiments.add_equation_forget(runs.relearn)
    row = equations[(equations["model"] == "oracle") & (equations["step"] == 5)].iloc[0]
    assert row["forget_equations"] == pytest.approx(0.75 * row["forget"])
    with pytest.raises(KeyError, match="equation"):
        experiments.add_equation_forget(runs.relearn.drop(columns=list(experiments.FORGET_EQUATION_COLUMNS)))


# ----------------------------------------------------------------------------------------------
# Curves


def test_e1_curves_kl_and_attack(runs, worst):
    kl, curves = experiments.e1_curves(runs, worst)
    assert _series(kl, "match_full") == pytest.approx([2.5, 1.25, 0.625, 0.25, 0.125])
    assert set(curves.band["model"]) == {"match_full", "match_random_init", "oracle"}
    assert _series(curves.band, "match_full") == pytest.approx([0.10, 0.85, 0.97])
    assert curves.diverged.empty


def test_e2_uses_each_seeds_teacher(runs, worst):
    curves = experiments.e2_curves(runs, worst)["MaxEnt"]
    # seed 0 reads MaxEnt_lr_0.001: [0.02, 0.70, 0.85]; seed 1 reads MaxEnt_lr_0.0003 + 0.1: [0.20, 0.65, 0.70]
    assert _series(curves.band, "unlearn_MaxEnt") == pytest.approx([0.11, 0.675, 0.775])
    assert _series(curves.band, "unlearn_MaxEnt", "min") == pytest.approx([0.02, 0.65, 0.70])
    assert _series(curves.band, "unlearn_MaxEnt", "max") == pytest.approx([0.20, 0.70, 0.85])
    assert curves.sources["unlearn_MaxEnt"] == ("MaxEnt_lr_0.0003", "MaxEnt_lr_0.001")
    assert set(curves.band["model"]) == {"unlearn_MaxEnt", "distilled_MaxEnt", "oracle"}


def test_e3_curves_list_diverged(runs, worst, params):
    curves = experiments.e3_curves(runs, worst, params)
    assert set(curves.band["model"]) == {"full", "oracle", "unlearn_MaxEnt", "distilled_MaxEnt",
                                         "undo_0.5", "undo_0.8"}
    assert curves.diverged["model"].tolist() == ["undo_0.5"]


# ----------------------------------------------------------------------------------------------
# Tables


def test_relative_robustness_scalar():
    assert experiments.relative_robustness(0.5, 0.3, 0.9) == pytest.approx(2 / 3)
    assert experiments.relative_robustness(0.3, 0.3, 0.9) == pytest.approx(1.0)
    assert math.isnan(experiments.relative_robustness(0.5, 0.4, 0.4))
    assert math.isnan(experiments.relative_robustness(0.5, None, 0.4))


def test_e1_table_values(runs, worst):
    table = experiments.e1_table(runs, worst, synthetic.ROBUSTNESS_STEP)
    assert table["model"].tolist() == ["oracle", "match_full", "match_random_init"]
    full = _row(table, "match_full")
    assert full["kl_final"] == pytest.approx(0.125)
    assert full["kl_final_min"] == pytest.approx(0.10)
    assert full["kl_final_max"] == pytest.approx(0.15)
    assert full["forget_at_step"] == pytest.approx(0.85)
    assert full["retain_before"] == pytest.approx(0.81)
    assert math.isnan(_row(table, "oracle")["kl_final"])


def test_e2_table_teacher_rows(runs, worst):
    table = experiments.e2_table(runs, worst, synthetic.ROBUSTNESS_STEP)
    assert table["method"].unique().tolist() == ["GradDiff", "MaxEnt", "RMU"]
    teacher = _row(table, "unlearn_MaxEnt", method="MaxEnt")
    assert teacher["source_model"] == "MaxEnt_lr_0.001; MaxEnt_lr_0.0003"
    assert teacher["forget_at_step"] == pytest.approx(0.675)
    assert teacher["forget_last"] == pytest.approx(0.775)
    assert _row(table, "unlearn_GradDiff", method="GradDiff")["collapsed_seeds"] == 1


def test_e3_relative_robustness_by_hand(runs, worst, params):
    table = experiments.e3_table(runs, worst, params, synthetic.ROBUSTNESS_STEP)
    # Per seed (P - P_unlearn) / (P_oracle - P_unlearn) at step 5, with P_oracle = 0.25, 0.35 and
    # P_unlearn = 0.70 (MaxEnt_lr_0.001), 0.65 (MaxEnt_lr_0.0003 + 0.1).
    seed0, seed1 = (0.28 - 0.70) / (0.25 - 0.70), (0.38 - 0.65) / (0.35 - 0.65)
    undo = _row(table, "undo_0.8")
    assert undo["relative_robustness"] == pytest.approx((seed0 + seed1) / 2)
    assert undo["relative_robustness_min"] == pytest.approx(min(seed0, seed1))
    assert undo["relative_robustness_max"] == pytest.approx(max(seed0, seed1))
    diverged = (0.40 - 0.70) / (0.25 - 0.70), (0.55 - 0.65) / (0.35 - 0.65)
    assert _row(table, "undo_0.5")["relative_robustness"] == pytest.approx(sum(diverged) / 2)
    assert _row(table, "oracle")["relative_robustness"] == pytest.approx(1.0)
    assert _row(table, "unlearn_MaxEnt")["relative_robustness"] == pytest.approx(0.0)


def test_e3_table_cost_and_flags(runs, worst, params):
    table = experiments.e3_table(runs, worst, params, synthetic.ROBUSTNESS_STEP)
    assert table["model"].tolist() == ["full", "oracle", "unlearn_MaxEnt", "distilled_MaxEnt", "undo_0.5", "undo_0.8"]
    assert _row(table, "undo_0.5")["cost_fraction_flops"] == pytest.approx(0.32)
    assert _row(table, "undo_0.5")["cost_fraction_flops_max"] == pytest.approx(0.34)
    assert _row(table, "unlearn_MaxEnt")["cost_fraction_flops"] == pytest.approx(0.05)
    assert _row(table, "undo_0.5")["stopped_early_seeds"] == 2
    assert _row(table, "undo_0.8")["stopped_early_seeds"] == 0
    assert _row(table, "undo_0.8")["alpha"] == 0.8


def test_e3_table_equation_column(runs, worst, params):
    equations = experiments.worst_case_per_seed(experiments.add_equation_forget(runs.relearn), "forget_equations")
    table = experiments.e3_table(runs, worst, params, synthetic.ROBUSTNESS_STEP, equations)
    assert _row(table, "oracle")["forget_equations_at_step"] == pytest.approx(0.75 * 0.30)


def test_e4_pareto_values(runs, worst):
    table = experiments.e4_table(runs, worst, synthetic.BUDGETS)
    assert sorted(table["budget"].unique()) == [0, 5, 10]
    assert "match_full" not in set(table["model"])
    undo = _row(table, "undo_0.8", budget=5)
    assert undo["retain_before"] == pytest.approx(0.91)
    assert undo["retain_before_min"] == pytest.approx(0.90)
    assert undo["retain_before_max"] == pytest.approx(0.92)
    assert undo["forget_after"] == pytest.approx(0.33)
    assert _row(table, "undo_0.8", budget=0)["forget_after"] == pytest.approx(0.08)
    assert _row(table, "MaxEnt_lr_0.001", budget=10)["forget_after"] == pytest.approx(0.90)
    assert len(table) == 3 * (len(synthetic.models()) - 2)


def test_e4_collapsed_runs_flagged(runs, worst):
    table = experiments.e4_table(runs, worst, [5])
    collapsed = table.set_index("model")["collapsed_seeds"]
    assert collapsed["SAM_lr_0.001"] == 2
    assert collapsed["GradDiff_lr_0.001"] == 1
    assert collapsed.drop(["SAM_lr_0.001", "GradDiff_lr_0.001"]).eq(0).all()


def test_e4_language_direction(tmp_path, smoke_params_dict):
    params, runs_dir = _load(tmp_path, smoke_params_dict, "language")
    runs = experiments.load_runs(params, "language", runs_dir)
    worst = experiments.worst_case_per_seed(runs.relearn, higher_is_worse=False)
    table = experiments.e4_table(runs, worst, [5])
    assert _row(table, "undo_0.8")["forget_after"] == pytest.approx((0.25 + 0.35) / 2)


def test_aggregate_seeds_skips_missing_values():
    rows = pd.DataFrame({"seed": [0, 1], "model": ["a", "a"], "value": [1.0, None], "flag": [True, False]})
    table = experiments.aggregate_seeds(rows, ["model"], ["value"], counts=["flag"])
    assert table.iloc[0]["value"] == 1.0
    assert table.iloc[0]["n_seeds"] == 2
    assert table.iloc[0]["flag_seeds"] == 1


def test_summary_json_round_trip(tmp_path, runs, worst, params):
    tables = {
        "e1": experiments.e1_table(runs, worst, 5),
        "e2": experiments.e2_table(runs, worst, 5),
        "e3": experiments.e3_table(runs, worst, params, 5),
        "e4": experiments.e4_table(runs, worst, synthetic.BUDGETS),
    }
    path = tmp_path / "summary.json"
    io.write_json(path, experiments.summary_record(tables, runs, 5, synthetic.BUDGETS))
    summary = io.read_json(path)
    assert summary["seeds"] == [0, 1]
    assert summary["robustness_step"] == 5
    assert summary["attack_budgets"] == [0, 5, 10]
    assert [row["model"] for row in summary["models"]] == tables["e3"]["model"].tolist()
    assert summary["diverged_runs"] == [{"seed": 0, "model": "undo_0.5", "lr": 0.001, "step": 3}]
    assert summary["models"][0]["cost_fraction_flops"] is None
    assert len(summary["tables"]["e4"]) == len(tables["e4"])
    assert "| UNDO α=0.8 |" in results_table(path)


def test_flag_count_missing_is_nan():
    rows = pd.DataFrame({"seed": [0, 1, 0, 1], "model": ["a", "a", "b", "b"], "x": [1.0, 3.0, 2.0, 2.0],
                         "flag": [True, False, None, None]})

    table = experiments.aggregate_seeds(rows, ["model"], ["x"], counts=["flag"]).set_index("model")

    assert table.loc["a", "flag_seeds"] == 1
    assert math.isnan(table.loc["b", "flag_seeds"])
