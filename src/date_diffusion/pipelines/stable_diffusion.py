"""`StableDiffusionDATEPipeline`: diffusers' Stable Diffusion 1.x/2.x pipeline with DATE sampling."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from diffusers import StableDiffusionPipeline

from date_diffusion.core.config import DATEConfig
from date_diffusion.pipelines.common import DATEOptions, DATEPipelineMixin, DATEPipelineOutput, pack_conditioning
from date_diffusion.rewards.base import Reward

__all__ = ["DATEPipelineOutput", "StableDiffusionDATEPipeline"]


class StableDiffusionDATEPipeline(DATEPipelineMixin, StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x with Diffusion Adaptive Text Embedding.

    Loads like the stock pipeline (`from_pretrained(id_or_path)`, or `from_pipe(existing_pipeline)`) and takes
    the stock arguments, plus `date=DATEConfig(...)`, `reward=...` (see `DATEOptions`). With `date=None` (or
    `rho=0`, or no update index in the run) the output equals `StableDiffusionPipeline` for the same inputs.
    What is adapted: the text encoder's token embeddings (`prompt_embeds`, [B, 77, 768] for SD 1.x).
    """

    def _date_default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    def _date_encode(self, call, options, device):
        cond, uncond = self._date_encode_prompt(call, device)
        uncond_parts = [uncond] if self._date_cfg() else None
        return pack_conditioning([cond], uncond_parts, [True], ("prompt_embeds",), ("negative_prompt_embeds",))

    def _date_denoise(self, call, cond):
        timestep_cond = self._date_timestep_cond(cond)

        def denoise(x, t, packed):
            (tokens,) = cond.parts(packed)
            return self.unet(
                x,
                t,
                encoder_hidden_states=tokens,
                timestep_cond=timestep_cond,
                cross_attention_kwargs=self.cross_attention_kwargs,
                return_dict=False,
            )[0]

        return denoise

    def _date_finish_image(self, call, image, dtype, device):
        return self.run_safety_checker(image, device, dtype)

    def _date_tuple(self, image, nsfw):
        return (image, nsfw)

    def _date_attend_excite(self, call, options: dict, n_steps: int, cond):
        from date_diffusion.sampling.attend_excite import AttendExcite, noun_token_indices

        options = dict(options)
        prompts = [call.prompt] if isinstance(call.prompt, str) else list(call.prompt)
        indices = options.pop("token_indices", None)
        subjects = options.pop("subjects", None)
        if indices is None:
            if subjects is None:
                raise ValueError("attend_and_excite needs `token_indices` (one list per prompt) or `subjects` (words)")
            indices = [noun_token_indices(self.tokenizer, p, set(subjects)) for p in prompts]
        elif indices and isinstance(indices[0], int):
            indices = [indices]
        if len(indices) != len(prompts):
            raise ValueError(f"attend_and_excite token_indices: {len(indices)} lists for {len(prompts)} prompts")
        per_image = [ind for ind in indices for _ in range(call.num_images_per_prompt)]
        return AttendExcite(self, per_image, n_steps, tokens=lambda packed: cond.parts(packed)[0], **options)

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
        from date_diffusion.editing.ddpm_inversion import inversion_scheduler, invert

        if not 0 <= skip < num_inference_steps:
            raise ValueError(f"skip must be in [0, {num_inference_steps - 1}] (steps not regenerated), got {skip}")
        options = DATEOptions(
            date=date, reward=reward, gradient_checkpointing=gradient_checkpointing, reward_decoder=reward_decoder
        )
        call = SimpleNamespace(prompt=target_prompt, prompt_embeds=None, num_images_per_prompt=1)
        self._date_prepare(call, options)
        device = self._execution_device
        pixels = self.image_processor.preprocess(image).to(device, self.vae.dtype)
        if pixels.shape[0] != len(options.texts):
            raise ValueError(f"got {pixels.shape[0]} images for {len(options.texts)} target prompts")
        x0 = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
        src, src_neg = self.encode_prompt(source_prompt, device, 1, True, negative_prompt)
        tar, tar_neg = self.encode_prompt(target_prompt, device, 1, True, negative_prompt)

        def denoise(x, t, embeds):
            return self.unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]

        sched = inversion_scheduler(self.scheduler.config, num_inference_steps, device)
        inv = invert(denoise, sched, x0, src, src_neg, cfg_src, generator)
        loop = dict(
            scheduler=sched,
            denoise=denoise,
            latents=inv.xts[skip],
            cond_embeds=tar,
            uncond_embeds=tar_neg,
            guidance_scale=cfg_tar,
            prediction_type=self._date_prediction_type(),
            timesteps=inv.timesteps[skip:],
            step_kwargs=lambda i: {"eta": 1.0, "variance_noise": inv.zs[skip + i]},
        )
        result, traces = self._date_run(loop, options, None)
        image = self.vae.decode(result.latents / self.vae.config.scaling_factor).sample
        image = self.image_processor.postprocess(image, output_type=output_type)
        return DATEPipelineOutput(images=image, nsfw_content_detected=None, traces=traces, prompts=options.texts)
