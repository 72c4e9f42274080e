"""The one training loop shared by pretraining, unlearning, distillation and relearning.

AdamW (betas 0.9/0.999, eps 1e-8), linear warmup then cosine decay from ``lr`` to ``min_lr``
(constant when they are equal), gradient accumulation and clipping, and optionally SAM
(``sam_rho`` > 0, see ``undo_lib.sam``). Every step records tokens and
FLOPs; evaluation runs at step 0, every ``eval_every`` steps and at the end; an optional stop rule
ends training early. A non-finite loss or gradient raises ``DivergenceError`` at the step it appears.

``precision: bf16`` runs the forward passes (and so the loss) under bfloat16 autocast while the
weights, gradients and optimizer state stay float32; ``gradient_checkpointing`` recomputes each
layer's activations in the backward pass instead of storing them. Both default off, and the CPU
pipeline keeps them off.

With ``checkpoint_every`` > 0 and a checkpoint folder, the loop saves a checkpoint
(``undo_lib.checkpoint``) every ``checkpoint_every`` steps and when training ends, and a later call
with the same params and key resumes from it. A resumed run gives bitwise the same weights and
history as an uninterrupted one on CPU (tested in tests/test_checkpoint.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from undo_lib import sam
from undo_lib.checkpoint import checkpoint_fingerprint, load_checkpoint, save_checkpoint
from undo_lib.config import TrainParams
from undo_lib.data import count_tokens
from undo_lib.io import IntegrityError

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]]
EvalFn = Callable[[torch.nn.Module], dict]
StopFn = Callable[[dict], bool]


class DivergenceError(RuntimeError):
    """The loss or gradient became NaN or infinite."""

    def __init__(self, step: int, lr: float, what: str, history: list[dict] | None = None):
        super().__init__(
            f"training diverged at step {step} (learning rate {lr:g}): {what} is not finite. "
            "Lower the learning rate or enable gradient clipping (max_grad_norm)."
        )
        self.step, self.lr, self.what = step, lr, what
        self.history = history or []  # rows recorded before the divergence

    def __reduce__(self):
        # Pickled with its constructor arguments, so a training process can hand it to its parent
        return DivergenceError, (self.step, self.lr, self.what, self.history)


@dataclass
class TrainResult:
    steps: int = 0  # optimizer steps taken
    tokens: int = 0  # tokens fed to the trained model (all positions of every micro-batch)
    flops: float = 0.0  # flops_per_token * tokens
    stopped_early: bool = False  # the stop rule fired before the step cap
    seconds: float = 0.0  # wall-clock time of the loop, summed over resumed runs
    history: list[dict] = field(default_factory=list)  # one row per step; eval columns on eval steps
    resumed_from_step: int | None = None  # step of the checkpoint this run resumed from, if any
    # Set by run_training with several processes: the largest peak memory of one of them (compute.peak_memory_bytes)
    process_peak_memory_bytes: int | None = None


def lr_at(step: int, params: TrainParams) -> float:
    """Learning rate for optimizer step ``step`` (0-based): 1) warmup, 2) cosine to min_lr."""
    lr = params.lr
    min_lr = lr if params.min_lr is None else params.min_lr
    if step < params.warmup_steps:
        return lr * (step + 1) / params.warmup_steps  # 1) linear warmup
    decay_steps = max(params.steps - params.warmup_steps, 1)
    progress = min((step - params.warmup_steps) / decay_steps, 1.0)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)  # 2) cosine


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: _to_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


def _is_eval_step(step: int, params: TrainParams) -> bool:
    return (step == 0 or step == params.steps or step in params.eval_steps
            or (params.eval_every > 0 and step % params.eval_every == 0))


def _evaluate(model, evaluate: EvalFn | None, row: dict) -> dict:
    if evaluate is None:
        return {}
    was_training = model.training
    model.eval()
    metrics = evaluate(model)
    model.train(was_training)
    row.update(metrics)
    logger.info("step %d: %s", row["step"], ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def _skip_batches(batches: Iterator[dict], count: int) -> None:
    """Advance ``batches`` past ``count`` batches, with its ``skip`` method when it has one."""
    skip = getattr(batches, "skip", None)
    if skip is not None:
        skip(count)
        return
    for _ in range(count):
        next(batches)


@dataclass
class _Progress:
    """What a checkpoint must restore besides weights, optimizer and RNGs."""

    result: TrainResult
    batches_drawn: int = 0  # next() calls on the batch iterator so far
    stop_inputs: list[dict] = field(default_factory=list)  # metrics passed to should_stop so far

    def to_state(self, fingerprint: str, finished: bool) -> dict:
        r = self.result
        return {"fingerprint": fingerprint, "step": r.steps, "batches_drawn": self.batches_drawn,
                "tokens": r.tokens, "flops": r.flops, "seconds": r.seconds, "stopped_early": r.stopped_early,
                "finished": finished, "history": r.history, "stop_inputs": self.stop_inputs}


def _resume(state: dict, batches: Iterator[dict], should_stop: StopFn | None) -> _Progress:
    """Rebuild the loop's progress from a checkpoint state and bring ``batches`` and the stop rule up to it."""
    result = TrainResult(steps=state["step"], tokens=state["tokens"], flops=state["flops"],
                         stopped_early=state["stopped_early"], seconds=state["seconds"],
                         history=state["history"], resumed_from_step=state["step"])
    progress = _Progress(result, state["batches_drawn"], state["stop_inputs"])
    _skip_batches(batches, progress.batches_drawn)
    # The stop rule may keep state (RetainStopRule counts consecutive checks), so it sees again every
    # metrics dict it saw before the checkpoint. It said False to each of them, or training would have ended.
    if should_stop is not None and not state["finished"]:
        for metrics in progress.stop_inputs:
            if should_stop(metrics):
                raise IntegrityError(
                    f"the stop rule fires on metrics it rejected before checkpoint step {state['step']}, "
                    "so the checkpoint does not belong to this run. Delete the checkpoint folder and rerun."
                )
    return progress


def _autocast(params: TrainParams, device: torch.device):
    """bfloat16 autocast for ``precision: bf16``, else no context."""
    if params.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _forward_backward(model, loss_fn: LossFn, batch: dict, params: TrainParams, step: int, lr: float,
                      history: list[dict], logs: dict[str, float]) -> float:
    """Backpropagate one micro-batch's share of the step loss, add its logs to ``logs`` and return that share."""
    with _autocast(params, next(model.parameters()).device):
        loss, micro_logs = loss_fn(model, batch)
    if not torch.isfinite(loss):
        raise DivergenceError(step, lr, "the loss", history)
    (loss / params.grad_accum).backward()
    for k, v in micro_logs.items():
        logs[k] = logs.get(k, 0.0) + v / params.grad_accum
    return loss.item() / params.grad_accum


def _sam_gradient(model, loss_fn: LossFn, micro_batches: list[dict], trainable, params: TrainParams, step: int,
                  lr: float, history: list[dict]) -> None:
    """Replace the gradients at theta by those at theta + eps (SAM), computed on the same micro-batches."""
    saved, grad_norm = sam.ascend(trainable, params.sam_rho)
    if not torch.isfinite(grad_norm):
        raise DivergenceError(step, lr, "the gradient norm", history)
    for batch in micro_batches:
        _forward_backward(model, loss_fn, batch, params, step, lr, history, logs={})
    sam.descend(trainable, saved)


def _step(model, loss_fn: LossFn, batches: Iterator[dict], optimizer, trainable, params: TrainParams,
          step: int, flops_per_token: float, progress: _Progress) -> dict:
    """Run optimizer step ``step`` (all its micro-batches) and return its history row without eval columns.

    The logged loss and logs are those at the weights before the step, also under SAM.
    """
    device = next(model.parameters()).device
    result = progress.result
    lr = lr_at(step - 1, params)
    for group in optimizer.param_groups:
        group["lr"] = lr

    # Forward and backward over the micro-batches of this step
    logs: dict[str, float] = {}
    loss_sum = 0.0
    micro_batches = []  # kept for SAM's second pass only
    for _ in range(params.grad_accum):
        batch = _to_device(next(batches), device)
        progress.batches_drawn += 1
        loss_sum += _forward_backward(model, loss_fn, batch, params, step, lr, result.history, logs)
        result.tokens += count_tokens(batch)
        if params.sam_rho > 0:
            micro_batches.append(batch)

    # SAM: take the gradient again at theta + eps (the first-order worst point within sam_rho)
    if params.sam_rho > 0:
        _sam_gradient(model, loss_fn, micro_batches, trainable, params, step, lr, result.history)

    # Clip, check and step
    max_norm = params.max_grad_norm if params.max_grad_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm)
    if not torch.isfinite(grad_norm):
        raise DivergenceError(step, lr, "the gradient norm", result.history)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    result.steps = step
    result.flops = flops_per_token * result.tokens
    return {"step": step, "lr": lr, "loss": loss_sum, "grad_norm": grad_norm.item(),
            "tokens": result.tokens, "flops": result.flops, **logs}


def train(
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
) -> TrainResult:
    """Train ``model`` in place with ``loss_fn`` on ``batches``.

    Args:
        model: the module to train; only parameters with ``requires_grad`` are optimised.
        loss_fn: returns (scalar loss, dict of floats to log) for one micro-batch.
        batches: endless iterator of micro-batches (dicts of tensors, possibly nested), not yet
            drawn from. A resumed run fast-forwards it with its ``skip(n)`` method if it has one,
            else with ``n`` calls to ``next``.
        params: steps, batch, LR schedule, clipping, evaluation and checkpoint cadence.
        flops_per_token: compute per token of a micro-batch (6N to train, + 2N per teacher forward).
            Tokens count once per micro-batch, so under SAM (two forward and backward passes per
            micro-batch) pass the FLOPs of both passes.
        evaluate: called on eval steps; its metrics join that step's history row.
        should_stop: called with the metrics of each eval step after step 0; True ends training.
        checkpoint_dir: folder for the checkpoint when ``params.checkpoint_every`` > 0. The caller
            deletes it (``undo_lib.checkpoint.remove_checkpoint``) once the outputs are saved.
        checkpoint_key: everything besides ``params`` that the result depends on (seed, inputs,
            code), so a checkpoint of another configuration is not resumed.
        initial_metrics: the metrics of ``model``'s weights as passed in, when the caller has
            already measured them (several relearning attacks start from the same weights); they
            fill step 0's row instead of a call to ``evaluate``.

    Returns:
        TrainResult with counters and the per-step history.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    # foreach: one fused update over all tensors (torch's CPU default updates them one by one)
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=params.weight_decay, foreach=True)
    if params.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointing = checkpoint_dir is not None and params.checkpoint_every > 0
    fingerprint = checkpoint_fingerprint(params, checkpoint_key) if checkpointing else ""
    state = load_checkpoint(checkpoint_dir, fingerprint, model, optimizer) if checkpointing else None
    elapsed_before = state["seconds"] if state is not None else 0.0
    start = time.perf_counter()
    model.train()

    if state is None:
        progress = _Progress(TrainResult())
        row = {"step": 0, "tokens": 0, "flops": 0.0}
        if initial_metrics is not None and evaluate is not None:
            row.update(initial_metrics)
        else:
            _evaluate(model, evaluate, row)
        progress.result.history.append(row)
    else:
        progress = _resume(state, batches, should_stop)
    result = progress.result
    finished = state is not None and state["finished"]  # a checkpoint of the last step resumes to the end

    step = result.steps
    while not finished and step < params.steps:
        step += 1
        row = _step(model, loss_fn, batches, optimizer, trainable, params, step, flops_per_token, progress)
        result.history.append(row)

        # Evaluate, maybe stop, maybe save a checkpoint
        stop = False
        if _is_eval_step(step, params):
            metrics = _evaluate(model, evaluate, row)
            if should_stop is not None:
                progress.stop_inputs.append(metrics)
                stop = should_stop(metrics)
        if stop:
            result.stopped_early = step < params.steps
            logger.info("stop rule met at step %d", step)
        finished = stop or step == params.steps
        if checkpointing and (finished or step % params.checkpoint_every == 0):
            result.seconds = elapsed_before + time.perf_counter() - start
            save_checkpoint(checkpoint_dir, model, optimizer, progress.to_state(fingerprint, finished))

    if params.gradient_checkpointing:
        model.activation_checkpointing_disable()
    model.eval()
    result.seconds = elapsed_before + time.perf_counter() - start
    logger.info("trained %d steps, %s tokens in %.1f s", result.steps, f"{result.tokens:,}", result.seconds)
    return result
