"""MaxEnt: push the forget-data predictions toward uniform while keeping retain CE low.

L = KL(U || p_theta)(forget) + retain_weight * CE(retain), with U uniform over the vocabulary.
With ``repnoise_alpha`` or ``repnoise_beta`` > 0 the RepNoise loss is added
(``undo_lib.methods.repnoise``), which is the RepNoise baseline of Lee et al. (arXiv 2506.06278).
"""

from __future__ import annotations

import torch

from undo_lib.config import MaxEntParams
from undo_lib.losses import causal_ce, kl_from_uniform
from undo_lib.methods.repnoise import forward_with_mlp_outputs, repnoise_loss


def _uses_repnoise(params: MaxEntParams) -> bool:
    return params.repnoise_alpha > 0 or params.repnoise_beta > 0


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
    forget, retain = batch["forget"], batch["retain"]
    if _uses_repnoise(params):
        forget_output, mlp_outputs = forward_with_mlp_outputs(model, forget["input_ids"])
    else:
        forget_output, mlp_outputs = model(input_ids=forget["input_ids"]), []
    retain_logits = model(input_ids=retain["input_ids"]).logits
    forget_term = kl_from_uniform(forget_output.logits, forget["input_ids"], forget["loss_mask"])
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
