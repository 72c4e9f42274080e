"""Tests for undo_lib.wmdp_losses: MaxEnt-WMDP and RMU-WMDP.

Expected values are worked out in closed form on a bigram model with two tokens, or computed in the
test from a plain forward pass of the tiny Gemma2 with log-softmax, KL sums and MSE written out by
hand. The reference logits and hidden states come from a second model built with the same seed, not
from the loss's own frozen copy.
"""

import dataclasses
import itertools
import logging
import math
from types import SimpleNamespace

import pytest
import torch

from undo_lib.config import TrainParams
from undo_lib.methods.repnoise import forward_with_mlp_outputs, repnoise_loss
from undo_lib.methods.rmu import control_vector
from undo_lib.model import build_model
from undo_lib.train import train
from undo_lib.wmdp_losses import (
    WMDP_METHODS,
    MaxEntWMDPParams,
    RMUWMDPParams,
    make_maxent_wmdp_loss,
    maxent_wmdp_loss,
    make_rmu_wmdp_loss,
    make_wmdp_loss,
)

BATCH, SEQ = 2, 8
# The untrained tiny Gemma2 is close to uniform, so its KL terms are below 1e-2. In float32 they
# carry an absolute rounding error of a few 1e-7 (log V - mean log p cancels), so they are compared
# with an absolute tolerance against the float64 hand values.
FLOAT32_KL_TOLERANCE = 1e-6


def _batch(vocab: int, seed: int, mask_every: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (BATCH, SEQ), generator=gen)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, ::mask_every] = True
    return {"input_ids": ids, "loss_mask": mask}


def _pair(vocab: int, forget_mask_every: int = 1, retain_mask_every: int = 1) -> dict:
    return {"forget": _batch(vocab, seed=1, mask_every=forget_mask_every),
            "retain": _batch(vocab, seed=2, mask_every=retain_mask_every)}


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log p_v = x_v - max - log sum_w exp(x_w - max), in float64 along the last dimension."""
    shifted = logits.double() - logits.double().max(dim=-1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def _counted_positions(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Positions (b, t) whose next-token target mask[b, t + 1] is set."""
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1] - 1) if mask[b, t + 1]]


def _hand_kl_uniform(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over counted positions of sum_v (1/V)(log(1/V) - log p_v)."""
    log_p = _log_softmax(logits)
    vocab = logits.shape[-1]
    terms = [sum((1 / vocab) * (math.log(1 / vocab) - lp) for lp in log_p[b, t].tolist())
             for b, t in _counted_positions(mask)]
    return sum(terms) / len(terms)


def _hand_forward_kl(reference_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over counted positions of sum_v p_ref(v)(log p_ref(v) - log p(v))."""
    log_ref, log_p = _log_softmax(reference_logits), _log_softmax(logits)
    terms = []
    for b, t in _counted_positions(mask):
        pairs = zip(log_ref[b, t].tolist(), log_p[b, t].tolist())
        terms.append(sum(math.exp(lr) * (lr - lp) for lr, lp in pairs))
    return sum(terms) / len(terms)


def _hand_ce(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over counted positions of -log p(ids[b, t + 1])."""
    log_p = _log_softmax(logits)
    terms = [-log_p[b, t, ids[b, t + 1]].item() for b, t in _counted_positions(mask)]
    return sum(terms) / len(terms)


def _hand_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum of squared differences over the positions whose mask is set (no shift) and every hidden unit,
    divided by the number of terms."""
    target = target.double().expand_as(hidden)
    total, count = 0.0, 0
    for b in range(hidden.shape[0]):
        for t in range(hidden.shape[1]):
            if not mask[b, t]:
                continue
            total += ((hidden[b, t].double() - target[b, t]) ** 2).sum().item()
            count += hidden.shape[-1]
    return total / count


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


@torch.no_grad()
def _hidden(model, ids: torch.Tensor, layer: int) -> torch.Tensor:
    return model(input_ids=ids, output_hidden_states=True).hidden_states[layer]


def _perturb(model, layer: int = 0) -> None:
    """Move one trained weight away from the frozen reference copy."""
    with torch.no_grad():
        model.model.layers[layer].mlp.down_proj.weight.add_(0.05)


def _parameters_snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class BigramLM(torch.nn.Module):
    """A causal LM over two tokens whose logits at a position depend only on that position's token."""

    def __init__(self, row: list[float]):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor([row, row]))

    def forward(self, input_ids: torch.Tensor, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


def _bigram_pair(retain_mask: list[bool] | None = None) -> dict:
    retain_mask = retain_mask or [True] * 4
    return {"forget": {"input_ids": torch.tensor([[0, 1, 1, 0]]), "loss_mask": torch.ones(1, 4, dtype=torch.bool)},
            "retain": {"input_ids": torch.tensor([[1, 0, 0, 1]]), "loss_mask": torch.tensor([retain_mask])}}


@pytest.fixture
def three_layer_params(tiny_model_params):
    """The tiny Gemma2 with 3 layers, so hidden_states[2] lies after two trainable down_proj layers."""
    return dataclasses.replace(tiny_model_params, num_hidden_layers=3)


# ----------------------------------------------------------------------------------------------
# MaxEnt-WMDP: closed form on the bigram model


def _bigram_after_factory(params: MaxEntWMDPParams) -> tuple[BigramLM, object]:
    """Build the loss while p_ref = (1/3, 2/3), then set the model to p = (1/4, 3/4) at every position."""
    model = BigramLM([0.0, math.log(2.0)])
    loss_fn = make_maxent_wmdp_loss(model, params, seed=0)
    with torch.no_grad():
        model.table.copy_(torch.tensor([[0.0, math.log(3.0)]] * 2))
    return model, loss_fn


def test_maxent_wmdp_bigram_kl_closed_form():
    model, loss_fn = _bigram_after_factory(MaxEntWMDPParams(alpha=0.3))

    loss, logs = loss_fn(model, _bigram_pair())

    # KL(U || p) = 1/2 log((1/2)/(1/4)) + 1/2 log((1/2)/(3/4)) = 1/2 log(4/3)
    kl_uniform = 0.5 * math.log(4 / 3)
    # KL(p_ref || p) = 1/3 log((1/3)/(1/4)) + 2/3 log((2/3)/(3/4)) = 1/3 log(4/3) + 2/3 log(8/9)
    retain_kl = math.log(4 / 3) / 3 + 2 * math.log(8 / 9) / 3
    assert logs["forget_kl_uniform"] == pytest.approx(kl_uniform, rel=1e-6)
    assert logs["retain_kl"] == pytest.approx(retain_kl, rel=1e-5)
    assert loss.item() == pytest.approx(0.7 * kl_uniform + 0.3 * retain_kl, rel=1e-6)


def test_maxent_wmdp_bigram_ce_closed_form():
    model, loss_fn = _bigram_after_factory(MaxEntWMDPParams(alpha=0.2, use_retain_kl=False))

    # Retain ids 1, 0, 0, 1: with target 2 masked out, the counted targets are 0 (p = 1/4) and 1 (p = 3/4).
    loss, logs = loss_fn(model, _bigram_pair(retain_mask=[True, True, False, True]))

    retain_ce = (math.log(4) + math.log(4 / 3)) / 2
    assert logs["retain_ce"] == pytest.approx(retain_ce, rel=1e-6)
    assert "retain_kl" not in logs
    assert loss.item() == pytest.approx(0.8 * 0.5 * math.log(4 / 3) + 0.2 * retain_ce, rel=1e-6)


def test_maxent_wmdp_ce_builds_no_reference():
    loss_fn = make_maxent_wmdp_loss(BigramLM([0.0, 0.0]), MaxEntWMDPParams(use_retain_kl=False), seed=0)

    assert loss_fn.reference is None


def test_maxent_wmdp_bigram_kl_zero_at_reference():
    model = BigramLM([0.0, math.log(2.0)])
    loss_fn = make_maxent_wmdp_loss(model, MaxEntWMDPParams(alpha=0.5), seed=0)

    loss, logs = loss_fn(model, _bigram_pair())

    # p = (1/3, 2/3): KL(U || p) = 1/2 log((1/2)/(1/3)) + 1/2 log((1/2)/(2/3)) = 1/2 log(9/8)
    assert logs["retain_kl"] == 0.0
    assert loss.item() == pytest.approx(0.5 * 0.5 * math.log(9 / 8), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# MaxEnt-WMDP on the tiny Gemma2


def test_maxent_wmdp_kl_hand_value(tiny_model_params, tokenizer):
    vocab = len(tokenizer)
    model = build_model(tiny_model_params, vocab, seed=0)
    original = build_model(tiny_model_params, vocab, seed=0)
    loss_fn = make_maxent_wmdp_loss(model, MaxEntWMDPParams(alpha=0.3), seed=0)
    _perturb(model)
    batch = _pair(vocab, forget_mask_every=2, retain_mask_every=3)
    forget, retain = batch["forget"], batch["retain"]

    loss, logs = loss_fn(model, batch)

    kl_uniform = _hand_kl_uniform(_logits(model, forget["input_ids"]), forget["loss_mask"])
    retain_kl = _hand_forward_kl(_logits(original, retain["input_ids"]), _logits(model, retain["input_ids"]),
                                 retain["loss_mask"])
    assert retain_kl > 1e-6, "precondition: the model differs from its reference"
    assert logs["forget_kl_uniform"] == pytest.approx(kl_uniform, abs=FLOAT32_KL_TOLERANCE)
    assert logs["retain_kl"] == pytest.approx(retain_kl, abs=FLOAT32_KL_TOLERANCE)
    assert loss.item() == pytest.approx(0.7 * kl_uniform + 0.3 * retain_kl, abs=FLOAT32_KL_TOLERANCE)


def test_maxent_wmdp_ce_hand_value(tiny_model, tokenizer):
    batch = _pair(len(tokenizer), retain_mask_every=3)
    forget, retain = batch["forget"], batch["retain"]
    loss_fn = make_maxent_wmdp_loss(tiny_model, MaxEntWMDPParams(alpha=0.1, use_retain_kl=False), seed=0)

    loss, logs = loss_fn(tiny_model, batch)

    kl_uniform = _hand_kl_uniform(_logits(tiny_model, forget["input_ids"]), forget["loss_mask"])
    retain_ce = _hand_ce(_logits(tiny_model, retain["input_ids"]), retain["input_ids"], retain["loss_mask"])
    assert logs["retain_ce"] == pytest.approx(retain_ce, rel=1e-5)
    assert loss.item() == pytest.approx(0.9 * kl_uniform + 0.1 * retain_ce, rel=1e-5)


def test_maxent_wmdp_kl_zero_at_reference(tiny_model, tokenizer):
    batch = _pair(len(tokenizer))
    loss_fn = make_maxent_wmdp_loss(tiny_model, MaxEntWMDPParams(alpha=0.4), seed=0)

    loss, logs = loss_fn(tiny_model, batch)

    kl_uniform = _hand_kl_uniform(_logits(tiny_model, batch["forget"]["input_ids"]), batch["forget"]["loss_mask"])
    assert logs["retain_kl"] == pytest.approx(0.0, abs=1e-7)
    assert loss.item() == pytest.approx(0.6 * kl_uniform, abs=FLOAT32_KL_TOLERANCE)


def _repnoise_pair(vocab: int) -> dict:
    batch = _pair(vocab, retain_mask_every=2)
    batch["retain"]["input_ids"][:, :3] = batch["forget"]["input_ids"][:, :3]  # equal tokens leave RepNoise's mask
    return batch


def test_maxent_wmdp_repnoise_value(tiny_model_params, tokenizer):
    vocab = len(tokenizer)
    model = build_model(tiny_model_params, vocab, seed=0)
    original = build_model(tiny_model_params, vocab, seed=0)
    params = MaxEntWMDPParams(alpha=0.3, repnoise_alpha=1.0, repnoise_beta=0.5)
    loss_fn = make_maxent_wmdp_loss(model, params, seed=5)
    _perturb(model)
    batch = _repnoise_pair(vocab)
    forget, retain = batch["forget"], batch["retain"]

    loss, logs = loss_fn(model, batch)

    # The RepNoise term itself is golden-tested with undo_lib.methods; here it is evaluated on its own.
    with torch.no_grad():
        forget_output, mlp_outputs = forward_with_mlp_outputs(model, forget["input_ids"])
        repnoise, _ = repnoise_loss(model, forget_output, mlp_outputs, _logits(model, retain["input_ids"]), batch,
                                    alpha=1.0, beta=0.5, seed=5)
    kl_uniform = _hand_kl_uniform(_logits(model, forget["input_ids"]), forget["loss_mask"])
    retain_kl = _hand_forward_kl(_logits(original, retain["input_ids"]), _logits(model, retain["input_ids"]),
                                 retain["loss_mask"])
    expected = 0.7 * (kl_uniform + repnoise.item()) + 0.3 * retain_kl
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert "repnoise_mmd" in logs
    assert "repnoise_lens_ce" in logs
    assert "repnoise_retain_ce" in logs


def test_maxent_wmdp_reference_outside_model(tiny_model):
    loss_fn = make_maxent_wmdp_loss(tiny_model, MaxEntWMDPParams(), seed=0)
    model_tensors = {p.data_ptr() for p in tiny_model.parameters()}

    for name, p in loss_fn.reference.named_parameters():
        assert p.data_ptr() not in model_tensors, f"{name} shares storage with the trained model"
        assert not p.requires_grad, name
    assert not loss_fn.reference.training


def test_maxent_wmdp_missing_reference(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="needs the frozen reference model, which is missing"):
        maxent_wmdp_loss(tiny_model, _pair(len(tokenizer)), MaxEntWMDPParams(), reference=None)


def test_wmdp_reference_on_other_device(tiny_model, tokenizer):
    loss_fn = make_maxent_wmdp_loss(tiny_model, MaxEntWMDPParams(), seed=0)
    loss_fn.reference.to("meta")

    with pytest.raises(ValueError, match="reference model is on meta but the model is on cpu"):
        loss_fn(tiny_model, _pair(len(tokenizer)))


# ----------------------------------------------------------------------------------------------
# RMU-WMDP


def _rmu_params(**overrides) -> RMUWMDPParams:
    values = {"alpha": 0.25, "layers": (0, 1), "hidden_layer": 2, "steering_coefficient": 6.5}
    values.update(overrides)
    return RMUWMDPParams(**values)


def test_rmu_wmdp_hand_value(three_layer_params, tokenizer):
    vocab = len(tokenizer)
    model = build_model(three_layer_params, vocab, seed=0)
    original = build_model(three_layer_params, vocab, seed=0)
    loss_fn = make_rmu_wmdp_loss(model, _rmu_params(), seed=7)
    _perturb(model)
    batch = _pair(vocab, forget_mask_every=2, retain_mask_every=3)
    forget, retain = batch["forget"], batch["retain"]

    loss, logs = loss_fn(model, batch)

    gaussian = torch.randn(three_layer_params.hidden_size, generator=torch.Generator().manual_seed(7)).double()
    target = 6.5 * gaussian / gaussian.pow(2).sum().sqrt()
    forget_mse = _hand_mse(_hidden(model, forget["input_ids"], 2), target, forget["loss_mask"])
    retain_mse = _hand_mse(_hidden(model, retain["input_ids"], 2), _hidden(original, retain["input_ids"], 2),
                           retain["loss_mask"])
    assert retain_mse > 1e-6, "precondition: the model differs from its reference"
    assert logs["forget_mse"] == pytest.approx(forget_mse, rel=1e-5)
    assert logs["retain_mse"] == pytest.approx(retain_mse, rel=1e-4)
    assert loss.item() == pytest.approx(0.75 * forget_mse + 0.25 * retain_mse, rel=1e-5)


def test_rmu_wmdp_retain_zero_at_reference(three_layer_params, tokenizer):
    model = build_model(three_layer_params, len(tokenizer), seed=0)
    loss_fn = make_rmu_wmdp_loss(model, _rmu_params(), seed=0)

    _, logs = loss_fn(model, _pair(len(tokenizer)))

    assert logs["retain_mse"] == 0.0


def test_rmu_wmdp_trainable_down_proj(three_layer_params, tokenizer):
    model = build_model(three_layer_params, len(tokenizer), seed=0)

    make_rmu_wmdp_loss(model, _rmu_params(layers=(0, 1)), seed=0)

    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]


def test_rmu_wmdp_gradients_only_down_proj(three_layer_params, tokenizer):
    model = build_model(three_layer_params, len(tokenizer), seed=0)
    loss_fn = make_rmu_wmdp_loss(model, _rmu_params(layers=(0, 1)), seed=0)
    _perturb(model)

    loss_fn(model, _pair(len(tokenizer)))[0].backward()

    with_grad = [name for name, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert p.grad.abs().max().item() > 0, f"{name} got a zero gradient"
    assert all(p.grad is None for p in loss_fn.reference.parameters())


def test_rmu_wmdp_layer_after_state_warns(three_layer_params, tokenizer, caplog):
    model = build_model(three_layer_params, len(tokenizer), seed=0)
    with caplog.at_level(logging.WARNING, logger="undo_lib.wmdp_losses"):
        loss_fn = make_rmu_wmdp_loss(model, _rmu_params(layers=(1, 2)), seed=0)

    loss_fn(model, _pair(len(tokenizer)))[0].backward()

    assert "layers [2] come at or after hidden_states[2]" in caplog.text
    assert model.model.layers[2].mlp.down_proj.weight.grad is None
    assert model.model.layers[1].mlp.down_proj.weight.grad is not None


@pytest.mark.parametrize("overrides,message", [
    ({"hidden_layer": 3}, r"hidden_layer=3 is the model's final-norm output"),
    ({"layers": (0, 5)}, r"layers \[5\] are out of range"),
    ({"layers": (2,)}, r"no layer in \[2\] comes before hidden_states\[2\]"),
])
def test_rmu_wmdp_invalid_layers(three_layer_params, tokenizer, overrides, message):
    model = build_model(three_layer_params, len(tokenizer), seed=0)

    with pytest.raises(ValueError, match=message):
        make_rmu_wmdp_loss(model, _rmu_params(**overrides), seed=0)


@pytest.mark.parametrize("overrides,message", [
    ({"hidden_layer": 0}, "invalid hidden_layer 0"),
    ({"layers": ()}, "layers is empty"),
])
def test_rmu_wmdp_params_invalid(overrides, message):
    with pytest.raises(ValueError, match=message):
        _rmu_params(**overrides)


def test_rmu_wmdp_paper_defaults():
    params = RMUWMDPParams()

    assert params.layers == (10, 11, 12, 13, 14, 15)
    assert params.hidden_layer == 15
    assert params.steering_coefficient == 80.0


# ----------------------------------------------------------------------------------------------
# α validation


@pytest.mark.parametrize("params_type", [MaxEntWMDPParams, RMUWMDPParams])
@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval(params_type, alpha):
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        params_type(alpha=alpha)


@pytest.mark.parametrize("params_type", [MaxEntWMDPParams, RMUWMDPParams])
def test_alpha_inside_unit_interval(params_type):
    assert params_type(alpha=0.01).alpha == 0.01
    assert params_type(alpha=0.99).alpha == 0.99


# ----------------------------------------------------------------------------------------------
# Training: the frozen reference and SAM


def _wmdp_case(method: str, model_params, vocab: int):
    """Return (model, params) for a WMDP method on a 3-layer tiny Gemma2."""
    model = build_model(model_params, vocab, seed=0)
    if method == "MaxEnt":
        return model, MaxEntWMDPParams(alpha=0.3)
    return model, _rmu_params(layers=(0, 1))


@pytest.mark.parametrize("method", ["MaxEnt", "RMU"])
@pytest.mark.parametrize("sam_rho", [0.0, 0.01])
def test_reference_frozen_after_training(three_layer_params, tokenizer, method, sam_rho):
    vocab = len(tokenizer)
    model, params = _wmdp_case(method, three_layer_params, vocab)
    before = _parameters_snapshot(model)
    loss_fn = make_wmdp_loss(method, model, params, seed=0)

    result = train(model, loss_fn, itertools.repeat(_pair(vocab)),
                   TrainParams(steps=2, lr=1e-2, sam_rho=sam_rho), flops_per_token=1.0)

    assert all(math.isfinite(row["loss"]) for row in result.history[1:])
    for name, p in loss_fn.reference.named_parameters():
        assert torch.equal(p, before[name]), f"reference weight {name} changed"
        assert not p.requires_grad, name
        assert p.grad is None, name
    assert not loss_fn.reference.training
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed, "precondition: training changed the model"


def test_rmu_wmdp_training_changes_listed(three_layer_params, tokenizer):
    vocab = len(tokenizer)
    model, params = _wmdp_case("RMU", three_layer_params, vocab)
    before = _parameters_snapshot(model)
    loss_fn = make_wmdp_loss("RMU", model, params, seed=0)

    train(model, loss_fn, itertools.repeat(_pair(vocab)), TrainParams(steps=2, lr=1e-2), flops_per_token=1.0)

    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]


@pytest.mark.parametrize("method", ["MaxEnt", "RMU"])
def test_wmdp_loss_trains_bf16(three_layer_params, tokenizer, method):
    vocab = len(tokenizer)
    model, params = _wmdp_case(method, three_layer_params, vocab)
    loss_fn = make_wmdp_loss(method, model, params, seed=0)

    result = train(model, loss_fn, itertools.repeat(_pair(vocab)),
                   TrainParams(steps=2, lr=1e-3, precision="bf16"), flops_per_token=1.0)

    assert all(math.isfinite(row["loss"]) for row in result.history[1:])


# ----------------------------------------------------------------------------------------------
# Gradients: both terms backpropagate with their weights


def _vectorised_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """x - logsumexp(x) written out, differentiable, in the logits' dtype."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values.detach()
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def _differentiable_maxent_loss(model, original, batch: dict, alpha: float) -> torch.Tensor:
    """(1 - alpha) * KL(U || p)(forget) + alpha * KL(p_ref || p)(retain), with hand-written means."""
    forget, retain = batch["forget"], batch["retain"]
    log_p = _vectorised_log_softmax(model(input_ids=forget["input_ids"]).logits[:, :-1])
    keep = forget["loss_mask"][:, 1:].float()
    vocab = log_p.shape[-1]
    kl_uniform = ((-math.log(vocab) - log_p.mean(dim=-1)) * keep).sum() / keep.sum()

    log_p = _vectorised_log_softmax(model(input_ids=retain["input_ids"]).logits[:, :-1])
    with torch.no_grad():
        log_ref = _vectorised_log_softmax(original(input_ids=retain["input_ids"]).logits[:, :-1])
    keep = retain["loss_mask"][:, 1:].float()
    retain_kl = ((log_ref.exp() * (log_ref - log_p)).sum(dim=-1) * keep).sum() / keep.sum()
    return (1 - alpha) * kl_uniform + alpha * retain_kl


def _differentiable_rmu_loss(model, original, batch: dict, alpha: float, target: torch.Tensor) -> torch.Tensor:
    """(1 - alpha) * MSE(h_forget, target) + alpha * MSE(h_retain, h_ref), averaged over kept positions and units."""
    forget, retain = batch["forget"], batch["retain"]
    hidden = model(input_ids=forget["input_ids"], output_hidden_states=True).hidden_states[2]
    keep = forget["loss_mask"][..., None].float()
    forget_mse = ((hidden - target) ** 2 * keep).sum() / (keep.sum() * hidden.shape[-1])

    hidden = model(input_ids=retain["input_ids"], output_hidden_states=True).hidden_states[2]
    reference_hidden = _hidden(original, retain["input_ids"], 2)
    keep = retain["loss_mask"][..., None].float()
    retain_mse = ((hidden - reference_hidden) ** 2 * keep).sum() / (keep.sum() * hidden.shape[-1])
    return (1 - alpha) * forget_mse + alpha * retain_mse


@pytest.mark.parametrize("method", ["MaxEnt", "RMU"])
def test_wmdp_gradient_matches_hand_loss(three_layer_params, tokenizer, method):
    vocab = len(tokenizer)
    model, params = _wmdp_case(method, three_layer_params, vocab)
    hand_model, _ = _wmdp_case(method, three_layer_params, vocab)
    original, _ = _wmdp_case(method, three_layer_params, vocab)
    loss_fn = make_wmdp_loss(method, model, params, seed=3)
    _perturb(model)
    _perturb(hand_model)
    batch = _pair(vocab, forget_mask_every=2, retain_mask_every=3)

    loss_fn(model, batch)[0].backward()
    if method == "MaxEnt":
        hand_loss = _differentiable_maxent_loss(hand_model, original, batch, params.alpha)
    else:
        u = control_vector(three_layer_params.hidden_size, "gaussian", seed=3)
        hand_loss = _differentiable_rmu_loss(hand_model, original, batch, params.alpha,
                                             params.steering_coefficient * u)
    hand_loss.backward()

    compared = 0
    for (name, p), q in zip(model.named_parameters(), hand_model.parameters()):
        if p.grad is None:
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-7, msg=name)
        compared += 1
    assert compared == (len(list(model.parameters())) if method == "MaxEnt" else 2)


# ----------------------------------------------------------------------------------------------
# Registry


def test_wmdp_registry_names():
    assert sorted(WMDP_METHODS) == ["MaxEnt", "RMU"]


def test_make_wmdp_loss_unknown_method(tiny_model):
    with pytest.raises(KeyError, match="'GradDiff'"):
        make_wmdp_loss("GradDiff", tiny_model, MaxEntWMDPParams(), seed=0)


def test_make_wmdp_loss_wrong_params(tiny_model):
    with pytest.raises(TypeError, match="WMDP RMU takes RMUWMDPParams, got MaxEntWMDPParams"):
        make_wmdp_loss("RMU", tiny_model, MaxEntWMDPParams(), seed=0)
