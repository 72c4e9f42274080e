"""Tests for undo_lib.methods: GradDiff, RMU, MaxEnt with RepNoise, the registry and the resolution
of unlearning sweep points. Expected values are computed in the tests from a plain forward pass of
the tiny Gemma2 (log_softmax, gather, means), or worked out by hand on tiny tensors."""

import itertools
import math

import pytest
import torch

from undo_lib.config import (GradDiffParams, MaxEntParams, RepNoiseParams, RMUParams, SAMParams, TrainParams,
                             UnlearnParams)
from undo_lib.methods import METHODS, get_method, make_loss, unlearning_run
from undo_lib.methods.graddiff import graddiff_loss
from undo_lib.methods.maxent import maxent_loss
from undo_lib.methods.repnoise import logit_lens_ce, mmd, noise_mmd, noise_seed, token_mask
from undo_lib.methods.rmu import control_vector
from undo_lib.model import build_model
from undo_lib.train import train

BATCH, SEQ = 2, 8


def _batch(vocab: int, seed: int, mask_every: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (BATCH, SEQ), generator=gen)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, ::mask_every] = True
    return {"input_ids": ids, "loss_mask": mask}


def _pair(vocab: int, forget_mask_every: int = 1, retain_mask_every: int = 1) -> dict:
    return {"forget": _batch(vocab, seed=1, mask_every=forget_mask_every),
            "retain": _batch(vocab, seed=2, mask_every=retain_mask_every)}


def _hand_ce(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of -log p(ids[b, t + 1]) over the positions t whose target mask[b, t + 1] is set."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    terms = [-log_p[b, t, ids[b, t + 1]].item()
             for b in range(ids.shape[0]) for t in range(ids.shape[1] - 1) if mask[b, t + 1]]
    return sum(terms) / len(terms)


def _hand_kl_uniform(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of sum_v (1/V)(log(1/V) - log p_v) over the positions whose target is counted."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    vocab = logits.shape[-1]
    terms = [sum((1 / vocab) * (math.log(1 / vocab) - lp) for lp in log_p[b, t].tolist())
             for b in range(mask.shape[0]) for t in range(mask.shape[1] - 1) if mask[b, t + 1]]
    return sum(terms) / len(terms)


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


@torch.no_grad()
def _hidden(model, ids: torch.Tensor, layer: int) -> torch.Tensor:
    return model(input_ids=ids, output_hidden_states=True).hidden_states[layer]


# ----------------------------------------------------------------------------------------------
# GradDiff


@pytest.mark.parametrize("retain_weight", [1.0, 15.0])
def test_graddiff_hand_value(tiny_model, tokenizer, retain_weight):
    batch = _pair(len(tokenizer), retain_mask_every=3)
    forget, retain = batch["forget"], batch["retain"]

    loss, logs = graddiff_loss(tiny_model, batch, GradDiffParams(retain_weight=retain_weight))

    forget_ce = _hand_ce(_logits(tiny_model, forget["input_ids"]), forget["input_ids"], forget["loss_mask"])
    retain_ce = _hand_ce(_logits(tiny_model, retain["input_ids"]), retain["input_ids"], retain["loss_mask"])
    assert loss.item() == pytest.approx(-forget_ce + retain_weight * retain_ce, rel=1e-5)
    assert logs["forget_ce"] == pytest.approx(forget_ce, rel=1e-5)
    assert logs["retain_ce"] == pytest.approx(retain_ce, rel=1e-5)


def test_graddiff_forget_gradient_ascends(tiny_model_params, tokenizer):
    vocab = len(tokenizer)
    batch = _pair(vocab)
    ascent_model = build_model(tiny_model_params, vocab, seed=0)
    descent_model = build_model(tiny_model_params, vocab, seed=0)

    loss_fn = make_loss("GradDiff", ascent_model, GradDiffParams(retain_weight=0.0), seed=0)
    loss_fn(ascent_model, batch)[0].backward()
    forget = batch["forget"]
    logits = descent_model(input_ids=forget["input_ids"]).logits
    log_p = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, forget["input_ids"][:, 1:, None])
    (-log_p.mean()).backward()

    # With retain_weight 0 the loss is -CE(forget), so its gradient is minus the CE gradient.
    for (name, p), q in zip(ascent_model.named_parameters(), descent_model.parameters()):
        torch.testing.assert_close(p.grad, -q.grad, rtol=1e-4, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------------------------
# RMU


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_control_vector_unit_norm(kind):
    u = control_vector(32, kind, seed=3)

    assert u.shape == (32,)
    assert u.norm().item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_control_vector_seeded(kind):
    assert torch.equal(control_vector(16, kind, seed=5), control_vector(16, kind, seed=5))
    assert not torch.equal(control_vector(16, kind, seed=5), control_vector(16, kind, seed=6))


def test_control_vector_draws():
    gaussian = torch.randn(8, generator=torch.Generator().manual_seed(4))
    uniform = torch.rand(8, generator=torch.Generator().manual_seed(4))

    torch.testing.assert_close(control_vector(8, "gaussian", seed=4), gaussian / gaussian.norm())
    torch.testing.assert_close(control_vector(8, "uniform", seed=4), uniform / uniform.norm())
    assert (control_vector(8, "uniform", seed=4) >= 0).all(), "a normalised rand vector has no negative entry"


def test_control_vector_invalid_kind():
    with pytest.raises(ValueError, match="'sphere'"):
        control_vector(8, "sphere", seed=0)


def _rmu_params(**overrides) -> RMUParams:
    values = {"layers": (0,), "hidden_layer": 1, "steering_coefficient": 6.0, "retain_weight": 0.0}
    values.update(overrides)
    return RMUParams(**values)


def test_rmu_freezes_all_but_down_proj(tiny_model):
    make_loss("RMU", tiny_model, _rmu_params(layers=(1,)), seed=0)

    trainable = [name for name, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable == ["model.layers.1.mlp.down_proj.weight"]


def test_rmu_forget_hand_value(tiny_model, tokenizer):
    params = _rmu_params(steering_coefficient=6.5)
    batch = _pair(len(tokenizer))
    ids = batch["forget"]["input_ids"]
    hidden = _hidden(tiny_model, ids, layer=1)  # [batch, seq, hidden]
    gaussian = torch.randn(hidden.shape[-1], generator=torch.Generator().manual_seed(7))
    target = 6.5 * gaussian / gaussian.norm()

    loss, logs = make_loss("RMU", tiny_model, params, seed=7)(tiny_model, batch)

    expected = ((hidden.double() - target.double()) ** 2).sum().item() / hidden.numel()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs == {"forget_mse": pytest.approx(expected, rel=1e-5)}


def test_rmu_counts_masked_positions(tiny_model, tokenizer):
    batch = _pair(len(tokenizer), forget_mask_every=3)  # positions 0, 3 and 6 of each sequence count
    hidden = _hidden(tiny_model, batch["forget"]["input_ids"], layer=1)
    u = control_vector(hidden.shape[-1], "uniform", seed=0)

    loss, _ = make_loss("RMU", tiny_model, _rmu_params(hidden_layer=1, control_vector="uniform"), seed=0)(
        tiny_model, batch)

    counted_hidden = hidden[:, [0, 3, 6]].double()
    expected = ((counted_hidden - 6.0 * u.double()) ** 2).mean().item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_rmu_retain_hand_value(tiny_model_params, tokenizer):
    vocab = len(tokenizer)
    model = build_model(tiny_model_params, vocab, seed=0)
    original = build_model(tiny_model_params, vocab, seed=0)
    params = _rmu_params(retain_weight=0.5)
    loss_fn = make_loss("RMU", model, params, seed=1)
    with torch.no_grad():  # move the trained weights away from the reference copy
        model.model.layers[0].mlp.down_proj.weight.add_(0.05)
    batch = _pair(vocab)

    loss, logs = loss_fn(model, batch)

    forget_hidden = _hidden(model, batch["forget"]["input_ids"], layer=1).double()
    retain_hidden = _hidden(model, batch["retain"]["input_ids"], layer=1).double()
    reference_hidden = _hidden(original, batch["retain"]["input_ids"], layer=1).double()
    u = control_vector(forget_hidden.shape[-1], "gaussian", seed=1).double()
    forget_mse = ((forget_hidden - 6.0 * u) ** 2).mean().item()
    retain_mse = ((retain_hidden - reference_hidden) ** 2).mean().item()
    assert retain_mse > 1e-6, "precondition: the model differs from its reference"
    assert logs["forget_mse"] == pytest.approx(forget_mse, rel=1e-5)
    assert logs["retain_mse"] == pytest.approx(retain_mse, rel=1e-4)
    assert loss.item() == pytest.approx(forget_mse + 0.5 * retain_mse, rel=1e-5)


def test_rmu_gradient_reaches_only_down_proj(tiny_model, tokenizer):
    # hidden_states[1] is layer 0's output, so layer 1's down_proj is trainable but cannot change it
    loss_fn = make_loss("RMU", tiny_model, _rmu_params(layers=(0, 1), retain_weight=1.0), seed=0)
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.down_proj.weight.add_(0.05)

    loss_fn(tiny_model, _pair(len(tokenizer)))[0].backward()

    with_grad = [name for name, p in tiny_model.named_parameters() if p.grad is not None]
    assert with_grad == ["model.layers.0.mlp.down_proj.weight"]
    for name, p in tiny_model.named_parameters():
        if p.grad is not None:
            assert p.grad.abs().max().item() > 0, f"{name} got a zero gradient"


def test_rmu_reference_only_with_retain(tiny_model, monkeypatch):
    import undo_lib.methods.rmu as rmu

    copies = []
    monkeypatch.setattr(rmu.copy, "deepcopy", lambda obj: copies.append(obj) or obj)

    make_loss("RMU", tiny_model, _rmu_params(retain_weight=0.0), seed=0)
    assert copies == [], "no reference model should be built when retain_weight is 0"
    make_loss("RMU", tiny_model, _rmu_params(retain_weight=0.3), seed=0)
    assert copies == [tiny_model]


def test_rmu_train_changes_only_down_proj(tiny_model, tokenizer):
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    loss_fn = make_loss("RMU", tiny_model, _rmu_params(layers=(0,)), seed=0)

    train(tiny_model, loss_fn, itertools.repeat(_pair(len(tokenizer))), TrainParams(steps=2, lr=1e-2),
          flops_per_token=1.0)

    for name, p in tiny_model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name == "model.layers.0.mlp.down_proj.weight"), name


# ----------------------------------------------------------------------------------------------
# RepNoise: MMD, logit lens and the loss added to MaxEnt


def _kernel_sum(squared_distance: float, base: float) -> float:
    """sum_k exp(-d / (base * 2**(k - 2))) for k in 0..4."""
    return sum(math.exp(-squared_distance / (base * 2.0 ** (k - 2))) for k in range(5))


def test_mmd_hand_value():
    source = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0]])

    value = mmd(source, target).item()

    # Pooled samples are the corners of the unit square. Squared distances: 4 pairs at 1, 2 pairs at
    # 2, so the base bandwidth is (2 * (4 * 1 + 2 * 2)) / (4 * 4 - 4) = 4/3. Within each set the
    # pair is at distance 1: mean k(source, source) = (k(0) + k(1)) / 2, the same for target.
    # Across: two pairs at 1 and two at 2, so mean k(source, target) = (k(1) + k(2)) / 2.
    base = 4 / 3
    k0, k1, k2 = (_kernel_sum(d, base) for d in (0.0, 1.0, 2.0))
    expected = (k0 + k1) / 2 + (k0 + k1) / 2 - 2 * (k1 + k2) / 2
    assert k0 == 5.0
    assert expected == pytest.approx(5 - sum(math.exp(-x) for x in (6, 3, 1.5, 0.75, 0.375)), rel=1e-12)
    assert value == pytest.approx(expected, rel=1e-5)


def test_mmd_same_samples_zero():
    samples = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -2.0], [0.0, 3.0, 1.0]])

    assert mmd(samples, samples.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_mmd_identical_points_finite():
    zeros = torch.zeros(2, 4)

    assert mmd(zeros, zeros).item() == 0.0


def _hand_mmd(source: torch.Tensor, target: torch.Tensor) -> float:
    """The 5-kernel MMD written out with explicit pairwise differences."""
    samples = torch.cat([source, target]).double()
    count = samples.shape[0]
    distances = [[((samples[i] - samples[j]) ** 2).sum().item() for j in range(count)] for i in range(count)]
    base = sum(map(sum, distances)) / (count * count - count)
    kernel = [[_kernel_sum(d, base) for d in row] for row in distances]

    def block_mean(rows, cols) -> float:
        return sum(kernel[i][j] for i in rows for j in cols) / (len(rows) * len(cols))

    first, second = range(source.shape[0]), range(source.shape[0], count)
    return block_mean(first, first) + block_mean(second, second) - 2 * block_mean(first, second)


def test_noise_mmd_hand_value():
    gen = torch.Generator().manual_seed(0)
    outputs = [torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen) * 2]
    mask = torch.tensor([[True, True, False, True], [False, True, True, True], [True, False, True, False]])

    value = noise_mmd(outputs, mask, torch.Generator().manual_seed(9)).item()

    noise_gen = torch.Generator().manual_seed(9)
    keep = mask[..., None].float()
    per_layer = []
    for output in outputs:  # noise is drawn layer by layer from the one generator
        noise = torch.randn(3, 4, 5, generator=noise_gen)
        per_layer.append(_hand_mmd((output * keep).reshape(3, -1), (noise * keep).reshape(3, -1)))
    assert value == pytest.approx(sum(per_layer) / 2, rel=1e-4)


def test_token_mask_hand_value():
    forget = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "loss_mask": torch.tensor([[True, True, True, False]])}
    retain = {"input_ids": torch.tensor([[5, 9, 7, 9]]), "loss_mask": torch.ones(1, 4, dtype=torch.bool)}

    # Positions 0 and 2 hold equal tokens. The loss masks are applied where the mask is used.
    assert token_mask(forget, retain).tolist() == [[False, True, False, True]]


def test_token_mask_shape_mismatch():
    forget = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "loss_mask": torch.ones(2, 4, dtype=torch.bool)}
    retain = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "loss_mask": torch.ones(2, 5, dtype=torch.bool)}

    with pytest.raises(ValueError, match=r"\(2, 4\) and \(2, 5\)"):
        token_mask(forget, retain)


def _softcapped_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    cap = model.config.final_logit_softcapping
    return torch.tanh(model.lm_head(model.model.norm(hidden)) / cap) * cap


@torch.no_grad()
def _hand_lens_ce(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    output = model(input_ids=ids, output_hidden_states=True)
    hidden_states = output.hidden_states  # embeddings, then after each layer (the last one normed)
    terms = [_hand_ce(_softcapped_logits(model, h), ids, mask) for h in hidden_states[:-1]]
    terms.append(_hand_ce(output.logits, ids, mask))
    return sum(terms) / len(hidden_states)


def test_logit_lens_ce_hand_value(tiny_model, tokenizer):
    batch = _batch(len(tokenizer), seed=3)
    ids, mask = batch["input_ids"], batch["loss_mask"].clone()
    mask[0, 2] = False
    with torch.no_grad():
        tiny_model.model.norm.weight.fill_(0.3)  # a non-zero RMSNorm gain, so the norm matters
        output = tiny_model(input_ids=ids, output_hidden_states=True)

        value = logit_lens_ce(tiny_model, output.hidden_states, output.logits, ids, mask).item()

    assert len(output.hidden_states) == 3
    assert value == pytest.approx(_hand_lens_ce(tiny_model, ids, mask), rel=1e-5)


def _repnoise_pair(vocab: int) -> dict:
    batch = _pair(vocab, retain_mask_every=2)
    batch["retain"]["input_ids"][:, :3] = batch["forget"]["input_ids"][:, :3]  # equal tokens leave the mask
    batch["forget"]["loss_mask"][1, 5] = False
    return batch


def _hand_maxent_terms(model, batch: dict, retain_weight: float) -> tuple[float, float, torch.Tensor]:
    """Return (KL(U || p)(forget) + retain_weight * CE(retain), RepNoise's CE(retain), the forget token mask)."""
    forget, retain = batch["forget"], batch["retain"]
    differs = forget["input_ids"] != retain["input_ids"]
    retain_logits = _logits(model, retain["input_ids"])
    kl = _hand_kl_uniform(_logits(model, forget["input_ids"]), forget["loss_mask"])
    retain_ce = _hand_ce(retain_logits, retain["input_ids"], retain["loss_mask"])
    masked_retain_ce = _hand_ce(retain_logits, retain["input_ids"], differs & retain["loss_mask"])
    return kl + retain_weight * retain_ce, masked_retain_ce, differs & forget["loss_mask"]


def test_maxent_repnoise_alpha_hand_value(tiny_model, tokenizer):
    batch = _repnoise_pair(len(tokenizer))
    params = MaxEntParams(retain_weight=0.5, repnoise_alpha=2.0, repnoise_beta=0.0)

    loss, logs = maxent_loss(tiny_model, batch, params, seed=0)

    maxent, masked_retain_ce, forget_mask = _hand_maxent_terms(tiny_model, batch, retain_weight=0.5)
    lens_ce = _hand_lens_ce(tiny_model, batch["forget"]["input_ids"], forget_mask)
    assert loss.item() == pytest.approx(maxent + masked_retain_ce - 2.0 * math.log(lens_ce + 1), rel=1e-5)
    assert logs["repnoise_lens_ce"] == pytest.approx(lens_ce, rel=1e-5)
    assert logs["repnoise_retain_ce"] == pytest.approx(masked_retain_ce, rel=1e-5)
    assert "repnoise_mmd" not in logs, "a zero beta skips the MMD"


def _mlp_outputs(model, ids: torch.Tensor) -> list[torch.Tensor]:
    captured = []
    handles = [layer.mlp.register_forward_hook(lambda m, a, out: captured.append(out.detach()))
               for layer in model.model.layers]
    with torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return captured


def test_maxent_repnoise_beta_hand_value(tiny_model, tokenizer):
    batch = _repnoise_pair(len(tokenizer))
    forget_ids = batch["forget"]["input_ids"]
    params = MaxEntParams(retain_weight=1.0, repnoise_alpha=0.0, repnoise_beta=0.25)

    loss, logs = maxent_loss(tiny_model, batch, params, seed=4)

    maxent, masked_retain_ce, forget_mask = _hand_maxent_terms(tiny_model, batch, retain_weight=1.0)
    keep = forget_mask[..., None].float()
    noise_gen = torch.Generator().manual_seed(noise_seed(4, forget_ids))
    distances = []
    for output in _mlp_outputs(tiny_model, forget_ids):
        noise = torch.randn(output.shape, generator=noise_gen)
        distances.append(_hand_mmd((output * keep).flatten(1), (noise * keep).flatten(1)))
    distance = sum(distances) / len(distances)
    assert logs["repnoise_mmd"] == pytest.approx(distance, rel=1e-4)
    assert loss.item() == pytest.approx(maxent + masked_retain_ce + 0.25 * distance, rel=1e-5)
    assert "repnoise_lens_ce" not in logs, "a zero alpha skips the logit lens"


def test_maxent_repnoise_deterministic(tiny_model, tokenizer):
    batch = _repnoise_pair(len(tokenizer))
    params = MaxEntParams(repnoise_alpha=1.0, repnoise_beta=1.0)

    first = maxent_loss(tiny_model, batch, params, seed=0)[1]["repnoise_mmd"]
    again = maxent_loss(tiny_model, batch, params, seed=0)[1]["repnoise_mmd"]
    other_seed = maxent_loss(tiny_model, batch, params, seed=1)[1]["repnoise_mmd"]

    assert first == again
    assert first != other_seed


def test_maxent_repnoise_removes_hooks(tiny_model, tokenizer):
    maxent_loss(tiny_model, _repnoise_pair(len(tokenizer)), MaxEntParams(repnoise_beta=1.0), seed=0)

    assert all(not layer.mlp._forward_hooks for layer in tiny_model.model.layers)


def test_maxent_without_repnoise_unchanged(tiny_model, tokenizer):
    batch = _pair(len(tokenizer))

    loss, logs = make_loss("MaxEnt", tiny_model, MaxEntParams(retain_weight=0.5), seed=3)(tiny_model, batch)

    forget, retain = batch["forget"], batch["retain"]
    kl = _hand_kl_uniform(_logits(tiny_model, forget["input_ids"]), forget["loss_mask"])
    retain_ce = _hand_ce(_logits(tiny_model, retain["input_ids"]), retain["input_ids"], retain["loss_mask"])
    assert loss.item() == pytest.approx(kl + 0.5 * retain_ce, rel=1e-5)
    assert set(logs) == {"forget_kl_uniform", "retain_ce"}


# ----------------------------------------------------------------------------------------------
# Registry


def test_registry_names():
    assert sorted(METHODS) == ["GradDiff", "MaxEnt", "RMU"]


def test_make_loss_unknown_method(tiny_model):
    with pytest.raises(KeyError) as excinfo:
        make_loss("NPO", tiny_model, GradDiffParams(), seed=0)

    message = str(excinfo.value)
    assert "'NPO'" in message
    for name in ("GradDiff", "MaxEnt", "RMU"):
        assert name in message


def test_make_loss_wrong_params_type(tiny_model):
    with pytest.raises(TypeError, match="RMU takes RMUParams, got MaxEntParams"):
        make_loss("RMU", tiny_model, MaxEntParams(), seed=0)


def test_get_method_rmu():
    assert get_method("RMU").params_type is RMUParams


@pytest.mark.parametrize("method,params", [("GradDiff", GradDiffParams()), ("MaxEnt", MaxEntParams()),
                                           ("RMU", RMUParams(layers=(0,), hidden_layer=1)),
                                           ("MaxEnt", MaxEntParams(repnoise_alpha=1.0, repnoise_beta=0.001))])
def test_make_loss_trains(tiny_model, tokenizer, method, params):
    loss_fn = make_loss(method, tiny_model, params, seed=0)

    result = train(tiny_model, loss_fn, itertools.repeat(_repnoise_pair(len(tokenizer))),
                   TrainParams(steps=2, lr=1e-3), flops_per_token=1.0)

    assert all(math.isfinite(row["loss"]) for row in result.history[1:])


# ----------------------------------------------------------------------------------------------
# unlearning_run


def _section() -> UnlearnParams:
    return UnlearnParams(
        GradDiff=GradDiffParams(retain_weight=15.0, lrs=(1e-4, 3e-4)),
        MaxEnt=MaxEntParams(retain_weight=0.7, lrs=(3e-4, 1e-3)),
        RMU=RMUParams(layers=(0,), hidden_layer=1, lrs=(1e-3, 3e-3)),
        SAM=SAMParams(method="RMU", rho=0.01, lrs=(2e-3,)),
        RepNoise=RepNoiseParams(alpha=1.5, beta=0.002, lrs=(5e-4,)),
        train=TrainParams(steps=7, batch_size=3, min_lr=1e-5, warmup_steps=2, eval_every=4),
    )


@pytest.mark.parametrize("run,lr", [("GradDiff", 3e-4), ("MaxEnt", 1e-3), ("RMU", 1e-3)])
def test_unlearning_run_method(run, lr):
    section = _section()

    resolved = unlearning_run(section, run, lr)

    assert (resolved.run, resolved.method) == (run, run)
    assert resolved.method_params is getattr(section, run)
    assert (resolved.train.lr, resolved.train.min_lr, resolved.train.sam_rho) == (lr, None, 0.0)
    assert (resolved.train.steps, resolved.train.batch_size, resolved.train.warmup_steps) == (7, 3, 2)


def test_unlearning_run_sam():
    section = _section()

    resolved = unlearning_run(section, "SAM", 2e-3)

    assert (resolved.run, resolved.method) == ("SAM", "RMU")
    assert resolved.method_params is section.RMU
    assert resolved.train.sam_rho == 0.01
    assert (resolved.train.lr, resolved.train.min_lr) == (2e-3, None)


def test_unlearning_run_repnoise():
    section = _section()

    resolved = unlearning_run(section, "RepNoise", 5e-4)

    assert (resolved.run, resolved.method) == ("RepNoise", "MaxEnt")
    assert resolved.method_params == MaxEntParams(retain_weight=0.7, repnoise_alpha=1.5, repnoise_beta=0.002,
                                                  lrs=(3e-4, 1e-3))
    assert resolved.train.sam_rho == 0.0
    assert resolved.train.lr == 5e-4


def test_unlearning_run_lr_formatting():
    # A LR passed as text by the pipeline may round-trip to a float a few ulps away.
    resolved = unlearning_run(_section(), "GradDiff", float("0.00030000000000000003"))

    assert resolved.train.lr == 3e-4


def test_unlearning_run_bad_lr():
    with pytest.raises(ValueError) as excinfo:
        unlearning_run(_section(), "RMU", 2e-3, path="unlearn.arithmetic")

    message = str(excinfo.value)
    assert "unlearn.arithmetic.RMU.lrs" in message
    assert "0.002" in message
    assert "[0.001, 0.003]" in message


def test_unlearning_run_bad_lr_default_path():
    with pytest.raises(ValueError, match=r"unlearn\.SAM\.lrs"):
        unlearning_run(_section(), "SAM", 1e-3)


def test_unlearning_run_unknown_run():
    with pytest.raises(KeyError, match="'UNDO'"):
        unlearning_run(_section(), "UNDO", 1e-3)


def test_rmu_rejects_final_norm_state(tiny_model):
    """hidden_states[num_hidden_layers] is the final-norm output in transformers, not a layer's output."""
    with pytest.raises(ValueError, match=r"hidden_layer=2 is the model's final-norm output"):
        make_loss("RMU", tiny_model, _rmu_params(hidden_layer=2), seed=0)
