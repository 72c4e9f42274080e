"""Results of the WMDP branch: worst-case relearning curves, the figure and the README table."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from undo_lib.config import Params  # noqa: E402
from undo_lib.io import atomic_write_text, read_json, write_json  # noqa: E402
from undo_lib.relearn import worst_case  # noqa: E402
from undo_lib.report import timing_table as _timing_rows  # noqa: E402
from undo_lib.wmdp import undo_name  # noqa: E402

logger = logging.getLogger(__name__)


def model_runs(params: Params) -> list[tuple[str, str, str]]:
    """(model name, kind, metrics path relative to the runs folder with ``{seed}``) of every WMDP model."""
    w = params.wmdp
    models = [("base", "base", "base/metrics.json")]
    models += [(run, "unlearned", f"seed_{{seed}}/unlearn/{run}/metrics.json") for run in w.unlearn.runs]
    models += [(undo_name(t, a), "UNDO", f"seed_{{seed}}/undo/{t}/alpha_{a}/metrics.json")
               for t in w.undo.teachers for a in w.undo.alphas]
    return models


def collect_wmdp(params: Params, runs_dir: str | Path) -> dict:
    """Read every WMDP model's metrics and relearning history; raise naming any missing file."""
    runs_dir = Path(runs_dir)
    rows, histories = [], []
    for seed in params.shared.seeds:
        for name, kind, path in model_runs(params):
            metrics = read_json(runs_dir / path.format(seed=seed))
            rows.append({"model": name, "kind": kind, "seed": seed, **metrics["final"]})
            for lr in params.wmdp.relearn.lrs:
                history = runs_dir / f"seed_{seed}/relearn/{name}/lr_{lr}/history.csv"
                if not history.is_file():
                    raise FileNotFoundError(f"{history} not found: run the WMDP relearning stages (`dvc repro`).")
                histories.append(pd.read_csv(history).assign(model=name, seed=seed))
    return {"models": pd.DataFrame(rows), "history": pd.concat(histories, ignore_index=True)}


def summarize_wmdp(runs: dict) -> dict:
    """Per model: retain and forget accuracy before the attack and the worst case over LRs at each step.

    The worst case is taken per seed (the attacker's best LR at each step), then averaged over seeds.
    """
    per_seed = [worst_case(group.assign(model=group["model"]), "forget").assign(seed=seed)
                for seed, group in runs["history"].groupby("seed")]
    curves = pd.concat(per_seed).groupby(["model", "step"], sort=False)["forget"].mean().unstack("step")
    table = runs["models"].groupby(["model", "kind"], sort=False)[["retain", "forget"]].mean().reset_index()
    models = []
    for row in table.to_dict("records"):
        curve = curves.loc[row["model"]].dropna()
        models.append({**row, "relearned": {int(step): float(acc) for step, acc in curve.items()}})
    seeds = sorted(runs["models"]["seed"].unique().tolist())
    return {"seeds": seeds, "models": models}


def plot_wmdp_relearning(summary: dict, path: str | Path):
    """Forget accuracy vs attack steps per model, retain accuracy in the legend; saved to ``path``."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    styles = {"base": ("black", "-"), "unlearned": ("tab:red", "--"), "UNDO": ("tab:blue", "-")}
    for model in summary["models"]:
        color, line = styles[model["kind"]]
        steps, accs = zip(*sorted(model["relearned"].items()))
        axis.plot(steps, accs, line, marker="o", color=color if model["kind"] == "base" else None,
                  label=f"{model['model']} (retain {model['retain']:.3f})")
    axis.set_xscale("symlog", linthresh=10)
    axis.set_xlabel("relearning steps")
    axis.set_ylabel("forget accuracy (worst case over LRs)")
    axis.set_title(f"WMDP: relearning attack, mean of {len(summary['seeds'])} seed(s)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    logger.info("wrote %s", path)
    return figure


def markdown_table(summary: dict) -> str:
    """The README's WMDP table: retain and forget accuracy before the attack and at each attack step."""
    steps = sorted({step for model in summary["models"] for step in model["relearned"] if step > 0})
    header = "| model | retain acc | forget acc | " + " | ".join(f"forget after {s}" for s in steps) + " |"
    lines = [header, "|" + "---|" * (3 + len(steps))]
    for model in summary["models"]:
        after = " | ".join(f"{model['relearned'].get(s, float('nan')):.3f}" for s in steps)
        lines.append(f"| {model['model']} | {model['retain']:.3f} | {model['forget']:.3f} | {after} |")
    return "\n".join(lines) + "\n"


def write_wmdp_report(summary: dict, out_dir: str | Path) -> None:
    """Write ``summary.json`` and ``table.md`` to ``out_dir``."""
    write_json(Path(out_dir) / "summary.json", summary)
    atomic_write_text(Path(out_dir) / "table.md", markdown_table(summary))


def timing_table(timing_dir: str | Path) -> pd.DataFrame:
    """Wall time, tokens per second and peak memory of every WMDP training stage item."""
    return pd.DataFrame(_timing_rows(timing_dir))
