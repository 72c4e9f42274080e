"""Names and folders of the pipeline's models, shared by the relearning stages and the figures.

A model's name is its label in the figures and tables: ``full``, ``oracle``, ``match_full``,
``match_random_init``, ``<Run>_lr_<lr>``, ``distilled_<Method>`` or ``undo_<alpha>``. Its folder
is where the stage that trains it saves it, relative to ``outputs/<setting>/models/seed_<k>``.

The relearning attacks run as four stages per seed, one per group of models with the same
upstream stages. One process then attacks several models, so the start-up cost of a stage (DVC,
the notebook kernel, imports) is paid four times per seed instead of once per model.
"""

from __future__ import annotations

from undo_lib.config import METHOD_NAMES, RUN_NAMES, Params

MATCH_STUDENTS = ("full", "random_init")  # oracle-matching students: the pretrained full model and the random init
RELEARN_GROUPS = ("reference", "unlearned", "distilled", "undo")


def lr_folder(lr: float) -> str:
    """Return the folder name of a learning rate, such as ``lr_0.001`` or ``lr_1e-05``."""
    return f"lr_{float(lr)}"


def alpha_folder(alpha: float) -> str:
    """Return the folder name of an UNDO alpha, such as ``alpha_0.6``."""
    return f"alpha_{float(alpha)}"


def sweep_model(run: str, lr: float) -> str:
    """Return the model name of an unlearning sweep point, such as ``MaxEnt_lr_0.001``."""
    return f"{run}_{lr_folder(lr)}"


def undo_model(alpha: float) -> str:
    return f"undo_{float(alpha)}"


def distilled_model(method: str) -> str:
    return f"distilled_{method}"


def match_model(student: str) -> str:
    return f"match_{student}"


def relearn_group(model_name: str) -> str:
    """Return the relearning stage group that attacks ``model_name``."""
    if model_name in ("full", "oracle") or model_name.startswith("match_"):
        return "reference"
    if model_name.startswith("distilled_"):
        return "distilled"
    if model_name.startswith("undo_"):
        return "undo"
    return "unlearned"


def attack_targets(params: Params, setting: str, group: str) -> list[tuple[str, str]]:
    """Return (model name, model folder relative to ``models/seed_<k>``) of every model ``group`` attacks.

    Raises:
        ValueError: ``group`` is not one of ``RELEARN_GROUPS``.
    """
    if group == "reference":
        return [(name, name) for name in ("full", "oracle", *(match_model(s) for s in MATCH_STUDENTS))]
    if group == "unlearned":
        unlearn = params.unlearn[setting]
        return [(sweep_model(run, lr), f"unlearned/{run}/{lr_folder(lr)}")
                for run in RUN_NAMES for lr in getattr(unlearn, run).lrs]
    if group == "distilled":
        return [(distilled_model(m), distilled_model(m)) for m in METHOD_NAMES]
    if group == "undo":
        return [(undo_model(a), f"undo/{alpha_folder(a)}") for a in params.distill[setting].alphas]
    raise ValueError(f"unknown relearning group {group!r}; one of {list(RELEARN_GROUPS)}")
