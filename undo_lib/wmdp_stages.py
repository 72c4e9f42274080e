"""Start-up checks of the WMDP notebook stages: params, seeds, device and inputs, before any compute."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from undo_lib.config import Params, ParamsError, WMDPParams, load_params
from undo_lib.prepare import MANIFEST, verify_data
from undo_lib.runtime import set_up_run
from undo_lib.wmdp import DATA_FILES, SOURCE_RECORD

logger = logging.getLogger(__name__)


def start_wmdp_stage(params_file: str, stage: str, item: str = "",
                     seed: int | None = None) -> tuple[Params, torch.device, int]:
    """Load params (which must have a ``wmdp`` section), set up logging, seed every RNG.

    Returns:
        (params, device, stage_seed); the stage seed derives from the training seed (``shared.seed``
        for the data and base stages), "wmdp", the stage and the item.
    """
    params = load_params(params_file)
    if params.wmdp is None:
        raise ParamsError(f"{params_file} has no 'wmdp' section, which the WMDP stages read. Copy it from "
                          "params.yaml (the offline stand-in) or profiles/paper-gpu.yaml.")
    device, stage_seed = set_up_run(params, seed, ("wmdp", stage, item))
    logger.info("WMDP stage %s %s on %s, training seed %s, stage seed %d", stage, item, device, seed, stage_seed)
    return params, device, stage_seed


def check_data(data_dir: str | Path, extra: list[str] | tuple[str, ...] = ()) -> None:
    """Check that the WMDP data stage's files (and ``extra`` ones) exist and match its manifest."""
    if not (Path(data_dir) / MANIFEST).is_file():
        raise FileNotFoundError(f"{Path(data_dir) / MANIFEST} not found: run the WMDP data stage first "
                                "(`dvc repro wmdp-data`).")
    verify_data(data_dir, [*DATA_FILES, *extra])


def check_local_files(w: WMDPParams) -> None:
    """Check that every local file the params name exists, naming the key of a missing one."""
    d, e = w.data, w.evaluate
    files = {f"wmdp.data.{name}.path": corpus.path
             for name, corpus in {"forget": d.forget, "retain": d.retain, **d.general}.items() if corpus.kind == "jsonl"}
    if e.backend == "builtin":
        files.update({f"wmdp.evaluate.{role}.{key}": getattr(task, key) for role, task in
                      (("forget", e.forget), ("retain", e.retain)) for key in ("questions", "fewshot_questions")
                      if getattr(task, key)})
    elif e.harness_include_path:
        files["wmdp.evaluate.harness_include_path"] = e.harness_include_path
    missing = [f"{key}: {path}" for key, path in files.items() if not Path(path).exists()]
    if missing:
        raise FileNotFoundError("files named in params.yaml not found (run from the repository root, or fix the "
                                "paths): " + "; ".join(missing))


def check_model_dir(model_dir: str | Path) -> None:
    """Check that ``model_dir`` contains a saved model or the base stage's ``source.json``."""
    model_dir = Path(model_dir)
    if not ((model_dir / "config.json").is_file() or (model_dir / SOURCE_RECORD).is_file()):
        raise FileNotFoundError(f"no model (config.json) and no {SOURCE_RECORD} found in {model_dir}: run the stage "
                                "that writes it first (`dvc repro` builds every missing input).")


def check_run(w, run: str) -> None:
    """Reject a run that ``wmdp.unlearn.runs`` does not list."""
    if run not in w.unlearn.runs:
        raise ValueError(f"unknown WMDP unlearning run {run!r}: wmdp.unlearn.runs lists {list(w.unlearn.runs)}.")


def check_alpha(w, teacher: str, alpha: float) -> None:
    """Reject a teacher or alpha that ``wmdp.undo`` does not list, or an alpha outside [0, 1]."""
    if teacher not in w.undo.teachers:
        raise ValueError(f"unknown UNDO teacher {teacher!r}: wmdp.undo.teachers lists {list(w.undo.teachers)}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"UNDO alpha must be in [0, 1], got {alpha}; set wmdp.undo.alphas accordingly.")
