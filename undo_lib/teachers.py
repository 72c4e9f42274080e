"""Unlearning sweeps: flag collapsed runs and pick each method's teacher.

Every unlearning method runs an LR sweep (``unlearn.<setting>.<Method>.lrs``). All sweep points go
to the Pareto figure (E4); one per method becomes the teacher that Unlearn-and-Distill (E2) and
UNDO (E3) distill. Lee et al. (arXiv 2506.06278) picked the teacher LR by hand; here the rule is
a param (``unlearn.<setting>.teacher_rule``):

- ``most_forgetting``: among the runs that did not collapse and keep at least
  ``min_retain_fraction`` of the full model's retain performance (above chance), the one whose
  forget performance is lowest; ties go to the smaller LR. When no run qualifies, the run with the
  best retain performance is taken and the record says the rule was not met.
- ``fixed_lr``: the run at ``lrs[<Method>]``.
"""

from __future__ import annotations

import logging

from undo_lib.config import TeacherRuleParams

logger = logging.getLogger(__name__)


def is_collapsed(retain_fraction: float, collapse_fraction: float) -> bool:
    """Return True when a run kept less than ``collapse_fraction`` of the full model's retain performance.

    Such a run forgets by destroying the model; it is marked failed and never counts as unlearning.
    A NaN fraction (a reference at chance) counts as collapsed.
    """
    return not retain_fraction >= collapse_fraction


def _candidate(record: dict) -> dict:
    return {"lr": record["lr"], "model": record["model"], "retain": record["final"]["retain"],
            "forget": record["final"]["forget"], "retain_fraction": record["retain_fraction"],
            "collapsed": record["collapsed"]}


def _forgetting_order(record: dict, higher_is_better: bool) -> tuple[float, float]:
    """Return the sort key: most forgotten first (lowest accuracy, or highest CE), then smaller LR."""
    forget = record["final"]["forget"]
    return (forget if higher_is_better else -forget, record["lr"])


def select_teacher(method: str, records: list[dict], rule: TeacherRuleParams, higher_is_better: bool) -> dict:
    """Apply ``rule`` to the unlearning metrics of one method's sweep and return the teacher record.

    Args:
        records: metrics.json of every sweep point (keys ``lr``, ``model``, ``final``,
            ``retain_fraction``, ``collapsed``, ``compute``).
        higher_is_better: direction of the setting's metrics (True for accuracies).

    Returns:
        The chosen run's ``lr``, ``model``, ``final`` and ``compute``, with ``rule``, ``rule_met``,
        a ``reason`` and every ``candidates`` entry.
    """
    if not records:
        raise ValueError(f"no unlearning runs of {method} to choose a teacher from")
    if rule.rule == "fixed_lr":
        chosen = next((r for r in records if r["lr"] == rule.lrs[method]), None)
        if chosen is None:
            raise ValueError(f"unlearn teacher_rule.lrs.{method}={rule.lrs[method]} has no run; "
                             f"runs exist for LRs {[r['lr'] for r in records]}")
        met, reason = not chosen["collapsed"], f"fixed_lr: lr {chosen['lr']} from teacher_rule.lrs"
    else:
        eligible = [r for r in records if not r["collapsed"] and r["retain_fraction"] >= rule.min_retain_fraction]
        met = bool(eligible)
        if met:
            chosen = min(eligible, key=lambda r: _forgetting_order(r, higher_is_better))
            reason = (f"most_forgetting: lowest forget performance among {len(eligible)} runs keeping "
                      f">= {rule.min_retain_fraction} of the full model's retain performance")
        else:
            chosen = max(records, key=lambda r: (r["retain_fraction"], -r["lr"]))
            reason = (f"most_forgetting NOT MET: no run keeps >= {rule.min_retain_fraction} of the full model's "
                      "retain performance without collapsing; took the run with the best retain performance")
            logger.warning("%s teacher: %s", method, reason)
    return {"method": method, "lr": chosen["lr"], "model": chosen["model"], "rule": rule.rule, "rule_met": met,
            "reason": reason, "final": chosen["final"], "compute": chosen["compute"],
            "candidates": [_candidate(r) for r in sorted(records, key=lambda r: r["lr"])]}
