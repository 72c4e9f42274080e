"""Peak-memory estimate of a training stage, checked against free memory before any compute.

The estimate, in bytes, for training with AdamW (every term is an estimate, not a measurement):

- trained model: 16·N (float32 weights, gradients and AdamW's two moments, 4 bytes each), N parameters;
- activations kept for the backward pass: B·S·(L·(32·H + 4·I + 4·A·S) + 4·V)·b. B is the number of
  sequences per micro-batch, twice the batch size for losses that run two forward passes (MaxEnt).
  S is the sequence length, L the layers, H the hidden size, I the MLP size, A the attention heads
  and V the vocabulary. The terms are the hidden-size tensors of a layer (norms, residuals,
  projections), the MLP's gate and up activations, the eager attention scores, and the logits with
  their soft-cap and log-softmax. b is 4 bytes per value in fp32;
- a frozen distillation teacher: 4·N_t for its weights plus B·S·4·V·4 for its logits and their
  log-softmax.

``precision: bf16`` (bfloat16 autocast) sets b to 2 and adds 2·N for the bfloat16 copies of the
weights that autocast makes and the backward pass keeps. Weights, gradients, AdamW state and the
teacher term stay float32. ``gradient_checkpointing`` keeps one hidden-size tensor per layer (the
layer's input) and recomputes one layer at a time, so L·(32·H + 4·I + 4·A·S) becomes
L·H + 32·H + 4·I + 4·A·S. NOTE: these two adjustments follow from the formula and were not measured.
Autocast keeps softmax, log-softmax and Gemma2's RMSNorm in float32, so b = 2 may undercount them.

The fp32 activation constants were fitted to the growth of peak RSS over one training step on CPU
(torch 2.13.0, transformers 5.25.0, 4 layers, batch 128, varying H, I, A and V one at a time). At
the default shape the activation term is about 10% above that measurement. Gradient accumulation does not
change the peak, because one micro-batch is alive at a time. Memory for evaluation, the data and
the framework itself is not counted, so a stage can pass the check and still run out of memory when
free memory is barely above the estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from undo_lib.config import ModelParams

BYTES_PER_FLOAT = 4  # float32: weights, gradients, AdamW state, and activations unless precision is bf16
BYTES_PER_BF16 = 2
GIB = 2**30


class InsufficientMemoryError(MemoryError):
    """A training stage would need more memory than the device has free."""


def parameter_count(model: ModelParams, vocab_size: int) -> int:
    """Parameters of the Gemma2 that ``undo_lib.model.build_model`` builds (tied embedding counted once)."""
    h, heads, kv, dim = model.hidden_size, model.num_attention_heads, model.num_key_value_heads, model.head_dim
    attention = h * heads * dim + 2 * h * kv * dim + heads * dim * h  # q, k, v and o projections
    mlp = 3 * h * model.intermediate_size  # gate, up and down projections
    norms = 4 * h  # input, post-attention, pre-feedforward and post-feedforward RMSNorm
    return vocab_size * h + model.num_hidden_layers * (attention + mlp + norms) + h  # + final norm


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one training stage, by part."""

    model_and_optimizer: int
    activations: int
    teacher: int = 0

    @property
    def total(self) -> int:
        return self.model_and_optimizer + self.activations + self.teacher

    def describe(self) -> str:
        parts = (f"{self.total / GIB:.2f} GiB (model and AdamW {self.model_and_optimizer / GIB:.2f}, "
                 f"activations {self.activations / GIB:.2f}")
        return parts + (f", teacher {self.teacher / GIB:.2f})" if self.teacher else ")")


def activation_values_per_token(model: ModelParams, vocab_size: int, seq_len: int,
                                gradient_checkpointing: bool = False) -> int:
    """Activation values per token that the backward pass needs alive at its peak (module docstring)."""
    per_layer = 32 * model.hidden_size + 4 * model.intermediate_size + 4 * model.num_attention_heads * seq_len
    if gradient_checkpointing:
        layers = model.num_hidden_layers * model.hidden_size + per_layer  # saved layer inputs + one recomputed layer
    else:
        layers = model.num_hidden_layers * per_layer
    return layers + 4 * vocab_size


def estimate_training_memory(model: ModelParams, vocab_size: int, sequences: int, seq_len: int,
                             teacher: ModelParams | None = None, precision: str = "fp32",
                             gradient_checkpointing: bool = False) -> MemoryEstimate:
    """Estimate the peak memory of training ``model`` on micro-batches of ``sequences`` x ``seq_len`` tokens.

    See the module docstring for the formula. ``teacher`` adds a frozen model of that shape.
    ``precision`` and ``gradient_checkpointing`` are the TrainParams fields of the same names.
    """
    n_params = parameter_count(model, vocab_size)
    per_token = activation_values_per_token(model, vocab_size, seq_len, gradient_checkpointing)
    model_bytes = 4 * n_params * BYTES_PER_FLOAT
    bytes_per_activation = BYTES_PER_FLOAT
    if precision == "bf16":
        model_bytes += n_params * BYTES_PER_BF16  # autocast's bfloat16 weight copies
        bytes_per_activation = BYTES_PER_BF16
    teacher_bytes = 0
    if teacher is not None:
        teacher_logits = sequences * seq_len * 4 * vocab_size
        teacher_bytes = (parameter_count(teacher, vocab_size) + teacher_logits) * BYTES_PER_FLOAT
    return MemoryEstimate(
        model_and_optimizer=model_bytes,
        activations=sequences * seq_len * per_token * bytes_per_activation,
        teacher=teacher_bytes,
    )


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: free GPU memory for CUDA, available system memory otherwise."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return psutil.virtual_memory().available


def check_memory(estimate: MemoryEstimate, device: torch.device, section_key: str) -> None:
    """Raise InsufficientMemoryError when ``estimate`` exceeds the free memory of ``device``.

    ``section_key`` is the dotted params key of the training section (``pretrain.arithmetic``), named
    in the hint.
    """
    free = available_memory(device)
    if estimate.total > free:
        raise InsufficientMemoryError(
            f"training would need about {estimate.describe()} on {device}, but only "
            f"{free / GIB:.2f} GiB is free. Lower {section_key}.batch_size and raise {section_key}.grad_accum by "
            "the same factor (same tokens per step, less memory), or set shared.check_memory: false if the estimate is wrong "
            "for this machine."
        )
