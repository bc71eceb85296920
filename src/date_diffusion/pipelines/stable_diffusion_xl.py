"""`StableDiffusionXLDATEPipeline`: SDXL with DATE.

What is adapted: the concatenated token embeddings of both text encoders (`prompt_embeds`, [B, 77, 2048]); with
`adapt_pooled=True` also the pooled embedding of the second encoder (`text_embeds`), normalised jointly per
sample. The added time ids are never touched.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from date_diffusion.core.prediction import PREDICTION_TYPES
from date_diffusion.pipelines.common import DATEPipelineMixin, pack_conditioning


class StableDiffusionXLDATEPipeline(DATEPipelineMixin, StableDiffusionXLPipeline):
    """SDXL with Diffusion Adaptive Text Embedding; stock argument names plus `date`, `reward`, ...; with no
    update the output equals `StableDiffusionXLPipeline`'s."""

    @torch.no_grad()
    def __call__(
        self,
        prompt=None,
        prompt_2=None,
        height=None,
        width=None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt=None,
        negative_prompt_2=None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator=None,
        latents=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        pooled_prompt_embeds=None,
        negative_pooled_prompt_embeds=None,
        output_type: str = "pil",
        return_dict: bool = True,
        original_size=None,
        crops_coords_top_left=(0, 0),
        target_size=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        date=None,
        reward=None,
        reward_prompt=None,
        save_embeddings=None,
        ug_scale=None,
        ug_every: int = 1,
        gradient_checkpointing: bool = False,
        reward_decoder=None,
        adapt_pooled: bool = False,
    ):
        """As `StableDiffusionXLPipeline.__call__` plus the DATE arguments of `StableDiffusionDATEPipeline`
        and `adapt_pooled` (also adapt the pooled text embedding)."""
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(
            prompt,
            prompt_2,
            height,
            width,
            None,
            negative_prompt,
            negative_prompt_2,
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            None,
            None,
            tensor_inputs,
        )
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type {prediction_type!r} is not supported")
        updating, batch_size, texts = self._date_prepare(
            prompt, prompt_embeds, num_images_per_prompt, date, reward, reward_prompt, ug_scale
        )
        n_images = batch_size * num_images_per_prompt
        self._guidance_scale, self._guidance_rescale, self._clip_skip = guidance_scale, 0.0, None
        self._cross_attention_kwargs, self._denoising_end, self._interrupt = None, None, False
        device = self._execution_device
        cfg = self.do_classifier_free_guidance
        cond_tokens, uncond_tokens, cond_pooled, uncond_pooled = self.encode_prompt(
            prompt=prompt,
            prompt_2=prompt_2,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=cfg,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(
            n_images, self.unet.config.in_channels, height, width, cond_tokens.dtype, device, generator, latents
        )
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        projection_dim = (
            self.text_encoder_2.config.projection_dim if self.text_encoder_2 is not None else int(cond_pooled.shape[-1])
        )
        time_ids = self._get_add_time_ids(
            original_size,
            crops_coords_top_left,
            target_size,
            dtype=cond_tokens.dtype,
            text_encoder_projection_dim=projection_dim,
        ).to(device)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        self._num_timesteps = len(self.scheduler.timesteps)

        packed = pack_conditioning(
            [cond_tokens, cond_pooled], [uncond_tokens, uncond_pooled] if cfg else None, [True, adapt_pooled]
        )

        def denoise(x, t, cond):
            tokens, pooled = packed.parts(cond)
            added = {"text_embeds": pooled, "time_ids": time_ids.repeat(x.shape[0], 1)}
            return self.unet(x, t, encoder_hidden_states=tokens, added_cond_kwargs=added, return_dict=False)[0]

        on_step_end = self._step_callback(
            callback_on_step_end,
            tensor_inputs,
            packed,
            ("prompt_embeds", "add_text_embeds"),
            {"negative_prompt_embeds": uncond_tokens, "negative_pooled_prompt_embeds": uncond_pooled},
        )

        result, traces = self._date_run(
            denoiser=self.unet,
            denoise=denoise,
            latents=latents,
            cond=packed.cond,
            uncond=packed.uncond,
            guidance_scale=guidance_scale,
            prediction_type=prediction_type,
            date=date,
            updating=updating,
            reward=reward,
            texts=texts,
            generator=generator,
            step_kwargs=step_kwargs,
            ug_scale=ug_scale,
            ug_every=ug_every,
            gradient_checkpointing=gradient_checkpointing,
            reward_decoder=reward_decoder,
            save_embeddings=save_embeddings,
            on_step_end=on_step_end,
            adapt_mask=packed.mask,
            frozen=(self.text_encoder, self.text_encoder_2),
        )
        if output_type == "latent":
            image = result.latents
        else:
            upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
            if upcast:
                self.upcast_vae()
            vae_dtype = next(iter(self.vae.post_quant_conv.parameters())).dtype
            image = self.vae.decode(self._vae_input(result.latents.to(vae_dtype), self.vae), return_dict=False)[0]
            if upcast:
                self.vae.to(dtype=torch.float16)
            if self.watermark is not None:
                image = self.watermark.apply_watermark(image)
            image = self.image_processor.postprocess(image, output_type=output_type)
        return self._finish(image, traces, texts, return_dict)
