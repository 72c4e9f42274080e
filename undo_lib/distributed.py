"""Data-parallel training: the shared loop of ``undo_lib.train`` run in several processes through accelerate.

Every process draws the same global micro-batch from an identically seeded batch iterator and trains
on its own contiguous slice of rows (``ShardedBatches``). The model is wrapped in PyTorch's
DistributedDataParallel (DDP) by ``accelerate.Accelerator.prepare_model``, so each backward pass
averages the gradients over the processes. Evaluation and the stop rule run on process 0 only, and
their results are broadcast, so every process records the same history and stops at the same step.
With ``distributed="fsdp"`` the weights are sharded instead by PyTorch's FSDP2 ``fully_shard``.
Then every process evaluates, because each forward pass gathers the weights from all of them.

Parity with one process. Every loss in ``undo_lib.losses`` is a mean over the counted target tokens
of a micro-batch. Suppose each process's slice contains the same number of counted targets. Then the
average of the per-process gradients, which DDP computes, equals the gradient of the whole micro-batch,
so the weights match a one-process run up to floating-point rounding (tests/test_distributed.py).
Training stays valid data-parallel training but no longer matches one process when:

- the slices count different numbers of targets, as with ``loss_positions: answers`` (only answer
  tokens count, and answers differ in length), because DDP then weights each slice equally
  instead of by its token count;
- the loss is not a mean over tokens, as RepNoise's MMD term, a statistic of the whole batch;
- the loss draws random numbers shaped like the batch (RepNoise's Gaussian noise), because each
  process draws for its own rows.

One process (no launcher, or ``launch(..., num_processes=1)``) runs ``undo_lib.train.train``
unchanged. ``run_training``, which the training notebooks call, trains in this process or starts N
fresh processes with ``accelerate launch`` (``undo_lib.distributed_worker``), on N GPUs or on the
CPU, and loads process 0's weights back into the caller's model. ``launch`` forks CPU processes
for tests and scripts that call ``train_distributed`` themselves. ``docs/distributed.md`` covers
the limits (checkpoints, RepNoise, failures).
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import cloudpickle
import torch
from accelerate import Accelerator, debug_launcher
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers.utils import output_capturing

from safetensors.torch import load_file

from undo_lib.config import TrainParams
from undo_lib.io import read_json
from undo_lib.model import check_gpu_count
from undo_lib.train import DivergenceError, EvalFn, LossFn, StopFn, TrainResult, train

logger = logging.getLogger(__name__)

# History columns that are equal on every process (step, LR, the gradient norm after DDP's all-reduce)
# or summed separately (tokens, FLOPs). Every other column except the eval metrics is averaged.
_SHARED_COLUMNS = frozenset({"step", "lr", "grad_norm", "tokens", "flops"})

# Backends that shard the weights: a forward pass on process 0 alone would wait for the other
# processes' shards, so rank-0 evaluation cannot work with them.
_SHARDED_TYPES = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)

# Values of train_distributed's ``distributed`` argument and of shared.distributed
DISTRIBUTED = ("ddp", "fsdp")


def shard_batch(batch: dict, rank: int, world_size: int) -> dict:
    """Return process ``rank``'s contiguous slice of rows of every tensor in a (possibly nested) batch.

    Args:
        batch: micro-batch of tensors [batch_size, ...], or dicts of them (``PairedBatches``).
        rank: index of this process, in [0, world_size).
        world_size: number of processes.

    Returns:
        A dict of the same structure whose tensors hold rows
        [rank * batch_size / world_size, (rank + 1) * batch_size / world_size).

    Raises:
        ValueError: a tensor's row count is not a multiple of ``world_size``.
        TypeError: a value is neither a tensor with a batch dimension nor a dict.
    """
    _check_rank(rank, world_size)
    return _shard(batch, rank, world_size, path="")


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}) for world_size={world_size}, got {rank}")


def _shard(batch: dict, rank: int, world_size: int, path: str) -> dict:
    sliced = {}
    for key, value in batch.items():
        name = f"{path}{key}"
        if isinstance(value, dict):
            sliced[key] = _shard(value, rank, world_size, path=f"{name}.")
        else:
            sliced[key] = _rows_of_rank(value, rank, world_size, name)
    return sliced


def _rows_of_rank(value, rank: int, world_size: int, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        raise TypeError(f"batch[{name!r}] must be a tensor with a batch dimension or a dict of them, "
                        f"got {type(value).__name__}")
    rows = value.shape[0]
    if rows % world_size != 0:
        raise ValueError(f"batch[{name!r}] has {rows} rows, which {world_size} processes cannot split evenly. "
                         f"Set batch_size to a multiple of {world_size}, or use a number of processes that "
                         f"divides {rows}.")
    per_rank = rows // world_size
    return value[rank * per_rank : (rank + 1) * per_rank]


class ShardedBatches:
    """Iterator over one process's slice of each global micro-batch drawn from ``batches``.

    Every process must wrap an identically seeded iterator, which this class cannot check. Then all
    of them draw the same global micro-batch and together cover each of its rows exactly once. ``skip(n)`` advances the global
    iterator by ``n`` micro-batches, with its own ``skip`` when it has one.
    """

    def __init__(self, batches: Iterator[dict], rank: int, world_size: int):
        _check_rank(rank, world_size)
        self.batches = batches
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> ShardedBatches:
        return self

    def __next__(self) -> dict:
        return shard_batch(next(self.batches), self.rank, self.world_size)

    def skip(self, count: int) -> None:
        """Advance past ``count`` global micro-batches."""
        skip = getattr(self.batches, "skip", None)
        if skip is not None:
            skip(count)
            return
        for _ in range(count):
            next(self.batches)


class _RankZeroEvaluation:
    """``evaluate`` run on process 0 with the unwrapped model, with its metrics broadcast to all processes."""

    def __init__(self, evaluate: EvalFn, accelerator: Accelerator):
        self.evaluate = evaluate
        self.accelerator = accelerator
        self.metric_names: set[str] = set()

    def __call__(self, model: torch.nn.Module) -> dict:
        metrics = None
        if self.accelerator.is_main_process:
            # The DDP wrapper has no generate method, and its forward may start collectives that the
            # other processes, waiting in the broadcast below, never join
            metrics = self.evaluate(self.accelerator.unwrap_model(model))
        metrics = broadcast_object_list([metrics], from_process=0)[0]
        self.metric_names.update(metrics)
        return metrics


class _EveryProcessEvaluation:
    """``evaluate`` run on every process with the FSDP-sharded model, with process 0's metrics broadcast.

    Each forward pass of a sharded model gathers the weights from all processes, so every process
    must evaluate. They compute the same metrics, and the broadcast makes the histories identical.
    """

    def __init__(self, evaluate: EvalFn, accelerator: Accelerator):
        self.evaluate = evaluate
        self.metric_names: set[str] = set()

    def __call__(self, model: torch.nn.Module) -> dict:
        metrics = broadcast_object_list([self.evaluate(model)], from_process=0)[0]
        self.metric_names.update(metrics)
        return metrics


class _RankZeroStopRule:
    """``should_stop`` decided on process 0 and broadcast, so every process ends at the same step."""

    def __init__(self, should_stop: StopFn, accelerator: Accelerator):
        self.should_stop = should_stop
        self.accelerator = accelerator

    def __call__(self, metrics: dict) -> bool:
        decision = None
        if self.accelerator.is_main_process:
            decision = bool(self.should_stop(metrics))
        return broadcast_object_list([decision], from_process=0)[0]


def _averaged_cells(history: list[dict], metric_names: set[str]) -> list[tuple[int, str]]:
    """(row index, column) of every history cell that differs per process: the loss and the loss logs."""
    return [(i, key) for i, row in enumerate(history) for key in sorted(row)
            if key not in _SHARED_COLUMNS and key not in metric_names]


def _check_same_layout(cells: list[tuple[int, str]]) -> None:
    layouts = gather_object([cells])
    if any(layout != layouts[0] for layout in layouts):
        differing = [rank for rank, layout in enumerate(layouts) if layout != layouts[0]]
        raise RuntimeError(f"the loss function logged different columns on processes {differing} than on "
                           "process 0, so the histories cannot be combined. Make it log the same keys on "
                           "every micro-batch.")


def _combine_processes(result: TrainResult, accelerator: Accelerator, metric_names: set[str],
                       flops_per_token: float) -> TrainResult:
    """Sum tokens and FLOPs over the processes and average the loss columns, in place on every process."""
    history = result.history
    cells = _averaged_cells(history, metric_names)
    _check_same_layout(cells)

    # One all-reduce: every row's token count, then every averaged cell
    values = [float(row["tokens"]) for row in history] + [float(history[i][key]) for i, key in cells]
    totals = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum")
    totals = totals.tolist()
    for row, tokens in zip(history, totals[: len(history)]):
        row["tokens"] = int(tokens)
        row["flops"] = flops_per_token * row["tokens"]
    for (i, key), total in zip(cells, totals[len(history) :]):
        history[i][key] = total / accelerator.num_processes

    result.tokens = int(accelerator.reduce(torch.tensor(result.tokens, device=accelerator.device), "sum").item())
    result.flops = flops_per_token * result.tokens
    return result


def _check_supported(params: TrainParams, processes: int, checkpoint_dir, distributed: str) -> None:
    """Reject settings that this data-parallel path does not support, before any training runs."""
    if distributed not in DISTRIBUTED:
        raise ValueError(f"distributed={distributed!r} is invalid; expected one of {list(DISTRIBUTED)}.")
    if distributed == "fsdp" and params.sam_rho > 0:
        raise ValueError(f"sam_rho={params.sam_rho} is not supported with distributed='fsdp', because SAM's "
                         "gradient norm over sharded gradients is untested. Use distributed='ddp' or one process.")
    if params.batch_size % processes != 0:
        raise ValueError(f"batch_size={params.batch_size} is not a multiple of the {processes} processes, "
                         f"and each process trains on batch_size / {processes} rows of every micro-batch. "
                         f"Set the stage's train.batch_size to a multiple of {processes}.")
    if processes > 1 and checkpoint_dir is not None and params.checkpoint_every > 0:
        raise ValueError(f"checkpoint_every={params.checkpoint_every} is not supported with {processes} "
                         "processes, because every process would write and resume the same checkpoint folder. "
                         "Set the stage's train.checkpoint_every: 0, pass checkpoint_dir=None, or train in "
                         "one process.")


def _check_accelerator(accelerator: Accelerator) -> None:
    """Reject an Accelerator whose own mixed precision or model wrapping would clash with the loop."""
    if accelerator.mixed_precision != "no":
        raise ValueError(f"the Accelerator has mixed_precision={accelerator.mixed_precision!r}, which would add "
                         "a second autocast around the training loop's own. Create it with "
                         "mixed_precision='no' and set the stage's train.precision: bf16 instead.")
    if accelerator.distributed_type in _SHARDED_TYPES:
        raise ValueError(f"distributed_type={accelerator.distributed_type.value} is not supported: accelerate's "
                         "plugin would wrap the model for its own loop. Launch plain data parallelism (the "
                         "default of accelerate launch) and pass distributed='fsdp' to shard the weights.")


def train_distributed(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Iterator[dict],
    params: TrainParams,
    flops_per_token: float,
    evaluate: EvalFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_key: str = "",
    initial_metrics: dict | None = None,
    accelerator: Accelerator | None = None,
    distributed: str = "ddp",
) -> TrainResult:
    """Train ``model`` in place with ``undo_lib.train.train`` on every process of the current launch.

    Call it on every process with the same arguments. In one process it is ``train`` on the
    accelerator's device.

    Args:
        model: the module to train, with ``requires_grad`` already set, because DDP registers the
            trainable parameters when it wraps the model. Process 0's weights are copied to the others.
        loss_fn: as for ``train``; it receives the DDP-wrapped model and this process's rows.
        batches: endless iterator of global micro-batches of ``params.batch_size`` rows, seeded the
            same on every process. This function takes each process's slice (``ShardedBatches``).
        params: as for ``train``; ``batch_size`` is the global micro-batch size and must be a
            multiple of the number of processes. ``checkpoint_every`` > 0 with a checkpoint folder
            needs one process. ``gradient_checkpointing`` is enabled on the model before DDP wraps it.
        flops_per_token: as for ``train``.
        evaluate: run on process 0 with the unwrapped model, and its metrics broadcast to every process.
        should_stop: decided on process 0 and broadcast.
        checkpoint_dir, checkpoint_key, initial_metrics: as for ``train``.
        accelerator: an ``accelerate.Accelerator`` with ``mixed_precision='no'``, for DDP or
            process-group options; by default ``Accelerator()``. Everything it has prepared is released
            when training ends.
        distributed: ``"ddp"`` keeps a full copy of the weights on every process (DDP); ``"fsdp"``
            shards them with PyTorch's FSDP2 ``fully_shard`` (each decoder layer, then the whole
            model). With ``"fsdp"``, ``evaluate`` runs on every process with the sharded model, SAM is
            rejected, and ``model`` stays sharded afterwards: call ``full_state_dict`` on every
            process to gather its weights. Ignored with one process.

    Returns:
        The same TrainResult on every process. ``tokens``, ``flops`` and the history's ``tokens`` and
        ``flops`` count all processes, and the history's loss and loss logs are averaged over them.
    """
    accelerator = accelerator if accelerator is not None else Accelerator()
    _check_supported(params, accelerator.num_processes, checkpoint_dir, distributed)
    _check_accelerator(accelerator)
    try:
        if accelerator.num_processes == 1:
            return train(accelerator.prepare_model(model), loss_fn, batches, params, flops_per_token, evaluate,
                         should_stop, checkpoint_dir, checkpoint_key, initial_metrics)
        return _train_data_parallel(model, loss_fn, batches, params, flops_per_token, evaluate, should_stop,
                                    initial_metrics, accelerator, distributed)
    finally:
        accelerator.free_memory()


def _train_data_parallel(model, loss_fn: LossFn, batches: Iterator[dict], params: TrainParams,
                         flops_per_token: float, evaluate: EvalFn | None, should_stop: StopFn | None,
                         initial_metrics: dict | None, accelerator: Accelerator, distributed: str) -> TrainResult:
    """Run ``train`` on this process's rows with the wrapped model and combine the processes' counters."""
    # The loop would call activation_checkpointing_enable on the wrapper, which lacks it, so the
    # model gets it here, before wrapping, and the loop gets params with the option off.
    checkpointed = params.gradient_checkpointing
    if checkpointed:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        params = dataclasses.replace(params, gradient_checkpointing=False)
    if distributed == "fsdp":
        wrapped, evaluation = _shard_model(model, accelerator), _EveryProcessEvaluation
    else:
        wrapped, evaluation = _wrap_ddp(model, accelerator), _RankZeroEvaluation

    rank, processes = accelerator.process_index, accelerator.num_processes
    logger.info("process %d of %d trains on %d of every %d rows", rank, processes,
                params.batch_size // processes, params.batch_size)
    rank_zero_evaluate = evaluation(evaluate, accelerator) if evaluate is not None else None
    rank_zero_stop = _RankZeroStopRule(should_stop, accelerator) if should_stop is not None else None
    metric_names = set(initial_metrics or {})
    try:
        result = train(wrapped, loss_fn, ShardedBatches(batches, rank, processes), params, flops_per_token,
                       rank_zero_evaluate, rank_zero_stop, initial_metrics=initial_metrics)
    except AttributeError as err:
        if "'DistributedDataParallel' object has no attribute" not in str(err):
            raise
        raise TypeError(f"the loss function read an attribute of the model that the DDP wrapper lacks ({err}). "
                        "A loss that calls a submodule such as model.model directly would bypass DDP's gradient "
                        "averaging. Call the model it receives, and reach submodules through model.module "
                        "(as undo_lib.methods.repnoise.unwrapped does), or train with shared.num_processes: 1."
                        ) from err
    finally:
        if checkpointed:
            model.activation_checkpointing_disable()
    if rank_zero_evaluate is not None:
        metric_names |= rank_zero_evaluate.metric_names
    return _combine_processes(result, accelerator, metric_names, flops_per_token)


def _wrap_ddp(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    wrapped = accelerator.prepare_model(model)
    if not isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
        raise TypeError(f"accelerate wrapped the model in {type(wrapped).__name__}, but this path needs "
                        "DistributedDataParallel. Launch without FSDP, DeepSpeed or Megatron-LM.")
    return wrapped


def _shard_model(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """Shard ``model`` in place with FSDP2: each decoder layer is one unit, the remaining weights another."""
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    decoder = getattr(model, "model", None)
    for layer in getattr(decoder, "layers", []):
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return ``model.state_dict()`` with every FSDP-sharded tensor gathered in full.

    Gathering is a collective, so with a sharded model call it on every process.
    """
    return {name: value.full_tensor() if isinstance(value, DTensor) else value
            for name, value in model.state_dict().items()}


class _WithFreshAcceleratorState:
    """``function`` run after clearing the accelerate state that a forked process copies from its parent.

    Without this, a parent that had created an ``Accelerator`` would hand each forked process a
    one-process state, and every process would train alone on the whole batch.
    """

    def __init__(self, function: Callable):
        self.function = function

    def __call__(self, *args) -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        self.function(*args)


def launch(function: Callable, args: tuple = (), num_processes: int = 1) -> None:
    """Run ``function(*args)`` in ``num_processes`` CPU processes joined by a gloo process group.

    One process calls ``function`` directly in this process. More processes are forked by
    ``accelerate.debug_launcher``: they rendezvous through a temporary file (a torch FileStore) and
    communicate over the loopback interface. ``function`` should create its ``Accelerator`` (or call
    ``train_distributed``) inside, and write its results to files, because return values are dropped.
    GPU processes are started with ``accelerate launch`` or ``accelerate.notebook_launcher`` instead.

    Args:
        function: module-level or local callable; forked processes need no pickling.
        args: positional arguments for ``function``.
        num_processes: number of processes, >= 1.

    Raises:
        ValueError: ``num_processes`` is below 1.
        torch.multiprocessing.ProcessRaisedException: a process raised, and its traceback is in the message.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1:
        function(*args)
        return
    logger.info("starting %d CPU processes (gloo)", num_processes)
    debug_launcher(_WithFreshAcceleratorState(function), args=args, num_processes=num_processes)


def run_training(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Iterator[dict],
    params: TrainParams,
    flops_per_token: float,
    evaluate: EvalFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_key: str = "",
    initial_metrics: dict | None = None,
    num_processes: int = 1,
    distributed: str = "ddp",
) -> TrainResult:
    """Train ``model`` in place in this process, or in ``num_processes`` data-parallel processes.

    With ``num_processes`` 1 this calls ``undo_lib.train.train`` with the same arguments and returns
    its result, so the weights and history are bitwise those of ``train``.

    With N > 1 it writes every argument to a temporary folder and starts N fresh processes with
    ``accelerate launch`` (``undo_lib.distributed_worker``), on N GPUs when ``model`` is on CUDA and
    on the CPU (gloo) otherwise. Each process loads the arguments onto its own device and calls
    ``train_distributed``. Process 0 writes the trained weights (safetensors) and the combined
    ``TrainResult`` (JSON). This process then loads the weights into ``model``, puts it in eval mode
    as ``train`` does, and returns the result. The processes' log lines are passed on to this
    module's logger. Because the processes are started afresh rather than forked, this works in a
    notebook that has already used CUDA.

    The arguments travel as one pickle (cloudpickle inside ``torch.save``), so each must be
    picklable: the model with its ``requires_grad`` flags (RMU's frozen layers), the modules a loss
    function holds (a distillation teacher, a frozen reference), the batch iterator in its current
    state, the evaluator and the stop rule. Functions defined in a notebook travel by value. Each
    process gets this process's TF32 flags, CPU RNG state and thread count (split between the
    processes on the CPU).

    The returned result's ``process_peak_memory_bytes`` is the largest peak memory of the processes.

    NOTE: tested with 2 CPU processes (tests/test_distributed.py). The GPU launch is the same command
    without ``ACCELERATE_USE_CPU``, and has not been run on GPUs.

    Args:
        model, loss_fn, batches, params, flops_per_token, evaluate, should_stop, checkpoint_dir,
        checkpoint_key, initial_metrics: as for ``train``. With N > 1, ``params.batch_size`` must be a
            multiple of N, and ``checkpoint_every`` must be 0 when ``checkpoint_dir`` is given.
        num_processes: 1 trains here; N > 1 launches N processes, one per GPU on CUDA.
        distributed: with N > 1, ``"ddp"`` or ``"fsdp"`` (see ``train_distributed``).

    Raises:
        ValueError: ``num_processes`` < 1, or with N > 1 a model on a device other than CPU or
            CUDA, fewer than N GPUs, checkpoints requested, or a batch size that N does not divide.
        TypeError: with N > 1, an argument cannot be pickled.
        DivergenceError: training diverged in a process (the error of the lowest such rank).
        RuntimeError: a process failed otherwise. The message contains its traceback, or the end of the
            processes' output when none was saved.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1:
        return train(model, loss_fn, batches, params, flops_per_token, evaluate, should_stop, checkpoint_dir,
                     checkpoint_key, initial_metrics)
    device_type = _check_launchable(model, params, num_processes, checkpoint_dir, distributed)
    arguments = {"model": model, "loss_fn": loss_fn, "batches": batches, "params": params,
                 "flops_per_token": flops_per_token, "evaluate": evaluate, "should_stop": should_stop,
                 "checkpoint_dir": checkpoint_dir, "checkpoint_key": checkpoint_key,
                 "initial_metrics": initial_metrics, "distributed": distributed,
                 "runtime": {"threads": torch.get_num_threads(), "tf32": torch.backends.cuda.matmul.allow_tf32,
                             "rng_state": torch.get_rng_state()}}
    with tempfile.TemporaryDirectory(prefix="undo-training-") as name:
        folder = Path(name)
        _save_arguments(arguments, folder / ARGUMENTS_FILE)
        _launch_workers(folder, num_processes, device_type)
        return _load_trained(model, folder)


def _output_collector() -> output_capturing.CompileableContextVar:
    return output_capturing._active_collector


class _ArgumentsPickler(cloudpickle.Pickler):
    """cloudpickle, except that transformers' output-capture context variable travels by reference.

    The first forward pass of a transformers model hooks its layers with local functions that read
    that module-level variable (a ``ContextVar``, which cannot be pickled). cloudpickle copies such
    functions by value; the variable they read is then looked up again in the receiving process.
    """

    def reducer_override(self, obj):
        if isinstance(obj, output_capturing.CompileableContextVar):
            return _output_collector, ()
        return super().reducer_override(obj)


# Pickle module for torch.save, which reads only its Pickler and its __name__ (anything but "dill")
_ARGUMENTS_PICKLE = SimpleNamespace(Pickler=_ArgumentsPickler, __name__="undo_lib.distributed")

ARGUMENTS_FILE = "arguments.pt"  # run_training's arguments, for every process
WEIGHTS_FILE = "rank0.safetensors"  # process 0's trained weights
RESULT_FILE = "rank0.json"  # process 0's TrainResult
_OUTPUT_TAIL = 40  # lines of the processes' output kept for the error message
_STOP_SECONDS = 30  # how long a terminated launcher gets to stop its processes before it is killed
_PR_SET_PDEATHSIG = 1  # the prctl option of <linux/prctl.h>


def _save_arguments(arguments: dict, path: Path) -> None:
    try:
        torch.save(arguments, path, pickle_module=_ARGUMENTS_PICKLE)
    except (TypeError, AttributeError, pickle.PicklingError) as err:
        raise TypeError(f"run_training hands its arguments to the training processes as a pickle, and one of "
                        f"them cannot be pickled ({err}). Pass an iterator class such as "
                        "undo_lib.data.ShuffledBatches rather than a generator, or set shared.num_processes: 1."
                        ) from err


def divergence_file(folder: Path, rank: int) -> Path:
    """Return the file where process ``rank`` records the DivergenceError that stopped it."""
    return folder / f"divergence-rank{rank}.json"


def failure_file(folder: Path, rank: int) -> Path:
    """Return the file where process ``rank`` records the traceback of the error that stopped it."""
    return folder / f"failure-rank{rank}.txt"


def _check_launchable(model: torch.nn.Module, params: TrainParams, processes: int, checkpoint_dir,
                      distributed: str) -> str:
    """Reject what ``run_training`` cannot launch, before any process starts; return the device type."""
    devices = {parameter.device.type for parameter in model.parameters()}
    if len(devices) != 1 or not devices <= {"cpu", "cuda"}:
        raise ValueError(f"num_processes={processes} trains on the CPU or on GPUs, but the model is on "
                         f"{sorted(devices)}. Set shared.device: cpu or cuda, or shared.num_processes: 1.")
    device_type = devices.pop()
    if device_type == "cuda":
        check_gpu_count(processes)
    _check_supported(params, processes, checkpoint_dir, distributed)
    return device_type


def _launch_workers(folder: Path, processes: int, device_type: str) -> None:
    """Run ``undo_lib.distributed_worker`` in ``processes`` processes with accelerate launch, logging their output."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", "--module", "undo_lib.distributed_worker", str(folder)]
    # The processes get the caller's import path, so that classes and functions pickled by reference
    # (from a test module, say) import there too. Those defined in a notebook travel by value.
    environment = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    if device_type == "cpu":
        environment["ACCELERATE_USE_CPU"] = "1"  # gloo on the CPU instead of NCCL
    logger.info("starting %d %s processes: accelerate launch -m undo_lib.distributed_worker", processes,
                "GPU" if device_type == "cuda" else "CPU")
    tail: collections.deque[str] = collections.deque(maxlen=_OUTPUT_TAIL)
    workers = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=environment, preexec_fn=_stop_with_parent)
    try:
        for line in workers.stdout:
            tail.append(line.rstrip())
            logger.log(_level_of(line), "| %s", line.rstrip())
        workers.wait()
    finally:
        _stop(workers)  # on an exception here (an interrupted notebook), the processes must not train on
    if workers.returncode != 0:
        _raise_saved_divergence(folder)
        raise RuntimeError(f"the {processes} training processes failed (exit status {workers.returncode}). "
                           + _failure_report(folder, tail))


def _stop_with_parent() -> None:
    """Ask Linux to send SIGTERM to the launcher when the process that started it dies (prctl PR_SET_PDEATHSIG).

    accelerate's launcher passes SIGTERM on to the training processes, so a notebook killed by DVC or
    Papermill leaves none behind. Elsewhere this does nothing.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(workers: subprocess.Popen) -> None:
    """Terminate the launcher, and with it the training processes, unless it has exited already."""
    if workers.poll() is not None:
        return
    workers.terminate()
    try:
        workers.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        workers.kill()
        workers.wait()


def _level_of(line: str) -> int:
    """Return the log level of one line of the processes' output: the WARNING or ERROR it names, else INFO."""
    for level in (logging.ERROR, logging.WARNING):
        if f" {logging.getLevelName(level)}" in line:
            return level
    return logging.INFO


def _failure_report(folder: Path, tail) -> str:
    """Return every failed process's traceback, or the end of the output when none was saved.

    When one process fails, the others often fail after it in a collective (a closed connection).
    The lowest rank's traceback may therefore not show the cause, so all of them are returned.
    """
    failures = _by_rank(folder, "failure-rank*.txt")
    if not failures:
        return "The end of their output:\n" + "\n".join(tail)
    reports = [f"Process {path.stem.rpartition('-rank')[2]}:\n{path.read_text(encoding='utf-8')}" for path in failures]
    return "The errors of the processes that saved one:\n" + "\n".join(reports)


def _by_rank(folder: Path, pattern: str) -> list[Path]:
    """Return the files of ``folder`` matching ``pattern`` (``name-rank*.ext``), lowest rank first."""
    return sorted(folder.glob(pattern), key=lambda path: int(path.stem.rpartition("-rank")[2]))


def _raise_saved_divergence(folder: Path) -> None:
    """Re-raise the DivergenceError of the lowest rank that saved one, if any did."""
    saved = _by_rank(folder, "divergence-rank*.json")
    if saved:
        # NOTE: the history of a saved error contains that process's own rows. Its tokens count
        # batch_size / N rows per micro-batch, and its loss is that of its slice only.
        record = read_json(saved[0])
        raise DivergenceError(record["step"], record["lr"], record["what"], record["history"])


def _load_trained(model: torch.nn.Module, folder: Path) -> TrainResult:
    """Load process 0's weights (safetensors) into ``model`` and return its TrainResult (JSON)."""
    device = next(model.parameters()).device
    model.load_state_dict(load_file(folder / WEIGHTS_FILE, device=str(device)))
    model.eval()
    return TrainResult(**json.loads((folder / RESULT_FILE).read_text(encoding="utf-8")))
