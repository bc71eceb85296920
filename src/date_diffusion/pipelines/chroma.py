"""`ChromaDATEPipeline`: Chroma (a FLUX-like rectified-flow transformer, T5 only, real classifier-free guidance)
with DATE.

What is adapted: the T5 token embeddings the transformer reads (`prompt_embeds`), every position. Their attention
mask (Chroma's: the prompt's tokens and one padding token) travels with them, packed and never adapted, and reaches
the transformer as stock passes it: stock diffusers 0.42 makes it a floating 0/1 mask, which the attention adds to
its logits instead of masking (diffusers issue #12116), so the padding positions take part in attention, receive
gradient and move with the others (a boolean mask passed in as `prompt_attention_mask` masks them, as stock). The
negative prompt's embedding and mask are never adapted. There is no pooled
embedding and no guidance input: guidance is real classifier-free guidance, as stock two transformer calls per
step (conditional first), each branch with its own text ids, mask and IP-Adapter embeddings, combined with the
call's `guidance_scale`. x0_hat is `x_t - sigma * v` of the guided prediction, unpacked for the VAE.

The latents, their packing, the schedule's resolution-dependent shift and the IP-Adapter inputs are FLUX's (the
same stock code); `edit(...)`: FlowEdit, with FlowEdit's SD3 setting (real CFG, as Chroma's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ChromaPipeline

from date_diffusion.pipelines.adapter import Adapter, packed_flow_timesteps
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.flux import FluxAdapter, FluxConditioning
from date_diffusion.pipelines.true_cfg import SeparateNegative


@dataclass
class ChromaConditioning(FluxConditioning):
    """FLUX's, with the dtype each branch's attention mask came in (packed as the tokens' dtype; the transformer
    reads a floating mask as additive and a boolean one as a mask, so it gets each back as it came)."""

    mask_dtype: torch.dtype | None = None
    negative_mask_dtype: torch.dtype | None = None


class ChromaAdapter(SeparateNegative, Adapter):
    """Chroma: T5 tokens with their attention mask, FLUX's packed latents, real CFG as two transformer calls."""

    latents_first = True
    # FLUX's stock code, the same in Chroma's pipeline
    latents, to_vae, from_vae = FluxAdapter.latents, FluxAdapter.to_vae, FluxAdapter.from_vae
    ip_adapter_embeds, ip_branch = FluxAdapter.ip_adapter_embeds, FluxAdapter.ip_branch
    image_ids, attention_kwargs = FluxAdapter.image_ids, FluxAdapter.attention_kwargs

    def check(self, request):
        if request.options.gradient_checkpointing:
            raise ValueError(
                "gradient_checkpointing=True: diffusers' ChromaTransformer2DModel drops the attention mask in its "
                "checkpointed single-stream blocks, so DATE's gradient would be of another function than the one "
                "sampled; use it without gradient_checkpointing"
            )
        return super().check(request)

    def encode(self, request, device) -> ChromaConditioning:
        tokens, text_ids, mask, neg_tokens, neg_ids, neg_mask = self.encode_prompt(request, device)
        negative = [neg_tokens, neg_mask.to(tokens.dtype)] if self.cfg(request) else None
        names = ("prompt_embeds", "prompt_attention_mask")  # stock callbacks see the positive half only
        packed = self.pack(request, device, [tokens, mask.to(tokens.dtype)], negative, [True, False], names,
                           concat_cfg=False)  # fmt: skip
        images = self.ip_branch(request, device, tokens.shape[0], negative=True) if negative is not None else []
        return ChromaConditioning(
            **vars(packed),
            txt_ids=text_ids,
            negative_txt_ids=neg_ids,
            negative_images=images,
            mask_dtype=mask.dtype,
            negative_mask_dtype=neg_mask.dtype if negative else None,
        )

    def timesteps(self, request, device, scheduler=None, latents=None):
        """As stock: FLUX's sigmas and shift `mu` (without FLUX's `use_flow_sigmas` exception)."""
        return packed_flow_timesteps(self, request, device, scheduler, latents)

    def denoiser(self, request, cond: ChromaConditioning, negative: bool = False):
        """The positive branch's denoiser (`negative=True`: the negative one, with its own text ids)."""
        pipe, n, dtype, device = self.pipe, cond.cond.shape[0], cond.cond.dtype, cond.cond.device
        image_ids = self.image_ids(request, n, device, dtype)
        text_ids = cond.negative_txt_ids if negative else cond.txt_ids
        mask_dtype = cond.negative_mask_dtype if negative else cond.mask_dtype

        def denoise(x, t, packed):
            tokens, mask, *images = cond.parts(packed, negative=negative)
            mask = mask.to(mask_dtype) if mask_dtype.is_floating_point else mask.round().to(mask_dtype)
            # stock: the text mask followed by ones for the image tokens
            attention_mask = pipe._prepare_attention_mask(x.shape[0], x.shape[1], x.dtype, mask)
            return pipe.transformer(hidden_states=x, timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                                    encoder_hidden_states=tokens, txt_ids=text_ids, img_ids=image_ids,
                                    attention_mask=attention_mask,
                                    joint_attention_kwargs=self.attention_kwargs(cond, images, negative),
                                    return_dict=False)[0]  # fmt: skip

        return denoise


class ChromaDATEPipeline(DATEPipelineMixin, ChromaPipeline):
    """Chroma with Diffusion Adaptive Text Embedding; with no update the output equals `ChromaPipeline`'s."""

    adapter = ChromaAdapter
