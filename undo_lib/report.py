"""Markdown tables of a finished run, for the README: the E1 to E4 results and time per stage.

Usage: ``python -m undo_lib.report outputs/arithmetic`` (or ``outputs/language``) prints the tables.
Results come from the figures stage's ``summary.json``; times from the Papermill metadata of the
executed notebooks that ``dvc.lock`` lists, so notebooks left from an earlier run with other alphas
or LRs are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import nbformat
import yaml

RESULT_COLUMNS = {
    "label": "model",
    "retain_before": "retain before attack",
    "forget_before": "forget before attack",
    "forget_at_step": "forget after attack",
    "forget_equations_at_step": "mul/div equations after attack",
    "relative_robustness": "relative robustness",
    "distill_steps": "distillation steps",
    "cost_fraction_flops": "cost / oracle pretraining (FLOPs)",
}


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):  # round the printed decimal half up, so 0.0075 shows as 0.008
        return str(Decimal(repr(value)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))
    return str(value)


def results_table(summary_path: str | Path) -> str:
    """Format the per-model results of ``summary.json`` as a Markdown table."""
    summary = json.loads(Path(summary_path).read_text())
    # A column no row has (the equation-only score outside the arithmetic setting) is left out.
    keys = [key for key in RESULT_COLUMNS if any(key in row for row in summary["models"])]
    header = [RESULT_COLUMNS[key] for key in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["models"]:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in keys) + " |")
    lines.append(f"\nAttack results are read at step {summary['robustness_step']} (worst case over LRs).")
    return "\n".join(lines)


EXPERIMENT_COLUMNS = {
    "e1": ["label", "kl_final", "retain_before", "forget_before", "forget_at_step"],
    "e2": ["method", "label", "retain_before", "forget_before", "forget_at_step", "collapsed_seeds"],
    "e3": ["label", "retain_before", "forget_before", "forget_at_step", "forget_equations_at_step",
           "relative_robustness", "distill_steps", "cost_fraction_flops", "reached_stop_rule_seeds"],
}


def _count_cell(value) -> str:
    """Format a step or seed count (a mean over seeds) without decimals when it is whole."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _cell(value)


def _markdown(rows: list[dict], columns: list[str]) -> str:
    columns = [c for c in columns if any(c in row for row in rows)]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_count_cell(row.get(c)) if c.endswith(("steps", "seeds")) else _cell(row.get(c))
                                for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _pareto_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Pivot the E4 table: one row per model, the forget metric after each attack budget in columns."""
    pivot: dict[str, dict] = {}
    for row in rows:
        entry = pivot.setdefault(row["label"], {"label": row["label"], "retain_before": row.get("retain_before"),
                                                "collapsed_seeds": row.get("collapsed_seeds")})
        entry[f"forget_after_{row['budget']}"] = row.get("forget_after")
    budgets = sorted({row["budget"] for row in rows})
    return list(pivot.values()), ["label", "retain_before", *(f"forget_after_{b}" for b in budgets), "collapsed_seeds"]


def experiment_tables(summary_path: str | Path) -> str:
    """Format the E1 to E4 tables of the figures stage's ``summary.json`` as Markdown (seed means)."""
    summary = json.loads(Path(summary_path).read_text())
    tables = summary["tables"]
    parts = []
    for name in ("e1", "e2", "e3"):
        parts.append(f"{name.upper()} (attack results at step {summary['robustness_step']}):\n\n"
                     + _markdown(tables[name], EXPERIMENT_COLUMNS[name]))
    rows, columns = _pareto_rows(tables["e4"])
    parts.append("E4 (forget metric after each attack budget):\n\n" + _markdown(rows, columns))
    return "\n\n".join(parts)


def locked_notebooks(lock_path: str | Path, notebooks_dir: str | Path) -> set[str] | None:
    """Return the executed notebooks under ``notebooks_dir`` that ``dvc.lock`` lists as outputs.

    Paths are relative to ``notebooks_dir`` (``data.ipynb``, ``seed_0/pretrain-full.ipynb``).
    Returns None when there is no lock file. A notebook left by an earlier run with other alphas or
    LRs is in the folder but not in the lock file.
    """
    lock_path = Path(lock_path)
    if not lock_path.is_file():
        return None
    folder = Path(notebooks_dir).resolve()
    stages = yaml.safe_load(lock_path.read_text()).get("stages", {})
    outs = [Path(lock_path.parent, out["path"]).resolve() for body in stages.values() for out in body.get("outs", [])]
    return {path.relative_to(folder).as_posix() for path in outs
            if path.suffix == ".ipynb" and path.is_relative_to(folder)}


def stage_durations(notebooks_dir: str | Path, only: set[str] | None = None) -> list[tuple[str, float]]:
    """Read (notebook path, seconds) of each executed notebook from Papermill's recorded duration.

    ``only``: notebook paths relative to ``notebooks_dir`` to read (see ``locked_notebooks``);
    None reads every notebook, in subfolders too.
    """
    root, rows = Path(notebooks_dir), []
    for path in sorted(root.rglob("*.ipynb")):
        name = path.relative_to(root).as_posix()
        if only is not None and name not in only:
            continue
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        if meta.get("duration") is not None:
            rows.append((name, float(meta["duration"])))
    return rows


def stage_kind(notebook: str) -> str:
    """Return the kind of stage of an executed notebook: ``seed_0/relearn-unlearned.ipynb`` -> relearn."""
    return Path(notebook).stem.split("-")[0]


def durations_table(notebooks_dir: str | Path, only: set[str] | None = None) -> str:
    """Format stage wall times as a Markdown table, grouped by kind of stage, with the total."""
    groups: dict[str, list[float]] = {}
    for name, seconds in stage_durations(notebooks_dir, only):
        groups.setdefault(stage_kind(name), []).append(seconds)
    lines = ["| stage | runs | minutes |", "|---|---|---|"]
    for kind, times in groups.items():
        lines.append(f"| {kind} | {len(times)} | {sum(times) / 60:.1f} |")
    total = sum(sum(t) for t in groups.values())
    lines.append(f"| **total** | {sum(len(t) for t in groups.values())} | **{total / 60:.1f}** |")
    return "\n".join(lines)


def _timing_rows(path: Path) -> list[dict]:
    """Read one timing file: one run's record, or one record per LR (relearning)."""
    record = json.loads(path.read_text())
    return list(record.values()) if "seconds" not in record else [record]


def timing_table(timing_dir: str | Path) -> list[dict]:
    """Summarise each training stage item: wall time, tokens per second and peak memory, from the timing files.

    ``timing_dir`` is ``outputs/<setting>/timing``; its ``seed_<k>/<stage>.json`` files are what the
    training stages write (they are no DVC dependency of the figures, which is why they can change).
    Relearning stages write one record per LR; their times are summed and their memories maxed.
    """
    rows = []
    for path in sorted(Path(timing_dir).rglob("*.json")):
        runs = [r for r in _timing_rows(path) if r.get("seconds") is not None]
        if not runs:
            continue
        seconds = sum(r["seconds"] for r in runs)
        rates = [r["tokens_per_second"] for r in runs if r.get("tokens_per_second")]
        memory = [r["peak_memory_bytes"] for r in runs if r.get("peak_memory_bytes")]
        rows.append({"stage": path.relative_to(timing_dir).with_suffix("").as_posix(), "runs": len(runs),
                     "seconds": round(seconds, 1),
                     "tokens_per_second": round(sum(rates) / len(rates)) if rates else None,
                     "peak_memory_mib": round(max(memory) / 2**20) if memory else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting_dir", help="a setting's output folder, e.g. outputs/arithmetic")
    parser.add_argument("--lock", default="dvc.lock",
                        help="DVC lock file; only the notebooks it lists are timed (default: dvc.lock)")
    args = parser.parse_args()
    root = Path(args.setting_dir)
    summary = root / "figures" / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"{summary} not found: run the figures stage first, `dvc repro {root.name}-figures`.")
    print(experiment_tables(summary))
    print()
    print(durations_table(root / "notebooks", locked_notebooks(args.lock, root / "notebooks")))


if __name__ == "__main__":
    main()
