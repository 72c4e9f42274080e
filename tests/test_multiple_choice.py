"""Tests of the multiple-choice scorer: prompt format, log-likelihood sums, accuracy, few-shot
selection, question validation, left truncation, agreement with lm-evaluation-harness, and the
model arguments harness_evaluate passes to it."""

import dataclasses
import logging
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from undo_lib.model import build_model, save_model
from undo_lib.multiple_choice import (
    HARNESS_DTYPES,
    build_prompt,
    choice_loglikelihoods,
    evaluate_multiple_choice,
    harness_evaluate,
    load_questions,
    select_fewshot,
    summarize_harness_task,
)

FIXTURES = Path(__file__).parent / "fixtures" / "multiple_choice"
HARNESS_TASK = "undo_imaginary_geography"

# A character-level vocabulary: every listed character is one token, any other is <unk>.
VOCAB = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "Q": 4, ":": 5, " ": 6, "A": 7, "B": 8, "C": 9, "D": 10}
COLON, SPACE, LETTER_A, LETTER_B = VOCAB[":"], VOCAB[" "], VOCAB["A"], VOCAB["B"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE without merges over ``VOCAB``, so the ids of a text can be read off character by character."""
    tokenizer = Tokenizer(models.BPE(vocab=VOCAB, merges=[], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def next_token_probabilities() -> torch.Tensor:
    """Next-token probabilities: row ``i`` is the distribution after token ``i``, and only the rows
    of ":" and " " are not uniform."""
    size = len(VOCAB)
    probs = torch.full((size, size), 1.0 / size, dtype=torch.float64)
    probs[COLON] = 0.5 / (size - 1)
    probs[COLON, SPACE] = 0.5
    probs[SPACE] = 0.25 / (size - 2)
    probs[SPACE, LETTER_A] = 0.25
    probs[SPACE, LETTER_B] = 0.5
    return probs


class BigramModel(torch.nn.Module):
    """A fake causal LM whose logits at each position are the log-probabilities after that token.

    It records every ``input_ids`` batch it receives in ``inputs``.
    """

    def __init__(self, max_position_embeddings: int = 4096):
        super().__init__()
        self.table = torch.nn.Parameter(next_token_probabilities().log().float(), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=max_position_embeddings)
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        self.inputs.append(input_ids.clone())
        return SimpleNamespace(logits=self.table[input_ids])


@pytest.fixture
def questions() -> list[dict]:
    return load_questions(FIXTURES / "questions.jsonl")


@pytest.fixture
def dev_questions() -> list[dict]:
    return load_questions(FIXTURES / "dev.jsonl")


# Hand-computed sums: log P(" " | ":") + log P(letter | " ") from next_token_probabilities.
EXPECTED_A = math.log(0.5) + math.log(0.25)
EXPECTED_B = math.log(0.5) + math.log(0.5)
EXPECTED_C = math.log(0.5) + math.log(0.25 / 9)


def test_loglikelihoods_hand_computed():
    scores = choice_loglikelihoods(BigramModel(), char_tokenizer(), "QQ:", [" A", " B", " C"])
    assert scores[0] == pytest.approx(EXPECTED_A, abs=1e-5)
    assert scores[1] == pytest.approx(EXPECTED_B, abs=1e-5)
    assert scores[2] == pytest.approx(EXPECTED_C, abs=1e-5)


def test_loglikelihoods_one_forward_with_bos():
    model = BigramModel()
    choice_loglikelihoods(model, char_tokenizer(), "QQ:", [" A", " B"])
    assert len(model.inputs) == 1
    assert model.inputs[0][:, 0].tolist() == [VOCAB["<bos>"]] * 2
    assert model.inputs[0][0].tolist() == [VOCAB["<bos>"], VOCAB["Q"], VOCAB["Q"], COLON, SPACE]


def test_loglikelihoods_without_bos():
    model = BigramModel()
    choice_loglikelihoods(model, char_tokenizer(), "QQ:", [" A"], add_bos=False)
    assert model.inputs[0][0].tolist() == [VOCAB["Q"], VOCAB["Q"], COLON, SPACE]


def test_trailing_space_moves_to_continuation():
    scores = choice_loglikelihoods(BigramModel(), char_tokenizer(), "QQ: ", ["A", "B"])
    assert scores[0] == pytest.approx(EXPECTED_A, abs=1e-5)
    assert scores[1] == pytest.approx(EXPECTED_B, abs=1e-5)


def test_left_truncation(caplog):
    model = BigramModel(max_position_embeddings=4)
    with caplog.at_level(logging.WARNING, logger="undo_lib.multiple_choice"):
        scores = choice_loglikelihoods(model, char_tokenizer(), "QQQQQQ:", [" A", " B"])
    assert model.inputs[0].shape == (2, 4)
    assert model.inputs[0][0].tolist() == [VOCAB["Q"], VOCAB["Q"], COLON, SPACE]
    assert scores[0] == pytest.approx(EXPECTED_A, abs=1e-5)
    assert "truncating" in caplog.text


def test_bos_from_tokenizer():
    # "<bos>" and "D" swap ids, so the bos id is 10 and both rows of the bigram table stay uniform.
    vocab = dict(VOCAB, **{"<bos>": VOCAB["D"], "D": VOCAB["<bos>"]})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>")),
        pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
    )
    model = BigramModel()
    scores = choice_loglikelihoods(model, tokenizer, "QQ:", [" A", " B"])

    assert tokenizer.bos_token_id == 10
    assert model.inputs[0][:, 0].tolist() == [10, 10]
    assert scores[0] == pytest.approx(EXPECTED_A, abs=1e-5)
    assert scores[1] == pytest.approx(EXPECTED_B, abs=1e-5)


def test_missing_bos_rejected():
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=VOCAB, merges=[], unk_token="<unk>")),
        pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
    )
    with pytest.raises(ValueError, match="has no bos token"):
        choice_loglikelihoods(BigramModel(), tokenizer, "QQ:", [" A"])

    scores = choice_loglikelihoods(BigramModel(), tokenizer, "QQ:", [" A"], add_bos=False)
    assert scores[0] == pytest.approx(EXPECTED_A, abs=1e-5)


def test_padding_falls_back_to_eos():
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=VOCAB, merges=[], unk_token="<unk>")),
        eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
    )
    model = BigramModel()
    scores = choice_loglikelihoods(model, tokenizer, "QQ:", [" A", " AB"])

    assert tokenizer.pad_token_id is None
    assert model.inputs[0][0].tolist() == [VOCAB["<bos>"], VOCAB["Q"], VOCAB["Q"], COLON, SPACE, VOCAB["<eos>"]]
    assert scores[0] == pytest.approx(EXPECTED_A, abs=1e-5)


def test_padding_uses_pad_id():
    model = BigramModel()
    choice_loglikelihoods(model, char_tokenizer(), "QQ:", [" A", " AB"])
    assert model.inputs[0][0, -1].item() == VOCAB["<pad>"]


def test_continuation_too_long_rejected():
    with pytest.raises(ValueError, match="max_position_embeddings"):
        choice_loglikelihoods(BigramModel(max_position_embeddings=1), char_tokenizer(), "Q:", [" A"])


def test_prompt_zero_shot(questions):
    expected = (
        "The following are multiple choice questions (with answers) about imaginary geography.\n\n"
        "What is the highest peak of the Tarn Hills?\n"
        "A. Mount Orrel\nB. Greycap\nC. Siller Point\nD. The Needle\n"
        "Answer:"
    )
    assert build_prompt(questions[2]) == expected


def test_prompt_two_shot(questions, dev_questions):
    expected = (
        "The following are multiple choice questions (with answers) about imaginary geography.\n\n"
        "Which desert borders the kingdom of Orsa?\n"
        "A. The Pale Sands\nB. The Red Waste\nC. The Glass Flats\nD. The Hollow\n"
        "Answer: C\n\n"
        "What is the capital of the invented province of Lune?\n"
        "A. Tessary\nB. Ambrel\nC. Cordwin\nD. Ilse\n"
        "Answer: A\n\n"
        "Which river flows through the invented city of Velmora?\n"
        "A. The Ashwater\nB. The Brindle\nC. The Corran\nD. The Dusk\n"
        "Answer:"
    )
    assert build_prompt(questions[0], dev_questions[:2]) == expected


def test_prompt_without_subject():
    question = {"question": "Pick one", "choices": ["x", "y"], "answer": 0}
    assert build_prompt(question) == "Pick one\nA. x\nB. y\nAnswer:"


def test_accuracy_known_preference(questions):
    # The bigram model always ranks B first, and the fixture's correct letters are B, A, D, B.
    result = evaluate_multiple_choice(BigramModel(), char_tokenizer(), questions, batch_size=3)
    assert result["acc"] == 0.5
    assert result["n"] == 4
    assert result["num_fewshot"] == 0
    assert [q["prediction"] for q in result["per_question"]] == [1, 1, 1, 1]
    assert [q["correct"] for q in result["per_question"]] == [True, False, False, True]
    assert result["per_question"][0]["loglikelihoods"][0] == pytest.approx(EXPECTED_A, abs=1e-5)


def test_fewshot_excludes_question(questions):
    for seed in range(20):
        rng = random.Random(seed)
        for question in questions:
            fewshot = select_fewshot(question, questions, 3, rng)
            assert question not in fewshot
            assert len(fewshot) == 3


def test_fewshot_seed_repeats(questions, dev_questions):
    first = evaluate_multiple_choice(BigramModel(), char_tokenizer(), questions, num_fewshot=2,
                                     fewshot_questions=dev_questions, seed=7)
    second = evaluate_multiple_choice(BigramModel(), char_tokenizer(), questions, num_fewshot=2,
                                      fewshot_questions=dev_questions, seed=7)
    assert first["per_question"] == second["per_question"]
    assert first["num_fewshot"] == 2


def test_fewshot_first_n(questions, dev_questions):
    fewshot = select_fewshot(questions[0], dev_questions, 2, random.Random(0), sampler="first_n")
    assert fewshot == dev_questions[:2]


def test_fewshot_pool_too_small(questions, dev_questions):
    with pytest.raises(ValueError, match="only 3 few-shot questions"):
        select_fewshot(questions[0], dev_questions, 4, random.Random(0))


def test_fewshot_needs_pool(questions):
    with pytest.raises(ValueError, match="needs fewshot_questions"):
        evaluate_multiple_choice(BigramModel(), char_tokenizer(), questions, num_fewshot=1)


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('{"choices": ["a", "b"], "answer": 0}', "missing field 'question'"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "answer 2 is out of range"),
    ('{"question": "q", "choices": ["a"], "answer": 0}', "1 choices"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "0"}', "integer index"),
])
def test_load_questions_errors(tmp_path, line, message):
    path = tmp_path / "questions.jsonl"
    valid = '{"question": "q", "choices": ["a", "b"], "answer": 1}'
    path.write_text(f"{valid}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as raised:
        load_questions(path)
    assert f"{path}, line 3" in str(raised.value)


def test_load_questions_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_questions(tmp_path / "absent.jsonl")


def test_harness_matches_builtin(tmp_path, monkeypatch, tokenizer, tiny_model_params, questions, dev_questions):
    try:
        import accelerate  # noqa: F401
        import lm_eval  # noqa: F401
    except ImportError as err:
        pytest.skip(f"lm_eval[hf] is not installed ({err}); pip install 'lm_eval[hf]==0.4.13' to run this test")

    # The 2-shot prompts are about 340 to 360 tokens long, so 256 positions also compare left truncation.
    params = dataclasses.replace(tiny_model_params, max_position_embeddings=256)
    model = build_model(params, len(tokenizer), seed=0)
    save_model(model, tokenizer, tmp_path / "model")
    monkeypatch.chdir(FIXTURES)  # the task YAML names its data files relative to the working directory

    harness = harness_evaluate(tmp_path / "model", [HARNESS_TASK], num_fewshot=2, batch_size=16,
                               include_path=FIXTURES, log_samples=True)[HARNESS_TASK]
    builtin = evaluate_multiple_choice(model, tokenizer, questions, num_fewshot=2, fewshot_questions=dev_questions,
                                       add_bos=False, sampler="first_n")

    assert harness["n"] == builtin["n"]
    assert harness["version"] == 1.0
    assert harness["acc"] == builtin["acc"]
    for harness_scores, question in zip(harness["loglikelihoods"], builtin["per_question"]):
        assert harness_scores == pytest.approx(question["loglikelihoods"], abs=1e-4)


LEAF_TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about imaginary geography.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GROUP_YAML = """\
group: undo_geography_group
task:
  - undo_geography_part_one
  - undo_geography_part_two
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 3
"""


def test_harness_group_matches_builtin(tmp_path, monkeypatch, tokenizer, tiny_model_params, questions,
                                       dev_questions):
    try:
        import accelerate  # noqa: F401
        import lm_eval  # noqa: F401
    except ImportError as err:
        pytest.skip(f"lm_eval[hf] is not installed ({err}); pip install 'lm_eval[hf]==0.4.13' to run this test")

    # Two leaf tasks of different sizes (4 and 3 questions), so a size-weighted group accuracy
    # differs from the plain mean of the two task accuracies unless both are equal.
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    for name, source in [("undo_geography_part_one", "questions.jsonl"), ("undo_geography_part_two", "dev.jsonl")]:
        (tasks_dir / f"{name}.jsonl").write_text((FIXTURES / source).read_text(encoding="utf-8"), encoding="utf-8")
        (tasks_dir / f"{name}.yaml").write_text(LEAF_TASK_YAML.format(name=name, data_file=f"{name}.jsonl"),
                                                encoding="utf-8")
    (tasks_dir / "undo_geography_group.yaml").write_text(GROUP_YAML, encoding="utf-8")
    model = build_model(tiny_model_params, len(tokenizer), seed=0)
    save_model(model, tokenizer, tmp_path / "model")
    monkeypatch.chdir(tasks_dir)  # the task YAMLs name their data files relative to the working directory

    harness = harness_evaluate(tmp_path / "model", ["undo_geography_group"], num_fewshot=0, batch_size=16,
                               include_path=tasks_dir, log_samples=True)["undo_geography_group"]
    builtin = evaluate_multiple_choice(model, tokenizer, questions + dev_questions, add_bos=False)
    part_accs = [evaluate_multiple_choice(model, tokenizer, part, add_bos=False)["acc"]
                 for part in (questions, dev_questions)]

    assert part_accs[0] != part_accs[1], "equal part accuracies cannot tell size weighting from a plain mean"
    assert harness["n"] == len(questions) + len(dev_questions)
    assert harness["version"] == "3"
    assert harness["acc"] == pytest.approx(builtin["acc"], abs=1e-12)
    assert len(harness["loglikelihoods"]) == builtin["n"]
    for harness_scores, question in zip(harness["loglikelihoods"], builtin["per_question"]):
        assert harness_scores == pytest.approx(question["loglikelihoods"], abs=1e-4)


def fake_sample(doc_id: int, loglikelihood: float) -> dict:
    return {"doc_id": doc_id, "filtered_resps": [(loglikelihood, False), (loglikelihood - 1.0, False)]}


def fake_group_output() -> dict:
    """Output in the shape of lm_eval 0.4.13 for a group "outer" over a leaf and a nested group."""
    return {
        "results": {
            "outer": {"acc,none": 0.6}, "inner": {"acc,none": 0.5},
            "leaf_a": {"acc,none": 0.75}, "leaf_b": {"acc,none": 1.0}, "leaf_c": {"acc,none": 0.0},
        },
        "group_subtasks": {"outer": ["leaf_a", "inner"], "inner": ["leaf_b", "leaf_c"]},
        "versions": {"outer": "N/A", "inner": "2", "leaf_a": 1.0, "leaf_b": 1.0, "leaf_c": 1.0},
        "n-samples": {
            "leaf_a": {"original": 4, "effective": 4},
            "leaf_b": {"original": 3, "effective": 1},
            "leaf_c": {"original": 2, "effective": 1},
        },
        "samples": {
            "leaf_a": [fake_sample(1, -1.0), fake_sample(0, -0.5)],
            "leaf_b": [fake_sample(0, -2.0)],
            "leaf_c": [fake_sample(0, -3.0)],
        },
    }


def test_summarize_nested_group():
    summary = summarize_harness_task(fake_group_output(), "outer", log_samples=True)

    assert summary["acc"] == 0.6
    assert summary["n"] == 6
    assert summary["version"] is None
    assert [scores[0] for scores in summary["loglikelihoods"]] == [-0.5, -1.0, -2.0, -3.0]


def test_summarize_inner_group_and_leaf():
    output = fake_group_output()

    inner = summarize_harness_task(output, "inner", log_samples=False)
    leaf = summarize_harness_task(output, "leaf_a", log_samples=False)

    assert inner == {"acc": 0.5, "n": 2, "version": "2"}
    assert leaf == {"acc": 0.75, "n": 4, "version": 1.0}


def test_summarize_group_without_acc():
    output = fake_group_output()
    output["results"]["outer"] = {"alias": "outer", "name": "outer"}
    with pytest.raises(ValueError, match="aggregate_metric_list"):
        summarize_harness_task(output, "outer", log_samples=False)


def test_summarize_missing_version():
    output = fake_group_output()
    del output["versions"]["leaf_a"]
    assert summarize_harness_task(output, "leaf_a", log_samples=False)["version"] is None


# ----------------------------------------------------------------------------------------------
# harness_evaluate's model arguments, with lm_eval.simple_evaluate and TaskManager replaced by fakes.
# These tests check what harness_evaluate passes to lm_eval. They do not check that lm_eval loads the
# model on that device in that dtype, because the test machine has no CUDA device.


class FakeTaskManager:
    def __init__(self, include_path=None):
        self.include_path = include_path


def fake_harness_output(task: str) -> dict:
    return {"results": {task: {"acc,none": 0.5}}, "n-samples": {task: {"effective": 4}}, "versions": {task: 1.0}}


@pytest.fixture
def simple_evaluate_calls(monkeypatch, tmp_path) -> list[dict]:
    """Replace lm_eval.simple_evaluate with a recorder, and return the list of its keyword arguments."""
    try:
        import accelerate  # noqa: F401
        import lm_eval
        import lm_eval.tasks
    except ImportError as err:
        pytest.skip(f"lm_eval[hf] is not installed ({err}); pip install 'lm_eval[hf]==0.4.13' to run this test")
    calls = []

    def simple_evaluate(**kwargs):
        calls.append(kwargs)
        return fake_harness_output(HARNESS_TASK)

    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeTaskManager)
    # harness_evaluate sets both variables, and monkeypatch restores them after the test
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    return calls


def test_harness_default_model_args(tmp_path, simple_evaluate_calls):
    result = harness_evaluate(tmp_path, [HARNESS_TASK])

    assert len(simple_evaluate_calls) == 1
    call = simple_evaluate_calls[0]
    assert call["model"] == "hf"
    assert call["model_args"] == {"pretrained": str(tmp_path), "dtype": "float32", "device": "cpu"}
    assert result[HARNESS_TASK] == {"acc": 0.5, "n": 4, "version": 1.0}


def test_harness_gpu_model_args(tmp_path, simple_evaluate_calls):
    harness_evaluate(tmp_path, [HARNESS_TASK], device="cuda:0", dtype="bfloat16")

    model_args = simple_evaluate_calls[0]["model_args"]
    assert model_args["dtype"] == "bfloat16"
    assert model_args["device"] == "cuda:0"
    assert model_args["pretrained"] == str(tmp_path)


@pytest.mark.parametrize("dtype", HARNESS_DTYPES)
def test_harness_dtype_passed(tmp_path, simple_evaluate_calls, dtype):
    harness_evaluate(tmp_path, [HARNESS_TASK], dtype=dtype)

    assert simple_evaluate_calls[0]["model_args"]["dtype"] == dtype


def test_harness_invalid_dtype(tmp_path, simple_evaluate_calls):
    with pytest.raises(ValueError, match="invalid dtype 'bf16'"):
        harness_evaluate(tmp_path, [HARNESS_TASK], dtype="bf16")

    assert simple_evaluate_calls == []
