"""`StableDiffusionXLDATEPipeline`: SDXL with DATE.

What is adapted: the concatenated token embeddings of both text encoders (`prompt_embeds`, [B, 77, 2048]); with
`adapt_pooled=True` also the pooled embedding of the second encoder (`add_text_embeds`), normalised jointly per
sample. The added time ids travel with them (callbacks may replace them) and are never adapted, as do IP-Adapter
image embeddings (prepared by the stock `prepare_ip_adapter_image_embeds`).

`edit(...)`: edit-friendly DDPM inversion (`editing.interface`), both branches encoded as generation encodes them
(pooled embedding, time ids from the image's size; DATE adapts what it adapts in generation).
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from date_diffusion.editing.interface import EditingMixin
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.reward_path import vae_input


class StableDiffusionXLDATEPipeline(DATEPipelineMixin, EditingMixin, StableDiffusionXLPipeline):
    """SDXL with Diffusion Adaptive Text Embedding; stock arguments plus `DATEOptions`'; with no update the output
    equals `StableDiffusionXLPipeline`'s."""

    _date_has_pooled = True

    def _date_encode(self, call, options, device):
        cfg = self._date_cfg()
        tokens, neg_tokens, pooled, neg_pooled = self._date_encode_prompt(call, device)
        n = tokens.shape[0]
        projection = self.text_encoder_2.config.projection_dim if self.text_encoder_2 is not None else pooled.shape[-1]

        def time_ids(original, crop, target):
            ids = self._get_add_time_ids(
                original, crop, target, dtype=tokens.dtype, text_encoder_projection_dim=int(projection)
            )
            return ids.to(device).repeat(n, 1)

        size = (call.height, call.width)
        ids = time_ids(call.original_size or size, call.crops_coords_top_left, call.target_size or size)
        neg_ids = ids
        if call.negative_original_size is not None and call.negative_target_size is not None:
            neg_ids = time_ids(
                call.negative_original_size, call.negative_crops_coords_top_left, call.negative_target_size
            )
        return self._date_pack(
            call,
            device,
            [tokens, pooled, ids],
            [neg_tokens, neg_pooled, neg_ids] if cfg else None,
            [True, options.adapt_pooled, False],
            ("prompt_embeds", "add_text_embeds", "add_time_ids"),
            ("negative_prompt_embeds", "negative_pooled_prompt_embeds", "negative_add_time_ids"),
        )

    def _date_timesteps(self, call, device, scheduler=None, latents=None):
        scheduler = self.scheduler if scheduler is None else scheduler
        timesteps = super()._date_timesteps(call, device, scheduler)
        end = call.denoising_end
        if end is not None and isinstance(end, float) and 0 < end < 1:  # as the stock pipeline
            steps = scheduler.config.num_train_timesteps
            cutoff = int(round(steps - end * steps))
            timesteps = timesteps[: len([t for t in timesteps if t >= cutoff])]
        return timesteps

    def _date_denoise(self, call, cond):
        timestep_cond = self._date_timestep_cond(cond)

        def denoise(x, t, packed):
            tokens, pooled, ids, *images = cond.parts(packed)  # images: the IP-Adapter embeddings, one per adapter
            added = {"text_embeds": pooled, "time_ids": ids, **({"image_embeds": images} if images else {})}
            return self.unet(
                x,
                t,
                encoder_hidden_states=tokens,
                timestep_cond=timestep_cond,
                added_cond_kwargs=added,
                cross_attention_kwargs=self.cross_attention_kwargs,
                return_dict=False,
            )[0]

        return denoise

    def _date_vae_decode(self, call, latents):
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:
            self.upcast_vae()
        vae_dtype = next(iter(self.vae.post_quant_conv.parameters())).dtype
        image = self.vae.decode(vae_input(latents.to(vae_dtype), self.vae), return_dict=False)[0]
        if upcast:
            self.vae.to(dtype=torch.float16)
        return image

    def _date_finish_image(self, call, image, dtype, device):
        return (self.watermark.apply_watermark(image) if self.watermark is not None else image), None
