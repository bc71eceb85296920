"""`QwenImageDATEPipeline`: Qwen-Image (MMDiT over packed latents, rectified flow, a Qwen2.5-VL text encoder) with
DATE.

What is adapted: the conditional text hidden states the transformer reads (`prompt_embeds`): the Qwen2.5-VL last
hidden states of the prompt in its chat template, with the template's first tokens dropped, as stock encodes them.
Their padding mask (`prompt_embeds_mask`) travels with them, packed and never adapted; where every token is real
the transformer gets no mask, as stock hands it none. Padded positions are masked out of attention, so they receive
no gradient and do not move; the update is normalised per sample over all token positions, as for the other
families. There is no pooled embedding. x0_hat is the flow estimate `x_t - sigma * v` of the guided velocity,
unpacked and decoded as a one-frame video by the 3D VAE.

Guidance is stock's true CFG: a negative branch only with `true_cfg_scale > 1` and a negative prompt (or negative
embeddings), a separate transformer call with the negative prompt's own embeddings and mask (never adapted), and
stock's combination: `neg + s * (cond - neg)` rescaled per token to the conditional prediction's norm. At DATE's
update steps the reward's x0_hat is made from that same rescaled output, differentiated through both the
combination and the rescale. `guidance_scale` is an input only of guidance-distilled transformers
(`guidance_embeds`), as stock.

`edit(...)`: none (see `docs/editing.md`): the editor sets each branch's guidance through `guidance_scale`, which
Qwen-Image's transformer does not take; its guidance is `true_cfg_scale` with a negative prompt.
"""

from __future__ import annotations

import torch
from diffusers import QwenImagePipeline

from date_diffusion.pipelines.adapter import Adapter, packed_flow_timesteps
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.true_cfg import TrueCFG


def norm_rescaled_cfg(state, uncond_out, cond_out, scale: float) -> torch.Tensor:
    """Qwen-Image's true CFG as the stock pipeline combines it: `neg + s * (cond - neg)`, rescaled so that each
    token's prediction keeps the conditional prediction's norm (over the channel dimension)."""
    combined = uncond_out + scale * (cond_out - uncond_out)
    cond_norm = torch.norm(cond_out, dim=-1, keepdim=True)
    noise_norm = torch.norm(combined, dim=-1, keepdim=True)
    return combined * (cond_norm / noise_norm)


class QwenImageAdapter(TrueCFG, Adapter):
    """Qwen-Image: Qwen2.5-VL hidden states with their padding mask, packed latents, true CFG with stock's rescale."""

    latents_first = True
    negative_branch = True  # stock's default true_cfg_scale (4) runs true CFG with any negative prompt
    negative_embeds = ("negative_prompt_embeds",)

    def check(self, request):
        # stock `check_inputs` (no shape check between the branches: their lengths may differ); then stock's state
        request = Adapter.check(self, request)
        if self.pipe.transformer.config.guidance_embeds and request.guidance_scale is None:
            raise ValueError("guidance_scale is required for guidance-distilled model.")
        self.pipe._attention_kwargs = request.attention_kwargs if request.attention_kwargs is not None else {}
        return request

    def guidance_input(self) -> tuple[bool, str]:
        name = type(self.pipe.transformer).__name__
        if self.pipe.transformer.config.guidance_embeds:
            return True, f"{name} takes the guidance scale as its guidance input"
        return False, f"{name} has no guidance input (guidance_embeds false)"

    def encode(self, request, device):
        r = request

        def encoded(prompt, embeds, mask):
            tokens, mask = self.pipe.encode_prompt(prompt=prompt, prompt_embeds=embeds, prompt_embeds_mask=mask,
                                                   device=device, num_images_per_prompt=r.num_images_per_prompt,
                                                   max_sequence_length=r.max_sequence_length)  # fmt: skip
            # stock hands the transformer no mask where every token is real; the packed mask is then all ones
            mask = torch.ones(tokens.shape[:2], device=tokens.device) if mask is None else mask
            return [tokens, mask.to(tokens.dtype)]

        positive = encoded(r.prompt, r.prompt_embeds, r.prompt_embeds_mask)
        negative = None
        if self.cfg(request):
            negative = encoded(r.negative_prompt, r.negative_prompt_embeds, r.negative_prompt_embeds_mask)
        names = ("prompt_embeds", "prompt_embeds_mask")
        return self.pack(request, device, positive, negative, [True, False], names, concat_cfg=False)

    def latents(self, request, n, dtype, device):
        channels = self.pipe.transformer.config.in_channels // 4
        return self.pipe.prepare_latents(n, channels, request.height, request.width, dtype, device,
                                         request.generator, request.latents)  # fmt: skip

    def timesteps(self, request, device, scheduler=None, latents=None):
        return packed_flow_timesteps(self, request, device, scheduler, latents)

    def denoiser(self, request, cond, negative: bool = False):
        """The positive branch's denoiser (`negative=True`: true CFG's negative one, with its own mask)."""
        pipe, n, device = self.pipe, cond.cond.shape[0], cond.cond.device
        guidance = None
        if pipe.transformer.config.guidance_embeds:
            guidance = torch.full([1], request.guidance_scale, device=device, dtype=torch.float32).expand(n)
        side = pipe.vae_scale_factor * 2
        shape = (1, int(request.height) // side, int(request.width) // side)

        def denoise(x, t, packed):
            tokens, mask = cond.parts(packed, negative=negative)
            mask = None if bool(mask.all()) else mask.round().long()  # stock: no mask where all tokens are real
            with pipe.transformer.cache_context("uncond" if negative else "cond"):
                return pipe.transformer(hidden_states=x, timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                                        guidance=guidance, encoder_hidden_states_mask=mask,
                                        encoder_hidden_states=tokens, img_shapes=[[shape]] * x.shape[0],
                                        attention_kwargs=pipe.attention_kwargs, return_dict=False)[0]  # fmt: skip

        return denoise

    def guidance(self, request, cond, n_steps):
        options = super().guidance(request, cond, n_steps)
        return {**options, "rule": norm_rescaled_cfg} if options else options

    def to_vae(self, request, latents):
        """Packed latents -> one frame's latents `[B, C, h, w]` (the VAE codes it as a one-frame video)."""
        return self.pipe._unpack_latents(latents, request.height, request.width, self.pipe.vae_scale_factor)[:, :, 0]

    def from_vae(self, request, latents):
        return self.pipe._pack_latents(latents, *latents.shape)


class QwenImageDATEPipeline(DATEPipelineMixin, QwenImagePipeline):
    """Qwen-Image with Diffusion Adaptive Text Embedding; with no update the output equals `QwenImagePipeline`'s."""

    adapter = QwenImageAdapter
