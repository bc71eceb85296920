"""What a model family adds to the templates: an `Adapter`, a few small methods over its stock pipeline.

The templates (`pipelines.common`: generation, `pipelines.edit`: editing) ask the adapter, in this order:
`sized(request) -> request` (the default size where none is given), `check(request) -> request` (the stock
`check_inputs`), `encode(request, device) -> PackedConditioning` (what DATE adapts and what it leaves fixed, with
the stock callback names of every part), `latents` and `timesteps`, `denoiser(request, cond) -> denoise(x, t,
packed) -> model output` (a function of its arguments), `guidance` (the guided denoiser's family options: FLUX's
true CFG, SD3's skip-layer guidance), `decode` / `finish`, `latent_output` (what `output_type="latent"` returns)
and `output_tuple`. The defaults below are the stock SD-style behaviour; a family overrides what differs. Class
attributes state the family's facts: `has_pooled` (a pooled embedding `adapt_pooled` may move), `latents_first`
(latents before timesteps, as the flow pipelines), `extra_parameters` (call arguments beyond the stock ones),
`request_state` (values its check settles), `edit_arguments` (stock arguments an edit fixes), `video_fps` (a
video family's frame rate: its output is `frames`, as the stock video pipelines', and its reward scores frames of
x0_hat, `DATEOptions.reward_frames`), `deprecated_kwargs` (deprecated arguments the stock `__call__` takes through
`**kwargs`, warned as stock warns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from date_diffusion.core.prediction import prediction_type_of
from date_diffusion.core.vae import decode_image, vae_input
from date_diffusion.pipelines.callbacks import callback_names
from date_diffusion.pipelines.conditioning import PackedConditioning, pack_conditioning
from date_diffusion.pipelines.request import Request


def _legacy(name: str) -> str:
    return (f"`{name}` is deprecated and will be removed in version 1.0.0. Passing `{name}` as an input argument to "
            "`__call__` is deprecated, consider using `callback_on_step_end`")  # fmt: skip


# SD's and SDXL's stock `__call__` take the legacy step callback through `**kwargs` (run, with a warning)
LEGACY_CALLBACK = {name: _legacy(name) for name in ("callback", "callback_steps")}


@dataclass(frozen=True)
class Adapter:
    """A family's adapter over its pipeline `pipe` (stateless: every call's values come in its request)."""

    pipe: object

    has_pooled: ClassVar[bool] = False
    negative_branch: ClassVar[bool] = True  # samples with a negative prompt (classifier-free guidance)
    guidance_is_cfg_scale: ClassVar[bool] = True  # guidance_scale scales the CFG that runs (true CFG: its own scale)
    latents_first: ClassVar[bool] = False
    extra_parameters: ClassVar[dict] = {}
    request_state: ClassVar[dict] = {}
    edit_arguments: ClassVar[dict] = {}
    video_fps: ClassVar[int | None] = None  # a video family's frames per second (its examples' export); None: images
    # arguments the stock `__call__` reads from its `**kwargs`, deprecated: name -> the stock warning's text
    deprecated_kwargs: ClassVar[dict] = {}

    @property
    def module(self) -> torch.nn.Module:
        """The denoiser module (UNet or transformer)."""
        return getattr(self.pipe, "unet", None) or self.pipe.transformer

    def default_size(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    def sized(self, request: Request) -> Request:
        """The request with its sample size settled before the stock checks: the default size where none is given
        (a family whose stock size follows an input, e.g. FLUX.2's conditioning images, overrides this)."""
        side = self.default_size()
        return request.replace(height=request.height or side, width=request.width or side)

    def check(self, request: Request) -> Request:
        """The stock `check_inputs` with the call's arguments; returns the request the run takes."""
        names = callback_names(request)
        given = dict(callback_steps=request.callback_steps, callback_on_step_end_tensor_inputs=names)
        self.pipe.check_inputs(**request.stock_args(self.pipe.check_inputs, **given))
        return request

    def encode_prompt(self, request: Request, device):
        """The stock `encode_prompt` with the call's arguments (its outputs as the family's stock pipeline has them)."""
        given = dict(device=device, do_classifier_free_guidance=self.cfg(request), lora_scale=lora_scale(request))
        return self.pipe.encode_prompt(**request.stock_args(self.pipe.encode_prompt, **given))

    def encode(self, request: Request, device) -> PackedConditioning:
        raise NotImplementedError

    def pack(self, request, device, parts, negative_parts, adapted, names, negative_names=None, concat_cfg=True):
        """`pack_conditioning` of the family's text parts, with the call's IP-Adapter image embeddings (one part
        per adapter) appended as parts DATE never moves; each branch carries its own half, so a batched
        `[uncond; cond]` call hands the denoiser `[negative; positive]` as stock."""
        images, negatives = self.ip_adapter_embeds(request, device, parts[0].shape[0])
        negative_names = negative_names if negative_names is not None else (None,) * len(names)
        return pack_conditioning(
            [*parts, *images],
            [*negative_parts, *(negatives or [])] if negative_parts is not None else None,
            [*adapted, *(False for _ in images)],
            (*names, *(f"ip_adapter_image_embeds_{k}" for k in range(len(images)))),
            (*negative_names, *(None for _ in images)),
            concat_cfg,
        )

    def ip_adapter_embeds(self, request: Request, device, n: int):
        """(positive parts, negative parts or None): the stock `prepare_ip_adapter_image_embeds` for `n` images,
        one `[n, ...]` tensor per adapter and branch; `([], None)` without IP-Adapter inputs."""
        image, embeds = request.ip_adapter_image, request.ip_adapter_image_embeds
        if image is None and embeds is None:
            return [], None
        cfg = self.cfg(request)
        prepared = self.pipe.prepare_ip_adapter_image_embeds(image, embeds, device, n, cfg)
        if not cfg:
            return list(prepared), None
        halves = [p.chunk(2) for p in prepared]  # stock: [negative; positive] per adapter
        return [positive for _, positive in halves], [negative for negative, _ in halves]

    def latents(self, request: Request, n: int, dtype, device):
        channels = self.module.config.in_channels
        return self.pipe.prepare_latents(n, channels, request.height, request.width, dtype, device,
                                         request.generator, request.latents)  # fmt: skip

    def timesteps(self, request: Request, device, scheduler=None, latents=None, sigmas=None, **kwargs):
        """The stock `retrieve_timesteps` on `scheduler` (default: the pipeline's) with the call's steps, timesteps
        and sigmas (`sigmas`, `kwargs`: a family's own, e.g. the flow shift `mu`; `latents`: the call's initial
        latents where the family's schedule depends on their size). Set on the scheduler, as stock does."""
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

        sigmas = request.sigmas if sigmas is None else sigmas
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        steps, timesteps = request.num_inference_steps, request.timesteps
        return retrieve_timesteps(scheduler, steps, device, timesteps, sigmas, **kwargs)[0]

    def denoiser(self, request: Request, cond: PackedConditioning):
        raise NotImplementedError

    def guidance(self, request: Request, cond: PackedConditioning, n_steps: int) -> dict:
        """The guided denoiser's family options (`uncond_denoise`, `cfg_scale`, `extra`: see `GuidedDenoiser`)."""
        return {}

    def to_vae(self, request: Request, latents):
        """The model's latent layout -> the VAE's (FLUX unpacks)."""
        return latents

    def from_vae(self, request: Request, latents):
        """The VAE's latent layout -> the model's (the inverse of `to_vae`)."""
        return latents

    def fps(self, request: Request) -> int | None:
        """A video call's frames per second (what its output and records state): the family's `video_fps`, or the
        call's own rate where the stock call takes one (LTX-Video's `frame_rate`)."""
        return self.video_fps

    def decode(self, request: Request, latents):
        return self.vae_decode(self.to_vae(request, latents))

    def latent_output(self, request: Request, latents):
        """What `output_type="latent"` returns: stock, the model's latents as the loop leaves them."""
        return latents

    def vae_decode(self, latents):
        """VAE-layout latents -> pixels in [-1, 1], differentiable: what the reward path decodes x0_hat with (a
        video family's: its VAE's own latent statistics, timestep conditioning, one-frame clips)."""
        vae = self.pipe.vae
        return decode_image(vae, vae_input(latents.to(vae.dtype), vae))

    def postprocess(self, request: Request, image, nsfw):
        """The decoded output in the call's `output_type`, as the stock pipeline post-processes it."""
        denormalize = None if nsfw is None else [not flagged for flagged in nsfw]
        return self.pipe.image_processor.postprocess(image, output_type=request.output_type,
                                                     do_denormalize=denormalize)  # fmt: skip

    def finish(self, request: Request, image, dtype, device):
        """(image, nsfw flags or None) after decoding: the safety checker, a watermark, ..."""
        return image, None

    def output_tuple(self, image, nsfw) -> tuple:
        """The stock `return_dict=False` tuple."""
        return (image,)

    def cfg(self, request: Request) -> bool:
        """Whether the next step uses classifier-free guidance (the stock property where the family has one)."""
        stock = getattr(type(self.pipe), "do_classifier_free_guidance", None)
        return stock.fget(self.pipe) if isinstance(stock, property) else self.pipe._guidance_scale > 1

    def cfg_at(self, guidance_scale: float, negative: bool, true_cfg_scale: float) -> bool:
        """`cfg` for a call with these values (the stock property read over them; the pipeline is left as is)."""
        stock = getattr(type(self.pipe), "do_classifier_free_guidance", None)
        if isinstance(stock, property):
            return bool(stock.fget(_Overlay(self.pipe, _guidance_scale=guidance_scale)))
        return guidance_scale > 1

    def guidance_input(self) -> tuple[bool, str]:
        """(whether the denoiser takes the guidance scale as an input, the sentence that says so for records):
        a guidance-distilled (LCM) UNet's guidance embedding."""
        unet = getattr(self.pipe, "unet", None)
        if unet is not None and unet.config.get("time_cond_proj_dim") is not None:
            return True, f"{type(unet).__name__} takes the guidance scale as its guidance embedding"
        return False, f"{type(self.module).__name__} takes no guidance input"

    def no_cfg_reason(self, guidance_scale: float) -> str:
        """Why no classifier-free guidance runs at `guidance_scale` (for records)."""
        takes_guidance, denoiser = self.guidance_input()
        if takes_guidance and guidance_scale > 1:  # stock: a guidance-distilled UNet is never run with CFG
            return f"{denoiser} instead"
        return "it runs at guidance_scale above 1"


class _Overlay:
    """`pipe` with some attributes read as other values (a stock property evaluated for another call's values)."""

    def __init__(self, pipe, **values):
        self.__dict__.update(values, _pipe=pipe)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def lora_scale(request: Request):
    """The LoRA scale the stock pipelines read from `cross_attention_kwargs` / `joint_attention_kwargs`."""
    kwargs = request.cross_attention_kwargs or request.joint_attention_kwargs
    return kwargs.get("scale", None) if kwargs is not None else None


def prediction_type(pipe) -> str:
    return prediction_type_of(pipe.scheduler)


def timestep_cond(pipe, cond: PackedConditioning):
    """The guidance-scale embedding of guidance-distilled (LCM) UNets (never with CFG); None for others."""
    dim = pipe.unet.config.time_cond_proj_dim
    if dim is None:
        return None
    scale = torch.tensor(pipe._guidance_scale - 1).repeat(cond.cond.shape[0])
    embedding = pipe.get_guidance_scale_embedding(scale, embedding_dim=dim)
    return embedding.to(device=cond.cond.device, dtype=cond.cond.dtype)


def packed_flow_timesteps(adapter: Adapter, request: Request, device, scheduler=None, latents=None,
                          use_flow_sigmas: bool = False):  # fmt: skip
    """The schedule the FLUX-style stock pipelines (FLUX, Chroma, Qwen-Image) prepare for latents packed in 2x2
    patches: sigmas from 1 to 1/steps (or the call's), shifted by `mu` from the packed sequence length (the initial
    latents' where given, else the size's, as stock `prepare_latents` packs it); `use_flow_sigmas`: a scheduler
    configured with `use_flow_sigmas` takes no sigmas (FLUX's stock exception)."""
    import numpy as np

    scheduler = adapter.pipe.scheduler if scheduler is None else scheduler
    steps, patch = request.num_inference_steps, adapter.pipe.vae_scale_factor * 2
    sigmas = np.linspace(1.0, 1 / steps, steps) if request.sigmas is None else request.sigmas
    if use_flow_sigmas and getattr(scheduler.config, "use_flow_sigmas", False):
        sigmas = None
    if latents is not None:
        seq_len = latents.shape[1]
    else:
        seq_len = (int(request.height) // patch) * (int(request.width) // patch)
    mu = flow_shift(scheduler, seq_len, max_shift=1.15)
    return Adapter.timesteps(adapter, request, device, scheduler, sigmas=sigmas, mu=mu)


def flow_shift(scheduler, seq_len: int, max_shift: float) -> float:
    """The resolution-dependent shift `mu` of a flow-matching schedule, as the stock FLUX / SD3 pipelines compute it
    from the scheduler's config (`max_shift`: the stock pipeline's value where the config has none)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = scheduler.config
    return calculate_shift(
        seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", max_shift),
    )
