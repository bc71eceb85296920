"""What every DATE pipeline shares around `date_sample`: argument checks, frozen weights, checkpointing, the
baseline guidance hook, per-image direction streams, embedding export and traces. Each model family only
encodes its prompt, prepares latents and timesteps, and says how to call its denoiser and decoder."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import BaseOutput
from safetensors.torch import save_file

from date_diffusion.core.config import DATEConfig
from date_diffusion.sampling.checkpointing import fine_checkpointing
from date_diffusion.sampling.loop import SampleResult, date_sample


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


def pack(*tensors: torch.Tensor) -> torch.Tensor:
    """[B, ...] tensors -> one [B, N] tensor (DATE's per-sample norm then spans all of them)."""
    return torch.cat([t.flatten(1) for t in tensors], dim=1)


def unpack(packed: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Inverse of `pack` for per-sample `shapes` (without the batch dimension); any batch size."""
    out, start = [], 0
    for shape in shapes:
        n = int(torch.tensor(shape).prod()) if shape else 1
        out.append(packed[:, start : start + n].reshape(packed.shape[0], *shape))
        start += n
    return out


@dataclass
class PackedConditioning:
    cond: torch.Tensor  # [B, N]: every per-sample conditioning tensor the denoiser needs, flattened
    uncond: torch.Tensor | None
    mask: torch.Tensor | None  # [1, N]: 1 where DATE adapts; None = everything
    shapes: list[tuple[int, ...]]

    def parts(self, packed: torch.Tensor) -> list[torch.Tensor]:
        return unpack(packed, self.shapes)


def pack_conditioning(cond_parts, uncond_parts, adapted: list[bool]) -> PackedConditioning:
    """Pack the conditioning tensors (tokens, pooled embedding, attention mask, ...) so the loop adapts one tensor;
    `adapted[k]` says whether DATE may move part k (the norm then spans exactly the adapted parts)."""
    cond = pack(*cond_parts)
    uncond = pack(*uncond_parts) if uncond_parts is not None else None
    mask = None
    if not all(adapted):
        mask = torch.cat(
            [
                torch.full((1, p[0].numel()), float(a), dtype=cond.dtype, device=cond.device)
                for p, a in zip(cond_parts, adapted)
            ],
            dim=1,
        )
    return PackedConditioning(cond, uncond, mask, [tuple(p.shape[1:]) for p in cond_parts])


class DATEPipelineMixin:
    """Mixed into a diffusers pipeline class; provides `_date_prepare` and `_date_run`."""

    def _date_prepare(self, prompt, prompt_embeds, num_images_per_prompt, date, reward, reward_prompt, ug_scale):
        """Validate DATE arguments early; returns (updating, batch_size, texts the reward scores against)."""
        if (
            isinstance(prompt, str)
            and not prompt.strip()
            or isinstance(prompt, list)
            and not all(isinstance(p, str) and p.strip() for p in prompt)
        ):
            raise ValueError("`prompt` is empty: give a non-empty text (or `prompt_embeds`)")
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        updating = date is not None and date.rho > 0
        if (updating or ug_scale) and reward is None:
            raise ValueError("`date` and `ug_scale` need a `reward`, e.g. reward=CLIPScoreReward.from_pretrained(...)")
        texts = reward_prompt if reward_prompt is not None else prompt
        if (updating or ug_scale) and texts is None:
            raise ValueError("with `prompt_embeds`, pass `reward_prompt` (the text the reward scores against)")
        texts = [p for p in _as_list(texts, batch_size, "reward_prompt") for _ in range(num_images_per_prompt)]
        return updating, batch_size, texts

    def _step_callback(self, callback, tensor_inputs, packed: PackedConditioning | None, names=(), fixed=None):
        """diffusers' `callback_on_step_end` over the loop's tensors: the current conditioning is unpacked into
        the family's names (e.g. prompt_embeds, add_text_embeds); `fixed` adds tensors that never change."""
        if callback is None:
            return None

        def on_step_end(i, t, tensors):
            available = {"latents": tensors["latents"], **(fixed or {})}
            if packed is not None:
                available.update(zip(names, packed.parts(tensors["prompt_embeds"])))
            else:
                available["prompt_embeds"] = tensors["prompt_embeds"]
            return callback(self, i, t, {k: available[k] for k in tensor_inputs})

        return on_step_end

    def _finish(self, image, traces, texts, return_dict: bool, nsfw=None):
        self.maybe_free_model_hooks()
        if not return_dict:
            return image, nsfw, traces
        return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces, prompts=texts)

    @staticmethod
    def _vae_input(latents: torch.Tensor, decoder) -> torch.Tensor:
        """Model latents -> what `decoder.decode` takes (scaling factor, and SDXL's / SD3's mean, std or shift)."""
        cfg = decoder.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            view = (1, len(mean), 1, 1)
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(view)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(view)
            return latents * std / cfg.scaling_factor + mean
        return latents / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)

    def _decode_for_reward(self, x0_latents: torch.Tensor, decoder=None) -> torch.Tensor:
        # The reference scores the raw decode, not clamped to [0, 1].
        decoder = decoder or self.vae
        image = decoder.decode(self._vae_input(x0_latents.to(decoder.dtype), decoder)).sample
        return image.float() / 2 + 0.5

    def _date_run(
        self,
        *,
        denoiser,
        denoise,
        latents,
        cond,
        uncond,
        guidance_scale: float,
        prediction_type: str,
        date: DATEConfig | None,
        updating: bool,
        reward,
        texts,
        generator,
        step_kwargs=None,
        ug_scale=None,
        ug_every: int = 1,
        gradient_checkpointing: bool = False,
        reward_decoder=None,
        to_image=None,
        save_embeddings=None,
        on_step_end=None,
        adapt_mask=None,
        timesteps=None,
        pre_step=None,
        frozen=(),
    ) -> tuple[SampleResult, list[dict]]:
        """Freeze, set up decoding/reward/guidance, run the loop; returns the result and per-image traces.

        `denoiser`: the model module (for checkpointing); `to_image(x0_latents) -> latents the VAE decodes`
        for families whose latents are packed (FLUX); `frozen`: every other module to freeze."""
        for module in (denoiser, self.vae, reward, reward_decoder, *frozen):
            if module is not None:
                module.requires_grad_(False)
        # the denoiser's own switch already checkpoints each resnet / attention; the decoders and the reward
        # are checkpointed unit by unit (see sampling/checkpointing.py). Both act only where gradients are.
        switch_denoiser = (
            gradient_checkpointing
            and getattr(denoiser, "_supports_gradient_checkpointing", False)
            and not denoiser.is_gradient_checkpointing
        )
        if switch_denoiser:
            denoiser.enable_gradient_checkpointing()
        fine = (
            fine_checkpointing(getattr(self.vae, "decoder", None), reward_decoder, reward)
            if gradient_checkpointing
            else nullcontext()
        )

        def decode(x0_latents):
            return self._decode_for_reward(to_image(x0_latents) if to_image else x0_latents, reward_decoder)

        def score(images):
            return reward(images, texts)

        guide = None
        if ug_scale:
            from date_diffusion.sampling.guidance import universal_guidance

            guide = universal_guidance(
                scheduler=self.scheduler,
                denoise=denoise,
                decode=decode,
                reward=score,
                uncond_embeds=uncond,
                guidance_scale=guidance_scale,
                scale=ug_scale,
                every=ug_every,
                prediction_type=prediction_type,
            )
        # the random-direction ablation draws from its own stream per image, never the sampler's noise
        direction_gens = None
        if isinstance(generator, list):
            direction_gens = [torch.Generator().manual_seed(g.initial_seed() + 0x5EED) for g in generator]
        try:
            n_steps = len(self.scheduler.timesteps if timesteps is None else timesteps)
            with fine, self.progress_bar(total=n_steps) as bar:
                result = date_sample(
                    scheduler=self.scheduler,
                    denoise=denoise,
                    latents=latents,
                    cond_embeds=cond,
                    uncond_embeds=uncond,
                    guidance_scale=guidance_scale,
                    prediction_type=prediction_type,
                    date=date if updating else None,
                    decode=decode,
                    reward=score,
                    step_kwargs=step_kwargs,
                    keep_history=save_embeddings is not None,
                    on_step_end=on_step_end,
                    progress=bar.update,
                    guide=guide,
                    generators=direction_gens,
                    adapt_mask=adapt_mask,
                    timesteps=timesteps,
                    pre_step=pre_step,
                )
        finally:
            if switch_denoiser:
                denoiser.disable_gradient_checkpointing()
        if save_embeddings is not None:
            tensors = {"original": cond, "final": result.embeds}
            tensors.update({f"step_{i:04d}": e for i, e in (result.embeds_history or {}).items()})
            Path(save_embeddings).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(save_embeddings))
        decoder_name = "vae" if reward_decoder is None else f"{type(reward_decoder).__name__} (approximate)"
        traces = [{**t.to_dict(), "reward_decoder": decoder_name} for t in result.traces]
        return result, traces
