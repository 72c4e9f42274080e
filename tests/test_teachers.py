"""Teacher selection over an unlearning sweep, the collapsed-retain guard and the retain fraction."""

from __future__ import annotations

import math

import pytest

from undo_lib.config import TeacherRuleParams
from undo_lib.settings import chance_retain, retain_fraction
from undo_lib.teachers import is_collapsed, select_teacher


def _run(lr: float, retain: float, forget: float, fraction: float, collapsed: bool = False) -> dict:
    return {"lr": lr, "model": f"MaxEnt_lr_{lr}", "final": {"retain": retain, "forget": forget},
            "retain_fraction": fraction, "collapsed": collapsed, "compute": {"flops": lr, "tokens": 1}}


def test_retain_fraction_accuracy_by_hand():
    # 0.3 accuracy against a full model at 0.5, chance 0: 0.3 / 0.5
    assert retain_fraction("arithmetic", 0.3, 0.5, vocab_size=1024) == pytest.approx(0.6)


def test_retain_fraction_cross_entropy_by_hand():
    # English CE 5.0 against a full model at 4.0 with V = e^8 (uniform CE 8): (5 - 8) / (4 - 8) = 0.75
    vocab = round(math.exp(8))
    chance = math.log(vocab)
    expected = (5.0 - chance) / (4.0 - chance)

    assert chance_retain("language", vocab) == pytest.approx(chance)
    assert retain_fraction("language", 5.0, 4.0, vocab) == pytest.approx(expected)
    assert expected == pytest.approx(0.75, abs=1e-3)


def test_collapsed_below_fraction_and_nan():
    assert is_collapsed(0.1, 0.25)
    assert not is_collapsed(0.25, 0.25)
    assert is_collapsed(float("nan"), 0.25)


def test_most_forgetting_picks_lowest_forget_accuracy_among_eligible():
    runs = [_run(1e-4, 0.50, 0.40, 1.0), _run(3e-4, 0.45, 0.10, 0.9), _run(1e-3, 0.20, 0.00, 0.4),
            _run(3e-3, 0.00, 0.00, 0.0, collapsed=True)]

    teacher = select_teacher("MaxEnt", runs, TeacherRuleParams(min_retain_fraction=0.8), higher_is_better=True)

    assert teacher["lr"] == 3e-4
    assert teacher["rule_met"] is True
    assert teacher["model"] == "MaxEnt_lr_0.0003"
    assert teacher["compute"] == {"flops": 3e-4, "tokens": 1}
    assert [c["lr"] for c in teacher["candidates"]] == [1e-4, 3e-4, 1e-3, 3e-3]


def test_most_forgetting_cross_entropy():
    runs = [_run(1e-4, 4.1, 6.0, 0.95), _run(3e-4, 4.2, 7.5, 0.9), _run(1e-3, 4.0, 5.0, 1.0)]

    teacher = select_teacher("MaxEnt", runs, TeacherRuleParams(min_retain_fraction=0.8), higher_is_better=False)

    assert teacher["lr"] == 3e-4


def test_tie_goes_to_smaller_lr():
    runs = [_run(3e-4, 0.5, 0.1, 0.9), _run(1e-4, 0.5, 0.1, 0.9)]

    assert select_teacher("GradDiff", runs, TeacherRuleParams(), True)["lr"] == 1e-4


def test_rule_not_met_best_retain():
    runs = [_run(1e-4, 0.2, 0.3, 0.5), _run(3e-4, 0.1, 0.0, 0.3), _run(1e-3, 0.0, 0.0, 0.0, collapsed=True)]

    teacher = select_teacher("RMU", runs, TeacherRuleParams(min_retain_fraction=0.8), True)

    assert teacher["lr"] == 1e-4
    assert teacher["rule_met"] is False
    assert "NOT MET" in teacher["reason"]


def test_collapsed_run_is_never_chosen_while_another_qualifies():
    runs = [_run(1e-4, 0.5, 0.3, 0.9), _run(1e-3, 0.4, 0.0, 0.85, collapsed=True)]

    assert select_teacher("MaxEnt", runs, TeacherRuleParams(min_retain_fraction=0.8), True)["lr"] == 1e-4


def test_fixed_lr_rule():
    runs = [_run(1e-4, 0.5, 0.3, 0.9), _run(1e-3, 0.0, 0.0, 0.0, collapsed=True)]
    rule = TeacherRuleParams(rule="fixed_lr", lrs={"MaxEnt": 1e-3})

    teacher = select_teacher("MaxEnt", runs, rule, True)

    assert teacher["lr"] == 1e-3
    assert teacher["rule_met"] is False  # a collapsed fixed choice is reported, not hidden


def test_fixed_lr_without_run_is_a_clear_error():
    with pytest.raises(ValueError, match=r"teacher_rule.lrs.MaxEnt=0.5 has no run"):
        select_teacher("MaxEnt", [_run(1e-4, 0.5, 0.3, 0.9)], TeacherRuleParams(rule="fixed_lr", lrs={"MaxEnt": 0.5}),
                       True)


def test_empty_sweep_is_an_error():
    with pytest.raises(ValueError, match="no unlearning runs of RMU"):
        select_teacher("RMU", [], TeacherRuleParams(), True)
