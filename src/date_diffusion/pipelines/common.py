"""The one `__call__` every DATE pipeline runs, and what a model family adds to it.

`DATEPipelineMixin` is mixed in front of a stock diffusers pipeline class. Its `__call__` takes exactly the stock
arguments (the signature is read from the stock class, with the stock defaults) plus DATE's, and runs: input
checks, prompt encoding, latents, timesteps, the DATE sampling loop (`date_sample`), decoding and output. A family
contributes an adapter, a handful of small methods on its pipeline class:

- `_date_encode(call, options) -> PackedConditioning`: the prompt's conditioning, what DATE adapts and what it
  leaves fixed, with the stock callback names of every part;
- `_date_denoise(call, cond) -> denoise(x, t, packed) -> model output` (the loop's denoiser);
- `_date_check_inputs(call)` (the stock `check_inputs`), `_date_default_size()`;
- optionally `_date_latents`, `_date_timesteps`, `_date_to_vae` (latent layout -> VAE latents),
  `_date_finish_image` (safety checker, watermark, ...), `_date_tuple` (the stock `return_dict=False` tuple).
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.prediction import PREDICTION_TYPES, prediction_type_of
from date_diffusion.pipelines.conditioning import PackedConditioning, pack, pack_conditioning, unpack
from date_diffusion.sampling.checkpointing import fine_checkpointing, release_freed_memory
from date_diffusion.sampling.loop import SampleResult, date_sample

__all__ = [
    "DATEOptions",
    "DATEPipelineMixin",
    "DATEPipelineOutput",
    "PackedConditioning",
    "pack",
    "pack_conditioning",
    "unpack",
]


@dataclass
class DATEPipelineOutput(BaseOutput):
    """images: as diffusers (PIL list, numpy or tensor); traces: one dict per image (see `Trace`)."""

    images: list | object
    nsfw_content_detected: list[bool] | None
    traces: list[dict]
    prompts: list[str]


@dataclass
class DATEOptions:
    """DATE's per-call options (the keyword arguments a DATE pipeline adds to the stock ones).

    date: DATE settings; None samples with fixed embeddings.
    reward: the score DATE raises (e.g. `CLIPScoreReward`); required when `date` updates.
    reward_prompt: text the reward scores against (default: `prompt`); needed with `prompt_embeds`.
    save_embeddings: a .safetensors path for the original, final and per-update conditioning, each part with its
        stock name and shape, and metadata (see `pipelines.embeddings`).
    replay_embeddings: a file written by `save_embeddings` (or a loaded `SavedEmbeddings`): re-create the DATE
        sample from its adapted embeddings, without a reward (same prompt, seed and settings give the same image).
    ug_scale, ug_every: baseline data-space reward guidance (`sampling.guidance.universal_guidance`) with this
        scale at every `ug_every`-th loop index; uses `reward`, keeps the embedding fixed; epsilon models only.
    gradient_checkpointing: memory-saving mode: recompute denoiser, VAE-decoder and reward activations during the
        backward pass of update steps instead of storing them, and on CPUs (glibc) give the memory freed by each
        part of an update step back to the OS before the next (less memory, a little more time; see
        `sampling.checkpointing`). Same values.
    reward_decoder: APPROXIMATE path: decode x0_hat for the reward with this decoder (e.g. `AutoencoderTiny`)
        instead of the VAE; the final image is still decoded by the VAE. Traces record `reward_decoder`.
    reward_resolution: APPROXIMATE path that keeps the real VAE: x0_hat's latents are resized (bilinear,
        antialiased) so that the decoded image the reward sees is this many pixels per side (e.g. 224 for CLIP,
        whose input size it is anyway) instead of the full image. Traces record it in `reward_decoder`.
    attend_and_excite: Attend-and-Excite in the same loop (UNet cross-attention families): a dict with
        `token_indices` (one list per prompt) or `subjects` (words whose tokens are excited), and optionally
        `max_iter_to_alter` (25), `thresholds`, `scale_factor` (20), `attn_res` ((16, 16)).
    adapt_pooled: also adapt the pooled text embedding (SDXL, SD3, FLUX), normalised jointly per sample.
    """

    date: DATEConfig | None = None
    reward: object | None = None
    reward_prompt: str | list[str] | None = None
    save_embeddings: str | Path | None = None
    replay_embeddings: object | None = None
    ug_scale: float | None = None
    ug_every: int = 1
    gradient_checkpointing: bool = False
    reward_decoder: object | None = None
    reward_resolution: int | None = None
    attend_and_excite: dict | None = None
    adapt_pooled: bool = False
    # filled by the template: the text the reward scores for each image
    texts: list[str] = field(default_factory=list, repr=False)

    @property
    def updating(self) -> bool:
        """Whether DATE moves the embedding at all in this call."""
        return self.date is not None and self.date.moves


_DATE_PARAMETERS = [
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
    for f in fields(DATEOptions)
    if f.name != "texts"
]
# stock attributes a stock `__call__` sets from its arguments (read back through the stock properties)
_STATE = ("guidance_scale", "guidance_rescale", "clip_skip", "cross_attention_kwargs", "denoising_end")


def _as_list(x, n: int, name: str) -> list:
    if x is None or isinstance(x, str):
        return [x] * n
    if len(x) != n:
        raise ValueError(f"`{name}` has {len(x)} entries but `prompt` has {n}; give one per prompt or a single one")
    return list(x)


def _stock_class(cls):
    return next(b for b in cls.__mro__ if b.__module__.startswith("diffusers.") and b.__name__.endswith("Pipeline"))


class DATEPipelineMixin:
    """Mixed in front of a stock diffusers pipeline; `pipe(...)` takes the stock arguments plus `DATEOptions`'."""

    # stock arguments this family does not implement with DATE: name -> the only accepted value
    _date_unsupported: dict = {"ip_adapter_image": None, "ip_adapter_image_embeds": None}
    _date_has_pooled = False  # the family has a pooled text embedding (`adapt_pooled`)
    _date_negative_branch = True  # the family samples with a negative prompt (classifier-free guidance)
    _date_latents_first = False  # prepare latents before timesteps (as the stock SD3 / FLUX pipelines)
    _date_extra_parameters: dict = {}  # arguments beyond the stock ones (name -> default), e.g. newer callbacks

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        stock = inspect.signature(_stock_class(cls).__call__).parameters.values()
        params = [p for p in stock if p.kind != inspect.Parameter.VAR_KEYWORD]
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in cls._date_extra_parameters.items()
            if name not in {p.name for p in params}
        ]
        cls._date_signature = inspect.Signature(params + extra + _DATE_PARAMETERS)

        def __call__(self, *args, **kwargs):
            return self._date_call(*args, **kwargs)

        __call__.__signature__ = cls._date_signature
        __call__.__doc__ = (
            f"Arguments and defaults as `{_stock_class(cls).__name__}.__call__`, plus those of `DATEOptions`.\n\n"
            + (DATEOptions.__doc__ or "")
        )
        cls.__call__ = __call__

    # ------------------------------------------------------------------ the template

    @torch.no_grad()
    def _date_call(self, *args, **kwargs):
        bound = self._date_signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        call = SimpleNamespace(**{k: v for k, v in bound.arguments.items() if k != "self"})
        options = DATEOptions(**{p.name: getattr(call, p.name) for p in _DATE_PARAMETERS})
        self._date_check_call(call, options)
        device = self._execution_device
        cond = self._date_encode(call, options, device)
        n_images = cond.cond.shape[0]
        if self._date_latents_first:  # the schedule depends on the latents' size (flow matching's shift)
            latents = self._date_latents(call, n_images, cond.cond.dtype, device)
            timesteps = self._date_timesteps(call, latents, device)
        else:  # the initial noise is scaled by the schedule's first noise level
            timesteps = self._date_timesteps(call, None, device)
            latents = self._date_latents(call, n_images, cond.cond.dtype, device)
        self._num_timesteps = len(timesteps)
        loop = dict(
            scheduler=self.scheduler,
            denoise=self._date_denoise(call, cond),
            latents=latents,
            cond_embeds=cond.cond,
            uncond_embeds=cond.uncond,
            guidance_scale=self._guidance_scale,
            guidance_rescale=getattr(call, "guidance_rescale", 0.0),
            prediction_type=self._date_prediction_type(),
            step_kwargs=self._date_step_kwargs(call),
            timesteps=timesteps,
            on_step_end=self._date_callback(call, cond),
            interrupted=lambda: self._interrupt,
            adapt_mask=cond.mask,
            pre_step=self._date_pre_step(call, options, len(timesteps), cond),
        )
        if options.replay_embeddings is not None:
            loop["replay"] = self._date_replay(options.replay_embeddings, cond)
        to_vae = lambda x: self._date_to_vae(call, x)
        result, traces = self._date_run(loop, options, call.generator, to_vae=to_vae, cond=cond)
        image, nsfw = self._date_output_image(call, result.latents, cond.cond.dtype, device)
        self.maybe_free_model_hooks()
        if not call.return_dict:
            return self._date_tuple(image, nsfw)
        return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces, prompts=options.texts)

    def _date_check_call(self, call, options: DATEOptions) -> None:
        """Every check before any work: stock checks, unsupported arguments, DATE's arguments; sets the state."""
        for name, only in self._date_unsupported.items():
            value = getattr(call, name, only)
            if value is not only and value != only:
                raise ValueError(
                    f"`{name}` is not supported by {type(self).__name__} (DATE adapts the text conditioning only); "
                    f"leave it at {only!r}"
                )
        if options.adapt_pooled and not self._date_has_pooled:
            raise ValueError(f"adapt_pooled=True: {type(self).__name__} has no pooled text embedding to adapt")
        call.height, call.width = call.height or self._date_default_size(), call.width or self._date_default_size()
        self._date_check_inputs(call)
        allowed = getattr(self, "_callback_tensor_inputs", ["latents"])
        names = self._date_callback_names(call)
        bad = [k for k in names if k not in allowed]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad} are not among this pipeline's: {allowed}")
        if self._date_prediction_type() not in PREDICTION_TYPES:
            raise ValueError(
                f"scheduler prediction_type {self._date_prediction_type()!r} is not supported; "
                f"use one of {PREDICTION_TYPES}"
            )
        self._date_prepare(call, options)
        for name in _STATE:
            setattr(self, f"_{name}", getattr(call, name, None if name != "guidance_rescale" else 0.0))
        self._joint_attention_kwargs = getattr(call, "joint_attention_kwargs", None)
        self._interrupt, self._current_timestep = False, None

    def _date_prepare(self, call, options: DATEOptions) -> None:
        """Validate DATE arguments early; sets `options.texts` (one text per image)."""
        prompt, prompt_embeds = call.prompt, call.prompt_embeds
        if (
            isinstance(prompt, str)
            and not prompt.strip()
            or isinstance(prompt, list)
            and not all(isinstance(p, str) and p.strip() for p in prompt)
        ):
            raise ValueError("`prompt` is empty: give a non-empty text (or `prompt_embeds`)")
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        guided = options.updating or bool(options.ug_scale)
        if options.replay_embeddings is not None:
            if guided:
                raise ValueError("replay_embeddings re-creates a DATE run: leave `date` and `ug_scale` unset")
            options.replay_embeddings = self._date_replay_file(options.replay_embeddings)
        if guided and options.reward is None:
            raise ValueError("`date` and `ug_scale` need a `reward`, e.g. reward=CLIPScoreReward.from_pretrained(...)")
        texts = options.reward_prompt if options.reward_prompt is not None else prompt
        if guided and texts is None:
            raise ValueError("with `prompt_embeds`, pass `reward_prompt` (the text the reward scores against)")
        per_prompt = call.num_images_per_prompt
        options.texts = [p for p in _as_list(texts, batch_size, "reward_prompt") for _ in range(per_prompt)]
        r = options.reward_resolution
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < self.vae_scale_factor
                              or r % self.vae_scale_factor):  # fmt: skip
            raise ValueError(
                f"reward_resolution must be a positive multiple of {self.vae_scale_factor} (the VAE's scale), got {r!r}"
            )
        if options.attend_and_excite is not None and not hasattr(self, "_date_attend_excite"):
            raise ValueError(
                f"attend_and_excite needs a UNet's cross-attention maps: {type(self).__name__} does not support it"
            )

    # ------------------------------------------------------------------ adapter defaults (families override)

    def _date_default_size(self) -> int:
        return self.default_sample_size * self.vae_scale_factor

    def _date_check_inputs(self, call):
        """The stock `check_inputs` with the call's arguments."""
        names = self._date_callback_names(call)
        given = dict(callback_steps=getattr(call, "callback_steps", None), callback_on_step_end_tensor_inputs=names)
        self.check_inputs(**self._date_stock_args(self.check_inputs, call, **given))

    def _date_encode_prompt(self, call, device):
        """The stock `encode_prompt` with the call's arguments (its outputs as the family's stock pipeline has them)."""
        given = dict(
            device=device, do_classifier_free_guidance=self._date_cfg(), lora_scale=self._date_lora_scale(call)
        )
        return self.encode_prompt(**self._date_stock_args(self.encode_prompt, call, **given))

    @staticmethod
    def _date_stock_args(method, call, **given) -> dict:
        """Keyword arguments for a stock method: `given`, then the call's arguments of the same names."""
        names = inspect.signature(method).parameters
        return {n: given[n] if n in given else getattr(call, n) for n in names if n in given or hasattr(call, n)}

    def _date_denoiser(self):
        return getattr(self, "unet", None) or self.transformer

    def _date_prediction_type(self) -> str:
        return prediction_type_of(self.scheduler)

    def _date_cfg(self) -> bool:
        """Whether the next step uses classifier-free guidance (the stock property where the family has one)."""
        stock = getattr(type(self), "do_classifier_free_guidance", None)
        return stock.fget(self) if isinstance(stock, property) else self._guidance_scale > 1

    def _date_latents(self, call, n, dtype, device):
        channels = self._date_denoiser().config.in_channels
        return self.prepare_latents(n, channels, call.height, call.width, dtype, device, call.generator, call.latents)

    def _date_timesteps(self, call, latents, device, **kwargs):
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

        steps = call.num_inference_steps
        timesteps = getattr(call, "timesteps", None)
        return retrieve_timesteps(self.scheduler, steps, device, timesteps, call.sigmas, **kwargs)[0]

    def _date_step_kwargs(self, call) -> dict:
        return self.prepare_extra_step_kwargs(call.generator, call.eta) if hasattr(call, "eta") else {}

    def _date_to_vae(self, call, latents):
        return latents

    def _date_finish_image(self, call, image, dtype, device):
        return image, None

    def _date_tuple(self, image, nsfw):
        return (image,)

    def _date_pre_step(self, call, options, n_steps, cond):
        if options.attend_and_excite is None:
            return None
        return self._date_attend_excite(call, options.attend_and_excite, n_steps, cond)

    def _date_vae_decode(self, call, latents):
        vae_latents = self._vae_input(self._date_to_vae(call, latents).to(self.vae.dtype), self.vae)
        return self.vae.decode(vae_latents, return_dict=False)[0]

    # ------------------------------------------------------------------ shared pieces

    def _date_output_image(self, call, latents, dtype, device):
        if call.output_type == "latent":
            return latents, None
        image, nsfw = self._date_finish_image(call, self._date_vae_decode(call, latents), dtype, device)
        denormalize = None if nsfw is None else [not flagged for flagged in nsfw]
        return self.image_processor.postprocess(image, output_type=call.output_type, do_denormalize=denormalize), nsfw

    def _date_callback_names(self, call) -> list[str]:
        callback = call.callback_on_step_end
        if hasattr(callback, "tensor_inputs"):  # PipelineCallback / MultiPipelineCallbacks, as the stock pipelines
            return list(callback.tensor_inputs)
        return list(getattr(call, "callback_on_step_end_tensor_inputs", None) or ["latents"])

    def _date_callback(self, call, cond: PackedConditioning):
        """The loop's `on_step_end` for diffusers' callback contract: the callback sees the stock tensors by their
        stock names; whatever it replaces (latents, embeddings, the guidance scale on the pipeline) takes effect."""
        callback, legacy = call.callback_on_step_end, getattr(call, "callback", None)
        if callback is None and legacy is None:
            return None
        names = self._date_callback_names(call)

        def on_step_end(i, t, state):
            view = cond.callback_view(state["latents"], state["prompt_embeds"], state["negative_prompt_embeds"])
            replaced = {}
            if callback is not None:
                returned = callback(self, i, t, {k: view[k] for k in names})
                positive, negative = cond.apply_callback(
                    view, returned, state["prompt_embeds"], state["negative_prompt_embeds"]
                )
                latents = returned.get("latents", state["latents"])
                replaced = dict(latents=latents, prompt_embeds=positive, guidance_scale=self._guidance_scale)
                replaced["negative_prompt_embeds"] = negative if self._date_cfg() else None
            if legacy is not None and i % call.callback_steps == 0:
                legacy(i // getattr(self.scheduler, "order", 1), t, replaced.get("latents", state["latents"]))
            return replaced

        return on_step_end

    @staticmethod
    def _vae_input(latents: torch.Tensor, decoder) -> torch.Tensor:
        """Model latents -> what `decoder.decode` takes (scaling factor, and SDXL's / SD3's mean, std or shift)."""
        cfg = decoder.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            view = (1, len(mean), 1, 1)
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(view)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(view)
            return latents * std / cfg.scaling_factor + mean
        return latents / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)

    def _decode_for_reward(self, x0_latents: torch.Tensor, decoder=None) -> torch.Tensor:
        # The reference scores the raw decode, not clamped to [0, 1].
        decoder = decoder or self.vae
        image = decoder.decode(self._vae_input(x0_latents.to(decoder.dtype), decoder)).sample
        return image.to(torch.promote_types(image.dtype, torch.float32)) / 2 + 0.5  # half -> float, never lower

    def _date_modules(self, options: DATEOptions):
        """Every module of the pipeline and of the DATE run: all frozen; the reward and the approximate decoder
        follow the execution device (so they work under `enable_model_cpu_offload`)."""
        device = self._execution_device
        for extra in (options.reward, options.reward_decoder):
            if isinstance(extra, torch.nn.Module) and any(p.device != torch.device(device) for p in extra.parameters()):
                extra.to(device)
        modules = [m for m in self.components.values() if isinstance(m, torch.nn.Module)]
        return [m for m in (*modules, options.reward, options.reward_decoder) if m is not None]

    def _date_run(
        self, loop: dict, options: DATEOptions, generator, to_vae=None, cond: PackedConditioning | None = None
    ) -> tuple[SampleResult, list[dict]]:
        """Freeze, set up decoding / reward / guidance / checkpointing, run `date_sample` with `loop` (its
        sampling arguments); returns the result and per-image traces. `cond` (the packed conditioning) names
        the parts `save_embeddings` writes."""
        for module in self._date_modules(options):
            module.requires_grad_(False)
        denoiser = self._date_denoiser()
        # the denoiser's own switch already checkpoints each resnet / attention; the decoders and the reward
        # are checkpointed unit by unit (see sampling/checkpointing.py). Both act only where gradients are.
        switch_denoiser = (
            options.gradient_checkpointing
            and getattr(denoiser, "_supports_gradient_checkpointing", False)
            and not denoiser.is_gradient_checkpointing
        )
        if switch_denoiser:
            denoiser.enable_gradient_checkpointing()
        fine = (
            fine_checkpointing(getattr(self.vae, "decoder", None), options.reward_decoder, options.reward)
            if options.gradient_checkpointing
            else nullcontext()
        )

        def release(tensor):  # memory-saving mode: the freed activations of the part just run go back to the OS
            if options.gradient_checkpointing and torch.is_grad_enabled():
                release_freed_memory(tensor)

        def decode(x0_latents):
            release(x0_latents)
            latents = to_vae(x0_latents) if to_vae else x0_latents
            if options.reward_resolution:
                side = options.reward_resolution // self.vae_scale_factor
                latents = F.interpolate(latents, size=(side, side), mode="bilinear", antialias=True)
            return self._decode_for_reward(latents, options.reward_decoder)

        def score(images):
            scores = options.reward(images, options.texts)
            release(images)  # before the backward pass
            return scores

        guide = None
        if options.ug_scale:
            from date_diffusion.sampling.guidance import universal_guidance

            guide = universal_guidance(
                scheduler=loop["scheduler"],
                denoise=loop["denoise"],
                decode=decode,
                reward=score,
                uncond_embeds=loop["uncond_embeds"],
                guidance_scale=loop["guidance_scale"],
                scale=options.ug_scale,
                every=options.ug_every,
                prediction_type=loop["prediction_type"],
            )
        # the random-direction ablation draws from its own stream per image, never the sampler's noise
        direction_gens = None
        if isinstance(generator, list):
            direction_gens = [torch.Generator().manual_seed(g.initial_seed() + 0x5EED) for g in generator]
        try:
            with fine, self.progress_bar(total=len(loop["timesteps"])) as bar:
                result = date_sample(
                    **loop,
                    date=options.date if options.updating else None,
                    decode=decode,
                    reward=score,
                    keep_history=options.save_embeddings is not None,
                    progress=bar.update,
                    guide=guide,
                    generators=direction_gens,
                )
        finally:
            if switch_denoiser:
                denoiser.disable_gradient_checkpointing()
            if loop.get("pre_step") is not None:  # Attend-and-Excite restores the UNet's attention processors
                loop["pre_step"].close()
        if options.save_embeddings is not None:
            self._date_save_embeddings(options, loop, result, cond)
        decoder = options.reward_decoder
        decoder_name = "vae" if decoder is None else f"{type(decoder).__name__} (approximate)"
        if options.reward_resolution:
            decoder_name += f" at {options.reward_resolution} px (approximate)"
        traces = [{**t.to_dict(), "reward_decoder": decoder_name} for t in result.traces]
        for trace, losses in zip(traces, getattr(loop.get("pre_step"), "losses", [])):
            trace["attend_excite_losses"] = losses
        return result, traces

    def _date_save_embeddings(self, options: DATEOptions, loop: dict, result: SampleResult, cond) -> None:
        from date_diffusion.pipelines.embeddings import from_packed

        names, shapes = cond.names, cond.shapes
        packed = {"original": loop["cond_embeds"], "final": result.embeds}
        packed.update({f"step_{i:04d}": e for i, e in (result.embeds_history or {}).items()})
        meta = {
            "pipeline": type(self).__name__,
            "model": self.config.get("_name_or_path", ""),
            "prompts": options.texts,
            "steps": len(loop["timesteps"]),
            "guidance_scale": loop["guidance_scale"],
            "date": options.date.to_dict() if options.date is not None else None,
        }
        from_packed(packed, names, shapes, meta).save(options.save_embeddings)

    @staticmethod
    def _date_replay_file(replay):
        from date_diffusion.pipelines.embeddings import SavedEmbeddings, load_embeddings

        return replay if isinstance(replay, SavedEmbeddings) else load_embeddings(replay)

    def _date_replay(self, saved, cond: PackedConditioning) -> dict:
        """The saved per-update embeddings as the loop's replay schedule, after checking they fit this call."""
        if saved.metadata.get("pipeline") != type(self).__name__:
            raise ValueError(
                f"replay_embeddings were saved by {saved.metadata.get('pipeline')!r}, not {type(self).__name__!r}"
            )
        names = [n for n, _ in saved.parts]
        if names != list(cond.names) or [tuple(s) for _, s in saved.parts] != [tuple(s) for s in cond.shapes]:
            raise ValueError(
                f"replay_embeddings have parts {saved.parts}, this call has {list(zip(cond.names, cond.shapes))}"
            )
        original = saved.packed("original").to(cond.cond.device, cond.cond.dtype)
        if original.shape != cond.cond.shape or not torch.allclose(original, cond.cond, rtol=1e-4, atol=1e-5):
            raise ValueError(
                "replay_embeddings start from another embedding than this call's prompt: use the prompt, model and "
                f"settings they were saved with (their prompts: {saved.metadata.get('prompts')})"
            )
        return {i: e.to(cond.cond.device, cond.cond.dtype) for i, e in saved.history().items()}

    def _date_timestep_cond(self, cond: PackedConditioning):
        """The guidance-scale embedding of guidance-distilled (LCM) UNets (never with CFG); None for others."""
        dim = self.unet.config.time_cond_proj_dim
        if dim is None:
            return None
        scale = torch.tensor(self._guidance_scale - 1).repeat(cond.cond.shape[0])
        embedding = self.get_guidance_scale_embedding(scale, embedding_dim=dim)
        return embedding.to(device=cond.cond.device, dtype=cond.cond.dtype)

    @staticmethod
    def _date_lora_scale(call):
        """The LoRA scale the stock pipelines read from `cross_attention_kwargs` / `joint_attention_kwargs`."""
        kwargs = getattr(call, "cross_attention_kwargs", None) or getattr(call, "joint_attention_kwargs", None)
        return kwargs.get("scale", None) if kwargs is not None else None
