"""Tests for undo_lib.train: LR schedule, counters, evaluation cadence, stopping and divergence."""

import itertools
import math
import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from undo_lib.config import TrainParams
from undo_lib.losses import causal_ce, lm_loss
from undo_lib.model import build_model
from undo_lib.train import DivergenceError, lr_at, train

BATCH_SIZE = 2
SEQ_LEN = 16


def _fixed_batch(vocab: int, seed: int = 0, batch_size: int = BATCH_SIZE) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch_size, SEQ_LEN), generator=gen)
    return {"input_ids": ids, "loss_mask": torch.ones_like(ids, dtype=torch.bool)}


def _params(**overrides) -> TrainParams:
    values = {"steps": 5, "batch_size": BATCH_SIZE, "lr": 1e-2, "max_grad_norm": 1.0}
    values.update(overrides)
    return TrainParams(**values)


class CountingEvaluator:
    """Fake evaluate: returns the number of earlier calls as "retain" and records the model mode."""

    def __init__(self):
        self.calls = 0
        self.training_flags = []

    def __call__(self, model) -> dict:
        self.training_flags.append(model.training)
        value = float(self.calls)
        self.calls += 1
        return {"retain": value}


# lr_at


def test_lr_warmup_start():
    params = TrainParams(steps=20, lr=1e-3, min_lr=1e-4, warmup_steps=4)

    assert lr_at(0, params) == pytest.approx(1e-3 / 4)


def test_lr_warmup_end():
    params = TrainParams(steps=20, lr=1e-3, min_lr=1e-4, warmup_steps=4)

    assert lr_at(3, params) == pytest.approx(1e-3)
    assert lr_at(4, params) == pytest.approx(1e-3), "cosine decay should start at the peak LR"


def test_lr_cosine_midpoint():
    params = TrainParams(steps=24, lr=1e-3, min_lr=1e-4, warmup_steps=4)

    # Decay runs over steps - warmup = 20 steps, so step 14 is halfway: (lr + min_lr) / 2.
    assert lr_at(14, params) == pytest.approx((1e-3 + 1e-4) / 2)


def test_lr_cosine_end():
    params = TrainParams(steps=1000, lr=1e-3, min_lr=1e-4, warmup_steps=10)

    assert lr_at(999, params) == pytest.approx(1e-4, rel=1e-3)
    assert lr_at(1000, params) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(5000, params) == pytest.approx(1e-4, rel=1e-12), "LR after the schedule must stay at min_lr"


def test_lr_cosine_decreasing():
    params = TrainParams(steps=50, lr=1e-3, min_lr=1e-4, warmup_steps=5)

    values = [lr_at(step, params) for step in range(5, 51)]

    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_constant_without_min_lr():
    params = TrainParams(steps=10, lr=3e-3, min_lr=None, warmup_steps=0)

    assert [lr_at(step, params) for step in range(10)] == [pytest.approx(3e-3)] * 10


# train


def test_train_lowers_loss(tiny_model, tokenizer):
    batch = _fixed_batch(len(tokenizer))
    with torch.no_grad():
        before = lm_loss(tiny_model, batch)[0].item()

    result = train(tiny_model, lm_loss, itertools.repeat(batch), _params(steps=5), flops_per_token=1.0)

    with torch.no_grad():
        after = lm_loss(tiny_model, batch)[0].item()
    assert after < before - 0.1, f"loss went from {before} to {after}"
    assert result.steps == 5
    assert not tiny_model.training, "train should leave the model in eval mode"


def test_history_rows(tiny_model, tokenizer):
    batch = _fixed_batch(len(tokenizer))
    params = _params(steps=3, lr=1e-3, min_lr=1e-4, warmup_steps=1)

    result = train(tiny_model, lm_loss, itertools.repeat(batch), params, flops_per_token=1.0)

    assert [row["step"] for row in result.history] == [0, 1, 2, 3]
    assert [row["lr"] for row in result.history[1:]] == [lr_at(s, params) for s in range(3)]
    assert all(math.isfinite(row["loss"]) for row in result.history[1:])
    assert all(row["grad_norm"] > 0 for row in result.history[1:])


def test_tokens_and_flops_counted(tiny_model, tokenizer):
    batch = _fixed_batch(len(tokenizer))
    params = _params(steps=3, grad_accum=2)

    result = train(tiny_model, lm_loss, itertools.repeat(batch), params, flops_per_token=7.5)

    expected_tokens = 3 * 2 * BATCH_SIZE * SEQ_LEN
    assert result.tokens == expected_tokens
    assert result.flops == 7.5 * expected_tokens
    assert [row["tokens"] for row in result.history] == [0, 64, 128, 192]
    assert result.history[-1]["flops"] == 7.5 * expected_tokens


def test_evaluation_cadence(tiny_model, tokenizer):
    evaluator = CountingEvaluator()
    params = _params(steps=5, eval_every=2)

    result = train(tiny_model, lm_loss, itertools.repeat(_fixed_batch(len(tokenizer))), params,
                   flops_per_token=1.0, evaluate=evaluator)

    evaluated = [(row["step"], row["retain"]) for row in result.history if "retain" in row]
    assert evaluated == [(0, 0.0), (2, 1.0), (4, 2.0), (5, 3.0)]
    assert evaluator.training_flags == [False] * 4, "evaluate must see the model in eval mode"


def test_eval_steps_add_to_the_cadence(tiny_model, tokenizer):
    """eval_steps (the WMDP attack's 10, 25, 50, ...) are evaluated besides step 0, every eval_every and the end."""
    params = _params(steps=7, eval_every=0, eval_steps=(1, 3))
    result = train(tiny_model, lm_loss, itertools.repeat(_fixed_batch(len(tokenizer))), params,
                   flops_per_token=1.0, evaluate=CountingEvaluator())
    assert [row["step"] for row in result.history if "retain" in row] == [0, 1, 3, 7]


def test_stop_rule_ends_early(tiny_model, tokenizer):
    seen = []

    def stop_at_two(metrics):
        seen.append(metrics["retain"])
        return metrics["retain"] >= 2

    result = train(tiny_model, lm_loss, itertools.repeat(_fixed_batch(len(tokenizer))), _params(steps=10, eval_every=1),
                   flops_per_token=1.0, evaluate=CountingEvaluator(), should_stop=stop_at_two)

    assert result.steps == 2
    assert result.stopped_early
    assert seen == [1.0, 2.0], "the stop rule must not see the step-0 evaluation"
    assert result.history[-1]["step"] == 2
    assert result.tokens == 2 * BATCH_SIZE * SEQ_LEN


def test_stop_at_last_step_not_early(tiny_model, tokenizer):
    result = train(tiny_model, lm_loss, itertools.repeat(_fixed_batch(len(tokenizer))), _params(steps=2),
                   flops_per_token=1.0, evaluate=CountingEvaluator(), should_stop=lambda metrics: True)

    assert result.steps == 2
    assert not result.stopped_early


def test_nan_loss_diverges(tiny_model, tokenizer):
    calls = []

    def nan_on_third_call(model, batch):
        calls.append(1)
        loss, logs = lm_loss(model, batch)
        return (loss * math.nan if len(calls) == 3 else loss), logs

    with pytest.raises(DivergenceError) as excinfo:
        train(tiny_model, nan_on_third_call, itertools.repeat(_fixed_batch(len(tokenizer))),
              _params(steps=5, lr=1e-3), flops_per_token=1.0)

    message = str(excinfo.value)
    assert excinfo.value.step == 3
    assert excinfo.value.lr == 1e-3
    assert "step 3" in message
    assert "0.001" in message
    assert "loss" in message


def test_nan_gradient_diverges(tiny_model, tokenizer):
    def nan_gradient(model, batch):
        loss, logs = lm_loss(model, batch)
        # sqrt has an infinite slope at 0, and inf * 0 gives a NaN gradient while the loss stays finite.
        return loss + torch.sqrt(model.model.norm.weight.sum() * 0.0), logs

    with pytest.raises(DivergenceError, match="gradient norm") as excinfo:
        train(tiny_model, nan_gradient, itertools.repeat(_fixed_batch(len(tokenizer))),
              _params(steps=2), flops_per_token=1.0)

    assert excinfo.value.step == 1


def _nan_gradient_from_call(number: int):
    """Loss whose value stays finite but whose gradient is NaN from its ``number``-th call on."""
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        loss, logs = lm_loss(model, batch)
        if len(calls) >= number:
            # sqrt has an infinite slope at 0, and inf * 0 gives a NaN gradient while the loss stays finite.
            loss = loss + torch.sqrt(model.model.norm.weight.sum() * 0.0)
        assert torch.isfinite(loss)
        return loss, logs

    return loss_fn


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0], ids=["clipped", "unclipped"])
def test_nan_gradient_caught_at_its_step(tiny_model, tokenizer, max_grad_norm):
    params = _params(steps=5, grad_accum=2, lr=1e-3, max_grad_norm=max_grad_norm)

    with pytest.raises(DivergenceError) as excinfo:
        # Call 6 is the second micro-batch of step 3: the first one's gradient was finite.
        train(tiny_model, _nan_gradient_from_call(6), itertools.repeat(_fixed_batch(len(tokenizer))), params,
              flops_per_token=1.0)

    assert excinfo.value.step == 3
    assert "step 3" in str(excinfo.value)
    assert "gradient" in str(excinfo.value)
    assert [row["step"] for row in excinfo.value.history] == [0, 1, 2], "rows before the divergence are kept"
    assert all(torch.isfinite(p).all() for p in tiny_model.parameters()), "a NaN gradient reached the weights"


def _gradients_at_first_step(model, batches_iter, params) -> dict[str, torch.Tensor]:
    """Capture the gradients of the first optimizer step with a global pre-step hook."""
    captured = {}

    def capture(optimizer, args, kwargs):
        if not captured:
            for name, p in model.named_parameters():
                captured[name] = p.grad.detach().clone()

    handle = register_optimizer_step_pre_hook(capture)
    try:
        train(model, lm_loss, batches_iter, params, flops_per_token=1.0)
    finally:
        handle.remove()
    return captured


def test_grad_accum_matches_big_batch(tiny_model_params, tokenizer):
    vocab = len(tokenizer)
    first, second = _fixed_batch(vocab, seed=1), _fixed_batch(vocab, seed=2)
    combined = {key: torch.cat([first[key], second[key]]) for key in first}

    accumulated = _gradients_at_first_step(
        build_model(tiny_model_params, vocab, seed=0), iter([first, second]),
        _params(steps=1, grad_accum=2, max_grad_norm=0.0))
    big_batch = _gradients_at_first_step(
        build_model(tiny_model_params, vocab, seed=0), iter([combined]),
        _params(steps=1, batch_size=2 * BATCH_SIZE, max_grad_norm=0.0))

    assert accumulated.keys() == big_batch.keys()
    for name in accumulated:
        torch.testing.assert_close(accumulated[name], big_batch[name], rtol=1e-4, atol=1e-7, msg=name)


def test_gradient_clipping_applied(tiny_model, tokenizer):
    grads = _gradients_at_first_step(tiny_model, itertools.repeat(_fixed_batch(len(tokenizer))),
                                     _params(steps=1, max_grad_norm=0.01))

    total_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()
    assert total_norm == pytest.approx(0.01, rel=1e-4)


def test_frozen_parameters_unchanged(tiny_model, tokenizer):
    embedding = tiny_model.model.embed_tokens.weight
    embedding.requires_grad_(False)
    before = embedding.detach().clone()

    train(tiny_model, lm_loss, itertools.repeat(_fixed_batch(len(tokenizer))), _params(steps=2), flops_per_token=1.0)

    assert torch.equal(embedding, before)


def test_same_seed_deterministic(tiny_model_params, tokenizer):
    def run() -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(tiny_model_params, len(tokenizer), seed=0)
        stream = (_fixed_batch(len(tokenizer), seed=s) for s in itertools.count())
        train(model, lm_loss, stream, _params(steps=3), flops_per_token=1.0)
        return model

    first, second = run(), run()

    for (name, p), q in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(p, q), f"{name} differs between two identical runs"


def test_loss_logs_averaged(tiny_model, tokenizer):
    def logged_loss(model, batch):
        loss, _ = lm_loss(model, batch)
        return loss, {"ce": loss.item(), "constant": 4.0}

    batch = _fixed_batch(len(tokenizer))
    result = train(tiny_model, logged_loss, itertools.repeat(batch), _params(steps=1, grad_accum=2, lr=1e-9),
                   flops_per_token=1.0)

    row = result.history[1]
    assert row["constant"] == pytest.approx(4.0), "logs must be averaged over micro-batches, not summed"
    assert row["ce"] == pytest.approx(row["loss"])
    with torch.no_grad():
        expected = causal_ce(tiny_model(input_ids=batch["input_ids"]).logits, batch["input_ids"], batch["loss_mask"])
    assert row["loss"] == pytest.approx(expected.item(), rel=1e-3)


def test_initial_metrics_replace_step0_eval(tiny_model, tokenizer):
    evaluator = CountingEvaluator()
    batch = _fixed_batch(len(tokenizer))
    initial = {"retain": 0.25, "forget": 0.75}

    result = train(tiny_model, lm_loss, itertools.repeat(batch), _params(steps=2), 1.0, evaluate=evaluator,
                   initial_metrics=initial)

    assert evaluator.calls == 1  # the end of training only
    assert result.history[0]["retain"] == 0.25
    assert result.history[0]["forget"] == 0.75


class _PrecisionProbe:
    """Loss wrapper that records whether each forward ran under CPU bfloat16 autocast and with checkpointing."""

    def __init__(self):
        self.autocast, self.checkpointing = [], []

    def __call__(self, model, batch):
        self.autocast.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        self.checkpointing.append(model.is_activation_checkpointing)
        return lm_loss(model, batch)


def test_bf16_runs_forward_under_autocast(tiny_model, tokenizer):
    probe = _PrecisionProbe()
    batch = _fixed_batch(len(tokenizer))

    train(tiny_model, probe, itertools.repeat(batch), _params(steps=2, precision="bf16"), 1.0)

    assert probe.autocast == [True, True]
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())


def test_fp32_runs_without_autocast(tiny_model, tokenizer):
    probe = _PrecisionProbe()

    train(tiny_model, probe, itertools.repeat(_fixed_batch(len(tokenizer))), _params(steps=2), 1.0)

    assert probe.autocast == [False, False]


def test_bf16_close_to_fp32(tiny_model_params, tokenizer):
    """bf16 autocast keeps float32 weights, so a few steps land near the float32 run but not on it."""
    batch = _fixed_batch(len(tokenizer))
    weights = {}
    for precision in ("fp32", "bf16"):
        model = build_model(tiny_model_params, len(tokenizer), seed=0)
        train(model, lm_loss, itertools.repeat(batch), _params(steps=3, lr=1e-3, precision=precision), 1.0)
        weights[precision] = torch.cat([p.detach().flatten() for p in model.parameters()])

    difference = (weights["fp32"] - weights["bf16"]).abs().max().item()

    assert 0 < difference < 1e-2


def test_gradient_checkpointing_same_weights(tiny_model_params, tokenizer):
    """Recomputing activations changes memory, not the arithmetic: CPU weights match bitwise."""
    batch = _fixed_batch(len(tokenizer))
    weights, probes = {}, {}
    for checkpointing in (False, True):
        model = build_model(tiny_model_params, len(tokenizer), seed=0)
        probes[checkpointing] = _PrecisionProbe()
        train(model, probes[checkpointing], itertools.repeat(batch),
              _params(steps=3, lr=1e-3, gradient_checkpointing=checkpointing), 1.0)
        weights[checkpointing] = [p.detach().clone() for p in model.parameters()]
        assert not model.is_activation_checkpointing  # switched off again after training

    assert probes[True].checkpointing == [True, True, True]
    assert all(torch.equal(a, b) for a, b in zip(weights[False], weights[True]))


def test_gradient_checkpointing_no_deprecation_warning(tiny_model, tokenizer):
    """transformers 5 deprecates the gradient_checkpointing_* methods, so the loop calls activation_checkpointing_*."""
    batch = _fixed_batch(len(tokenizer))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_model, lm_loss, itertools.repeat(batch), _params(steps=1, gradient_checkpointing=True), 1.0)

    deprecations = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not [m for m in deprecations if "checkpointing" in m], deprecations
