"""Unlearning methods, each a small loss on the shared training loop, registered under the name
Lee et al. (arXiv 2506.06278) use for it.

A method is a function ``loss(model, batch, params) -> (loss, logs)`` where ``batch`` holds a
``forget`` and a ``retain`` batch (see ``undo_lib.data.paired_batches``) and ``params`` is the
method's section of ``params.yaml``. Add a method by writing its module and registering it here.
"""

from __future__ import annotations

from typing import Callable

from undo_lib.methods.maxent import maxent_loss

METHODS: dict[str, Callable] = {
    "MaxEnt": maxent_loss,
}


def get_method(name: str) -> Callable:
    """The loss function registered under ``name``."""
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method {name!r}; registered methods: {sorted(METHODS)}")
    return METHODS[name]
