"""Read one setting's per-seed stage outputs and turn them into the numbers of experiments E1-E4.

The figures notebook reads ``runs_dir`` (``outputs/<setting>/runs``), one ``seed_<k>`` folder per
training seed in ``shared.seeds``:

- ``pretrain/{full,oracle}/metrics.json``;
- ``unlearn/<Run>/lr_<lr>/metrics.json`` for every run of the unlearning sweeps (GradDiff, MaxEnt,
  RMU, SAM, RepNoise) and ``teachers/<Method>.json``, the sweep point each of GradDiff, MaxEnt and
  RMU picked as teacher;
- ``distill/<Method>/`` (Unlearn-and-Distill), ``match/{full,random_init}/`` (oracle matching) and
  ``undo/alpha_<a>/`` (UNDO), each with metrics.json and history.csv;
- ``relearn/<group>/<model>/lr_<lr>/history.csv`` for every attacked model and attack LR, where
  ``<group>`` is the relearning stage that attacks the model (``undo_lib.names.relearn_group``).

Only the runs, LRs, alphas and seeds that the params list are read, so folders left by an earlier
configuration are ignored. Relearning attacks are combined as in Lee et al. (arXiv 2506.06278):
per seed and attack step the attacker keeps its best LR (``undo_lib.relearn.worst_case``), and
the seeds are then averaged. Curves carry the min and max over seeds as a band, and table values
carry ``<value>_min`` and ``<value>_max`` columns, the same min-max range over seeds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from undo_lib.config import METHOD_NAMES, RUN_NAMES, Params
from undo_lib.io import atomic_write_text, read_json
from undo_lib.names import (MATCH_STUDENTS, alpha_folder, distilled_model, lr_folder, match_model, relearn_group,
                            sweep_model, undo_model)
from undo_lib.relearn import worst_case
from undo_lib.settings import metric_spec

logger = logging.getLogger(__name__)


# Model families, used for legends, styles and the Pareto table
FULL = "Full model"
DATA_FILTERING = "Data filtering"
ORACLE_MATCHING = "Oracle matching"
UNLEARN = "Unlearn"  # a method's selected teacher, which may be another sweep point in each seed
UNLEARN_AND_DISTILL = "Unlearn-and-Distill"
UNDO = "UNDO"

# Oracle and unlearned forget metrics closer than this leave relative robustness undefined.
MIN_REFERENCE_GAP = 1e-9
MAX_LISTED_MISSING = 10  # missing files named in the error message; the rest are counted
FORGET_EQUATION_COLUMNS = ("acc/multiplication/equation", "acc/division/equation")
POINT_VALUES = ("retain_before", "forget_before", "forget_at_step", "forget_last")


class MissingOutputError(FileNotFoundError):
    """A stage output that the params promise is missing from ``runs_dir``."""


# ----------------------------------------------------------------------------------------------
# Model names


def unlearn_role(method: str) -> str:
    """Return the name under which a method's teacher appears once the seeds are combined."""
    return f"unlearn_{method}"


def undo_alpha(name: str) -> float | None:
    """Return the alpha of an UNDO model name (``undo_0.3`` gives 0.3), or None for other models."""
    if not name.startswith("undo_"):
        return None
    try:
        return float(name.removeprefix("undo_"))
    except ValueError:
        return None


def sweep_point(name: str) -> tuple[str, float] | None:
    """Return (run, lr) of a sweep point name (``RMU_lr_1e-05`` gives ("RMU", 1e-05)), else None."""
    run, separator, lr = name.partition("_lr_")
    if not separator or run not in RUN_NAMES:
        return None
    try:
        return run, float(lr)
    except ValueError:
        return None


def _suffix_method(name: str, prefix: str) -> str | None:
    method = name.removeprefix(prefix)
    return method if name.startswith(prefix) and method in METHOD_NAMES else None


def model_family(name: str) -> str:
    """Return the family of a model name: a run name for sweep points, else one of the constants above."""
    if name == "full":
        return FULL
    if name == "oracle":
        return DATA_FILTERING
    if name in (match_model(s) for s in MATCH_STUDENTS):
        return ORACLE_MATCHING
    if sweep_point(name) is not None:
        return sweep_point(name)[0]
    if _suffix_method(name, "unlearn_") is not None:
        return UNLEARN
    if _suffix_method(name, "distilled_") is not None:
        return UNLEARN_AND_DISTILL
    if undo_alpha(name) is not None:
        return UNDO
    return name


def model_label(name: str) -> str:
    """Return the display label of a model name, or the name itself when it is unknown."""
    labels = {
        "full": "Full model",
        "oracle": "Data filtering (oracle)",
        "match_full": "Pretrained student (oracle-matched)",
        "match_random_init": "Random-init student (oracle-matched)",
    }
    if name in labels:
        return labels[name]
    if sweep_point(name) is not None:
        run, lr = sweep_point(name)
        return f"{run} lr={lr:g}"
    if _suffix_method(name, "unlearn_") is not None:
        return f"Unlearn ({_suffix_method(name, 'unlearn_')})"
    if _suffix_method(name, "distilled_") is not None:
        return f"Unlearn-and-Distill ({_suffix_method(name, 'distilled_')})"
    if undo_alpha(name) is not None:
        return f"UNDO α={undo_alpha(name):g}"
    return name


def model_sort_key(name: str) -> tuple[int, float, str]:
    """Sort key: full, oracle, oracle-matched students, teachers, sweep points, Unlearn-and-Distill, UNDO."""
    fixed = ("full", "oracle", "match_full", "match_random_init")
    if name in fixed:
        return (fixed.index(name), 0.0, name)
    if _suffix_method(name, "unlearn_") is not None:
        return (4, METHOD_NAMES.index(_suffix_method(name, "unlearn_")), name)
    if sweep_point(name) is not None:
        run, lr = sweep_point(name)
        return (5 + RUN_NAMES.index(run), lr, name)
    if _suffix_method(name, "distilled_") is not None:
        return (10, METHOD_NAMES.index(_suffix_method(name, "distilled_")), name)
    if undo_alpha(name) is not None:
        return (11, undo_alpha(name), name)
    return (12, 0.0, name)


def sort_models(names: Iterable[str]) -> list[str]:
    """Return the distinct model names in display order."""
    return sorted(set(names), key=model_sort_key)


# ----------------------------------------------------------------------------------------------
# The expected layout


@dataclass(frozen=True)
class ModelEntry:
    """One attacked model: its name, family and stage output folder relative to a seed folder."""

    name: str
    family: str
    folder: str
    has_history: bool = False  # distillation stages write a history.csv beside metrics.json


def attacked_models(params: Params, setting: str) -> list[ModelEntry]:
    """List every model that the params configure as attacked, with the folder of its stage metrics."""
    unlearn, distill = params.unlearn[setting], params.distill[setting]
    entries = [ModelEntry("full", FULL, "pretrain/full"), ModelEntry("oracle", DATA_FILTERING, "pretrain/oracle")]
    entries += [ModelEntry(match_model(s), ORACLE_MATCHING, f"match/{s}", True) for s in MATCH_STUDENTS]
    for run in RUN_NAMES:
        entries += [ModelEntry(sweep_model(run, lr), run, f"unlearn/{run}/{lr_folder(lr)}")
                    for lr in getattr(unlearn, run).lrs]
    entries += [ModelEntry(distilled_model(m), UNLEARN_AND_DISTILL, f"distill/{m}", True) for m in METHOD_NAMES]
    entries += [ModelEntry(undo_model(a), UNDO, f"undo/{alpha_folder(a)}", True) for a in distill.alphas]
    return entries


def _required_files(params: Params, setting: str, runs_dir: Path) -> list[Path]:
    files = []
    for seed in params.shared.seeds:
        seed_dir = runs_dir / f"seed_{seed}"
        for entry in attacked_models(params, setting):
            files.append(seed_dir / entry.folder / "metrics.json")
            if entry.family == ORACLE_MATCHING:  # E1 plots the distillation KL of these two
                files.append(seed_dir / entry.folder / "history.csv")
            files += [seed_dir / "relearn" / relearn_group(entry.name) / entry.name / lr_folder(lr) / "history.csv"
                      for lr in params.relearn[setting].lrs]
        files += [seed_dir / "teachers" / f"{method}.json" for method in METHOD_NAMES]
    return files


def _stage_family(path: Path, runs_dir: Path, setting: str) -> str:
    """Return the stage family that writes ``path``, such as ``arithmetic-relearn``."""
    parts = path.relative_to(runs_dir).parts
    if len(parts) > 2 and parts[1] == "relearn":
        return f"{setting}-relearn-{parts[2]}"
    return f"{setting}-{parts[1]}" if len(parts) > 1 else f"{setting}-figures"


def check_outputs(params: Params, setting: str, runs_dir: str | Path) -> None:
    """Raise MissingOutputError naming the missing files, and their stages, of the expected layout."""
    runs_dir = Path(runs_dir)
    missing = [path for path in _required_files(params, setting, runs_dir) if not path.is_file()]
    if not missing:
        return
    listed = [f"{path} (written by the {_stage_family(path, runs_dir, setting)} stages)"
              for path in missing[:MAX_LISTED_MISSING]]
    more = f"\n  ... and {len(missing) - MAX_LISTED_MISSING} more" if len(missing) > MAX_LISTED_MISSING else ""
    raise MissingOutputError(
        f"{len(missing)} stage outputs are missing under {runs_dir}:\n  " + "\n  ".join(listed) + more
        + f"\nRun `dvc repro {setting}-figures` to run the stages that write them."
    )


# ----------------------------------------------------------------------------------------------
# Loaders


def _to_bool(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, (int, float, np.number)):
        return bool(value) and not math.isnan(float(value))
    return False


def _as_float(value: object) -> float:
    if value is None:
        return math.nan
    return float(value)


def _ratio(numerator: object, denominator: object) -> float:
    top, bottom = _as_float(numerator), _as_float(denominator)
    return top / bottom if math.isfinite(bottom) and bottom > 0 else math.nan


def _cost_fraction(entry: ModelEntry, record: Mapping, oracle_compute: Mapping) -> tuple[float, float]:
    """Return (FLOPs, tokens) of a model's cost as fractions of oracle pretraining.

    Distillation stages report it; the oracle costs 1 by definition; a sweep point costs its
    unlearning run; the full model has no cost (NaN).
    """
    fraction = record.get("cost_fraction")
    if fraction is not None:
        return _as_float(fraction.get("flops")), _as_float(fraction.get("tokens"))
    if entry.name == "oracle":
        return 1.0, 1.0
    if entry.family in RUN_NAMES:
        compute = record.get("compute") or {}
        return _ratio(compute.get("flops"), oracle_compute.get("flops")), \
            _ratio(compute.get("tokens"), oracle_compute.get("tokens"))
    return math.nan, math.nan


def _stage_row(seed: int, entry: ModelEntry, record: Mapping, oracle_compute: Mapping) -> dict:
    final = record.get("final") or {}
    flops, tokens = _cost_fraction(entry, record, oracle_compute)
    distill_steps = (record.get("compute") or {}).get("steps") if entry.has_history else None
    return {
        "seed": seed,
        "model": entry.name,
        "family": entry.family,
        "retain_before": _as_float(final.get("retain")),
        "forget_before": _as_float(final.get("forget")),
        "collapsed": _to_bool(record.get("collapsed", False)),
        "cost_fraction_flops": flops,
        "cost_fraction_tokens": tokens,
        "distill_steps": _as_float(distill_steps),
        "stopped_early": record.get("stopped_early"),
        "reached_stop_rule": record.get("reached_stop_rule"),
        "teacher_model": record.get("teacher_model"),
    }


def load_stage_metrics(params: Params, setting: str, runs_dir: str | Path) -> pd.DataFrame:
    """Read every attacked model's stage metrics.json, one row per seed and model.

    Returns:
        Columns seed, model, family, retain_before and forget_before (the stage's ``final``
        metrics), collapsed, cost_fraction_flops and cost_fraction_tokens (fractions of oracle
        pretraining), distill_steps, stopped_early, reached_stop_rule and teacher_model.
    """
    rows = []
    for seed in params.shared.seeds:
        seed_dir = Path(runs_dir) / f"seed_{seed}"
        oracle_compute = read_json(seed_dir / "pretrain/oracle/metrics.json").get("compute") or {}
        for entry in attacked_models(params, setting):
            record = read_json(seed_dir / entry.folder / "metrics.json")
            rows.append(_stage_row(seed, entry, record, oracle_compute))
    return pd.DataFrame(rows)


def load_teachers(params: Params, setting: str, runs_dir: str | Path) -> pd.DataFrame:
    """Read ``teachers/<Method>.json`` of every seed: columns seed, method, model, lr, rule, rule_met.

    Raises:
        ValueError: a teacher is not one of the sweep points the params list.
    """
    rows = []
    for seed in params.shared.seeds:
        for method in METHOD_NAMES:
            path = Path(runs_dir) / f"seed_{seed}" / "teachers" / f"{method}.json"
            record = read_json(path)
            lrs = getattr(params.unlearn[setting], method).lrs
            model = record.get("model")
            if model not in [sweep_model(method, lr) for lr in lrs]:
                raise ValueError(f"{path}: teacher {model!r} is not a sweep point of unlearn.{setting}.{method}.lrs="
                                 f"{list(lrs)}. Rerun the teacher selection: dvc repro -f -s {setting}-teacher@{seed}-"
                                 f"{method}, then dvc repro {setting}-figures.")
            if not record.get("rule_met", True):
                logger.warning("seed %d: no %s run met the teacher rule, so the fallback %s is the teacher",
                               seed, method, model)
            rows.append({"seed": seed, "method": method, "model": model, "lr": _as_float(record.get("lr")),
                         "rule": record.get("rule"), "rule_met": record.get("rule_met")})
    return pd.DataFrame(rows)


def _diverged_flags(frame: pd.DataFrame, metrics_path: Path) -> pd.Series:
    """Return per-row diverged flags, taken from the run's metrics.json when the csv has no such column."""
    if "diverged" in frame.columns:
        return frame["diverged"].map(_to_bool).astype(bool)
    run_diverged = metrics_path.is_file() and _to_bool(read_json(metrics_path).get("diverged"))
    return pd.Series(run_diverged, index=frame.index, dtype=bool)


def _read_relearn_history(path: Path, seed: int, model: str, lr: float) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if "model" in frame.columns and not frame["model"].dropna().astype(str).eq(model).all():
        logger.warning("%s: the model column differs from the folder name %r, so the folder name is used", path, model)
    # The folder names identify the run, so they replace the csv's seed, model and lr columns.
    frame["model"] = model
    frame["lr"] = float(lr)
    frame["diverged"] = _diverged_flags(frame, path.parent / "metrics.json")
    frame = frame.drop(columns="seed", errors="ignore")
    frame.insert(0, "seed", seed)
    return frame


def load_relearn_histories(params: Params, setting: str, runs_dir: str | Path) -> pd.DataFrame:
    """Read the relearning history of every attacked model, attack LR and seed.

    Returns:
        The history rows with ``seed``, ``model`` and ``lr`` taken from the folder names and a
        boolean ``diverged`` column, sorted by seed, model display order, LR and step.
    """
    frames = []
    for seed in params.shared.seeds:
        relearn_dir = Path(runs_dir) / f"seed_{seed}" / "relearn"
        for entry in attacked_models(params, setting):
            for lr in params.relearn[setting].lrs:
                path = relearn_dir / relearn_group(entry.name) / entry.name / lr_folder(lr) / "history.csv"
                frames.append(_read_relearn_history(path, seed, entry.name, lr))
    return _sort_rows(pd.concat(frames, ignore_index=True), ["seed"], ["lr", "step"])


def load_distill_histories(params: Params, setting: str, runs_dir: str | Path) -> pd.DataFrame:
    """Read the distillation histories of the two oracle-matching students (seed, model, step, loss, ...)."""
    frames = []
    for seed in params.shared.seeds:
        for student in MATCH_STUDENTS:
            path = Path(runs_dir) / f"seed_{seed}" / "match" / student / "history.csv"
            frame = pd.read_csv(path)
            if not {"step", "loss"} <= set(frame.columns):
                raise ValueError(f"{path}: expected the columns step and loss, found {list(frame.columns)}")
            frames.append(frame.assign(seed=seed, model=match_model(student)))
    return pd.concat(frames, ignore_index=True)


def _sort_rows(frame: pd.DataFrame, leading: Sequence[str], trailing: Sequence[str] = ()) -> pd.DataFrame:
    """Sort by the ``leading`` columns, then by model display order, then by the ``trailing`` columns."""
    order = {name: i for i, name in enumerate(sort_models(frame["model"]))}
    ranked = frame.assign(_model_rank=frame["model"].map(order))
    ranked = ranked.sort_values([*leading, "_model_rank", *trailing], kind="stable")
    return ranked.drop(columns="_model_rank").reset_index(drop=True)


@dataclass(frozen=True)
class Runs:
    """Everything the figures read from one setting's ``runs_dir``."""

    setting: str
    seeds: tuple[int, ...]
    stage: pd.DataFrame  # load_stage_metrics: one row per seed and model
    teachers: pd.DataFrame  # load_teachers: one row per seed and method
    relearn: pd.DataFrame  # load_relearn_histories: relearning evaluations
    distill: pd.DataFrame  # load_distill_histories: oracle-matching distillation steps

    def teacher(self, seed: int, method: str) -> str:
        """Return the sweep point that ``method`` picked as teacher in ``seed``."""
        rows = self.teachers[(self.teachers["seed"] == seed) & (self.teachers["method"] == method)]
        return str(rows["model"].iloc[0])

    @property
    def diverged(self) -> pd.DataFrame:
        return diverged_runs(self.relearn)


def load_runs(params: Params, setting: str, runs_dir: str | Path) -> Runs:
    """Check the layout and read the stage metrics, teachers and histories of every seed.

    Raises:
        MissingOutputError: a file the params promise is missing (the message lists them).
        ValueError: a teacher is not a configured sweep point, or a history lacks its columns.
    """
    metric_spec(setting)
    check_outputs(params, setting, runs_dir)
    runs = Runs(
        setting=setting,
        seeds=tuple(params.shared.seeds),
        stage=load_stage_metrics(params, setting, runs_dir),
        teachers=load_teachers(params, setting, runs_dir),
        relearn=load_relearn_histories(params, setting, runs_dir),
        distill=load_distill_histories(params, setting, runs_dir),
    )
    logger.info("read %d models x %d attack LRs for seeds %s from %s", runs.stage["model"].nunique(),
                len(params.relearn[setting].lrs), list(runs.seeds), runs_dir)
    return runs


# ----------------------------------------------------------------------------------------------
# Worst case over LRs, seed statistics and roles


def diverged_runs(relearn: pd.DataFrame) -> pd.DataFrame:
    """List the diverged attacks as rows (seed, model, lr, step), step being the first diverged step."""
    flagged = relearn[relearn["diverged"].astype(bool)]
    if flagged.empty:
        return pd.DataFrame({"seed": pd.Series(dtype=int), "model": pd.Series(dtype=str),
                             "lr": pd.Series(dtype=float), "step": pd.Series(dtype=int)})
    runs = flagged.groupby(["seed", "model", "lr"], as_index=False)["step"].min()
    return _sort_rows(runs[["seed", "model", "lr", "step"]], ["seed"], ["lr"])


def worst_case_per_seed(relearn: pd.DataFrame, metric: str = "forget", higher_is_worse: bool = True) -> pd.DataFrame:
    """Apply ``undo_lib.relearn.worst_case`` to each seed's histories.

    Args:
        relearn: relearning histories with a ``seed`` column.
        metric: the column to combine over LRs.
        higher_is_worse: True for accuracies (the attacker maximises), False for cross-entropies.

    Returns:
        Columns seed, model, step, ``metric`` and best_lr. A diverged attack contributes its
        evaluations before the divergence only.
    """
    frames = [worst_case(rows, metric, higher_is_worse).assign(seed=seed)
              for seed, rows in relearn.groupby("seed", sort=True)]
    columns = ["seed", "model", "step", metric, "best_lr"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def seed_band(frame: pd.DataFrame, value: str, keys: Sequence[str] = ("model", "step")) -> pd.DataFrame:
    """Return the mean, min and max of ``value`` over seeds, per ``keys``, with the seed count n_seeds."""
    rows = frame.dropna(subset=[value])
    band = rows.groupby(list(keys), sort=True)[value].agg(["mean", "min", "max", "count"])
    return band.rename(columns={"count": "n_seeds"}).reset_index()


def value_at_step(worst: pd.DataFrame, step: int, metric: str = "forget") -> pd.DataFrame:
    """Return, per seed and model, the worst-case row at the last evaluated attack step <= ``step``.

    A seed and model without an evaluation at or before ``step`` is absent.
    """
    eligible = worst[worst["step"] <= step].sort_values(["seed", "model", "step"])
    return eligible.groupby(["seed", "model"]).tail(1).reset_index(drop=True)


def with_roles(frame: pd.DataFrame, roles: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """Keep the rows named in ``roles`` ({seed: {model: role}}) and rename their model to the role.

    A figure that shows "the MaxEnt teacher" reads another sweep point in each seed, and the role
    (``unlearn_MaxEnt``) is the name under which the seeds are combined. The original name is kept
    in ``source_model``.
    """
    pairs = pd.DataFrame([(seed, model, role) for seed, mapping in roles.items() for model, role in mapping.items()],
                         columns=["seed", "model", "role"])
    merged = frame.merge(pairs.astype({"seed": frame["seed"].dtype}), on=["seed", "model"], how="inner")
    return merged.rename(columns={"model": "source_model"}).rename(columns={"role": "model"})


def comparison_roles(runs: Runs, method: str, models: Sequence[str]) -> dict[int, dict[str, str]]:
    """Map, per seed, ``method``'s teacher to ``unlearn_<method>`` and each of ``models`` to itself."""
    return {seed: {**{m: m for m in models}, runs.teacher(seed, method): unlearn_role(method)} for seed in runs.seeds}


def relative_robustness(value, oracle_value: float | None, unlearned_value: float | None):
    """Compute (value - unlearned) / (oracle - unlearned) for post-attack forget metrics.

    1 means as robust as the oracle and 0 as robust as the unlearned model, in either metric
    direction. ``value`` may be a float, an array or a Series, and the result has its shape. The
    result is NaN where a reference is missing or the two are closer than MIN_REFERENCE_GAP.
    """
    oracle, unlearned = _as_float(oracle_value), _as_float(unlearned_value)
    gap = oracle - unlearned
    if not math.isfinite(gap) or abs(gap) < MIN_REFERENCE_GAP:
        return value * np.nan
    return (value - unlearned) / gap + 0.0  # adding 0.0 turns -0.0 into 0.0


def add_equation_forget(relearn: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of arithmetic histories with ``forget_equations``, the mean mul/div equation accuracy.

    Raises:
        KeyError: the histories lack the per-equation accuracy columns (not an arithmetic run).
    """
    missing = [c for c in FORGET_EQUATION_COLUMNS if c not in relearn.columns]
    if missing:
        raise KeyError(f"relearning histories lack {missing}; only arithmetic runs log equation accuracies")
    out = relearn.copy()
    out["forget_equations"] = out[list(FORGET_EQUATION_COLUMNS)].mean(axis=1, skipna=False)
    return out


# ----------------------------------------------------------------------------------------------
# Curves per experiment


@dataclass(frozen=True)
class Curves:
    """Worst-case relearning curves combined over seeds, and the diverged attacks behind them."""

    band: pd.DataFrame  # seed_band output: model, step, mean, min, max, n_seeds
    diverged: pd.DataFrame  # diverged_runs rows of the models behind the curves
    sources: dict[str, tuple[str, ...]]  # per curve, the models behind it (a teacher differs per seed)


def _curves(runs: Runs, worst: pd.DataFrame, roles: Mapping[int, Mapping[str, str]], metric: str) -> Curves:
    selected = with_roles(worst, roles)
    sources = {role: tuple(sort_models(rows["source_model"])) for role, rows in selected.groupby("model")}
    diverged = runs.diverged
    behind = set(selected["source_model"])
    return Curves(seed_band(selected, metric), diverged[diverged["model"].isin(behind)].reset_index(drop=True),
                  sources)


def _same_models(runs: Runs, models: Sequence[str]) -> dict[int, dict[str, str]]:
    return {seed: {m: m for m in models} for seed in runs.seeds}


def e1_curves(runs: Runs, worst: pd.DataFrame) -> tuple[pd.DataFrame, Curves]:
    """Return the oracle-matching KL band (model, step, mean, ...) and the relearning curves of E1."""
    kl = seed_band(runs.distill, "loss")
    models = [match_model(s) for s in MATCH_STUDENTS] + ["oracle"]
    return kl, _curves(runs, worst, _same_models(runs, models), "forget")


def e2_curves(runs: Runs, worst: pd.DataFrame) -> dict[str, Curves]:
    """Return, per method, the curves of its teacher (each seed's own), Unlearn-and-Distill and the oracle."""
    return {method: _curves(runs, worst, comparison_roles(runs, method, [distilled_model(method), "oracle"]),
                            "forget")
            for method in METHOD_NAMES}


def e3_models(params: Params, setting: str) -> list[str]:
    """Return the models of E3 besides the teacher: full, oracle, Unlearn-and-Distill and each UNDO alpha."""
    teacher = params.distill[setting].teacher
    return ["full", "oracle", distilled_model(teacher), *(undo_model(a) for a in params.distill[setting].alphas)]


def e3_curves(runs: Runs, worst: pd.DataFrame, params: Params, metric: str = "forget") -> Curves:
    """Return the UNDO relearning curves with the full model, the oracle, the teacher and Unlearn-and-Distill."""
    teacher = params.distill[runs.setting].teacher
    return _curves(runs, worst, comparison_roles(runs, teacher, e3_models(params, runs.setting)), metric)


# ----------------------------------------------------------------------------------------------
# Tables


def _count_true(flags: pd.Series) -> float:
    """Return how many of ``flags`` are true, or NaN when none is recorded."""
    recorded = flags.dropna()
    return float(sum(_to_bool(v) for v in recorded)) if len(recorded) else math.nan


def aggregate_seeds(rows: pd.DataFrame, keys: Sequence[str], values: Sequence[str],
                    counts: Sequence[str] = (), texts: Sequence[str] = ()) -> pd.DataFrame:
    """Combine per-seed rows: mean, min and max of each value, seed counts of flags, distinct texts.

    Args:
        rows: one row per seed and ``keys``, with a ``seed`` column.
        keys: the columns that identify a table row (such as model, or budget and model).
        values: numeric columns, each giving ``<value>`` (mean over seeds, NaN skipped),
            ``<value>_min`` and ``<value>_max``.
        counts: boolean columns, each giving ``<flag>_seeds``, the number of seeds where it is true,
            or NaN where no seed records the flag (a stop rule for a model that was not distilled).
        texts: columns whose distinct values are joined with "; " (such as each seed's teacher).

    Returns:
        One row per distinct ``keys``, in order of first appearance, with ``n_seeds``.
    """
    numeric = rows.assign(**{v: pd.to_numeric(rows[v], errors="coerce").astype(float) for v in values})
    grouped = numeric.groupby(list(keys), sort=False, dropna=False)
    parts = [grouped["seed"].nunique().rename("n_seeds")]
    for value in values:
        parts += [grouped[value].mean().rename(value), grouped[value].min().rename(f"{value}_min"),
                  grouped[value].max().rename(f"{value}_max")]
    for flag in counts:
        parts.append(grouped[flag].agg(_count_true).rename(f"{flag}_seeds"))
    for text in texts:
        parts.append(grouped[text].agg(lambda s: "; ".join(dict.fromkeys(str(v) for v in s.dropna()))).rename(text))
    return pd.concat(parts, axis=1).reset_index()


def _describe(table: pd.DataFrame, leading: Sequence[str] = ()) -> pd.DataFrame:
    """Insert label, family and alpha after the model column and sort by ``leading``, then model order."""
    position = table.columns.get_loc("model") + 1
    table.insert(position, "label", table["model"].map(model_label))
    table.insert(position + 1, "family", table["model"].map(model_family))
    table.insert(position + 2, "alpha", table["model"].map(undo_alpha).astype(float))
    return _sort_rows(table, leading)


def per_seed_results(runs: Runs, worst: pd.DataFrame, robustness_step: int) -> pd.DataFrame:
    """Join each seed's stage metrics with the worst-case forget metric at ``robustness_step`` and at the end.

    Returns:
        The ``Runs.stage`` rows plus forget_at_step (read at step_used, the last evaluation <=
        ``robustness_step``), best_lr_at_step and forget_last (at the last attack step).
    """
    at_step = value_at_step(worst, robustness_step).rename(
        columns={"forget": "forget_at_step", "step": "step_used", "best_lr": "best_lr_at_step"})
    last_step = int(runs.relearn["step"].max())
    last = value_at_step(worst, last_step)[["seed", "model", "forget"]].rename(columns={"forget": "forget_last"})
    fallback = at_step.loc[at_step["step_used"] != robustness_step, ["seed", "model"]]
    if not fallback.empty:
        logger.info("no evaluation at attack step %d for %s, so the last earlier step is used",
                    robustness_step, fallback.to_dict("records"))
    return runs.stage.merge(at_step, on=["seed", "model"], how="left").merge(last, on=["seed", "model"], how="left")


def _final_kl(distill: pd.DataFrame) -> pd.DataFrame:
    logged = distill.dropna(subset=["loss"]).sort_values(["seed", "model", "step"])
    return logged.groupby(["seed", "model"]).tail(1)[["seed", "model", "loss"]].rename(columns={"loss": "kl_final"})


def e1_table(runs: Runs, worst: pd.DataFrame, robustness_step: int) -> pd.DataFrame:
    """Build the E1 table: per oracle-matched student and the oracle, final KL and forget before/after the attack."""
    models = [match_model(s) for s in MATCH_STUDENTS] + ["oracle"]
    rows = per_seed_results(runs, worst, robustness_step)
    rows = rows[rows["model"].isin(models)].merge(_final_kl(runs.distill), on=["seed", "model"], how="left")
    return _describe(aggregate_seeds(rows, ["model"], ["kl_final", *POINT_VALUES]))


def e2_table(runs: Runs, worst: pd.DataFrame, robustness_step: int) -> pd.DataFrame:
    """Build the E2 table: per method, its teacher (each seed's own), Unlearn-and-Distill and the oracle."""
    per_seed = per_seed_results(runs, worst, robustness_step)
    frames = [with_roles(per_seed, comparison_roles(runs, m, [distilled_model(m), "oracle"])).assign(method=m)
              for m in METHOD_NAMES]
    rows = pd.concat(frames, ignore_index=True)
    table = aggregate_seeds(rows, ["method", "model"], POINT_VALUES, counts=["collapsed"], texts=["source_model"])
    table["_method_rank"] = table["method"].map(METHOD_NAMES.index)
    return _describe(table, ["_method_rank"]).drop(columns="_method_rank")


def _add_relative_robustness(rows: pd.DataFrame, unlearned: str) -> pd.DataFrame:
    """Add each seed's relative robustness against its oracle and its ``unlearned`` model."""
    references = rows.set_index(["model", "seed"])["forget_at_step"]
    relative = []
    for seed, value in zip(rows["seed"], rows["forget_at_step"]):
        oracle_value, unlearned_value = references.get(("oracle", seed)), references.get((unlearned, seed))
        relative.append(relative_robustness(value, oracle_value, unlearned_value))
    undefined = sorted({s for s, r in zip(rows["seed"], relative) if not math.isfinite(r)})
    if undefined:
        logger.warning("relative robustness is undefined in seeds %s: the oracle or %s attack result is missing, "
                       "or the two are equal", undefined, unlearned)
    return rows.assign(relative_robustness=relative)


def e3_table(runs: Runs, worst: pd.DataFrame, params: Params, robustness_step: int,
             equations_worst: pd.DataFrame | None = None) -> pd.DataFrame:
    """Build the E3 table: full, oracle, teacher, Unlearn-and-Distill and each UNDO alpha.

    Relative robustness, (P - P_unlearn) / (P_oracle - P_unlearn) with P the worst-case forget
    metric at ``robustness_step`` and P_unlearn that of the UNDO teacher, is computed per seed and
    then averaged. ``equations_worst`` (arithmetic) adds forget_equations_at_step.
    """
    teacher = params.distill[runs.setting].teacher
    per_seed = per_seed_results(runs, worst, robustness_step)
    if equations_worst is not None:
        equations = value_at_step(equations_worst, robustness_step, "forget_equations")
        per_seed = per_seed.merge(equations[["seed", "model", "forget_equations"]].rename(
            columns={"forget_equations": "forget_equations_at_step"}), on=["seed", "model"], how="left")
    rows = with_roles(per_seed, comparison_roles(runs, teacher, e3_models(params, runs.setting)))
    rows = _add_relative_robustness(rows, unlearn_role(teacher))
    values = [*POINT_VALUES, *(["forget_equations_at_step"] if equations_worst is not None else []),
              "relative_robustness", "cost_fraction_flops", "cost_fraction_tokens", "distill_steps"]
    table = aggregate_seeds(rows, ["model"], values, counts=["stopped_early", "reached_stop_rule", "collapsed"],
                            texts=["source_model"])
    return _describe(table)


def e4_table(runs: Runs, worst: pd.DataFrame, attack_budgets: Sequence[int]) -> pd.DataFrame:
    """Build the Pareto table: one row per model and attack budget, oracle-matched students left out.

    retain_before is the model's own stage ``final`` retain metric, forget_after the worst-case
    forget metric after ``budget`` attack steps (the last evaluation at or before it), and
    collapsed_seeds counts the seeds in which the unlearning run collapsed.
    """
    stage = runs.stage[runs.stage["family"] != ORACLE_MATCHING][["seed", "model", "retain_before", "collapsed"]]
    frames = []
    for budget in attack_budgets:
        after = value_at_step(worst, budget)[["seed", "model", "forget", "step"]]
        after = after.rename(columns={"forget": "forget_after", "step": "step_used"})
        frames.append(stage.merge(after, on=["seed", "model"], how="left").assign(budget=int(budget)))
    rows = pd.concat(frames, ignore_index=True)
    table = aggregate_seeds(rows, ["budget", "model"], ["retain_before", "forget_after"], counts=["collapsed"])
    return _describe(table, ["budget"])


def relearn_table(runs: Runs, seed: int) -> pd.DataFrame:
    """Return one seed's relearning evaluations per model, attack LR and step (the data of relearning_by_lr)."""
    columns = ["seed", "model", "lr", "step", "forget", "retain", "diverged"]
    rows = runs.relearn[runs.relearn["seed"] == seed]
    return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Output files


def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as CSV (no index, empty cells for NaN) atomically, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv(index=False))
    logger.info("wrote %s", path)
    return path


def _records(table: pd.DataFrame) -> list[dict]:
    return [{key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in row.items()}
            for row in table.astype(object).to_dict("records")]


def summary_record(tables: Mapping[str, pd.DataFrame], runs: Runs, robustness_step: int,
                   attack_budgets: Sequence[int]) -> dict:
    """Return the JSON-ready content of summary.json.

    ``models`` repeats the E3 table, one row per model with the columns the README report reads
    (label, retain_before, forget_before, forget_at_step, relative_robustness, ...).
    """
    return {
        "setting": runs.setting,
        "seeds": list(runs.seeds),
        "robustness_step": int(robustness_step),
        "attack_budgets": [int(b) for b in attack_budgets],
        "seed_statistic": "mean over seeds; <value>_min and <value>_max give the range over seeds",
        "models": _records(tables["e3"]),
        "tables": {name: _records(table) for name, table in tables.items()},
        "diverged_runs": _records(runs.diverged),
    }
