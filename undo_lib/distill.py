"""Distillation on outputs: forward KL from a frozen teacher, with UNDO's early-stop rule.

The student reads the same packed sequences as the teacher and matches its full next-token
distribution (temperature 1) at every counted position. Distillation inputs include forget-domain
text, as in the paper: the robustness does not come from hiding forget inputs from the student.
"""

from __future__ import annotations

import logging

import torch

from undo_lib.losses import forward_kl

logger = logging.getLogger(__name__)


def make_distill_loss(teacher: torch.nn.Module):
    """Loss function for ``train``: KL(teacher || student) on one batch, teacher under no_grad."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def distill_loss(student, batch):
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch["input_ids"]).logits
        student_logits = student(input_ids=batch["input_ids"]).logits
        loss = forward_kl(teacher_logits, student_logits, batch["input_ids"], batch["loss_mask"])
        return loss, {}

    return distill_loss


class RetainStopRule:
    """Stop once the student's retain accuracy is within ``margin`` of the teacher's.

    The reference is the teacher's retain accuracy measured before distillation. With
    ``consecutive`` > 1 the rule must hold on that many checks in a row, which damps the check-to-
    check noise of a small evaluation set.
    """

    def __init__(self, teacher_retain: float, margin: float, consecutive: int = 1):
        self.threshold = teacher_retain - margin
        self.consecutive = consecutive
        self.streak = 0

    def __call__(self, metrics: dict) -> bool:
        self.streak = self.streak + 1 if metrics["retain"] >= self.threshold else 0
        return self.streak >= self.consecutive


def cost_fraction(result, unlearn_metrics: dict, oracle_metrics: dict) -> dict:
    """(Unlearning + distillation) cost over the oracle's pretraining cost, in FLOPs and in tokens.

    FLOPs count the teacher's forward passes (2·N per token) on top of the student's 6·N; tokens
    count what the trained models read. Both numerators include the unlearning stage.
    """
    unlearn, oracle = unlearn_metrics["compute"], oracle_metrics["compute"]
    return {
        "flops": (unlearn["flops"] + result.flops) / oracle["flops"],
        "tokens": (unlearn["tokens"] + result.tokens) / oracle["tokens"],
        "distill_only_flops": result.flops / oracle["flops"],
    }
