"""`FluxDATEPipeline`: FLUX (guidance-distilled rectified flow) with DATE.

What is adapted: the T5 token embeddings (`prompt_embeds`); with `adapt_pooled=True` also the pooled CLIP
embedding, normalised jointly per sample. FLUX-dev has no negative branch (guidance is an input of the
model), so x0_hat comes from the single conditional prediction: `x_t - sigma * v` on the packed latents, which
are unpacked before the VAE decodes them for the reward.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from date_diffusion.pipelines.common import DATEPipelineMixin, pack_conditioning


class FluxDATEPipeline(DATEPipelineMixin, FluxPipeline):
    """FLUX with Diffusion Adaptive Text Embedding; with no update the output equals `FluxPipeline`'s."""

    @torch.no_grad()
    def __call__(
        self,
        prompt=None,
        prompt_2=None,
        height=None,
        width=None,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        num_images_per_prompt: int = 1,
        generator=None,
        latents=None,
        prompt_embeds=None,
        pooled_prompt_embeds=None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 512,
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
        """As `FluxPipeline.__call__` (without true CFG and IP-adapters) plus the DATE arguments."""
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(
            prompt,
            prompt_2,
            height,
            width,
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            callback_on_step_end_tensor_inputs=tensor_inputs,
            max_sequence_length=max_sequence_length,
        )
        updating, batch_size, texts = self._date_prepare(
            prompt, prompt_embeds, num_images_per_prompt, date, reward, reward_prompt, None
        )
        self._guidance_scale, self._joint_attention_kwargs, self._interrupt = guidance_scale, {}, False
        self._current_timestep = None
        device = self._execution_device
        tokens, pooled, text_ids = self.encode_prompt(
            prompt=prompt,
            prompt_2=prompt_2,
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
        )
        latents, image_ids = self.prepare_latents(
            batch_size * num_images_per_prompt,
            self.transformer.config.in_channels // 4,
            height,
            width,
            tokens.dtype,
            device,
            generator,
            latents,
        )
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(self.scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = calculate_shift(
            latents.shape[1],
            self.scheduler.config.get("base_image_seq_len", 256),
            self.scheduler.config.get("max_image_seq_len", 4096),
            self.scheduler.config.get("base_shift", 0.5),
            self.scheduler.config.get("max_shift", 1.15),
        )
        # as diffusers' retrieve_timesteps: with explicit sigmas the step count is not passed
        if sigmas is None:
            self.scheduler.set_timesteps(num_inference_steps, device=device, mu=mu)
        else:
            self.scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
        self._num_timesteps = len(self.scheduler.timesteps)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32).expand(latents.shape[0])

        packed = pack_conditioning([tokens, pooled], None, [True, adapt_pooled])

        def denoise(x, t, cond):
            tok, pool = packed.parts(cond)
            return self.transformer(
                hidden_states=x,
                timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                guidance=guidance,
                pooled_projections=pool,
                encoder_hidden_states=tok,
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]

        def to_image(packed_latents):
            return self._unpack_latents(packed_latents, height, width, self.vae_scale_factor)

        on_step_end = self._step_callback(
            callback_on_step_end, tensor_inputs, packed, ("prompt_embeds", "pooled_prompt_embeds")
        )

        result, traces = self._date_run(
            denoiser=self.transformer,
            denoise=denoise,
            latents=latents,
            cond=packed.cond,
            uncond=None,
            guidance_scale=1.0,
            prediction_type="flow",
            date=date,
            updating=updating,
            reward=reward,
            texts=texts,
            generator=generator,
            gradient_checkpointing=gradient_checkpointing,
            reward_decoder=reward_decoder,
            to_image=to_image,
            save_embeddings=save_embeddings,
            on_step_end=on_step_end,
            adapt_mask=packed.mask,
            frozen=(self.text_encoder, self.text_encoder_2),
        )
        if output_type == "latent":
            image = result.latents
        else:
            image = self.vae.decode(self._vae_input(to_image(result.latents), self.vae), return_dict=False)[0]
            image = self.image_processor.postprocess(image, output_type=output_type)
        return self._finish(image, traces, texts, return_dict)
