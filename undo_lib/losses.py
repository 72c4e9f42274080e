"""Token-level losses shared by every stage.

Shapes: ``logits`` [batch, seq, vocab]; ``input_ids`` and ``loss_mask`` [batch, seq]. Position t
predicts token t + 1, and ``loss_mask[:, t + 1]`` says whether that target counts. Every loss is a
mean over counted targets, so padding or masked positions never change its value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _targets(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor):
    return logits[:, :-1].float(), input_ids[:, 1:], loss_mask[:, 1:].bool()


def causal_ce(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged over counted targets."""
    pred, target, keep = _targets(logits, input_ids, loss_mask)
    if not keep.any():
        return pred.sum() * 0.0
    return F.cross_entropy(pred[keep], target[keep])


def kl_from_uniform(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """KL(U || p) with U uniform over the vocabulary, averaged over counted positions (MaxEnt).

    Per position: sum_v (1/V)(log(1/V) - log p_v) = -log V - mean_v log p_v. It is 0 exactly when p
    is uniform. This is not negative entropy; its gradient differs.
    """
    pred, _, keep = _targets(logits, input_ids, loss_mask)
    if not keep.any():
        return pred.sum() * 0.0
    log_p = F.log_softmax(pred[keep], dim=-1)
    vocab = log_p.shape[-1]
    return (-math.log(vocab) - log_p.mean(dim=-1)).mean()


def forward_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature 1, averaged over counted positions (distillation)."""
    teacher, _, keep = _targets(teacher_logits, input_ids, loss_mask)
    student = student_logits[:, :-1].float()
    if not keep.any():
        return student.sum() * 0.0
    log_t = F.log_softmax(teacher[keep], dim=-1)
    log_s = F.log_softmax(student[keep], dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean()


def lm_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Next-token CE of ``model`` on one packed batch (pretraining and relearning)."""
    logits = model(input_ids=batch["input_ids"]).logits
    return causal_ce(logits, batch["input_ids"], batch["loss_mask"]), {}
