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
    """Return the compute fields every training stage writes to its metrics.json.

    Wall-clock fields are left out, so metrics.json is bitwise identical across runs with the same
    params and seed. ``timing_record`` returns them.
    """
    return {
        "steps": result.steps,
        "tokens": result.tokens,
        "flops": result.flops,
        "n_params": n_params,
        **extra,
    }


def timing_record(result) -> dict:
    """Return the wall-clock facts of one run of a training stage, for its timing file.

    They differ from run to run, which is why they are kept out of metrics.json.

    ``result`` is a TrainResult, or None when the run diverged and returned none. The peak memory
    is the largest of this process's and, when ``run_training`` used several processes, theirs.
    """
    if result is None:
        return {"seconds": None, "tokens_per_second": None, "resumed_from_step": None,
                "peak_memory_bytes": peak_memory_bytes()}
    return {
        "seconds": round(result.seconds, 2),
        "tokens_per_second": result.tokens / result.seconds if result.seconds > 0 else None,
        "resumed_from_step": result.resumed_from_step,
        "peak_memory_bytes": max(peak_memory_bytes(), result.process_peak_memory_bytes or 0),
    }


def peak_memory_bytes() -> int:
    """Return the peak memory of this process: the CUDA allocator's peak on a GPU, else the peak resident set size."""
    import resource
    import sys

    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes
