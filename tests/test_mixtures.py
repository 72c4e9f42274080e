"""Tests of the arithmetic mixtures: oracle filtering, add/sub share, domains and determinism."""

from __future__ import annotations

import dataclasses

import pytest

from undo_lib import arithmetic as ar
from undo_lib.config import ArithmeticDataParams
from undo_lib.prepare import _text_share, build_arithmetic_files, check_relearn_domain, find_leaks

SMALL = ArithmeticDataParams(pretrain_documents=6000, distill_documents=300, unlearn_documents=200,
                             relearn_documents=200, eval_prompts=5)


@pytest.fixture(scope="module")
def files():
    return build_arithmetic_files(SMALL, seed=0)


def test_oracle_has_no_forget_ops(files):
    ops = {r.get("op") for r in files["pretrain_oracle"]}
    assert ops == {None, "addition", "subtraction"}


def test_oracle_keeps_retain_share(files):
    full = _text_share(files["pretrain_full"], ar.RETAIN_OPS)
    oracle = _text_share(files["pretrain_oracle"], ar.RETAIN_OPS)
    assert abs(full - oracle) < 0.03, f"add/sub text share differs: full {full:.3f}, oracle {oracle:.3f}"


def test_paper_proportions_give_paper_oracle(files):
    from undo_lib.prepare import oracle_english_probability

    english, _ = ar.split_documents(ar.english_documents(120), 0.1)
    probability = oracle_english_probability(english, english_fraction=0.75, word_problem_fraction=0.5, seed=0)
    assert 0.84 < probability < 0.90, "the paper's 75/25 mixture implies about 87.5% English for the oracle"


def test_forget_and_relearn_domains(files):
    assert {r["op"] for r in files["forget"]} == set(ar.FORGET_OPS)
    assert {r["op"] for r in files["retain"]} == set(ar.RETAIN_OPS)
    check_relearn_domain(files["relearn"])


def test_relearn_domain_rejects_retain():
    with pytest.raises(ValueError, match="forget-domain"):
        check_relearn_domain([{"op": "multiplication"}, {"op": "addition"}])


def test_no_leaks_in_generated_files(files):
    assert find_leaks(files) == []


def test_planted_leak_is_found(files):
    planted = dict(files)
    leaked_prompt = next(r["prompt"] for r in files["eval"] if r["kind"] == "word_problem")
    planted["distill"] = files["distill"] + [{"text": leaked_prompt + "12", "source": "english"}]
    assert leaked_prompt in find_leaks(planted)


def test_english_split_disjoint(files):
    train = {r["text"] for r in files["english_train"]}
    validation = {r["text"] for r in files["english_validation"]}
    assert validation, "the English validation split is empty"
    assert not train & validation


def test_files_deterministic(files):
    again = build_arithmetic_files(dataclasses.replace(SMALL), seed=0)
    assert again["pretrain_full"][:50] == files["pretrain_full"][:50]
    assert again["eval"] == files["eval"]
