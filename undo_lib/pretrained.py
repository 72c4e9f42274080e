"""Pretrained causal LMs and their tokenizers, from a local folder or the Hugging Face hub.

The WMDP setting of "Distillation Robustifies Unlearning" (arXiv 2506.06278) starts from the real
``google/gemma-2-2b``, loaded in bfloat16 with eager attention. This module loads such a model
through transformers' ``AutoModelForCausalLM`` and ``AutoTokenizer``. It reads only safetensors
weights, never runs code from the model repository (``trust_remote_code=False``), and turns the
usual failures into errors that name the model and the fix.

A ``path`` is a local folder when it exists, starts with "/", "." or "~", or has more than one
"/". Anything else is read as a hub id such as "google/gemma-2-2b". To work offline, download a
hub model once with ``hf download <id> --local-dir <folder>`` and set ``path`` to that folder.

``write_random_gemma2`` writes a tiny randomly initialised Gemma2 and a tokenizer in the same
layout, as an offline stand-in for tests and small CPU runs.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from undo_lib.config import ModelParams
from undo_lib.hub import MODEL_OFFLINE_VARIABLES, find_cause, offline_sentence
from undo_lib.model import build_model, count_parameters, save_model

logger = logging.getLogger(__name__)

PAPER_MODEL_ID = "google/gemma-2-2b"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# "eager" is the implementation transformers recommends for Gemma-2, because it applies the
# attention-logit softcap. transformers 5.25.0 rejects "sdpa" for Gemma2 with a ValueError.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")

# FlashAttention-2 kernels take only half-precision inputs.
FLASH_ATTENTION_DTYPES = ("bfloat16", "float16")

# Weight files that transformers reads with use_safetensors=True: one file, or an index of shards.
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")

# Pickled checkpoint suffixes, which are named in the error but never loaded.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")

# Vocabulary files of the common tokenizer families. Without one, AutoTokenizer in transformers
# 5.25.0 can still return a tokenizer with an empty vocabulary for a Gemma2 config, so a local
# folder must contain one of them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")

_LOCAL_PREFIXES = ("/", ".", "~")


class PretrainedSourceError(RuntimeError):
    """A pretrained model or tokenizer could not be fetched from the Hugging Face hub."""


@dataclass(frozen=True)
class PretrainedSource:
    """Location and load options of a pretrained causal LM.

    Attributes:
        path: Local folder or hub id, such as "google/gemma-2-2b".
        revision: Hub branch, tag or commit; None reads the default branch. Only for hub ids.
        dtype: Weight dtype, one of ``DTYPES``: "float32", "bfloat16" (the paper's) or "float16".
        attn_implementation: One of ``ATTN_IMPLEMENTATIONS``. "flash_attention_2" needs the
            flash-attn package, a CUDA device and a half-precision dtype.
    """

    path: str
    revision: str | None = None
    dtype: str = "bfloat16"
    attn_implementation: str = "eager"

    def __post_init__(self):
        if isinstance(self.path, Path):
            object.__setattr__(self, "path", str(self.path))
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"invalid path {self.path!r}: expected a local folder or a hub id such as "
                             f"{PAPER_MODEL_ID!r}")
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision.strip()):
            raise ValueError(f"invalid revision {self.revision!r}: expected a branch, tag or commit of the hub "
                             "repository, or None for its default branch")
        if self.dtype not in DTYPES:
            raise ValueError(f"invalid dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}. "
                             "The paper loads Gemma-2-2B in bfloat16.")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"invalid attn_implementation {self.attn_implementation!r}: expected one of "
                             f"{', '.join(ATTN_IMPLEMENTATIONS)}. Use 'eager' for Gemma-2.")
        if self.attn_implementation == "flash_attention_2" and self.dtype not in FLASH_ATTENTION_DTYPES:
            raise ValueError(f"attn_implementation 'flash_attention_2' does not support dtype {self.dtype!r}: "
                             f"set dtype to one of {', '.join(FLASH_ATTENTION_DTYPES)}, or use 'eager'")

    @property
    def is_local(self) -> bool:
        """Whether ``path`` names a local folder rather than a hub id."""
        return is_local_path(self.path)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype named by ``dtype``."""
        return DTYPES[self.dtype]


def is_local_path(path: str) -> bool:
    """Return whether ``path`` names a local folder rather than a hub id (see the module docstring)."""
    return Path(path).expanduser().exists() or path.startswith(_LOCAL_PREFIXES) or path.count("/") > 1


# --- local folders ---------------------------------------------------------------------------

def _download_command(source: PretrainedSource, folder: str = "<folder>") -> str:
    revision = f" --revision {source.revision}" if source.revision else ""
    return f"hf download {source.path}{revision} --local-dir {folder}"


def check_local_folder(folder: str | Path) -> None:
    """Raise unless ``folder`` contains a config, safetensors weights and tokenizer files.

    Raises:
        FileNotFoundError: If the folder, ``config.json``, the safetensors weights or every file of
            ``TOKENIZER_FILES`` is missing. Pickled checkpoints that are present are named.
        NotADirectoryError: If ``folder`` is a file.
    """
    folder = Path(folder).expanduser()
    fix = (f"Point path at a folder written by save_pretrained or by `hf download <model id> --local-dir "
           f"{folder}`, or set path to a hub id such as {PAPER_MODEL_ID}.")
    if not folder.exists():
        raise FileNotFoundError(f"pretrained model folder {folder} not found. {fix}")
    if not folder.is_dir():
        raise NotADirectoryError(f"pretrained model path {folder} is a file, expected a folder. {fix}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in the pretrained model folder {folder}. {fix}")
    if not any((folder / name).is_file() for name in SAFETENSORS_FILES):
        raise FileNotFoundError(_missing_safetensors_message(folder))
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer file ({', '.join(TOKENIZER_FILES)}) in the pretrained model "
                                f"folder {folder}. Save the tokenizer there with tokenizer.save_pretrained, or "
                                "download the model again with its tokenizer files.")


def _missing_safetensors_message(folder: Path) -> str:
    pickles = sorted({p.name for pattern in PICKLE_PATTERNS for p in folder.glob(pattern)})
    message = f"no safetensors weights ({' or '.join(SAFETENSORS_FILES)}) in the pretrained model folder {folder}."
    if pickles:
        message += (f" Found pickled weights {pickles}, which are not loaded because unpickling can run "
                    "arbitrary code. Convert them with model.save_pretrained(folder, safe_serialization=True) "
                    "in a trusted environment, or download the safetensors files of the model.")
    else:
        message += " Download the model with its safetensors files, or save it with model.save_pretrained."
    return message


# --- hub errors ------------------------------------------------------------------------------

def _hub_error_hint(source: PretrainedSource, err: BaseException) -> str:
    """Return sentences that explain why loading ``source`` from the hub failed, and the fix."""
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if find_cause(err, (GatedRepoError,)) is not None:
        return (f"{source.path} is a gated model. Accept its access conditions at https://huggingface.co/{source.path} "
                "with your account, then set HF_TOKEN to an access token of that account (or run `hf auth login`).")
    if find_cause(err, (RevisionNotFoundError,)) is not None:
        return (f"revision {source.revision!r} does not exist in {source.path}. Set revision to an existing "
                "branch, tag or commit, or to None for the default branch.")
    if find_cause(err, (RepositoryNotFoundError,)) is not None:
        return (f"{source.path} is neither a local folder nor a model on the hub. Check the id. For a private "
                "model, set HF_TOKEN to an access token that can read it.")
    offline = offline_sentence(MODEL_OFFLINE_VARIABLES, "transformers")
    if offline:
        return f"{source.path} is not in the local Hugging Face cache. {offline}"
    if find_cause(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)) is not None:
        return f"{source.path} is not in the local Hugging Face cache, and the hub could not be reached."
    return "Check the id, the revision and the network connection."


def _hub_error_message(source: PretrainedSource, part: str, err: BaseException) -> str:
    """Return the error message for a failed hub load of ``part`` ("model" or "tokenizer")."""
    revision = f"revision {source.revision}" if source.revision else "default branch"
    detail = str(err).strip().rstrip(".")
    local_note = f" No local folder {source.path} exists either." if "/" in source.path else ""
    return (f"cannot load the {part} of {source.path} ({revision}) from the Hugging Face hub: "
            f"{type(err).__name__}: {detail}. {_hub_error_hint(source, err)}{local_note} To work without the hub, "
            f"run `{_download_command(source)}` on a machine with network access and set path to that folder.")


# --- loading ---------------------------------------------------------------------------------

def _prepare(source: PretrainedSource) -> None:
    """Check a local folder, or warn about an unpinned hub revision."""
    if source.is_local:
        if source.revision is not None:
            raise ValueError(f"revision {source.revision!r} is set, but {source.path} is a local folder, which "
                             "has no revisions. Remove revision, or set path to a hub id.")
        check_local_folder(source.path)
    elif source.revision is None:
        logger.warning("no revision is set for %s, so the hub's default branch is read and the weights may "
                       "change between runs. Set revision to a commit to pin them.", source.path)


def _load_path(source: PretrainedSource) -> str:
    return str(Path(source.path).expanduser()) if source.is_local else source.path


def load_pretrained_tokenizer(source: PretrainedSource):
    """Load the tokenizer of ``source`` with ``AutoTokenizer.from_pretrained``.

    Raises:
        FileNotFoundError, NotADirectoryError: If a local folder is missing or incomplete.
        PretrainedSourceError: If a hub id cannot be fetched, for example offline, gated or unknown.
        ValueError: If ``revision`` is set for a local folder.
    """
    _prepare(source)
    return _tokenizer_from_pretrained(source)


def _tokenizer_from_pretrained(source: PretrainedSource):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(_load_path(source), revision=source.revision,
                                                  trust_remote_code=False)
    except OSError as err:
        if source.is_local:
            raise
        raise PretrainedSourceError(_hub_error_message(source, "tokenizer", err)) from err
    logger.info("loaded the tokenizer of %s (%d tokens)", source.path, len(tokenizer))
    return tokenizer


def _check_flash_attention(source: PretrainedSource) -> None:
    # Without the package, transformers 5.25.0 tries to fetch a kernel from the hub instead.
    if source.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError("attn_implementation 'flash_attention_2' needs the flash-attn package, which is not "
                          "installed. Install it on a CUDA machine (pip install flash-attn), or use 'eager'.")


def load_pretrained_model(source: PretrainedSource, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load the causal LM of ``source`` in ``source.dtype`` and move it to ``device``.

    Only safetensors weights are read (``use_safetensors=True``), and code from the repository is
    never run (``trust_remote_code=False``). The model is returned in eval mode, as transformers
    leaves it.

    Raises:
        FileNotFoundError, NotADirectoryError: If a local folder is missing or incomplete.
        PretrainedSourceError: If a hub id cannot be fetched, for example offline, gated or unknown.
        ValueError: If ``revision`` is set for a local folder, or the model class does not support
            ``attn_implementation``.
        ImportError: If "flash_attention_2" is requested without the flash-attn package.
    """
    _prepare(source)
    return _model_from_pretrained(source, device)


def _model_from_pretrained(source: PretrainedSource, device: str | torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    _check_flash_attention(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            _load_path(source), revision=source.revision, dtype=source.torch_dtype,
            attn_implementation=source.attn_implementation, use_safetensors=True, trust_remote_code=False,
        )
    except OSError as err:
        if source.is_local:
            raise
        raise PretrainedSourceError(_hub_error_message(source, "model", err)) from err
    except ValueError as err:
        if source.attn_implementation == "eager" or "attention" not in str(err):
            raise
        raise ValueError(f"{source.path} cannot run with attn_implementation {source.attn_implementation!r}: "
                         f"{err}. Set attn_implementation to 'eager', which Gemma-2 needs for its attention "
                         "softcapping.") from err

    logger.info("loaded %s (revision %s) in %s with %s attention: %s parameters", source.path, source.revision,
                source.dtype, source.attn_implementation, f"{count_parameters(model):,}")
    return model.to(device)


def load_pretrained(source: PretrainedSource, device: str | torch.device = "cpu"):
    """Load the model and the tokenizer of ``source``; return ``(model, tokenizer)``.

    Raises the errors of ``load_pretrained_tokenizer`` and ``load_pretrained_model``.
    """
    _prepare(source)
    tokenizer = _tokenizer_from_pretrained(source)
    model = _model_from_pretrained(source, device)
    return model, tokenizer


def write_random_gemma2(path: str | Path, tokenizer, params: ModelParams, seed: int) -> torch.nn.Module:
    """Write a randomly initialised Gemma2 and ``tokenizer`` to the folder ``path``, and return the model.

    The folder has the layout that ``load_pretrained`` reads (``config.json``,
    ``model.safetensors`` and the tokenizer files), written atomically by ``model.save_model``.
    The model's vocabulary is ``len(tokenizer)``, and its weights are saved in float32.
    """
    model = build_model(params, len(tokenizer), seed)
    save_model(model, tokenizer, path)
    logger.info("wrote a random Gemma2 stand-in to %s", path)
    return model
