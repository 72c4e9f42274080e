"""Markdown tables of a finished run, for the README: results per model and time per stage.

Usage: ``python -m undo_lib.report outputs/arithmetic`` (or ``outputs/language``) prints both tables. Results come from the
figures stage's ``summary.json``; times from the Papermill metadata of the executed notebooks.
"""

from __future__ import annotations

import argparse
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import nbformat

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


def stage_durations(notebooks_dir: str | Path) -> list[tuple[str, float]]:
    """Read (stage, seconds) of every executed notebook from Papermill's recorded duration."""
    rows = []
    for path in sorted(Path(notebooks_dir).glob("*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        if meta.get("duration") is not None:
            rows.append((path.stem, float(meta["duration"])))
    return rows


def durations_table(notebooks_dir: str | Path) -> str:
    """Format stage wall times as a Markdown table, grouped by kind of stage, with the total."""
    groups: dict[str, list[float]] = {}
    for name, seconds in stage_durations(notebooks_dir):
        groups.setdefault(name.split("-")[0], []).append(seconds)
    lines = ["| stage | runs | minutes |", "|---|---|---|"]
    for kind, times in groups.items():
        lines.append(f"| {kind} | {len(times)} | {sum(times) / 60:.1f} |")
    total = sum(sum(t) for t in groups.values())
    lines.append(f"| **total** | {sum(len(t) for t in groups.values())} | **{total / 60:.1f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting_dir", help="a setting's output folder, e.g. outputs/arithmetic")
    args = parser.parse_args()
    root = Path(args.setting_dir)
    print(results_table(root / "figures" / "summary.json"))
    print()
    print(durations_table(root / "notebooks"))


if __name__ == "__main__":
    main()
