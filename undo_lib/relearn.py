"""Relearning attacks: finetune a model on forget-domain data and watch the forget metric return.

One attack is one learning rate. A relearning stage runs every LR of the grid on each model of its
group (``undo_lib.names``). ``worst_case`` combines the LRs by keeping the attacker's best result
(the highest forget accuracy) at every attack step. A run whose loss diverges is kept and flagged,
not dropped.
"""

from __future__ import annotations

import logging

import pandas as pd

from undo_lib.config import TrainParams
from undo_lib.distributed import run_training
from undo_lib.train import DivergenceError

logger = logging.getLogger(__name__)


def attack_params(params: TrainParams, lr: float) -> TrainParams:
    """Return the relearning TrainParams with the grid's LR, constant after warmup."""
    from dataclasses import replace

    return replace(params, lr=lr, min_lr=lr)


def run_attack(model, loss_fn, batches, params: TrainParams, lr: float, flops_per_token: float, evaluate,
               checkpoint_dir=None, checkpoint_key: str = "", initial_metrics: dict | None = None,
               num_processes: int = 1, distributed: str = "ddp"):
    """Run one attack at ``lr`` and return (history rows, diverged flag, TrainResult or None).

    ``checkpoint_dir``, ``checkpoint_key``, ``initial_metrics`` (the metrics of the weights before
    the attack, when an attack at another LR has measured them), ``num_processes`` and ``distributed``
    are passed to ``undo_lib.distributed.run_training``.
    """
    try:
        result = run_training(model, loss_fn, batches, attack_params(params, lr), flops_per_token, evaluate,
                              checkpoint_dir=checkpoint_dir, checkpoint_key=checkpoint_key,
                              initial_metrics=initial_metrics, num_processes=num_processes,
                              distributed=distributed)
    except DivergenceError as err:
        logger.warning("attack at lr=%g diverged at step %d; recording it as diverged", lr, err.step)
        before = [dict(row, lr=lr, diverged=False) for row in err.history if "forget" in row]
        return before + [{"step": err.step, "lr": lr, "diverged": True}], True, None
    rows = [dict(row, lr=lr, diverged=False) for row in result.history if "forget" in row]
    return rows, False, result


def before_attack(rows: list[dict]) -> dict:
    """Return the evaluation metrics of step 0 (the attacked weights) from an attack's history rows."""
    first = rows[0]
    if first.get("step") != 0:
        raise ValueError(f"the first history row is step {first.get('step')}, not step 0")
    return {k: v for k, v in first.items() if k not in ("step", "tokens", "flops", "lr", "diverged")}


def worst_case(history: pd.DataFrame, metric: str = "forget", higher_is_worse: bool = True) -> pd.DataFrame:
    """Return the attacker's best value of ``metric`` over learning rates, per model and attack step.

    Args:
        history: rows with columns ``model``, ``step``, ``lr`` and ``metric``. Diverged runs have
            no metric value at their steps, so they are skipped here and reported separately.
        metric: column to combine.
        higher_is_worse: True for accuracies (the attacker maximises), False for losses.

    Returns:
        DataFrame with columns model, step, metric and ``best_lr``.
    """
    rows = history.dropna(subset=[metric]).reset_index(drop=True)
    idx = rows.groupby(["model", "step"])[metric].idxmax() if higher_is_worse else \
        rows.groupby(["model", "step"])[metric].idxmin()
    best = rows.loc[idx, ["model", "step", metric, "lr"]].rename(columns={"lr": "best_lr"})
    return best.sort_values(["model", "step"]).reset_index(drop=True)
