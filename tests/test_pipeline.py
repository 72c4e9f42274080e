"""Checks of the pipeline's wiring: source notebooks, dvc.yaml and an end-to-end smoke `dvc repro`."""

from __future__ import annotations

import ast
import configparser
import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from undo_lib.config import RUN_NAMES, load_params
from undo_lib.names import RELEARN_GROUPS
from undo_lib.pipeline import missing_tracked_params, params_file_problems, render

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


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
    assert {"data", "init", "pretrain", "unlearn", "teacher", "distill", "relearn", "figures"} <= names


def test_dvc_yaml_is_generated():
    """dvc.yaml is what `python -m undo_lib.pipeline` writes; edit undo_lib/pipeline.py instead."""
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == render(), \
        "dvc.yaml is out of date: run `python -m undo_lib.pipeline`"


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
    items = {key: [str(v) for v in _resolve(params, value)] for key, value in body.get("matrix", {}).items()}
    for key in body.get("params", []):
        # A matrix item's key (wmdp.unlearn.${item.run}) must exist for every item of the matrix
        for resolved in [key] if "${item." not in key else [re.sub(r"\$\{item\.(\w+)\}", v, key)
                                                              for v in items[re.search(r"\$\{item\.(\w+)\}", key).group(1)]]:
            node = params
            for part in resolved.split("."):
                assert part in node, f"stage {name} declares param {resolved}, which params.yaml lacks"
                node = node[part]


def _resolve(params: dict, value):
    """The list a matrix entry stands for: a literal list or a ${dotted.key} of params.yaml."""
    if isinstance(value, list):
        return value
    node = params
    for part in value[2:-1].split("."):
        node = node[part]
    return node


def test_dvc_analytics_disabled():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config.get("core", "analytics") == "false"
    assert config.get("core", "check_update") == "false"


def test_default_params_load():
    assert load_params(ROOT / "params.yaml").shared.settings == ("arithmetic", "language")


# ----------------------------------------------------------------------------------------------
# Code dependencies, checkpoints and timing files in dvc.yaml


def _undo_lib_imports(source: str) -> set[str]:
    """undo_lib modules imported anywhere in ``source``, function-level imports included."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("undo_lib"):
            modules.add(node.module)
            modules |= {f"{node.module}.{a.name}" for a in node.names
                        if (ROOT / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").is_file()}
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.startswith("undo_lib")}
    return modules - {"undo_lib"}


def _module_file(module: str) -> Path:
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _import_closure(notebook: Path) -> set[str]:
    cells = nbformat.read(notebook, as_version=4).cells
    todo = list(_undo_lib_imports("\n".join(c.source for c in cells if c.cell_type == "code")))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _undo_lib_imports(_module_file(module).read_text(encoding="utf-8"))
    return seen


def _stage_bodies():
    for name, stage in _dvc_stages().items():
        yield name, stage.get("do", stage)


@pytest.mark.parametrize("name", list(_dvc_stages()))
def test_stage_deps_cover_imported_code(name):
    """A stage reruns when any undo_lib module its notebook imports (directly or not) changes."""
    body = dict(_stage_bodies())[name]
    notebook = ROOT / re.search(r"papermill (\S+\.ipynb)", body["cmd"]).group(1)
    deps = set(body["deps"])

    missing = sorted(m for m in _import_closure(notebook)
                     if _module_file(m).relative_to(ROOT).as_posix() not in deps
                     and not any(_module_file(m).relative_to(ROOT).as_posix().startswith(d + "/") for d in deps))

    assert not missing, f"stage {name} imports {missing} but does not list them in deps"


def _outs(body) -> dict[str, dict]:
    outs = {}
    for entry in body.get("outs", []) + body.get("metrics", []):
        path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        outs[path] = options
    return outs


TRAINING_STAGES = [f"{setting}-{kind}" for setting in ("arithmetic", "language")
                   for kind in ("pretrain", "distill", "match-full", "match-random_init", "undo",
                                *(f"unlearn-{run}" for run in RUN_NAMES), *(f"relearn-{g}" for g in RELEARN_GROUPS))]


@pytest.mark.parametrize("name", TRAINING_STAGES)
def test_training_stage_checkpoint_and_timing(name):
    body = dict(_stage_bodies())[name]
    checkpoint = re.search(r"-p checkpoint_dir (\S+)", body["cmd"]).group(1)
    timing = re.search(r"-p timing_(?:out|dir) (\S+)", body["cmd"]).group(1)
    outs = _outs(body)
    tracked = list(outs) + body["deps"]

    # DVC deletes a stage's outputs before it reruns the stage, so a checkpoint inside one would be lost.
    setting = name.split("-")[0]
    assert checkpoint.startswith(f"outputs/{setting}/checkpoints/")
    assert not any(checkpoint == t or checkpoint.startswith(t + "/") or t.startswith(checkpoint) for t in tracked)
    assert outs[timing] == {"cache": False}
    # The figures stage depends on these folders, so a timing file there would rerun it on every rerun.
    figure_deps = dict(_stage_bodies())[f"{setting}-figures"]["deps"]
    assert not any(timing.startswith(d + "/") for d in figure_deps)


def test_checkpoints_git_ignored():
    check = subprocess.run(["git", "check-ignore", "-q", "outputs/arithmetic/checkpoints/seed_0/pretrain-full/state.json"],
                           cwd=ROOT)

    assert check.returncode == 0, "checkpoints must not show up as untracked files"


def _setup_source(notebook: str) -> str:
    cells = [c for c in nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    return cells[1].source  # the first cell after the parameters cell


@pytest.mark.parametrize("notebook", ["init", "pretrain", "unlearn", "distill", "relearn"])
def test_inputs_checked_before_compute(notebook):
    """Inputs, data hashes and memory are checked before the stage empties out_dir or computes."""
    source = _setup_source(notebook)
    order = ["start_stage(", "require_inputs(", "verify_data(", "check_training_memory(", "clean_out_dir("]
    if notebook == "init":
        order.remove("check_training_memory(")
    if notebook == "unlearn":
        order.insert(1, "unlearning_run(")

    positions = [source.find(call) for call in order]

    assert -1 not in positions, f"{notebook}: the first cell lacks {order[positions.index(-1)]}"
    assert positions == sorted(positions), f"{notebook}: expected the calls in the order {order}"
    for heavy in ("pack_records(", "load_model(", "train("):
        assert heavy not in source, f"{notebook}: {heavy} runs before the input checks have finished"


# ----------------------------------------------------------------------------------------------
# End-to-end smoke run of `dvc repro`

# Outputs whose content differs between identical runs: wall-clock times and executed notebooks
# (Papermill records start and end times in them).
FIGURE_FILES = ("e1_oracle_matching.png", "e2_unlearn_vs_distill.png", "e3_robustness_vs_compute.png",
                "e3_relearning_curves.png", "e4_pareto.png", "relearning_by_lr.png", "e1.csv", "e2.csv", "e3.csv",
                "e4.csv", "summary.json")

RUN_SPECIFIC = tuple(f"outputs/{setting}/{folder}/" for setting in ("arithmetic", "language", "wmdp")
                     for folder in ("timing", "notebooks"))


@pytest.fixture(scope="module")
def smoke_run(project_copy):
    """The whole pipeline, reproduced once with the smoke params in a temporary copy."""
    project = project_copy("smoke")
    run = project.dvc("repro", timeout=2400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return project


def _lock_hashes(project) -> dict[str, str]:
    """md5 of every output in dvc.lock, except run-specific ones."""
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    return {f"{stage}:{out['path']}": out["md5"] for stage, body in lock["stages"].items()
            for out in body.get("outs", []) if not out["path"].startswith(RUN_SPECIFIC)}


@pytest.mark.slow
def test_dvc_repro_smoke(smoke_run):
    """`dvc repro` of the whole pipeline in a temporary copy, with the smoke params as params.yaml."""
    project = smoke_run
    for setting in ("arithmetic", "language"):
        root = project.root / "outputs" / setting
        for name in FIGURE_FILES:
            assert (root / "figures" / name).is_file(), f"dvc repro did not write the {setting} {name}"
        assert (root / "models/seed_0/undo/alpha_0.5/model.safetensors").is_file()
        assert (root / "models/seed_0/teacher_RMU/model.safetensors").is_file()
        assert (root / "runs/seed_0/relearn/undo/undo_0.5/lr_0.001/history.csv").is_file()
        assert (root / "runs/seed_0/relearn/unlearned/SAM_lr_0.001/lr_0.001/history.csv").is_file()
        assert (root / "timing/seed_0/relearn-reference/oracle.json").is_file()
        assert (root / "runs/seed_0/teachers/GradDiff.json").is_file()
        assert (root / "timing/seed_0/pretrain-full.json").is_file()
        assert "seconds" not in (root / "runs/seed_0/pretrain/full/metrics.json").read_text()
        checkpoints = root / "checkpoints"
        assert not checkpoints.exists() or not any(p.is_file() for p in checkpoints.rglob("*"))

    wmdp = project.root / "outputs" / "wmdp"
    for path in ("figures/wmdp_relearning.png", "figures/summary.json", "figures/table.md",
                 "models/base/model.safetensors", "models/seed_0/undo/RMU/alpha_0.25/model.safetensors",
                 "runs/seed_0/relearn/undo_MaxEnt_0.25/lr_0.001/history.csv",
                 "runs/seed_0/relearn/RepNoise/lr_0.001/metrics.json", "timing/seed_0/unlearn-SAM.json"):
        assert (wmdp / path).is_file(), f"dvc repro did not write outputs/wmdp/{path}"
    summary = json.loads((wmdp / "figures/summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["base", "MaxEnt", "RMU", "SAM", "RepNoise",
                                                        "undo_MaxEnt_0.25", "undo_RMU_0.25"]
    for model in summary["models"]:
        assert set(model["relearned"]["forget"]) == {"0", "1", "3"}, model["model"]
        assert set(model["relearned"]["forget_ce"]) == {"0", "1", "3"}, model["model"]
    assert (wmdp / "runs/base/history.csv").is_file(), "the stand-in's pretraining history is missing"

    status = project.dvc("status")
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
def test_rerun_is_bitwise_identical(smoke_run):
    """Rerunning stages with the same params and seed rewrites byte-identical outputs (CPU)."""
    project = smoke_run
    before = _lock_hashes(project)
    runs = project.root / "outputs"
    metrics_before = {p: p.read_bytes() for p in runs.rglob("*") if p.name in ("metrics.json", "history.csv")}
    stages = ["arithmetic-data", "arithmetic-pretrain@0-oracle", "arithmetic-unlearn-RMU@0-0.001",
              "arithmetic-unlearn-SAM@0-0.001", "arithmetic-teacher@0-MaxEnt", "arithmetic-undo@0-0.5",
              "arithmetic-relearn-unlearned@0", "language-data", "language-unlearn-RepNoise@0-0.001",
              "language-distill@0-GradDiff", "language-match-full@0", "language-relearn-reference@0",
              "wmdp-data", "wmdp-unlearn@0-RMU", "wmdp-undo@0-MaxEnt-0.25", "wmdp-relearn-base@0"]

    for stage in stages:
        run = project.dvc("repro", "--force", "--single-item", stage)
        assert run.returncode == 0, f"{stage}: " + run.stdout[-2000:] + run.stderr[-2000:]
        assert f"Running stage '{stage}'" in run.stdout, f"{stage} was not rerun: {run.stdout[-1000:]}"

    after = _lock_hashes(project)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"outputs differ after a rerun with the same params: {changed}"
    for path, content in metrics_before.items():
        assert path.read_bytes() == content, f"{path} differs after a rerun"
    status = project.dvc("status")
    assert "up to date" in status.stdout, "a bitwise-identical rerun left stages to rerun: " + status.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_profiles_load(path):
    """Every documented params profile passes validation, so `cp profiles/X.yaml params.yaml` works."""
    assert load_params(path).shared.settings


def test_tracked_params_all_present(smoke_params_dict):
    assert missing_tracked_params(smoke_params_dict) == []


def test_tracked_params_missing_named(smoke_params_dict):
    del smoke_params_dict["shared"]["tf32"]
    del smoke_params_dict["unlearn"]["language"]["RMU"]["control_vector"]

    missing = missing_tracked_params(smoke_params_dict)

    assert missing == ["shared.tf32", "unlearn.language.RMU.control_vector"]


def test_unlearn_stage_tracks_no_lr_list():
    """Adding an LR to a sweep must not rerun the sweep's other points."""
    for name, body in _stage_bodies():
        if "-unlearn-" in name:
            assert not any(key.endswith(".lrs") for key in body["params"]), name


def _problems(tmp_path, data) -> list[str]:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return params_file_problems(path)


def test_check_params_smoke_ok(tmp_path, smoke_params_dict):
    assert _problems(tmp_path, smoke_params_dict) == []


def test_check_params_misspelt_setting(tmp_path, smoke_params_dict):
    smoke_params_dict["relearn"]["langauge"] = smoke_params_dict["relearn"]["language"]

    problems = _problems(tmp_path, smoke_params_dict)

    assert problems == ["relearn.langauge: unknown setting. Did you mean 'language'? "
                        "Settings: ['arithmetic', 'language']."]


def test_check_params_one_setting_listed(tmp_path, smoke_params_dict):
    smoke_params_dict["shared"]["settings"] = ["arithmetic"]

    problems = _problems(tmp_path, smoke_params_dict)

    assert len(problems) == 1
    assert "dvc repro <setting>-figures" in problems[0]


def test_check_params_unreadable_files(tmp_path):
    (tmp_path / "list.yaml").write_text("[]", encoding="utf-8")
    (tmp_path / "broken.yaml").write_text("a: [\n", encoding="utf-8")

    assert "file not found" in params_file_problems(tmp_path / "absent.yaml")[0]
    assert "expected a mapping of sections, got list" in params_file_problems(tmp_path / "list.yaml")[0]
    assert "invalid YAML" in params_file_problems(tmp_path / "broken.yaml")[0]


def test_teacher_stage_tracks_method_lrs():
    """Removing a sweep point must rerun the teacher choice, although the sweep folders keep its outputs."""
    params = dict(_stage_bodies())["arithmetic-teacher"]["params"]

    assert {f"unlearn.arithmetic.{m}.lrs" for m in ("GradDiff", "MaxEnt", "RMU")} <= set(params)
