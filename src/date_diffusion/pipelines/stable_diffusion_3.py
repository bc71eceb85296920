"""`StableDiffusion3DATEPipeline`: SD3 (rectified flow, MMDiT) with DATE.

What is adapted: the joint token embeddings (CLIP-L and CLIP-G tokens, padded and concatenated with the T5
tokens: `prompt_embeds`); with `adapt_pooled=True` also the pooled CLIP embedding (`pooled_projections`),
normalised jointly per sample. x0_hat is the flow-matching estimate `x_t - sigma * v`.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

from date_diffusion.pipelines.common import DATEPipelineMixin, pack_conditioning


class StableDiffusion3DATEPipeline(DATEPipelineMixin, StableDiffusion3Pipeline):
    """SD3 with Diffusion Adaptive Text Embedding; with no update the output equals `StableDiffusion3Pipeline`'s."""

    @torch.no_grad()
    def __call__(
        self,
        prompt=None,
        prompt_2=None,
        prompt_3=None,
        height=None,
        width=None,
        num_inference_steps: int = 28,
        guidance_scale: float = 7.0,
        negative_prompt=None,
        negative_prompt_2=None,
        negative_prompt_3=None,
        num_images_per_prompt: int = 1,
        generator=None,
        latents=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        pooled_prompt_embeds=None,
        negative_pooled_prompt_embeds=None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 256,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        date=None,
        reward=None,
        reward_prompt=None,
        save_embeddings=None,
        gradient_checkpointing: bool = False,
        reward_decoder=None,
        adapt_pooled: bool = False,
    ):
        """As `StableDiffusion3Pipeline.__call__` plus `date`, `reward`, `reward_prompt`, `save_embeddings`,
        `gradient_checkpointing`, `reward_decoder` and `adapt_pooled`."""
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(
            prompt,
            prompt_2,
            prompt_3,
            height,
            width,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            negative_prompt_3=negative_prompt_3,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            callback_on_step_end_tensor_inputs=tensor_inputs,
            max_sequence_length=max_sequence_length,
        )
        updating, batch_size, texts = self._date_prepare(
            prompt, prompt_embeds, num_images_per_prompt, date, reward, reward_prompt, None
        )
        self._guidance_scale, self._skip_layer_guidance_scale, self._clip_skip = guidance_scale, 2.8, None
        self._joint_attention_kwargs, self._interrupt = None, False
        device = self._execution_device
        cfg = self.do_classifier_free_guidance
        cond_tokens, uncond_tokens, cond_pooled, uncond_pooled = self.encode_prompt(
            prompt=prompt,
            prompt_2=prompt_2,
            prompt_3=prompt_3,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            negative_prompt_3=negative_prompt_3,
            do_classifier_free_guidance=cfg,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
        )
        latents = self.prepare_latents(
            batch_size * num_images_per_prompt,
            self.transformer.config.in_channels,
            height,
            width,
            cond_tokens.dtype,
            device,
            generator,
            latents,
        )
        kwargs = {}
        if self.scheduler.config.get("use_dynamic_shifting", None):
            seq = (latents.shape[2] // self.transformer.config.patch_size) * (
                latents.shape[3] // self.transformer.config.patch_size
            )
            kwargs["mu"] = calculate_shift(
                seq,
                self.scheduler.config.get("base_image_seq_len", 256),
                self.scheduler.config.get("max_image_seq_len", 4096),
                self.scheduler.config.get("base_shift", 0.5),
                self.scheduler.config.get("max_shift", 1.16),
            )
        self.scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
        self._num_timesteps = len(self.scheduler.timesteps)

        packed = pack_conditioning(
            [cond_tokens, cond_pooled], [uncond_tokens, uncond_pooled] if cfg else None, [True, adapt_pooled]
        )

        def denoise(x, t, cond):
            tokens, pooled = packed.parts(cond)
            return self.transformer(
                hidden_states=x,
                timestep=t.expand(x.shape[0]),
                encoder_hidden_states=tokens,
                pooled_projections=pooled,
                return_dict=False,
            )[0]

        on_step_end = self._step_callback(
            callback_on_step_end,
            tensor_inputs,
            packed,
            ("prompt_embeds", "pooled_prompt_embeds"),
            {"negative_prompt_embeds": uncond_tokens, "negative_pooled_prompt_embeds": uncond_pooled},
        )

        result, traces = self._date_run(
            denoiser=self.transformer,
            denoise=denoise,
            latents=latents,
            cond=packed.cond,
            uncond=packed.uncond,
            guidance_scale=guidance_scale,
            prediction_type="flow",
            date=date,
            updating=updating,
            reward=reward,
            texts=texts,
            generator=generator,
            gradient_checkpointing=gradient_checkpointing,
            reward_decoder=reward_decoder,
            save_embeddings=save_embeddings,
            on_step_end=on_step_end,
            adapt_mask=packed.mask,
            frozen=(self.text_encoder, self.text_encoder_2, self.text_encoder_3),
        )
        if output_type == "latent":
            image = result.latents
        else:
            image = self.vae.decode(self._vae_input(result.latents, self.vae), return_dict=False)[0]
            image = self.image_processor.postprocess(image, output_type=output_type)
        return self._finish(image, traces, texts, return_dict)
