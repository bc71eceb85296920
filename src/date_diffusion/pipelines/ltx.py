"""`LTXDATEPipeline`: LTX-Video text-to-video (T5 conditioning with its attention mask, packed video latents, a
video VAE with latent statistics and, from 0.9.1, timestep-conditioned decoding; flow matching) with DATE.

What is adapted: the T5 hidden states the transformer cross-attends to (`prompt_embeds`, [B, max_sequence_length,
dim]). The attention mask (`prompt_attention_mask`) travels with them, packed and never adapted, so padded tokens
stay masked (they receive no gradient and do not move); the update is normalised per sample over all token
positions, as for PixArt. The negative branch (`negative_prompt_embeds`) is never moved. As stock, the two branches
run as one batched transformer call `[negative; positive]`; the transformer's rotary inputs (latent `num_frames`,
`height`, `width` and `rope_interpolation_scale` from `frame_rate`) and the schedule (the stock sigmas and its
sequence-length shift `mu`) are the stock ones.

The reward sees frames of x0_hat (`DATEOptions.reward_frames`, default 4 evenly spaced latent frames), each latent
frame unpacked, denormalised with the VAE's latent mean and std and decoded on its own as a one-frame clip
(approximate: LTX's decoder is not causal, so even the first frame is decoded without the later ones' context), a
video's score the mean over its frames. A timestep-conditioned VAE decodes the reward's frames as stock decodes the
output, at the call's `decode_timestep` with `decode_noise_scale` of noise mixed in, the noise drawn from a stream
of the reward's own (seed 0, the same at every update) so the call's generator, which the stock decode draws
from, is left as stock leaves it. The output is the stock one: `frames` (`DATEVideoPipelineOutput`, at the call's
`frame_rate`) and the `(video,)` tuple.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import LTXPipeline
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor

from date_diffusion.pipelines.adapter import Adapter, flow_shift
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.pixart import PixArtAlphaAdapter
from date_diffusion.pipelines.wan import WanAdapter


class LTXAdapter(Adapter):
    """LTX-Video: T5 tokens with their attention mask, packed float32 video latents, the VAE's latent statistics."""

    latents_first = True  # as stock: latents, then the schedule
    video_fps = 25  # the stock call's `frame_rate` default (a call's own `frame_rate` is its videos' rate: `fps`)

    def default_size(self) -> int:
        return 512  # the stock call's height (its width is 704: `DATEPipelineMixin.default_image_shape`)

    def fps(self, request) -> int:
        return request.frame_rate

    def check(self, request):
        request = super().check(request)
        pipe = self.pipe
        pipe._attention_kwargs = request.attention_kwargs
        # what the reward's decoding of a timestep-conditioned VAE reads (`vae_decode`), as the stock decode does
        pipe._date_decode = (request.decode_timestep, request.decode_noise_scale)
        return request

    def latent_grid(self, request) -> tuple[int, int, int]:
        """(frames, height, width) of the latent video, as stock computes them."""
        spatial, temporal = self.pipe.vae_spatial_compression_ratio, self.pipe.vae_temporal_compression_ratio
        return (request.num_frames - 1) // temporal + 1, request.height // spatial, request.width // spatial

    encode = PixArtAlphaAdapter.encode  # T5 tokens with their attention mask carried fixed, as PixArt's

    latents = WanAdapter.latents  # float32 video latents, as stock, whatever the transformer's dtype

    def timesteps(self, request, device, scheduler=None, latents=None):
        """The stock schedule: sigmas from 1 to 1/steps, shifted by `mu` of the latent video's sequence length."""
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        frames, height, width = self.latent_grid(request)
        steps = request.num_inference_steps
        mu = flow_shift(scheduler, frames * height * width, max_shift=1.15)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        return super().timesteps(request, device, scheduler, sigmas=sigmas, mu=mu)

    def denoiser(self, request, cond):
        pipe, transformer = self.pipe, self.pipe.transformer
        frames, height, width = self.latent_grid(request)
        spatial = pipe.vae_spatial_compression_ratio
        rope_interpolation_scale = (pipe.vae_temporal_compression_ratio / request.frame_rate, spatial, spatial)

        def denoise(x, t, packed):
            tokens, mask = cond.parts(packed)
            timestep = (t[None] if t.dim() == 0 else t).expand(x.shape[0])
            with transformer.cache_context("cond_uncond"):
                out = transformer(hidden_states=x.to(tokens.dtype), encoder_hidden_states=tokens, timestep=timestep,
                                  encoder_attention_mask=mask, num_frames=frames, height=height, width=width,
                                  rope_interpolation_scale=rope_interpolation_scale,
                                  attention_kwargs=pipe._attention_kwargs, return_dict=False)[0]  # fmt: skip
            return out.float()  # as stock

        return denoise

    def to_vae(self, request, latents):
        pipe = self.pipe
        frames, height, width = self.latent_grid(request)
        return pipe._unpack_latents(latents, frames, height, width, pipe.transformer_spatial_patch_size,
                                    pipe.transformer_temporal_patch_size)  # fmt: skip

    def from_vae(self, request, latents):
        pipe = self.pipe
        return pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)

    def _denormalized(self, latents):
        vae = self.pipe.vae
        return self.pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)

    def vae_decode(self, latents):
        """The reward's decoding of VAE-layout clips `[N, C, F, h, w]`: denormalised, and for a timestep-conditioned
        VAE the stock decode's noise mixing and decode timestep (the call's `decode_timestep` and
        `decode_noise_scale`, per video as stock, repeated over its clips; the noise from the reward's own stream)."""
        vae = self.pipe.vae
        device = get_module_execution_device(vae)
        z = self._denormalized(latents.to(device, vae.dtype))
        if not vae.config.timestep_conditioning:
            return vae.decode(z, None, return_dict=False)[0]
        decode_timestep, noise_scale = getattr(self.pipe, "_date_decode", (0.0, None))
        noise_scale = decode_timestep if noise_scale is None else noise_scale

        def per_clip(value):  # one value per video (stock: per prompt), each repeated over its clips
            values = torch.tensor(value if isinstance(value, list) else [value], device=device, dtype=z.dtype)
            return values.repeat_interleave(z.shape[0] // values.shape[0])

        noise = randn_tensor(z.shape, generator=torch.Generator().manual_seed(0), device=device, dtype=z.dtype)
        scale = per_clip(noise_scale)[:, None, None, None, None]
        return vae.decode((1 - scale) * z + scale * noise, per_clip(decode_timestep), return_dict=False)[0]

    def decode(self, request, latents):
        """The stock decode (`output_type` other than "latent"): unpacked, denormalised, and for a
        timestep-conditioned VAE noise from the call's generator mixed in, decoded at `decode_timestep`."""
        pipe, vae = self.pipe, self.pipe.vae
        device = pipe._execution_device
        dtype = request.prompt_embeds.dtype if request.prompt_embeds is not None else pipe.text_encoder.dtype
        latents = self._denormalized(self.to_vae(request, latents)).to(dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            prompt = request.prompt
            batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else None
            batch_size = request.prompt_embeds.shape[0] if batch_size is None else batch_size
            noise = randn_tensor(latents.shape, generator=request.generator, device=device, dtype=latents.dtype)
            decode_timestep, noise_scale = request.decode_timestep, request.decode_noise_scale
            if not isinstance(decode_timestep, list):
                decode_timestep = [decode_timestep] * batch_size
            if noise_scale is None:
                noise_scale = decode_timestep
            elif not isinstance(noise_scale, list):
                noise_scale = [noise_scale] * batch_size
            timestep = torch.tensor(decode_timestep, device=device, dtype=latents.dtype)
            noise_scale = torch.tensor(noise_scale, device=device, dtype=latents.dtype)[:, None, None, None, None]
            latents = (1 - noise_scale) * latents + noise_scale * noise
        return vae.decode(latents.to(vae.dtype), timestep, return_dict=False)[0]

    def postprocess(self, request, image, nsfw):
        return self.pipe.video_processor.postprocess_video(image, output_type=request.output_type)


class LTXDATEPipeline(DATEPipelineMixin, LTXPipeline):
    """LTX-Video text-to-video with Diffusion Adaptive Text Embedding; with no update the output equals
    `LTXPipeline`'s."""

    adapter = LTXAdapter

    @property
    def vae_scale_factor(self) -> int:
        """The VAE's spatial scale (what `reward_resolution` counts in), as the image pipelines name it."""
        return self.vae_spatial_compression_ratio
