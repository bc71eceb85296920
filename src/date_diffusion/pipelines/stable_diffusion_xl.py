"""`StableDiffusionXLDATEPipeline`: SDXL with DATE.

What is adapted: the concatenated token embeddings of both text encoders (`prompt_embeds`, [B, 77, 2048]); with
`adapt_pooled=True` also the pooled embedding of the second encoder (`add_text_embeds`), normalised jointly per
sample. The added time ids travel with them (callbacks may replace them) and are never adapted, as do IP-Adapter
image embeddings. `edit(...)`: edit-friendly DDPM inversion, both branches encoded as generation encodes them.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from date_diffusion.core.vae import decode_dtype, vae_input
from date_diffusion.pipelines.adapter import LEGACY_CALLBACK, Adapter, timestep_cond
from date_diffusion.pipelines.common import DATEPipelineMixin


class StableDiffusionXLAdapter(Adapter):
    """SDXL: two text encoders' tokens, the pooled embedding and the added time ids."""

    deprecated_kwargs = LEGACY_CALLBACK

    has_pooled = True

    def encode(self, request, device):
        pipe, r = self.pipe, request
        tokens, neg_tokens, pooled, neg_pooled = self.encode_prompt(request, device)
        encoder_2 = pipe.text_encoder_2
        projection = int(encoder_2.config.projection_dim if encoder_2 is not None else pooled.shape[-1])

        def time_ids(original, crop, target):
            ids = pipe._get_add_time_ids(original, crop, target, dtype=tokens.dtype,
                                         text_encoder_projection_dim=projection)  # fmt: skip
            return ids.to(device).repeat(tokens.shape[0], 1)

        size = (r.height, r.width)
        ids = neg_ids = time_ids(r.original_size or size, r.crops_coords_top_left, r.target_size or size)
        if r.negative_original_size is not None and r.negative_target_size is not None:
            neg_ids = time_ids(r.negative_original_size, r.negative_crops_coords_top_left, r.negative_target_size)
        names = ("prompt_embeds", "add_text_embeds", "add_time_ids")
        negative_names = ("negative_prompt_embeds", "negative_pooled_prompt_embeds", "negative_add_time_ids")
        negative = [neg_tokens, neg_pooled, neg_ids] if self.cfg(request) else None
        adapted = [True, request.options.adapt_pooled, False]
        return self.pack(request, device, [tokens, pooled, ids], negative, adapted, names, negative_names)

    def timesteps(self, request, device, scheduler=None, latents=None):
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        timesteps = super().timesteps(request, device, scheduler)
        end = request.denoising_end
        if end is not None and isinstance(end, float) and 0 < end < 1:  # as the stock pipeline
            steps = scheduler.config.num_train_timesteps
            cutoff = int(round(steps - end * steps))
            timesteps = timesteps[: len([t for t in timesteps if t >= cutoff])]
        return timesteps

    def denoiser(self, request, cond):
        pipe, guidance_embedding = self.pipe, timestep_cond(self.pipe, cond)

        def denoise(x, t, packed):
            tokens, pooled, ids, *images = cond.parts(packed)  # images: the IP-Adapter embeddings, one per adapter
            added = {"text_embeds": pooled, "time_ids": ids, **({"image_embeds": images} if images else {})}
            return pipe.unet(x, t, encoder_hidden_states=tokens, timestep_cond=guidance_embedding,
                             added_cond_kwargs=added, cross_attention_kwargs=pipe.cross_attention_kwargs,
                             return_dict=False)[0]  # fmt: skip

        return denoise

    def decode(self, request, latents):
        vae = self.pipe.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        if upcast:
            self.pipe.upcast_vae()
        image = vae.decode(vae_input(latents.to(decode_dtype(vae)), vae), return_dict=False)[0]
        if upcast:
            vae.to(dtype=torch.float16)
        return image

    def finish(self, request, image, dtype, device):
        watermark = self.pipe.watermark
        return (watermark.apply_watermark(image) if watermark is not None else image), None


class StableDiffusionXLDATEPipeline(DATEPipelineMixin, StableDiffusionXLPipeline):
    """SDXL with Diffusion Adaptive Text Embedding; stock arguments plus `DATEOptions`'; with no update the output
    equals `StableDiffusionXLPipeline`'s."""

    adapter = StableDiffusionXLAdapter
