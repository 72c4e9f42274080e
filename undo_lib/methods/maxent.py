"""MaxEnt: push the forget-data predictions toward uniform while keeping retain CE low.

L = KL(U || p_theta)(forget) + retain_weight * CE(retain), with U uniform over the vocabulary.
"""

from __future__ import annotations

from undo_lib.config import MaxEntParams
from undo_lib.losses import causal_ce, kl_from_uniform


def maxent_loss(model, batch: dict, params: MaxEntParams):
    """MaxEnt loss on one (forget, retain) batch pair; returns (loss, logs)."""
    forget, retain = batch["forget"], batch["retain"]
    forget_logits = model(input_ids=forget["input_ids"]).logits
    retain_logits = model(input_ids=retain["input_ids"]).logits
    forget_term = kl_from_uniform(forget_logits, forget["input_ids"], forget["loss_mask"])
    retain_term = causal_ce(retain_logits, retain["input_ids"], retain["loss_mask"])
    loss = forget_term + params.retain_weight * retain_term
    return loss, {"forget_kl_uniform": forget_term.item(), "retain_ce": retain_term.item()}
