"""Resumable training checkpoints, so a killed stage continues where it stopped.

A checkpoint is one folder, written atomically (``undo_lib.io.atomic_dir``) and holding:

- ``model.safetensors``: every model tensor (``safetensors.torch.save_model``, tied weights once);
- ``trainer.pt``: the optimizer state and the Python, NumPy and torch (CPU and CUDA) RNG states,
  saved with ``torch.save`` and read back only with ``torch.load(weights_only=True)``, so loading
  runs no pickled code;
- ``state.json``: the step, the number of batches drawn, the token and FLOP counters, the elapsed
  seconds, the history so far, the metrics the stop rule has seen, and a fingerprint.

The fingerprint hashes the training params (all but ``checkpoint_every``, which does not change
the result) and a key from the caller that names everything else the run depends on (other
params, input files, code). A checkpoint whose fingerprint differs is discarded, so a run never
resumes from another configuration's weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError

from undo_lib.config import TrainParams, to_dict
from undo_lib.io import IntegrityError, atomic_dir, remove_stale_temporaries

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
STATE_FILE = "state.json"


def checkpoint_fingerprint(params: TrainParams, key: str) -> str:
    """Return the sha256 that a checkpoint must carry to be resumed by a run with ``params`` and ``key``."""
    train = to_dict(dataclasses.replace(params, checkpoint_every=0))
    text = json.dumps({"format": FORMAT_VERSION, "train": train, "key": key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _rng_state() -> dict:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write model weights, optimizer and RNG states and ``state`` to the folder ``path``, atomically.

    ``state`` must be JSON-serialisable and contain ``step``. Floats keep their exact value because
    ``json`` writes their shortest round-trip representation.
    """
    with atomic_dir(path) as tmp:
        safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / TRAINER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **state}), encoding="utf-8")
    logger.info("saved checkpoint of step %d to %s", state["step"], path)


def _unreadable(path: Path, err: Exception) -> IntegrityError:
    return IntegrityError(
        f"checkpoint {path} is unreadable ({type(err).__name__}: {err}). Delete the folder to restart "
        "this training from step 0, then rerun the stage (`dvc repro`)."
    )


def load_checkpoint(path: str | Path, fingerprint: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore a checkpoint written by ``save_checkpoint`` into ``model``, ``optimizer`` and the RNGs.

    Returns:
        The saved ``state`` dict, or None when there is no checkpoint or when its fingerprint
        differs (that checkpoint is then deleted and training starts from step 0).

    Raises:
        IntegrityError: the folder exists but a file is missing, truncated or not what
            ``save_checkpoint`` writes (a pickle with code in ``trainer.pt`` included).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _unreadable(path / STATE_FILE, err) from err
    if state.get("format") != FORMAT_VERSION or state.get("fingerprint") != fingerprint:
        logger.warning("checkpoint %s was written by a run with other params, inputs or code, so it is "
                       "deleted and training starts from step 0", path)
        remove_checkpoint(path)
        return None

    device = next(model.parameters()).device
    try:
        safetensors.torch.load_model(model, str(path / WEIGHTS_FILE), strict=True, device=str(device))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise _unreadable(path / WEIGHTS_FILE, err) from err
    try:
        trainer = torch.load(path / TRAINER_FILE, map_location=device, weights_only=True)
        optimizer.load_state_dict(trainer["optimizer"])
        _set_rng_state(trainer["rng"])
    except Exception as err:  # torch.load raises UnpicklingError, RuntimeError or OSError; all mean unreadable
        raise _unreadable(path / TRAINER_FILE, err) from err
    logger.info("resuming from checkpoint %s at step %d", path, state["step"])
    return state


def remove_checkpoint(path: str | Path | None) -> None:
    """Delete the checkpoint folder ``path`` and any temporaries of an interrupted save."""
    if path is None:
        return
    remove_stale_temporaries(path)
    if Path(path).exists():
        shutil.rmtree(path)
        logger.info("removed checkpoint %s", path)
