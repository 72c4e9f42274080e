"""Figures of experiments E1-E4 of Lee et al. (arXiv 2506.06278), drawn from ``undo_lib.experiments``.

Every figure function returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing
is shown and no global figure state is left behind. Curves show the mean over seeds of the worst
case over attack LRs, with a band from the min to the max over seeds; points show the mean with
min-max error bars. With one seed there is no band, and each figure's title names the seeds it
shows. Figures that plot the worst case list the diverged attacks behind it in a note.
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from undo_lib.experiments import (DATA_FILTERING, FULL, UNDO, UNLEARN, UNLEARN_AND_DISTILL, Curves, model_family,
                                  model_label, sort_models, undo_alpha, unlearn_role)
from undo_lib.io import remove_stale_temporaries
from undo_lib.settings import MetricSpec

logger = logging.getLogger(__name__)

FAMILY_STYLES = {
    FULL: {"color": "0.55", "linestyle": "-", "marker": "s"},
    DATA_FILTERING: {"color": "black", "linestyle": "--", "marker": "o"},
    "GradDiff": {"color": "tab:orange", "linestyle": "-", "marker": "^"},
    "MaxEnt": {"color": "tab:red", "linestyle": "-", "marker": "v"},
    "RMU": {"color": "tab:purple", "linestyle": "-", "marker": "P"},
    "SAM": {"color": "tab:brown", "linestyle": "-", "marker": "X"},
    "RepNoise": {"color": "tab:pink", "linestyle": "-", "marker": "h"},
    UNLEARN_AND_DISTILL: {"color": "tab:blue", "linestyle": "-", "marker": "D"},
    UNDO: {"color": colormaps["Greens"](0.75), "linestyle": "-", "marker": "o"},
}
MATCH_STYLES = {
    "match_full": {"color": "tab:olive", "linestyle": "-", "marker": "s"},
    "match_random_init": {"color": "tab:cyan", "linestyle": "-", "marker": "o"},
}
UNDO_COLORMAP = "Greens"  # alpha 0 maps to the light end, alpha 1 to the dark end
LR_COLORMAP = "plasma"
FAILED_COLOR = "0.6"  # edge colour of collapsed unlearning runs, drawn hollow
BAND_OPACITY = 0.18
NOTE_WIDTH = 110  # characters per line of a figure note
MAX_LISTED_DIVERGED = 8  # diverged attacks named in a figure note; summary.json lists all


# ----------------------------------------------------------------------------------------------
# Labels, styles and notes


def model_style(name: str) -> dict:
    """Return matplotlib ``color``, ``linestyle`` and ``marker`` keywords for a model or role name.

    A teacher role takes its method's style, and UNDO models get a shade of UNDO_COLORMAP by
    alpha, so the same alpha has the same colour in every figure. Unknown names get grey dots.
    """
    if name in MATCH_STYLES:
        return dict(MATCH_STYLES[name])
    alpha = undo_alpha(name)
    if alpha is not None:
        shade = 0.4 + 0.55 * min(max(alpha, 0.0), 1.0)
        return {"color": colormaps[UNDO_COLORMAP](shade), "linestyle": "-", "marker": "o"}
    family = model_family(name)
    if family == UNLEARN:
        family = name.removeprefix("unlearn_")
    if family in FAMILY_STYLES:
        return dict(FAMILY_STYLES[family])
    return {"color": "0.3", "linestyle": ":", "marker": "."}


def seed_note(seeds: Sequence[int]) -> str:
    """Describe what the curves and points show over ``seeds``."""
    if len(seeds) == 1:
        return f"one seed (seed {seeds[0]}), so no band over seeds"
    return f"mean over seeds {', '.join(map(str, seeds))}; bands and error bars span min to max over seeds"


def forget_axis_label(spec: MetricSpec, when: str) -> str:
    """Return the forget-metric axis label, saying which direction means more forgotten."""
    direction = "lower" if spec.higher_is_better else "higher"
    return f"{spec.forget_label} {when}\n({direction} = more forgotten)"


def retain_axis_label(spec: MetricSpec) -> str:
    """Return the retain-metric axis label, saying which direction is better."""
    direction = "higher" if spec.higher_is_better else "lower"
    return f"{spec.retain_label} before the attack\n({direction} is better)"


def diverged_note(diverged: pd.DataFrame | None, max_listed: int = MAX_LISTED_DIVERGED) -> str:
    """Return a note listing diverged attacks, or "" when there are none."""
    if diverged is None or diverged.empty:
        return ""
    runs = [f"seed {int(r.seed)} {model_label(r.model)} @ lr={r.lr:g} (step {int(r.step)})"
            for r in diverged.head(max_listed).itertuples()]
    more = f"; and {len(diverged) - max_listed} more (see summary.json)" if len(diverged) > max_listed else ""
    return ("Diverged attacks (only their evaluations before the divergence enter the worst case): "
            + "; ".join(runs) + more + ".")


def _add_note(ax: Axes, text: str, offset: float = -48) -> None:
    """Write ``text`` under the axes. Constrained layout and bbox_inches="tight" make room for it."""
    if text:
        ax.annotate(textwrap.fill(text, NOTE_WIDTH), xy=(0, 0), xycoords="axes fraction", xytext=(0, offset),
                    textcoords="offset points", va="top", ha="left", fontsize=8, color="0.25")


def _set_limits(ax: Axes, limits: tuple[float, float] | None) -> None:
    """Fix the y range to ``limits``, or leave autoscaling on when it is None (cross-entropies)."""
    if limits is not None:
        ax.set_ylim(*limits)


def _add_legend(ax: Axes, **kwargs) -> None:
    """Add a legend unless the axes have no labelled artists (all attacks diverged, no points)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**kwargs)


def _title(fig: Figure, title: str, seeds: Sequence[int]) -> None:
    fig.suptitle(f"{title}\n{seed_note(seeds)}", fontsize=11)


# ----------------------------------------------------------------------------------------------
# Curves


def _draw_band(ax: Axes, rows: pd.DataFrame, name: str, label: str) -> None:
    """Plot the mean of one model against step, and the min-max band when more than one seed is behind it."""
    rows = rows.sort_values("step")
    style = model_style(name)
    ax.plot(rows["step"], rows["mean"], label=label, markersize=4, **style)
    if (rows["n_seeds"] > 1).any():
        ax.fill_between(rows["step"], rows["min"], rows["max"], color=style["color"], alpha=BAND_OPACITY,
                        linewidth=0)


def _draw_curves(ax: Axes, band: pd.DataFrame, labels: Mapping[str, str] | None = None) -> None:
    for name in sort_models(band["model"]):
        label = (labels or {}).get(name, model_label(name))
        _draw_band(ax, band[band["model"] == name], name, label)


def _mark_step(ax: Axes, step: int | None) -> None:
    if step is not None:
        ax.axvline(step, color="0.6", linestyle=":", linewidth=1, label=f"robustness read-out (step {step})")


def plot_relearning_curves(curves: Curves, spec: MetricSpec, seeds: Sequence[int], robustness_step: int | None = None,
                           title: str = "Relearning attack (worst case over LRs)",
                           forget_label: str | None = None) -> Figure:
    """Plot the worst-case forget metric against attack step, one line (and band) per model.

    Args:
        curves: ``undo_lib.experiments.e3_curves`` output or any other Curves.
        spec: the setting's metric labels, direction and y range.
        seeds: the seeds behind the curves, named in the title.
        robustness_step: if given, a dotted vertical line marks this attack step.
        title: the figure title.
        forget_label: y-axis metric name in place of ``spec.forget_label`` (equation accuracy).
    """
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.add_subplot()
    _draw_curves(ax, curves.band)
    _mark_step(ax, robustness_step)
    labelled = spec if forget_label is None else replace(spec, forget_label=forget_label)
    ax.set(xlabel="attack step", ylabel=forget_axis_label(labelled, "(worst case over LRs)"))
    _set_limits(ax, spec.limits)
    ax.grid(alpha=0.3)
    _add_legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    _add_note(ax, diverged_note(curves.diverged))
    _title(fig, title, seeds)
    return fig


def plot_oracle_matching(kl_band: pd.DataFrame, curves: Curves, spec: MetricSpec, seeds: Sequence[int],
                         robustness_step: int | None = None) -> Figure:
    """Plot E1: (a) distillation KL against step for both oracle-matched students, (b) their relearning.

    Args:
        kl_band: ``e1_curves``' KL band (model, step, mean, min, max, n_seeds) of the history ``loss``.
        curves: ``e1_curves``' relearning curves of both students and the oracle.
        spec: the setting's metric labels, direction and y range.
        seeds: the seeds behind the curves.
        robustness_step: if given, marked on panel (b).
    """
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_kl, ax_attack = fig.subplots(1, 2)
    _draw_curves(ax_kl, kl_band)
    ax_kl.set(xlabel="distillation step", ylabel="KL(oracle || student) (nats per token)",
              title="(a) Matching the oracle's outputs")
    _draw_curves(ax_attack, curves.band)
    _mark_step(ax_attack, robustness_step)
    ax_attack.set(xlabel="attack step", ylabel=forget_axis_label(spec, "(worst case over LRs)"),
                  title="(b) Relearning attack")
    _set_limits(ax_attack, spec.limits)
    for ax in (ax_kl, ax_attack):
        ax.grid(alpha=0.3)
        _add_legend(ax, fontsize=8, loc="best")
    _add_note(ax_attack, diverged_note(curves.diverged))
    _title(fig, "E1: oracle matching", seeds)
    return fig


def plot_unlearn_vs_distill(curves: Mapping[str, Curves], spec: MetricSpec, seeds: Sequence[int],
                            robustness_step: int | None = None) -> Figure:
    """Plot E2: one panel per method with Unlearn, Unlearn-and-Distill and Data filtering.

    A panel's title names the sweep points that were the method's teacher in the seeds.

    Args:
        curves: ``e2_curves`` output, keyed by method.
        spec: the setting's metric labels, direction and y range.
        seeds: the seeds behind the curves.
        robustness_step: if given, marked in every panel.
    """
    methods = list(curves)
    fig = Figure(figsize=(5 * len(methods) + 1.5, 4.8), layout="constrained")
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False).ravel()
    for ax, method in zip(axes, methods):
        band = curves[method].band
        _draw_curves(ax, band, labels={name: model_family(name) for name in band["model"].unique()})
        _mark_step(ax, robustness_step)
        names = ", ".join(model_label(m) for m in curves[method].sources.get(unlearn_role(method), ()))
        ax.set(xlabel="attack step", title=method + (f"\nteacher: {names}" if names else ""))
        _set_limits(ax, spec.limits)
        ax.grid(alpha=0.3)
        _add_legend(ax, fontsize=8, loc="best")  # one per panel, because Unlearn takes its method's colour
    axes[0].set_ylabel(forget_axis_label(spec, "(worst case over LRs)"))
    diverged = pd.concat([c.diverged for c in curves.values()], ignore_index=True).drop_duplicates()
    _add_note(axes[0], diverged_note(diverged))
    _title(fig, "E2: Unlearn vs Unlearn-and-Distill vs Data filtering", seeds)
    return fig


# ----------------------------------------------------------------------------------------------
# Points


def _error_bars(table: pd.DataFrame, column: str) -> np.ndarray | None:
    """Return matplotlib's (2, n) error bars from the mean to the min and max over seeds, or None for one seed."""
    if table.empty or (table["n_seeds"] <= 1).all():
        return None
    low = (table[column] - table[f"{column}_min"]).clip(lower=0).fillna(0)
    high = (table[f"{column}_max"] - table[column]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _draw_points(ax: Axes, points: pd.DataFrame, x: str, y: str) -> None:
    """Draw each model as a point with min-max error bars, joining the UNDO points by x."""
    undo = points[points["family"] == UNDO].sort_values(x)
    if len(undo) > 1:
        ax.plot(undo[x], undo[y], color=FAMILY_STYLES[UNDO]["color"], linewidth=1, alpha=0.6, label="_nolegend_")
    for _, row in points.iterrows():
        style = model_style(row["model"])
        one = points.loc[[row.name]]
        ax.errorbar(row[x], row[y], xerr=_error_bars(one, x), yerr=_error_bars(one, y), fmt=style["marker"],
                    color=style["color"], markersize=7, capsize=3, zorder=3, label=model_label(row["model"]))


def _draw_reference(ax: Axes, row: pd.Series | None, column: str, label: str, value: float | None = None) -> None:
    """Draw a horizontal reference line at the mean (or ``value``), with the seed range as a band."""
    if row is None:
        return
    style = model_style(row["model"])
    level = row[column] if value is None else value
    if not math.isfinite(level):
        return
    ax.axhline(level, color=style["color"], linestyle="--", linewidth=1.2, label=label)
    if value is None and row["n_seeds"] > 1:
        ax.axhspan(row[f"{column}_min"], row[f"{column}_max"], color=style["color"], alpha=BAND_OPACITY / 2)


def _row(table: pd.DataFrame, mask: pd.Series) -> pd.Series | None:
    rows = table[mask]
    return rows.iloc[0] if not rows.empty else None


def _set_cost_limits(ax: Axes, costs: pd.Series) -> None:
    """Start the cost axis at 0 and leave room right of the most expensive point."""
    right = float(costs.max()) * 1.15 if not costs.dropna().empty else 1.0
    ax.set_xlim(0, right if right > 0 else 1.0)


def _set_relative_limits(ax: Axes, relative: pd.Series) -> None:
    """Show at least [-0.1, 1.1], so both references (0 and 1) are always in view."""
    values = relative.dropna()
    low = min(-0.1, float(values.min()) - 0.05) if not values.empty else -0.1
    high = max(1.1, float(values.max()) + 0.05) if not values.empty else 1.1
    ax.set_ylim(low, high)


def plot_robustness_vs_compute(e3: pd.DataFrame, spec: MetricSpec, seeds: Sequence[int],
                               robustness_step: int) -> Figure:
    """Plot E3: post-attack forget metric and relative robustness against compute.

    Each UNDO alpha and Unlearn-and-Distill is a point at its cost (``cost_fraction.flops``:
    unlearning plus distillation FLOPs over the oracle's pretraining FLOPs). The oracle and the
    UNDO teacher are horizontal references; in the right panel they sit at 1 and 0 by definition.

    Args:
        e3: ``undo_lib.experiments.e3_table`` output.
        spec: the setting's metric labels, direction and y range.
        seeds: the seeds behind the values.
        robustness_step: the attack step of the forget values.
    """
    students = e3[e3["family"].isin([UNDO, UNLEARN_AND_DISTILL])]
    complete = students["forget_at_step"].notna() & students["cost_fraction_flops"].notna()
    points, skipped = students[complete], students.loc[~complete, "model"].tolist()
    oracle, teacher = _row(e3, e3["model"] == "oracle"), _row(e3, e3["family"] == UNLEARN)

    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_forget, ax_relative = fig.subplots(1, 2)
    _draw_points(ax_forget, points, "cost_fraction_flops", "forget_at_step")
    _draw_reference(ax_forget, oracle, "forget_at_step", model_label("oracle"))
    _draw_reference(ax_forget, teacher, "forget_at_step", model_label(teacher["model"]) if teacher is not None else "")
    ax_forget.set(ylabel=forget_axis_label(spec, f"after {robustness_step} attack steps"),
                  title="Robustness vs compute")
    _set_limits(ax_forget, spec.limits)

    _draw_points(ax_relative, points.dropna(subset=["relative_robustness"]), "cost_fraction_flops",
                 "relative_robustness")
    _draw_reference(ax_relative, oracle, "relative_robustness", f"{model_label('oracle')} = 1", value=1.0)
    if teacher is not None:
        _draw_reference(ax_relative, teacher, "relative_robustness", f"{model_label(teacher['model'])} = 0", value=0.0)
    ax_relative.set(ylabel="relative robustness\n(P - P_unlearn) / (P_oracle - P_unlearn)",
                    title="Relative robustness vs compute")
    _set_relative_limits(ax_relative, pd.concat([points["relative_robustness_min"], points["relative_robustness_max"]]))
    for ax in (ax_forget, ax_relative):
        ax.set_xlabel("compute (fraction of oracle pretraining FLOPs)")
        _set_cost_limits(ax, points["cost_fraction_flops_max"])
        ax.grid(alpha=0.3)
        _add_legend(ax, fontsize=8, loc="best")
    if skipped:
        _add_note(ax_forget, "Not plotted (no attack result or cost): " + ", ".join(map(model_label, skipped)) + ".")
    _title(fig, "E3: UNDO robustness vs compute", seeds)
    return fig


def _pareto_handles(table: pd.DataFrame) -> list[Line2D]:
    handles = []
    for family in dict.fromkeys(table["family"]):
        style = model_style(table.loc[table["family"] == family, "model"].iloc[0])
        handles.append(Line2D([], [], color=style["color"], marker=style["marker"], linestyle="", label=family))
    if (table["collapsed_seeds"] > 0).any():
        handles.append(Line2D([], [], color=FAILED_COLOR, marker="o", markerfacecolor="none", linestyle="",
                              label="collapsed unlearning run (failed)"))
    return handles


def _point_tag(row: pd.Series) -> str:
    if row["collapsed_seeds"] > 0:
        return f"failed ({int(row['collapsed_seeds'])}/{int(row['n_seeds'])} seeds collapsed)"
    if row["family"] == UNDO:
        return f"α={row['alpha']:g}"
    if row["family"] == UNLEARN_AND_DISTILL:
        return row["model"].removeprefix("distilled_")
    return ""


def _draw_pareto_panel(ax: Axes, rows: pd.DataFrame) -> None:
    for _, row in rows.iterrows():
        style = model_style(row["model"])
        one = rows.loc[[row.name]]
        failed = row["collapsed_seeds"] > 0
        color = FAILED_COLOR if failed else style["color"]
        ax.errorbar(row["retain_before"], row["forget_after"], xerr=_error_bars(one, "retain_before"),
                    yerr=_error_bars(one, "forget_after"), fmt=style["marker"], color=color,
                    markerfacecolor="none" if failed else color, markersize=6, capsize=2,
                    zorder=2 if failed else 3, alpha=0.7 if failed else 1.0, label=model_label(row["model"]))
        tag = _point_tag(row)
        if tag:
            ax.annotate(tag, (row["retain_before"], row["forget_after"]), xytext=(4, 4), textcoords="offset points",
                        fontsize=7, color="0.35" if failed else "0.1")


def plot_pareto(e4: pd.DataFrame, spec: MetricSpec, seeds: Sequence[int]) -> Figure:
    """Plot E4: retain before the attack against forget after each attack budget, one panel per budget.

    Collapsed unlearning runs are drawn hollow and grey and tagged as failed. The corner where
    retain is good and forget is low (forgotten) is labelled in each panel.

    Args:
        e4: ``undo_lib.experiments.e4_table`` output.
        spec: the setting's metric labels, direction and range (used on both axes for accuracies).
        seeds: the seeds behind the values.
    """
    budgets = sorted(e4["budget"].unique())
    fig = Figure(figsize=(5 * len(budgets) + 2.5, 5), layout="constrained")
    axes = fig.subplots(1, len(budgets), sharex=True, sharey=True, squeeze=False).ravel()
    for ax, budget in zip(axes, budgets):
        _draw_pareto_panel(ax, e4[e4["budget"] == budget])
        ax.set(title=f"after {budget} attack steps", xlabel=retain_axis_label(spec))
        _set_limits(ax, spec.limits)  # the x axis fits the data: retain values of a sweep sit close together
        ax.grid(alpha=0.3)
        better_right = spec.higher_is_better  # accuracies: retain right and forget low are better
        ax.text(0.98 if better_right else 0.02, 0.02 if better_right else 0.98, "good corner",
                transform=ax.transAxes, ha="right" if better_right else "left",
                va="bottom" if better_right else "top", fontsize=8, color="tab:green")
    axes[0].set_ylabel(forget_axis_label(spec, "after the attack (worst case over LRs)"))
    fig.legend(handles=_pareto_handles(e4), loc="outside right upper", fontsize=8)
    _title(fig, "E4: retain vs forget under relearning attacks", seeds)
    return fig


# ----------------------------------------------------------------------------------------------
# Relearning per learning rate


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
            diverged.append(f"lr={lr:g} (step {int(run.loc[run['diverged'], 'step'].min())})")
        evaluated = run[~run["diverged"]].dropna(subset=["forget"]).sort_values("step")
        if not evaluated.empty:
            ax.plot(evaluated["step"], evaluated["forget"], color=colors[lr], marker=".", label=f"lr={lr:g}")
    return diverged


def plot_relearning_by_lr(relearn: pd.DataFrame, spec: MetricSpec, seed: int, max_columns: int = 6) -> Figure:
    """Plot one seed's forget metric against attack step, one panel per model and one line per LR.

    A panel's title lists the LRs whose attack diverged, with the step of divergence.

    Args:
        relearn: ``undo_lib.experiments.load_relearn_histories`` output (all seeds).
        spec: the setting's metric labels and y range.
        seed: the seed to show.
        max_columns: panels per row.
    """
    histories = relearn[relearn["seed"] == seed]
    models = sort_models(histories["model"])
    colors = _lr_colors(list(histories["lr"].unique()))
    columns = max(1, min(max_columns, len(models)))
    rows = max(1, math.ceil(len(models) / columns))

    fig = Figure(figsize=(3.4 * columns + 1.5, 2.8 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, name in zip(axes, models):
        diverged = _draw_lr_panel(ax, histories[histories["model"] == name], colors)
        ax.set_title(model_label(name) + ("\ndiverged: " + ", ".join(diverged) if diverged else ""), fontsize=9)
        _set_limits(ax, spec.limits)
        ax.grid(alpha=0.3)
    for ax in axes[len(models):]:
        fig.delaxes(ax)
    fig.supxlabel("attack step")
    fig.supylabel(spec.forget_label)
    handles = [Line2D([], [], color=color, marker=".", label=f"lr={lr:g}") for lr, color in colors.items()]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="attack LR")
    fig.suptitle(f"Relearning attack per learning rate (seed {seed} only)")
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
