"""`StableDiffusion3DATEPipeline`: SD3 (rectified flow, MMDiT) with DATE.

What is adapted: the joint token embeddings (CLIP-L and CLIP-G tokens, padded and concatenated with the T5
tokens: `prompt_embeds`); with `adapt_pooled=True` also the pooled CLIP embedding (`pooled_prompt_embeds`),
normalised jointly per sample. x0_hat is the flow-matching estimate `x_t - sigma * v`.
"""

from __future__ import annotations

from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

from date_diffusion.pipelines.common import DATEPipelineMixin, pack_conditioning


class StableDiffusion3DATEPipeline(DATEPipelineMixin, StableDiffusion3Pipeline):
    """SD3 with Diffusion Adaptive Text Embedding; with no update the output equals `StableDiffusion3Pipeline`'s."""

    _date_has_pooled = True
    _date_latents_first = True
    _date_unsupported = {**DATEPipelineMixin._date_unsupported, "skip_guidance_layers": None}

    def _date_encode(self, call, options, device):
        cfg = self._date_cfg()
        tokens, neg_tokens, pooled, neg_pooled = self._date_encode_prompt(call, device)
        return pack_conditioning(
            [tokens, pooled],
            [neg_tokens, neg_pooled] if cfg else None,
            [True, options.adapt_pooled],
            ("prompt_embeds", "pooled_prompt_embeds"),
            ("negative_prompt_embeds", "negative_pooled_prompt_embeds"),
        )

    def _date_timesteps(self, call, latents, device):
        mu = call.mu
        config = self.scheduler.config
        if config.get("use_dynamic_shifting", None) and mu is None:
            patch = self.transformer.config.patch_size
            seq = (latents.shape[2] // patch) * (latents.shape[3] // patch)
            mu = calculate_shift(
                seq,
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        return super()._date_timesteps(call, latents, device, **({} if mu is None else {"mu": mu}))

    def _date_denoise(self, call, cond):
        def denoise(x, t, packed):
            tokens, pooled = cond.parts(packed)
            return self.transformer(
                hidden_states=x,
                timestep=t.expand(x.shape[0]),
                encoder_hidden_states=tokens,
                pooled_projections=pooled,
                joint_attention_kwargs=self.joint_attention_kwargs,
                return_dict=False,
            )[0]

        return denoise
