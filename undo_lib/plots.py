"""Figures and the summary table of one setting, read from the stage output tree.

The loaders read ``outputs/<setting>`` as the pipeline stages write it:

- ``pretrain/full/metrics.json``, ``pretrain/oracle/metrics.json``,
  ``unlearn/<method>/metrics.json``, ``distill/metrics.json`` (Unlearn-and-Distill) and
  ``undo/alpha_<a>/metrics.json`` (one per UNDO alpha);
- ``relearn/<model>/lr_<lr>/history.csv`` and ``metrics.json``, one folder per attacked model and
  attack learning rate.

Model names follow the relearn folders: ``full``, ``oracle``, ``unlearned``, ``distilled`` and
``undo_<a>``. Every figure function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing is shown and no global figure state is left behind. The worst case over learning
rates (``undo_lib.relearn.worst_case``) uses a diverged attack's evaluations before its divergence
only, and every figure that plots the worst case lists the diverged attacks in a note.
"""

from __future__ import annotations

import json
import logging
import math
import os
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from undo_lib.io import read_json, remove_stale_temporaries

logger = logging.getLogger(__name__)

MODEL_ORDER = ("full", "oracle", "unlearned", "distilled")  # UNDO models follow, by alpha
UNDO_PREFIX = "undo_"

_LABELS = {
    "full": "Full model",
    "oracle": "Oracle (data filtering)",
    "unlearned": "Unlearned (MaxEnt)",
    "distilled": "Unlearn-and-Distill",
}
_STYLES = {
    "full": {"color": "0.55", "linestyle": "-", "marker": "s"},
    "oracle": {"color": "black", "linestyle": "--", "marker": "o"},
    "unlearned": {"color": "tab:red", "linestyle": "-", "marker": "v"},
    "distilled": {"color": "tab:blue", "linestyle": "-", "marker": "D"},
}
UNDO_COLORMAP = "Greens"  # alpha 0 maps to the light end, alpha 1 to the dark end
UNDO_LINE_SHADE = 0.7  # shade of the line that joins the UNDO points
LR_COLORMAP = "plasma"

# Oracle and unlearned forget accuracies closer than this leave relative robustness undefined.
MIN_REFERENCE_GAP = 1e-9
ACCURACY_LIMITS = (-0.02, 1.02)  # [0, 1] plus a margin, so lines at 0 or 1 stay visible
NOTE_WIDTH = 90  # characters per line of a figure note
FORGET_EQUATION_COLUMNS = ("acc/multiplication/equation", "acc/division/equation")


# ----------------------------------------------------------------------------------------------
# Model names, labels and styles



def undo_alpha(name: str) -> float | None:
    """Return the alpha of an UNDO model name (``undo_0.3`` gives 0.3), or None for other models."""
    if not name.startswith(UNDO_PREFIX):
        return None
    try:
        return float(name[len(UNDO_PREFIX):])
    except ValueError:
        return None


def model_sort_key(name: str) -> tuple[int, float, str]:
    """Sort key that puts the models of MODEL_ORDER first, then UNDO by alpha, then the rest."""
    if name in MODEL_ORDER:
        return (MODEL_ORDER.index(name), 0.0, name)
    alpha = undo_alpha(name)
    if alpha is not None:
        return (len(MODEL_ORDER), alpha, name)
    return (len(MODEL_ORDER) + 1, 0.0, name)


def sort_models(names: Iterable[str]) -> list[str]:
    """Return the distinct model names in display order."""
    return sorted(set(names), key=model_sort_key)


def model_label(name: str) -> str:
    """Return the display label of a model name, or the name itself when it is unknown."""
    if name in _LABELS:
        return _LABELS[name]
    if undo_alpha(name) is not None:
        return f"UNDO α={name[len(UNDO_PREFIX):]}"
    return name


def model_style(name: str) -> dict:
    """Return matplotlib ``color``, ``linestyle`` and ``marker`` keywords for a model.

    UNDO models get a colour from the sequential UNDO_COLORMAP by alpha, so the same alpha has the
    same colour in every figure. Unknown models get grey dotted lines.
    """
    if name in _STYLES:
        return dict(_STYLES[name])
    alpha = undo_alpha(name)
    if alpha is not None:
        shade = 0.4 + 0.55 * min(max(alpha, 0.0), 1.0)
        return {"color": colormaps[UNDO_COLORMAP](shade), "linestyle": "-", "marker": "o"}
    return {"color": "0.3", "linestyle": ":", "marker": "."}


def _lr_text(lr: float) -> str:
    return f"lr={lr:g}"


# ----------------------------------------------------------------------------------------------
# Loaders


def _matches_any(value: float, allowed: Sequence[float]) -> bool:
    return any(math.isclose(value, a, rel_tol=1e-9, abs_tol=1e-12) for a in allowed)


def _parse_lr(folder: Path) -> float:
    try:
        return float(folder.name.removeprefix("lr_"))
    except ValueError:
        raise ValueError(
            f"invalid relearn run folder {folder}: expected a name like lr_0.001. "
            f"Remove or rename the folder."
        ) from None


def _to_bool(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, (int, float, np.number)):
        return bool(value) and not math.isnan(float(value))
    return False


def _diverged_flags(frame: pd.DataFrame, metrics_path: Path) -> pd.Series:
    """Return per-row diverged flags, taken from the run's metrics.json when the csv has no such column."""
    if "diverged" in frame.columns:
        return frame["diverged"].map(_to_bool).astype(bool)
    run_diverged = metrics_path.is_file() and _to_bool(read_json(metrics_path).get("diverged"))
    return pd.Series(run_diverged, index=frame.index, dtype=bool)


def _read_history(path: Path, model: str, lr: float) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if "model" in frame.columns and not frame["model"].dropna().astype(str).eq(model).all():
        logger.warning("%s: the model column differs from the folder name %r, so the folder name is used", path, model)
    # The folder names identify the run, so they replace the csv's model and lr columns.
    frame["model"] = model
    frame["lr"] = lr
    frame["diverged"] = _diverged_flags(frame, path.parent / "metrics.json")
    return frame


def _is_selected(model: str, lr: float, alphas: Sequence[float] | None, lrs: Sequence[float] | None) -> bool:
    alpha = undo_alpha(model)
    if alphas is not None and alpha is not None and not _matches_any(alpha, alphas):
        logger.info("ignoring relearn/%s: alpha %g is not in the configured alphas %s", model, alpha, list(alphas))
        return False
    if lrs is not None and not _matches_any(lr, lrs):
        logger.info("ignoring relearn/%s/lr_%g: the LR is not in the configured grid %s", model, lr, list(lrs))
        return False
    return True


def _sort_rows(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Sort by model display order, then by ``columns``."""
    order = {name: i for i, name in enumerate(sort_models(frame["model"]))}
    ranked = frame.assign(_model_rank=frame["model"].map(order))
    ranked = ranked.sort_values(["_model_rank", *columns], kind="stable")
    return ranked.drop(columns="_model_rank").reset_index(drop=True)


def _warn_missing_runs(histories: pd.DataFrame, alphas: Sequence[float] | None, lrs: Sequence[float] | None) -> None:
    if alphas is not None:
        found = [a for a in (undo_alpha(m) for m in histories["model"].unique()) if a is not None]
        for alpha in alphas:
            if not _matches_any(alpha, found):
                logger.warning("no relearning attack found for UNDO alpha %g", alpha)
    if lrs is not None:
        for model, runs in histories.groupby("model"):
            missing = [lr for lr in lrs if not _matches_any(lr, list(runs["lr"].unique()))]
            if missing:
                logger.warning("relearn/%s has no run for LRs %s, so its worst case covers fewer LRs", model, missing)


def load_relearn_histories(
    root: str | Path,
    alphas: Sequence[float] | None = None,
    lrs: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Read and concatenate every ``relearn/<model>/lr_<lr>/history.csv`` under ``root``.

    Args:
        root: stage output root of one setting, such as ``outputs/arithmetic``.
        alphas: if given, UNDO runs whose alpha is not listed are skipped (stale folders of an
            earlier configuration), and listed alphas without a run are logged as warnings.
        lrs: the same filter and warning for attack learning rates.

    Returns:
        All rows, with ``model`` and ``lr`` taken from the folder names and a boolean ``diverged``
        column, sorted by model display order, LR and step.

    Raises:
        FileNotFoundError: no history.csv under ``root/relearn`` (after filtering).
        ValueError: a run folder name is not ``lr_<number>``.
    """
    relearn_dir = Path(root) / "relearn"
    frames = []
    for path in sorted(relearn_dir.glob("*/lr_*/history.csv")):
        model = path.parent.parent.name
        lr = _parse_lr(path.parent)
        if _is_selected(model, lr, alphas, lrs):
            frames.append(_read_history(path, model, lr))
    if not frames:
        raise FileNotFoundError(
            f"no relearning histories found under {relearn_dir} (expected "
            f"relearn/<model>/lr_<lr>/history.csv). Run the relearn stages first (dvc repro)."
        )
    histories = _sort_rows(pd.concat(frames, ignore_index=True), ["lr", "step"])
    _warn_missing_runs(histories, alphas, lrs)
    logger.info("read %d relearning runs of %d models from %s", len(frames), histories["model"].nunique(), relearn_dir)
    return histories


def _stage_metric_paths(root: Path, unlearn_method: str, alphas: Sequence[float] | None) -> dict[str, Path]:
    paths = {
        "full": root / "pretrain" / "full" / "metrics.json",
        "oracle": root / "pretrain" / "oracle" / "metrics.json",
        "unlearned": root / "unlearn" / unlearn_method / "metrics.json",
        "distilled": root / "distill" / "metrics.json",
    }
    found_alphas = []
    for folder in sorted((root / "undo").glob("alpha_*")):
        name = UNDO_PREFIX + folder.name[len("alpha_"):]
        alpha = undo_alpha(name)
        if alpha is None:
            logger.warning("ignoring %s: the folder name is not alpha_<number>", folder)
            continue
        if alphas is not None and not _matches_any(alpha, alphas):
            logger.info("ignoring %s: alpha %g is not in the configured alphas %s", folder, alpha, list(alphas))
            continue
        found_alphas.append(alpha)
        paths[name] = folder / "metrics.json"
    for alpha in alphas or ():
        if not _matches_any(alpha, found_alphas):
            logger.warning("no UNDO output folder found for alpha %g under %s", alpha, root / "undo")
    return paths


def load_stage_metrics(
    root: str | Path,
    unlearn_method: str = "MaxEnt",
    alphas: Sequence[float] | None = None,
) -> dict[str, dict]:
    """Read the metrics.json of every model stage under ``root``.

    Args:
        root: stage output root of one setting, such as ``outputs/arithmetic``.
        unlearn_method: folder under ``unlearn/`` whose model is the unlearned teacher.
        alphas: if given, only these UNDO alphas are read; missing ones are logged as warnings.

    Returns:
        Parsed metrics keyed by model name (full, oracle, unlearned, distilled, undo_<a>), in
        display order. A missing file is logged as a warning and its model is left out.

    Raises:
        FileNotFoundError: none of the expected metrics.json files exists.
    """
    root = Path(root)
    metrics = {}
    for name, path in _stage_metric_paths(root, unlearn_method, alphas).items():
        if path.is_file():
            metrics[name] = read_json(path)
        else:
            logger.warning("stage metrics for %s not found at %s, so its pre-attack values will be missing", name, path)
    if not metrics:
        raise FileNotFoundError(
            f"no stage metrics found under {root} (expected pretrain/full/metrics.json, "
            f"unlearn/{unlearn_method}/metrics.json, ...). Run the pipeline first (dvc repro)."
        )
    return {name: metrics[name] for name in sort_models(metrics)}


# ----------------------------------------------------------------------------------------------
# Worst case, diverged runs and robustness numbers


def diverged_runs(histories: pd.DataFrame) -> pd.DataFrame:
    """List the diverged attacks as rows (model, lr, step), step being the first diverged step."""
    flagged = histories[histories["diverged"].astype(bool)]
    if flagged.empty:
        return pd.DataFrame({"model": pd.Series(dtype=str), "lr": pd.Series(dtype=float),
                             "step": pd.Series(dtype=int)})
    runs = flagged.groupby(["model", "lr"], as_index=False)["step"].min()
    return _sort_rows(runs[["model", "lr", "step"]], ["lr"])


def diverged_note(diverged: pd.DataFrame | None) -> str:
    """Return a one-paragraph note listing diverged attacks, or "" when there are none."""
    if diverged is None or diverged.empty:
        return ""
    runs = [f"{model_label(r.model)} @ {_lr_text(r.lr)} (step {int(r.step)})" for r in diverged.itertuples()]
    return ("Diverged attacks (only their steps before the divergence enter the worst case): "
            + "; ".join(runs) + ".")


def worst_case_at(worst: pd.DataFrame, step: int) -> pd.DataFrame:
    """Return, per model, the worst-case row at the last evaluated step <= ``step``.

    Args:
        worst: output of ``undo_lib.relearn.worst_case`` (model, step, metric, best_lr).
        step: attack step to read.

    Returns:
        The selected rows indexed by model. A model without an evaluation at or before ``step``
        is absent.
    """
    eligible = worst[worst["step"] <= step].sort_values(["model", "step"])
    return eligible.groupby("model").tail(1).set_index("model")


def robustness_at(worst: pd.DataFrame, step: int, metric: str = "forget") -> pd.Series:
    """Return the worst-case ``metric`` per model at ``step`` (or the last evaluated step before it)."""
    return worst_case_at(worst, step)[metric]


def relative_robustness(value, oracle_value: float | None, unlearned_value: float | None):
    """Compute (value - unlearned) / (oracle - unlearned) for post-attack forget accuracies.

    1 means as robust as the oracle and 0 as robust as the unlearned model. ``value`` may be a
    float, an array or a Series, and the result has the same shape. The result is NaN where the
    reference values are missing or closer than MIN_REFERENCE_GAP (see ``reference_gap_note``).
    """
    oracle = _as_float(oracle_value)
    unlearned = _as_float(unlearned_value)
    gap = oracle - unlearned
    if not math.isfinite(gap) or abs(gap) < MIN_REFERENCE_GAP:
        return value * np.nan
    return (value - unlearned) / gap + 0.0  # adding 0.0 turns -0.0 into 0.0


def reference_gap_note(oracle_value: float | None, unlearned_value: float | None) -> str:
    """Explain why relative robustness is undefined, or return "" when it is defined."""
    oracle = _as_float(oracle_value)
    unlearned = _as_float(unlearned_value)
    if not math.isfinite(oracle) or not math.isfinite(unlearned):
        return "Relative robustness is undefined: the oracle or unlearned attack result is missing."
    if abs(oracle - unlearned) < MIN_REFERENCE_GAP:
        return (f"Relative robustness is undefined: the oracle and the unlearned model have the same "
                f"forget metric after the attack ({oracle:.3f}).")
    return ""


def _as_float(value: object) -> float:
    if value is None:
        return math.nan
    return float(value)


# ----------------------------------------------------------------------------------------------
# Summary table


def _cost_fraction(name: str, record: Mapping, oracle_compute: Mapping) -> dict[str, float]:
    """Return the cost of a model as fractions of oracle pretraining FLOPs and tokens.

    Distilled and UNDO models report it in their metrics.json. The oracle costs 1 by definition,
    the unlearned model costs its unlearning run, and the full model has no cost (NaN).
    """
    fraction = record.get("cost_fraction")
    if fraction is not None:
        return {"flops": _as_float(fraction.get("flops")), "tokens": _as_float(fraction.get("tokens"))}
    if name == "oracle":
        return {"flops": 1.0, "tokens": 1.0}
    if name == "unlearned":
        compute = record.get("compute", {})
        return {key: _ratio(compute.get(key), oracle_compute.get(key)) for key in ("flops", "tokens")}
    return {"flops": math.nan, "tokens": math.nan}


def _ratio(numerator: object, denominator: object) -> float:
    top, bottom = _as_float(numerator), _as_float(denominator)
    return top / bottom if math.isfinite(bottom) and bottom > 0 else math.nan


def _attack_fields(name: str, at_step: pd.DataFrame, last: pd.DataFrame) -> dict:
    fields = {"forget_at_step": math.nan, "step_used": math.nan, "best_lr_at_step": math.nan,
              "forget_last": math.nan, "last_step": math.nan}
    if name in at_step.index:
        row = at_step.loc[name]
        fields.update(forget_at_step=row["forget"], step_used=row["step"], best_lr_at_step=row["best_lr"])
    if name in last.index:
        fields.update(forget_last=last.loc[name, "forget"], last_step=last.loc[name, "step"])
    return fields


def _summary_row(name: str, record: Mapping, at_step: pd.DataFrame, last: pd.DataFrame,
                 oracle_compute: Mapping) -> dict:
    final = record.get("final", {})
    cost = _cost_fraction(name, record, oracle_compute)
    is_student = name == "distilled" or undo_alpha(name) is not None
    return {
        "model": name,
        "label": model_label(name),
        "alpha": undo_alpha(name),
        "retain_before": _as_float(final.get("retain")),
        "forget_before": _as_float(final.get("forget")),
        **_attack_fields(name, at_step, last),
        "distill_steps": _as_float(record.get("compute", {}).get("steps")) if is_student else math.nan,
        "stopped_early": record.get("stopped_early"),
        "cost_fraction_flops": cost["flops"],
        "cost_fraction_tokens": cost["tokens"],
    }


def summary_table(metrics: Mapping[str, Mapping], worst: pd.DataFrame, robustness_step: int) -> pd.DataFrame:
    """Build one row per model with its pre-attack scores, attack results and cost.

    Args:
        metrics: stage metrics from ``load_stage_metrics``.
        worst: worst case over LRs from ``undo_lib.relearn.worst_case``.
        robustness_step: attack step at which robustness is read.

    Returns:
        DataFrame in display order with columns model, label, alpha, retain_before, forget_before,
        forget_at_step (worst case at ``robustness_step`` or the last evaluated step before it,
        which is ``step_used``), best_lr_at_step, forget_last, last_step, distill_steps,
        stopped_early, cost_fraction_flops, cost_fraction_tokens (fractions of oracle pretraining)
        and relative_robustness. Missing values are NaN, or NA in the integer step columns.
    """
    at_step = worst_case_at(worst, robustness_step)
    last = worst_case_at(worst, int(worst["step"].max())) if not worst.empty else at_step.iloc[0:0]
    oracle_compute = metrics.get("oracle", {}).get("compute", {})
    models = sort_models([*metrics, *worst["model"]])
    table = pd.DataFrame([_summary_row(m, metrics.get(m, {}), at_step, last, oracle_compute) for m in models])

    fallback = at_step.index[at_step["step"] != robustness_step].tolist()
    if fallback:
        logger.info("no evaluation at attack step %d for %s, so the last earlier step is used (step_used)",
                    robustness_step, fallback)

    oracle_value = at_step["forget"].get("oracle")
    unlearned_value = at_step["forget"].get("unlearned")
    note = reference_gap_note(oracle_value, unlearned_value)
    if note:
        logger.warning("%s", note)
    table["relative_robustness"] = relative_robustness(table["forget_at_step"], oracle_value, unlearned_value)
    return table.astype({"step_used": "Int64", "last_step": "Int64", "distill_steps": "Int64"})


def summary_record(summary: pd.DataFrame, robustness_step: int, diverged: pd.DataFrame) -> dict:
    """Return the JSON-ready content of summary.json: table rows, robustness step, diverged runs."""
    return {
        "robustness_step": int(robustness_step),
        "models": json.loads(summary.to_json(orient="records")),
        "diverged_runs": json.loads(diverged.to_json(orient="records")),
    }


# ----------------------------------------------------------------------------------------------
# Figures


def _add_note(ax: Axes, text: str) -> None:
    """Write ``text`` under the axes. Constrained layout and bbox_inches="tight" make room for it."""
    if text:
        ax.annotate(textwrap.fill(text, NOTE_WIDTH), xy=(0, 0), xycoords="axes fraction", xytext=(0, -40),
                    textcoords="offset points", va="top", ha="left", fontsize=8, color="0.25")


def _set_limits(ax: Axes, limits: tuple[float, float] | None) -> None:
    """Fix the y range to ``limits``, or leave autoscaling on when it is None.

    ``set_ylim(None)`` would freeze the current range, which on axes shared across panels is the
    range of the panels drawn so far.
    """
    if limits is not None:
        ax.set_ylim(*limits)


def _add_legend(ax: Axes, **kwargs) -> None:
    """Add a legend unless the axes have no labelled artists (all attacks diverged, no points)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**kwargs)


def add_equation_forget(histories: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``histories`` with ``forget_equations``, the mean mul/div equation accuracy."""
    out = histories.copy()
    out["forget_equations"] = out[list(FORGET_EQUATION_COLUMNS)].mean(axis=1, skipna=False)
    return out


def plot_relearning_curves(worst: pd.DataFrame, diverged: pd.DataFrame | None = None,
                           robustness_step: int | None = None, metric: str = "forget",
                           title: str = "Relearning attack (worst case over LRs)",
                           ylabel: str = "forget accuracy",
                           limits: tuple[float, float] | None = ACCURACY_LIMITS) -> Figure:
    """Plot the worst-case forget metric against attack step, one line per model.

    Args:
        worst: worst case over LRs from ``undo_lib.relearn.worst_case``.
        diverged: diverged attacks from ``diverged_runs``, listed in a note under the axes.
        robustness_step: if given, a dotted vertical line marks this attack step.
        metric: the column of ``worst`` to plot (``forget`` or ``forget_equations``).
        title: the axes title.
        ylabel: name of the plotted metric (e.g. "Korean CE (nats)").
        limits: y-axis range, or None to fit the data (cross-entropies).
    """
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for name in sort_models(worst["model"]):
        rows = worst[worst["model"] == name].sort_values("step")
        ax.plot(rows["step"], rows[metric], label=model_label(name), markersize=4, **model_style(name))
    if robustness_step is not None:
        ax.axvline(robustness_step, color="0.6", linestyle=":", linewidth=1,
                   label=f"robustness read-out (step {robustness_step})")
    ax.set(xlabel="attack step", ylabel=f"{ylabel}, worst case over LRs", title=title)
    _set_limits(ax, limits)
    ax.grid(alpha=0.3)
    _add_legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    _add_note(ax, diverged_note(diverged))
    return fig


def _draw_points(ax: Axes, points: pd.DataFrame, column: str) -> None:
    """Scatter the distilled and UNDO points, joining the UNDO points by cost and labelling them by alpha."""
    undo = points[points["model"].map(undo_alpha).notna()].sort_values("cost_fraction_flops")
    if len(undo) > 1:
        ax.plot(undo["cost_fraction_flops"], undo[column], color=colormaps[UNDO_COLORMAP](UNDO_LINE_SHADE),
                linewidth=1, alpha=0.6, label="_nolegend_")
    for row in points.itertuples():
        style = model_style(row.model)
        ax.scatter(row.cost_fraction_flops, getattr(row, column), color=style["color"], marker=style["marker"],
                   s=45, zorder=3, label=model_label(row.model))
        alpha = undo_alpha(row.model)
        if alpha is not None:
            ax.annotate(f"α={row.model[len(UNDO_PREFIX):]}", (row.cost_fraction_flops, getattr(row, column)),
                        xytext=(5, 5), textcoords="offset points", fontsize=8)


def _draw_reference(ax: Axes, name: str, value: float, label: str) -> None:
    if math.isfinite(value):
        style = model_style(name)
        ax.axhline(value, color=style["color"], linestyle=style["linestyle"], linewidth=1.2, label=label)


def _plottable_points(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Split distilled and UNDO rows into plottable ones and the names of those lacking data."""
    students = summary[summary["model"].map(lambda m: m == "distilled" or undo_alpha(m) is not None)]
    complete = students["forget_at_step"].notna() & students["cost_fraction_flops"].notna()
    return students[complete], list(students.loc[~complete, "model"])


def _set_cost_limits(ax: Axes, costs: pd.Series) -> None:
    """Start the cost axis at 0 and leave room right of the most expensive point."""
    right = float(costs.max()) * 1.15 if not costs.empty else 1.0
    ax.set_xlim(0, right if right > 0 else 1.0)


def _set_relative_limits(ax: Axes, relative: pd.Series) -> None:
    """Show at least [-0.1, 1.1], so both references (0 and 1) are always in view."""
    values = relative.dropna()
    low = min(-0.1, float(values.min()) - 0.05) if not values.empty else -0.1
    high = max(1.1, float(values.max()) + 0.05) if not values.empty else 1.1
    ax.set_ylim(low, high)


def plot_robustness_vs_compute(summary_rows, oracle_value: float | None, unlearned_value: float | None,
                               robustness_step: int | None = None, forget_label: str = "forget accuracy",
                               limits: tuple[float, float] | None = ACCURACY_LIMITS) -> Figure:
    """Plot the post-attack forget metric and relative robustness against compute.

    The left panel shows the worst-case forget metric after the attack for Unlearn-and-Distill and
    each UNDO alpha, with horizontal lines for the oracle and the unlearned model. The right panel
    shows relative robustness, (P - P_unlearned) / (P_oracle - P_unlearned), with the oracle at 1
    and the unlearned model at 0. Models without an attack result or a cost are listed in a note.

    Args:
        summary_rows: ``summary_table`` output (a DataFrame or a list of its records).
        oracle_value: worst-case oracle forget metric at the robustness step.
        unlearned_value: the same for the unlearned model.
        robustness_step: attack step of the values, used in the axis label.
        forget_label: name of the forget metric on the left panel.
        limits: y-axis range of the left panel, or None to fit the data.
    """
    summary = pd.DataFrame(summary_rows)
    points, skipped = _plottable_points(summary)
    oracle, unlearned = _as_float(oracle_value), _as_float(unlearned_value)
    after = f"after {robustness_step} attack steps" if robustness_step is not None else "after the attack"

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_forget, ax_relative = fig.subplots(1, 2)
    _draw_points(ax_forget, points, "forget_at_step")
    _draw_reference(ax_forget, "oracle", oracle, model_label("oracle"))
    _draw_reference(ax_forget, "unlearned", unlearned, model_label("unlearned"))
    _set_limits(ax_forget, limits)
    ax_forget.set(ylabel=f"{forget_label} {after} (worst case)",
                  title="Robustness vs compute")

    relative = points.assign(relative=relative_robustness(points["forget_at_step"], oracle, unlearned))
    _draw_points(ax_relative, relative.dropna(subset=["relative"]), "relative")
    _draw_reference(ax_relative, "oracle", 1.0, f"{model_label('oracle')} = 1")
    _draw_reference(ax_relative, "unlearned", 0.0, f"{model_label('unlearned')} = 0")
    ax_relative.set(ylabel="relative robustness", title="Relative robustness vs compute")

    _set_relative_limits(ax_relative, relative["relative"])
    for ax in (ax_forget, ax_relative):
        ax.set_xlabel("cost (fraction of oracle pretraining FLOPs)")
        _set_cost_limits(ax, points["cost_fraction_flops"])
        ax.grid(alpha=0.3)
        _add_legend(ax, fontsize=8, loc="best")
    if skipped:
        _add_note(ax_forget, "Not plotted (no attack result or cost): "
                  + ", ".join(model_label(m) for m in skipped) + ".")
    _add_note(ax_relative, reference_gap_note(oracle, unlearned))
    return fig


def _lr_colors(lrs: Sequence[float]) -> dict[float, tuple]:
    """Map each LR to a colour of LR_COLORMAP, from the smallest LR (dark) to the largest (light)."""
    ordered = sorted(lrs)
    shades = np.linspace(0.1, 0.8, len(ordered)) if len(ordered) > 1 else [0.1]
    return {lr: colormaps[LR_COLORMAP](shade) for lr, shade in zip(ordered, shades)}


def _draw_lr_panel(ax: Axes, runs: pd.DataFrame, colors: Mapping[float, tuple]) -> list[str]:
    """Draw one line per LR of one model and return a description of each diverged LR."""
    diverged = []
    for lr, run in runs.groupby("lr"):
        if run["diverged"].any():
            diverged.append(f"{_lr_text(lr)} (step {int(run.loc[run['diverged'], 'step'].min())})")
        evaluated = run[~run["diverged"]].dropna(subset=["forget"]).sort_values("step")
        if not evaluated.empty:
            ax.plot(evaluated["step"], evaluated["forget"], color=colors[lr], marker=".", label=_lr_text(lr))
    return diverged


def plot_relearning_by_lr(histories: pd.DataFrame, max_columns: int = 3, forget_label: str = "forget accuracy",
                          limits: tuple[float, float] | None = ACCURACY_LIMITS) -> Figure:
    """Plot the forget metric against attack step, one panel per model and one line per LR.

    A panel's title lists the LRs whose attack diverged, with the step of divergence.

    Args:
        histories: ``load_relearn_histories`` output.
        max_columns: panels per row.
        forget_label: name of the forget metric on the y axis.
        limits: y-axis range, or None to fit the data.
    """
    models = sort_models(histories["model"])
    colors = _lr_colors(list(histories["lr"].unique()))
    columns = min(max_columns, len(models))
    rows = math.ceil(len(models) / columns)

    fig = Figure(figsize=(4.2 * columns + 1.5, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, name in zip(axes, models):
        diverged = _draw_lr_panel(ax, histories[histories["model"] == name], colors)
        title = model_label(name) + ("\ndiverged: " + ", ".join(diverged) if diverged else "")
        ax.set(title=title)
        _set_limits(ax, limits)
        ax.grid(alpha=0.3)
    for ax in axes[len(models):]:
        fig.delaxes(ax)
    fig.supxlabel("attack step")
    fig.supylabel(forget_label)

    handles = [Line2D([], [], color=color, marker=".", label=_lr_text(lr)) for lr, color in colors.items()]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="attack LR")
    fig.suptitle("Relearning attack per learning rate")
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save ``fig`` as PNG at ``path`` through a temporary file and a rename, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # savefig creates the temporary file with the umask's permissions, whereas mkstemp would make it 0600.
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote %s", path)
    return path
