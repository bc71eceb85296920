"""`StableDiffusion3DATEPipeline`: SD3 (rectified flow, MMDiT) with DATE.

What is adapted: the joint token embeddings (CLIP-L and CLIP-G tokens, padded and concatenated with the T5
tokens: `prompt_embeds`); with `adapt_pooled=True` also the pooled CLIP embedding (`pooled_prompt_embeds`),
normalised jointly per sample. x0_hat is the flow-matching estimate `x_t - sigma * v`.

Skip-layer guidance (`skip_guidance_layers`) is computed as the stock pipeline computes it: under classifier-free
guidance, at loop indices strictly between `num_steps * skip_layer_guidance_start` and `num_steps *
skip_layer_guidance_stop`, one more transformer call on the conditional half with `skip_layers`, and the guided
output becomes `guided + (cond - cond_skipped) * pipe._skip_layer_guidance_scale`. At DATE's update steps the term
is part of the guided output the scheduler takes and of the one DATE differentiates: x0_hat (what the reward
sees) includes it, computed with the embedding being adapted in both conditional calls. (With DATE off the output
equals stock either way.) The one difference from stock: the stock skip-layer call keeps the embeddings encoded
at the start, so a callback that replaces `prompt_embeds` changes the guided branches but not that call; here it
uses the conditioning in use, replaced or adapted.

IP-Adapter image embeddings (`ip_adapter_image`, `ip_adapter_image_embeds`) are prepared by the stock
`prepare_ip_adapter_image_embeds` and carried, fixed, beside the text conditioning, each branch with its half.
(Stock diffusers 0.42 fails with both skip-layer guidance and an IP-Adapter: its skip-layer call gets the
embeddings of both branches for the conditional batch; here it gets the conditional half.)
"""

from __future__ import annotations

from diffusers import StableDiffusion3Pipeline

from date_diffusion.pipelines.adapter import Adapter, flow_shift
from date_diffusion.pipelines.common import DATEPipelineMixin


class StableDiffusion3Adapter(Adapter):
    """SD3: joint CLIP + T5 tokens, the pooled CLIP embedding, an MMDiT; skip-layer guidance as stock."""

    has_pooled = True
    latents_first = True

    def check(self, request):
        request = super().check(request)
        self.pipe._skip_layer_guidance_scale = request.skip_layer_guidance_scale  # as stock, read at every step
        return request

    def encode(self, request, device):
        tokens, neg_tokens, pooled, neg_pooled = self.encode_prompt(request, device)
        names = ("prompt_embeds", "pooled_prompt_embeds")
        negative_names = ("negative_prompt_embeds", "negative_pooled_prompt_embeds")
        negative = [neg_tokens, neg_pooled] if self.cfg(request) else None
        adapted = [True, request.options.adapt_pooled]
        return self.pack(request, device, [tokens, pooled], negative, adapted, names, negative_names)

    def ip_adapter_embeds(self, request, device, n):
        """Stock SD3 prepares one tensor (not a list per adapter), and an image only while the adapter is active."""
        image, embeds = request.ip_adapter_image, request.ip_adapter_image_embeds
        if not ((image is not None and self.pipe.is_ip_adapter_active) or embeds is not None):
            return [], None
        cfg = self.cfg(request)
        prepared = self.pipe.prepare_ip_adapter_image_embeds(image, embeds, device, n, cfg)
        if not cfg:
            return [prepared], None
        negative, positive = prepared.chunk(2)
        return [positive], [negative]

    def timesteps(self, request, device, scheduler=None, latents=None):
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        mu = request.mu
        if scheduler.config.get("use_dynamic_shifting", None) and mu is None:
            patch, scale = self.pipe.transformer.config.patch_size, self.pipe.vae_scale_factor
            if latents is not None:
                height, width = latents.shape[2:]
            else:  # the latents' size, as stock `prepare_latents` makes them
                height, width = (int(side) // scale for side in (request.height, request.width))
            mu = flow_shift(scheduler, (height // patch) * (width // patch), max_shift=1.16)
        return super().timesteps(request, device, scheduler, **({} if mu is None else {"mu": mu}))

    def denoiser(self, request, cond, skip_layers=None):
        pipe = self.pipe

        def denoise(x, t, packed):
            tokens, pooled, *images = cond.parts(packed)
            kwargs = pipe.joint_attention_kwargs
            if images:  # the stock pipeline hands them to the transformer in its attention kwargs
                kwargs = {**(kwargs or {}), "ip_adapter_image_embeds": images[0]}
            skip = {} if skip_layers is None else {"skip_layers": skip_layers}
            return pipe.transformer(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=tokens,
                                    pooled_projections=pooled, joint_attention_kwargs=kwargs, return_dict=False,
                                    **skip)[0]  # fmt: skip

        return denoise

    def guidance(self, request, cond, n_steps):
        layers = request.skip_guidance_layers
        if layers is None:
            return {}
        start, stop = n_steps * request.skip_layer_guidance_start, n_steps * request.skip_layer_guidance_stop
        skipped, pipe = self.denoiser(request, cond, skip_layers=layers), self.pipe

        def skip_layer_guidance(state, x_in, embeds, cond_out):
            if state.uncond is None or not start < state.index < stop:  # stock: under CFG, inside the window
                return None
            return (cond_out - skipped(x_in, state.timestep, embeds)) * pipe._skip_layer_guidance_scale

        return {"extra": skip_layer_guidance}


class StableDiffusion3DATEPipeline(DATEPipelineMixin, StableDiffusion3Pipeline):
    """SD3 with Diffusion Adaptive Text Embedding; with no update the output equals `StableDiffusion3Pipeline`'s."""

    adapter = StableDiffusion3Adapter
