"""Tests for undo_lib.evaluate: batched greedy decoding, accuracy summaries and text CE."""

import pytest
import torch

from undo_lib import evaluate
from undo_lib.data import PackedData
from undo_lib.evaluate import ArithmeticEvaluator, greedy_generate, text_ce

PROMPTS = [
    "12 + 7 = ",
    "3 * 4 = ",
    "The quick brown fox jumps over the lazy dog. Aisha now has ",
    "144 / 12 = ",
    "9 - 4 = ",
]


def _spread_out(model) -> None:
    """Make a fresh model's greedy outputs depend on the prompt and on what it attends to.

    A freshly initialised model repeats one token for every prompt, which would hide padding errors.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.mul_(5)


def test_batched_equals_single(tiny_model, tokenizer):
    _spread_out(tiny_model)

    batched = greedy_generate(tiny_model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    single = [greedy_generate(tiny_model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]

    assert batched == single
    assert len(set(single)) > 1, "outputs do not depend on the prompt, so the comparison shows nothing"


def test_generate_keeps_model_mode(tiny_model, tokenizer):
    tiny_model.eval()

    greedy_generate(tiny_model, tokenizer, PROMPTS[:1], max_new_tokens=2, batch_size=1)

    assert not tiny_model.training


# ArithmeticEvaluator with a fake generator


def _record(op: str, kind: str, prompt: str, answer: str) -> dict:
    return {"op": op, "kind": kind, "prompt": prompt, "answer": answer}


# (record, generated text): the fake generator returns the text for the record's prompt.
SCORED_RECORDS = [
    (_record("addition", "equation", "1 + 1 = ", "2"), "2<bos>"),  # correct
    (_record("addition", "equation", "2 + 2 = ", "4"), " 4 apples"),  # correct
    (_record("addition", "word_problem", "Ana has 1 and 2 more. Ana has ", "3"), "3 cups."),  # correct
    (_record("addition", "word_problem", "Ana has 5 and 2 more. Ana has ", "7"), "8 cups."),  # wrong
    (_record("subtraction", "equation", "9 - 4 = ", "5"), "5"),  # correct
    (_record("subtraction", "word_problem", "Leo had 9 and gave 3. Leo has ", "6"), "six"),  # wrong
    (_record("subtraction", "word_problem", "Leo had 8 and gave 3. Leo has ", "5"), ""),  # wrong
    (_record("multiplication", "equation", "3 * 4 = ", "12"), "12<bos>3"),  # correct
    (_record("multiplication", "equation", "3 * 5 = ", "15"), "1 5"),  # wrong
    (_record("multiplication", "word_problem", "Mei has 3 boxes of 4. Mei has ", "12"), "12 pens."),  # correct
    (_record("division", "equation", "12 / 3 = ", "4.0"), "4<bos>"),  # correct: 4 equals 4.0
    (_record("division", "equation", "12 / 4 = ", "3.0"), "3.5"),  # wrong
    (_record("division", "word_problem", "12 pens in 3 boxes. Each box has ", "4"), "5 pens."),  # wrong
]

# Hand-computed accuracy of each set above.
EXPECTED_SETS = {
    "acc/addition/equation": 2 / 2,
    "acc/addition/word_problem": 1 / 2,
    "acc/subtraction/equation": 1 / 1,
    "acc/subtraction/word_problem": 0 / 2,
    "acc/multiplication/equation": 1 / 2,
    "acc/multiplication/word_problem": 1 / 1,
    "acc/division/equation": 1 / 2,
    "acc/division/word_problem": 0 / 1,
}


@pytest.fixture
def fake_generator(monkeypatch):
    outputs = {record["prompt"]: text for record, text in SCORED_RECORDS}
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        calls.append({"prompts": list(prompts), "max_new_tokens": max_new_tokens, "batch_size": batch_size})
        return [outputs[p] for p in prompts]

    monkeypatch.setattr(evaluate, "greedy_generate", fake_generate)
    return calls


def test_per_set_accuracies(fake_generator, tokenizer):
    evaluator = ArithmeticEvaluator(tokenizer, [r for r, _ in SCORED_RECORDS], batch_size=4, max_new_tokens=5)

    metrics = evaluator(model=None)

    for key, expected in EXPECTED_SETS.items():
        assert metrics[key] == pytest.approx(expected), key


def test_retain_forget_means(fake_generator, tokenizer):
    evaluator = ArithmeticEvaluator(tokenizer, [r for r, _ in SCORED_RECORDS], batch_size=4, max_new_tokens=5)

    metrics = evaluator(model=None)

    # Means over the four sets of each side, not over problems (which would give 4/7 and 3/6).
    assert metrics["retain"] == pytest.approx((1.0 + 0.5 + 1.0 + 0.0) / 4)
    assert metrics["forget"] == pytest.approx((0.5 + 1.0 + 0.5 + 0.0) / 4)
    assert set(metrics) == set(EXPECTED_SETS) | {"retain", "forget"}


def test_generator_arguments(fake_generator, tokenizer):
    records = [r for r, _ in SCORED_RECORDS]
    evaluator = ArithmeticEvaluator(tokenizer, records, batch_size=4, max_new_tokens=5)

    evaluator(model=None)

    assert len(fake_generator) == 1
    assert fake_generator[0]["max_new_tokens"] == 5
    assert fake_generator[0]["batch_size"] == 4
    assert sorted(fake_generator[0]["prompts"]) == sorted(r["prompt"] for r in records)


def test_ops_filter(fake_generator, tokenizer):
    evaluator = ArithmeticEvaluator(tokenizer, [r for r, _ in SCORED_RECORDS], batch_size=4, max_new_tokens=5,
                                    ops=("addition", "subtraction"))

    metrics = evaluator(model=None)

    assert metrics["retain"] == pytest.approx(0.625)
    assert "forget" not in metrics
    assert not any("multiplication" in p or " * " in p for p in fake_generator[0]["prompts"])


# text_ce


def test_text_ce_token_weighted(tiny_model, tokenizer):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(tokenizer), (2, 12), generator=gen)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 1:3] = True  # 2 targets in sequence 0
    mask[1, 2:11] = True  # 9 targets in sequence 1
    data = PackedData(ids, mask)

    with torch.no_grad():
        log_p = torch.log_softmax(tiny_model(input_ids=ids).logits.double(), dim=-1)
    per_token = {
        (b, t): -log_p[b, t, ids[b, t + 1]].item() for b in range(2) for t in range(11) if mask[b, t + 1]
    }
    assert len(per_token) == 11
    expected = sum(per_token.values()) / 11

    for batch_size in (1, 2):
        assert text_ce(tiny_model, data, batch_size) == pytest.approx(expected, rel=1e-5), batch_size


def test_text_ce_differs_from_sequence_mean(tiny_model, tokenizer):
    """Guards the weighting test: the per-sequence mean must differ from the token-weighted mean."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(tokenizer), (2, 12), generator=gen)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 1:3] = True
    mask[1, 2:11] = True

    with torch.no_grad():
        log_p = torch.log_softmax(tiny_model(input_ids=ids).logits.double(), dim=-1)
    seq_means = []
    for b in range(2):
        terms = [-log_p[b, t, ids[b, t + 1]].item() for t in range(11) if mask[b, t + 1]]
        seq_means.append(sum(terms) / len(terms))

    unweighted = sum(seq_means) / 2
    assert text_ce(tiny_model, PackedData(ids, mask), 1) != pytest.approx(unweighted, rel=1e-4)


def test_language_evaluator_forget_only(tiny_model, tokenizer):
    korean = ["한국어 문장입니다.", "두 번째 문서입니다."]
    full = evaluate.LanguageEvaluator(tokenizer, ["An English line."], korean, seq_len=16, batch_size=2)
    forget_only = evaluate.LanguageEvaluator(tokenizer, [], korean, seq_len=16, batch_size=2)

    metrics = forget_only(tiny_model)

    assert set(metrics) == {"forget", "korean_ce"}
    assert metrics["forget"] == pytest.approx(full(tiny_model)["forget"])
