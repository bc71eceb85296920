"""Energy-based cross-attention (EBCA; Park et al., "Energy-Based Cross Attention for Bayesian Context Update in
Text-to-Image Diffusion Models", NeurIPS 2023), the DATE paper's other COCO baseline, over diffusers' attention
processors, installed for one call as a hook of the sampling loop.

What it does, as the authors' code (github.com/EnergyAttention/Energy-Based-CrossAttention,
`modules/models/energy_attention.py`, `energy_transformer.py`, `energy_unet_2d_condition.py`) does it:

- every cross-attention layer of the UNet, in the order a forward runs them (down, mid, up), attends with the
  context `c` it is given, then updates it by one "Bayesian context update" (BCU) and hands the updated context to
  the next cross-attention layer; the next UNet call (the next step) starts again from the prompt's embedding;
- with the layer's query `Q = to_q(h)` and key `K = to_k(c)` (per head, attention scale `s`), the update is a
  gradient step on the energy `E(c) = gamma_attn * E_attn(c) + gamma_norm * E_norm(c)`, `c <- c - grad_c E(c)`:
    E_attn(c) = -(1/s) * sum_heads sum_tokens logsumexp_queries(s * Q K^T)   (the context's negative log
                likelihood given the image's queries: the authors' update is `softmax_queries(s Q K^T)^T Q`, without
                the factor `s` that the plain gradient of their `-logsumexp` has; the `1/s` here makes it exact)
    E_norm(c) = 1/2 * logsumexp_tokens(||K_j||^2)   (the prior; K_j over all heads)
  and `grad_K` is taken to the context through `to_k`'s weight (`grad_c = grad_K @ W_k`), as the authors do;
- `gamma_attn`, `gamma_norm` are constant step sizes that the authors' `reverse_step` schedule switches off from loop
  index `int(tau * steps)` on (`tau = 1`: never); the authors recommend 0.01 / 0.02 for multi-concept generation
  (their README), the defaults here;
- both halves of the classifier-free batch are updated (the authors add the update to the whole batch, the
  unconditional context included); every sample is updated from its own queries only (batch independent), so the
  batched normal step and separate branch calls agree.

Where this may differ from the authors' code: the attention output of each layer is made by the processor that was
installed before (PyTorch's SDPA by default; theirs is diffusers 0.16's `baddbmm` + softmax): the same values to
float rounding; the update is computed in float32 at least (theirs in the model's dtype); attention masks are not
part of the update (Stable Diffusion's cross-attention has none); their token-wise step sizes (`token_upweight`)
and compositional editing (CACAO) are not implemented; `iters` (BCU steps per layer, theirs: 1) is an addition.
The authors' energy monitor (`attention_hook.py`) logs `logsumexp(1/2 ||K_j||^2)` as the prior; the update they
apply is the gradient of `1/2 logsumexp(||K_j||^2)`, which is what is implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from date_diffusion.core.text import quoted
from date_diffusion.sampling.loop import Hook, StepState

# the EBCA authors' recommendation for multi-concept generation (their README: gamma_attn, gamma_norm in {0.01, 0.02})
DEFAULT_GAMMA_ATTN = 0.01
DEFAULT_GAMMA_NORM = 0.02


@dataclass(frozen=True)
class EbcaConfig:
    """EBCA's settings: step sizes of the attention and norm terms, the share of steps (from the first) with updates
    (`tau`, the authors' `reverse_step` schedule), and BCU steps per cross-attention layer (`iters`, theirs: 1)."""

    gamma_attn: float = DEFAULT_GAMMA_ATTN
    gamma_norm: float = DEFAULT_GAMMA_NORM
    tau: float = 1.0
    iters: int = 1

    def __post_init__(self):
        for name in ("gamma_attn", "gamma_norm", "tau"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
                raise ValueError(f"ebca {name} must be a number, got {quoted(value)}")
        if self.gamma_attn < 0 or self.gamma_norm < 0:
            raise ValueError(f"ebca step sizes must be >= 0, got {self.gamma_attn}, {self.gamma_norm}")
        if not 0 <= self.tau <= 1:
            raise ValueError(f"ebca tau must be in [0, 1], got {self.tau}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 0:
            raise ValueError(f"ebca iters must be an integer >= 0, got {self.iters!r}")

    def gammas(self, index: int, n_steps: int) -> tuple[float, float]:
        """(gamma_attn, gamma_norm) at loop index `index` of `n_steps` (zero from `int(tau * n_steps)` on)."""
        if index >= int(n_steps * self.tau):
            return 0.0, 0.0
        return float(self.gamma_attn), float(self.gamma_norm)

    @property
    def moves(self) -> bool:
        return self.iters > 0 and (self.gamma_attn > 0 or self.gamma_norm > 0) and self.tau > 0


def as_ebca_config(value) -> EbcaConfig:
    """`ebca=` as an `EbcaConfig`: a config, or a dict of its fields."""
    if isinstance(value, EbcaConfig):
        return value
    if isinstance(value, dict):
        known = [f.name for f in fields(EbcaConfig)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"ebca: unknown settings {unknown}; known: {', '.join(known)}")
        return EbcaConfig(**value)
    raise TypeError(f"`ebca` must be an EbcaConfig, a dict of its fields or None, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------- the energy


def _up(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors in float32 (float32 and float64 as they are)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, heads * d] -> [B, heads, N, d]."""
    b, n, inner = x.shape
    return x.reshape(b, n, heads, inner // heads).transpose(1, 2)


def _scores(query: torch.Tensor, key: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Attention scores `s Q K^T` per head, at least float32: [B, heads, queries, tokens]."""
    return scale * _heads(_up(query), heads) @ _heads(_up(key), heads).transpose(-1, -2)


def ebca_energy(query, context, to_k, heads: int, scale: float, gamma_attn: float, gamma_norm: float):
    """The energy each sample's context descends, `gamma_attn * E_attn + gamma_norm * E_norm` (see the module's
    docstring): `query` [B, queries, inner], `context` [B, tokens, D], `to_k` the layer's key projection. [B]"""
    key = to_k(context)
    e_attn = -torch.logsumexp(_scores(query, key, heads, scale), dim=-2).sum(dim=(1, 2)) / scale
    e_norm = 0.5 * torch.logsumexp(_up(key).pow(2).sum(dim=-1), dim=-1)
    return gamma_attn * e_attn + gamma_norm * e_norm


def context_update(query, key, key_weight, heads: int, scale: float, gamma_attn: float, gamma_norm: float):
    """One BCU step's change of the context, `-grad_c ebca_energy` in closed form (the authors' update):
    `(gamma_attn * softmax_queries(s Q K^T)^T Q - gamma_norm * softmax_tokens(||K||^2) K) @ W_k`. [B, tokens, D]"""
    b, n_tokens, inner = key.shape
    q = _heads(_up(query), heads)
    probs = _scores(query, key, heads, scale).softmax(dim=-2)  # over the queries: each token's posterior
    attn_term = (probs.transpose(-1, -2) @ q).transpose(1, 2).reshape(b, n_tokens, inner)
    k = _up(key)
    norm_term = k.pow(2).sum(dim=-1).softmax(dim=-1).unsqueeze(-1) * k
    step = gamma_attn * attn_term - gamma_norm * norm_term
    return (step @ key_weight.detach().to(step.dtype)).to(key.dtype)


# ---------------------------------------------------------------------------------------------- the processors


class EbcaRun:
    """What the processors of one call share: the settings, the loop index (set by `Ebca.before_step`) and the
    context cascaded through the cross-attention layers of the UNet forward in progress (None: none has updated
    it yet, each layer takes the context it is given)."""

    def __init__(self, config: EbcaConfig, n_steps: int):
        self.config, self.n_steps = config, n_steps
        self.index = 0
        self.context: torch.Tensor | None = None
        self.updates = 0  # BCU steps taken in this call (all layers, all forwards)

    def reset(self, *_args) -> None:
        self.context = None

    def context_for(self, given: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            return given
        if self.context.shape != given.shape:
            raise RuntimeError(
                f"ebca: a cross-attention layer got a context of shape {tuple(given.shape)} inside a forward whose "
                f"context has shape {tuple(self.context.shape)}; EBCA supports one text context per UNet call"
            )
        return self.context

    def update(self, attn, hidden_states: torch.Tensor, context: torch.Tensor) -> None:
        gamma_attn, gamma_norm = self.config.gammas(self.index, self.n_steps)
        if self.config.iters == 0 or (gamma_attn == 0 and gamma_norm == 0):
            return
        if hidden_states.ndim != 3:
            raise RuntimeError(f"ebca: cross-attention input of {hidden_states.ndim} dimensions (expected 3)")
        query = attn.to_q(hidden_states)
        for _ in range(self.config.iters):
            key = attn.to_k(context)
            context = context + context_update(
                query, key, attn.to_k.weight, attn.heads, attn.scale, gamma_attn, gamma_norm
            )
            self.updates += 1
        self.context = context


class EbcaProcessor:
    """A cross-attention layer's processor: the layer's previous processor attends with the cascaded context, then
    the context is updated for the next layer."""

    def __init__(self, original, run: EbcaRun):
        self.original, self.run = original, run

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:  # used as self-attention: nothing to update
            return self.original(attn, hidden_states, None, attention_mask, temb, **kwargs)
        if not torch.is_tensor(encoder_hidden_states):
            raise ValueError("ebca needs the text context as one tensor (IP-Adapter's tuple is not supported)")
        context = self.run.context_for(encoder_hidden_states)
        out = self.original(attn, hidden_states, context, attention_mask, temb, **kwargs)
        self.run.update(attn, hidden_states, context)
        return out


def cross_attention_names(unet) -> list[str]:
    """The processor names of `unet`'s cross-attention layers; refuses layers whose query or key EBCA cannot
    rebuild from `to_q` / `to_k` alone (normalised contexts, group or spatial norms, added key/value projections)."""
    from diffusers.models.attention_processor import Attention

    names = []
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and module.is_cross_attention:
            extras = [a for a in ("norm_cross", "group_norm", "spatial_norm", "norm_q", "norm_k", "add_k_proj")
                      if getattr(module, a, None) is not None]  # fmt: skip
            if extras:
                raise ValueError(f"ebca supports plain cross-attention layers; {name} has {', '.join(extras)}")
            names.append(f"{name}.processor")
    if not names:
        raise ValueError("ebca needs a UNet with cross-attention layers")
    return names


class Ebca(Hook):
    """EBCA for one sampling loop: installs the processors at the loop's first step, tells them the loop index
    before each step, and restores the UNet's own processors in `close()` (the loop calls it once it ends). Also a
    context manager for direct use (`with Ebca(unet, config, n_steps): unet(...)`)."""

    def __init__(self, unet, config: EbcaConfig | dict, n_steps: int):
        self.unet, self.run = unet, EbcaRun(as_ebca_config(config), n_steps)
        self.names = cross_attention_names(unet)  # checked before any work
        self.original: dict | None = None
        self.handles: list = []

    def install(self) -> None:
        if self.original is not None:
            return
        self.original = dict(self.unet.attn_processors)
        processors = {k: EbcaProcessor(p, self.run) if k in self.names else p for k, p in self.original.items()}
        self.unet.set_attn_processor(processors)
        # each UNet call starts from the context it is given; the cascaded one is dropped once the call ends
        self.handles = [self.unet.register_forward_pre_hook(self.run.reset),
                        self.unet.register_forward_hook(self.run.reset)]  # fmt: skip

    def before_step(self, state: StepState) -> None:
        self.install()
        self.run.index = state.index

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.original is not None:
            self.unet.set_attn_processor(self.original)
            self.original = None
        self.run.reset()

    def __enter__(self) -> Ebca:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
