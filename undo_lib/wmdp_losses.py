"""WMDP variants of the MaxEnt and RMU unlearning losses (Gemma-2-2B, bio and cyber knowledge).

On WMDP, Lee et al. (arXiv 2506.06278) weight the forget and retain terms by 1 - α and α, and the
retain term compares the model with a frozen copy of the original model:

- MaxEnt-WMDP: L = (1 - α) * KL(U || p_θ)(forget) + α * R(retain), where U is uniform over the
  vocabulary and R is the forward KL(p_ref || p_θ) from the frozen reference (``use_retain_kl``,
  Lee et al.'s setting) or the next-token CE. With RepNoise weights set, the RepNoise loss of
  ``undo_lib.methods.repnoise`` joins the forget side: (1 - α) * (KL + RepNoise) + α * R.
- RMU-WMDP: L = (1 - α) * MSE(h_forget, c * u) + α * MSE(h_retain(θ), h_retain(reference)), with h
  the residual stream ``hidden_states[hidden_layer]`` and only ``mlp.down_proj`` of ``layers``
  trainable.

Each ``make_*`` factory takes ``(model, params, seed)`` and returns ``(model, batch) -> (loss, logs)``
for ``undo_lib.train.train``. The batch is one item of ``undo_lib.data.paired_batches``:
``{"forget": {"input_ids", "loss_mask"}, "retain": {"input_ids", "loss_mask"}}``, each [batch, seq].

The frozen reference is a deep copy of the model, made when the factory runs. It is a second full
copy of the weights in the model's dtype. For Gemma-2-2B (about 2.6B parameters) that is an
estimated 5.2 GB more in bfloat16, or 10.5 GB in float32. The copy lives in the returned function
(``loss_fn.reference``), outside ``model.parameters()``, so the optimizer, the SAM perturbation and
training checkpoints never touch it. Build the loss after moving the model to its device and before
loading a training checkpoint, because the copy keeps the weights and device of that moment.

SAM needs nothing here, because the training loop applies it to any loss (``TrainParams.sam_rho``).
Lee et al.'s WMDP SAM baseline is MaxEnt-WMDP with the KL retain term, trained with ρ = 0.01.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Literal

import torch

from undo_lib.losses import causal_ce, forward_kl
from undo_lib.methods import Method
from undo_lib.methods.maxent import maxent_forward
from undo_lib.methods.repnoise import repnoise_loss
from undo_lib.methods.rmu import control_vector, freeze_except_down_proj, hidden_state, masked_mse
from undo_lib.train import LossFn

logger = logging.getLogger(__name__)


def check_alpha(alpha: float, method: str) -> None:
    """Raise ValueError unless 0 < ``alpha`` < 1, the range in which both WMDP loss terms count."""
    if not 0 < alpha < 1:  # also rejects NaN
        raise ValueError(f"{method}: invalid alpha {alpha!r}. WMDP losses weight forget by 1 - alpha and retain by "
                         "alpha, so alpha must lie strictly between 0 and 1 (Lee et al. use 0.1 to 0.5).")


@dataclass(frozen=True)
class MaxEntWMDPParams:
    """Params of MaxEnt-WMDP. The defaults are Lee et al.'s bio run without RepNoise."""

    alpha: float = 0.3  # α, the retain weight (forget: 1 - α). Lee et al.: 0.3 or 0.1 for bio, 0.2 for cyber
    use_retain_kl: bool = True  # retain term: KL(p_ref || p_θ) to the frozen reference (Lee et al.), else next-token CE
    repnoise_alpha: float = 0.0  # RepNoise: weight of -log(1 + logit-lens CE on forget data), 1.0 in Lee et al.'s WMDP runs
    repnoise_beta: float = 0.0  # RepNoise: weight of the noise MMD on forget MLP outputs, 1.0 in Lee et al.'s WMDP runs

    def __post_init__(self):
        check_alpha(self.alpha, "MaxEnt-WMDP")


@dataclass(frozen=True)
class RMUWMDPParams:
    """Params of RMU-WMDP. The defaults are Lee et al.'s Gemma-2-2B values, with the bio α."""

    alpha: float = 0.5  # α, the retain weight (forget: 1 - α). Lee et al.: 0.5 for bio, 0.5, 0.2 or 0.1 for cyber
    layers: tuple[int, ...] = (10, 11, 12, 13, 14, 15)  # layers whose mlp.down_proj trains
    hidden_layer: int = 15  # index into hidden_states (0: embeddings, i: output of layer i - 1) that is steered
    steering_coefficient: float = 80.0  # c in MSE(h_forget, c * u)
    control_vector: Literal["gaussian", "uniform"] = "gaussian"  # u: normalised randn (Lee et al.) or rand (original RMU)

    def __post_init__(self):
        check_alpha(self.alpha, "RMU-WMDP")
        if not self.layers:
            raise ValueError("RMU-WMDP: layers is empty. List the layers whose mlp.down_proj trains, such as (10, 11).")
        if self.hidden_layer < 1:
            raise ValueError(f"RMU-WMDP: invalid hidden_layer {self.hidden_layer}. hidden_states[0] is the embedding "
                             "output, which no down_proj changes, so steer hidden_layer >= 1.")


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """Deep-copy ``model`` as a frozen reference: eval mode, ``requires_grad`` False, same dtype and device."""
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    size = sum(p.numel() * p.element_size() for p in reference.parameters())
    logger.info("frozen reference model: a second full copy of the weights, %.2f GB", size / 1e9)
    return reference


def _check_reference_device(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    model_device = next(model.parameters()).device
    reference_device = next(reference.parameters()).device
    if model_device != reference_device:
        raise ValueError(f"the frozen reference model is on {reference_device} but the model is on {model_device}. "
                         "Move the model to its device before building the WMDP loss.")


@torch.no_grad()
def _reference_logits(reference: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return reference(input_ids=input_ids).logits


# ----------------------------------------------------------------------------------------------
# MaxEnt-WMDP


def _uses_repnoise(params: MaxEntWMDPParams) -> bool:
    return params.repnoise_alpha > 0 or params.repnoise_beta > 0


def _maxent_retain_term(model, retain: dict, retain_logits: torch.Tensor, params: MaxEntWMDPParams,
                        reference: torch.nn.Module | None) -> tuple[torch.Tensor, str]:
    """Return the retain term and its log key: KL(p_ref || p_θ) with ``use_retain_kl``, else CE."""
    if not params.use_retain_kl:
        return causal_ce(retain_logits, retain["input_ids"], retain["loss_mask"]), "retain_ce"
    if reference is None:
        raise ValueError("MaxEnt-WMDP with use_retain_kl needs the frozen reference model, which is missing. "
                         "Build the loss with make_maxent_wmdp_loss.")
    _check_reference_device(model, reference)
    reference_logits = _reference_logits(reference, retain["input_ids"])
    return forward_kl(reference_logits, retain_logits, retain["input_ids"], retain["loss_mask"]), "retain_kl"


def maxent_wmdp_loss(model, batch: dict, params: MaxEntWMDPParams, reference: torch.nn.Module | None = None,
                     seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Compute (1 - α) * (KL(U || p_θ)(forget) [+ RepNoise]) + α * R(retain) on one (forget, retain) batch pair.

    Args:
        model: a Gemma2 causal LM.
        batch: ``{"forget": ..., "retain": ...}``, each with ``input_ids`` and ``loss_mask`` [batch, seq].
        params: α, the retain term and the RepNoise weights.
        reference: frozen copy of the original model. Required with ``use_retain_kl``.
        seed: seed of RepNoise's Gaussian noise, combined with the forget tokens. Unused without RepNoise.

    Returns:
        (scalar loss, logs with ``forget_kl_uniform``, ``retain_kl`` or ``retain_ce``, and any
        RepNoise terms). The logged terms are unweighted.
    """
    forget_output, mlp_outputs, retain_logits, forget_term = maxent_forward(model, batch, _uses_repnoise(params))
    retain_term, retain_key = _maxent_retain_term(model, batch["retain"], retain_logits, params, reference)
    logs = {"forget_kl_uniform": forget_term.item(), retain_key: retain_term.item()}

    if _uses_repnoise(params):
        extra, extra_logs = repnoise_loss(model, forget_output, mlp_outputs, retain_logits, batch,
                                          params.repnoise_alpha, params.repnoise_beta, seed)
        forget_term = forget_term + extra
        logs.update(extra_logs)
    loss = (1 - params.alpha) * forget_term + params.alpha * retain_term
    return loss, logs


def make_maxent_wmdp_loss(model, params: MaxEntWMDPParams, seed: int) -> LossFn:
    """Build the MaxEnt-WMDP loss function ``(model, batch) -> (loss, logs)``.

    With ``use_retain_kl`` it first keeps a frozen deep copy of ``model`` (see ``frozen_copy``) as
    the reference, exposed as ``loss_fn.reference`` (None otherwise). ``seed`` seeds RepNoise's noise.
    """
    reference = frozen_copy(model) if params.use_retain_kl else None
    logger.info("MaxEnt-WMDP: alpha %s, retain term %s, RepNoise alpha %s beta %s", params.alpha,
                "KL to the frozen reference" if params.use_retain_kl else "CE", params.repnoise_alpha,
                params.repnoise_beta)

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict]:
        return maxent_wmdp_loss(model, batch, params, reference, seed)

    loss_fn.reference = reference
    return loss_fn


# ----------------------------------------------------------------------------------------------
# RMU-WMDP


def check_rmu_layers(params: RMUWMDPParams, num_hidden_layers: int) -> None:
    """Check ``layers`` and ``hidden_layer`` against a model with ``num_hidden_layers`` decoder layers.

    Raises ValueError for an index out of range, for the final-norm state, and when no listed layer
    lies before the steered state. Logs a warning for listed layers that cannot change it.
    """
    if params.hidden_layer >= num_hidden_layers:
        # transformers returns the last entry of hidden_states after the final norm, not after a layer
        raise ValueError(f"RMU-WMDP hidden_layer={params.hidden_layer} is the model's final-norm output. Steer an "
                         f"intermediate state instead (hidden_layer < num_hidden_layers={num_hidden_layers}).")
    outside = [i for i in params.layers if not 0 <= i < num_hidden_layers]
    if outside:
        raise ValueError(f"RMU-WMDP layers {outside} are out of range for a model with {num_hidden_layers} layers "
                         f"(valid: 0 to {num_hidden_layers - 1}).")
    after = [i for i in params.layers if i >= params.hidden_layer]
    if len(after) == len(params.layers):
        raise ValueError(f"RMU-WMDP: no layer in {list(params.layers)} comes before hidden_states"
                         f"[{params.hidden_layer}] (the output of layer {params.hidden_layer - 1}), so no trainable "
                         "weight can change the steered state. List a layer below hidden_layer.")
    if after:
        # Lee et al.'s Gemma-2-2B setting (layers 10..15, hidden_states[15]) has one such layer, 15.
        logger.warning("RMU-WMDP: layers %s come at or after hidden_states[%d], so their down_proj gets no "
                       "gradient and stays unchanged", after, params.hidden_layer)


def rmu_wmdp_loss(model, batch: dict, params: RMUWMDPParams, control: torch.Tensor,
                  reference: torch.nn.Module) -> tuple[torch.Tensor, dict]:
    """Compute (1 - α) * MSE(h_forget, c * u) + α * MSE(h_retain(θ), h_retain(reference)) on one batch pair.

    Args:
        model: a Gemma2 causal LM (``model.model`` is the decoder).
        batch: ``{"forget": ..., "retain": ...}``, each with ``input_ids`` and ``loss_mask`` [batch, seq].
        params: α, ``hidden_layer`` and ``steering_coefficient`` (c).
        control: unit control vector u [hidden].
        reference: frozen copy of the original model.

    Returns:
        (scalar loss, logs with the unweighted ``forget_mse`` and ``retain_mse``).
    """
    _check_reference_device(model, reference)
    forget, retain = batch["forget"], batch["retain"]

    forget_hidden = hidden_state(model, forget["input_ids"], params.hidden_layer)
    target = params.steering_coefficient * control.to(forget_hidden.device)
    forget_mse = masked_mse(forget_hidden, target, forget["loss_mask"])

    retain_hidden = hidden_state(model, retain["input_ids"], params.hidden_layer)
    with torch.no_grad():
        reference_hidden = hidden_state(reference, retain["input_ids"], params.hidden_layer)
    retain_mse = masked_mse(retain_hidden, reference_hidden, retain["loss_mask"])

    loss = (1 - params.alpha) * forget_mse + params.alpha * retain_mse
    return loss, {"forget_mse": forget_mse.item(), "retain_mse": retain_mse.item()}


def make_rmu_wmdp_loss(model, params: RMUWMDPParams, seed: int) -> LossFn:
    """Set ``model`` up for RMU-WMDP and build its loss function ``(model, batch) -> (loss, logs)``.

    Keeps a frozen deep copy of ``model`` as the reference (``loss_fn.reference``), then freezes
    every weight of ``model`` except ``mlp.down_proj`` of ``params.layers`` and draws u from ``seed``.
    """
    check_rmu_layers(params, model.config.num_hidden_layers)
    # NOTE: the retain term reads only hidden_states[hidden_layer], so the reference's LM head and its
    # layers from hidden_layer on are not needed (the forward still runs those layers). The full copy
    # is kept anyway, at the cost of a second full model.
    reference = frozen_copy(model)
    freeze_except_down_proj(model, params.layers)
    control = control_vector(model.config.hidden_size, params.control_vector, seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("RMU-WMDP: alpha %s, trains mlp.down_proj of layers %s (%s parameters), steers hidden_states[%d] "
                "to %s * u", params.alpha, list(params.layers), f"{trainable:,}", params.hidden_layer,
                params.steering_coefficient)

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict]:
        return rmu_wmdp_loss(model, batch, params, control, reference)

    loss_fn.reference = reference
    return loss_fn


# ----------------------------------------------------------------------------------------------
# Registry

WMDP_METHODS: dict[str, Method] = {
    "MaxEnt": Method(MaxEntWMDPParams, make_maxent_wmdp_loss),
    "RMU": Method(RMUWMDPParams, make_rmu_wmdp_loss),
}


def make_wmdp_loss(method: str, model: torch.nn.Module, params: MaxEntWMDPParams | RMUWMDPParams,
                   seed: int) -> LossFn:
    """Set ``model`` up for the WMDP variant of ``method`` ("MaxEnt" or "RMU") and build its loss function.

    Raises:
        KeyError: ``method`` has no WMDP variant.
        TypeError: ``params`` is not the variant's params type.
    """
    if method not in WMDP_METHODS:
        raise KeyError(f"unknown WMDP unlearning method {method!r}. Methods with a WMDP variant: {sorted(WMDP_METHODS)}")
    entry = WMDP_METHODS[method]
    if not isinstance(params, entry.params_type):
        raise TypeError(f"WMDP {method} takes {entry.params_type.__name__}, got {type(params).__name__}.")
    return entry.make_loss(model, params, seed)
