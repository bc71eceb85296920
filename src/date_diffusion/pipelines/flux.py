"""`FluxDATEPipeline`: FLUX (guidance-distilled rectified flow) with DATE.

What is adapted: the T5 token embeddings (`prompt_embeds`); with `adapt_pooled=True` also the pooled CLIP
embedding, normalised jointly per sample. FLUX-dev has no negative branch by default (guidance is an input of the
model), so x0_hat comes from the single conditional prediction: `x_t - sigma * v` on the packed latents, which
are unpacked before the VAE decodes them for the reward.

True CFG (`true_cfg_scale > 1` with a negative prompt or negative embeddings) is computed as the stock pipeline
computes it: two separate transformer calls per step, the positive one first, the negative one with its own
pooled embedding, text ids and IP-Adapter embeddings, combined `neg + true_cfg_scale * (pos - neg)`. DATE adapts
the positive conditioning only (as under classifier-free guidance elsewhere) and the reward's x0_hat comes from
the combined prediction. Callbacks see `prompt_embeds` (the positive one) as in stock.

IP-Adapter (`ip_adapter_image(_embeds)`, `negative_ip_adapter_image(_embeds)`) as stock: the embeddings are
prepared by the stock `prepare_ip_adapter_image_embeds` (a black image stands in for a missing positive or
negative one) and carried, fixed, with their branch: the positive ones as parts of the packed conditioning DATE
never moves, the negative ones (which only matter, and are only prepared, under true CFG) beside the negative
branch's text ids.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxPipeline

from date_diffusion.editing.interface import EditingMixin
from date_diffusion.pipelines.common import DATEPipelineMixin


class FluxDATEPipeline(DATEPipelineMixin, EditingMixin, FluxPipeline):
    """FLUX with Diffusion Adaptive Text Embedding; with no update the output equals `FluxPipeline`'s."""

    _date_has_pooled = True
    _date_latents_first = True
    _date_negative_branch = False  # a negative prompt acts only with `true_cfg_scale > 1`
    _date_true_cfg = False

    def _date_check_inputs(self, call):
        super()._date_check_inputs(call)
        negative = call.negative_prompt is not None or (
            call.negative_prompt_embeds is not None and call.negative_pooled_prompt_embeds is not None
        )
        self._date_true_cfg = call.true_cfg_scale > 1 and negative
        given = call.prompt_embeds, call.negative_prompt_embeds
        if self._date_true_cfg and None not in given and given[0].shape != given[1].shape:  # the stock check
            raise ValueError(
                "`prompt_embeds` and `negative_prompt_embeds` must have the same shape when passed directly, but"
                f" got: `prompt_embeds` {given[0].shape} != `negative_prompt_embeds` {given[1].shape}."
            )

    def _date_cfg(self) -> bool:
        return self._date_true_cfg  # guidance is an input of the model; true CFG is the only negative branch

    def _date_no_cfg_reason(self, guidance_scale: float) -> str:
        return "FLUX's true CFG runs with true_cfg_scale above 1 and a negative prompt"

    def _date_cfg_at(self, guidance_scale: float, negative: bool, true_cfg_scale: float) -> bool:
        return true_cfg_scale > 1 and negative

    def _date_guidance_input(self) -> tuple[bool, str]:
        """FLUX.1-dev's transformer takes the guidance scale as an input; FLUX.1-schnell's does not."""
        name = type(self.transformer).__name__
        if self.transformer.config.guidance_embeds:
            return True, f"{name} takes the guidance scale as its guidance input"
        return False, f"{name} has no guidance input (guidance_embeds false)"

    def _date_encode(self, call, options, device):
        tokens, pooled, text_ids = self._date_encode_prompt(call, device)
        negative, negative_ids = None, None
        if self._date_cfg():
            neg_tokens, neg_pooled, negative_ids = self.encode_prompt(
                prompt=call.negative_prompt,
                prompt_2=call.negative_prompt_2,
                prompt_embeds=call.negative_prompt_embeds,
                pooled_prompt_embeds=call.negative_pooled_prompt_embeds,
                device=device,
                num_images_per_prompt=call.num_images_per_prompt,
                max_sequence_length=call.max_sequence_length,
                lora_scale=self._date_lora_scale(call),
            )
            negative = [neg_tokens, neg_pooled]
        names = ("prompt_embeds", "pooled_prompt_embeds")
        cond = self._date_pack(call, device, [tokens, pooled], negative, [True, options.adapt_pooled], names, None,
                               concat_cfg=False)  # fmt: skip
        # the text tokens' positions (and the negative branch's image embeddings, whose batch may differ from its
        # text's: stock broadcasts one negative prompt): inputs of the transformer, never adapted
        cond.extras.update(txt_ids=text_ids, negative_txt_ids=negative_ids)
        if negative is not None:
            cond.extras["negative_images"] = self._date_ip_branch(call, device, tokens.shape[0], negative=True)
        return cond

    def _date_ip_adapter_embeds(self, call, device, n):
        """The positive branch's parts; the negative branch's embeddings go with its text ids (`_date_encode`)."""
        return self._date_ip_branch(call, device, n, negative=False), None

    def _date_ip_branch(self, call, device, n, negative: bool) -> list:
        """One branch's IP-Adapter embeddings as stock prepares them (a black image where only the other branch
        has an image or embeddings); [] where neither has."""
        own, other = ("negative_", "") if negative else ("", "negative_")
        image, embeds = getattr(call, f"{own}ip_adapter_image"), getattr(call, f"{own}ip_adapter_image_embeds")
        given = image is not None or embeds is not None
        other_given = any(getattr(call, f"{other}ip_adapter_image{kind}") is not None for kind in ("", "_embeds"))
        if not (given or other_given):
            return []
        if not given:
            n_adapters = self.transformer.encoder_hid_proj.num_ip_adapters
            image = [np.zeros((call.width, call.height, 3), dtype=np.uint8)] * n_adapters  # stock's stand-in
        return self.prepare_ip_adapter_image_embeds(image, embeds, device, n)

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

    def _date_timesteps(self, call, device, scheduler=None, latents=None):
        scheduler = self.scheduler if scheduler is None else scheduler
        steps = call.num_inference_steps
        sigmas = np.linspace(1.0, 1 / steps, steps) if call.sigmas is None else call.sigmas
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        if latents is not None:  # the packed latents' sequence length, as stock reads it
            seq_len = latents.shape[1]
        else:  # the same from the size, as stock `prepare_latents` packs it
            seq_len = (int(call.height) // (self.vae_scale_factor * 2)) * (
                int(call.width) // (self.vae_scale_factor * 2)
            )
        mu = self._date_flow_shift(scheduler, seq_len, max_shift=1.15)
        return super()._date_timesteps(call, device, scheduler, sigmas=sigmas, mu=mu)

    def _date_denoise(self, call, cond, negative: bool = False):
        """The positive branch's denoiser (`negative=True`: true CFG's negative one, with its own text ids)."""
        guidance = None
        if self.transformer.config.guidance_embeds:
            n = cond.cond.shape[0]
            guidance = torch.full([1], self._guidance_scale, device=cond.cond.device, dtype=torch.float32).expand(n)
        image_ids = self._date_image_ids(call, cond)
        text_ids = cond.extras["negative_txt_ids" if negative else "txt_ids"]

        def denoise(x, t, packed):
            tokens, pooled, *images = cond.parts(packed, negative=negative)
            images = cond.extras["negative_images"] if negative else images
            kwargs = self.joint_attention_kwargs
            if images:  # the stock pipeline hands them to the transformer in its attention kwargs
                kwargs = {**(kwargs or {}), "ip_adapter_image_embeds": images}
            with self.transformer.cache_context("uncond" if negative else "cond"):
                return self.transformer(
                    hidden_states=x,
                    timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                    guidance=guidance,
                    pooled_projections=pooled,
                    encoder_hidden_states=tokens,
                    txt_ids=text_ids,
                    img_ids=image_ids,
                    joint_attention_kwargs=kwargs,
                    return_dict=False,
                )[0]

        return denoise

    def _date_guidance(self, call, cond, n_steps):
        if not self._date_cfg():
            return {}
        return {"uncond_denoise": self._date_denoise(call, cond, negative=True), "cfg_scale": call.true_cfg_scale}

    def _date_to_vae(self, call, latents):
        return self._unpack_latents(latents, call.height, call.width, self.vae_scale_factor)

    def _date_edit_layout(self, call, latents):
        return self._pack_latents(latents, *latents.shape)
