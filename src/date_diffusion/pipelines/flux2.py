"""`Flux2DATEPipeline`: FLUX.2 [dev] (guidance-distilled rectified flow, Mistral 3 text encoder) with DATE.

What is adapted: the text tokens the transformer reads (`prompt_embeds`: the hidden states of several Mistral 3
layers, stacked per token). There is no pooled embedding, and no negative branch: the guidance scale is an input
of the transformer (its guidance embedding), so x0_hat is `x_t - sigma * v` of the one conditional prediction,
unpacked with the latents' position ids and de-normalised with the VAE's batch-norm statistics for decoding, as
stock decodes. The text and latent position ids, and the conditioning images' latents (`image`: reference images
the transformer reads beside the sample's tokens), are fixed inputs, never adapted.

`caption_upsample_temperature` rewrites the prompt with the text encoder before encoding, as stock; DATE's reward
still scores the prompt as given.

`Flux2Adapter`'s base, `Flux2Base`, is what FLUX.2 [klein] (`pipelines.flux2_klein`) shares: packed latents with
position ids, the empirical flow shift, conditioning images, the batch-norm latent layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import Flux2Pipeline
from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

from date_diffusion.pipelines.adapter import Adapter
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.conditioning import PackedConditioning


@dataclass
class Flux2Conditioning(PackedConditioning):
    """The packed text tokens, and the fixed inputs computed with them: text position ids (per branch) and the
    conditioning images' packed latents with their position ids (None without `image`)."""

    txt_ids: torch.Tensor | None = None
    negative_txt_ids: torch.Tensor | None = None
    image_latents: torch.Tensor | None = None
    image_ids: torch.Tensor | None = None


class Flux2Base(Adapter):
    """What FLUX.2 [dev] and [klein] share: packed latents with position ids, the empirical flow shift,
    conditioning images, the VAE's batch-norm latent normalisation."""

    latents_first = True
    request_state = {"condition_images": None}  # the conditioning images, preprocessed as stock
    cache_contexts = False  # the stock loop names each branch's `transformer.cache_context`

    def sized(self, request):
        """As stock: the conditioning images preprocessed (at most 1024^2 pixels, cropped to a multiple of the
        patch); without a height or width given, the first image's size is the sample's."""
        images, pipe = request.image, self.pipe
        if images is None:
            return super().sized(request)
        images = images if isinstance(images, list) else [images]
        height, width, processed = request.height, request.width, []
        for img in images:
            pipe.image_processor.check_image_input(img)
        for img in images:
            image_width, image_height = img.size
            if image_width * image_height > 1024 * 1024:
                img = pipe.image_processor._resize_to_target_area(img, 1024 * 1024)
                image_width, image_height = img.size
            multiple_of = pipe.vae_scale_factor * 2
            image_width, image_height = (side // multiple_of * multiple_of for side in (image_width, image_height))
            processed.append(pipe.image_processor.preprocess(img, height=image_height, width=image_width,
                                                             resize_mode="crop"))  # fmt: skip
            height, width = height or image_height, width or image_width
        return super().sized(request.replace(condition_images=processed, height=height, width=width))

    def check(self, request):
        request = super().check(request)
        self.pipe._attention_kwargs = request.attention_kwargs  # as stock, read at every step
        return request

    def conditioning(self, request, device, packed, text_ids, negative_ids=None) -> Flux2Conditioning:
        """`packed` with its text position ids and the conditioning images' latents (as stock prepares them)."""
        image_latents = image_ids = None
        if request.condition_images is not None:
            image_latents, image_ids = self.pipe.prepare_image_latents(
                images=request.condition_images, batch_size=packed.cond.shape[0], generator=request.generator,
                device=device, dtype=self.pipe.vae.dtype,
            )  # fmt: skip
        return Flux2Conditioning(**vars(packed), txt_ids=text_ids, negative_txt_ids=negative_ids,
                                 image_latents=image_latents, image_ids=image_ids)  # fmt: skip

    def latents(self, request, n, dtype, device):
        channels = self.pipe.transformer.config.in_channels // 4
        return self.pipe.prepare_latents(n, channels, request.height, request.width, dtype, device,
                                         request.generator, request.latents)[0]  # fmt: skip

    def latent_size(self, request) -> tuple[int, int]:
        """The packed latents' grid (height, width), as stock `prepare_latents` makes it."""
        patch = self.pipe.vae_scale_factor * 2
        return int(request.height) // patch, int(request.width) // patch

    def latent_ids(self, request, n: int, device) -> torch.Tensor:
        """The latents' position ids, as stock `prepare_latents` makes them."""
        return self.pipe._prepare_latent_ids(torch.empty(n, 0, *self.latent_size(request))).to(device)

    def timesteps(self, request, device, scheduler=None, latents=None):
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        steps = request.num_inference_steps
        sigmas = np.linspace(1.0, 1 / steps, steps) if request.sigmas is None else request.sigmas
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        if latents is not None:  # the packed latents' sequence length, as stock reads it
            seq_len = latents.shape[1]
        else:
            height, width = self.latent_size(request)
            seq_len = height * width
        mu = compute_empirical_mu(image_seq_len=seq_len, num_steps=steps)
        return super().timesteps(request, device, scheduler, sigmas=sigmas, mu=mu)

    def guidance_tensor(self, request, n: int, device) -> torch.Tensor | None:
        """The transformer's `guidance` input (None: it takes none)."""
        return None

    def denoiser(self, request, cond: Flux2Conditioning, negative: bool = False):
        """The positive branch's denoiser (`negative=True`: the negative branch's, with its own text ids)."""
        pipe, n, device = self.pipe, cond.cond.shape[0], cond.cond.device
        guidance = self.guidance_tensor(request, n, device)
        image_ids = self.latent_ids(request, n, device)
        if cond.image_latents is not None:
            image_ids = torch.cat([image_ids, cond.image_ids], dim=1)
        text_ids = cond.negative_txt_ids if negative else cond.txt_ids
        context = "uncond" if negative else "cond"
        transformer = pipe.transformer

        def denoise(x, t, packed):
            (tokens,) = cond.parts(packed, negative=negative)
            x_in = x if cond.image_latents is None else torch.cat([x, cond.image_latents], dim=1)
            kwargs = dict(hidden_states=x_in.to(transformer.dtype), timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                          guidance=guidance, encoder_hidden_states=tokens, txt_ids=text_ids, img_ids=image_ids,
                          joint_attention_kwargs=pipe.attention_kwargs, return_dict=False)  # fmt: skip
            if self.cache_contexts:
                with transformer.cache_context(context):
                    out = transformer(**kwargs)[0]
            else:
                out = transformer(**kwargs)[0]
            return out[:, : x.size(1) :]  # the sample's tokens (not the conditioning images')

        return denoise

    def latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's batch-norm mean and std, shaped and placed as stock applies them."""
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def unpack(self, request, latents):
        """Packed latents -> the patchified grid, by their position ids (the stock helper)."""
        ids = self.latent_ids(request, latents.shape[0], latents.device)
        return self.pipe._unpack_latents_with_ids(latents, ids)

    def to_vae(self, request, latents):
        """Packed, normalised latents -> the VAE's (unpacked, de-normalised, unpatchified), as stock decodes."""
        latents = self.unpack(request, latents)
        mean, std = self.latent_stats(latents)
        return self.pipe._unpatchify_latents(latents * std + mean)

    def from_vae(self, request, latents):
        """The inverse of `to_vae`, as stock encodes an image (`_encode_vae_image`, then packing)."""
        latents = self.pipe._patchify_latents(latents)
        mean, std = self.latent_stats(latents)
        return self.pipe._pack_latents((latents - mean) / std)


class Flux2Adapter(Flux2Base):
    """FLUX.2 [dev]: the Mistral 3 tokens, guidance as the transformer's input, no negative branch."""

    negative_branch = False

    def cfg(self, request) -> bool:
        return False

    def cfg_at(self, guidance_scale: float, negative: bool, true_cfg_scale: float) -> bool:
        return False

    def guidance_input(self) -> tuple[bool, str]:
        name = type(self.pipe.transformer).__name__
        if self.pipe.transformer.config.guidance_embeds:
            return True, f"{name} takes the guidance scale as its guidance input"
        return False, f"{name} has no guidance input (guidance_embeds false)"

    def no_cfg_reason(self, guidance_scale: float) -> str:
        return "FLUX.2 [dev] is guidance-distilled: the stock pipeline has no negative branch"

    def guidance_tensor(self, request, n, device):
        return torch.full([1], request.guidance_scale, device=device, dtype=torch.float32).expand(n)

    def encode(self, request, device) -> Flux2Conditioning:
        r = request
        if r.caption_upsample_temperature:  # as stock: the text encoder rewrites the prompt first
            prompt = self.pipe.upsample_prompt(r.prompt, images=r.image, temperature=r.caption_upsample_temperature,
                                               device=device)  # fmt: skip
            r = r.replace(prompt=prompt)
        tokens, text_ids = self.encode_prompt(r, device)
        packed = self.pack(request, device, [tokens], None, [True], ("prompt_embeds",))
        return self.conditioning(request, device, packed, text_ids)


class Flux2DATEPipeline(DATEPipelineMixin, Flux2Pipeline):
    """FLUX.2 [dev] with Diffusion Adaptive Text Embedding; with no update the output equals `Flux2Pipeline`'s."""

    adapter = Flux2Adapter
