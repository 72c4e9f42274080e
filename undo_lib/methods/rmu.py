"""RMU (Representation Misdirection for Unlearning): steer forget-data activations to a random direction.

Forget term: MSE(h_forget, c * u), where h is the residual stream ``hidden_states[hidden_layer]``, u a
fixed random unit vector and c the steering coefficient. Retain term, only when ``retain_weight`` > 0:
MSE(h_retain, h_retain of a frozen copy of the original model). Only ``mlp.down_proj`` of the listed
layers trains. This follows the RMU of Li et al., "The WMDP Benchmark" (arXiv 2403.03218), as
Lee et al. (arXiv 2506.06278) run it: a Gaussian control vector, and no retain term outside WMDP.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch.distributed.fsdp import FSDPModule

from undo_lib.config import RMUParams

logger = logging.getLogger(__name__)


def control_vector(hidden_size: int, kind: str, seed: int) -> torch.Tensor:
    """Draw the unit control vector u [hidden_size] from a generator seeded with ``seed``.

    ``gaussian`` normalises ``randn`` (Lee et al.); ``uniform`` normalises ``rand`` in [0, 1) (the
    original RMU).
    """
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        u = torch.randn(hidden_size, generator=generator)
    elif kind == "uniform":
        u = torch.rand(hidden_size, generator=generator)
    else:
        raise ValueError(f"invalid control_vector {kind!r}; expected 'gaussian' or 'uniform'.")
    return u / u.norm()


def freeze_except_down_proj(model, layers: tuple[int, ...]) -> None:
    """Freeze every parameter of ``model`` except ``model.model.layers[i].mlp.down_proj`` for i in ``layers``."""
    model.requires_grad_(False)
    for i in layers:
        model.model.layers[i].mlp.down_proj.requires_grad_(True)


def hidden_state(model, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Return ``hidden_states[layer]`` [batch, seq, hidden] of the decoder (0: embeddings, i: after layer i - 1).

    The decoder runs without the LM head, because RMU needs no logits. A model wrapped in
    DistributedDataParallel or sharded by FSDP runs whole, LM head included. A forward pass that
    bypassed the DDP wrapper would skip the gradient averaging, and one that bypassed the root FSDP
    unit would skip the gathering of its weights.
    """
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, FSDPModule)):
        return model(input_ids=input_ids, output_hidden_states=True).hidden_states[layer]
    return model.model(input_ids=input_ids, output_hidden_states=True).hidden_states[layer]


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Average (hidden - target)^2 over the hidden units of positions whose ``loss_mask`` is set.

    ``hidden`` is [batch, seq, hidden], and ``target`` broadcasts to it. Position t counts when
    ``loss_mask[:, t]`` is set (no shift, because a hidden state belongs to its own token). With an
    all-ones mask, as on packed data, this is the plain mean over batch x seq x hidden.
    """
    keep = loss_mask.bool()
    if not keep.any():
        return hidden.sum() * 0.0
    squared = (hidden.float() - target.float()).pow(2)[keep]  # [kept positions, hidden]
    return squared.mean()


def rmu_loss(model, batch: dict, params: RMUParams, control: torch.Tensor,
             reference: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict]:
    """Compute the RMU loss on one (forget, retain) batch pair.

    Args:
        model: a Gemma2 causal LM (``model.model`` is the decoder).
        batch: ``{"forget": ..., "retain": ...}``, each with ``input_ids`` and ``loss_mask`` [batch, seq].
        params: ``hidden_layer``, ``steering_coefficient`` (c) and ``retain_weight``.
        control: unit control vector u [hidden].
        reference: frozen copy of the original model; required when ``retain_weight`` > 0.

    Returns:
        (scalar loss, logs with ``forget_mse`` and, when the retain term runs, ``retain_mse``).
    """
    forget = batch["forget"]
    forget_hidden = hidden_state(model, forget["input_ids"], params.hidden_layer)
    target = params.steering_coefficient * control.to(forget_hidden.device)
    forget_mse = masked_mse(forget_hidden, target, forget["loss_mask"])
    logs = {"forget_mse": forget_mse.item()}
    if params.retain_weight == 0:
        return forget_mse, logs

    if reference is None:
        raise ValueError("RMU with retain_weight > 0 needs the frozen reference model, which is missing. "
                         "Build the loss with make_rmu_loss.")
    retain = batch["retain"]
    retain_hidden = hidden_state(model, retain["input_ids"], params.hidden_layer)
    with torch.no_grad():
        reference_hidden = hidden_state(reference, retain["input_ids"], params.hidden_layer)
    retain_mse = masked_mse(retain_hidden, reference_hidden, retain["loss_mask"])
    logs["retain_mse"] = retain_mse.item()
    return forget_mse + params.retain_weight * retain_mse, logs


def make_rmu_loss(model, params: RMUParams, seed: int):
    """Set ``model`` up for RMU and return its loss function ``(model, batch) -> (loss, logs)``.

    Freezes all of ``model`` except the listed ``down_proj`` weights, draws u from ``seed``, and, when
    ``retain_weight`` > 0, keeps a frozen deep copy of ``model`` as it is now as the reference. Call
    it before any training or checkpoint loading changes the weights.
    """
    layers = model.config.num_hidden_layers
    if params.hidden_layer >= layers:
        # transformers returns the last entry of hidden_states after the final norm, not after a layer
        raise ValueError(f"RMU hidden_layer={params.hidden_layer} is the model's final-norm output; steer an "
                         f"intermediate state instead (hidden_layer < num_hidden_layers={layers}), as the paper "
                         "does (11 of 14)")
    reference = None
    if params.retain_weight > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    freeze_except_down_proj(model, params.layers)
    control = control_vector(model.config.hidden_size, params.control_vector, seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("RMU trains mlp.down_proj of layers %s (%s parameters), steers hidden_states[%d]",
                list(params.layers), f"{trainable:,}", params.hidden_layer)

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict]:
        return rmu_loss(model, batch, params, control, reference)

    return loss_fn
