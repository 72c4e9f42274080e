"""Every source notebook executed by Papermill with its smoke defaults, in pipeline order, and
stages rejected before compute without touching earlier outputs."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import papermill
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _kernels_import_this_checkout():
    """Point the Papermill kernels (they inherit os.environ) at this checkout's undo_lib, which an
    editable install of another checkout would otherwise shadow."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield

# (notebook, parameter overrides, files the run must write, relative to the working folder)
SMOKE = "outputs-smoke/arithmetic"


def _stage_files(stage_item: str) -> dict:
    """Checkpoint folder and timing file of one stage item, as dvc.yaml passes them."""
    return {"checkpoint_dir": f"{SMOKE}/checkpoints/seed_0/{stage_item}",
            "timing_out": f"{SMOKE}/timing/seed_0/{stage_item}.json"}


def _unlearn(run: str) -> tuple:
    """The unlearning notebook for one sweep (smoke params: one LR, 0.001, per sweep)."""
    return ("unlearn", {"run": run, "out_dir": f"{RUNS_DIR}/unlearn/{run}/lr_0.001",
                        "model_out": f"{MODELS}/unlearned/{run}/lr_0.001", **_stage_files(f"unlearn-{run}-lr_0.001")},
            [f"{RUNS_DIR}/unlearn/{run}/lr_0.001/metrics.json", f"{MODELS}/unlearned/{run}/lr_0.001/model.safetensors"])


MODELS, RUNS_DIR = f"{SMOKE}/models/seed_0", f"{SMOKE}/runs/seed_0"

# (notebook, parameter overrides, files the run must write, relative to the working folder)
RUNS = [
    ("data", {}, [f"{SMOKE}/data/manifest.json", f"{SMOKE}/data/tokenizer/tokenizer.json"]),
    ("init", {}, [f"{MODELS}/init/model.safetensors"]),
    ("pretrain", {}, [f"{RUNS_DIR}/pretrain/full/metrics.json", f"{MODELS}/full/model.safetensors",
                      f"{SMOKE}/timing/seed_0/pretrain-full.json"]),
    ("pretrain", {"model_name": "oracle", "out_dir": f"{RUNS_DIR}/pretrain/oracle", "model_out": f"{MODELS}/oracle",
                  **_stage_files("pretrain-oracle")},
     [f"{RUNS_DIR}/pretrain/oracle/metrics.json", f"{SMOKE}/timing/seed_0/pretrain-oracle.json"]),
    ("unlearn", {}, [f"{RUNS_DIR}/unlearn/MaxEnt/lr_0.001/metrics.json",
                     f"{MODELS}/unlearned/MaxEnt/lr_0.001/model.safetensors",
                     f"{SMOKE}/timing/seed_0/unlearn-MaxEnt-lr_0.001.json"]),
    *(_unlearn(run) for run in ("GradDiff", "RMU", "SAM", "RepNoise")),
    ("teacher", {}, [f"{RUNS_DIR}/teachers/MaxEnt.json", f"{MODELS}/teacher_MaxEnt/model.safetensors"]),
    ("distill", {}, [f"{RUNS_DIR}/undo/alpha_0.5/metrics.json", f"{MODELS}/undo/alpha_0.5/model.safetensors",
                     f"{SMOKE}/timing/seed_0/undo-0.5.json"]),
    ("distill", {"model_name": "match_full", "student": "full", "student_dir": f"{MODELS}/full",
                 "teacher_dir": f"{MODELS}/oracle", "teacher_record": "", "out_dir": f"{RUNS_DIR}/match/full",
                 "model_out": f"{MODELS}/match_full", **_stage_files("match-full")},
     [f"{RUNS_DIR}/match/full/metrics.json", f"{SMOKE}/timing/seed_0/match-full.json"]),
    ("relearn", {}, [f"{RUNS_DIR}/relearn/unlearned/MaxEnt_lr_0.001/lr_0.001/history.csv",
                     f"{RUNS_DIR}/relearn/unlearned/RepNoise_lr_0.001/lr_0.001/history.csv",
                     f"{SMOKE}/timing/seed_0/relearn-unlearned/MaxEnt_lr_0.001.json"]),
    ("relearn", {"group": "undo", "out_dir": f"{RUNS_DIR}/relearn/undo",
                 "checkpoint_dir": f"{SMOKE}/checkpoints/seed_0/relearn-undo",
                 "timing_dir": f"{SMOKE}/timing/seed_0/relearn-undo"},
     [f"{RUNS_DIR}/relearn/undo/undo_0.5/lr_0.001/metrics.json", f"{SMOKE}/timing/seed_0/relearn-undo/undo_0.5.json"]),
]


def _language_run(run: tuple) -> tuple:
    """The same run for the language setting: every default path moved to outputs-smoke/language."""
    name, overrides, expected = run
    defaults = {key: value["default"] for key, value in papermill.inspect_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb")).items()}
    parameters = {key: ast.literal_eval(value) for key, value in defaults.items() if SMOKE in value}
    parameters.update(overrides)
    parameters = {key: value.replace(SMOKE, LANGUAGE_SMOKE) if isinstance(value, str) else value
                  for key, value in parameters.items()}
    return name, {**parameters, "setting": "language"}, [path.replace(SMOKE, LANGUAGE_SMOKE) for path in expected]


LANGUAGE_SMOKE = "outputs-smoke/language"
RUNS += [_language_run(run) for run in RUNS]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("notebooks")
    (work / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "smoke_params.yaml", work / "tests" / "smoke_params.yaml")
    shutil.copytree(ROOT / "tests" / "fixtures" / "language" / "smoke", work / "tests" / "fixtures" / "language" / "smoke")
    return work


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(RUNS)), ids=[f"{i}-{r[0]}-{r[1].get('setting', 'arithmetic')}"
                                                         for i, r in enumerate(RUNS)])
def test_notebook_smoke_run(workdir, index):
    name, overrides, expected = RUNS[index]
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"), str(workdir / f"executed-{index}-{name}.ipynb"),
        parameters=overrides, cwd=str(workdir), kernel_name="python3", progress_bar=False,
    )
    for rel in expected:
        assert (workdir / rel).is_file(), f"{name} notebook did not write {rel}"


@pytest.mark.slow
@pytest.mark.parametrize("smoke", [SMOKE, LANGUAGE_SMOKE])
def test_smoke_metrics_are_complete(workdir, smoke):
    metrics = json.loads((workdir / smoke / "runs/seed_0/undo/alpha_0.5/metrics.json").read_text())
    for key in ("teacher", "teacher_model", "final", "compute", "cost_fraction", "stopped_early", "reached_stop_rule"):
        assert key in metrics, f"UNDO metrics lack {key}"
    assert metrics["compute"]["tokens"] > 0
    assert metrics["teacher_model"] == "MaxEnt_lr_0.001"
    unlearned = json.loads((workdir / smoke / "runs/seed_0/unlearn/RMU/lr_0.001/metrics.json").read_text())
    for key in ("reference", "retain_fraction", "collapsed", "method", "run"):
        assert key in unlearned, f"unlearning metrics lack {key}"
    sam = json.loads((workdir / smoke / "runs/seed_0/unlearn/SAM/lr_0.001/metrics.json").read_text())
    assert sam["method"] == "MaxEnt"
    assert sam["params"]["train"]["sam_rho"] == 0.05


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _execute_expecting_error(work: Path, name: str, parameters: dict) -> papermill.PapermillExecutionError:
    with pytest.raises(papermill.PapermillExecutionError) as excinfo:
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(work / f"rejected-{name}.ipynb"),
                                   parameters=parameters, cwd=str(work), kernel_name="python3", progress_bar=False)
    return excinfo.value


@pytest.mark.slow
def test_rejected_runs_change_nothing(tmp_path, smoke_params_dict):
    """Bad params, a missing model folder and an unknown method stop a stage before it writes anything."""
    work = tmp_path
    (work / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "smoke_params.yaml", work / "tests" / "smoke_params.yaml")
    smoke_params_dict["pretrain"]["arithmetic"]["lr"] = -0.5
    (work / "broken.yaml").write_text(yaml.safe_dump(smoke_params_dict), encoding="utf-8")
    papermill.execute_notebook(str(ROOT / "notebooks" / "data.ipynb"), str(work / "data.ipynb"), cwd=str(work),
                               kernel_name="python3", progress_bar=False)
    data = work / "outputs-smoke" / "arithmetic" / "data"
    before = _snapshot(data)

    broken_params = _execute_expecting_error(work, "pretrain", {"params_file": "broken.yaml"})
    missing_model = _execute_expecting_error(work, "pretrain", {})  # the init stage never ran
    unknown_method = _execute_expecting_error(work, "unlearn", {"run": "GradDif"})
    outside_sweep = _execute_expecting_error(work, "unlearn", {"lr": 0.5})
    impossible_alpha = _execute_expecting_error(work, "distill", {"alpha": 1.5})

    assert broken_params.ename == "ParamsError"
    assert "pretrain.arithmetic.lr" in broken_params.evalue
    assert "-0.5" in broken_params.evalue
    assert missing_model.ename == "FileNotFoundError"
    assert "outputs-smoke/arithmetic/models/seed_0/init/model.safetensors" in missing_model.evalue
    assert "dvc repro arithmetic-init@0" in missing_model.evalue
    assert unknown_method.ename == "KeyError"
    assert "GradDif" in unknown_method.evalue
    assert "GradDiff" in unknown_method.evalue
    assert outside_sweep.ename == "ValueError"
    assert "unlearn.arithmetic.MaxEnt.lrs" in outside_sweep.evalue
    assert "0.5" in outside_sweep.evalue
    assert impossible_alpha.ename == "ValueError"
    assert "alpha=1.5" in impossible_alpha.evalue
    assert str(ROOT / "undo_lib") in "".join(missing_model.traceback), "the kernel imported another undo_lib"
    assert _snapshot(data) == before, "a rejected stage changed the data stage's outputs"
    assert sorted(p.name for p in (work / "outputs-smoke" / "arithmetic").iterdir()) == ["data"], \
        "a rejected stage created output folders"
