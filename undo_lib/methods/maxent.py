"""MaxEnt: push the forget-data predictions toward uniform while keeping retain CE low.

L = KL(U || p_theta)(forget) + retain_weight * CE(retain), with U uniform over the vocabulary.
With ``repnoise_alpha`` or ``repnoise_beta`` > 0 the RepNoise loss is added
(``undo_lib.methods.repnoise``), which is the RepNoise baseline of Lee et al. (arXiv 2506.06278).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from undo_lib.config import MaxEntParams
from undo_lib.losses import causal_ce, kl_from_uniform
from undo_lib.methods.repnoise import forward_with_mlp_outputs, repnoise_loss


def _uses_repnoise(params: MaxEntParams) -> bool:
    return params.repnoise_alpha > 0 or params.repnoise_beta > 0


class MaxEntForward(NamedTuple):
    """Outputs of MaxEnt's two forward passes and its forget term."""

    forget_output: object  # the model output on the forget batch
    mlp_outputs: list  # forget-batch MLP outputs for RepNoise, empty without it
    retain_logits: torch.Tensor
    forget_term: torch.Tensor  # KL(U || p_theta) on the forget batch


def maxent_forward(model, batch: dict, with_mlp_outputs: bool) -> MaxEntForward:
    """Run the forget then the retain forward pass and compute KL(U || p_theta) on the forget batch.

    ``with_mlp_outputs`` records the forget pass's MLP outputs, which RepNoise needs.
    """
    forget, retain = batch["forget"], batch["retain"]
    if with_mlp_outputs:
        forget_output, mlp_outputs = forward_with_mlp_outputs(model, forget["input_ids"])
    else:
        forget_output, mlp_outputs = model(input_ids=forget["input_ids"]), []
    retain_logits = model(input_ids=retain["input_ids"]).logits
    forget_term = kl_from_uniform(forget_output.logits, forget["input_ids"], forget["loss_mask"])
    return MaxEntForward(forget_output, mlp_outputs, retain_logits, forget_term)


def maxent_loss(model, batch: dict, params: MaxEntParams, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Compute the MaxEnt loss, plus RepNoise when its weights are set, on one (forget, retain) batch pair.

    Args:
        model: a Gemma2 causal LM.
        batch: ``{"forget": ..., "retain": ...}``, each with ``input_ids`` and ``loss_mask`` [batch, seq].
        params: ``retain_weight`` and the RepNoise weights.
        seed: seed of RepNoise's Gaussian noise, combined with the forget tokens. Unused without RepNoise.

    Returns:
        (scalar loss, logs with ``forget_kl_uniform``, ``retain_ce`` and any RepNoise terms).
    """
    retain = batch["retain"]
    forget_output, mlp_outputs, retain_logits, forget_term = maxent_forward(model, batch, _uses_repnoise(params))
    retain_term = causal_ce(retain_logits, retain["input_ids"], retain["loss_mask"])
    loss = forget_term + params.retain_weight * retain_term
    logs = {"forget_kl_uniform": forget_term.item(), "retain_ce": retain_term.item()}
    if not _uses_repnoise(params):
        return loss, logs

    extra, extra_logs = repnoise_loss(model, forget_output, mlp_outputs, retain_logits, batch,
                                      params.repnoise_alpha, params.repnoise_beta, seed)
    return loss + extra, {**logs, **extra_logs}


def make_maxent_loss(model, params: MaxEntParams, seed: int):
    """Return the MaxEnt loss function ``(model, batch) -> (loss, logs)``, whose RepNoise noise uses ``seed``."""
    del model  # MaxEnt needs no set-up on the model

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict]:
        return maxent_loss(model, batch, params, seed)

    return loss_fn
