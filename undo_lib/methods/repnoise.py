"""The RepNoise loss that the RepNoise baseline adds to MaxEnt.

RepNoise (Rosati et al., "Representation Noising", code at github.com/domenicrosati/representation-noising,
``representation_noising/loss.py``) pushes the MLP outputs on harmful (here: forget) data toward
Gaussian noise and raises the logit-lens CE of every layer on it:

    repnoise = CE(retain) + beta * MMD_noise - alpha * log(lens_ce + 1)

- Token mask: positions whose forget token differs from the retain token at the same position.
  Every term below counts only those positions, intersected with the batch's ``loss_mask``.
- CE(retain): next-token CE on the retain batch.
- MMD_noise: mean over layers of the MMD between that layer's MLP outputs on the forget batch and
  N(0, I) noise of the same shape. Masked positions are set to 0 in both, and each example is
  flattened to one vector. The kernel is a sum of 5 Gaussian kernels (bandwidth multiplier 2)
  around the mean pairwise squared distance, as in the RepNoise code.
- lens_ce: mean over the entries of ``hidden_states`` of the next-token CE on the forget batch
  after the final norm, the LM head and Gemma2's final logit soft-cap. The last entry is the
  model's own logits. (The RepNoise code sums the final-logits CE and one CE per entry, the last one
  included, and divides by the number of entries.)
"""

from __future__ import annotations

import hashlib

import torch

from undo_lib.losses import causal_ce

KERNELS = 5  # Gaussian kernels in the MMD mixture
BANDWIDTH_MULTIPLIER = 2.0  # ratio between neighbouring kernel bandwidths
MIN_BANDWIDTH = 1e-12  # floor for the data bandwidth, reached only when every sample is identical


def mmd(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Compute the biased MMD^2 between samples ``source`` [n, d] and ``target`` [m, d] (5-kernel Gaussian mixture).

    k(x, y) = sum_k exp(-||x - y||^2 / b_k) with b_k = b * 2**(k - 2) for k in 0..4, where b is the mean
    squared distance over all pairs of distinct samples of the pooled set (detached, so no gradient
    flows through the bandwidth). Returns mean k(source, source) + mean k(target, target)
    - 2 mean k(source, target), diagonal terms included.
    """
    samples = torch.cat([source, target]).float()  # [n + m, d]
    squared_norms = samples.pow(2).sum(dim=1)
    distances = squared_norms[:, None] + squared_norms[None, :] - 2 * samples @ samples.T
    distances = distances.clamp_min(0.0)  # rounding can leave tiny negatives
    count = samples.shape[0]
    base = (distances.detach().sum() / (count * count - count)).clamp_min(MIN_BANDWIDTH)
    kernel = sum(torch.exp(-distances / (base * BANDWIDTH_MULTIPLIER ** (k - KERNELS // 2)))
                 for k in range(KERNELS))
    n = source.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def noise_seed(seed: int, input_ids: torch.Tensor) -> int:
    """Return a noise seed derived from ``seed`` and the token ids of the forget batch.

    The same batch always gets the same noise, so a run resumed from a checkpoint, and SAM's second
    pass over the same micro-batches, draw exactly the noise of the first.
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(str(seed).encode())
    digest.update(input_ids.detach().cpu().numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def noise_mmd(mlp_outputs: list[torch.Tensor], mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Average over layers the MMD between masked MLP outputs [batch, seq, hidden] and masked N(0, I) noise."""
    keep = mask[..., None].float()  # [batch, seq, 1]
    total = 0.0
    for output in mlp_outputs:
        noise = torch.randn(output.shape, generator=generator, device=output.device)
        activations = (output.float() * keep).flatten(1)  # [batch, seq * hidden]
        total = total + mmd(activations, (noise * keep).flatten(1))
    return total / len(mlp_outputs)


def unwrapped(model):
    """Return the causal LM inside a DistributedDataParallel wrapper, or ``model`` itself.

    The logit lens and the MLP hooks need the decoder's submodules. Their weights may be used
    outside the wrapper's forward pass: their gradients still arrive in the same backward pass, and
    DDP averages them then.
    """
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _lm_logits(model, normed: torch.Tensor) -> torch.Tensor:
    logits = model.lm_head(normed)
    cap = model.config.final_logit_softcapping
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def logit_lens_ce(model, hidden_states: tuple[torch.Tensor, ...], logits: torch.Tensor,
                  input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the next-token CE of the logit lens over every entry of ``hidden_states``.

    Every entry but the last goes through the final norm, the LM head and the soft-cap. The last
    entry is already normed (transformers' Gemma2), so the model's ``logits`` stand in for it.
    """
    model = unwrapped(model)
    terms = [causal_ce(logits, input_ids, mask)]
    for hidden in hidden_states[:-1]:
        lens_logits = _lm_logits(model, model.model.norm(hidden))
        terms.append(causal_ce(lens_logits, input_ids, mask))
    return torch.stack(terms).mean()


def forward_with_mlp_outputs(model, input_ids: torch.Tensor):
    """Run ``model`` (through any DDP wrapper) with hidden states; return (its output, every layer's MLP output)."""
    captured: list[torch.Tensor] = []
    handles = [layer.mlp.register_forward_hook(lambda module, args, output: captured.append(output))
               for layer in unwrapped(model).model.layers]
    try:
        output = model(input_ids=input_ids, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    return output, captured


def token_mask(forget: dict, retain: dict) -> torch.Tensor:
    """Return the positions [batch, seq] whose forget token differs from the retain token."""
    if forget["input_ids"].shape != retain["input_ids"].shape:
        raise ValueError(f"RepNoise compares forget and retain tokens position by position, but their shapes "
                         f"differ: {tuple(forget['input_ids'].shape)} and {tuple(retain['input_ids'].shape)}. "
                         "Draw both from paired_batches with the same batch size and sequence length.")
    return forget["input_ids"] != retain["input_ids"]


def repnoise_loss(model, forget_output, mlp_outputs: list[torch.Tensor], retain_logits: torch.Tensor, batch: dict,
                  alpha: float, beta: float, seed: int) -> tuple[torch.Tensor, dict]:
    """Compute CE(retain) + beta * MMD_noise - alpha * log(lens_ce + 1) for one (forget, retain) batch pair.

    Args:
        forget_output: the model's output on the forget batch, with ``hidden_states``.
        mlp_outputs: MLP output of every layer on the forget batch, [batch, seq, hidden] each.
        retain_logits: the model's logits on the retain batch [batch, seq, vocab].
        batch: ``{"forget": ..., "retain": ...}``.
        alpha, beta: weights of the logit-lens and MMD terms. A zero weight skips its term.
        seed: combined with the forget tokens into the seed of the noise generator (``noise_seed``).

    Returns:
        (scalar loss, logs with ``repnoise_retain_ce`` and, for the terms computed,
        ``repnoise_mmd`` and ``repnoise_lens_ce``).
    """
    forget, retain = batch["forget"], batch["retain"]
    differs = token_mask(forget, retain)
    forget_mask = differs & forget["loss_mask"].bool()
    loss = causal_ce(retain_logits, retain["input_ids"], differs & retain["loss_mask"].bool())
    logs = {"repnoise_retain_ce": loss.item()}
    if beta > 0:
        device = mlp_outputs[0].device
        generator = torch.Generator(device=device).manual_seed(noise_seed(seed, forget["input_ids"]))
        distance = noise_mmd(mlp_outputs, forget_mask, generator)
        loss = loss + beta * distance
        logs["repnoise_mmd"] = distance.item()
    if alpha > 0:
        lens_ce = logit_lens_ce(model, forget_output.hidden_states, forget_output.logits, forget["input_ids"],
                                forget_mask)
        loss = loss - alpha * torch.log(lens_ce + 1)
        logs["repnoise_lens_ce"] = lens_ce.item()
    return loss, logs
