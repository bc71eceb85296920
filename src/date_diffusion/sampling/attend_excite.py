"""Attend-and-Excite (Chefer et al., 2023) as a `before_step` hook of the sampling loop, so it and DATE can run in
one sample.

At loop index i < `max_iter_to_alter` the latents of each image are moved to raise the weakest maximal
cross-attention of the subject tokens (with the iterative refinement at the threshold steps), exactly as
diffusers' (deprecated) `StableDiffusionAttendAndExcitePipeline`, whose attention store, processors and
update steps are reused. The text embedding used is the *current* one, so with DATE the two adapt together.
"""

from __future__ import annotations

import numpy as np
import torch

from date_diffusion.sampling.loop import Hook, StepState


def noun_token_indices(tokenizer, prompt: str, nouns: set[str]) -> list[int]:
    """Indices (in the padded token sequence, BOS = 0) of the tokens that spell one of the subject `nouns`."""
    ids = tokenizer(prompt).input_ids
    tokens = [t.replace("</w>", "") for t in tokenizer.convert_ids_to_tokens(ids)]
    found = [i for i, tok in enumerate(tokens) if tok in nouns]
    if not found:
        raise ValueError(f"no subject noun found in {prompt!r}; pass token_indices explicitly")
    return found


DEFAULT_ATTN_RES = 16  # the side of the cross-attention maps Attend-and-Excite reads unless told (SD 1.x's 16 x 16)


def attention_resolutions(unet) -> list[int]:
    """The sides of the cross-attention maps `unet` makes at its default size (`config.sample_size`): the values
    Attend-and-Excite's `attn_res` can take (any other collects no map, and its loss has nothing to read)."""
    size, down = unet.config.sample_size, list(unet.down_blocks)
    size = size[0] if isinstance(size, (list, tuple)) else size
    sides = {size // 2**i for i, block in enumerate(down) if getattr(block, "has_cross_attention", False)}
    sides |= {size // 2 ** (len(down) - 1 - i) for i, block in enumerate(unet.up_blocks)
              if getattr(block, "has_cross_attention", False)}  # fmt: skip
    if getattr(unet, "mid_block", None) is not None and getattr(unet.mid_block, "has_cross_attention", False):
        sides.add(size // 2 ** (len(down) - 1))
    return sorted(sides)


class AttendExcite(Hook):
    """Moves the latents before each step (`before_step`); `close()` restores the UNet's processors; `losses` holds
    each image's loss per step."""

    def __init__(
        self,
        pipe,
        token_indices: list[list[int]],
        num_loop_steps: int,
        tokens=None,
        max_iter_to_alter: int = 25,
        thresholds: dict | None = None,
        scale_factor: float = 20,
        attn_res=(DEFAULT_ATTN_RES, DEFAULT_ATTN_RES),
    ):
        from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (  # noqa: E501
            AttentionStore,
            StableDiffusionAttendAndExcitePipeline,
        )

        self.unet = pipe.unet
        self.ae = StableDiffusionAttendAndExcitePipeline.from_pipe(pipe)
        self.ae.attention_store = AttentionStore(tuple(attn_res))
        self.original_processors = self.unet.attn_processors
        self.ae.register_attention_control()
        self.indices = token_indices
        self.tokens = tokens or (lambda embeds: embeds)  # the loop's (packed) embeddings -> token embeddings
        self.max_iter = max_iter_to_alter
        self.thresholds = {0: 0.05, 10: 0.5, 20: 0.8} if thresholds is None else thresholds
        self.step_size = scale_factor * np.sqrt(np.linspace(1.0, 0.5, num_loop_steps))
        self.losses: list[list[float]] = [[] for _ in token_indices]

    def close(self):
        self.unet.set_attn_processor(self.original_processors)

    def before_step(self, state: StepState) -> None:
        state.latents = self.excite(state.index, state.timestep, state.latents, state.cond)

    def excite(self, i, t, latents, embeds):
        ae = self.ae
        with torch.enable_grad():
            latents = latents.clone().detach().requires_grad_(True)
            updated = []
            for b, (latent, index, emb) in enumerate(zip(latents, self.indices, self.tokens(embeds))):
                latent, emb = latent.unsqueeze(0), emb.unsqueeze(0).detach()
                # DATE's gradient passes record only part of a forward's attention calls (layers before the
                # first cross-attention do not depend on the embedding): start each readout from a clean count
                ae.attention_store.reset()
                self.unet(latent, t, encoder_hidden_states=emb)  # fills the attention store
                self.unet.zero_grad()
                loss = ae._compute_loss(ae._aggregate_and_get_max_attention_per_token(indices=index))
                if i in self.thresholds and loss > 1.0 - self.thresholds[i]:
                    loss, latent, _ = ae._perform_iterative_refinement_step(
                        latents=latent,
                        indices=index,
                        loss=loss,
                        threshold=self.thresholds[i],
                        text_embeddings=emb,
                        step_size=self.step_size[i],
                        t=t,
                    )
                if i < self.max_iter and loss != 0:
                    latent = ae._update_latent(latents=latent, loss=loss, step_size=self.step_size[i])
                self.losses[b].append(float(loss))
                updated.append(latent)
            return torch.cat(updated, dim=0).detach()
