"""The language data stage: English (retain) and Korean (forget) text files for every later stage.

The corpus comes from one of three sources (``data.language.source``, see ``undo_lib.language``):
Debian documentation packages (offline), streamed Hugging Face datasets (hub) or the user's files
(local). Documents are split into train and validation per language, disjoint and deduplicated.
Training files are document mixtures drawn with replacement from the train splits:

- ``pretrain_full``: English and Korean, Korean with probability ``korean_fraction`` (paper: 0.5);
- ``pretrain_oracle``: English only, the data-filtered oracle;
- ``distill``: the same mixture as the full model, so distillation inputs include Korean text;
- ``forget`` / ``retain``: Korean / English documents for unlearning;
- ``relearn``: Korean documents only, for the relearning attack.

The validation files hold the documents the English and Korean CE metrics are measured on.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from undo_lib.config import LanguageDataParams, TokenizerParams, to_dict
from undo_lib.io import atomic_dir, file_sha256, write_json, write_jsonl
from undo_lib.language import Corpus, hub_corpus, local_corpus, offline_corpus, split_train_validation
from undo_lib.prepare import MANIFEST
from undo_lib.tokenizer import encode, train_tokenizer

logger = logging.getLogger(__name__)

TRAINING_FILES = ("pretrain_full", "pretrain_oracle", "distill", "forget", "retain", "relearn",
                  "english_train", "korean_train")
VALIDATION_FILES = ("english_validation", "korean_validation")


def load_corpus(params: LanguageDataParams) -> Corpus:
    """Read the English and Korean documents from the source ``params.source`` names."""
    if params.source == "offline":
        offline = params.offline
        return offline_corpus(Path(offline.cache_dir).expanduser(), dict(offline.packages), params.max_document_chars,
                              params.min_hangul_share, offline.include_python_docs)
    if params.source == "local":
        return local_corpus([Path(f) for f in params.local.english], [Path(f) for f in params.local.korean],
                            params.max_document_chars, params.min_hangul_share)
    specs = {language: to_dict(getattr(params.hub, language)) for language in ("english", "korean")}
    max_chars = {language: spec.pop("max_chars") for language, spec in specs.items()}
    return hub_corpus(specs["english"], specs["korean"], max_chars, params.max_document_chars,
                      params.min_hangul_share)


def _records(texts: list[str], source: str) -> list[dict]:
    return [{"text": t, "source": source} for t in texts]


def _mixture(n: int, english: list[str], korean: list[str], korean_prob: float, rng: random.Random) -> list[dict]:
    """``n`` documents drawn with replacement: Korean with probability ``korean_prob``, else English."""
    records = []
    for _ in range(n):
        if rng.random() < korean_prob:
            records.append({"text": rng.choice(korean), "source": "korean"})
        else:
            records.append({"text": rng.choice(english), "source": "english"})
    return records


def build_language_files(params: LanguageDataParams, corpus: Corpus, seed: int) -> dict[str, list[dict]]:
    """Split the corpus and draw every language-setting record list, keyed by file name (no ``.jsonl``)."""
    english_train, english_val = split_train_validation(corpus.english, params.validation_fraction, seed)
    korean_train, korean_val = split_train_validation(corpus.korean, params.validation_fraction, seed + 1)
    # The split keeps the source order, and the evaluator reads the first documents, so shuffle.
    random.Random(f"{seed}-validation").shuffle(english_val)
    random.Random(f"{seed}-validation").shuffle(korean_val)
    rng = {name: random.Random(f"{seed}-{name}") for name in TRAINING_FILES}
    p_ko = params.korean_fraction
    return {
        "pretrain_full": _mixture(params.pretrain_documents, english_train, korean_train, p_ko, rng["pretrain_full"]),
        "pretrain_oracle": _mixture(params.pretrain_documents, english_train, korean_train, 0.0,
                                    rng["pretrain_oracle"]),
        "distill": _mixture(params.distill_documents, english_train, korean_train, p_ko, rng["distill"]),
        "forget": _mixture(params.unlearn_documents, english_train, korean_train, 1.0, rng["forget"]),
        "retain": _mixture(params.unlearn_documents, english_train, korean_train, 0.0, rng["retain"]),
        "relearn": _mixture(params.relearn_documents, english_train, korean_train, 1.0, rng["relearn"]),
        "english_train": _records(english_train, "english"),
        "korean_train": _records(korean_train, "korean"),
        "english_validation": _records(english_val, "english"),
        "korean_validation": _records(korean_val, "korean"),
    }


def check_validation_split(files: dict[str, list[dict]]) -> None:
    """Raise if a validation document also occurs in a training file."""
    validation = {r["text"] for name in VALIDATION_FILES for r in files[name]}
    overlap = sorted({r["text"] for name in TRAINING_FILES for r in files[name]} & validation)
    if overlap:
        raise ValueError(f"{len(overlap)} validation documents also occur in training files, e.g. "
                         f"{overlap[0][:80]!r}; the CE metrics would be measured on training text")


def _korean_share(records: list[dict]) -> float:
    return sum(r["source"] == "korean" for r in records) / len(records)


def _token_counts(tokenizer, files: dict[str, list[dict]]) -> dict[str, int]:
    names = ("english_train", "korean_train", *VALIDATION_FILES)
    return {name: sum(map(len, encode(tokenizer, [r["text"] for r in files[name]]))) for name in names}


def write_language_data(params: LanguageDataParams, tokenizer_params: TokenizerParams, seed: int,
                        out_dir: str | Path) -> dict:
    """Read the corpus, then write every data file, the tokenizer and the manifest to ``out_dir``.

    As in the arithmetic stage, the folder is written under a temporary name and renamed at the
    end, and ``manifest.json`` records the sha256 of every output file plus the provenance of every
    input (package versions, file and dataset hashes).
    """
    out_dir = Path(out_dir)
    corpus = load_corpus(params)
    files = build_language_files(params, corpus, seed)
    check_validation_split(files)

    with atomic_dir(out_dir) as tmp:
        for name, records in files.items():
            write_jsonl(tmp / f"{name}.jsonl", records)
        sample = [r["text"] for r in random.Random(f"{seed}-tokenizer").sample(
            files["pretrain_full"], min(tokenizer_params.training_documents, len(files["pretrain_full"])))]
        tokenizer = train_tokenizer(sample, tokenizer_params.vocab_size, tokenizer_params.min_frequency)
        tokenizer.save_pretrained(tmp / "tokenizer")

        hashed = [f"{name}.jsonl" for name in files]
        hashed += sorted(p.relative_to(tmp).as_posix() for p in (tmp / "tokenizer").rglob("*") if p.is_file())
        manifest = {
            "source": params.source,
            "inputs": corpus.inputs,
            "documents": {name: len(records) for name, records in files.items()},
            "tokens": _token_counts(tokenizer, files),
            "sha256": {name: file_sha256(tmp / name) for name in hashed},
            "vocab_size": len(tokenizer),
            "korean_document_share": {name: _korean_share(files[name]) for name in ("pretrain_full", "distill")},
            "split_check": "validation documents occur in no training file",
        }
        write_json(tmp / MANIFEST, manifest)
    logger.info("wrote %d files to %s", len(files), out_dir)
    return manifest
