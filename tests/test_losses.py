"""Tests for undo_lib.losses and the MaxEnt method, against values computed by hand."""

import math

import pytest
import torch

from undo_lib.config import MaxEntParams
from undo_lib.losses import causal_ce, forward_kl, kl_from_uniform, lm_loss
from undo_lib.methods import get_method
from undo_lib.methods.maxent import make_maxent_loss, maxent_loss

# One sequence of 3 positions over a vocabulary of 3: position t predicts input_ids[t + 1].
LOGITS = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]]
INPUT_IDS = [0, 2, 1]


def _log_softmax(row: list[float]) -> list[float]:
    log_norm = math.log(sum(math.exp(z) for z in row))
    return [z - log_norm for z in row]


def _hand_ce(rows: list[list[float]], targets: list[int]) -> float:
    return sum(-_log_softmax(row)[t] for row, t in zip(rows, targets)) / len(rows)


def _hand_kl_from_uniform(rows: list[list[float]]) -> float:
    per_position = []
    for row in rows:
        vocab = len(row)
        per_position.append(sum((1 / vocab) * (math.log(1 / vocab) - lp) for lp in _log_softmax(row)))
    return sum(per_position) / len(per_position)


def _hand_kl(teacher_rows: list[list[float]], student_rows: list[list[float]]) -> float:
    per_position = []
    for t_row, s_row in zip(teacher_rows, student_rows):
        log_t, log_s = _log_softmax(t_row), _log_softmax(s_row)
        per_position.append(sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_t, log_s)))
    return sum(per_position) / len(per_position)


def _tensors(logits=LOGITS, input_ids=INPUT_IDS, mask=None):
    logits_t = torch.tensor([logits], dtype=torch.float32)
    ids_t = torch.tensor([input_ids])
    mask_t = torch.ones_like(ids_t, dtype=torch.bool) if mask is None else torch.tensor([mask], dtype=torch.bool)
    return logits_t, ids_t, mask_t


def _with_padding(logits, ids, mask, extra: int):
    """Append ``extra`` masked positions with arbitrary logits and token ids."""
    torch.manual_seed(1)
    pad_logits = torch.randn(1, extra, logits.shape[-1]) * 10
    pad_ids = torch.randint(0, logits.shape[-1], (1, extra))
    pad_mask = torch.zeros(1, extra, dtype=torch.bool)
    return torch.cat([logits, pad_logits], 1), torch.cat([ids, pad_ids], 1), torch.cat([mask, pad_mask], 1)


# causal_ce


def test_causal_ce_hand_value():
    logits, ids, mask = _tensors()

    loss = causal_ce(logits, ids, mask)

    # Position 0 predicts token 2 and position 1 predicts token 1. Position 2 has no target.
    expected = _hand_ce([LOGITS[0], LOGITS[1]], [2, 1])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_causal_ce_batch_mean():
    logits = torch.tensor([LOGITS, [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    ids = torch.tensor([INPUT_IDS, [1, 0, 2]])
    mask = torch.tensor([[True, True, True], [True, False, True]])

    loss = causal_ce(logits, ids, mask)

    # Targets counted: row 0 at positions 0 and 1, row 1 at position 1 only (mask[1, 1] is False).
    counted_rows = [LOGITS[0], LOGITS[1], [1.0, 0.0, 0.0]]
    expected = _hand_ce(counted_rows, [2, 1, 2])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_causal_ce_mask_shift():
    logits, ids, _ = _tensors()
    only_last_target = torch.tensor([[False, False, True]])

    loss = causal_ce(logits, ids, only_last_target)

    # mask[:, 2] governs the prediction made at position 1.
    assert loss.item() == pytest.approx(-_log_softmax(LOGITS[1])[1], rel=1e-6)


def test_causal_ce_first_mask_ignored():
    logits, ids, _ = _tensors()
    only_first = torch.tensor([[True, False, False]])

    loss = causal_ce(logits, ids, only_first)

    # mask[:, 0] marks no target because no position predicts token 0.
    assert loss.item() == 0.0


def test_causal_ce_padding_invariant():
    logits, ids, mask = _tensors()
    padded = _with_padding(logits, ids, mask, extra=4)

    assert causal_ce(*padded).item() == pytest.approx(causal_ce(logits, ids, mask).item(), rel=1e-6)


# kl_from_uniform


def test_kl_uniform_hand_value():
    logits, ids, mask = _tensors()

    loss = kl_from_uniform(logits, ids, mask)

    expected = _hand_kl_from_uniform([LOGITS[0], LOGITS[1]])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_kl_uniform_constant_logits_zero():
    logits = torch.full((2, 5, 7), 3.25)
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.ones(2, 5, dtype=torch.bool)

    assert kl_from_uniform(logits, ids, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_uniform_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.ones(2, 5, dtype=torch.bool)

    assert kl_from_uniform(logits, ids, mask).item() > 1e-3


def test_kl_uniform_gradient_zero_at_uniform():
    logits = torch.zeros(1, 4, 6, requires_grad=True)
    ids = torch.zeros(1, 4, dtype=torch.long)
    mask = torch.ones(1, 4, dtype=torch.bool)

    kl_from_uniform(logits, ids, mask).backward()

    assert logits.grad.abs().max().item() < 1e-7


def test_kl_uniform_gradient_nonzero_elsewhere():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    ids = torch.zeros(1, 2, dtype=torch.long)
    mask = torch.ones(1, 2, dtype=torch.bool)

    kl_from_uniform(logits, ids, mask).backward()

    # d/dz_j [-log V - mean_v log p_v] = p_j - 1/V at the one counted position.
    p = [math.exp(v) for v in _log_softmax([2.0, 0.0, 0.0])]
    expected = torch.tensor([pj - 1 / 3 for pj in p])
    torch.testing.assert_close(logits.grad[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_kl_uniform_padding_invariant():
    logits, ids, mask = _tensors()
    padded = _with_padding(logits, ids, mask, extra=3)

    assert kl_from_uniform(*padded).item() == pytest.approx(kl_from_uniform(logits, ids, mask).item(), rel=1e-6)


def test_kl_uniform_mask_shift():
    logits, ids, _ = _tensors()
    only_position_one = torch.tensor([[False, True, False]])

    loss = kl_from_uniform(logits, ids, only_position_one)

    # mask[:, 1] governs the distribution at position 0.
    assert loss.item() == pytest.approx(_hand_kl_from_uniform([LOGITS[0]]), rel=1e-6)


# forward_kl


def test_forward_kl_hand_value():
    teacher = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [9.0, 9.0, 9.0]]
    student = [[0.0, 1.0, 0.0], [1.0, -2.0, 0.5], [-9.0, 0.0, 9.0]]
    t_logits, ids, mask = _tensors(teacher)
    s_logits = torch.tensor([student])

    loss = forward_kl(t_logits, s_logits, ids, mask)

    expected = _hand_kl(teacher[:2], student[:2])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_forward_kl_identical_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    ids = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.ones(2, 6, dtype=torch.bool)

    assert forward_kl(logits, logits.clone(), ids, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_forward_kl_not_symmetric():
    # p = softmax([log 0.9, log 0.05, log 0.05]) = [0.9, 0.05, 0.05], and q is uniform.
    peaked = [math.log(0.9), math.log(0.05), math.log(0.05)]
    flat = [0.0, 0.0, 0.0]
    p_logits, ids, mask = _tensors([peaked, peaked, peaked], mask=[False, True, False])
    q_logits = torch.tensor([[flat, flat, flat]])

    kl_pq = forward_kl(p_logits, q_logits, ids, mask).item()
    kl_qp = forward_kl(q_logits, p_logits, ids, mask).item()

    expected_pq = 0.9 * math.log(0.9 * 3) + 2 * 0.05 * math.log(0.05 * 3)
    expected_qp = sum((1 / 3) * math.log((1 / 3) / p) for p in (0.9, 0.05, 0.05))
    assert kl_pq == pytest.approx(expected_pq, rel=1e-5)
    assert kl_qp == pytest.approx(expected_qp, rel=1e-5)
    assert abs(kl_pq - kl_qp) > 0.1


def test_forward_kl_padding_invariant():
    torch.manual_seed(0)
    teacher = torch.randn(1, 3, 3)
    student = torch.randn(1, 3, 3)
    ids = torch.tensor([INPUT_IDS])
    mask = torch.ones(1, 3, dtype=torch.bool)
    padded_teacher, padded_ids, padded_mask = _with_padding(teacher, ids, mask, extra=2)
    padded_student = torch.cat([student, torch.randn(1, 2, 3) * 10], 1)

    padded = forward_kl(padded_teacher, padded_student, padded_ids, padded_mask).item()

    assert padded == pytest.approx(forward_kl(teacher, student, ids, mask).item(), rel=1e-6)


# All targets masked


@pytest.mark.parametrize("loss_name", ["causal_ce", "kl_from_uniform", "forward_kl"])
def test_all_masked_zero_with_gradient(loss_name):
    logits = torch.randn(2, 4, 5, requires_grad=True)
    ids = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.zeros(2, 4, dtype=torch.bool)

    if loss_name == "forward_kl":
        loss = forward_kl(logits.detach() * 2, logits, ids, mask)
    else:
        loss = {"causal_ce": causal_ce, "kl_from_uniform": kl_from_uniform}[loss_name](logits, ids, mask)
    loss.backward()

    assert loss.item() == 0.0
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()


# lm_loss and MaxEnt on the tiny model


def _tiny_batch(vocab: int, seed: int, mask_every: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (2, 10), generator=gen)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, ::mask_every] = True
    return {"input_ids": ids, "loss_mask": mask}


def test_lm_loss_matches_log_softmax(tiny_model, tokenizer):
    batch = _tiny_batch(len(tokenizer), seed=0, mask_every=2)

    loss, logs = lm_loss(tiny_model, batch)

    with torch.no_grad():
        log_p = torch.log_softmax(tiny_model(input_ids=batch["input_ids"]).logits.double(), dim=-1)
    ids, mask = batch["input_ids"], batch["loss_mask"]
    terms = [
        -log_p[b, t, ids[b, t + 1]].item()
        for b in range(ids.shape[0])
        for t in range(ids.shape[1] - 1)
        if mask[b, t + 1]
    ]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert logs == {}


@pytest.mark.parametrize("retain_weight", [1.0, 0.25])
def test_maxent_sums_two_terms(tiny_model, tokenizer, retain_weight):
    forget = _tiny_batch(len(tokenizer), seed=1)
    retain = _tiny_batch(len(tokenizer), seed=2, mask_every=3)

    loss, logs = maxent_loss(tiny_model, {"forget": forget, "retain": retain}, MaxEntParams(retain_weight))

    with torch.no_grad():
        forget_logits = tiny_model(input_ids=forget["input_ids"]).logits
        retain_logits = tiny_model(input_ids=retain["input_ids"]).logits
    forget_term = kl_from_uniform(forget_logits, forget["input_ids"], forget["loss_mask"]).item()
    retain_term = causal_ce(retain_logits, retain["input_ids"], retain["loss_mask"]).item()
    assert loss.item() == pytest.approx(forget_term + retain_weight * retain_term, rel=1e-5)
    assert logs["forget_kl_uniform"] == pytest.approx(forget_term, rel=1e-5)
    assert logs["retain_ce"] == pytest.approx(retain_term, rel=1e-5)


def test_get_method_maxent():
    method = get_method("MaxEnt")

    assert method.params_type is MaxEntParams
    assert method.make_loss is make_maxent_loss


def test_get_method_unknown_lists():
    with pytest.raises(KeyError) as excinfo:
        get_method("Nope")

    message = str(excinfo.value)
    assert "'Nope'" in message
    assert "MaxEnt" in message
