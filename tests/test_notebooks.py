"""Every source notebook executed by Papermill with its smoke defaults, in pipeline order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]

# (notebook, parameter overrides, files the run must write, relative to the working folder)
RUNS = [
    ("data", {}, ["outputs-smoke/arithmetic/data/manifest.json", "outputs-smoke/arithmetic/data/tokenizer/tokenizer.json"]),
    ("init", {}, ["outputs-smoke/arithmetic/models/init/model.safetensors"]),
    ("pretrain", {}, ["outputs-smoke/arithmetic/pretrain/full/metrics.json", "outputs-smoke/arithmetic/models/full/model.safetensors"]),
    ("pretrain", {"model_name": "oracle", "out_dir": "outputs-smoke/arithmetic/pretrain/oracle",
                  "model_out": "outputs-smoke/arithmetic/models/oracle"},
     ["outputs-smoke/arithmetic/pretrain/oracle/metrics.json"]),
    ("unlearn", {}, ["outputs-smoke/arithmetic/unlearn/MaxEnt/metrics.json", "outputs-smoke/arithmetic/models/unlearned/model.safetensors"]),
    ("distill", {}, ["outputs-smoke/arithmetic/undo/alpha_0.5/metrics.json", "outputs-smoke/arithmetic/models/undo_0.5/model.safetensors"]),
    ("distill", {"student": "random_init", "out_dir": "outputs-smoke/arithmetic/distill",
                 "model_out": "outputs-smoke/arithmetic/models/distilled"},
     ["outputs-smoke/arithmetic/distill/metrics.json"]),
    ("relearn", {}, ["outputs-smoke/arithmetic/relearn/unlearned/lr_0.001/history.csv"]),
    ("relearn", {"model_name": "undo_0.5", "model_dir": "outputs-smoke/arithmetic/models/undo_0.5",
                 "out_dir": "outputs-smoke/arithmetic/relearn/undo_0.5/lr_0.001"},
     ["outputs-smoke/arithmetic/relearn/undo_0.5/lr_0.001/metrics.json"]),
    ("figures", {}, ["outputs-smoke/arithmetic/figures/relearning_curves.png",
                     "outputs-smoke/arithmetic/figures/summary.json"]),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("notebooks")
    (work / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "smoke_params.yaml", work / "tests" / "smoke_params.yaml")
    return work


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(RUNS)), ids=[f"{i}-{r[0]}" for i, r in enumerate(RUNS)])
def test_notebook_smoke_run(workdir, index):
    name, overrides, expected = RUNS[index]
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"), str(workdir / f"executed-{index}-{name}.ipynb"),
        parameters=overrides, cwd=str(workdir), kernel_name="python3", progress_bar=False,
    )
    for rel in expected:
        assert (workdir / rel).is_file(), f"{name} notebook did not write {rel}"


@pytest.mark.slow
def test_smoke_metrics_are_complete(workdir):
    metrics = json.loads((workdir / "outputs-smoke/arithmetic/undo/alpha_0.5/metrics.json").read_text())
    for key in ("teacher", "final", "compute", "cost_fraction", "stopped_early"):
        assert key in metrics, f"UNDO metrics lack {key}"
    assert metrics["compute"]["tokens"] > 0
