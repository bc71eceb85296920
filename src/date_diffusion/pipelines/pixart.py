"""`PixArtAlphaDATEPipeline`: PixArt-alpha (DiT with T5 conditioning) with DATE.

What is adapted: the T5 token embeddings (`prompt_embeds`). The attention mask travels with them (packed,
never adapted) so padded tokens stay masked; the update is normalised per sample over all token positions, as
for Stable Diffusion (masked positions receive no gradient, so they do not move). Besides the stock legacy
`callback`, this pipeline takes diffusers' `callback_on_step_end` as the newer pipelines do.

`edit(...)`: edit-friendly DDPM inversion (`editing.interface`), at the image's own size.
"""

from __future__ import annotations

import torch
from diffusers import PixArtAlphaPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
    ASPECT_RATIO_256_BIN,
    ASPECT_RATIO_512_BIN,
    ASPECT_RATIO_1024_BIN,
)

from date_diffusion.pipelines.adapter import Adapter
from date_diffusion.pipelines.common import DATEPipelineMixin


class PixArtAlphaAdapter(Adapter):
    """PixArt-alpha: T5 tokens with their attention mask, a DiT, aspect-ratio bins."""

    extra_parameters = {"callback_on_step_end": None, "callback_on_step_end_tensor_inputs": ["latents"]}
    deprecated_kwargs = {
        "mask_feature": "The use of `mask_feature` is deprecated. It is no longer used in any computation and that "
        "doesn't affect the end results. It will be removed in a future version."
    }
    request_state = {"requested_size": None}  # the size asked for, where binning samples at another
    edit_arguments = {"use_resolution_binning": False}  # an edit keeps the image's size
    bins = {128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}  # by sample size
    size_conditioned = (128,)  # sample sizes whose transformer takes the resolution and aspect ratio as inputs

    def default_size(self) -> int:
        return self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor

    def check(self, request):
        # as the stock pipeline, except that a model without aspect-ratio bins (sample sizes other than 32, 64
        # and 128, where the stock pipeline raises) samples at the requested size
        sample_size = self.pipe.transformer.config.sample_size
        binning = request.use_resolution_binning and sample_size in self.bins
        size = (request.height, request.width)
        if binning:
            size = self.pipe.image_processor.classify_height_width_bin(*size, ratios=self.bins[sample_size])
        request = request.replace(requested_size=(request.height, request.width), use_resolution_binning=binning,
                                  height=size[0], width=size[1])  # fmt: skip
        return super().check(request)

    def encode(self, request, device):
        tokens, mask, neg_tokens, neg_mask = self.encode_prompt(request, device)
        # the attention mask is carried with the tokens, never adapted
        negative = [neg_tokens, neg_mask.to(tokens.dtype)] if self.cfg(request) else None
        names = ("prompt_embeds", "prompt_attention_mask")
        negative_names = ("negative_prompt_embeds", "negative_prompt_attention_mask")
        return self.pack(request, device, [tokens, mask.to(tokens.dtype)], negative, [True, False], names,
                         negative_names)  # fmt: skip

    def denoiser(self, request, cond):
        transformer = self.pipe.transformer
        channels, added = transformer.config.in_channels, {"resolution": None, "aspect_ratio": None}
        if transformer.config.sample_size in self.size_conditioned:
            dtype, device = cond.cond.dtype, cond.cond.device
            added["resolution"] = torch.tensor([request.height, request.width], dtype=dtype, device=device)
            added["aspect_ratio"] = torch.tensor([float(request.height / request.width)], dtype=dtype, device=device)

        def denoise(x, t, packed):
            tokens, mask = cond.parts(packed)
            size = {k: v if v is None else v.repeat(x.shape[0], 1) for k, v in added.items()}
            timestep = (t[None] if t.dim() == 0 else t).to(x.device).expand(x.shape[0])
            out = transformer(x, encoder_hidden_states=tokens, encoder_attention_mask=mask.round().long(),
                              timestep=timestep, added_cond_kwargs=size, return_dict=False)[0]  # fmt: skip
            # learned-sigma models predict [eps, variance]: DATE and the sampler use eps
            return out[:, :channels] if transformer.config.out_channels // 2 == channels else out

        return denoise

    def finish(self, request, image, dtype, device):
        if request.use_resolution_binning:  # back to the requested size, as the stock pipeline
            height, width = request.requested_size
            image = self.pipe.image_processor.resize_and_crop_tensor(image, width, height)
        return image, None


class PixArtAlphaDATEPipeline(DATEPipelineMixin, PixArtAlphaPipeline):
    """PixArt-alpha with Diffusion Adaptive Text Embedding; with no update the output equals the stock one's."""

    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    adapter = PixArtAlphaAdapter
