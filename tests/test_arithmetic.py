"""Tests for the arithmetic problem generator, answer parsing and English text."""

import json
import random
import re
import string

import pytest

from undo_lib import arithmetic
from undo_lib import templates
from undo_lib.arithmetic import (
    EVAL_TEMPLATES,
    FORGET_OPS,
    KINDS,
    OPS,
    RETAIN_OPS,
    TRAIN_TEMPLATES,
    Problem,
    english_documents,
    evaluation_set,
    is_correct,
    parse_answer,
    sample_equation,
    sample_problems,
    sample_word_problem,
    split_documents,
    template_fragments,
)

EQUATION_PATTERN = re.compile(r"^(\d+) ([-+*/]) (\d+) = $")
SYMBOLS = {"addition": "+", "subtraction": "-", "multiplication": "*", "division": "/"}
OPERAND_LIMITS = {"addition": 50, "subtraction": 50, "multiplication": 20, "division": 20}
FILLER_FIELDS = {"name", "name2", "creature", "Creature", "obj", "containers", "place"}
SAMPLES_PER_OP = 2000


def _fields(template):
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _prompt_operands(problem):
    return [int(number) for number in re.findall(r"\d+", problem.prompt)]


def _all_templates():
    for split, table in (("train", TRAIN_TEMPLATES), ("eval", EVAL_TEMPLATES)):
        for op in OPS:
            for index, (prompt_template, suffix_template) in enumerate(table[op]):
                yield f"{op}/{split}/{index:02d}", prompt_template, suffix_template


def _word_problems(op, split, count=SAMPLES_PER_OP, seed=0):
    rng = random.Random(f"test-{seed}-{op}-{split}")
    return [sample_word_problem(op, rng, split) for _ in range(count)]


@pytest.fixture(scope="module")
def training_word_problem_text():
    problems = sample_problems(OPS, 5000, random.Random(1234), word_problem_fraction=1.0)
    return "\n".join(problem.text for problem in problems)


@pytest.fixture(scope="module")
def english_400():
    return english_documents(max_chars=400)


def test_op_groups_partition_ops():
    assert set(RETAIN_OPS) | set(FORGET_OPS) == set(OPS)
    assert not set(RETAIN_OPS) & set(FORGET_OPS)
    assert RETAIN_OPS == ("addition", "subtraction")
    assert FORGET_OPS == ("multiplication", "division")


@pytest.mark.parametrize("op", OPS)
def test_equation_answers_are_correct(op):
    rng = random.Random(f"equation-{op}")
    for _ in range(SAMPLES_PER_OP):
        problem = sample_equation(op, rng)
        match = EQUATION_PATTERN.match(problem.prompt)
        assert match, problem.prompt
        a, symbol, b = int(match[1]), match[2], int(match[3])
        expected = {"addition": a + b, "subtraction": a - b, "multiplication": a * b, "division": a / b}[op]
        assert symbol == SYMBOLS[op]
        assert problem.answer == str(expected), problem.text
        assert problem.text == f"{a} {symbol} {b} = {expected}"
        assert problem.kind == "equation"
        assert problem.suffix == ""
        assert problem.template == ""


@pytest.mark.parametrize("op", OPS)
def test_equation_operand_ranges(op):
    rng = random.Random(f"range-{op}")
    limit = OPERAND_LIMITS[op]
    seen = set()
    for _ in range(SAMPLES_PER_OP):
        match = EQUATION_PATTERN.match(sample_equation(op, rng).prompt)
        a, b = int(match[1]), int(match[3])
        if op == "division":
            assert a % b == 0, (a, b)
            a = a // b
        assert 1 <= a <= limit, (a, b)
        assert 1 <= b <= limit, (a, b)
        seen.update((a, b))
    assert seen == set(range(1, limit + 1))


def test_subtraction_equation_never_negative():
    rng = random.Random(7)
    for _ in range(SAMPLES_PER_OP):
        a, _, b = EQUATION_PATTERN.match(sample_equation("subtraction", rng).prompt).groups()
        assert int(a) >= int(b)


def test_division_equation_answer_float_text():
    rng = random.Random(8)
    for _ in range(SAMPLES_PER_OP):
        problem = sample_equation("division", rng)
        assert problem.answer.endswith(".0"), problem.text
        assert problem.value == int(problem.answer[:-2])
        assert 1 <= problem.value <= 20


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("op", OPS)
def test_word_problem_answers_match_operands(op, split):
    for problem in _word_problems(op, split):
        operands = _prompt_operands(problem)
        assert len(operands) == 2, problem.prompt
        larger, smaller = max(operands), min(operands)
        expected = {
            "addition": larger + smaller,
            "subtraction": larger - smaller,
            "multiplication": larger * smaller,
            "division": larger // smaller,
        }[op]
        if op == "division":
            assert larger % smaller == 0, problem.prompt
        assert problem.answer == str(expected), problem.text


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("op", OPS)
def test_word_problems_cover_every_template(op, split):
    table = TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES
    seen = {problem.template for problem in _word_problems(op, split)}
    assert seen == {f"{op}/{split}/{index:02d}" for index in range(len(table[op]))}


@pytest.mark.parametrize("op", OPS)
def test_word_problem_value_ranges(op):
    limit = OPERAND_LIMITS[op]
    for problem in _word_problems(op, "train"):
        larger, smaller = sorted(_prompt_operands(problem), reverse=True)
        answer = int(problem.answer)
        if op in ("addition", "multiplication"):
            assert 1 <= smaller <= larger <= limit, problem.prompt
        else:
            assert 1 <= smaller <= limit, problem.prompt
            assert 1 <= answer <= limit, problem.text


@pytest.mark.parametrize("op", OPS)
def test_word_problem_text_layout(op):
    for problem in _word_problems(op, "train", count=500):
        assert problem.text == problem.prompt + problem.answer + problem.suffix
        assert problem.kind == "word_problem"
        assert problem.op == op
        assert problem.answer.isdigit(), problem.answer
        assert problem.prompt.endswith(" ")
        assert problem.prompt[0].isupper() or problem.prompt[0].isdigit(), problem.prompt
        assert "{" not in problem.text, problem.text


@pytest.mark.parametrize("op", OPS)
def test_answer_parses_before_suffix(op):
    for problem in _word_problems(op, "eval", count=500) + _word_problems(op, "train", count=500):
        assert parse_answer(problem.answer + problem.suffix) == problem.value, problem.text


def test_filler_names_always_differ():
    rng = random.Random(3)
    for _ in range(5000):
        fillers = arithmetic._draw_fillers(rng)
        assert fillers["name"] != fillers["name2"]


def test_template_counts_per_op():
    for op in OPS:
        assert len(TRAIN_TEMPLATES[op]) == 20, op
        assert len(EVAL_TEMPLATES[op]) == 10, op
    assert set(TRAIN_TEMPLATES) == set(OPS)
    assert set(EVAL_TEMPLATES) == set(OPS)


@pytest.mark.parametrize(
    "template_id, prompt_template, suffix_template",
    [pytest.param(*row, id=row[0]) for row in _all_templates()],
)
def test_template_placeholders_are_valid(template_id, prompt_template, suffix_template):
    prompt_fields = _fields(prompt_template)
    suffix_fields = _fields(suffix_template)
    assert prompt_fields.count("n1") == 1, template_id
    assert prompt_fields.count("n2") == 1, template_id
    assert set(prompt_fields) <= FILLER_FIELDS | {"n1", "n2"}, template_id
    assert set(suffix_fields) <= FILLER_FIELDS, template_id
    assert prompt_template.endswith(" "), template_id
    assert suffix_template == "" or suffix_template[0] in " .", template_id
    literal_text = "".join(template_fragments(prompt_template + suffix_template, min_length=0))
    assert not re.search(r"\d", literal_text), template_id


def test_fillers_have_no_digits():
    for filler in templates.NAMES + templates.CREATURES + templates.OBJECTS + templates.CONTAINERS + templates.PLACES:
        assert not re.search(r"\d", filler), filler


def test_filler_lists_have_no_duplicates():
    for fillers in (templates.NAMES, templates.CREATURES, templates.OBJECTS, templates.CONTAINERS, templates.PLACES):
        assert len(set(fillers)) == len(fillers)
    assert len(templates.NAMES) >= 60
    assert len(templates.CREATURES) >= 30
    assert len(templates.OBJECTS) >= 60


def test_eval_fragments_absent_from_training(training_word_problem_text):
    for op in OPS:
        for index, (prompt_template, _) in enumerate(EVAL_TEMPLATES[op]):
            fragments = template_fragments(prompt_template, min_length=12)
            assert fragments, f"{op}/eval/{index:02d} has no fragment to check"
            for fragment in fragments:
                assert fragment not in training_word_problem_text, (op, index, fragment)


def test_eval_fragments_absent_from_english(english_400):
    english_text = "\n".join(english_400)
    for op in OPS:
        for index, (prompt_template, _) in enumerate(EVAL_TEMPLATES[op]):
            for fragment in template_fragments(prompt_template, min_length=12):
                assert fragment not in english_text, (op, index, fragment)


def test_template_fragments_split_placeholders():
    template = "{name} drove {n1} miles before the break and {n2} miles after it, covering "
    assert template_fragments(template) == [" miles before the break and ", " miles after it, covering "]
    assert template_fragments(template, min_length=5) == [" drove ", " miles before the break and ", " miles after it, covering "]
    assert template_fragments("{a}{b}") == []


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_evaluation_set_is_deterministic(op, kind):
    first = evaluation_set(op, kind, 50, seed=0)
    assert first == evaluation_set(op, kind, 50, seed=0)
    assert first != evaluation_set(op, kind, 50, seed=1)
    assert len(first) == 50
    assert all(problem.op == op and problem.kind == kind for problem in first)


@pytest.mark.parametrize("op", OPS)
def test_evaluation_set_uses_eval_templates(op):
    problems = evaluation_set(op, "word_problem", 300, seed=5)
    for problem in problems:
        assert problem.template.startswith(f"{op}/eval/"), problem.template
    assert len({problem.template for problem in problems}) == len(EVAL_TEMPLATES[op])


def test_evaluation_set_equation_ranges():
    for op in OPS:
        for problem in evaluation_set(op, "equation", 300, seed=2):
            a, _, b = EQUATION_PATTERN.match(problem.prompt).groups()
            a, b = int(a), int(b)
            if op == "division":
                a //= b
            assert 1 <= a <= OPERAND_LIMITS[op], problem.text
            assert 1 <= b <= OPERAND_LIMITS[op], problem.text


@pytest.mark.parametrize(
    "generated, expected",
    [
        ("4", 4.0),
        ("4.0", 4.0),
        (" 12<bos>7", 12.0),
        ("3 5", 3.0),
        ("\n49 apples.", 49.0),
        ("<pad><bos>-7", -7.0),
        ("12.", 12.0),
        ("abc", None),
        ("", None),
        ("   ", None),
        ("<eos>", None),
        ("nan", None),
        ("inf", None),
        ("-Infinity", None),
        ("4,", None),
    ],
)
def test_parse_answer_cases(generated, expected):
    assert parse_answer(generated) == expected


@pytest.mark.parametrize(
    "generated, expected, correct",
    [
        ("4", 4.0, True),
        ("4.0", 4, True),
        (" 12<bos>7", 12, True),
        ("12 is the answer", 12.0, True),
        ("13", 12.0, False),
        ("4.1", 4.0, False),
        ("abc", 4.0, False),
        ("", 0.0, False),
        ("nan", float("nan"), False),
    ],
)
def test_is_correct_cases(generated, expected, correct):
    assert is_correct(generated, expected) is correct


def test_english_documents_size_limits(english_400):
    assert len(english_400) > 500
    assert max(len(doc) for doc in english_400) <= 400
    assert min(len(doc) for doc in english_400) >= 40
    assert len(set(english_400)) == len(english_400)


def test_english_documents_whitespace_collapsed(english_400):
    for doc in english_400:
        assert doc == " ".join(doc.split())


def test_english_documents_deterministic(english_400):
    again = english_documents(max_chars=400)
    assert again == english_400
    again.append("changed")
    assert english_documents(max_chars=400) == english_400


def test_english_documents_cut_at_words():
    full = english_documents(max_chars=100_000, min_chars=1)
    short = english_documents(max_chars=60, min_chars=1)
    uncut = set(full)
    cut_docs = [doc for doc in short if doc not in uncut]
    assert cut_docs
    for doc in cut_docs:
        assert len(doc) <= 60
        # A first word longer than max_chars has no word boundary, so it is cut hard.
        boundary = doc + " " if " " in doc else doc
        assert any(paragraph.startswith(boundary) for paragraph in full), doc


def test_english_documents_invalid_lengths():
    with pytest.raises(ValueError, match="min_chars"):
        english_documents(max_chars=10, min_chars=20)


def test_split_documents_disjoint_and_complete(english_400):
    train, validation = split_documents(english_400, 0.2)
    assert not set(train) & set(validation)
    assert sorted(train + validation) == sorted(english_400)


def test_split_documents_deterministic(english_400):
    assert split_documents(english_400, 0.2) == split_documents(english_400, 0.2)
    assert split_documents(english_400, 0.2) != split_documents(english_400, 0.2, salt="other")


def test_split_documents_keeps_duplicates_together():
    docs = ["alpha text", "beta text", "alpha text", "gamma text"] * 5
    train, validation = split_documents(docs, 0.5)
    assert not set(train) & set(validation)


def test_split_documents_fraction_close(english_400):
    _, validation = split_documents(english_400, 0.2)
    assert abs(len(validation) / len(english_400) - 0.2) < 0.05


def test_split_documents_fraction_extremes(english_400):
    assert split_documents(english_400, 0.0) == (english_400, [])
    assert split_documents(english_400, 1.0) == ([], english_400)
    with pytest.raises(ValueError, match="validation_fraction"):
        split_documents(english_400, 1.5)


def test_problem_record_round_trip():
    rng = random.Random(11)
    problems = [sample_equation(op, rng) for op in OPS] + [sample_word_problem(op, rng, "eval") for op in OPS]
    for problem in problems:
        record = json.loads(json.dumps(problem.to_record()))
        assert record["text"] == problem.text
        assert Problem.from_record(record) == problem


def test_problem_record_text_mismatch():
    record = sample_equation("addition", random.Random(0)).to_record()
    record["text"] = "1 + 1 = 3"
    with pytest.raises(ValueError, match="differs"):
        Problem.from_record(record)


def test_problem_value_and_text():
    problem = Problem(op="division", kind="equation", prompt="12 / 3 = ", answer="4.0", suffix="", template="")
    assert problem.text == "12 / 3 = 4.0"
    assert problem.value == 4.0


@pytest.mark.parametrize(
    "call, bad_value",
    [
        (lambda: sample_equation("modulo", random.Random(0)), "modulo"),
        (lambda: sample_word_problem("modulo", random.Random(0), "train"), "modulo"),
        (lambda: sample_word_problem("addition", random.Random(0), "test"), "test"),
        (lambda: evaluation_set("addition", "riddle", 5, seed=0), "riddle"),
        (lambda: sample_problems(["addition", "power"], 5, random.Random(0), 0.5), "power"),
        (lambda: sample_problems(OPS, 5, random.Random(0), 0.5, split="dev"), "dev"),
        (lambda: Problem(op="modulo", kind="equation", prompt="1 % 1 = ", answer="0", suffix="", template=""), "modulo"),
    ],
)
def test_unknown_names_raise_value_error(call, bad_value):
    with pytest.raises(ValueError) as error:
        call()
    assert repr(bad_value) in str(error.value)
    assert "expected one of" in str(error.value)


def test_sample_problems_mix_and_ops():
    problems = sample_problems(RETAIN_OPS, 4000, random.Random(9), word_problem_fraction=0.25)
    word_share = sum(problem.kind == "word_problem" for problem in problems) / len(problems)
    assert {problem.op for problem in problems} == set(RETAIN_OPS)
    assert abs(word_share - 0.25) < 0.03
    assert all(problem.template.split("/")[1] == "train" for problem in problems if problem.kind == "word_problem")


def test_sample_problems_invalid_arguments():
    with pytest.raises(TypeError):
        sample_problems("addition", 5, random.Random(0), 0.5)
    with pytest.raises(ValueError, match="word_problem_fraction"):
        sample_problems(OPS, 5, random.Random(0), 1.5)
    with pytest.raises(ValueError, match="invalid ops"):
        sample_problems([], 5, random.Random(0), 0.5)
    assert sample_problems(OPS, 0, random.Random(0), 0.5) == []
