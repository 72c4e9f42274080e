"""Start-up and finish of a notebook stage: params, logging, seeds, device and output files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from undo_lib.config import Params, load_params, to_dict
from undo_lib.io import derive_seed, seed_everything, setup_notebook, write_csv, write_json
from undo_lib.model import resolve_device, save_model

logger = logging.getLogger(__name__)


def start_stage(params_file: str, setting: str, stage: str, item: str = "") -> tuple[Params, torch.device, int]:
    """Load and validate params, set up logging and threads, seed every RNG.

    Returns:
        (params, device, seed), where seed is derived from ``shared.seed``, the stage and the item.
    """
    params = load_params(params_file)
    if setting not in params.shared.settings:
        raise ValueError(f"setting {setting!r} is not in shared.settings {list(params.shared.settings)}")
    setup_notebook(params.shared.torch_threads)
    seed = derive_seed(params.shared.seed, setting, stage, item)
    seed_everything(seed)
    device = resolve_device(params.shared.device)
    logger.info("stage %s %s (%s) on %s, seed %d", stage, item, setting, device, seed)
    return params, device, seed


def clean_out_dir(out_dir: str | Path, keep: tuple[str, ...] = ()) -> Path:
    """Create ``out_dir`` or empty it (except ``keep``), so a stage rewrites its outputs completely."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for child in out_dir.iterdir():
        if child.name in keep:
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return out_dir


def finish_stage(out_dir: str | Path, metrics: dict, history: list[dict] | None = None,
                 model=None, tokenizer=None, model_dir: str | Path | None = None, section=None) -> None:
    """Write the model to ``model_dir`` (if given), then history.csv and metrics.json to ``out_dir``.

    metrics.json is written last, so its presence marks a finished stage.
    """
    out_dir = Path(out_dir)
    if model is not None:
        if model_dir is None:
            raise ValueError("finish_stage got a model but no model_dir to save it to")
        save_model(model, tokenizer, model_dir)
    if history is not None:
        write_csv(out_dir / "history.csv", history)
    if section is not None:
        metrics = {**metrics, "params": to_dict(section)}
    write_json(out_dir / "metrics.json", metrics)
    logger.info("wrote outputs to %s", out_dir)


def arithmetic_evaluator(params: Params, setting: str, tokenizer, data_dir: str | Path, with_english: bool = True):
    """The evaluator every arithmetic stage uses: 8 accuracy sets, plus English CE if asked."""
    from undo_lib.data import pack_records
    from undo_lib.evaluate import ArithmeticEvaluator
    from undo_lib.io import read_jsonl

    data_dir = Path(data_dir)
    english = None
    if with_english:
        english = pack_records(tokenizer, read_jsonl(data_dir / "english_validation.jsonl"),
                               params.data[setting].seq_len, "all")
    return ArithmeticEvaluator(
        tokenizer, read_jsonl(data_dir / "eval.jsonl"), params.evaluate[setting].batch_size,
        params.evaluate[setting].max_new_tokens, english=english,
    )


def last_eval(history: list[dict]) -> dict:
    """Evaluation metrics of the last evaluated step (the final model)."""
    for row in reversed(history):
        if "retain" in row:
            return {k: v for k, v in row.items() if k in ("retain", "forget", "english_ce") or k.startswith("acc/")}
    raise ValueError("no evaluated step in the training history")
