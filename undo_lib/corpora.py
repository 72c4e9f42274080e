"""Forget and retain text corpora for the WMDP setting, and probability mixtures of them.

In the WMDP setting of "Distillation Robustifies Unlearning" (arXiv 2506.06278) the model unlearns
biosecurity or cybersecurity text. The raw corpora are the WMDP corpora: the cyber forget and the
cyber and bio retain corpora are public on the Hugging Face hub as configs of ``cais/wmdp-corpora``,
and the bio forget corpus is distributed on request. General retain text comes from wikitext.

A corpus comes from one ``TextSource``:

jsonl
    A local file with one JSON object per line and the document in a string field (``text`` by
    default). This is the main path, because the bio forget corpus is distributed on request.
hub
    A dataset streamed with ``datasets.load_dataset(..., streaming=True)``.

``load_corpus`` keeps documents in file or stream order until a character budget is filled,
drops documents shorter than a minimum length, and then shuffles them with a seed.
``mix_corpora`` draws documents from several named corpora with given probabilities, as
``datasets.interleave_datasets`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from undo_lib.hub import DATASET_OFFLINE_VARIABLES, offline_sentence
from undo_lib.io import file_sha256

logger = logging.getLogger(__name__)

SOURCE_KINDS = ("jsonl", "hub")

# As in datasets.interleave_datasets: "first_exhausted" stops when any corpus has given all its
# documents, and "all_exhausted" restarts exhausted corpora until every corpus has given all of its.
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted")

# Units of a mixture probability: a share of the drawn documents, or of the characters drawn.
MIXTURE_UNITS = ("documents", "characters")

# Largest accepted distance of a probability sum from 1, which allows float rounding.
PROBABILITY_SUM_TOLERANCE = 1e-6


class CorpusSourceError(RuntimeError):
    """A hub dataset could not be reached, found or read."""


@dataclass(frozen=True)
class TextSource:
    """Origin of the documents of one corpus.

    Attributes:
        kind: "jsonl" for a local file, "hub" for a dataset read by ``datasets.load_dataset``.
        path: The jsonl file, or the dataset's hub id (or a local folder that datasets can read).
        text_field: Name of the string field that contains the document.
        config: Dataset configuration name, such as "cyber-forget-corpus". Hub only.
        split: Dataset split. Hub only; a jsonl source keeps the default "train".
        revision: Dataset branch, tag or commit; None reads the default branch. Hub only.
    """

    kind: str
    path: str
    text_field: str = "text"
    config: str | None = None
    split: str = "train"
    revision: str | None = None

    def __post_init__(self):
        if isinstance(self.path, Path):
            object.__setattr__(self, "path", str(self.path))
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"invalid source kind {self.kind!r}: expected one of {', '.join(SOURCE_KINDS)}")
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"invalid path {self.path!r}: expected a jsonl file or a hub dataset id")
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"invalid text_field {self.text_field!r}: expected the name of a string field")
        if self.kind == "jsonl" and (self.config is not None or self.revision is not None or self.split != "train"):
            raise ValueError(f"the jsonl source {self.path} sets config, split or revision, which apply only to "
                             "hub sources. Remove them, or set kind to 'hub'.")

    def describe(self) -> str:
        """Return a short description for messages, such as "hub dataset cais/wmdp-corpora (config ...)"."""
        if self.kind == "jsonl":
            return f"jsonl file {self.path}"
        revision = f"revision {self.revision}" if self.revision else "default branch"
        return f"hub dataset {self.path} (config {self.config}, split {self.split}, {revision})"


# Public WMDP corpora. The bio forget corpus is not among them: it is distributed on request.
# The dataset card of cais/wmdp-corpora lists these configs, each with one field, "text".
WMDP_HUB_SOURCES = {
    "cyber-forget": TextSource("hub", "cais/wmdp-corpora", config="cyber-forget-corpus"),
    "cyber-retain": TextSource("hub", "cais/wmdp-corpora", config="cyber-retain-corpus"),
    "bio-retain": TextSource("hub", "cais/wmdp-corpora", config="bio-retain-corpus"),
}
# General text sources of the paper's WMDP runs: wikitext for unlearning, the others for UNDO
# distillation. NOTE: no test reads them, because tests have no network, and
# legacy-datasets/wikipedia may need a datasets release that still runs dataset scripts. The
# eight Magpie sets of the distillation mixture (field "response") are left out, because their
# full hub ids are not known here.
GENERAL_HUB_SOURCES = {
    "wikitext": TextSource("hub", "Salesforce/wikitext", config="wikitext-2-v1"),
    "wikipedia": TextSource("hub", "legacy-datasets/wikipedia", config="20220301.en"),
    "fineweb-edu": TextSource("hub", "HuggingFaceFW/fineweb-edu", config="sample-10BT"),
}

# Mixtures of the paper's WMDP runs. The paper interleaves packed token sequences, so there its
# probabilities are shares of tokens. mix_corpora(..., unit="characters") is the closest match.
RELEARN_PROBABILITIES = {"forget": 0.5, "retain": 0.5}  # raw corpora, with "all_exhausted"
# The paper's "retain" here is a QA rewrite of the retain corpus, which is not public.
UNLEARN_RETAIN_PROBABILITIES = {"retain": 0.5, "wikitext": 0.5}
DISTILL_PROBABILITIES = {  # UNDO distillation, with "all_exhausted"
    "fineweb-edu": 0.35,
    "wikipedia": 0.35,
    "magpie-llama-3.3": 0.05,
    "magpie-llama-3.1": 0.04,
    "magpie-llama-3": 0.04,
    "magpie-gemma2": 0.04,
    "magpie-phi3": 0.04,
    "magpie-qwen": 0.04,
    "magpie-qwen2": 0.04,
    "wmdp-wikipedia-qa": 0.01,
}
PAPER_STOPPING_STRATEGY = "all_exhausted"


@dataclass
class Corpus:
    """The documents of one named corpus, in shuffled order, and where they came from.

    ``sha256`` is the hash of the whole file for a jsonl source. For a hub source it is the hash of
    the raw texts read, each followed by a NUL byte.
    """

    name: str
    source: TextSource
    documents: list[str]
    sha256: str

    @property
    def characters(self) -> int:
        """Total length of the documents in characters."""
        return sum(len(document) for document in self.documents)

    def record(self) -> dict:
        """Return the provenance of the corpus as a JSON-ready dict."""
        return {"name": self.name, "kind": self.source.kind, "path": self.source.path,
                "config": self.source.config, "split": self.source.split, "revision": self.source.revision,
                "text_field": self.source.text_field, "sha256": self.sha256,
                "documents": len(self.documents), "characters": self.characters}


# --- jsonl files -----------------------------------------------------------------------------

def read_jsonl_texts(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Return an iterator over the ``text_field`` string of each line of the jsonl file ``path``.

    Blank lines are skipped. The file is read lazily, so errors about its lines are raised while
    iterating.

    Raises:
        FileNotFoundError: If ``path`` is not a file (raised at once).
        ValueError: If the file has no non-blank line, or a line is not valid UTF-8 or JSON, is not
            an object, or lacks a string ``text_field``. The message names the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} not found. Fix the path, or export the corpus to a jsonl file "
                                f"with one JSON object per line and the document in the field {text_field!r}.")
    return _jsonl_texts(path, text_field)


def _jsonl_texts(path: Path, text_field: str) -> Iterator[str]:
    found_line = False
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = _decode_line(raw, path, number)
            if not line.strip():
                continue
            found_line = True
            yield _jsonl_record_text(line, path, number, text_field)
    if not found_line:
        raise ValueError(f"corpus file {path} is empty. Write one JSON object per line, with the document in "
                         f"the field {text_field!r}.")


def _decode_line(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}, line {number}: not valid UTF-8 ({err.reason} at byte {err.start}). "
                         "Save the file as UTF-8.") from err


def _jsonl_record_text(line: str, path: Path, number: int, text_field: str) -> str:
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err.msg} at column {err.colno}). "
                         "Write one JSON object per line.") from err
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    if text_field not in record:
        raise ValueError(f"{where}: missing field {text_field!r} (fields: {sorted(record)}). "
                         "Set text_field to the field that contains the document.")
    if not isinstance(record[text_field], str):
        raise ValueError(f"{where}: field {text_field!r} is {type(record[text_field]).__name__}, expected a string.")
    return record[text_field]


# --- hub datasets ----------------------------------------------------------------------------

def stream_hub_texts(source: TextSource, digest=None) -> Iterator[str]:
    """Yield the ``text_field`` string of each record of a hub dataset, streamed in order.

    With ``digest`` (a hashlib object), the UTF-8 bytes of each text and a NUL byte are fed to it.

    Raises:
        CorpusSourceError: If the dataset cannot be reached, found or read.
        ValueError: If a record lacks a string ``text_field``, or datasets rejects the config name.
        ImportError: If the datasets package is not installed.
    """
    try:
        import datasets
        from datasets.exceptions import DatasetsError
    except ImportError as err:
        raise ImportError(f"hub corpus sources need the datasets package ({err}). Install it "
                          "(pip install datasets==5.2.0), or use jsonl sources.") from err

    try:
        dataset = datasets.load_dataset(source.path, name=source.config, split=source.split,
                                        revision=source.revision, streaming=True)
        for index, record in enumerate(dataset):
            text = _hub_record_text(record, source, index)
            if digest is not None:
                digest.update(text.encode("utf-8") + b"\0")
            yield text
    except (OSError, DatasetsError) as err:  # connection, offline-mode, not-found and access errors
        raise CorpusSourceError(_hub_error_message(source, err)) from err


def _hub_record_text(record, source: TextSource, index: int) -> str:
    if not isinstance(record, Mapping) or not isinstance(record.get(source.text_field), str):
        fields = sorted(record) if isinstance(record, Mapping) else type(record).__name__
        raise ValueError(f"record {index} of the {source.describe()} has no string field {source.text_field!r} "
                         f"(fields: {fields}). Set text_field to the field that contains the document.")
    return record[source.text_field]


def _hub_error_hint(err: BaseException) -> str:
    from datasets.exceptions import DatasetNotFoundError

    offline = offline_sentence(DATASET_OFFLINE_VARIABLES, "datasets")
    if offline:
        return offline
    if isinstance(err, DatasetNotFoundError):
        return ("The dataset does not exist, or it is gated or private. For a gated dataset, request access on "
                "its hub page and set HF_TOKEN to an access token of the account that has access.")
    return "Check the dataset id, config and the network connection."


def _hub_error_message(source: TextSource, err: BaseException) -> str:
    detail = str(err).strip().rstrip(".")
    return (f"cannot read the {source.describe()}: {type(err).__name__}: {detail}. {_hub_error_hint(err)} "
            f"To work without the hub, export the documents to a jsonl file with the document in the field "
            f"{source.text_field!r} and use a jsonl source.")


# --- corpora ---------------------------------------------------------------------------------

def source_texts(source: TextSource, digest=None) -> Iterator[str]:
    """Return an iterator over the raw documents of ``source``, in file or stream order.

    ``digest`` is fed the texts of a hub source only (see ``stream_hub_texts``).
    """
    if source.kind == "jsonl":
        return read_jsonl_texts(source.path, source.text_field)
    return stream_hub_texts(source, digest)


def _check_budget(max_chars: int | None, min_chars: int) -> None:
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 1:
        raise ValueError(f"invalid min_chars {min_chars!r}: expected a whole number of characters of at least 1")
    if max_chars is None:
        return
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < min_chars:
        raise ValueError(f"invalid max_chars {max_chars!r}: expected None (no budget) or a whole number of "
                         f"characters of at least min_chars ({min_chars})")


def select_documents(texts: Iterable[str], max_chars: int | None, min_chars: int) -> list[str]:
    """Keep documents in order until their characters fill ``max_chars``.

    Each text is stripped of leading and trailing whitespace, and a text shorter than ``min_chars``
    is skipped. The document that crosses the budget is cut to the remaining characters and kept
    if the cut is at least ``min_chars`` long, so the total never exceeds ``max_chars``. Reading
    stops there, which matters for hub streams. ``max_chars=None`` keeps every long enough text.

    Raises:
        ValueError: If ``min_chars`` is below 1 or ``max_chars`` is below ``min_chars``.
    """
    _check_budget(max_chars, min_chars)
    documents: list[str] = []
    total = 0
    for text in texts:
        text = text.strip()
        if len(text) < min_chars:
            continue
        if max_chars is not None and total + len(text) > max_chars:
            remaining = max_chars - total
            if remaining >= min_chars:
                documents.append(text[:remaining])
            break
        documents.append(text)
        total += len(text)
        if total == max_chars:
            break
    return documents


def load_corpus(name: str, source: TextSource, max_chars: int | None, min_chars: int,
                seed: int | None) -> Corpus:
    """Read, filter and shuffle the documents of ``source`` as the corpus ``name``.

    Documents are selected in file or stream order by ``select_documents``, so a budget takes the
    first documents of a file, not a random sample of them. The selected documents are then
    shuffled with ``random.Random(seed)``. With ``seed=None`` they keep their order.

    Raises:
        FileNotFoundError, ValueError: From ``read_jsonl_texts`` and ``select_documents``, or if no
            document of at least ``min_chars`` characters is found.
        CorpusSourceError: If a hub dataset cannot be read.
    """
    if source.kind == "hub" and source.revision is None:
        logger.warning("no revision is set for the %s, so the text may change between runs. Set its revision "
                       "to a commit to pin it.", source.describe())
    digest = hashlib.sha256()
    # closing() ends a stream or closes a file that the budget stopped early.
    with contextlib.closing(source_texts(source, digest)) as texts:
        documents = select_documents(texts, max_chars, min_chars)
    if not documents:
        raise ValueError(f"corpus {name!r}: the {source.describe()} has no document of at least {min_chars} "
                         "characters. Lower min_chars or use another source.")
    if seed is not None:
        random.Random(seed).shuffle(documents)

    sha256 = file_sha256(source.path) if source.kind == "jsonl" else digest.hexdigest()
    corpus = Corpus(name=name, source=source, documents=documents, sha256=sha256)
    logger.info("corpus %s: %d documents, %d characters from the %s", name, len(documents), corpus.characters,
                source.describe())
    return corpus


# --- mixtures --------------------------------------------------------------------------------

def check_probabilities(probabilities: Mapping[str, float], names: Iterable[str] | None = None) -> None:
    """Raise ValueError unless ``probabilities`` maps source names to numbers in (0, 1] that sum to 1.

    With ``names``, the keys must also be exactly those names. The message names the bad value
    and the fix.
    """
    if not probabilities:
        raise ValueError("the mixture has no sources: expected probabilities such as {'forget': 0.5, 'retain': 0.5}")
    for name, probability in probabilities.items():
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not math.isfinite(probability):
            raise ValueError(f"invalid probability {probability!r} for source {name!r}: expected a number in (0, 1]")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"invalid probability {probability!r} for source {name!r}: expected a number in (0, 1]. "
                             "Remove a source that should not be drawn.")
    total = math.fsum(probabilities.values())
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(f"the probabilities {dict(probabilities)} sum to {total:.6g}, expected 1. "
                         "Change them so that they sum to 1.")
    if names is not None:
        _check_source_names(probabilities, set(names))


def _check_source_names(probabilities: Mapping[str, float], names: set[str]) -> None:
    missing = sorted(names - set(probabilities))
    unknown = sorted(set(probabilities) - names)
    if missing:
        raise ValueError(f"no probability for the corpora {missing}: give every corpus of the mixture a probability")
    if unknown:
        raise ValueError(f"probabilities name unknown corpora {unknown}: the corpora are {sorted(names)}")


def document_probabilities(corpora: Mapping[str, Sequence[str]], probabilities: Mapping[str, float],
                           unit: str) -> dict[str, float]:
    """Return the probability of drawing a document from each corpus.

    With ``unit="documents"`` these are ``probabilities``. With ``unit="characters"`` each
    probability is divided by the corpus's mean document length and the results are normalised, so
    that the expected share of characters from each corpus equals its probability. Every corpus
    must contain text (``mix_corpora`` checks this).
    """
    if unit not in MIXTURE_UNITS:
        raise ValueError(f"invalid unit {unit!r}: expected one of {', '.join(MIXTURE_UNITS)}")
    if unit == "documents":
        return dict(probabilities)
    weights = {}
    for name, probability in probabilities.items():
        mean_chars = sum(len(document) for document in corpora[name]) / len(corpora[name])
        weights[name] = probability / mean_chars
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def _check_mixture_options(corpora: Mapping[str, Sequence[str]], stopping_strategy: str,
                           max_documents: int | None) -> None:
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise ValueError(f"invalid stopping_strategy {stopping_strategy!r}: expected one of "
                         f"{', '.join(STOPPING_STRATEGIES)}")
    if max_documents is not None and (isinstance(max_documents, bool) or not isinstance(max_documents, int)
                                      or max_documents < 1):
        raise ValueError(f"invalid max_documents {max_documents!r}: expected None or a whole number of at least 1")
    for name, documents in corpora.items():
        if len(documents) == 0 or sum(len(document) for document in documents) == 0:
            raise ValueError(f"corpus {name!r} of the mixture has no text: load at least one non-empty document")


# datasets.interleave_datasets draws its source indices in blocks of this many (datasets 5.2.0).
_DRAW_BLOCK = 1000


def _source_draws(weights: list[float], seed: int) -> Iterator[int]:
    """Yield source indices drawn with ``weights``, as datasets.interleave_datasets draws them.

    interleave_datasets in datasets 5.2.0 calls ``numpy.random.default_rng(seed).choice`` for
    blocks of 1000 indices. The weights are normalised first, which leaves weights that already
    sum to exactly 1 unchanged.
    """
    total = math.fsum(weights)
    normalised = [weight / total for weight in weights]
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.choice(len(normalised), size=_DRAW_BLOCK, p=normalised).tolist()


def mix_corpora(corpora: Mapping[str, Sequence[str]], probabilities: Mapping[str, float], seed: int,
                stopping_strategy: str = "first_exhausted", unit: str = "documents",
                max_documents: int | None = None) -> list[dict]:
    """Draw documents from named corpora at random until a stopping rule ends the mixture.

    Each draw picks a corpus with its probability (see ``document_probabilities`` for ``unit``)
    and takes that corpus's next document in order. "first_exhausted" stops after the draw that
    takes the last unused document of any corpus. "all_exhausted" starts an exhausted corpus again
    from its first document and stops once every corpus has given all its documents.
    ``max_documents`` stops the mixture earlier.

    The draws and stopping rules are those of ``datasets.interleave_datasets`` (datasets 5.2.0) on
    map-style datasets in the order of the keys of ``probabilities``. With ``unit="documents"``
    and no ``max_documents``, the mixture is the one interleave_datasets returns for the same seed.

    NOTE: the paper interleaves packed token sequences, not documents, so its mixtures are not
    reproduced document by document.

    Returns:
        One ``{"text": document, "source": corpus name}`` record per draw.

    Raises:
        ValueError: If the probabilities are invalid or do not match the corpora, a corpus is empty,
            or an option is invalid.
    """
    check_probabilities(probabilities, corpora)
    _check_mixture_options(corpora, stopping_strategy, max_documents)
    draw_probabilities = document_probabilities(corpora, probabilities, unit)
    names = list(probabilities)
    draws = _source_draws([draw_probabilities[name] for name in names], seed)

    positions = dict.fromkeys(names, 0)
    exhausted: set[str] = set()
    mixed: list[dict] = []
    while max_documents is None or len(mixed) < max_documents:
        name = names[next(draws)]
        documents = corpora[name]
        mixed.append({"text": documents[positions[name] % len(documents)], "source": name})
        positions[name] += 1
        if positions[name] == len(documents):
            exhausted.add(name)
            if stopping_strategy == "first_exhausted" or len(exhausted) == len(names):
                break

    logger.info("mixture of %d documents (%s, unit %s): %s", len(mixed), stopping_strategy, unit,
                summarize_mixture(mixed))
    return mixed


def summarize_mixture(mixed: Iterable[Mapping[str, str]]) -> dict[str, dict]:
    """Return per source the number of documents and characters in ``mixed`` and their shares."""
    counts: dict[str, dict] = {}
    for record in mixed:
        entry = counts.setdefault(record["source"], {"documents": 0, "characters": 0})
        entry["documents"] += 1
        entry["characters"] += len(record["text"])
    total_documents = sum(entry["documents"] for entry in counts.values())
    total_characters = sum(entry["characters"] for entry in counts.values())
    for entry in counts.values():
        entry["document_share"] = entry["documents"] / total_documents
        entry["character_share"] = entry["characters"] / total_characters if total_characters else 0.0
    return counts
