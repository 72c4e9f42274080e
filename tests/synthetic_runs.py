"""A small handwritten runs_dir in the layout the figures notebook reads, for the figure tests.

The layout has two seeds and two attack LRs (0.001 and 0.0003), evaluated at attack steps 0, 5
and 10. The MaxEnt sweep has two LRs, and its teacher differs per seed (seed 0: lr 0.001, seed 1:
lr 0.0003). Every other sweep has one LR, UNDO runs alphas 0.5 and 0.8, and one attack diverges
(seed 0, undo_0.5 at lr 0.001).
Every seed-1 value is the seed-0 value plus SEED_OFFSET[1], so means and ranges over seeds can be
worked out by hand. The same numbers serve as accuracies (arithmetic) and as cross-entropies
(language); only the attacker's direction differs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import yaml

from undo_lib import io
from undo_lib.config import METHOD_NAMES, RUN_NAMES, SETTINGS
from undo_lib.names import relearn_group

SEEDS = (0, 1)
ATTACK_LRS = (0.001, 0.0003)
STEPS = (0, 5, 10)
ALPHAS = (0.5, 0.8)
MAXENT_LRS = (0.001, 0.0003)
TEACHERS = {0: "MaxEnt_lr_0.001", 1: "MaxEnt_lr_0.0003"}  # the MaxEnt teacher of each seed
SEED_OFFSET = {0: 0.0, 1: 0.1}
DIVERGED = (0, "undo_0.5", 0.001, 3)  # seed, model, attack LR, step of divergence
COLLAPSED = {"GradDiff_lr_0.001": (1,), "SAM_lr_0.001": (0, 1)}  # seeds in which the run collapsed
ORACLE_COMPUTE = {"flops": 1e12, "tokens": 1e8, "steps": 1000, "n_params": 1000}
UNLEARN_COMPUTE = {"flops": 5e10, "tokens": 2e6, "steps": 20, "n_params": 1000}

# Forget metric of seed 0 at STEPS, per (model, attack LR).
FORGET = {
    ("full", 0.001): [0.95, 0.96, 0.97],
    ("full", 0.0003): [0.95, 0.95, 0.96],
    ("oracle", 0.001): [0.05, 0.20, 0.30],
    ("oracle", 0.0003): [0.05, 0.25, 0.28],
    ("match_full", 0.001): [0.05, 0.80, 0.90],
    ("match_full", 0.0003): [0.05, 0.70, 0.92],
    ("match_random_init", 0.001): [0.05, 0.22, 0.31],
    ("match_random_init", 0.0003): [0.05, 0.21, 0.29],
    ("MaxEnt_lr_0.001", 0.001): [0.02, 0.70, 0.80],
    ("MaxEnt_lr_0.001", 0.0003): [0.02, 0.60, 0.85],
    ("MaxEnt_lr_0.0003", 0.001): [0.10, 0.50, 0.60],
    ("MaxEnt_lr_0.0003", 0.0003): [0.10, 0.55, 0.58],
    ("distilled_MaxEnt", 0.001): [0.03, 0.30, 0.40],
    ("distilled_MaxEnt", 0.0003): [0.03, 0.35, 0.38],
    ("undo_0.5", 0.001): [0.04, 0.45, 0.55],
    ("undo_0.5", 0.0003): [0.04, 0.40, 0.50],
    ("undo_0.8", 0.001): [0.03, 0.25, 0.35],
    ("undo_0.8", 0.0003): [0.03, 0.28, 0.33],
}
# Start of the curve of every other model: [start, start + 0.4 g, start + 0.5 g], g = 1 at lr 0.001, else 0.8
START = {"GradDiff_lr_0.001": 0.15, "RMU_lr_0.001": 0.12, "SAM_lr_0.001": 0.20, "RepNoise_lr_0.001": 0.18,
         "distilled_GradDiff": 0.06, "distilled_RMU": 0.07}
RETAIN = {"full": 0.99, "oracle": 0.97, "undo_0.5": 0.88, "undo_0.8": 0.90}  # seed 0; others get DEFAULT_RETAIN
DEFAULT_RETAIN = 0.80
RETAIN_SEED_STEP = 0.02  # seed 1 retains this much more
UNDO_COST = {"undo_0.5": 0.30, "undo_0.8": 0.50, "distilled_GradDiff": 0.9, "distilled_MaxEnt": 0.9,
             "distilled_RMU": 0.9, "match_full": 1.0, "match_random_init": 1.0}  # seed 0 FLOPs fraction
COST_SEED_STEP = 0.04
KL = {"match_full": [2.0, 1.0, 0.5, 0.2, 0.1], "match_random_init": [5.0, 2.0, 0.8, 0.3, 0.12]}  # seed 0
KL_SEED_FACTOR = 1.5  # seed 1's KL is seed 0's times this
ROBUSTNESS_STEP = 5
BUDGETS = (0, 5, 10)


def forget_curve(seed: int, model: str, lr: float) -> list[float]:
    """Return the forget metric of one attack at STEPS."""
    if (model, lr) in FORGET:
        values = FORGET[(model, lr)]
    else:
        start, gain = START[model], 1.0 if lr == 0.001 else 0.8
        values = [start, start + 0.4 * gain, start + 0.5 * gain]
    return [round(v + SEED_OFFSET[seed], 6) for v in values]


def retain(seed: int, model: str) -> float:
    return round(RETAIN.get(model, DEFAULT_RETAIN) + RETAIN_SEED_STEP * seed, 6)


def cost(seed: int, model: str) -> float:
    return round(UNDO_COST[model] + COST_SEED_STEP * seed, 6)


def models() -> list[str]:
    sweep = [f"MaxEnt_lr_{lr}" for lr in MAXENT_LRS] + [f"{run}_lr_0.001" for run in RUN_NAMES if run != "MaxEnt"]
    return ["full", "oracle", "match_full", "match_random_init", *sweep,
            *(f"distilled_{m}" for m in METHOD_NAMES), *(f"undo_{a}" for a in ALPHAS)]


def params_dict(smoke: dict, seeds=SEEDS) -> dict:
    """Return the smoke params with this layout's seeds, sweeps, alphas, attack LRs and figure steps."""
    params = copy.deepcopy(smoke)
    params["shared"]["seeds"] = list(seeds)
    for setting in SETTINGS:
        unlearn = params["unlearn"][setting]
        for run in RUN_NAMES:
            unlearn[run]["lrs"] = list(MAXENT_LRS) if run == "MaxEnt" else [0.001]
        params["distill"][setting].update(teacher="MaxEnt", alphas=list(ALPHAS))
        params["relearn"][setting]["lrs"] = list(ATTACK_LRS)
        params["relearn"][setting]["train"].update(steps=STEPS[-1], eval_every=STEPS[1])
        params["figures"][setting] = {"robustness_step": ROBUSTNESS_STEP, "attack_budgets": list(BUDGETS)}
    return params


def write_params(path: Path, smoke: dict, seeds=SEEDS) -> Path:
    path.write_text(yaml.safe_dump(params_dict(smoke, seeds)), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# Writers


def _relearn_rows(setting: str, seed: int, model: str, lr: float) -> list[dict]:
    values = forget_curve(seed, model, lr)
    # The relearning notebook writes the seed and model into every row, as here
    rows = [{"step": step, "forget": value, "retain": retain(seed, model), "lr": lr, "diverged": False,
             "model": model, "seed": seed} for step, value in zip(STEPS, values)]
    if (seed, model, lr) == DIVERGED[:3]:
        rows = rows[:1] + [{"step": DIVERGED[3], "forget": None, "retain": None, "lr": lr, "diverged": True,
                            "model": model}]
    if setting == "arithmetic":
        for row in rows:
            value = row["forget"]
            row["acc/multiplication/equation"] = value
            row["acc/division/equation"] = None if value is None else value / 2
    return rows


def _write_relearn(seed_dir: Path, setting: str, seed: int) -> None:
    for model in models():
        for lr in ATTACK_LRS:
            folder = seed_dir / "relearn" / relearn_group(model) / model / f"lr_{lr}"
            folder.mkdir(parents=True)
            rows = _relearn_rows(setting, seed, model, lr)
            pd.DataFrame(rows).to_csv(folder / "history.csv", index=False)
            io.write_json(folder / "metrics.json", {"model": model, "lr": lr, "diverged": rows[-1]["diverged"]})


def _final(seed: int, model: str) -> dict:
    return {"retain": retain(seed, model), "forget": forget_curve(seed, model, 0.0003)[0], "english_ce": 2.0}


def _write_unlearn(seed_dir: Path, seed: int) -> None:
    for model in models():
        if "_lr_" not in model:
            continue
        run, lr = model.split("_lr_")
        record = {"model": model, "run": run, "method": "MaxEnt" if run in ("SAM", "RepNoise") else run,
                  "lr": float(lr), "final": _final(seed, model), "reference": _final(seed, "full"),
                  "retain_fraction": 0.8, "collapsed": seed in COLLAPSED.get(model, ()),
                  "compute": dict(UNLEARN_COMPUTE)}
        io.write_json(seed_dir / "unlearn" / run / f"lr_{lr}" / "metrics.json", record)


def _write_teachers(seed_dir: Path, seed: int) -> None:
    for method in METHOD_NAMES:
        model = TEACHERS[seed] if method == "MaxEnt" else f"{method}_lr_0.001"
        record = {"method": method, "lr": float(model.split("_lr_")[1]), "model": model, "rule": "most_forgetting",
                  "rule_met": True, "candidates": []}
        io.write_json(seed_dir / "teachers" / f"{method}.json", record)


def _distill_record(seed: int, model: str, student: str, alpha: float, teacher_model: str) -> dict:
    return {"model": model, "student": student, "alpha": alpha, "beta": 0.1, "teacher_model": teacher_model,
            "teacher": _final(seed, "oracle"), "student_before": {"retain": 0.0, "forget": 0.0},
            "final": _final(seed, model), "stopped_early": model == "undo_0.5", "reached_stop_rule": True,
            "compute": {"flops": 1e11, "tokens": 1e7, "steps": 40, "n_params": 1000, "teacher_forward_flops": 1e10},
            "cost_fraction": {"flops": cost(seed, model), "tokens": cost(seed, model) / 2,
                              "distill_only_flops": cost(seed, model) - 0.05}}


def _write_distill(seed_dir: Path, seed: int) -> None:
    folders = {f"distill/{m}": (f"distilled_{m}", "random_init", 1.0, TEACHERS[seed] if m == "MaxEnt"
                                else f"{m}_lr_0.001") for m in METHOD_NAMES}
    folders.update({f"match/{s}": (f"match_{s}", s, 1.0, "oracle") for s in ("full", "random_init")})
    folders.update({f"undo/alpha_{a}": (f"undo_{a}", "undo", a, TEACHERS[seed]) for a in ALPHAS})
    for folder, (model, student, alpha, teacher_model) in folders.items():
        io.write_json(seed_dir / folder / "metrics.json", _distill_record(seed, model, student, alpha, teacher_model))
        kl = [value * (KL_SEED_FACTOR if seed == 1 else 1.0) for value in KL.get(model, [1.0, 0.5])]
        history = pd.DataFrame({"step": range(len(kl)), "tokens": 0, "flops": 0, "lr": 0.001, "loss": kl,
                                "grad_norm": 1.0})
        history.to_csv(seed_dir / folder / "history.csv", index=False)


def write_runs(runs_dir: Path, setting: str = "arithmetic", seeds=SEEDS) -> Path:
    """Write the whole layout for ``seeds`` under ``runs_dir`` and return it."""
    for seed in seeds:
        seed_dir = runs_dir / f"seed_{seed}"
        for model, compute in (("full", ORACLE_COMPUTE), ("oracle", ORACLE_COMPUTE)):
            io.write_json(seed_dir / "pretrain" / model / "metrics.json",
                          {"model": model, "final": _final(seed, model), "compute": dict(compute)})
        _write_unlearn(seed_dir, seed)
        _write_teachers(seed_dir, seed)
        _write_distill(seed_dir, seed)
        _write_relearn(seed_dir, setting, seed)
    return runs_dir
