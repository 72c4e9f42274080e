"""The one training loop shared by pretraining, unlearning, distillation and relearning.

AdamW (betas 0.9/0.999, eps 1e-8), linear warmup then cosine decay from ``lr`` to ``min_lr``
(constant when they are equal), gradient accumulation and clipping. Every step records tokens and
FLOPs; evaluation runs at step 0, every ``eval_every`` steps and at the end; an optional stop rule
ends training early. A non-finite loss or gradient raises ``DivergenceError`` at the step it appears.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from undo_lib.config import TrainParams
from undo_lib.data import count_tokens

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
        self.step, self.lr = step, lr
        self.history = history or []  # rows recorded before the divergence


@dataclass
class TrainResult:
    steps: int = 0  # optimizer steps taken
    tokens: int = 0  # tokens fed to the trained model (all positions of every micro-batch)
    flops: float = 0.0  # flops_per_token * tokens
    stopped_early: bool = False  # the stop rule fired before the step cap
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # one row per step; eval columns on eval steps


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
    return step == 0 or step == params.steps or (params.eval_every > 0 and step % params.eval_every == 0)


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


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Iterator[dict],
    params: TrainParams,
    flops_per_token: float,
    evaluate: EvalFn | None = None,
    should_stop: StopFn | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``loss_fn`` on ``batches``.

    Args:
        model: the module to train; only parameters with ``requires_grad`` are optimised.
        loss_fn: returns (scalar loss, dict of floats to log) for one micro-batch.
        batches: endless iterator of micro-batches (dicts of tensors, possibly nested).
        params: steps, batch, LR schedule, clipping, evaluation cadence.
        flops_per_token: compute per token of a micro-batch (6N to train, + 2N per teacher forward).
        evaluate: called on eval steps; its metrics join that step's history row.
        should_stop: called with the metrics of each eval step after step 0; True ends training.

    Returns:
        TrainResult with counters and the per-step history.
    """
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=params.weight_decay)
    result = TrainResult()
    start = time.perf_counter()
    model.train()
    row = {"step": 0, "tokens": 0, "flops": 0.0}
    _evaluate(model, evaluate, row)
    result.history.append(row)

    for step in range(1, params.steps + 1):
        lr = lr_at(step - 1, params)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # Forward and backward over the micro-batches of this step
        logs: dict[str, float] = {}
        loss_sum = 0.0
        for _ in range(params.grad_accum):
            batch = _to_device(next(batches), device)
            loss, micro_logs = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise DivergenceError(step, lr, "the loss", result.history)
            (loss / params.grad_accum).backward()
            loss_sum += loss.item() / params.grad_accum
            for k, v in micro_logs.items():
                logs[k] = logs.get(k, 0.0) + v / params.grad_accum
            result.tokens += count_tokens(batch)

        # Clip, check and step
        max_norm = params.max_grad_norm if params.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm)
        if not torch.isfinite(grad_norm):
            raise DivergenceError(step, lr, "the gradient norm", result.history)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        # Record, evaluate and maybe stop
        result.steps = step
        result.flops = flops_per_token * result.tokens
        row = {"step": step, "lr": lr, "loss": loss_sum, "grad_norm": grad_norm.item(),
               "tokens": result.tokens, "flops": result.flops, **logs}
        result.history.append(row)
        if _is_eval_step(step, params):
            metrics = _evaluate(model, evaluate, row)
            if should_stop is not None and should_stop(metrics):
                result.stopped_early = step < params.steps
                logger.info("stop rule met at step %d", step)
                break

    model.eval()
    result.seconds = time.perf_counter() - start
    logger.info("trained %d steps, %s tokens in %.1f s", result.steps, f"{result.tokens:,}", result.seconds)
    return result
