"""The arithmetic data stage: every text file the later stages train and evaluate on.

The full mixture draws English text with probability ``english_fraction`` and otherwise an
arithmetic problem of any of the four ops. The oracle mixture drops mul/div and fills with English
so that add/sub keeps the same share of the text, as in Lee et al. (arXiv 2506.06278), and both models see about the
same amount of retain arithmetic. Unlearning uses mul/div (forget) and add/sub (retain) problems; the
relearning attack uses fresh mul/div problems from the training templates. Evaluation prompts use
the held-out word-problem templates, and this stage checks that none of their text occurs in any
training file.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Iterable

from undo_lib import arithmetic as ar
from undo_lib.config import ArithmeticDataParams, TokenizerParams
from undo_lib.io import IntegrityError, atomic_dir, file_sha256, read_json, write_json, write_jsonl
from undo_lib.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAINING_FILES = ("pretrain_full", "pretrain_oracle", "distill", "forget", "retain", "relearn", "english_train")


def _mixture(n: int, english: list[str], english_prob: float, ops: tuple[str, ...],
             word_problem_fraction: float, rng: random.Random) -> list[dict]:
    records = []
    for _ in range(n):
        if rng.random() < english_prob:
            records.append({"text": rng.choice(english), "source": "english"})
        else:
            problem = ar.sample_problems(ops, 1, rng, word_problem_fraction)[0]
            records.append(problem.to_record())
    return records


def _problems(n: int, ops: tuple[str, ...], word_problem_fraction: float, rng: random.Random) -> list[dict]:
    return [p.to_record() for p in ar.sample_problems(ops, n, rng, word_problem_fraction)]


def _mean_chars(texts: list[str]) -> float:
    return sum(len(t) for t in texts) / len(texts)


def oracle_english_probability(english: list[str], english_fraction: float, word_problem_fraction: float,
                               seed: int, samples: int = 4000) -> float:
    """English probability of the oracle mixture that keeps the full mixture's add/sub text share.

    The paper interleaves packed sequences, so its probabilities are token shares: 12.5% add/sub in
    both the full mixture (25% arithmetic, all ops) and the oracle's (12.5% add/sub, 87.5% English).
    Here documents are mixed, so the probability is solved from mean document lengths in characters
    (a proxy for tokens) such that add/sub makes up the same share of text in both mixtures.
    """
    rng = random.Random(f"{seed}-lengths")
    retain = _mean_chars([p.text for p in ar.sample_problems(ar.RETAIN_OPS, samples, rng, word_problem_fraction)])
    forget = _mean_chars([p.text for p in ar.sample_problems(ar.FORGET_OPS, samples, rng, word_problem_fraction)])
    text = _mean_chars(english)
    arithmetic_prob = (1 - english_fraction) / 2  # per op group, ops are drawn uniformly
    share = arithmetic_prob * retain / (english_fraction * text + arithmetic_prob * (retain + forget))
    return retain * (1 - share) / (retain * (1 - share) + share * text)


def build_arithmetic_files(params: ArithmeticDataParams, seed: int) -> dict[str, list[dict]]:
    """All arithmetic-setting record lists, keyed by file name (without ``.jsonl``)."""
    english_train, english_val = ar.split_documents(
        ar.english_documents(params.english_max_chars), params.english_validation_fraction
    )
    p_en, wp = params.english_fraction, params.word_problem_fraction
    oracle_english_prob = oracle_english_probability(english_train, p_en, wp, seed)
    rng = {name: random.Random(f"{seed}-{name}") for name in TRAINING_FILES}
    files = {
        "pretrain_full": _mixture(params.pretrain_documents, english_train, p_en, ar.OPS, wp, rng["pretrain_full"]),
        "pretrain_oracle": _mixture(params.pretrain_documents, english_train, oracle_english_prob,
                                    ar.RETAIN_OPS, wp, rng["pretrain_oracle"]),
        "distill": _mixture(params.distill_documents, english_train, p_en, ar.OPS, wp, rng["distill"]),
        "forget": _problems(params.unlearn_documents, ar.FORGET_OPS, wp, rng["forget"]),
        "retain": _problems(params.unlearn_documents, ar.RETAIN_OPS, wp, rng["retain"]),
        "relearn": _problems(params.relearn_documents, ar.FORGET_OPS, wp, rng["relearn"]),
        "english_train": [{"text": t, "source": "english"} for t in english_train],
        "english_validation": [{"text": t, "source": "english"} for t in english_val],
        "eval": [p.to_record() for op in ar.OPS for kind in ar.KINDS
                 for p in ar.evaluation_set(op, kind, params.eval_prompts, params.eval_seed)],
    }
    return files


def find_leaks(files: dict[str, list[dict]]) -> list[str]:
    """Held-out template fragments or evaluation word-problem prompts found in training text."""
    fragments = {frag for templates in ar.EVAL_TEMPLATES.values() for prompt, _ in templates
                 for frag in ar.template_fragments(prompt)}
    fragments |= {r["prompt"] for r in files["eval"] if r["kind"] == "word_problem"}
    training_text = "\n".join(r["text"] for name in TRAINING_FILES for r in files[name])
    return sorted(f for f in fragments if f in training_text)


def check_english_split(files: dict[str, list[dict]]) -> None:
    """Raise if an English validation document also occurs in a training file."""
    validation = {r["text"] for r in files["english_validation"]}
    overlap = sorted({r["text"] for name in TRAINING_FILES for r in files[name]} & validation)
    if overlap:
        raise ValueError(f"{len(overlap)} English validation documents also occur in training files, "
                         f"e.g. {overlap[0]!r}; the validation CE would be measured on training text")


def check_relearn_domain(records: list[dict]) -> None:
    """Raise unless every relearning record is a forget-domain (mul/div) problem."""
    bad = [r for r in records if r.get("op") not in ar.FORGET_OPS]
    if bad:
        raise ValueError(f"relearning data must be forget-domain only ({ar.FORGET_OPS}); "
                         f"found {len(bad)} other records, e.g. {bad[0]!r}")


def _share(records: list[dict], predicate) -> float:
    return sum(map(predicate, records)) / len(records)


def _text_share(records: list[dict], ops: tuple[str, ...]) -> float:
    """Share of a file's characters that belong to problems of ``ops``."""
    total = sum(len(r["text"]) for r in records)
    return sum(len(r["text"]) for r in records if r.get("op") in ops) / total


def write_arithmetic_data(params: ArithmeticDataParams, tokenizer_params: TokenizerParams, seed: int,
                          out_dir: str | Path) -> dict:
    """Generate, check and write every data file and the tokenizer to ``out_dir``; return the manifest.

    The folder is written under a temporary name and renamed into place at the end, so a killed
    data stage leaves either the previous folder or the complete new one. ``manifest.json`` records
    the sha256 of every file, which ``verify_data`` checks before a later stage reads them.
    """
    out_dir = Path(out_dir)
    files = build_arithmetic_files(params, seed)
    leaks = find_leaks(files)
    if leaks:
        raise RuntimeError(f"held-out evaluation text occurs in training data: {leaks[:5]}")
    check_relearn_domain(files["relearn"])
    check_english_split(files)

    with atomic_dir(out_dir) as tmp:
        for name, records in files.items():
            write_jsonl(tmp / f"{name}.jsonl", records)
        sample = [r["text"] for r in files["pretrain_full"][: tokenizer_params.training_documents]]
        tokenizer = train_tokenizer(sample, tokenizer_params.vocab_size, tokenizer_params.min_frequency)
        tokenizer.save_pretrained(tmp / "tokenizer")

        hashed = [f"{name}.jsonl" for name in files]
        hashed += sorted(p.relative_to(tmp).as_posix() for p in (tmp / "tokenizer").rglob("*") if p.is_file())
        mixtures = ("pretrain_full", "pretrain_oracle", "distill")
        manifest = {
            "documents": {name: len(records) for name, records in files.items()},
            "sha256": {name: file_sha256(tmp / name) for name in hashed},
            "vocab_size": len(tokenizer),
            "english_document_share": {name: _share(files[name], lambda r: r.get("source") == "english")
                                       for name in mixtures},
            "retain_text_share": {name: _text_share(files[name], ar.RETAIN_OPS) for name in mixtures},
            "leak_check": "no held-out template text in training files",
        }
        write_json(tmp / MANIFEST, manifest)
    logger.info("wrote %d files to %s", len(files), out_dir)
    return manifest


def verify_data(data_dir: str | Path, names: Iterable[str]) -> None:
    """Check the named data files against the sha256 values in ``data_dir/manifest.json``.

    Args:
        data_dir: output folder of the data stage.
        names: file names relative to ``data_dir`` (``"eval.jsonl"``); a folder name such as
            ``"tokenizer"`` stands for every file the manifest lists under it.

    Raises:
        FileNotFoundError: the manifest or a named file is missing.
        IntegrityError: a file differs from what the data stage wrote, or the manifest does not list it.
    """
    data_dir = Path(data_dir)
    manifest_path = data_dir / MANIFEST
    recorded = read_json(manifest_path).get("sha256", {})
    fix = f"Restore it with `dvc checkout {data_dir}` or regenerate the data with `dvc repro`."
    for name in names:
        entries = [key for key in recorded if key == name or key.startswith(f"{name}/")]
        if not entries:
            raise IntegrityError(f"{manifest_path} lists no sha256 for {name}, so {data_dir / name} cannot be "
                                 f"checked. The data folder is older than this code or incomplete. {fix}")
        for key in entries:
            path = data_dir / key
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found, although {manifest_path} lists it. {fix}")
            if file_sha256(path) != recorded[key]:
                raise IntegrityError(f"{path} does not match the sha256 recorded in {manifest_path}: it was "
                                     f"changed or truncated after the data stage wrote it. {fix}")
    logger.info("verified the sha256 of %s in %s", ", ".join(names), data_dir)
