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

from date_diffusion.editing.interface import EditingMixin
from date_diffusion.pipelines.common import DATEPipelineMixin, pack_conditioning

_BINS = {128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}


class PixArtAlphaDATEPipeline(DATEPipelineMixin, EditingMixin, PixArtAlphaPipeline):
    """PixArt-alpha with Diffusion Adaptive Text Embedding; with no update the output equals the stock one's."""

    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    _date_extra_parameters = {"callback_on_step_end": None, "callback_on_step_end_tensor_inputs": ["latents"]}

    def _date_default_size(self) -> int:
        return self.transformer.config.sample_size * self.vae_scale_factor

    def _date_check_inputs(self, call):
        call.requested_size = (call.height, call.width)
        # as the stock pipeline, except that a model without aspect-ratio bins (sample sizes other than 32, 64
        # and 128, where the stock pipeline raises) samples at the requested size
        call.use_resolution_binning = call.use_resolution_binning and self.transformer.config.sample_size in _BINS
        if call.use_resolution_binning:
            call.height, call.width = self.image_processor.classify_height_width_bin(
                call.height, call.width, ratios=_BINS[self.transformer.config.sample_size]
            )
        super()._date_check_inputs(call)

    def _date_encode(self, call, options, device):
        cfg = self._date_cfg()
        tokens, mask, neg_tokens, neg_mask = self._date_encode_prompt(call, device)
        # the attention mask is carried with the tokens, never adapted
        return pack_conditioning(
            [tokens, mask.to(tokens.dtype)],
            [neg_tokens, neg_mask.to(tokens.dtype)] if cfg else None,
            [True, False],
            ("prompt_embeds", "prompt_attention_mask"),
            ("negative_prompt_embeds", "negative_prompt_attention_mask"),
        )

    def _date_denoise(self, call, cond):
        channels = self.transformer.config.in_channels
        added = {"resolution": None, "aspect_ratio": None}
        if self.transformer.config.sample_size == 128:
            dtype, device = cond.cond.dtype, cond.cond.device
            added["resolution"] = torch.tensor([call.height, call.width], dtype=dtype, device=device)
            added["aspect_ratio"] = torch.tensor([float(call.height / call.width)], dtype=dtype, device=device)

        def denoise(x, t, packed):
            tokens, mask = cond.parts(packed)
            size = {k: v if v is None else v.repeat(x.shape[0], 1) for k, v in added.items()}
            timestep = (t[None] if t.dim() == 0 else t).to(x.device).expand(x.shape[0])
            out = self.transformer(
                x,
                encoder_hidden_states=tokens,
                encoder_attention_mask=mask.round().long(),
                timestep=timestep,
                added_cond_kwargs=size,
                return_dict=False,
            )[0]
            # learned-sigma models predict [eps, variance]: DATE and the sampler use eps
            return out[:, :channels] if self.transformer.config.out_channels // 2 == channels else out

        return denoise

    def _date_finish_image(self, call, image, dtype, device):
        if call.use_resolution_binning:  # back to the requested size, as the stock pipeline
            image = self.image_processor.resize_and_crop_tensor(image, call.requested_size[1], call.requested_size[0])
        return image, None

    def _date_edit_call_args(self) -> dict:
        return {"use_resolution_binning": False}  # an edit keeps the image's size
