"""A training stage killed with SIGKILL at several points, then `dvc repro`, ends with the same
outputs, byte for byte, as an uninterrupted run.

The test runs in a temporary copy of the project whose pretrain notebook has one extra cell. When
UNDO_TEST_HANG_AT names a point, that cell wraps a library function so the kernel writes a marker
file and sleeps there. The test then kills dvc, papermill and the kernel with SIGKILL, as a user's
`kill -9` or a crash would. Without the variable the cell does nothing.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import nbformat
import psutil
import pytest

STAGE = "arithmetic-pretrain@0-full"

FAULT_CELL = '''\
# Test-only fault injection added by tests/test_interruption.py; inactive without UNDO_TEST_HANG_AT.
import contextlib as _contextlib
import os as _os
import time as _time
from pathlib import Path as _Path

_point = _os.environ.get("UNDO_TEST_HANG_AT")


def _hang():
    _Path(_os.environ["UNDO_TEST_MARKER"]).write_text(_point)
    _time.sleep(600)


def _hang_in_atomic_dir(real):
    @_contextlib.contextmanager
    def wrapped(path):
        with real(path) as tmp:
            yield tmp
            _hang()  # every file is in the temporary folder; the rename has not happened
    return wrapped


if _point == "data-loading":
    import undo_lib.data as _data
    _pack_records = _data.pack_records
    def _pack_then_hang(*args, **kwargs):
        _pack_records(*args, **kwargs)
        _hang()
    _data.pack_records = _pack_then_hang
elif _point == "after-checkpoint-2":
    import undo_lib.train as _train
    _save_checkpoint = _train.save_checkpoint
    def _save_then_hang(path, model, optimizer, state):
        _save_checkpoint(path, model, optimizer, state)
        if state["step"] == 2:
            _hang()
    _train.save_checkpoint = _save_then_hang
elif _point == "checkpoint-write":
    import undo_lib.checkpoint as _checkpoint
    _checkpoint.atomic_dir = _hang_in_atomic_dir(_checkpoint.atomic_dir)
elif _point == "model-save":
    import undo_lib.model as _model
    _model.atomic_dir = _hang_in_atomic_dir(_model.atomic_dir)
elif _point == "before-metrics":
    import undo_lib.runtime as _runtime
    _write_json = _runtime.write_json
    def _write_json_or_hang(path, data):
        if _Path(path).name == "metrics.json":
            _hang()
        _write_json(path, data)
    _runtime.write_json = _write_json_or_hang
'''


def _add_fault_cell(project) -> None:
    path = project.root / "notebooks" / "pretrain.ipynb"
    nb = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(FAULT_CELL, id="pretrain-fault"))
    nbformat.write(nb, path)


def _forget_run_cache(project) -> None:
    """Delete DVC's run cache, which would otherwise restore the reference outputs instead of running."""
    shutil.rmtree(project.root / ".dvc" / "cache" / "runs", ignore_errors=True)


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the dvc process and every process below it, all of them started by this test."""
    tree = [psutil.Process(process.pid)]
    tree += tree[0].children(recursive=True)
    for proc in tree:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
    psutil.wait_procs(tree[1:], timeout=30)


def _repro_killed_at(project, point: str, *args: str) -> str:
    """Run `dvc repro` until the kernel reaches ``point``, SIGKILL it all, and return its output."""
    marker = project.root / f"reached-{point}"
    log = project.root / f"repro-{point}.log"
    env = {**project.env, "UNDO_TEST_HANG_AT": point, "UNDO_TEST_MARKER": str(marker)}
    _forget_run_cache(project)
    with log.open("w") as out:
        process = subprocess.Popen(["dvc", "repro", *args, STAGE], cwd=project.root, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        reached = marker.exists()
        _kill_tree(process)
    output = log.read_text()
    assert reached, f"the run never reached {point} (exit code {process.returncode}):\n{output[-3000:]}"
    return output


def _outputs(project) -> dict[str, bytes]:
    return {name: project.outputs(name).read_bytes()
            for name in ("runs/seed_0/pretrain/full/metrics.json", "runs/seed_0/pretrain/full/history.csv",
                         "models/seed_0/full/model.safetensors")}


def _checkpoint_state(project) -> dict:
    return json.loads(project.outputs("checkpoints/seed_0/pretrain-full/state.json").read_text())


@pytest.mark.slow
def test_sigkill_then_repro_matches_uninterrupted(project_copy):
    project = project_copy("interrupted", {"pretrain.arithmetic.checkpoint_every": 1})
    _add_fault_cell(project)
    reference_run = project.dvc("repro", STAGE)
    assert reference_run.returncode == 0, reference_run.stdout[-3000:] + reference_run.stderr[-3000:]
    reference = _outputs(project)
    assert not project.outputs("checkpoints/seed_0/pretrain-full").exists(), "a finished stage must delete its checkpoint"

    # 1. Killed while packing the training data: no checkpoint yet.
    _repro_killed_at(project, "data-loading", "--force", "--single-item")
    assert not project.outputs("checkpoints/seed_0/pretrain-full").exists()

    # 2. Killed mid-training, right after the checkpoint of step 2.
    _repro_killed_at(project, "after-checkpoint-2")
    assert _checkpoint_state(project)["step"] == 2

    # 3. Killed while writing the checkpoint of step 3: the one of step 2 stays intact.
    output = _repro_killed_at(project, "checkpoint-write")
    assert "resuming from checkpoint" in output
    assert "at step 2" in output
    assert _checkpoint_state(project)["step"] == 2
    assert list(project.outputs("checkpoints/seed_0").glob(".pretrain-full.tmp-*")), "precondition: killed mid-write"

    # 4. Killed while saving the trained model, after the final checkpoint.
    output = _repro_killed_at(project, "model-save")
    assert "at step 2" in output
    assert _checkpoint_state(project)["finished"]
    assert not project.outputs("models/seed_0/full").exists()
    assert list(project.outputs("models/seed_0").glob(".full.tmp-*")), "precondition: killed with the model half-saved"

    # 5. Killed after the model and history are saved, before metrics.json.
    output = _repro_killed_at(project, "before-metrics")
    assert "at step 4" in output
    assert project.outputs("models/seed_0/full/model.safetensors").is_file()
    assert not project.outputs("runs/seed_0/pretrain/full/metrics.json").exists()

    # 6. A plain `dvc repro` finishes the stage with the uninterrupted run's outputs.
    _forget_run_cache(project)
    final = project.dvc("repro", STAGE)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert f"Running stage '{STAGE}'" in final.stdout
    assert _outputs(project) == reference
    assert not project.outputs("checkpoints/seed_0/pretrain-full").exists()
    leftovers = [p for p in project.outputs().rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == [], f"temporaries of killed writes remain: {leftovers}"
    status = project.dvc("status", STAGE)
    assert "up to date" in status.stdout, status.stdout
