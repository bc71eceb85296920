"""`WanDATEPipeline`: Wan 2.1 / 2.2 text-to-video (UMT5 conditioning, a causal video VAE, flow matching) with DATE.

What is adapted: the UMT5 hidden states the transformer cross-attends to (`prompt_embeds`, [B, max_sequence_length,
dim]), the zero padding after each prompt's tokens included: the stock pipeline zeroes the padding and hands the
transformer every position without an attention mask, so every position is conditioning. The negative branch
(`negative_prompt_embeds`) is never moved. As stock, the conditional and unconditional predictions are separate
transformer calls; Wan 2.2's second transformer (`transformer_2`, below `boundary_ratio` of the training
timesteps) and its guidance scale there (`guidance_scale_2`) are taken per step as stock, DATE's update steps
included, and TI2V's per-token timesteps (`expand_timesteps`) likewise.

The reward sees frames of x0_hat (`DATEOptions.reward_frames`, default 4 evenly spaced latent frames), each latent
frame decoded on its own by the Wan VAE as a one-frame clip (exact for the first frame; approximate for later ones,
which the causal VAE would decode with the earlier frames as context), a video's score the mean over its frames.
The output is the stock one: `frames` (`DATEVideoPipelineOutput`) and the `(video,)` tuple.
"""

from __future__ import annotations

import torch
from diffusers import WanPipeline
from diffusers.utils.torch_utils import get_module_execution_device

from date_diffusion.pipelines.adapter import Adapter
from date_diffusion.pipelines.common import DATEPipelineMixin


class WanAdapter(Adapter):
    """Wan: UMT5 tokens, separate guidance branches, 5-D video latents in float32, Wan 2.2's two experts."""

    video_fps = 16  # Wan's examples export at 16 frames per second

    @property
    def module(self) -> torch.nn.Module:
        return self.pipe.transformer if self.pipe.transformer is not None else self.pipe.transformer_2

    def default_size(self) -> int:
        return 480  # the stock call's height (its width is 832: `DATEPipelineMixin.default_image_shape`)

    def check(self, request):
        request = super().check(request)
        pipe, temporal = self.pipe, self.pipe.vae_scale_factor_temporal
        frames = request.num_frames  # as stock: rounded to 4k + 1 frames, height and width to the patch grid
        if frames % temporal != 1:
            frames = frames // temporal * temporal + 1
        patch = self.module.config.patch_size
        h_multiple, w_multiple = pipe.vae_scale_factor_spatial * patch[1], pipe.vae_scale_factor_spatial * patch[2]
        scale_2 = request.guidance_scale_2
        if pipe.config.boundary_ratio is not None and scale_2 is None:
            scale_2 = request.guidance_scale
        pipe._guidance_scale_2, pipe._attention_kwargs = scale_2, request.attention_kwargs
        return request.replace(num_frames=max(frames, 1), height=request.height // h_multiple * h_multiple,
                               width=request.width // w_multiple * w_multiple, guidance_scale_2=scale_2)  # fmt: skip

    def encode(self, request, device):
        tokens, negative = self.encode_prompt(request, device)
        dtype = self.module.dtype
        negative = [negative.to(dtype)] if negative is not None and self.cfg(request) else None
        return self.pack(request, device, [tokens.to(dtype)], negative, [True], ("prompt_embeds",),
                         ("negative_prompt_embeds",), concat_cfg=False)  # fmt: skip

    def latents(self, request, n, dtype, device):
        channels = self.module.config.in_channels  # float32 latents, as stock, whatever the transformer's dtype
        return self.pipe.prepare_latents(n, channels, request.height, request.width, request.num_frames,
                                         torch.float32, device, request.generator, request.latents)  # fmt: skip

    def timesteps(self, request, device, scheduler=None, latents=None):
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        timesteps = super().timesteps(request, device, scheduler)
        scheduler.set_begin_index(0)
        return timesteps

    def boundary(self) -> float | None:
        """Wan 2.2's boundary timestep (`transformer` at and above it, `transformer_2` below); None: one model."""
        ratio = self.pipe.config.boundary_ratio
        return None if ratio is None else ratio * self.pipe.scheduler.config.num_train_timesteps

    def denoiser(self, request, cond, negative: bool = False):
        """The positive branch's denoiser (`negative=True`: the unconditional one, a call of its own as stock)."""
        pipe, boundary = self.pipe, self.boundary()
        dtype = self.module.dtype

        def denoise(x, t, packed):
            (tokens,) = cond.parts(packed, negative=negative)
            model = pipe.transformer if boundary is None or t >= boundary else pipe.transformer_2
            if pipe.config.expand_timesteps:  # TI2V: one timestep per latent token
                timestep = (torch.ones(x.shape[2:], dtype=torch.float32, device=x.device)[:, ::2, ::2] * t).flatten()
                timestep = timestep.unsqueeze(0).expand(x.shape[0], -1)
            else:
                timestep = t.expand(x.shape[0])
            with model.cache_context("uncond" if negative else "cond"):
                return model(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=tokens,
                             attention_kwargs=pipe._attention_kwargs, return_dict=False)[0]  # fmt: skip

        return denoise

    def guidance(self, request, cond, n_steps):
        boundary, scale, scale_2 = self.boundary(), request.guidance_scale, request.guidance_scale_2

        def scale_at(state):  # Wan 2.2: the low-noise expert's scale below the boundary, as stock
            return scale if boundary is None or state.timestep >= boundary else scale_2

        options = {"cfg_scale": scale_at}
        if self.cfg(request):
            options["uncond_denoise"] = self.denoiser(request, cond, negative=True)
        return options

    def _denormalized(self, latents):
        """Model latents -> the VAE's, with the stock arithmetic."""
        vae = self.pipe.vae
        latents = latents.to(get_module_execution_device(vae), dtype=vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
        return latents / inverse_std + mean

    def vae_decode(self, latents):
        """The reward's decoding: each clip decoded frame by frame as `AutoencoderKLWan._decode` does (causal
        cache, first chunk), without its final clamp to [-1, 1], which would zero the reward's gradient wherever it
        holds (the raw decode, as the reward path scores every family's); untiled (the reward's clips are one
        latent frame each)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae, z = self.pipe.vae, self._denormalized(latents)
        hook = getattr(vae, "_hf_hook", None)
        if hook is not None and hasattr(hook, "pre_forward"):  # offload: as `vae.decode`'s forward hook
            hook.pre_forward(vae)
        vae.clear_cache()
        x, frames = vae.post_quant_conv(z), []
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                      first_chunk=i == 0))  # fmt: skip
        out = torch.cat(frames, 2)
        vae.clear_cache()
        return out if vae.config.patch_size is None else unpatchify(out, patch_size=vae.config.patch_size)

    def decode(self, request, latents):
        return self.pipe.vae.decode(self._denormalized(latents), return_dict=False)[0]  # stock (clamped)

    def postprocess(self, request, image, nsfw):
        return self.pipe.video_processor.postprocess_video(image, output_type=request.output_type)


class WanDATEPipeline(DATEPipelineMixin, WanPipeline):
    """Wan text-to-video with Diffusion Adaptive Text Embedding; with no update the output equals `WanPipeline`'s."""

    adapter = WanAdapter

    @property
    def vae_scale_factor(self) -> int:
        """The VAE's spatial scale (what `reward_resolution` counts in), as the image pipelines name it."""
        return self.vae_scale_factor_spatial
