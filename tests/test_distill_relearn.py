"""Tests for undo_lib.distill (loss, stop rule, cost) and undo_lib.relearn (attacks, worst case)."""

import copy
import itertools
import math

import pandas as pd
import pytest
import torch

from undo_lib.config import TrainParams
from undo_lib.distill import RetainStopRule, cost_fraction, make_distill_loss
from undo_lib.losses import lm_loss
from undo_lib.noise import apply_undo_noise
from undo_lib.relearn import attack_params, before_attack, run_attack, worst_case
from undo_lib.train import TrainResult

# RetainStopRule


def test_stop_threshold():
    rule = RetainStopRule(teacher_retain=0.8, margin=0.05)

    assert rule.threshold == pytest.approx(0.75)


def test_stop_single_check():
    assert RetainStopRule(0.8, 0.05)({"retain": 0.76}) is True
    assert RetainStopRule(0.8, 0.05)({"retain": 0.74}) is False


def test_stop_needs_two_in_row():
    rule = RetainStopRule(0.8, 0.05, consecutive=2)

    decisions = [rule({"retain": value}) for value in (0.9, 0.5, 0.9, 0.9)]

    # The miss at 0.5 resets the streak, so only the fourth check completes two in a row.
    assert decisions == [False, False, False, True]


def test_stop_streak_resets():
    rule = RetainStopRule(0.8, 0.05, consecutive=2)

    rule({"retain": 0.9})
    rule({"retain": 0.1})

    assert rule.streak == 0
    assert rule({"retain": 0.9}) is False


# cost_fraction


def test_cost_fraction_arithmetic():
    result = TrainResult(steps=4, tokens=300, flops=30.0)
    unlearn = {"compute": {"flops": 10.0, "tokens": 100}}
    oracle = {"compute": {"flops": 400.0, "tokens": 1000}}

    cost = cost_fraction(result, unlearn, oracle)

    assert cost["flops"] == pytest.approx((10 + 30) / 400)
    assert cost["tokens"] == pytest.approx((100 + 300) / 1000)
    assert cost["distill_only_flops"] == pytest.approx(30 / 400)


# make_distill_loss


def _batch(vocab: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (2, 12), generator=gen)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 6:] = False
    return {"input_ids": ids, "loss_mask": mask}


def test_distill_copy_zero(tiny_model, tokenizer):
    student = copy.deepcopy(tiny_model)
    loss_fn = make_distill_loss(tiny_model)

    loss, logs = loss_fn(student, _batch(len(tokenizer)))

    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert logs == {}


def test_distill_noised_positive(tiny_model, tokenizer):
    student = apply_undo_noise(copy.deepcopy(tiny_model), alpha=0.5, beta=0.5, seed=0)
    batch = _batch(len(tokenizer))
    loss_fn = make_distill_loss(tiny_model)

    loss, _ = loss_fn(student, batch)

    with torch.no_grad():
        log_t = torch.log_softmax(tiny_model(input_ids=batch["input_ids"]).logits.double(), dim=-1)
        log_s = torch.log_softmax(student(input_ids=batch["input_ids"]).logits.double(), dim=-1)
    ids, mask = batch["input_ids"], batch["loss_mask"]
    per_position = [
        (log_t[b, t].exp() * (log_t[b, t] - log_s[b, t])).sum().item()
        for b in range(2)
        for t in range(ids.shape[1] - 1)
        if mask[b, t + 1]
    ]
    assert loss.item() > 1e-3
    assert loss.item() == pytest.approx(sum(per_position) / len(per_position), rel=1e-4)


def test_teacher_gets_no_gradient(tiny_model, tokenizer):
    student = apply_undo_noise(copy.deepcopy(tiny_model), alpha=0.5, beta=0.5, seed=0)
    tiny_model.train()
    loss_fn = make_distill_loss(tiny_model)

    loss, _ = loss_fn(student, _batch(len(tokenizer)))
    loss.backward()

    assert not tiny_model.training, "the teacher must be put in eval mode"
    for name, p in tiny_model.named_parameters():
        assert not p.requires_grad, f"teacher parameter {name} still requires grad"
        assert p.grad is None, f"teacher parameter {name} received a gradient"
    student_grads = [p.grad for p in student.parameters()]
    assert all(g is not None for g in student_grads)
    assert any(g.abs().sum() > 0 for g in student_grads)


# run_attack


def _relearn_params(**overrides) -> TrainParams:
    values = {"steps": 4, "batch_size": 2, "warmup_steps": 1, "eval_every": 2, "min_lr": 1e-5}
    values.update(overrides)
    return TrainParams(**values)


def test_attack_params_constant_lr():
    params = attack_params(_relearn_params(), lr=3e-4)

    assert params.lr == 3e-4
    assert params.min_lr == 3e-4
    assert params.warmup_steps == 1
    assert params.steps == 4


def test_run_attack_rows(tiny_model, tokenizer):
    evaluations = itertools.count()

    def evaluate(model):
        return {"forget": float(next(evaluations)) / 10, "retain": 0.5}

    rows, diverged, result = run_attack(tiny_model, lm_loss, itertools.repeat(_batch(len(tokenizer))),
                                        _relearn_params(), lr=1e-3, flops_per_token=2.0, evaluate=evaluate)

    assert not diverged
    assert result.steps == 4
    assert [row["step"] for row in rows] == [0, 2, 4]
    assert [row["forget"] for row in rows] == [0.0, 0.1, 0.2]
    assert all(row["lr"] == 1e-3 for row in rows)
    assert all(row["diverged"] is False for row in rows)


def test_run_attack_divergence(tiny_model, tokenizer):
    def nan_loss(model, batch):
        loss, logs = lm_loss(model, batch)
        return loss * math.nan, logs

    rows, diverged, result = run_attack(tiny_model, nan_loss, itertools.repeat(_batch(len(tokenizer))),
                                        _relearn_params(), lr=1e-3, flops_per_token=2.0,
                                        evaluate=lambda model: {"forget": 0.0})

    assert diverged is True
    assert result is None
    assert rows[-1] == {"step": 1, "lr": 1e-3, "diverged": True}
    assert rows[0]["step"] == 0, "evaluations before the divergence are kept"
    assert rows[0]["diverged"] is False


# worst_case


def _histories() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("A", 0, 1e-3, 0.1), ("A", 0, 1e-4, 0.2),
            ("A", 10, 1e-3, 0.5), ("A", 10, 1e-4, 0.3),
            ("B", 0, 1e-3, math.nan), ("B", 0, 1e-4, 0.05),  # the 1e-3 run of B has no value at step 0
            ("B", 10, 1e-3, 0.4), ("B", 10, 1e-4, 0.6),
        ],
        columns=["model", "step", "lr", "forget"],
    )


def test_worst_case_max_over_lrs():
    worst = worst_case(_histories())

    expected = pd.DataFrame(
        {"model": ["A", "A", "B", "B"], "step": [0, 10, 0, 10],
         "forget": [0.2, 0.5, 0.05, 0.6], "best_lr": [1e-4, 1e-3, 1e-4, 1e-4]}
    )
    pd.testing.assert_frame_equal(worst, expected)


def test_worst_case_min_for_losses():
    worst = worst_case(_histories(), higher_is_worse=False)

    expected = pd.DataFrame(
        {"model": ["A", "A", "B", "B"], "step": [0, 10, 0, 10],
         "forget": [0.1, 0.3, 0.05, 0.4], "best_lr": [1e-3, 1e-4, 1e-4, 1e-3]}
    )
    pd.testing.assert_frame_equal(worst, expected)


def test_worst_case_other_metric():
    history = _histories().rename(columns={"forget": "english_ce"})

    worst = worst_case(history, metric="english_ce", higher_is_worse=False)

    assert list(worst.columns) == ["model", "step", "english_ce", "best_lr"]
    assert worst["english_ce"].tolist() == [0.1, 0.3, 0.05, 0.4]


def test_worst_case_shuffled_rows():
    shuffled = _histories().sample(frac=1.0, random_state=3).reset_index(drop=True)

    pd.testing.assert_frame_equal(worst_case(shuffled), worst_case(_histories()))


def test_worst_case_duplicate_index():
    history = _histories()
    # pd.concat of per-LR frames without ignore_index repeats the labels 0..3.
    stacked = pd.concat([history[history["lr"] == 1e-3].reset_index(drop=True),
                         history[history["lr"] == 1e-4].reset_index(drop=True)])

    worst = worst_case(stacked)

    assert len(worst) == 4
    assert worst["forget"].tolist() == [0.2, 0.5, 0.05, 0.6]


# ----------------------------------------------------------------------------------------------
# Oracle matching stop rule, student checks and the cost without an unlearning run


def test_matching_rule_needs_forget_close_to_oracle_accuracy():
    from undo_lib.distill import MatchingStopRule, RetainStopRule

    rule = MatchingStopRule(RetainStopRule(0.5, 0.05), teacher_forget=0.02, margin=0.05, relative=False)

    assert not rule.holds({"retain": 0.5, "forget": 0.5})  # the full model: retain fine, mul/div still known
    assert not rule.holds({"retain": 0.4, "forget": 0.02})  # forget matched, retain 0.1 below the oracle's
    assert rule.holds({"retain": 0.46, "forget": 0.06})  # 0.46 >= 0.45 and |0.06 - 0.02| <= 0.05


def test_matching_rule_relative_for_cross_entropy():
    from undo_lib.distill import MatchingStopRule, RelativeLossStopRule

    rule = MatchingStopRule(RelativeLossStopRule(4.0, 0.05), teacher_forget=9.0, margin=0.05, relative=True)

    # Korean CE must be within 5% of the oracle's 9.0 (8.55 to 9.45); English CE <= 4.2
    assert rule.holds({"retain": 4.2, "forget": 8.6})
    assert not rule.holds({"retain": 4.2, "forget": 8.5})
    assert not rule.holds({"retain": 4.3, "forget": 9.0})


def test_check_student_rejects_bad_values():
    from undo_lib.distill import check_student

    with pytest.raises(ValueError, match="student must be one of"):
        check_student("random", 0.5, "x")
    with pytest.raises(ValueError, match=r"alpha=1.5 is impossible"):
        check_student("undo", 1.5, "")
    with pytest.raises(ValueError, match="needs no student_dir"):
        check_student("undo", 0.5, "models/init")
    with pytest.raises(ValueError, match="needs a student_dir"):
        check_student("full", 0.0, "")
    check_student("random_init", 0.0, "models/init")


def test_cost_fraction_without_unlearning_run():
    from types import SimpleNamespace

    from undo_lib.distill import cost_fraction

    result = SimpleNamespace(flops=30.0, tokens=5)
    oracle = {"compute": {"flops": 120.0, "tokens": 20}}

    assert cost_fraction(result, None, oracle) == {"flops": 0.25, "tokens": 0.25, "distill_only_flops": 0.25}
    with_unlearning = cost_fraction(result, {"compute": {"flops": 30.0, "tokens": 5}}, oracle)
    assert with_unlearning["flops"] == 0.5
    assert with_unlearning["tokens"] == 0.5


def test_run_attack_reuses_initial_metrics(tiny_model, tokenizer):
    evaluations = itertools.count()

    def evaluate(model):
        return {"forget": float(next(evaluations)) / 10}

    rows, _, _ = run_attack(tiny_model, lm_loss, itertools.repeat(_batch(len(tokenizer))), _relearn_params(),
                            lr=1e-3, flops_per_token=2.0, evaluate=evaluate, initial_metrics={"forget": 0.9})

    assert [row["forget"] for row in rows] == [0.9, 0.0, 0.1]
    assert before_attack(rows) == {"forget": 0.9}


def test_before_attack_needs_step_zero():
    with pytest.raises(ValueError, match="step 2, not step 0"):
        before_attack([{"step": 2, "forget": 0.1}])
