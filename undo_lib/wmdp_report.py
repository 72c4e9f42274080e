"""Results of the WMDP branch: worst-case relearning curves, the figure and the README table."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from undo_lib import report  # noqa: E402
from undo_lib.config import Params, WMDPEvaluateParams  # noqa: E402
from undo_lib.io import atomic_write_text, read_json, write_json  # noqa: E402
from undo_lib.multiple_choice import load_questions  # noqa: E402
from undo_lib.relearn import worst_case  # noqa: E402
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


METRICS = ("retain", "forget", "retain_ce", "forget_ce")


def _worst_curves(history: pd.DataFrame, metric: str, higher_is_worse: bool) -> pd.DataFrame:
    """Take the attacker's best LR per seed and step, then the mean over seeds; return [model x step]."""
    per_seed = [worst_case(group, metric, higher_is_worse).assign(seed=seed) for seed, group in history.groupby("seed")]
    return pd.concat(per_seed).groupby(["model", "step"], sort=False)[metric].mean().unstack("step")


def summarize_wmdp(runs: dict) -> dict:
    """Per model: metrics before the attack and the worst case over LRs at each attack step.

    The worst case is taken per seed (the attacker's best LR at each step: the highest forget
    accuracy, the lowest forget CE), then averaged over seeds.
    """
    history = runs["history"]
    curves = {"forget": _worst_curves(history, "forget", True)}
    if "forget_ce" in history:
        curves["forget_ce"] = _worst_curves(history, "forget_ce", False)
    present = [m for m in METRICS if m in runs["models"]]
    table = runs["models"].groupby(["model", "kind"], sort=False)[present].mean().reset_index()
    models = []
    for row in table.to_dict("records"):
        relearned = {metric: {int(step): float(value) for step, value in curve.loc[row["model"]].dropna().items()}
                     for metric, curve in curves.items()}
        models.append({**row, "relearned": relearned})
    seeds = sorted(runs["models"]["seed"].unique().tolist())
    return {"seeds": seeds, "models": models}


def summary_table(summary: dict) -> pd.DataFrame:
    """Tabulate per model the metrics before the attack and the worst-case forget accuracy per step."""
    rows = []
    for model in summary["models"]:
        row = {key: value for key, value in model.items() if key != "relearned"}
        row.update({f"forget after {step}": acc for step, acc in model["relearned"]["forget"].items() if step > 0})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def _legend_label(model: dict, retain_name: str) -> str:
    """Model name with its retain accuracy (and retain CE, when measured) before the attack."""
    ce = f", retain CE {model['retain_ce']:.2f}" if "retain_ce" in model else ""
    return f"{model['model']} ({retain_name} {model['retain']:.3f}{ce})"


def _plot_curves(axis, summary: dict, metric: str, styles: dict, retain_name: str) -> None:
    for model in summary["models"]:
        steps, values = zip(*sorted(model["relearned"][metric].items()))
        axis.plot(steps, values, styles[model["kind"]], marker="o", color="black" if model["kind"] == "base" else None,
                  label=_legend_label(model, retain_name))
    all_steps = sorted({step for model in summary["models"] for step in model["relearned"][metric]})
    axis.set_xscale("symlog", linthresh=max(1, min((s for s in all_steps if s > 0), default=1)))
    axis.set_xticks(all_steps, [str(step) for step in all_steps])
    axis.minorticks_off()
    axis.set_xlabel("relearning steps")


def plot_wmdp_relearning(summary: dict, path: str | Path, forget_name: str = "forget",
                         retain_name: str = "retain", chance: float | None = None):
    """Forget accuracy (and forget CE, when measured) vs attack steps per model; saved to ``path``.

    The legend gives each model's retain accuracy before the attack.
    """
    with_ce = all("forget_ce" in model["relearned"] for model in summary["models"])
    figure, axes = plt.subplots(1, 2 if with_ce else 1, figsize=(13.0 if with_ce else 9.0, 4.5), squeeze=False)
    styles = {"base": "-", "unlearned": "--", "UNDO": "-"}
    _plot_curves(axes[0, 0], summary, "forget", styles, retain_name)
    if chance is not None:
        axes[0, 0].axhline(chance, color="grey", linewidth=0.8, linestyle=":", label=f"chance ({chance:.2f})")
    axes[0, 0].set_ylabel(f"{forget_name} accuracy\n(worst case over LRs)")
    if with_ce:
        _plot_curves(axes[0, 1], summary, "forget_ce", styles, retain_name)
        axes[0, 1].set_yscale("log")
        axes[0, 1].set_ylabel("CE on held-out forget documents\n(worst case over LRs, log scale)")
    figure.suptitle(f"Relearning attacks, mean of {len(summary['seeds'])} seed(s)")
    axes[0, -1].legend(*axes[0, 0].get_legend_handles_labels(), fontsize=8, loc="center left",
                       bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    logger.info("wrote %s", path)
    return figure


def markdown_table(summary: dict) -> str:
    """Format the README's WMDP table: metrics before the attack and the worst-case forget metrics after it."""
    steps = sorted({step for model in summary["models"] for step in model["relearned"]["forget"] if step > 0})
    with_ce = all("forget_ce" in model for model in summary["models"])
    before = ["retain acc", "forget acc"] + (["retain CE", "forget CE"] if with_ce else [])
    after = [f"forget acc after {s}" for s in steps] + ([f"forget CE after {s}" for s in steps] if with_ce else [])
    lines = ["| model | " + " | ".join(before + after) + " |", "|" + "---|" * (1 + len(before) + len(after))]
    for model in summary["models"]:
        values = [model["retain"], model["forget"]] + ([model["retain_ce"], model["forget_ce"]] if with_ce else [])
        values += [model["relearned"]["forget"].get(s, float("nan")) for s in steps]
        if with_ce:
            values += [model["relearned"]["forget_ce"].get(s, float("nan")) for s in steps]
        lines.append(f"| {model['model']} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def write_wmdp_report(summary: dict, out_dir: str | Path) -> None:
    """Write ``summary.json`` and ``table.md`` to ``out_dir``."""
    write_json(Path(out_dir) / "summary.json", summary)
    atomic_write_text(Path(out_dir) / "table.md", markdown_table(summary))


def timing_table(timing_dir: str | Path) -> pd.DataFrame:
    """Wall time, tokens per second and peak memory of every WMDP training stage item."""
    return pd.DataFrame(report.timing_table(timing_dir))


def chance_accuracy(params: WMDPEvaluateParams) -> float | None:
    """1 / number of choices of the forget questions when they are a local file (WMDP: 4 choices), else None."""
    if params.backend != "builtin" or not params.forget.questions:
        return None
    counts = {len(q["choices"]) for q in load_questions(params.forget.questions)}
    return 1 / counts.pop() if len(counts) == 1 else None
