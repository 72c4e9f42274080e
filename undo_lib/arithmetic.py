"""Arithmetic problems for the retain/forget split, answer parsing and English text.

Retain operations are addition and subtraction and forget operations are
multiplication and division, as in "Distillation Robustifies Unlearning"
(arXiv 2506.06278). A problem is either a bare equation such as ``"12 / 3 = 4.0"``
or a word problem rendered from a template in ``undo_lib.templates``.

Operand ranges:
    equations: addition and subtraction draw a and b from 1..50, and subtraction
        swaps them so that a >= b. Multiplication and division draw a and b from
        1..20, and division then sets a to a * b, so ``c = a / b`` is a whole
        number written as a float ("4.0").
    word problems: addition draws n1 and n2 from 1..50. Subtraction draws n2 and
        the answer from 1..50 and sets n1 = answer + n2. Multiplication draws n1
        and n2 from 1..20. Division draws n2 and the answer from 1..20 and sets
        n1 = n2 * answer. Word-problem answers are printed as integers.

Besides the problems, the module provides offline English text from Python's
bundled ``pydoc_data.topics`` and a deterministic hash-based train/validation split.
"""

import functools
import hashlib
import logging
import math
import random
import re
import string
from dataclasses import asdict, dataclass
from typing import Iterable

from pydoc_data import topics as pydoc_topics

from undo_lib.templates import (
    CONTAINERS,
    CREATURES,
    EVAL_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
    TRAIN_TEMPLATES,
)

logger = logging.getLogger(__name__)

OPS = ("addition", "subtraction", "multiplication", "division")
RETAIN_OPS = ("addition", "subtraction")
FORGET_OPS = ("multiplication", "division")
KINDS = ("equation", "word_problem")
SPLITS = ("train", "eval")

OP_SYMBOLS = {"addition": "+", "subtraction": "-", "multiplication": "*", "division": "/"}

_RETAIN_MAX_OPERAND = 50
_FORGET_MAX_OPERAND = 20

# Separators between tokens of a model's output: whitespace and the special tokens
# that a decoded generation may still contain.
_ANSWER_SEPARATOR = re.compile(r"\s+|<bos>|<eos>|<pad>")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def _check_choice(kind_of_value: str, value: object, allowed: Iterable[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"invalid {kind_of_value} {value!r}: expected one of {allowed}")


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem, split into the text before, at and after the answer.

    Attributes:
        op: Operation name, one of ``OPS``.
        kind: Problem kind, one of ``KINDS``.
        prompt: Text before the answer. It ends with a space.
        answer: Answer text exactly as it appears in training text, such as
            "49", "4.0" (division equation) or "7" (word problem).
        suffix: Text after the answer, "" for equations.
        template: "" for equations, otherwise a template id "<op>/<split>/<index>"
            with a zero-based two-digit index into ``TRAIN_TEMPLATES[op]`` or
            ``EVAL_TEMPLATES[op]``, such as "division/eval/07".
    """

    op: str
    kind: str
    prompt: str
    answer: str
    suffix: str
    template: str

    def __post_init__(self) -> None:
        _check_choice("op", self.op, OPS)
        _check_choice("kind", self.kind, KINDS)
        if not self.prompt.endswith(" "):
            raise ValueError(f"invalid prompt {self.prompt!r}: a prompt must end with a space")

    @property
    def text(self) -> str:
        """Full problem text: prompt, answer and suffix."""
        return self.prompt + self.answer + self.suffix

    @property
    def value(self) -> float:
        """Numeric value of the answer."""
        return float(self.answer)

    def to_record(self) -> dict:
        """Return a JSON-serialisable dict of all fields plus ``"text"``."""
        record = asdict(self)
        record["text"] = self.text
        return record

    @classmethod
    def from_record(cls, record: dict) -> "Problem":
        """Build a Problem from a dict written by ``to_record``.

        Raises:
            ValueError: If a field is missing, or if the record has a ``"text"``
                entry that differs from prompt + answer + suffix.
        """
        fields = ("op", "kind", "prompt", "answer", "suffix", "template")
        missing = [field for field in fields if field not in record]
        if missing:
            raise ValueError(f"invalid problem record: missing fields {missing}")

        problem = cls(**{field: record[field] for field in fields})
        if "text" in record and record["text"] != problem.text:
            raise ValueError(
                f"invalid problem record: text {record['text']!r} differs from "
                f"prompt + answer + suffix {problem.text!r}"
            )
        return problem


def _draw_equation_operands(op: str, rng: random.Random) -> tuple[int, int]:
    """Draw the two operands of an equation, already ordered and scaled."""
    max_operand = _RETAIN_MAX_OPERAND if op in RETAIN_OPS else _FORGET_MAX_OPERAND
    a = rng.randint(1, max_operand)
    b = rng.randint(1, max_operand)
    if op == "subtraction" and a < b:
        a, b = b, a
    if op == "division":
        a = a * b
    return a, b


def sample_equation(op: str, rng: random.Random) -> Problem:
    """Sample one equation ``"a <symbol> b = c"`` for an operation.

    Args:
        op: Operation name, one of ``OPS``.
        rng: Random number generator that supplies the operands.

    Returns:
        An equation Problem whose prompt ends with ``"= "``. Division answers are
        Python floats as text ("4.0"), the other answers are integers.

    Raises:
        ValueError: If ``op`` is not in ``OPS``.
    """
    _check_choice("op", op, OPS)
    a, b = _draw_equation_operands(op, rng)
    results = {"addition": a + b, "subtraction": a - b, "multiplication": a * b, "division": a / b}
    return Problem(
        op=op,
        kind="equation",
        prompt=f"{a} {OP_SYMBOLS[op]} {b} = ",
        answer=str(results[op]),
        suffix="",
        template="",
    )


def _draw_word_problem_numbers(op: str, rng: random.Random) -> tuple[int, int, int]:
    """Draw ``(n1, n2, answer)`` for a word problem."""
    if op == "addition":
        n1 = rng.randint(1, _RETAIN_MAX_OPERAND)
        n2 = rng.randint(1, _RETAIN_MAX_OPERAND)
        return n1, n2, n1 + n2
    if op == "subtraction":
        n2 = rng.randint(1, _RETAIN_MAX_OPERAND)
        answer = rng.randint(1, _RETAIN_MAX_OPERAND)
        return answer + n2, n2, answer
    if op == "multiplication":
        n1 = rng.randint(1, _FORGET_MAX_OPERAND)
        n2 = rng.randint(1, _FORGET_MAX_OPERAND)
        return n1, n2, n1 * n2
    n2 = rng.randint(1, _FORGET_MAX_OPERAND)
    answer = rng.randint(1, _FORGET_MAX_OPERAND)
    return n2 * answer, n2, answer


def _draw_fillers(rng: random.Random) -> dict[str, str]:
    """Draw a value for every non-numeric placeholder, with two different names."""
    name, name2 = rng.sample(NAMES, 2)
    creature = rng.choice(CREATURES)
    return {
        "name": name,
        "name2": name2,
        "creature": creature,
        "Creature": creature[0].upper() + creature[1:],
        "obj": rng.choice(OBJECTS),
        "containers": rng.choice(CONTAINERS),
        "place": rng.choice(PLACES),
    }


def sample_word_problem(op: str, rng: random.Random, split: str) -> Problem:
    """Sample one word problem from the training or evaluation templates.

    Args:
        op: Operation name, one of ``OPS``.
        rng: Random number generator that supplies template, numbers and fillers.
        split: ``"train"`` for ``TRAIN_TEMPLATES`` or ``"eval"`` for the held-out
            ``EVAL_TEMPLATES``.

    Returns:
        A word Problem with an integer answer and a template id such as
        "addition/train/03".

    Raises:
        ValueError: If ``op`` is not in ``OPS`` or ``split`` is not in ``SPLITS``.
    """
    _check_choice("op", op, OPS)
    _check_choice("split", split, SPLITS)
    templates = TRAIN_TEMPLATES[op] if split == "train" else EVAL_TEMPLATES[op]
    index = rng.randrange(len(templates))
    prompt_template, suffix_template = templates[index]

    n1, n2, answer = _draw_word_problem_numbers(op, rng)
    fields = _draw_fillers(rng)
    return Problem(
        op=op,
        kind="word_problem",
        prompt=prompt_template.format(n1=n1, n2=n2, **fields),
        answer=str(answer),
        suffix=suffix_template.format(**fields),
        template=f"{op}/{split}/{index:02d}",
    )


def sample_problems(
    ops: Iterable[str],
    n: int,
    rng: random.Random,
    word_problem_fraction: float,
    split: str = "train",
) -> list[Problem]:
    """Sample a mix of equations and word problems.

    Each problem draws its operation uniformly from ``ops`` and is a word problem
    with probability ``word_problem_fraction``, otherwise an equation.

    Args:
        ops: Operation names, each one of ``OPS``.
        n: Number of problems.
        rng: Random number generator.
        word_problem_fraction: Probability in [0, 1] that a problem is a word problem.
        split: Template split for the word problems, ``"train"`` or ``"eval"``.

    Returns:
        ``n`` problems.

    Raises:
        TypeError: If ``ops`` is a single string instead of a sequence of names.
        ValueError: If ``ops`` is empty or names an unknown operation, ``n`` is
            negative, ``word_problem_fraction`` is outside [0, 1], or ``split``
            is not in ``SPLITS``.
    """
    if isinstance(ops, str):
        raise TypeError(f"ops must be a sequence of operation names, not the string {ops!r}")
    ops = tuple(ops)
    if not ops:
        raise ValueError(f"invalid ops (): expected at least one of {OPS}")
    for op in ops:
        _check_choice("op", op, OPS)
    _check_choice("split", split, SPLITS)
    if n < 0:
        raise ValueError(f"invalid n {n}: expected a non-negative number of problems")
    if not 0.0 <= word_problem_fraction <= 1.0:
        raise ValueError(f"invalid word_problem_fraction {word_problem_fraction}: expected a value in [0, 1]")

    problems = []
    for _ in range(n):
        op = rng.choice(ops)
        if rng.random() < word_problem_fraction:
            problems.append(sample_word_problem(op, rng, split))
        else:
            problems.append(sample_equation(op, rng))
    return problems


def evaluation_set(op: str, kind: str, n: int, seed: int) -> list[Problem]:
    """Build a deterministic evaluation set for one operation and kind.

    Equations come from the training distribution. Word problems use only the
    held-out ``EVAL_TEMPLATES``. The generator is seeded with the string
    ``f"{seed}-{op}-{kind}"``, so each (op, kind) pair gets its own stream and the
    set does not depend on ``PYTHONHASHSEED``.

    Args:
        op: Operation name, one of ``OPS``.
        kind: Problem kind, one of ``KINDS``.
        n: Number of problems.
        seed: Seed for the set.

    Returns:
        ``n`` problems, identical for identical arguments.

    Raises:
        ValueError: If ``op`` or ``kind`` is unknown or ``n`` is negative.
    """
    _check_choice("op", op, OPS)
    _check_choice("kind", kind, KINDS)
    if n < 0:
        raise ValueError(f"invalid n {n}: expected a non-negative number of problems")

    rng = random.Random(f"{seed}-{op}-{kind}")
    if kind == "equation":
        return [sample_equation(op, rng) for _ in range(n)]
    return [sample_word_problem(op, rng, "eval") for _ in range(n)]


def parse_answer(generated: str) -> float | None:
    """Parse the first token of a model's output as a number.

    The output is stripped and split on whitespace and on the special tokens
    ``<bos>``, ``<eos>`` and ``<pad>``. The first non-empty piece is parsed with
    ``float``, so " 12<bos>7" gives 12.0 and "3 5" gives 3.0.

    Args:
        generated: Decoded model output that follows the prompt.

    Returns:
        The number, or None when there is no piece, the piece is not a number,
        or it is NaN or infinite.
    """
    pieces = [piece for piece in _ANSWER_SEPARATOR.split(generated.strip()) if piece]
    if not pieces:
        return None
    try:
        value = float(pieces[0])
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value


def is_correct(generated: str, expected: float, tolerance: float = 1e-6) -> bool:
    """Check whether the first token of ``generated`` equals ``expected``.

    Args:
        generated: Decoded model output that follows the prompt.
        expected: Expected answer, for example ``Problem.value``.
        tolerance: Maximum absolute difference that still counts as equal, so
            "4" matches 4.0 and "4.0" matches 4.

    Returns:
        True when the output parses and lies within ``tolerance`` of ``expected``.
    """
    value = parse_answer(generated)
    return value is not None and abs(value - expected) <= tolerance


def _cut_at_word_boundary(paragraph: str, max_chars: int) -> str:
    """Cut a paragraph to at most ``max_chars`` characters, at the last space if any."""
    if len(paragraph) <= max_chars:
        return paragraph
    cut = paragraph.rfind(" ", 0, max_chars + 1)
    if cut <= 0:
        return paragraph[:max_chars]
    return paragraph[:cut]


@functools.lru_cache(maxsize=8)
def _english_documents(max_chars: int, min_chars: int) -> tuple[str, ...]:
    # Cached as an immutable tuple, so english_documents can hand out fresh lists.
    documents: dict[str, None] = {}
    for topic in sorted(pydoc_topics.topics):
        for block in _PARAGRAPH_BREAK.split(pydoc_topics.topics[topic]):
            paragraph = " ".join(block.split())
            if len(paragraph) < min_chars:
                continue
            paragraph = _cut_at_word_boundary(paragraph, max_chars)
            # A paragraph that was a single long word can fall below min_chars after the cut.
            if len(paragraph) >= min_chars:
                documents.setdefault(paragraph)
    logger.debug("Read %d English documents from pydoc_data.topics", len(documents))
    return tuple(documents)


def english_documents(max_chars: int, min_chars: int = 40) -> list[str]:
    """Read English running text from Python's bundled ``pydoc_data.topics``.

    The help topics (79 topics and about 465,000 characters in CPython 3.11.7) are
    read in sorted topic order and split into paragraphs on blank lines.
    Whitespace in each paragraph is collapsed to single spaces. Paragraphs shorter
    than ``min_chars`` are dropped, longer ones are cut at the last word boundary
    within ``max_chars``, and duplicates are removed with the first occurrence kept.
    The text ships with Python, so no network access is needed, but the documents
    change between Python versions.

    NOTE: Heading underlines such as ``****`` stay in the text, because they sit in
    the same paragraph as their heading (about 90 of 1,625 documents at max_chars=400).

    Args:
        max_chars: Maximum length of a document in characters.
        min_chars: Minimum length of a document in characters.

    Returns:
        A new list of documents, identical for identical arguments on one Python version.

    Raises:
        ValueError: If ``min_chars`` is negative or larger than ``max_chars``.
    """
    if min_chars < 0 or max_chars < min_chars or max_chars < 1:
        raise ValueError(
            f"invalid lengths max_chars={max_chars}, min_chars={min_chars}: "
            "expected 0 <= min_chars <= max_chars and max_chars >= 1"
        )
    return list(_english_documents(max_chars, min_chars))


def _hash_fraction(text: str, salt: str) -> float:
    """Map text to a number in [0, 1) with sha256."""
    digest = hashlib.sha256(f"{salt}\x00{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(
    docs: list[str], validation_fraction: float, salt: str = "undo"
) -> tuple[list[str], list[str]]:
    """Split documents into train and validation sets by a hash of their text.

    A document goes to validation when the sha256 hash of ``salt`` and its text,
    read as a number in [0, 1), is below ``validation_fraction``. The split depends
    only on the text, so copies of one document always land on the same side, and
    the order of ``docs`` is kept within each side.

    Args:
        docs: Documents to split.
        validation_fraction: Expected share of validation documents, in [0, 1].
        salt: Text mixed into the hash. A different salt gives a different split.

    Returns:
        ``(train, validation)`` lists.

    Raises:
        ValueError: If ``validation_fraction`` is outside [0, 1].
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"invalid validation_fraction {validation_fraction}: expected a value in [0, 1]")

    train, validation = [], []
    for doc in docs:
        if _hash_fraction(doc, salt) < validation_fraction:
            validation.append(doc)
        else:
            train.append(doc)
    return train, validation


def template_fragments(template: str, min_length: int = 12) -> list[str]:
    """Return the literal text pieces of a template that are at least ``min_length`` long.

    The pieces are the text between ``{placeholders}``, unchanged. Leakage checks
    search training text for the fragments of evaluation templates.
    """
    pieces = [literal for literal, _, _, _ in string.Formatter().parse(template)]
    return [piece for piece in pieces if len(piece) >= min_length]
