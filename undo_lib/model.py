"""Gemma2 causal LMs built from a config (random init), saved and loaded as safetensors.

Models are never fetched from a hub: ``build_model`` initialises a transformers
``Gemma2ForCausalLM`` from ``params.yaml``'s model section, and ``load_model`` reads a folder written
by ``save_model`` (``config.json``, ``model.safetensors`` and the tokenizer files), offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import Gemma2Config, Gemma2ForCausalLM

from undo_lib.config import ModelParams
from undo_lib.io import IntegrityError, atomic_dir
from undo_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID

logger = logging.getLogger(__name__)


def gemma2_config(params: ModelParams, vocab_size: int) -> Gemma2Config:
    """Gemma2 config with the shape in ``params`` and this project's tokenizer ids."""
    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=params.hidden_size,
        num_hidden_layers=params.num_hidden_layers,
        num_attention_heads=params.num_attention_heads,
        num_key_value_heads=params.num_key_value_heads,
        head_dim=params.head_dim,
        intermediate_size=params.intermediate_size,
        query_pre_attn_scalar=params.query_pre_attn_scalar,
        attn_logit_softcapping=params.attn_logit_softcapping,
        final_logit_softcapping=params.final_logit_softcapping,
        sliding_window=params.sliding_window,
        max_position_embeddings=params.max_position_embeddings,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        tie_word_embeddings=True,
        use_cache=False,
        attn_implementation="eager",  # Gemma2 rejects SDPA because SDPA cannot apply the softcap
    )


def build_model(params: ModelParams, vocab_size: int, seed: int) -> Gemma2ForCausalLM:
    """A randomly initialised Gemma2 (transformers' init: N(0, 0.02) weights, RMSNorm gains 0)."""
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(gemma2_config(params, vocab_size))
    logger.info("built Gemma2 with %s parameters", f"{count_parameters(model):,}")
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (the tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, path: str | Path) -> None:
    """Write model (safetensors) and tokenizer to ``path`` atomically: all of it or nothing."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def copy_model(source: str | Path, path: str | Path) -> None:
    """Copy the model folder ``source`` (weights, config, tokenizer) to ``path`` atomically."""
    import shutil

    source = Path(source)
    if not (source / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors in {source}; run the stage that writes it (dvc repro).")
    with atomic_dir(path) as tmp:
        for file in source.iterdir():
            if file.is_file():
                shutil.copy2(file, tmp / file.name)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Gemma2ForCausalLM:
    """Load a model saved by ``save_model``; refuses pickled weights and remote code.

    Raises:
        FileNotFoundError: ``path`` has no model.safetensors (pickled ``*.bin`` files are named).
        IntegrityError: model.safetensors or config.json is truncated or corrupt. A changed tensor
            value inside an intact file is not detected here, because safetensors stores no checksum.
    """
    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        pickles = sorted(p.name for p in path.glob("*.bin")) if path.is_dir() else []
        hint = f" Found {pickles}: pickled checkpoints are not loaded, re-save them as safetensors." if pickles else ""
        raise FileNotFoundError(f"no model.safetensors in {path}.{hint} Run the stage that writes it (dvc repro).")
    try:
        model = Gemma2ForCausalLM.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False,
            attn_implementation="eager",
        )
    except SafetensorError as err:
        raise IntegrityError(
            f"{weights} is corrupt or truncated ({err}). Delete the folder {path} and rerun the stage "
            "that writes it (`dvc repro`)."
        ) from err
    except (OSError, ValueError) as err:  # transformers reports an unreadable config.json this way
        raise IntegrityError(
            f"the model folder {path} is unreadable ({err}). Delete the folder and rerun the stage "
            "that writes it (`dvc repro`)."
        ) from err
    return model.to(device)


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("shared.device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'.")
    return torch.device(choice)


def check_gpu_count(processes: int) -> None:
    """Reject more training processes than visible GPUs: ``run_training`` starts one process per GPU."""
    count = torch.cuda.device_count()
    if processes > count:
        visible = f"{count} GPU is" if count == 1 else f"{count} GPUs are"
        raise ValueError(f"shared.num_processes={processes} trains on one GPU per process, but {visible} "
                         f"visible. Set shared.num_processes to at most {count}, or shared.device: cpu.")
