"""Tests for SAM (undo_lib.sam and its use in undo_lib.train) on a quadratic loss worked out by hand.

The model is one parameter vector theta with loss 0.5 (theta - s)^T A (theta - s), so its gradient
is A (theta - s). The first AdamW step (betas 0.9/0.999, eps 1e-8, no weight decay) moves each
coordinate by -lr * g / (|g| + 1e-8), because bias correction makes m_hat = g and v_hat = g^2.
"""

import itertools
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from undo_lib import sam
from undo_lib.config import RMUParams, TrainParams
from undo_lib.methods import make_loss
from undo_lib.train import train

A = [[1.0, 2.0], [2.0, 5.0]]
THETA = [2.1, -1.0]
RHO = 0.1
LR = 0.01
TOKENS_PER_BATCH = 3


class Quadratic(torch.nn.Module):
    def __init__(self, theta=THETA):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta))


def quadratic_loss(model, batch):
    d = model.theta - batch["shift"][0]
    return 0.5 * d @ torch.tensor(A) @ d, {"theta_0": model.theta[0].item()}


def _batch(shift=(0.0, 0.0)) -> dict:
    return {"input_ids": torch.zeros(1, TOKENS_PER_BATCH, dtype=torch.long), "shift": torch.tensor([shift])}


def _params(**overrides) -> TrainParams:
    values = {"steps": 1, "lr": LR, "max_grad_norm": 0.0, "weight_decay": 0.0, "sam_rho": RHO}
    values.update(overrides)
    return TrainParams(**values)


# Hand formulas on plain lists


def _matvec(x):
    return [A[0][0] * x[0] + A[0][1] * x[1], A[1][0] * x[0] + A[1][1] * x[1]]


def _gradient(theta, shift=(0.0, 0.0)):
    return _matvec([theta[0] - shift[0], theta[1] - shift[1]])


def _norm(x):
    return math.sqrt(sum(v * v for v in x))


def _sam_gradient(theta, shifts):
    """Mean over micro-batches of A (theta + eps - s), with eps from the mean gradient at theta."""
    g = [sum(_gradient(theta, s)[i] for s in shifts) / len(shifts) for i in range(2)]
    perturbed = [theta[i] + RHO * g[i] / (_norm(g) + 1e-12) for i in range(2)]
    return [sum(_gradient(perturbed, s)[i] for s in shifts) / len(shifts) for i in range(2)]


def _adam_first_step(theta, g):
    return [theta[i] - LR * g[i] / (abs(g[i]) + 1e-8) for i in range(2)]


def _train_capturing_gradient(model, batches, params):
    captured = []

    def capture(optimizer, args, kwargs):
        captured.append(model.theta.grad.detach().clone())

    handle = register_optimizer_step_pre_hook(capture)
    try:
        result = train(model, quadratic_loss, batches, params, flops_per_token=1.0)
    finally:
        handle.remove()
    return result, captured[0]


# sam.ascend and sam.descend


def test_ascend_moves_along_gradient():
    first = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    second = torch.nn.Parameter(torch.tensor([-1.0]))
    untouched = torch.nn.Parameter(torch.tensor([5.0]))
    first.grad, second.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])

    saved, norm = sam.ascend([first, second, untouched], rho=0.5)

    # One global norm: ||(3, 0, 4)|| = 5, so eps = 0.5 * g / 5 = 0.1 * g.
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(first.detach(), torch.tensor([1.3, 2.0]))
    torch.testing.assert_close(second.detach(), torch.tensor([-0.6]))
    assert untouched.item() == 5.0
    assert first.grad is None, "ascend must clear the gradients at theta"
    assert second.grad is None, "ascend must clear the gradients at theta"
    assert saved[2] is None


def test_descend_restores_bitwise():
    torch.manual_seed(0)
    weights = torch.nn.Parameter(torch.randn(7) * 1e3)
    original = weights.detach().clone()
    weights.grad = torch.randn(7)

    saved, _ = sam.ascend([weights], rho=0.05)
    weights.grad = torch.ones(7)  # the gradient taken at theta + eps
    sam.descend([weights], saved)

    assert torch.equal(weights.detach(), original)
    assert torch.equal(weights.grad, torch.ones(7)), "descend must keep the gradient at theta + eps"


def test_ascend_zero_gradient_finite():
    weights = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    weights.grad = torch.zeros(2)

    sam.ascend([weights], rho=0.05)

    assert torch.equal(weights.detach(), torch.tensor([1.0, 2.0]))


# SAM in the training loop


def test_sam_step_hand_value():
    g_sam = _sam_gradient(THETA, [(0.0, 0.0)])
    assert g_sam[0] < 0 < _gradient(THETA)[0], "precondition: SAM flips the sign of the first coordinate"
    model = Quadratic()

    result, used = _train_capturing_gradient(model, iter([_batch()]), _params())

    torch.testing.assert_close(used, torch.tensor(g_sam), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.theta.detach(), torch.tensor(_adam_first_step(THETA, g_sam)),
                               rtol=1e-6, atol=1e-7)
    row = result.history[1]
    assert row["loss"] == pytest.approx(0.5 * (THETA[0] * 0.1 + THETA[1] * -0.8), rel=1e-6), \
        "the logged loss is the loss at theta"
    assert row["theta_0"] == pytest.approx(THETA[0]), "the logs are those of the pass at theta"
    assert row["grad_norm"] == pytest.approx(_norm(g_sam), rel=1e-5)


def test_sam_reuses_micro_batches():
    shifts = [(0.5, -0.5), (-1.0, 2.0)]
    model = Quadratic()

    # Exactly two micro-batches: a second pass that drew new ones would raise StopIteration.
    result, used = _train_capturing_gradient(model, iter([_batch(s) for s in shifts]), _params(grad_accum=2))

    torch.testing.assert_close(used, torch.tensor(_sam_gradient(THETA, shifts)), rtol=1e-5, atol=1e-7)
    assert result.tokens == 2 * TOKENS_PER_BATCH, "tokens count once per micro-batch"


def test_sam_off_plain_step(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("SAM ran with sam_rho = 0")

    monkeypatch.setattr(sam, "ascend", fail)
    model = Quadratic()

    _, used = _train_capturing_gradient(model, iter([_batch()]), _params(sam_rho=0.0))

    g = _gradient(THETA)
    torch.testing.assert_close(used, torch.tensor(g), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.theta.detach(), torch.tensor(_adam_first_step(THETA, g)), rtol=1e-6, atol=1e-7)


class Interrupted(Exception):
    """Stands in for a kill in the middle of training."""


def _interrupt_at_call(number: int):
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        if len(calls) == number:
            raise Interrupted(f"interrupted at loss call {number}")
        return quadratic_loss(model, batch)

    return loss_fn


def _sam_run(loss_fn, checkpoint_dir):
    model = Quadratic()
    shifts = [(0.1 * i, -0.2 * i) for i in range(8)]
    params = _params(steps=4, grad_accum=2, checkpoint_every=1, max_grad_norm=1.0, weight_decay=0.1)
    result = train(model, loss_fn, iter([_batch(s) for s in shifts]), params, flops_per_token=1.0,
                   checkpoint_dir=checkpoint_dir, checkpoint_key="sam")
    return result, model


@pytest.mark.parametrize("interrupted_call", [3, 7, 10], ids=lambda n: f"call-{n}")
def test_sam_resume_matches(tmp_path, interrupted_call):
    expected_result, expected_model = _sam_run(quadratic_loss, None)

    # Each step calls the loss 4 times: 2 micro-batches at theta, then the same 2 at theta + eps.
    with pytest.raises(Interrupted):
        _sam_run(_interrupt_at_call(interrupted_call), tmp_path / "ckpt")
    result, model = _sam_run(quadratic_loss, tmp_path / "ckpt")

    assert result.history == expected_result.history
    assert result.tokens == expected_result.tokens
    assert torch.equal(model.theta, expected_model.theta)


def test_sam_keeps_frozen_weights(tiny_model, tokenizer):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(tokenizer), (2, 8), generator=gen)
    batch = {part: {"input_ids": ids + i, "loss_mask": torch.ones_like(ids, dtype=torch.bool)}
             for i, part in enumerate(("forget", "retain"))}
    loss_fn = make_loss("RMU", tiny_model, RMUParams(layers=(0,), hidden_layer=1), seed=0)
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}

    train(tiny_model, loss_fn, itertools.repeat(batch), _params(steps=2, lr=1e-2, sam_rho=0.01), flops_per_token=1.0)

    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, before[name]) == (name != "model.layers.0.mlp.down_proj.weight"), name
