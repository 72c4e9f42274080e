"""Compute accounting: FLOPs as 6·N per trained token and 2·N per teacher-forward token.

N is the number of model parameters (the tied embedding counted once). Attention's sequence-length
term is ignored, as in the usual 6·N·D estimate.
"""

from __future__ import annotations


def train_flops_per_token(n_params: int) -> float:
    """Forward and backward of a trained model: 6·N per token."""
    return 6.0 * n_params


def forward_flops_per_token(n_params: int) -> float:
    """Forward pass only (a frozen teacher): 2·N per token."""
    return 2.0 * n_params


def compute_record(result, n_params: int, **extra) -> dict:
    """The compute fields every training stage writes to its metrics.json."""
    return {
        "steps": result.steps,
        "tokens": result.tokens,
        "flops": result.flops,
        "n_params": n_params,
        "seconds": round(result.seconds, 2),
        "tokens_per_second": result.tokens / result.seconds if result.seconds > 0 else None,
        **extra,
    }
