"""Tests for undo_lib.noise.apply_undo_noise: theta <- (1 - alpha) theta + alpha beta Xavier."""

import copy
import math

import pytest
import torch

from undo_lib.noise import apply_undo_noise


def _state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _xavier_bound(weight: torch.Tensor) -> float:
    fan_out, fan_in = weight.shape
    return math.sqrt(6.0 / (fan_in + fan_out))


def _randomize_norms(model) -> None:
    """Give RMSNorm gains nonzero values, because transformers initialises them to 0."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen))


def test_alpha_zero_unchanged(tiny_model):
    _randomize_norms(tiny_model)
    before = _state(tiny_model)

    apply_undo_noise(tiny_model, alpha=0.0, beta=1.0, seed=0)

    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, before[name]), f"{name} changed with alpha=0"


def test_beta_zero_only_shrinks(tiny_model):
    _randomize_norms(tiny_model)
    before = _state(tiny_model)

    apply_undo_noise(tiny_model, alpha=0.3, beta=0.0, seed=0)

    for name, p in tiny_model.named_parameters():
        assert torch.equal(p.detach(), before[name] * (1 - 0.3)), f"{name} is not exactly 0.7 * theta"


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_vectors_only_shrunk(tiny_model, beta):
    _randomize_norms(tiny_model)
    before = _state(tiny_model)

    apply_undo_noise(tiny_model, alpha=0.4, beta=beta, seed=0)

    vectors = [(name, p) for name, p in tiny_model.named_parameters() if p.ndim == 1]
    assert vectors, "the tiny model should have 1-D RMSNorm gains"
    for name, p in vectors:
        assert torch.equal(p.detach(), before[name] * (1 - 0.4)), f"{name} is not exactly 0.6 * theta"


def test_matrix_noise_within_bound(tiny_model):
    alpha, beta = 0.6, 0.5
    before = _state(tiny_model)

    apply_undo_noise(tiny_model, alpha=alpha, beta=beta, seed=3)

    matrices = [(name, p) for name, p in tiny_model.named_parameters() if p.ndim == 2]
    assert len(matrices) >= 7, "expected embedding plus attention and MLP projections"
    for name, p in matrices:
        bound = alpha * beta * _xavier_bound(p)
        deviation = (p.detach() - (1 - alpha) * before[name]).abs().max().item()
        assert deviation <= bound + 1e-6, f"{name}: deviation {deviation} exceeds {bound}"
        assert deviation > 0.9 * bound, f"{name}: deviation {deviation} far below {bound}; noise missing?"


def test_same_seed_identical(tiny_model):
    other = copy.deepcopy(tiny_model)

    apply_undo_noise(tiny_model, alpha=0.5, beta=0.5, seed=7)
    apply_undo_noise(other, alpha=0.5, beta=0.5, seed=7)

    for (name, p), q in zip(tiny_model.named_parameters(), other.parameters()):
        assert torch.equal(p, q), f"{name} differs for the same seed"


def test_different_seeds_differ(tiny_model):
    other = copy.deepcopy(tiny_model)

    apply_undo_noise(tiny_model, alpha=0.5, beta=0.5, seed=7)
    apply_undo_noise(other, alpha=0.5, beta=0.5, seed=8)

    for (name, p), q in zip(tiny_model.named_parameters(), other.parameters()):
        if p.ndim == 2:
            assert not torch.equal(p, q), f"{name} is the same for seeds 7 and 8"


def test_global_rng_untouched(tiny_model):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)

    apply_undo_noise(tiny_model, alpha=0.5, beta=0.5, seed=7)

    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "alpha, beta, bad",
    [(-0.1, 0.5, "-0.1"), (1.5, 0.5, "1.5"), (0.5, -0.2, "-0.2"), (0.5, 2.0, "2.0")],
    ids=["alpha-negative", "alpha-above-1", "beta-negative", "beta-above-1"],
)
def test_out_of_range_rejected(tiny_model, alpha, beta, bad):
    before = _state(tiny_model)

    with pytest.raises(ValueError) as excinfo:
        apply_undo_noise(tiny_model, alpha=alpha, beta=beta, seed=0)

    assert bad in str(excinfo.value)
    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, before[name]), f"{name} changed although the call was rejected"


def test_tied_embedding_stays_tied(tiny_model):
    apply_undo_noise(tiny_model, alpha=0.5, beta=1.0, seed=0)

    head, embedding = tiny_model.lm_head.weight, tiny_model.model.embed_tokens.weight
    assert head.data_ptr() == embedding.data_ptr()
    assert torch.equal(head, embedding)


def test_full_reset_is_xavier(tiny_model):
    _randomize_norms(tiny_model)

    apply_undo_noise(tiny_model, alpha=1.0, beta=1.0, seed=0)

    for name, p in tiny_model.named_parameters():
        if p.ndim == 2:
            bound = _xavier_bound(p)
            assert p.abs().max().item() <= bound + 1e-6, f"{name} outside the Xavier bound {bound}"
            assert p.abs().max().item() > 0.9 * bound, f"{name} does not fill the Xavier range"
        else:
            assert torch.count_nonzero(p).item() == 0, f"{name} should be zeroed by alpha=1"
