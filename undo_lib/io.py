"""Atomic output writing, metrics files, seeding and notebook logging.

Every stage output is written to a temporary sibling and renamed into place, so an interrupted
stage never leaves a half-written checkpoint or metrics file that looks finished. Temporaries are
named ``.<name>.tmp-*`` (and ``.<name>.old-*`` while a folder is swapped). A process killed with
SIGKILL cannot remove them, so the next write of the same path does, and ``.dvcignore`` keeps them
out of DVC's hashes meanwhile.

The renames are atomic against a killed process, not against a power loss: nothing is fsynced.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)

_FILE_MODE = 0o644  # mkstemp creates 0600 files; outputs are meant to be readable like any other file


class IntegrityError(RuntimeError):
    """A stage input is corrupt, truncated or was changed after the stage that wrote it."""


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries that an interrupted atomic write of ``path`` left next to it.

    NOTE: this assumes one writer per path at a time, which holds for ``dvc repro``. Two processes
    writing the same path at once could delete each other's temporaries.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{glob.escape(path.name)}.tmp-*"))
    stale += sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*"))
    for leftover in stale:
        logger.warning("removing %s, left by an interrupted write of %s", leftover, path)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    return stale


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` by renames.

    A kill between the two renames of a replacement leaves no ``path`` but ``.<name>.old-*``, so
    a reader finds the output missing rather than half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _atomic_write(path: str | Path, write, newline: str | None = None) -> None:
    """Call ``write(file)`` on a temporary text file next to ``path``, then rename it to ``path``.

    A kill at any point leaves either the old file or the complete new one; a leftover temporary
    file of an earlier killed write is removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline=newline, encoding="utf-8") as f:
            write(f)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    _atomic_write(path, lambda f: f.write(text))


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of the file ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a diverged value is flagged by its own field
    return value


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON (keys sorted, NaN and inf as null), atomically."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. Run the stage that writes it first (dvc repro).")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write a list of flat dicts as CSV (columns in first-seen order), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    _atomic_write(path, write, newline="")


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Write one JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. Run the data stage first (dvc repro).")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(base: int, *names: object) -> int:
    """A stable seed for one stage item, derived from the base seed and the item's names."""
    import hashlib

    digest = hashlib.sha256(":".join(str(n) for n in (base, *names)).encode()).hexdigest()
    return int(digest[:8], 16)


def setup_notebook(threads: int = 0) -> None:
    """Log INFO records of undo_lib to the notebook's output and quiet third-party progress bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    logging.getLogger("undo_lib").setLevel(logging.INFO)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if threads > 0:
        torch.set_num_threads(threads)
