"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) for the shared training loop.

A SAM step takes the gradient at theta + eps, with eps = rho * g / (||g||_2 + 1e-12), where g is the
gradient at theta and ||g||_2 one global norm over all trainable parameters, then updates theta with
it. ``undo_lib.train`` calls ``ascend`` after the first backward pass and ``descend`` after the second.
"""

from __future__ import annotations

import torch

EPSILON = 1e-12  # keeps eps finite when the gradient is 0


@torch.no_grad()
def ascend(parameters: list[torch.nn.Parameter], rho: float) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """Move ``parameters`` to theta + rho * g / (||g||_2 + 1e-12) and clear their gradients.

    Parameters without a gradient stay where they are.

    Returns:
        (copies of the weights at theta, with None for the parameters left in place, and the global
        gradient norm).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return [None] * len(parameters), torch.tensor(0.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = rho / (norm + EPSILON)
    saved: list[torch.Tensor | None] = []
    for p in parameters:
        if p.grad is None:
            saved.append(None)
            continue
        saved.append(p.detach().clone())
        p.add_(p.grad * scale.to(p.grad.dtype))
        p.grad = None
    return saved, norm


@torch.no_grad()
def descend(parameters: list[torch.nn.Parameter], saved: list[torch.Tensor | None]) -> None:
    """Put ``parameters`` back at theta, keeping the gradients taken at theta + eps.

    The weights are copied back from ``saved`` rather than computed as (theta + eps) - eps, so
    rounding never moves theta.
    """
    for p, original in zip(parameters, saved):
        if original is not None:
            p.copy_(original)
