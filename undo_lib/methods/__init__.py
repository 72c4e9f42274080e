"""Unlearning methods, each a small loss on the shared training loop, registered under the name
Lee et al. (arXiv 2506.06278) use for it, and the resolution of one unlearning sweep point.

``make_loss(method, model, params, seed)`` does the method's set-up on ``model`` and returns a loss
function ``(model, batch) -> (loss, logs)`` for ``undo_lib.train.train``, where ``batch`` holds a
``forget`` and a ``retain`` batch (see ``undo_lib.data.paired_batches``). ``unlearning_run`` turns a
run name of ``params.yaml``'s ``unlearn`` section (a method, or the SAM and RepNoise baselines) and
one LR of its sweep into the method, its params and the training params. Add a method by writing
its module and registering its factory in ``METHODS``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch

from undo_lib.config import RUN_NAMES, GradDiffParams, MaxEntParams, RMUParams, TrainParams, UnlearnParams
from undo_lib.methods.graddiff import make_graddiff_loss
from undo_lib.methods.maxent import make_maxent_loss
from undo_lib.methods.rmu import make_rmu_loss
from undo_lib.train import LossFn

MethodParams = GradDiffParams | MaxEntParams | RMUParams


@dataclass(frozen=True)
class Method:
    """A registered unlearning method: its params type and the factory of its loss function."""

    params_type: type
    make_loss: Callable[[torch.nn.Module, MethodParams, int], LossFn]


METHODS: dict[str, Method] = {
    "GradDiff": Method(GradDiffParams, make_graddiff_loss),
    "MaxEnt": Method(MaxEntParams, make_maxent_loss),
    "RMU": Method(RMUParams, make_rmu_loss),
}


def get_method(name: str) -> Method:
    """Look up the method registered under ``name``, or raise KeyError naming the registered ones."""
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method {name!r}; registered methods: {sorted(METHODS)}")
    return METHODS[name]


def make_loss(method: str, model: torch.nn.Module, params: MethodParams, seed: int) -> LossFn:
    """Set ``model`` up for ``method`` and return its loss function.

    Args:
        method: a name in ``METHODS``.
        model: the model to unlearn. RMU freezes all but some of its weights and may copy it as a
            frozen reference, so call this before training or loading a checkpoint.
        params: the method's params (``GradDiffParams``, ``MaxEntParams`` or ``RMUParams``).
        seed: seed of the method's random draws (RMU's control vector, RepNoise's noise).

    Returns:
        ``(model, batch) -> (scalar loss, dict of float logs)``.

    Raises:
        KeyError: ``method`` is not registered.
        TypeError: ``params`` is not the method's params type.
    """
    entry = get_method(method)
    if not isinstance(params, entry.params_type):
        raise TypeError(f"{method} takes {entry.params_type.__name__}, got {type(params).__name__}.")
    return entry.make_loss(model, params, seed)


@dataclass(frozen=True)
class UnlearningRun:
    """One point of an unlearning sweep, resolved to a registered method and its training params."""

    run: str  # name in the unlearn section: a method, "SAM" or "RepNoise"
    method: str  # registered method whose loss trains
    method_params: MethodParams
    train: TrainParams  # the section's train params with this run's LR (constant) and SAM radius


def _sweep_lr(lrs: tuple[float, ...], lr: float, key: str) -> float:
    """Return the value of ``lrs`` equal to ``lr`` up to float formatting, or raise ValueError."""
    for candidate in lrs:
        if math.isclose(candidate, lr, rel_tol=1e-9, abs_tol=0.0):
            return candidate
    raise ValueError(f"{key}: learning rate {lr!r} is not in the sweep; allowed values are {list(lrs)}. "
                     "Pass one of them, or add it to the list in params.yaml.")


def _method_and_params(section: UnlearnParams, run: str) -> tuple[str, MethodParams]:
    if run == "SAM":
        return section.SAM.method, getattr(section, section.SAM.method)
    if run == "RepNoise":
        params = dataclasses.replace(section.MaxEnt, repnoise_alpha=section.RepNoise.alpha,
                                     repnoise_beta=section.RepNoise.beta)
        return "MaxEnt", params
    return run, getattr(section, run)


def unlearning_run(section: UnlearnParams, run: str, lr: float, path: str = "unlearn") -> UnlearningRun:
    """Resolve run ``run`` of the unlearn ``section`` at learning rate ``lr``.

    1) GradDiff, MaxEnt, RMU: that method with its params. 2) SAM: the loss and params of
    ``section.SAM.method``, trained with ``sam_rho = section.SAM.rho``. 3) RepNoise: MaxEnt with
    ``repnoise_alpha`` and ``repnoise_beta`` from ``section.RepNoise`` (MaxEnt's retain_weight kept).
    Every run trains with ``section.train`` at the constant LR ``lr`` (``min_lr`` None).

    Args:
        path: dotted key of ``section`` in params.yaml (such as ``unlearn.arithmetic``), named in errors.

    Raises:
        KeyError: ``run`` is not one of ``RUN_NAMES``.
        ValueError: ``lr`` is not in the run's ``lrs``.
    """
    if run not in RUN_NAMES:
        raise KeyError(f"unknown unlearning run {run!r}; runs of the unlearn section: {list(RUN_NAMES)}")
    lr = _sweep_lr(getattr(section, run).lrs, lr, f"{path}.{run}.lrs")
    method, method_params = _method_and_params(section, run)
    train = dataclasses.replace(section.train, lr=lr, min_lr=None)
    if run == "SAM":
        train = dataclasses.replace(train, sam_rho=section.SAM.rho)
    return UnlearningRun(run=run, method=method, method_params=method_params, train=train)
