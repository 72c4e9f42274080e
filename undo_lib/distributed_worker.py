"""One process of ``run_training``'s launch: load the arguments, train, and let process 0 save the outcome.

``undo_lib.distributed.run_training`` starts N copies of this module with ``accelerate launch``
(``python -m undo_lib.distributed_worker FOLDER``). Every copy reads the arguments the caller wrote
to ``FOLDER``, with every tensor mapped to this process's device. Then it calls ``train_distributed``.
Process 0 writes the trained weights (safetensors) and the ``TrainResult`` (JSON) back to ``FOLDER``.
A process whose training diverges writes its ``DivergenceError`` as JSON, so that the caller can
raise it again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import traceback
from pathlib import Path

import numpy
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import save_file
from transformers import PreTrainedModel
from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

from undo_lib.compute import peak_memory_bytes
from undo_lib.distributed import (ARGUMENTS_FILE, RESULT_FILE, WEIGHTS_FILE, divergence_file, failure_file,
                                  full_state_dict, train_distributed)
from undo_lib.io import atomic_write_text
from undo_lib.train import DivergenceError

logger = logging.getLogger(__name__)


def load_arguments(folder: Path, device: torch.device) -> dict:
    """Read the arguments ``run_training`` wrote to ``folder``, with every tensor moved to ``device``.

    NOTE: the file is a pickle (cloudpickle inside ``torch.save``), because the loss function, the
    batch iterator and the evaluator have no safetensors form. ``run_training`` writes it moments
    before, into a temporary folder that only its owner can read (``tempfile.TemporaryDirectory``),
    and passes only that folder. Do not point this module at a folder from elsewhere.
    """
    location = device if device.type == "cuda" else "cpu"  # accelerate names the CPU "cpu:0", which torch.load rejects
    return torch.load(folder / ARGUMENTS_FILE, map_location=location, weights_only=False)


def register_output_capture(model: torch.nn.Module) -> None:
    """Let the transformers models in ``model`` return hidden states again after unpickling.

    ``output_hidden_states=True`` works only for classes listed in transformers' registry, which
    ``PreTrainedModel.__init__`` fills and unpickling skips. The registry is keyed by class name, so
    registering ``model``'s classes also covers a teacher or reference model of the same classes.
    NOTE: the registry is private to transformers (5.x); a rename there breaks RMU in this path,
    which tests/test_distributed.py would catch.
    """
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs


def _set_up_process(accelerator: Accelerator, runtime: dict) -> None:
    """Set this process's threads, the caller's TF32 flags and RNG state, and log only on process 0.

    On the CPU the N processes share the caller's threads (at least one each), so they do not
    oversubscribe the cores the stage was given. A GPU process keeps the caller's thread count.
    """
    threads = runtime["threads"]
    if accelerator.device.type == "cpu":
        threads = max(1, threads // accelerator.num_processes)
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = runtime["tf32"]
    torch.backends.cudnn.allow_tf32 = runtime["tf32"]
    torch.set_rng_state(runtime["rng_state"].cpu())  # map_location moved it
    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(name)s %(levelname)s: %(message)s", stream=sys.stdout, force=True)


def main(folder: Path) -> None:
    """Run ``train_process``; a failure is also written to ``folder`` for the caller's error message."""
    accelerator = Accelerator()
    try:
        train_process(folder, accelerator)
    except BaseException:
        failure_file(folder, accelerator.process_index).write_text(traceback.format_exc(), encoding="utf-8")
        raise


def train_process(folder: Path, accelerator: Accelerator) -> None:
    """Train this process's share and, on process 0, save the weights and the result to ``folder``."""
    arguments = load_arguments(folder, accelerator.device)
    register_output_capture(arguments["model"])
    _set_up_process(accelerator, arguments.pop("runtime"))
    rank = accelerator.process_index
    try:
        result = train_distributed(**arguments, accelerator=accelerator)
    except DivergenceError as err:
        record = {"step": err.step, "lr": err.lr, "what": err.what, "history": err.history}
        atomic_write_text(divergence_file(folder, rank), json.dumps(record, default=_number))
        raise
    state_dict = full_state_dict(arguments["model"])  # a collective with FSDP: every process calls it
    result.process_peak_memory_bytes = max(gather_object([peak_memory_bytes()]))  # a collective too
    if accelerator.is_main_process:
        # Cloned, because safetensors refuses tensors that share memory (the tied embedding)
        save_file({name: tensor.detach().to("cpu").clone().contiguous() for name, tensor in state_dict.items()},
                  folder / WEIGHTS_FILE)
        # Plain JSON with NaN kept (write_json writes null), so that the caller gets the history unchanged
        atomic_write_text(folder / RESULT_FILE, json.dumps(dataclasses.asdict(result), default=_number))


def _number(value) -> float | int:
    """Return a numpy scalar or a one-element tensor of a history row as a Python number, for json.dumps."""
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"a history value of type {type(value).__name__} cannot be written as JSON: return numbers "
                    "from the evaluator and the loss logs")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
