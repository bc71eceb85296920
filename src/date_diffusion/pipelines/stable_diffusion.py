"""`StableDiffusionDATEPipeline`: diffusers' Stable Diffusion 1.x/2.x pipeline with DATE sampling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import BaseOutput
from safetensors.torch import save_file

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.prediction import PREDICTION_TYPES
from date_diffusion.rewards.base import Reward
from date_diffusion.sampling.loop import date_sample


@dataclass
class DATEPipelineOutput(BaseOutput):
    """images: as diffusers (PIL list, numpy or tensor); traces: one dict per image (see `Trace`)."""

    images: list | object
    nsfw_content_detected: list[bool] | None
    traces: list[dict]
    prompts: list[str]


def _as_list(x, n: int, name: str) -> list:
    if x is None or isinstance(x, str):
        return [x] * n
    if len(x) != n:
        raise ValueError(f"`{name}` has {len(x)} entries but `prompt` has {n}; give one per prompt or a single one")
    return list(x)


class StableDiffusionDATEPipeline(StableDiffusionPipeline):
    """Stable Diffusion with Diffusion Adaptive Text Embedding.

    Loads like the stock pipeline (`from_pretrained(id_or_path)`, or `from_pipe(existing_pipeline)`) and takes
    the stock arguments, plus `date=DATEConfig(...)` and `reward=...`. With `date=None` (or `rho=0`, or no
    update index in the run) the output equals `StableDiffusionPipeline` for the same inputs.
    """

    def _decode_for_reward(self, x0_latents: torch.Tensor, decoder=None) -> torch.Tensor:
        # The reference scores the raw decode, not clamped to [0, 1].
        decoder = decoder or self.vae
        image = decoder.decode(x0_latents.to(decoder.dtype) / decoder.config.scaling_factor).sample
        return image.float() / 2 + 0.5

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
    ):
        """Arguments as `StableDiffusionPipeline.__call__`, plus:

        date: DATE settings; None samples with fixed embeddings.
        reward: the score DATE raises (e.g. `CLIPScoreReward`); required when `date` updates.
        reward_prompt: text the reward scores against (default: `prompt`); needed with `prompt_embeds`.
        save_embeddings: a .safetensors path for the original, final and per-update embeddings.
        ug_scale, ug_every: baseline data-space reward guidance (`sampling.guidance.universal_guidance`) with
            this scale at every `ug_every`-th loop index; uses `reward`, keeps the embedding fixed.
        gradient_checkpointing: recompute UNet and VAE-decoder activations during the backward pass of update
            steps instead of storing them (less memory, a little more time; normal steps are unaffected).
        reward_decoder: APPROXIMATE path: decode x0_hat for the reward with this decoder (e.g. diffusers'
            `AutoencoderTiny`/TAESD, or the toy world's distilled tiny decoder) instead of the VAE. The final
            image is still decoded by the VAE. Traces record `reward_decoder`.
        """
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(prompt, height, width, None, negative_prompt, prompt_embeds, negative_prompt_embeds,
                          None, None, tensor_inputs)  # fmt: skip
        if isinstance(prompt, str) and not prompt.strip() or isinstance(prompt, list) and not all(
            isinstance(p, str) and p.strip() for p in prompt
        ):
            raise ValueError("`prompt` is empty: give a non-empty text (or `prompt_embeds`)")
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type {prediction_type!r} is not supported; use one of "
                             f"{PREDICTION_TYPES}")  # fmt: skip
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        n_images = batch_size * num_images_per_prompt
        updating = date is not None and date.rho > 0
        if (updating or ug_scale) and reward is None:
            raise ValueError("`date` and `ug_scale` need a `reward`, e.g. reward=CLIPScoreReward.from_pretrained(...)")
        texts = reward_prompt if reward_prompt is not None else prompt
        if (updating or ug_scale) and texts is None:
            raise ValueError("with `prompt_embeds`, pass `reward_prompt` (the text the reward scores against)")
        texts = [p for p in _as_list(texts, batch_size, "reward_prompt") for _ in range(num_images_per_prompt)]

        self._guidance_scale = guidance_scale
        self._guidance_rescale = 0.0
        self._clip_skip = None
        self._cross_attention_kwargs = None
        self._interrupt = False
        device = self._execution_device
        cond, uncond = self.encode_prompt(
            prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        )  # fmt: skip
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(n_images, self.unet.config.in_channels, height, width, cond.dtype, device,
                                       generator, latents)  # fmt: skip
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            scale = torch.tensor(guidance_scale - 1).repeat(n_images)
            timestep_cond = self.get_guidance_scale_embedding(
                scale, embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)
        self._num_timesteps = len(timesteps)

        for module in (self.unet, self.vae, self.text_encoder, reward, reward_decoder):
            if module is not None:
                module.requires_grad_(False)
        checkpointed = [m for m in (self.unet, self.vae, reward_decoder) if gradient_checkpointing and m is not None
                        and getattr(m, "_supports_gradient_checkpointing", False) and not m.is_gradient_checkpointing]  # fmt: skip
        for m in checkpointed:
            m.enable_gradient_checkpointing()  # active only where gradients are, i.e. inside update steps

        def denoise(x, t, embeds):
            return self.unet(x, t, encoder_hidden_states=embeds, timestep_cond=timestep_cond,
                             return_dict=False)[0]  # fmt: skip

        def score(images):
            return reward(images, texts)

        def decode(x0_latents):
            return self._decode_for_reward(x0_latents, reward_decoder)

        def on_step_end(i, t, tensors):
            if callback_on_step_end is None:
                return None
            available = {**tensors, "negative_prompt_embeds": uncond}
            out = callback_on_step_end(self, i, t, {k: available[k] for k in tensor_inputs})
            return out

        guide = None
        if ug_scale:
            from date_diffusion.sampling.guidance import universal_guidance

            guide = universal_guidance(
                scheduler=self.scheduler, denoise=denoise, decode=decode, reward=score,
                uncond_embeds=uncond if self.do_classifier_free_guidance else None, guidance_scale=guidance_scale,
                scale=ug_scale, every=ug_every, prediction_type=prediction_type,
            )  # fmt: skip
        # the random-direction ablation draws from its own stream per image, never the sampler's noise
        direction_gens = None
        if isinstance(generator, list):
            direction_gens = [torch.Generator().manual_seed(g.initial_seed() + 0x5EED) for g in generator]
        try:
            with self.progress_bar(total=len(timesteps)) as bar:
                result = date_sample(
                    scheduler=self.scheduler, denoise=denoise, latents=latents, cond_embeds=cond,
                    uncond_embeds=uncond if self.do_classifier_free_guidance else None, guidance_scale=guidance_scale,
                    prediction_type=prediction_type, date=date if updating else None, decode=decode,
                    reward=score, step_kwargs=step_kwargs, keep_history=save_embeddings is not None,
                    on_step_end=on_step_end, progress=bar.update, guide=guide, generators=direction_gens,
                )  # fmt: skip
        finally:
            for m in checkpointed:
                m.disable_gradient_checkpointing()

        if save_embeddings is not None:
            tensors = {"original": cond, "final": result.embeds}
            tensors.update({f"step_{i:04d}": e for i, e in (result.embeds_history or {}).items()})
            Path(save_embeddings).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(save_embeddings))

        nsfw = None
        if output_type == "latent":
            image = result.latents
        else:
            image = self.vae.decode(result.latents / self.vae.config.scaling_factor, return_dict=False,
                                    generator=generator)[0]  # fmt: skip
            image, nsfw = self.run_safety_checker(image, device, cond.dtype)
            denormalize = [True] * image.shape[0] if nsfw is None else [not flagged for flagged in nsfw]
            image = self.image_processor.postprocess(image, output_type=output_type, do_denormalize=denormalize)
        self.maybe_free_model_hooks()
        decoder_name = "vae" if reward_decoder is None else f"{type(reward_decoder).__name__} (approximate)"
        traces = [{**t.to_dict(), "reward_decoder": decoder_name} for t in result.traces]
        if not return_dict:
            return image, nsfw, traces
        return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces, prompts=texts)
