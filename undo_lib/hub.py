"""Helpers for error messages about the Hugging Face hub, shared by ``pretrained``, ``corpora`` and ``language``."""

from __future__ import annotations

import os

# Environment variables that switch huggingface_hub, transformers or datasets to offline mode. The
# true values are huggingface_hub.constants.ENV_VARS_TRUE_VALUES, compared in upper case, as checked
# with huggingface_hub 2.4.0, transformers 5.25.0 and datasets 5.2.0.
MODEL_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DATASET_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_ENV_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})


def offline_settings(variables: tuple[str, ...]) -> list[str]:
    """Return "NAME=value" for each of ``variables`` that is set to a true value."""
    settings = []
    for variable in variables:
        value = os.environ.get(variable, "")
        if value.upper() in _ENV_TRUE_VALUES:
            settings.append(f"{variable}={value}")
    return settings


def offline_sentence(variables: tuple[str, ...], library: str, download: str = "") -> str:
    """Return a sentence naming the offline variables that are set, or "" when none is set.

    ``download`` names what unsetting them lets ``library`` download, such as "the dataset".
    """
    settings = offline_settings(variables)
    if not settings:
        return ""
    target = f" {download}" if download else ""
    if len(settings) == 1:
        return f"{settings[0]} is set, so {library} reads only its local cache. Unset it to download{target}."
    return (f"{' and '.join(settings)} are set, so {library} reads only its local cache. "
            f"Unset them to download{target}.")


def find_cause(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """Return the first exception of one of ``types`` in ``err`` and its chain of causes, or None.

    transformers wraps huggingface_hub's errors in a plain OSError raised ``from`` the original,
    so the original's type is only visible in ``__cause__`` or ``__context__``.
    """
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
