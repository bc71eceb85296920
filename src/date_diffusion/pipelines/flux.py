"""`FluxDATEPipeline`: FLUX (guidance-distilled rectified flow) with DATE.

What is adapted: the T5 tokens (`prompt_embeds`); with `adapt_pooled=True` also the pooled CLIP embedding. No
negative branch by default (guidance is a model input): x0_hat is `x_t - sigma * v` of the conditional prediction,
unpacked for the VAE. True CFG (`true_cfg_scale > 1` with a negative prompt) as stock: two transformer calls per
step, each branch with its own pooled embedding, text ids and IP-Adapter embeddings; DATE adapts the positive one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import FluxPipeline

from date_diffusion.pipelines.adapter import Adapter, lora_scale, packed_flow_timesteps
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.conditioning import PackedConditioning
from date_diffusion.pipelines.true_cfg import TrueCFG


@dataclass
class FluxConditioning(PackedConditioning):
    """The packed parts, and the fixed inputs computed with them (text positions, negative IP-Adapter embeddings)."""

    txt_ids: torch.Tensor | None = None
    negative_txt_ids: torch.Tensor | None = None
    negative_images: list = field(default_factory=list)


class FluxAdapter(TrueCFG, Adapter):
    """FLUX: T5 tokens and the pooled CLIP embedding, packed latents, guidance as an input; true CFG as stock."""

    has_pooled = True
    latents_first = True

    def guidance_input(self) -> tuple[bool, str]:
        """FLUX.1-dev's transformer takes the guidance scale as an input; FLUX.1-schnell's does not."""
        name = type(self.pipe.transformer).__name__
        if self.pipe.transformer.config.guidance_embeds:
            return True, f"{name} takes the guidance scale as its guidance input"
        return False, f"{name} has no guidance input (guidance_embeds false)"

    def encode(self, request, device) -> FluxConditioning:
        r = request
        tokens, pooled, text_ids = self.encode_prompt(request, device)
        negative = negative_ids = None
        if self.cfg(request):
            *negative, negative_ids = self.pipe.encode_prompt(
                prompt=r.negative_prompt, prompt_2=r.negative_prompt_2, prompt_embeds=r.negative_prompt_embeds,
                pooled_prompt_embeds=r.negative_pooled_prompt_embeds, device=device,
                num_images_per_prompt=r.num_images_per_prompt, max_sequence_length=r.max_sequence_length,
                lora_scale=lora_scale(r),
            )  # fmt: skip
        names, adapted = ("prompt_embeds", "pooled_prompt_embeds"), [True, r.options.adapt_pooled]
        packed = self.pack(request, device, [tokens, pooled], negative, adapted, names, concat_cfg=False)
        images = self.ip_branch(request, device, tokens.shape[0], negative=True) if negative is not None else []
        return FluxConditioning(**vars(packed), txt_ids=text_ids, negative_txt_ids=negative_ids,
                                negative_images=images)  # fmt: skip

    def ip_adapter_embeds(self, request, device, n):
        """The positive branch's parts; the negative branch's embeddings go with its text ids (`encode`)."""
        return self.ip_branch(request, device, n, negative=False), None

    def ip_branch(self, request, device, n, negative: bool) -> list:
        """One branch's IP-Adapter embeddings as stock prepares them (a black image where only the other branch
        has an image or embeddings); [] where neither has."""
        r = request
        own = (r.negative_ip_adapter_image, r.negative_ip_adapter_image_embeds)
        other = (r.ip_adapter_image, r.ip_adapter_image_embeds)
        (image, embeds), other = (own, other) if negative else (other, own)
        if image is None and embeds is None:
            if all(v is None for v in other):
                return []
            n_adapters = self.pipe.transformer.encoder_hid_proj.num_ip_adapters
            image = [np.zeros((r.width, r.height, 3), dtype=np.uint8)] * n_adapters  # stock's stand-in
        return self.pipe.prepare_ip_adapter_image_embeds(image, embeds, device, n)

    def latents(self, request, n, dtype, device):
        channels = self.pipe.transformer.config.in_channels // 4
        return self.pipe.prepare_latents(n, channels, request.height, request.width, dtype, device,
                                         request.generator, request.latents)[0]  # fmt: skip

    def timesteps(self, request, device, scheduler=None, latents=None):
        return packed_flow_timesteps(self, request, device, scheduler, latents, use_flow_sigmas=True)

    def denoiser(self, request, cond: FluxConditioning, negative: bool = False):
        """The positive branch's denoiser (`negative=True`: true CFG's negative one, with its own text ids)."""
        pipe, n, dtype, device = self.pipe, cond.cond.shape[0], cond.cond.dtype, cond.cond.device
        guidance = None
        if pipe.transformer.config.guidance_embeds:
            guidance = torch.full([1], pipe._guidance_scale, device=device, dtype=torch.float32).expand(n)
        image_ids = self.image_ids(request, n, device, dtype)
        text_ids = cond.negative_txt_ids if negative else cond.txt_ids

        def denoise(x, t, packed):
            tokens, pooled, *images = cond.parts(packed, negative=negative)
            kwargs = self.attention_kwargs(cond, images, negative)
            with pipe.transformer.cache_context("uncond" if negative else "cond"):
                return pipe.transformer(hidden_states=x, timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                                        guidance=guidance, pooled_projections=pooled, encoder_hidden_states=tokens,
                                        txt_ids=text_ids, img_ids=image_ids, joint_attention_kwargs=kwargs,
                                        return_dict=False)[0]  # fmt: skip

        return denoise

    def image_ids(self, request, n: int, device, dtype):
        """The latent image positions stock prepares for packed latents of the call's size."""
        pipe = self.pipe
        height, width = (2 * (int(side) // (pipe.vae_scale_factor * 2)) for side in (request.height, request.width))
        return pipe._prepare_latent_image_ids(n, height // 2, width // 2, device, dtype)

    def attention_kwargs(self, cond, images: list, negative: bool):
        """One branch's joint attention kwargs as stock hands them over: the call's, with the branch's IP-Adapter
        image embeddings where it has some (`images`: the positive branch's parts; the negative's are `cond`'s)."""
        images, kwargs = cond.negative_images if negative else images, self.pipe.joint_attention_kwargs
        return {**(kwargs or {}), "ip_adapter_image_embeds": images} if images else kwargs

    def to_vae(self, request, latents):
        return self.pipe._unpack_latents(latents, request.height, request.width, self.pipe.vae_scale_factor)

    def from_vae(self, request, latents):
        return self.pipe._pack_latents(latents, *latents.shape)


class FluxDATEPipeline(DATEPipelineMixin, FluxPipeline):
    """FLUX with Diffusion Adaptive Text Embedding; with no update the output equals `FluxPipeline`'s."""

    adapter = FluxAdapter
