"""Checks of the pipeline's wiring: source notebooks, dvc.yaml and an end-to-end smoke `dvc repro`."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from undo_lib.config import load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BIN = Path(sys.executable).parent


def _parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "expected exactly one cell tagged 'parameters'"
    return cells[0]


def _parameter_names(path: Path) -> set[str]:
    tree = ast.parse(_parameters_cell(nbformat.read(path, as_version=4)).source)
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"data", "init", "pretrain", "unlearn", "distill", "relearn", "figures"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs for c in code), "source notebooks must have no outputs"
    assert all(c.execution_count is None for c in code), "source notebooks must have no execution counts"
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be the parameters cell"
    _parameters_cell(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defaults_are_smoke_setting(path):
    source = _parameters_cell(nbformat.read(path, as_version=4)).source
    assert 'params_file = "tests/smoke_params.yaml"' in source
    assert "outputs/" not in source.replace("outputs-smoke/", ""), "defaults must not write into outputs/"


def _stage_commands():
    for name, stage in _dvc_stages().items():
        body = stage.get("do", stage)
        yield name, body["cmd"]


@pytest.mark.parametrize("name,cmd", list(_stage_commands()), ids=[n for n, _ in _stage_commands()])
def test_stage_passes_known_parameters(name, cmd):
    notebook = re.search(r"papermill (\S+\.ipynb)", cmd).group(1)
    passed = set(re.findall(r"-p (\w+) ", cmd))
    unknown = passed - _parameter_names(ROOT / notebook)
    assert not unknown, f"stage {name} passes parameters its notebook lacks: {sorted(unknown)}"


@pytest.mark.parametrize("name", list(_dvc_stages()))
def test_stage_params_exist(name):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    body = _dvc_stages()[name].get("do", _dvc_stages()[name])
    for key in body.get("params", []):
        node = params
        for part in key.split("."):
            assert part in node, f"stage {name} declares param {key}, which params.yaml lacks"
            node = node[part]


def test_dvc_analytics_disabled():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config.get("core", "analytics") == "false"
    assert config.get("core", "check_update") == "false"


def test_default_params_load():
    assert load_params(ROOT / "params.yaml").shared.settings == ("arithmetic",)


def _copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith("outputs/") or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


@pytest.mark.slow
def test_dvc_repro_smoke(tmp_path):
    """`dvc repro` of the whole pipeline in a temporary copy, with the smoke params as params.yaml."""
    project = tmp_path / "project"
    _copy_project(project)
    shutil.copy(ROOT / "tests" / "smoke_params.yaml", project / "params.yaml")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    figures = project / "outputs" / "arithmetic" / "figures"
    for name in ("relearning_curves.png", "robustness_vs_compute.png", "relearning_by_lr.png", "summary.json"):
        assert (figures / name).is_file(), f"dvc repro did not write {name}"
    assert (project / "outputs/arithmetic/models/undo_0.5/model.safetensors").is_file()
    assert (project / "outputs/arithmetic/relearn/undo_0.5/lr_0.001/history.csv").is_file()

    status = subprocess.run(["dvc", "status"], cwd=project, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout
