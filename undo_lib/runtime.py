"""Start-up and finish of a notebook stage: params, logging, seeds, device, input checks and outputs.

The first code cell of a training notebook calls ``start_stage`` (params, seeds, device),
``require_inputs`` (every input exists), ``verify_data`` (the data files match the data stage's
manifest) and ``check_training_memory`` before ``clean_out_dir`` and before any compute. A rejected
run therefore changes no file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Mapping

import numpy
import torch
import transformers

from undo_lib.checkpoint import remove_checkpoint
from undo_lib.config import RUN_NAMES, Params, TrainParams, load_params, to_dict
from undo_lib.io import derive_seed, file_sha256, seed_everything, setup_notebook, write_csv, write_json
from undo_lib.model import check_gpu_count, resolve_device, save_model
from undo_lib.prepare import MANIFEST
from undo_lib.resources import check_memory, estimate_training_memory

logger = logging.getLogger(__name__)


def start_stage(params_file: str, setting: str, stage: str, item: str = "",
                seed: int | None = None) -> tuple[Params, torch.device, int]:
    """Load and validate params, set up logging and threads, seed every RNG.

    Args:
        seed: the training seed of this stage, one of ``shared.seeds``; None for the data stage,
            which uses ``shared.seed``.

    Returns:
        (params, device, stage_seed), where stage_seed is derived from the seed, the setting, the
        stage and the item.
    """
    params = load_params(params_file)
    if setting not in params.shared.settings:
        raise ValueError(f"setting {setting!r} is not in shared.settings {list(params.shared.settings)}")
    device, stage_seed = set_up_run(params, seed, (setting, stage, item))
    logger.info("stage %s %s (%s) on %s, training seed %s, stage seed %d", stage, item, setting, device, seed,
                stage_seed)
    return params, device, stage_seed


def set_up_run(params: Params, seed: int | None, names: tuple[str, ...]) -> tuple[torch.device, int]:
    """Set up logging and threads, seed every RNG with the stage seed, and pick the device.

    Args:
        seed: the training seed, one of ``shared.seeds``; None uses ``shared.seed``.
        names: what the stage seed derives from besides the seed (setting or branch, stage, item).

    Returns:
        (device, stage_seed).

    Raises:
        ValueError: ``seed`` is not in ``shared.seeds``.
        RuntimeError: ``shared.device`` is cuda without a GPU.
        ValueError: ``shared.num_processes`` is larger than the number of visible GPUs.
    """
    if seed is not None and seed not in params.shared.seeds:
        raise ValueError(f"seed {seed} is not in shared.seeds {list(params.shared.seeds)}; add it there "
                         "(and run `dvc repro`) or pass one of those seeds")
    setup_notebook(params.shared.torch_threads)
    stage_seed = derive_seed(params.shared.seed if seed is None else seed, *names)
    seed_everything(stage_seed)
    device = resolve_device(params.shared.device)
    if device.type == "cuda":
        check_gpu_count(params.shared.num_processes)
    torch.backends.cuda.matmul.allow_tf32 = params.shared.tf32  # no effect on CPU
    torch.backends.cudnn.allow_tf32 = params.shared.tf32
    return device, stage_seed


def producing_stage(setting: str, model_name: str, seed: int) -> str:
    """Return the DVC stage (named as in undo_lib/pipeline.py) that writes model ``model_name`` of seed ``seed``."""
    if model_name in ("init",):
        return f"{setting}-init@{seed}"
    if model_name in ("full", "oracle"):
        return f"{setting}-pretrain@{seed}-{model_name}"
    if model_name in ("match_full", "match_random_init"):
        return f"{setting}-{model_name.replace('_', '-', 1)}@{seed}"
    for prefix, stage in (("teacher_", "teacher"), ("distilled_", "distill"), ("undo_", "undo")):
        if model_name.startswith(prefix):
            return f"{setting}-{stage}@{seed}-{model_name.removeprefix(prefix)}"
    run, _, lr = model_name.partition("_lr_")
    if run in RUN_NAMES and lr:
        return f"{setting}-unlearn-{run}@{seed}-{lr}"
    raise ValueError(f"unknown model name {model_name!r}")


def data_inputs(data_dir: str | Path, setting: str, names: tuple[str, ...] | list[str]) -> dict[Path, str]:
    """Map the data files ``names`` (and the manifest) to the data stage, for ``require_inputs``."""
    return {Path(data_dir) / name: f"{setting}-data" for name in (MANIFEST, *names)}


def model_inputs(model_dir: str | Path, setting: str, model_name: str, seed: int) -> dict[Path, str]:
    """Map the weights of the model folder ``model_dir`` to the stage that writes it, for ``require_inputs``."""
    return {Path(model_dir) / "model.safetensors": producing_stage(setting, model_name, seed)}


def require_inputs(inputs: Mapping[str | Path, str]) -> None:
    """Raise FileNotFoundError unless every input path exists, before the stage computes anything.

    Args:
        inputs: each path the stage reads, mapped to the DVC stage that writes it.

    Raises:
        FileNotFoundError: naming every missing path and the `dvc repro` command that writes it.
    """
    missing = [f"{path} not found; run `dvc repro {stage}` to write it (DVC runs the stages before it too)."
               for path, stage in inputs.items() if not Path(path).exists()]
    if missing:
        raise FileNotFoundError("\n".join(missing))


def run_fingerprint(*parts, files: tuple[str | Path, ...] | list[str | Path] = ()) -> str:
    """Return a sha256 of what a training run depends on besides its TrainParams.

    It covers ``parts`` (params sections, seeds, notebook parameters), the content of ``files``
    (input models, the data manifest), the source of every ``undo_lib`` module and the versions of
    torch, transformers and numpy. A checkpoint is resumed only by a run with the same fingerprint.
    NOTE: the notebook's own source is not covered, because the kernel does not know its path.
    """
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": numpy.__version__}
    digest = hashlib.sha256(json.dumps([versions, *(to_dict(p) for p in parts)], sort_keys=True, default=str).encode())
    for path in files:
        digest.update(file_sha256(path).encode())
    package = Path(__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def check_training_memory(params: Params, setting: str, section_key: str, train_params: TrainParams,
                          vocab_size: int, device: torch.device, forward_passes: int = 1,
                          with_teacher: bool = False) -> None:
    """Raise InsufficientMemoryError when a training stage would not fit in free memory.

    Args:
        section_key: dotted params key of the training section, named in the error.
        forward_passes: model forward passes per micro-batch whose activations are alive together.
        with_teacher: add a frozen teacher of the same shape (distillation).

    Does nothing when ``shared.check_memory`` is false. See ``undo_lib.resources`` for the estimate.
    """
    if not params.shared.check_memory:
        return
    model = params.model[setting]
    estimate = estimate_training_memory(model, vocab_size, train_params.batch_size * forward_passes,
                                        params.data[setting].seq_len, teacher=model if with_teacher else None,
                                        precision=train_params.precision,
                                        gradient_checkpointing=train_params.gradient_checkpointing)
    check_memory(estimate, device, section_key)
    logger.info("estimated peak training memory: %s", estimate.describe())


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
                 model=None, tokenizer=None, model_dir: str | Path | None = None, section=None,
                 timing: dict | None = None, timing_path: str | Path | None = None,
                 checkpoint_dir: str | Path | None = None) -> None:
    """Write the model, history.csv, the timing file and metrics.json, then delete the checkpoint.

    metrics.json is written after every other output, so its presence marks a finished stage. The
    checkpoint goes last: a kill before that point resumes from it and writes the same outputs.
    """
    out_dir = Path(out_dir)
    if model is not None:
        if model_dir is None:
            raise ValueError("finish_stage got a model but no model_dir to save it to")
        save_model(model, tokenizer, model_dir)
    if history is not None:
        write_csv(out_dir / "history.csv", history)
    if timing is not None:
        if timing_path is None:
            raise ValueError("finish_stage got timing but no timing_path to write it to")
        write_json(timing_path, timing)
    if section is not None:
        metrics = {**metrics, "params": to_dict(section)}
    write_json(out_dir / "metrics.json", metrics)
    remove_checkpoint(checkpoint_dir)
    logger.info("wrote outputs to %s", out_dir)


def arithmetic_evaluator(params: Params, setting: str, tokenizer, data_dir: str | Path, with_english: bool = True,
                         forget_only: bool = False):
    """Build the evaluator every arithmetic stage uses: 8 accuracy sets, plus English CE if asked.

    ``forget_only`` keeps the 4 multiplication and division sets (relearning attacks).
    """
    from undo_lib.arithmetic import FORGET_OPS
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
        params.evaluate[setting].max_new_tokens, ops=FORGET_OPS if forget_only else None, english=english,
    )


def last_eval(history: list[dict]) -> dict:
    """Evaluation metrics of the last evaluated step (the final model)."""
    for row in reversed(history):
        if "retain" in row:
            return {k: v for k, v in row.items() if k in ("retain", "forget", "english_ce") or k.startswith("acc/")}
    raise ValueError("no evaluated step in the training history")
