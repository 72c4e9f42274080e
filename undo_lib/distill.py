"""Distillation on outputs: forward KL from a frozen teacher, with UNDO's early-stop rule.

The student reads the same packed sequences as the teacher and matches its full next-token
distribution (temperature 1) at every counted position. Distillation inputs include forget-domain
text, as in Lee et al. (arXiv 2506.06278): the robustness does not come from hiding forget inputs from the student.
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
    """Stop once the student's retain accuracy is within ``margin`` (absolute) of the teacher's.

    The reference is the teacher's retain accuracy measured before distillation. With
    ``consecutive`` > 1 the rule must hold on that many checks in a row, which damps the check-to-
    check noise of a small evaluation set.
    """

    def __init__(self, teacher_retain: float, margin: float, consecutive: int = 1):
        self.threshold = teacher_retain - margin
        self.consecutive = consecutive
        self.streak = 0

    def holds(self, metrics: dict) -> bool:
        """Whether ``metrics`` meet the threshold on this check alone."""
        return metrics["retain"] >= self.threshold

    def __call__(self, metrics: dict) -> bool:
        self.streak = self.streak + 1 if self.holds(metrics) else 0
        return self.streak >= self.consecutive


class RelativeLossStopRule(RetainStopRule):
    """Stop once the student's retain loss is at most ``(1 + margin)`` times the teacher's.

    The language setting's rule: the relative English-CE gap (student - teacher) / teacher must be
    within ``margin`` (Lee et al., arXiv 2506.06278, use 5%).
    """

    def __init__(self, teacher_retain: float, margin: float, consecutive: int = 1):
        super().__init__(teacher_retain, margin, consecutive)
        self.threshold = teacher_retain * (1 + margin)

    def holds(self, metrics: dict) -> bool:
        return metrics["retain"] <= self.threshold


class MatchingStopRule:
    """Oracle matching (E1): the retain rule, and the forget metric within ``margin`` of the teacher's.

    A student that starts from the full model already meets the retain rule at step 0, so matching
    the oracle also needs the forget metric to reach the oracle's: within ``margin`` absolute for
    accuracies, relative for cross-entropies (the same margin kind as the retain rule).
    """

    def __init__(self, retain_rule: RetainStopRule, teacher_forget: float, margin: float, relative: bool):
        self.retain_rule, self.teacher_forget = retain_rule, teacher_forget
        self.tolerance = margin * abs(teacher_forget) if relative else margin
        self.consecutive, self.streak = retain_rule.consecutive, 0

    def holds(self, metrics: dict) -> bool:
        close = abs(metrics["forget"] - self.teacher_forget) <= self.tolerance
        return self.retain_rule.holds(metrics) and close

    def __call__(self, metrics: dict) -> bool:
        self.streak = self.streak + 1 if self.holds(metrics) else 0
        return self.streak >= self.consecutive


STUDENTS = ("random_init", "full", "undo")  # Unlearn-and-Distill or oracle matching, oracle matching, UNDO


def check_student(student: str, alpha: float, student_dir: str) -> None:
    """Reject a misspelt student, an alpha outside [0, 1], or a student folder that does not fit."""
    if student not in STUDENTS:
        raise ValueError(f"student must be one of {list(STUDENTS)}, got {student!r}")
    if student == "undo" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is impossible: UNDO mixes (1 - alpha) * theta + alpha * beta * noise, "
                         "so alpha must be in [0, 1]")
    if (student == "undo") == bool(student_dir):
        need = "no student_dir (the student is the noised teacher)" if student == "undo" else "a student_dir"
        raise ValueError(f"student {student!r} needs {need}, got student_dir={student_dir!r}")


def cost_fraction(result, unlearn_metrics: dict | None, oracle_metrics: dict) -> dict:
    """(Unlearning + distillation) cost over the oracle's pretraining cost, in FLOPs and in tokens.

    FLOPs count the teacher's forward passes (2·N per token) on top of the student's 6·N; tokens
    count what the trained models read. Both numerators include the teacher's unlearning run, if
    any (``unlearn_metrics`` None: the oracle as teacher, nothing to add).
    """
    unlearn = unlearn_metrics["compute"] if unlearn_metrics else {"flops": 0.0, "tokens": 0}
    oracle = oracle_metrics["compute"]
    return {
        "flops": (unlearn["flops"] + result.flops) / oracle["flops"],
        "tokens": (unlearn["tokens"] + result.tokens) / oracle["tokens"],
        "distill_only_flops": result.flops / oracle["flops"],
    }
