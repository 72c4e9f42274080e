"""GradDiff: gradient ascent on the forget data, gradient descent on the retain data.

L = -CE(forget) + retain_weight * CE(retain), the GradDiff loss of Lee et al. (arXiv 2506.06278),
where retain_weight is their alpha (15 for arithmetic, 1 for language).
"""

from __future__ import annotations

import torch

from undo_lib.config import GradDiffParams
from undo_lib.losses import causal_ce


def graddiff_loss(model, batch: dict, params: GradDiffParams) -> tuple[torch.Tensor, dict]:
    """Compute the GradDiff loss on one (forget, retain) batch pair.

    Args:
        model: causal LM returning ``.logits`` [batch, seq, vocab].
        batch: ``{"forget": ..., "retain": ...}``, each with ``input_ids`` and ``loss_mask`` [batch, seq].
        params: the method's params, whose ``retain_weight`` scales the retain CE.

    Returns:
        (scalar loss, logs with ``forget_ce`` and ``retain_ce``).
    """
    forget, retain = batch["forget"], batch["retain"]
    forget_logits = model(input_ids=forget["input_ids"]).logits
    retain_logits = model(input_ids=retain["input_ids"]).logits
    forget_ce = causal_ce(forget_logits, forget["input_ids"], forget["loss_mask"])
    retain_ce = causal_ce(retain_logits, retain["input_ids"], retain["loss_mask"])
    loss = -forget_ce + params.retain_weight * retain_ce
    return loss, {"forget_ce": forget_ce.item(), "retain_ce": retain_ce.item()}


def make_graddiff_loss(model, params: GradDiffParams, seed: int):
    """Return the GradDiff loss function ``(model, batch) -> (loss, logs)``. GradDiff needs no set-up."""
    del model, seed  # GradDiff has no state and draws no random numbers

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict]:
        return graddiff_loss(model, batch, params)

    return loss_fn
