"""Tests for the figures of experiments E1-E4 and the figures notebook.

Every test reads the handwritten runs layout of tests/synthetic_runs.py, with two seeds unless the
test asks for one, so the plotted values can be checked by hand against its tables.
"""

import json
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import synthetic_runs as synthetic
from undo_lib import experiments, io, plots
from undo_lib.config import params_from_dict
from undo_lib.settings import metric_spec

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "figures.ipynb"
SMOKE_PARAMS = ROOT / "tests" / "smoke_params.yaml"
FIGURES = ("e1_oracle_matching.png", "e2_unlearn_vs_distill.png", "e3_robustness_vs_compute.png",
           "e3_relearning_curves.png", "e4_pareto.png", "relearning_by_lr.png")
TABLES = ("e1.csv", "e2.csv", "e3.csv", "e4.csv", "relearning_by_lr.csv")


class Layout:
    """A synthetic runs_dir with its params, loaded runs and worst case over LRs."""

    def __init__(self, folder: Path, setting: str, seeds: tuple[int, ...]):
        smoke = yaml.safe_load(SMOKE_PARAMS.read_text(encoding="utf-8"))
        self.setting, self.spec = setting, metric_spec(setting)
        self.params_file = synthetic.write_params(folder / "params.yaml", smoke, seeds)
        self.params = params_from_dict(synthetic.params_dict(smoke, seeds))
        self.runs_dir = synthetic.write_runs(folder / "runs", setting, seeds)
        self.runs = experiments.load_runs(self.params, setting, self.runs_dir)
        self.worst = experiments.worst_case_per_seed(self.runs.relearn, higher_is_worse=self.spec.higher_is_better)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Return a function that builds (once per module) the layout of a setting and seeds."""
    built = {}

    def get(setting: str = "arithmetic", seeds: tuple[int, ...] = synthetic.SEEDS) -> Layout:
        key = (setting, seeds)
        if key not in built:
            built[key] = Layout(tmp_path_factory.mktemp(f"{setting}-{len(seeds)}"), setting, seeds)
        return built[key]

    return get


def _texts(fig: Figure) -> str:
    """Return the annotations of ``fig`` with the line breaks of wrapped notes turned into spaces."""
    return " ".join(" ".join(text.get_text() for ax in fig.axes for text in ax.texts).split())


def _bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _points(ax) -> dict[str, tuple[float, float]]:
    """Return the (x, y) of every errorbar point of ``ax``, keyed by its legend label."""
    return {c.get_label(): (float(c.lines[0].get_xdata()[0]), float(c.lines[0].get_ydata()[0]))
            for c in ax.containers}


# ----------------------------------------------------------------------------------------------
# Styles and labels


def test_model_style_teacher_takes_method():
    assert plots.model_style("unlearn_MaxEnt") == plots.model_style("MaxEnt_lr_0.001")
    assert plots.model_style("undo_0.5")["color"] != plots.model_style("undo_0.8")["color"]
    assert plots.model_style("oracle")["color"] == "black"
    assert plots.model_style("oracle")["linestyle"] == "--"


def test_seed_note_one_and_many():
    assert plots.seed_note([3]) == "one seed (seed 3), so no band over seeds"
    assert "mean over seeds 0, 1" in plots.seed_note([0, 1])
    assert "min to max" in plots.seed_note([0, 1])


def test_axis_labels_say_direction():
    arithmetic, language = metric_spec("arithmetic"), metric_spec("language")
    assert "lower = more forgotten" in plots.forget_axis_label(arithmetic, "after 5 steps")
    assert "higher = more forgotten" in plots.forget_axis_label(language, "after 5 steps")
    assert "higher is better" in plots.retain_axis_label(arithmetic)
    assert "lower is better" in plots.retain_axis_label(language)


def test_diverged_note_caps_list(layouts):
    diverged = layouts().runs.diverged
    many = diverged.loc[diverged.index.repeat(10)].reset_index(drop=True)
    note = plots.diverged_note(many, max_listed=3)
    assert note.count("UNDO α=0.5 @ lr=0.001 (step 3)") == 3
    assert "and 7 more (see summary.json)" in note
    assert plots.diverged_note(diverged.iloc[0:0]) == ""


# ----------------------------------------------------------------------------------------------
# Figures


def test_oracle_matching_two_seeds(layouts):
    layout = layouts()
    kl, curves = experiments.e1_curves(layout.runs, layout.worst)
    fig = plots.plot_oracle_matching(kl, curves, layout.spec, layout.runs.seeds, robustness_step=5)
    ax_kl, ax_attack = fig.axes
    assert len(ax_kl.get_lines()) == 2
    assert len(ax_attack.get_lines()) == 4  # both students, the oracle and the read-out marker
    assert len(_bands(ax_kl)) == 2
    assert len(_bands(ax_attack)) == 3
    assert "mean over seeds 0, 1" in fig.get_suptitle()


def test_oracle_matching_one_seed_no_band(layouts):
    layout = layouts(seeds=(0,))
    kl, curves = experiments.e1_curves(layout.runs, layout.worst)
    fig = plots.plot_oracle_matching(kl, curves, layout.spec, layout.runs.seeds)
    assert all(_bands(ax) == [] for ax in fig.axes)
    assert "one seed (seed 0)" in fig.get_suptitle()


def test_unlearn_vs_distill_panels(layouts):
    layout = layouts()
    fig = plots.plot_unlearn_vs_distill(experiments.e2_curves(layout.runs, layout.worst), layout.spec,
                                        layout.runs.seeds)
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    assert list(panels) == ["GradDiff", "MaxEnt", "RMU"]
    assert panels["MaxEnt"].get_title() == "MaxEnt\nteacher: MaxEnt lr=0.0003, MaxEnt lr=0.001"
    labels = [text.get_text() for text in panels["MaxEnt"].get_legend().get_texts()]
    assert labels == ["Data filtering", "Unlearn", "Unlearn-and-Distill"]
    unlearn = [line for line in panels["MaxEnt"].get_lines() if line.get_label() == "Unlearn"][0]
    assert list(unlearn.get_ydata()) == pytest.approx([0.11, 0.675, 0.775])


def test_robustness_vs_compute_points(layouts):
    layout = layouts()
    e3 = experiments.e3_table(layout.runs, layout.worst, layout.params, 5)
    fig = plots.plot_robustness_vs_compute(e3, layout.spec, layout.runs.seeds, 5)
    ax_forget, ax_relative = fig.axes
    forget, relative = _points(ax_forget), _points(ax_relative)
    assert set(relative) == {"Unlearn-and-Distill (MaxEnt)", "UNDO α=0.5", "UNDO α=0.8"}
    assert forget["UNDO α=0.8"] == pytest.approx((0.52, 0.33))
    expected = ((0.28 - 0.70) / (0.25 - 0.70) + (0.38 - 0.65) / (0.35 - 0.65)) / 2
    assert relative["UNDO α=0.8"] == pytest.approx((0.52, expected))
    reference_labels = [line.get_label() for line in ax_relative.get_lines()]
    assert "Unlearn (MaxEnt) = 0" in reference_labels
    assert ax_relative.get_ylim()[0] <= -0.1
    assert ax_relative.get_ylim()[1] >= 1.1


def test_robustness_vs_compute_notes_missing(layouts):
    layout = layouts()
    e3 = experiments.e3_table(layout.runs, layout.worst, layout.params, 5)
    e3.loc[e3["model"] == "undo_0.5", "cost_fraction_flops"] = float("nan")
    fig = plots.plot_robustness_vs_compute(e3, layout.spec, layout.runs.seeds, 5)
    assert "UNDO α=0.5" not in _points(fig.axes[0])
    assert "Not plotted (no attack result or cost): UNDO α=0.5" in _texts(fig)


def test_relearning_curves_diverged_note(layouts):
    layout = layouts()
    curves = experiments.e3_curves(layout.runs, layout.worst, layout.params)
    fig = plots.plot_relearning_curves(curves, layout.spec, layout.runs.seeds, robustness_step=5)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 7  # six models and the read-out marker
    assert "seed 0 UNDO α=0.5 @ lr=0.001 (step 3)" in _texts(fig)
    assert ax.get_ylim() == pytest.approx(layout.spec.limits)


def _hollow_points(ax) -> int:
    return sum(1 for c in ax.containers if c.lines[0].get_markerfacecolor() == "none")


@pytest.mark.parametrize("seeds, hollow", [((0, 1), 2), ((0,), 1)])
def test_pareto_collapsed_hollow(layouts, seeds, hollow):
    layout = layouts(seeds=seeds)
    e4 = experiments.e4_table(layout.runs, layout.worst, synthetic.BUDGETS)
    fig = plots.plot_pareto(e4, layout.spec, layout.runs.seeds)
    assert [ax.get_title() for ax in fig.axes] == [f"after {b} attack steps" for b in synthetic.BUDGETS]
    for ax in fig.axes:
        assert len(ax.containers) == len(synthetic.models()) - 2  # every model but the oracle-matched students
        assert _hollow_points(ax) == hollow
    assert "failed" in _texts(fig)
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "collapsed unlearning run (failed)" in legend
    assert "UNDO" in legend


def test_pareto_language_direction(layouts):
    layout = layouts("language")
    e4 = experiments.e4_table(layout.runs, layout.worst, [0, 5])
    fig = plots.plot_pareto(e4, layout.spec, layout.runs.seeds)
    corner = [t for t in fig.axes[0].texts if t.get_text() == "good corner"][0]
    assert corner.get_position() == (0.02, 0.98)  # low English CE (left), high Korean CE (top)
    assert "higher = more forgotten" in fig.axes[0].get_ylabel()
    assert "lower is better" in fig.axes[0].get_xlabel()
    assert _points(fig.axes[1])["UNDO α=0.8"][1] == pytest.approx((0.25 + 0.35) / 2)  # min over attack LRs


def test_relearning_by_lr_grid(layouts):
    layout = layouts()
    fig = plots.plot_relearning_by_lr(layout.runs.relearn, layout.spec, seed=0)
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    assert len(panels) == len(synthetic.models())
    assert panels["UNDO α=0.5"].get_title() == "UNDO α=0.5\ndiverged: lr=0.001 (step 3)"
    assert len(panels["Full model"].get_lines()) == 2
    assert "seed 0 only" in fig.get_suptitle()


def test_save_figure_png(tmp_path, layouts):
    layout = layouts()
    fig = plots.plot_relearning_curves(experiments.e3_curves(layout.runs, layout.worst, layout.params),
                                       layout.spec, layout.runs.seeds)
    path = plots.save_figure(fig, tmp_path / "figs" / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]


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
    assert set(papermill.inspect_notebook(str(NOTEBOOK))) == {"params_file", "setting", "runs_dir", "out_dir", "timing_dir"}


def _check_outputs(out_dir: Path, layout: Layout) -> None:
    expected = [*FIGURES, *TABLES, "summary.json"]
    if layout.setting == "arithmetic":
        expected.append("e3_relearning_curves_equations.png")
    for name in expected:
        assert (out_dir / name).is_file(), f"the notebook did not write {name}"
        assert (out_dir / name).stat().st_size > 0, f"{name} is empty"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["seeds"] == list(layout.runs.seeds)
    assert summary["robustness_step"] == synthetic.ROBUSTNESS_STEP
    assert summary["attack_budgets"] == list(synthetic.BUDGETS)
    assert set(summary["tables"]) == {"e1", "e2", "e3", "e4"}


@pytest.mark.parametrize("setting, seeds", [("arithmetic", (0, 1)), ("arithmetic", (0,)), ("language", (0, 1)),
                                            ("language", (0,))])
def test_notebook_cells_run(tmp_path, layouts, monkeypatch, setting, seeds):
    # setup_notebook reconfigures global logging, which would leak into later tests.
    monkeypatch.setattr(io, "setup_notebook", lambda threads=0: None)
    layout = layouts(setting, seeds)
    out_dir = tmp_path / "figures"
    namespace = {}
    code_cells = [cell for cell in _notebook().cells if cell.cell_type == "code"]
    exec(code_cells[0].source, namespace)
    namespace.update(params_file=str(layout.params_file), setting=setting, runs_dir=str(layout.runs_dir),
                     out_dir=str(out_dir))
    for cell in code_cells[1:]:
        exec(cell.source, namespace)
    _check_outputs(out_dir, layout)


@pytest.mark.slow
def test_notebook_papermill_run(tmp_path, layouts, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's undo_lib
    layout = layouts()
    out_dir = tmp_path / "figures"
    parameters = {"params_file": str(layout.params_file), "setting": "arithmetic",
                  "runs_dir": str(layout.runs_dir), "out_dir": str(out_dir)}
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "figures.ipynb"), parameters=parameters,
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    _check_outputs(out_dir, layout)
