"""`PixArtAlphaDATEPipeline`: PixArt-alpha (DiT with T5 conditioning) with DATE.

What is adapted: the T5 token embeddings (`prompt_embeds`). The attention mask travels with them (packed,
never adapted) so padded tokens stay masked; the update is normalised per sample over all token positions, as
for Stable Diffusion (masked positions receive no gradient, so they do not move).
"""

from __future__ import annotations

import torch
from diffusers import PixArtAlphaPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
    ASPECT_RATIO_256_BIN,
    ASPECT_RATIO_512_BIN,
    ASPECT_RATIO_1024_BIN,
)

from date_diffusion.core.prediction import PREDICTION_TYPES
from date_diffusion.pipelines.common import DATEPipelineMixin, pack_conditioning

_BINS = {128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}


class PixArtAlphaDATEPipeline(DATEPipelineMixin, PixArtAlphaPipeline):
    """PixArt-alpha with Diffusion Adaptive Text Embedding; with no update the output equals the stock one's."""

    @torch.no_grad()
    def __call__(
        self,
        prompt=None,
        negative_prompt: str = "",
        num_inference_steps: int = 20,
        guidance_scale: float = 4.5,
        num_images_per_prompt: int = 1,
        height=None,
        width=None,
        eta: float = 0.0,
        generator=None,
        latents=None,
        prompt_embeds=None,
        prompt_attention_mask=None,
        negative_prompt_embeds=None,
        negative_prompt_attention_mask=None,
        output_type: str = "pil",
        return_dict: bool = True,
        clean_caption: bool = True,
        use_resolution_binning: bool | None = None,
        max_sequence_length: int = 120,
        callback_on_step_end=None,
        date=None,
        reward=None,
        reward_prompt=None,
        save_embeddings=None,
        gradient_checkpointing: bool = False,
        reward_decoder=None,
    ):
        """As `PixArtAlphaPipeline.__call__` plus the DATE arguments. `use_resolution_binning=None` bins when the
        model has bins (sample sizes 32, 64, 128), as the stock default does for released models."""
        sample = self.transformer.config.sample_size
        height = height or sample * self.vae_scale_factor
        width = width or sample * self.vae_scale_factor
        orig_hw = (height, width)
        if use_resolution_binning is None:
            use_resolution_binning = sample in _BINS
        if use_resolution_binning:
            if sample not in _BINS:
                raise ValueError(
                    f"resolution binning needs a transformer sample_size in {sorted(_BINS)}, got "
                    f"{sample}; pass use_resolution_binning=False"
                )
            height, width = self.image_processor.classify_height_width_bin(height, width, ratios=_BINS[sample])
        self.check_inputs(
            prompt,
            height,
            width,
            negative_prompt,
            1,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
        )
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type {prediction_type!r} is not supported")
        updating, batch_size, texts = self._date_prepare(
            prompt, prompt_embeds, num_images_per_prompt, date, reward, reward_prompt, None
        )
        device = self._execution_device
        cfg = guidance_scale > 1.0
        tokens, token_mask, neg_tokens, neg_mask = self.encode_prompt(
            prompt,
            cfg,
            negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt,
            device=device,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask,
            clean_caption=clean_caption,
            max_sequence_length=max_sequence_length,
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        n = batch_size * num_images_per_prompt
        latents = self.prepare_latents(
            n, self.transformer.config.in_channels, height, width, tokens.dtype, device, generator, latents
        )
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        resolution = aspect = None
        if sample == 128:
            resolution = torch.tensor([height, width], dtype=tokens.dtype, device=device)
            aspect = torch.tensor([float(height / width)], dtype=tokens.dtype, device=device)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)

        # the attention mask is carried with the tokens, never adapted
        packed = pack_conditioning(
            [tokens, token_mask.to(tokens.dtype)],
            [neg_tokens, neg_mask.to(tokens.dtype)] if cfg else None,
            [True, False],
        )
        channels = self.transformer.config.in_channels

        def denoise(x, t, cond):
            tok, mask = packed.parts(cond)
            added = {"resolution": None, "aspect_ratio": None}
            if resolution is not None:
                added = {"resolution": resolution.repeat(x.shape[0], 1), "aspect_ratio": aspect.repeat(x.shape[0], 1)}
            timestep = (t[None] if t.dim() == 0 else t).to(x.device).expand(x.shape[0])
            out = self.transformer(
                x,
                encoder_hidden_states=tok,
                encoder_attention_mask=mask.round().long(),
                timestep=timestep,
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
            # learned-sigma models predict [eps, variance]: DATE and the sampler use eps
            return out[:, :channels] if self.transformer.config.out_channels // 2 == channels else out

        result, traces = self._date_run(
            denoiser=self.transformer,
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
            gradient_checkpointing=gradient_checkpointing,
            reward_decoder=reward_decoder,
            save_embeddings=save_embeddings,
            adapt_mask=packed.mask,
            frozen=(self.text_encoder,),
            on_step_end=self._step_callback(callback_on_step_end, ["latents"], None),
        )
        if output_type == "latent":
            image = result.latents
        else:
            image = self.vae.decode(result.latents / self.vae.config.scaling_factor, return_dict=False)[0]
            if use_resolution_binning:
                image = self.image_processor.resize_and_crop_tensor(image, orig_hw[1], orig_hw[0])
            image = self.image_processor.postprocess(image, output_type=output_type)
        return self._finish(image, traces, texts, return_dict)
