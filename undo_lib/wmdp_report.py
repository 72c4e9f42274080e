"""Results of the WMDP branch: worst-case relearning curves, the figure and the README table."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from undo_lib.config import Params, WMDPEvaluateParams  # noqa: E402
from undo_lib.io import atomic_write_text, read_json, write_json  # noqa: E402
from undo_lib.multiple_choice import load_questions  # noqa: E402
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
    per_seed = [worst_case(group, "forget").assign(seed=seed) for seed, group in runs["history"].groupby("seed")]
    curves = pd.concat(per_seed).groupby(["model", "step"], sort=False)["forget"].mean().unstack("step")
    table = runs["models"].groupby(["model", "kind"], sort=False)[["retain", "forget"]].mean().reset_index()
    models = []
    for row in table.to_dict("records"):
        curve = curves.loc[row["model"]].dropna()
        models.append({**row, "relearned": {int(step): float(acc) for step, acc in curve.items()}})
    seeds = sorted(runs["models"]["seed"].unique().tolist())
    return {"seeds": seeds, "models": models}


def plot_wmdp_relearning(summary: dict, path: str | Path, forget_name: str = "forget",
                         retain_name: str = "retain", chance: float | None = None):
    """Forget accuracy vs attack steps per model, retain accuracy in the legend; saved to ``path``."""
    figure, axis = plt.subplots(figsize=(9.0, 4.5))
    styles = {"base": "-", "unlearned": "--", "UNDO": "-"}
    for model in summary["models"]:
        steps, accs = zip(*sorted(model["relearned"].items()))
        axis.plot(steps, accs, styles[model["kind"]], marker="o", color="black" if model["kind"] == "base" else None,
                  label=f"{model['model']} ({retain_name} {model['retain']:.3f})")
    if chance is not None:
        axis.axhline(chance, color="grey", linewidth=0.8, linestyle=":", label=f"chance ({chance:.2f})")
    all_steps = sorted({step for model in summary["models"] for step in model["relearned"]})
    axis.set_xscale("symlog", linthresh=max(1, min((s for s in all_steps if s > 0), default=1)))
    axis.set_xticks(all_steps, [str(step) for step in all_steps])
    axis.minorticks_off()
    axis.set_xlabel("relearning steps")
    axis.set_ylabel(f"{forget_name} accuracy\n(worst case over LRs)")
    axis.set_title(f"Relearning attacks, mean of {len(summary['seeds'])} seed(s)")
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
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


def chance_accuracy(params: WMDPEvaluateParams) -> float | None:
    """1 / number of choices of the forget questions when they are a local file (WMDP: 4 choices), else None."""
    if params.backend != "builtin" or not params.forget.questions:
        return None
    counts = {len(q["choices"]) for q in load_questions(params.forget.questions)}
    return 1 / counts.pop() if len(counts) == 1 else None
