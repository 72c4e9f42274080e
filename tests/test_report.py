"""Tests of the README tables built from a run's outputs."""

from __future__ import annotations

import json

import nbformat
import yaml

from undo_lib.report import durations_table, locked_notebooks, results_table, stage_durations


def _executed_notebook(path, seconds):
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"duration": seconds}
    nbformat.write(nb, path)


def test_results_table_rows(tmp_path):
    summary = {"robustness_step": 50, "models": [
        {"label": "Oracle", "retain_before": 0.5, "forget_before": 0.0, "forget_at_step": 0.25,
         "forget_equations_at_step": None, "relative_robustness": 1.0, "distill_steps": None,
         "cost_fraction_flops": 1.0},
    ]}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    table = results_table(path)
    assert "| Oracle | 0.500 | 0.000 | 0.250 | – | 1.000 | – | 1.000 |" in table
    assert "step 50" in table


def test_durations_grouped_by_stage(tmp_path):
    (tmp_path / "seed_0").mkdir()
    _executed_notebook(tmp_path / "seed_0" / "pretrain-full.ipynb", 60.0)
    _executed_notebook(tmp_path / "seed_0" / "pretrain-oracle.ipynb", 120.0)
    _executed_notebook(tmp_path / "figures.ipynb", 30.0)
    assert stage_durations(tmp_path) == [("figures.ipynb", 30.0), ("seed_0/pretrain-full.ipynb", 60.0),
                                         ("seed_0/pretrain-oracle.ipynb", 120.0)]
    table = durations_table(tmp_path)
    assert "| pretrain | 2 | 3.0 |" in table
    assert "| **total** | 3 | **3.5** |" in table


def test_durations_only_locked_notebooks(tmp_path):
    notebooks = tmp_path / "outputs" / "language" / "notebooks"
    (notebooks / "seed_0").mkdir(parents=True)
    _executed_notebook(notebooks / "seed_0" / "undo-0.5.ipynb", 60.0)
    _executed_notebook(notebooks / "seed_0" / "undo-0.3.ipynb", 600.0)  # left from an earlier run
    lock = {"schema": "2.0", "stages": {"language-undo@0-0.5": {"outs": [
        {"path": "outputs/language/notebooks/seed_0/undo-0.5.ipynb", "md5": "0"},
        {"path": "outputs/language/runs/seed_0/undo/alpha_0.5/metrics.json", "md5": "0"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))

    only = locked_notebooks(tmp_path / "dvc.lock", notebooks)

    assert only == {"seed_0/undo-0.5.ipynb"}
    assert "| undo | 1 | 1.0 |" in durations_table(notebooks, only)


def test_no_lock_reads_every_notebook(tmp_path):
    assert locked_notebooks(tmp_path / "dvc.lock", tmp_path) is None


def test_timing_table_sums_relearning_lrs(tmp_path):
    from undo_lib.report import timing_table

    (tmp_path / "seed_0").mkdir()
    (tmp_path / "seed_0" / "pretrain-full.json").write_text(json.dumps(
        {"seconds": 120.0, "tokens_per_second": 1000.0, "resumed_from_step": None, "peak_memory_bytes": 2**30}))
    (tmp_path / "seed_0" / "relearn-oracle.json").write_text(json.dumps({
        "0.001": {"seconds": 10.0, "tokens_per_second": 500.0, "peak_memory_bytes": 2**20},
        "0.003": {"seconds": 20.0, "tokens_per_second": 700.0, "peak_memory_bytes": 3 * 2**20}}))

    rows = {row["stage"]: row for row in timing_table(tmp_path)}

    assert rows["seed_0/pretrain-full"] == {"stage": "seed_0/pretrain-full", "runs": 1, "seconds": 120.0,
                                            "tokens_per_second": 1000, "peak_memory_mib": 1024}
    assert rows["seed_0/relearn-oracle"]["seconds"] == 30.0
    assert rows["seed_0/relearn-oracle"]["tokens_per_second"] == 600
    assert rows["seed_0/relearn-oracle"]["peak_memory_mib"] == 3


def test_experiment_tables_pivot_pareto(tmp_path):
    from undo_lib.report import experiment_tables

    row = {"label": "Oracle", "retain_before": 0.5, "forget_before": 0.0, "forget_at_step": 0.25}
    summary = {"robustness_step": 50, "tables": {
        "e1": [dict(row, kl_final=0.01)], "e2": [dict(row, method="MaxEnt", collapsed_seeds=0)],
        "e3": [dict(row, relative_robustness=1.0)],
        "e4": [{"label": "Oracle", "budget": 0, "retain_before": 0.5, "forget_after": 0.0, "collapsed_seeds": 0},
               {"label": "Oracle", "budget": 50, "retain_before": 0.5, "forget_after": 0.25, "collapsed_seeds": 0}]}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))

    text = experiment_tables(path)

    assert "| label | kl final | retain before | forget before | forget at step |" in text
    assert "| Oracle | 0.010 | 0.500 | 0.000 | 0.250 |" in text
    assert "| label | retain before | forget after 0 | forget after 50 | collapsed seeds |" in text
    assert "| Oracle | 0.500 | 0.000 | 0.250 | 0 |" in text
