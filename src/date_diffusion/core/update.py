"""The DATE update rule as a pure function of tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class UpdateResult:
    embeds: torch.Tensor  # [B, L, D] the new conditional embedding
    grad_norm: torch.Tensor  # [B] float64, norm of the full gradient (loss + prior) per sample
    skipped: torch.Tensor  # [B] bool, samples whose gradient was zero or not finite (embedding unchanged)


def prior_gradient(embeds: torch.Tensor, original: torch.Tensor, prior_weight: float) -> torch.Tensor:
    """Gradient of `prior_weight * mean((c - c_org)^2)`, the mean taken per sample over tokens and channels."""
    per_sample = embeds[0].numel()
    return (2.0 * prior_weight / per_sample) * (embeds - original)


def date_update(
    embeds: torch.Tensor,
    original: torch.Tensor,
    loss_grad: torch.Tensor,
    rho: float | torch.Tensor,
    anchor: str = "previous",
    prior_weight: float = 0.0,
    normalize: bool = True,
) -> UpdateResult:
    """One normalised gradient step on the conditional embedding.

    `loss_grad` is the gradient of the loss `-h(c)` at the current `embeds`. With `g = loss_grad + prior term`,
    each sample moves `rho * g / ||g||_F`, the norm taken over all its tokens (padding included), starting
    from `embeds` (anchor "previous", the reference's accumulate mode) or from `original` (anchor "original").

    A sample whose gradient norm is zero or not finite keeps `embeds` unchanged and is flagged in `skipped`
    (the reference divides by zero there and produces NaN). No epsilon is added to the norm, so the result for
    every non-zero finite gradient is exactly the reference formula.

    `normalize=False` is the paper's un-normalised ablation: the step is `rho * g` (rho acts as a step size).
    `rho` may be a tensor `[B]`: one distance per sample (`DATEConfig.rho_relative`).
    """
    if anchor not in ("previous", "original"):
        raise ValueError(f"anchor must be 'previous' or 'original', got {anchor!r}")
    if loss_grad.shape != embeds.shape or original.shape != embeds.shape:
        raise ValueError(
            f"shapes differ: embeds {tuple(embeds.shape)}, original {tuple(original.shape)}, "
            f"loss_grad {tuple(loss_grad.shape)}"
        )
    work = torch.promote_types(loss_grad.dtype, torch.float32)  # half precision steps in float32
    g = loss_grad.to(work)
    if prior_weight:
        g = g + prior_gradient(embeds.to(work), original.to(work), prior_weight)
    # float64 accumulation: tiny models give entries near 1e-8 whose squares would underflow in half precision
    norm = torch.linalg.vector_norm(g.flatten(1), dim=1, dtype=torch.float64)
    ok = torch.isfinite(norm) & (norm > 0)
    shape = (-1,) + (1,) * (embeds.dim() - 1)
    divide_by = norm if normalize else torch.ones_like(norm)
    safe_norm = torch.where(ok, divide_by, torch.ones_like(norm)).to(g.dtype).view(shape)
    direction = torch.where(ok.view(shape), g, torch.zeros_like(g)) / safe_norm
    base = embeds if anchor == "previous" else original
    if torch.is_tensor(rho):
        rho = rho.to(device=g.device, dtype=g.dtype).view(shape)
    stepped = (base.to(work) - rho * direction).to(embeds.dtype)
    new = torch.where(ok.view(shape), stepped, embeds)
    return UpdateResult(new, norm, ~ok)
