"""Profile of the default CPU pipeline: its time per kind of stage, before and after removing waste.

Two kinds of numbers go to the page this script writes (``docs/profile.md``):

1. Stage times per kind of stage, read from the executed notebooks' Papermill durations, for the
   committed run at an earlier revision (``--before``, read with ``git archive``) and for the
   notebooks in the working tree (the latest ``make repro``).
2. Micro-measurements of each change that removed waste, old way against new way, on the default
   run's own data and full model (run ``make repro`` first):
   - tokenising the arithmetic pretraining file through the transformers tokenizer call with
     offset mappings against the Rust tokenizer's ``encode_batch`` (``undo_lib.data``);
   - one AdamW step of the arithmetic model, per-tensor against ``foreach`` (``undo_lib.train``);
   - the arithmetic evaluation of all eight sets against the four forget sets that relearning
     attacks now evaluate (``undo_lib.settings.make_evaluator(forget_only=True)``);
   - the fixed start-up of one stage: a Papermill run of a notebook that only imports what the
     relearning notebook imports.

Each timing is the median of ``--repeats`` runs. Usage:
``python -m benchmarks.pipeline_profile --before 087ef5f --out docs/profile.md``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Callable, Sequence

import nbformat
import torch

from benchmarks.train_step import machine_line
from undo_lib.config import SETTINGS, load_params
from undo_lib.data import tokenize_records
from undo_lib.io import read_jsonl
from undo_lib.model import load_model
from undo_lib.report import stage_durations, stage_kind
from undo_lib.settings import make_evaluator
from undo_lib.tokenizer import BOS_ID, load_tokenizer

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
STARTUP_IMPORTS = """\
import pandas as pd
from undo_lib.compute import compute_record, timing_record, train_flops_per_token
from undo_lib.data import batches, pack_records
from undo_lib.io import derive_seed, read_jsonl, seed_everything, write_json
from undo_lib.losses import lm_loss
from undo_lib.model import count_parameters, load_model
from undo_lib.names import attack_targets
from undo_lib.relearn import before_attack, run_attack
from undo_lib.runtime import start_stage
from undo_lib.settings import check_relearn_domain, evaluation_files, make_evaluator
from undo_lib.tokenizer import load_tokenizer
"""


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Return the median wall time of ``repeats`` calls of ``function`` (after one untimed call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------
# Stage times per kind


def kind_minutes(notebooks_dir: Path) -> dict[str, tuple[int, float]]:
    """Return {kind of stage: (number of notebooks, minutes)} from Papermill's recorded durations."""
    groups: dict[str, list[float]] = {}
    for name, seconds in stage_durations(notebooks_dir):
        groups.setdefault(stage_kind(name), []).append(seconds)
    return {kind: (len(times), sum(times) / 60) for kind, times in sorted(groups.items())}


def notebooks_at(revision: str, folder: Path) -> Path:
    """Extract ``outputs/`` of git ``revision`` into ``folder`` and return the extracted ``outputs``."""
    archive = subprocess.run(["git", "archive", revision, "outputs"], cwd=ROOT, check=True, capture_output=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "outputs"


def before_after_table(before: dict, after: dict) -> str:
    """Format stage minutes per kind before and after as a Markdown table with totals."""
    lines = ["| stage | runs before | minutes before | runs after | minutes after |", "|---|---|---|---|---|"]
    for kind in sorted(set(before) | set(after)):
        runs_b, minutes_b = before.get(kind, (0, 0.0))
        runs_a, minutes_a = after.get(kind, (0, 0.0))
        lines.append(f"| {kind} | {runs_b} | {minutes_b:.1f} | {runs_a} | {minutes_a:.1f} |")
    totals = [sum(v[i] for v in table.values()) for table in (before, after) for i in (0, 1)]
    lines.append(f"| **total** | {totals[0]} | **{totals[1]:.1f}** | {totals[2]} | **{totals[3]:.1f}** |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Micro-measurements


def tokenize_through_wrapper(tokenizer, records: list[dict]) -> list[list[int]]:
    """Tokenise as the pipeline did before: the transformers call, with offset mappings."""
    encoded = tokenizer([r["text"] for r in records], add_special_tokens=False, return_offsets_mapping=True)
    return [ids + [BOS_ID] for ids in encoded["input_ids"]]


def measure_tokenization(data_dir: Path, repeats: int) -> tuple[float, float, int]:
    """Return (seconds before, seconds after, documents) for the arithmetic pretraining file."""
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    records = read_jsonl(data_dir / "pretrain_full.jsonl")
    old = tokenize_through_wrapper(tokenizer, records)
    new = [ids for ids, _ in tokenize_records(tokenizer, records, "all")]
    if old != new:
        raise AssertionError("the two tokenisation paths give different token ids")
    return (median_seconds(lambda: tokenize_through_wrapper(tokenizer, records), repeats),
            median_seconds(lambda: tokenize_records(tokenizer, records, "all"), repeats), len(records))


def _adamw_step_seconds(model: torch.nn.Module, foreach: bool, steps: int) -> float:
    parameters = [p for p in model.parameters()]
    for p in parameters:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.1, foreach=foreach)
    optimizer.step()  # creates the moment buffers outside the timing
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def measure_adamw(model_dir: Path, repeats: int) -> tuple[float, float]:
    """Return seconds per AdamW step of the arithmetic model, (per tensor, foreach)."""
    model = load_model(model_dir)
    return tuple(statistics.median(_adamw_step_seconds(model, foreach, 50) for _ in range(repeats))
                 for foreach in (False, True))


def measure_evaluation(params, data_dir: Path, model_dir: Path, repeats: int) -> tuple[float, float]:
    """Return seconds of one arithmetic evaluation of the full model, (all eight sets, forget sets only)."""
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    model = load_model(model_dir).eval()
    full = make_evaluator(params, "arithmetic", tokenizer, data_dir, with_english=False)
    forget = make_evaluator(params, "arithmetic", tokenizer, data_dir, forget_only=True)
    return median_seconds(lambda: full(model), repeats), median_seconds(lambda: forget(model), repeats)


def measure_startup(repeats: int) -> float:
    """Return the wall time of a Papermill run of a notebook that only imports the relearning stage's modules."""
    with tempfile.TemporaryDirectory() as folder:
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(STARTUP_IMPORTS)])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        source, executed = Path(folder) / "imports.ipynb", Path(folder) / "executed.ipynb"
        nbformat.write(notebook, source)
        command = [sys.executable, "-m", "papermill", str(source), str(executed), "--no-progress-bar", "-k", "python3"]
        return median_seconds(lambda: subprocess.run(command, cwd=ROOT, check=True, capture_output=True), repeats)


# ----------------------------------------------------------------------------------------------
# Page


def micro_table(rows: list[tuple[str, float, float]]) -> str:
    """Format (change, seconds before, seconds after) rows as a Markdown table with the speed-up."""
    lines = ["| change | before | after | speed-up |", "|---|---|---|---|"]
    for change, before, after in rows:
        lines.append(f"| {change} | {_duration(before)} | {_duration(after)} | {before / after:.2f}× |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 0.1 else f"{seconds * 1000:.2f} ms"


def render_page(stage_tables: dict[str, str], micro: str, startup: float, command: str, before: str,
                before_machine: str) -> str:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = "\n\n".join(f"### {setting}\n\n{table}" for setting, table in stage_tables.items())
    return f"""# Profile of the default CPU pipeline

<!-- Written by `python -m benchmarks.pipeline_profile`. Edit benchmarks/pipeline_profile.py, not this page. -->

{machine_line()}

Command: `{command}`

Date: {date}

## Stage times, before and after

Minutes per kind of stage, summed over Papermill's recorded notebook durations (kernel start
included, DVC's own work between stages excluded). "Before" is the committed run at revision
`{before}`, on {before_machine}; "after" is the run whose notebooks are in the working tree, on the
machine above. Where the two machines differ, a stage's change mixes the code changes with the
machines. The measurements in the next section isolate each change on one machine. The
relearning attacks went from one stage per attacked model to one stage per group of models (four
per seed), which is why their count drops.

{sections}

## What changed, measured one at a time

{micro}

The fixed start-up of one stage, a Papermill run of a notebook that only imports the relearning
stage's modules, takes {startup:.1f} s (median); DVC adds its own work per stage on top. Grouping
the relearning attacks pays it four times per seed and setting instead of once per attacked model.
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision whose committed run is the baseline")
    parser.add_argument("--before-machine", default="the same machine",
                        help="the machine of the baseline run, as its README or benchmark page states it")
    parser.add_argument("--params", default="params.yaml", help="params of the run in the working tree")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
    parser.add_argument("--out", default=None, help="write the page here (default: print it)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(argv)
    params = load_params(args.params)
    data_dir, model_dir = ROOT / "outputs/arithmetic/data", ROOT / "outputs/arithmetic/models/seed_0/full"
    with tempfile.TemporaryDirectory() as folder:
        old_outputs = notebooks_at(args.before, Path(folder))
        stage_tables = {s: before_after_table(kind_minutes(old_outputs / s / "notebooks"),
                                              kind_minutes(ROOT / "outputs" / s / "notebooks"))
                        for s in SETTINGS if s in params.shared.settings}
    tokenize_old, tokenize_new, documents = measure_tokenization(data_dir, args.repeats)
    adam_old, adam_new = measure_adamw(model_dir, args.repeats)
    eval_old, eval_new = measure_evaluation(params, data_dir, model_dir, args.repeats)
    micro = micro_table([
        (f"tokenise the arithmetic pretraining file ({documents:,} documents)", tokenize_old, tokenize_new),
        ("one AdamW step of the arithmetic model, per tensor → foreach", adam_old, adam_new),
        ("one arithmetic evaluation of the full model, 8 sets → the 4 forget sets", eval_old, eval_new),
    ])
    command = "python -m benchmarks.pipeline_profile " + shlex.join(argv if argv is not None else sys.argv[1:])
    page = render_page(stage_tables, micro, measure_startup(args.repeats), command, args.before, args.before_machine)
    if args.out:
        Path(args.out).write_text(page, encoding="utf-8")
        logger.info("wrote %s", args.out)
    else:
        print(page)


if __name__ == "__main__":
    main()
