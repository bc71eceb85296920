"""`SanaDATEPipeline`: SANA (linear-attention DiT, Gemma2 text encoder, DC-AE, flow matching) with DATE.

What is adapted: the Gemma2 hidden states the transformer reads (`prompt_embeds`: the prompt's tokens after the
complex human instruction, as the stock `encode_prompt` selects them: the first token and the last
`max_sequence_length - 1`). Their attention mask travels with them, packed and never adapted, so padding stays
masked (it receives no gradient and does not move). The negative prompt's embedding and mask are never adapted.
x0_hat is the flow estimate `x_t - sigma * v` of the guided prediction (learned-sigma outputs: their first half,
as stock), decoded by the DC-AE.

As stock: aspect-ratio bins by the transformer's sample size (a sample size without bins, as only tiny test models
have, samples at the requested size where the stock pipeline raises), latents in float32 whatever the model's
dtype (float64 in a float64 run), the transformer's inputs in its own dtype, `attention_kwargs` (and its LoRA
scale for the text encoder). No editor: SANA ships a multistep DPM-Solver, FlowEdit integrates with Euler steps.
"""

from __future__ import annotations

import torch
from diffusers import SanaPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.pixart import PixArtAlphaAdapter


class SanaAdapter(PixArtAlphaAdapter):
    """SANA: Gemma2 tokens with their attention mask, PixArt's binning with SANA's bins, float32 latents."""

    extra_parameters = {}
    bins = {128: ASPECT_RATIO_4096_BIN, 64: ASPECT_RATIO_2048_BIN, 32: ASPECT_RATIO_1024_BIN, 16: ASPECT_RATIO_512_BIN}

    def default_size(self) -> int:
        """The stock default height (1024 whatever the checkpoint's sample size)."""
        return self.pipe._date_signature.parameters["height"].default

    def check(self, request):
        request = super().check(request)
        self.pipe._attention_kwargs = request.attention_kwargs  # as stock, read by the stock property
        return request

    def encode_prompt(self, request, device):
        scale = (request.attention_kwargs or {}).get("scale", None)  # stock: the LoRA scale of `attention_kwargs`
        given = dict(device=device, do_classifier_free_guidance=self.cfg(request), lora_scale=scale)
        return self.pipe.encode_prompt(**request.stock_args(self.pipe.encode_prompt, **given))

    def latents(self, request, n, dtype, device):
        dtype = torch.promote_types(dtype, torch.float32)  # stock samples in float32 (never lower)
        return super().latents(request, n, dtype, device)

    def denoiser(self, request, cond):
        transformer = self.pipe.transformer
        channels, scale = transformer.config.in_channels, transformer.config.timestep_scale

        def denoise(x, t, packed):
            tokens, mask = cond.parts(packed)
            out = transformer(x.to(transformer.dtype), encoder_hidden_states=tokens.to(transformer.dtype),
                              encoder_attention_mask=mask.round().long(), timestep=t.expand(x.shape[0]) * scale,
                              return_dict=False, attention_kwargs=self.pipe.attention_kwargs)[0]  # fmt: skip
            out = out.to(x.dtype)  # stock: `.float()`, the latents' dtype
            # learned-sigma models predict [v, variance]: DATE and the sampler use the first half, as stock
            return out[:, :channels] if transformer.config.out_channels // 2 == channels else out

        return denoise

    def guidance(self, request, cond, n_steps):
        return {"cfg_scale": request.guidance_scale}  # stock combines with the call's scale, not the property


class SanaDATEPipeline(DATEPipelineMixin, SanaPipeline):
    """SANA with Diffusion Adaptive Text Embedding; with no update the output equals `SanaPipeline`'s."""

    adapter = SanaAdapter
