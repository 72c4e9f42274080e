"""The UNDO noise step: shrink and perturb a copy of the unlearned model's weights.

theta <- (1 - alpha) * theta + alpha * beta * N, applied once before distillation to every
trainable parameter. N is Xavier-uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), for 2-D
weights (the tied embedding included) and 0 for 1-D ones, so RMSNorm weights are only shrunk. Gemma2's
RMSNorm scales by (1 + weight), so shrinking a weight moves the gain towards 1. alpha = 0
leaves the model unchanged; alpha = 1 with beta = 1 is a fresh Xavier initialisation.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


@torch.no_grad()
def apply_undo_noise(model: torch.nn.Module, alpha: float, beta: float, seed: int) -> torch.nn.Module:
    """Apply the UNDO noise step to ``model`` in place and return it.

    Args:
        model: the student, a copy of the unlearned teacher.
        alpha: mixing weight in [0, 1]; larger means more of the weights is replaced.
        beta: scale of the Xavier term in [0, 1]; 0 means shrinking only.
        seed: seed of the noise generator (independent of the global torch RNG).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}; set distill.<setting>.alphas or wmdp.undo.alphas "
                         "accordingly")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}; set distill.<setting>.beta or wmdp.undo.beta accordingly")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 2:
            fan_out, fan_in = p.shape
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            noise = (torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound
        elif p.ndim == 1:
            noise = torch.zeros(p.shape)
        else:
            raise ValueError(f"parameter {name} has {p.ndim} dimensions; UNDO noise handles 1-D and 2-D only")
        p.mul_(1 - alpha).add_(noise.to(device=p.device, dtype=p.dtype), alpha=alpha * beta)
    logger.info("applied UNDO noise: alpha=%g beta=%g seed=%d", alpha, beta, seed)
    return model
