"""`StableDiffusionDATEPipeline`: diffusers' Stable Diffusion 1.x/2.x pipeline with DATE sampling."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.prediction import PREDICTION_TYPES
from date_diffusion.pipelines.common import DATEPipelineMixin, DATEPipelineOutput
from date_diffusion.rewards.base import Reward

__all__ = ["DATEPipelineOutput", "StableDiffusionDATEPipeline"]


class StableDiffusionDATEPipeline(DATEPipelineMixin, StableDiffusionPipeline):
    """Stable Diffusion with Diffusion Adaptive Text Embedding.

    Loads like the stock pipeline (`from_pretrained(id_or_path)`, or `from_pipe(existing_pipeline)`) and takes
    the stock arguments, plus `date=DATEConfig(...)` and `reward=...`. With `date=None` (or `rho=0`, or no
    update index in the run) the output equals `StableDiffusionPipeline` for the same inputs.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        date: DATEConfig | None = None,
        reward: Reward | None = None,
        reward_prompt: str | list[str] | None = None,
        save_embeddings: str | Path | None = None,
        ug_scale: float | None = None,
        ug_every: int = 1,
        gradient_checkpointing: bool = False,
        reward_decoder=None,
        attend_and_excite: dict | None = None,
    ):
        """Arguments as `StableDiffusionPipeline.__call__`, plus:

        date: DATE settings; None samples with fixed embeddings.
        reward: the score DATE raises (e.g. `CLIPScoreReward`); required when `date` updates.
        reward_prompt: text the reward scores against (default: `prompt`); needed with `prompt_embeds`.
        save_embeddings: a .safetensors path for the original, final and per-update embeddings.
        ug_scale, ug_every: baseline data-space reward guidance (`sampling.guidance.universal_guidance`) with
            this scale at every `ug_every`-th loop index; uses `reward`, keeps the embedding fixed.
        gradient_checkpointing: recompute UNet, VAE-decoder and reward activations during the backward pass of
            update steps instead of storing them, unit by unit (less memory, a little more time; normal steps
            are unaffected; see `sampling.checkpointing`).
        reward_decoder: APPROXIMATE path: decode x0_hat for the reward with this decoder (e.g. diffusers'
            `AutoencoderTiny`/TAESD, or the toy world's distilled tiny decoder) instead of the VAE. The final
            image is still decoded by the VAE. Traces record `reward_decoder`.
        attend_and_excite: run Attend-and-Excite in the same loop (alone, or with `date`): a dict with
            `token_indices` (one list per prompt, or "auto": the subject nouns), and optionally
            `max_iter_to_alter` (25), `thresholds`, `scale_factor` (20), `attn_res` ((16, 16)).
        """
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(
            prompt,
            height,
            width,
            None,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            None,
            None,
            tensor_inputs,
        )
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"scheduler prediction_type {prediction_type!r} is not supported; use one of {PREDICTION_TYPES}"
            )
        updating, batch_size, texts = self._date_prepare(
            prompt, prompt_embeds, num_images_per_prompt, date, reward, reward_prompt, ug_scale
        )
        n_images = batch_size * num_images_per_prompt

        self._guidance_scale = guidance_scale
        self._guidance_rescale = 0.0
        self._clip_skip = None
        self._cross_attention_kwargs = None
        self._interrupt = False
        device = self._execution_device
        cond, uncond = self.encode_prompt(
            prompt,
            device,
            num_images_per_prompt,
            self.do_classifier_free_guidance,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(
            n_images, self.unet.config.in_channels, height, width, cond.dtype, device, generator, latents
        )
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            scale = torch.tensor(guidance_scale - 1).repeat(n_images)
            timestep_cond = self.get_guidance_scale_embedding(
                scale, embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)
        self._num_timesteps = len(timesteps)

        def denoise(x, t, embeds):
            return self.unet(x, t, encoder_hidden_states=embeds, timestep_cond=timestep_cond, return_dict=False)[0]

        on_step_end = self._step_callback(
            callback_on_step_end, tensor_inputs, None, fixed={"negative_prompt_embeds": uncond}
        )

        pre_step = None
        if attend_and_excite is not None:
            pre_step = self._attend_excite_hook(attend_and_excite, prompt, num_images_per_prompt, len(timesteps))
        try:
            result, traces = self._date_run(
                denoiser=self.unet,
                denoise=denoise,
                latents=latents,
                cond=cond,
                uncond=uncond if self.do_classifier_free_guidance else None,
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
                frozen=(self.text_encoder,),
                pre_step=pre_step,
            )
        finally:
            if pre_step is not None:
                pre_step.close()
        if pre_step is not None:
            for trace, losses in zip(traces, pre_step.losses):
                trace["attend_excite_losses"] = losses

        nsfw = None
        if output_type == "latent":
            image = result.latents
        else:
            image = self.vae.decode(
                result.latents / self.vae.config.scaling_factor, return_dict=False, generator=generator
            )[0]
            image, nsfw = self.run_safety_checker(image, device, cond.dtype)
            denormalize = [True] * image.shape[0] if nsfw is None else [not flagged for flagged in nsfw]
            image = self.image_processor.postprocess(image, output_type=output_type, do_denormalize=denormalize)
        return self._finish(image, traces, texts, return_dict, nsfw)

    def _attend_excite_hook(self, options: dict, prompt, num_images_per_prompt: int, n_steps: int):
        from date_diffusion.sampling.attend_excite import AttendExcite, noun_token_indices

        options = dict(options)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        indices = options.pop("token_indices", "auto")
        if indices == "auto":
            indices = [noun_token_indices(self.tokenizer, p) for p in prompts]
        elif indices and isinstance(indices[0], int):
            indices = [indices]
        if len(indices) != len(prompts):
            raise ValueError(f"attend_and_excite token_indices: {len(indices)} lists for {len(prompts)} prompts")
        per_image = [ind for ind in indices for _ in range(num_images_per_prompt)]
        return AttendExcite(self, per_image, n_steps, **options)

    @torch.no_grad()
    def edit(
        self,
        image,
        source_prompt: str | list[str],
        target_prompt: str | list[str],
        num_inference_steps: int = 100,
        skip: int = 36,
        cfg_src: float = 3.5,
        cfg_tar: float = 15.0,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        date: DATEConfig | None = None,
        reward: Reward | None = None,
        gradient_checkpointing: bool = False,
        reward_decoder=None,
    ) -> DATEPipelineOutput:
        """Text-guided editing of `image` by edit-friendly DDPM inversion, optionally with DATE.

        The image is inverted with `source_prompt` (guidance `cfg_src`) over `num_inference_steps` DDPM steps,
        then regenerated from step `skip` with `target_prompt` (guidance `cfg_tar`), DATE adapting the target
        embedding at its update indices (counted from the first regenerated step). Defaults are the inversion
        paper's (100 steps, skip 36, guidance 3.5 / 15). With `target_prompt == source_prompt`,
        `cfg_tar == cfg_src` and no DATE, the result reconstructs the input.
        """
        if not 0 <= skip < num_inference_steps:
            raise ValueError(f"skip must be in [0, {num_inference_steps - 1}] (steps not regenerated), got {skip}")
        updating, batch_size, texts = self._date_prepare(target_prompt, None, 1, date, reward, None, None)
        device = self._execution_device
        pixels = self.image_processor.preprocess(image).to(device, self.vae.dtype)
        if pixels.shape[0] != batch_size:
            raise ValueError(f"got {pixels.shape[0]} images for {batch_size} target prompts")
        x0 = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
        src, src_neg = self.encode_prompt(source_prompt, device, 1, True, negative_prompt)
        tar, tar_neg = self.encode_prompt(target_prompt, device, 1, True, negative_prompt)
        from date_diffusion.editing.ddpm_inversion import inversion_scheduler, invert

        sched = inversion_scheduler(self, num_inference_steps)
        inv = invert(self, x0, src, src_neg, cfg_src, sched, generator)
        original_scheduler, self.scheduler = self.scheduler, sched
        try:
            result, traces = self._date_run(
                denoiser=self.unet,
                denoise=lambda x, t, e: self.unet(x, t, encoder_hidden_states=e).sample,
                latents=inv.xts[skip],
                cond=tar,
                uncond=tar_neg,
                guidance_scale=cfg_tar,
                prediction_type=self.scheduler.config.get("prediction_type", "epsilon"),
                date=date,
                updating=updating,
                reward=reward,
                texts=texts,
                generator=None,
                timesteps=inv.timesteps[skip:],
                step_kwargs=lambda i: {"eta": 1.0, "variance_noise": inv.zs[skip + i]},
                gradient_checkpointing=gradient_checkpointing,
                reward_decoder=reward_decoder,
                frozen=(self.text_encoder,),
            )
        finally:
            self.scheduler = original_scheduler
        image = self.vae.decode(result.latents / self.vae.config.scaling_factor).sample
        image = self.image_processor.postprocess(image, output_type=output_type)
        return DATEPipelineOutput(images=image, nsfw_content_detected=None, traces=traces, prompts=texts)
