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

    _date_has_pooled = True
    _date_latents_first = True
    _date_negative_branch = False
    _date_unsupported = {
        **DATEPipelineMixin._date_unsupported,
        "true_cfg_scale": 1.0,
        "negative_ip_adapter_image": None,
        "negative_ip_adapter_image_embeds": None,
    }

    def _date_cfg(self) -> bool:
        return False  # guidance is an input of the model (true CFG is not supported with DATE)

    def _date_encode(self, call, options, device):
        tokens, pooled, text_ids = self._date_encode_prompt(call, device)
        cond = pack_conditioning(
            [tokens, pooled], None, [True, options.adapt_pooled], ("prompt_embeds", "pooled_prompt_embeds")
        )
        cond.extras["txt_ids"] = text_ids  # the text tokens' positions: the transformer's input, never adapted
        return cond

    def _date_latents(self, call, n, dtype, device):
        channels = self.transformer.config.in_channels // 4
        latents, _ = self.prepare_latents(
            n, channels, call.height, call.width, dtype, device, call.generator, call.latents
        )
        return latents

    def _date_image_ids(self, call, cond):
        """The latent patches' positions, as the stock `prepare_latents` computes them beside the latents."""
        height, width = (2 * (int(side) // (self.vae_scale_factor * 2)) for side in (call.height, call.width))
        n = cond.cond.shape[0]
        return self._prepare_latent_image_ids(n, height // 2, width // 2, cond.cond.device, cond.cond.dtype)

    def _date_timesteps(self, call, latents, device):
        steps = call.num_inference_steps
        sigmas = np.linspace(1.0, 1 / steps, steps) if call.sigmas is None else call.sigmas
        if getattr(self.scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        config = self.scheduler.config
        mu = calculate_shift(
            latents.shape[1],
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return super()._date_timesteps(call, latents, device, sigmas=sigmas, mu=mu)

    def _date_denoise(self, call, cond):
        guidance = None
        if self.transformer.config.guidance_embeds:
            n = cond.cond.shape[0]
            guidance = torch.full([1], self._guidance_scale, device=cond.cond.device, dtype=torch.float32).expand(n)

        image_ids = self._date_image_ids(call, cond)

        def denoise(x, t, packed):
            tokens, pooled = cond.parts(packed)
            return self.transformer(
                hidden_states=x,
                timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                guidance=guidance,
                pooled_projections=pooled,
                encoder_hidden_states=tokens,
                txt_ids=cond.extras["txt_ids"],
                img_ids=image_ids,
                joint_attention_kwargs=self.joint_attention_kwargs,
                return_dict=False,
            )[0]

        return denoise

    def _date_to_vae(self, call, latents):
        return self._unpack_latents(latents, call.height, call.width, self.vae_scale_factor)
