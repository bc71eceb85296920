"""The one `__call__` every DATE pipeline runs, and what a model family adds to it.

`DATEPipelineMixin` is mixed in front of a stock diffusers pipeline class. Its `__call__` takes exactly the stock
arguments (the signature is read from the stock class, with the stock defaults) plus DATE's, and runs: input
checks, prompt encoding, latents, timesteps, the sampling loop (`sampling.loop.sample` with DATE's hooks),
decoding and output. A family contributes an adapter, a handful of small methods on its pipeline class:

- `_date_encode(call, options) -> PackedConditioning`: the prompt's conditioning, what DATE adapts and what it
  leaves fixed, with the stock callback names of every part;
- `_date_denoise(call, cond) -> denoise(x, t, packed) -> model output` (the loop's denoiser);
- `_date_check_inputs(call)` (the stock `check_inputs`), `_date_default_size()`;
- optionally `_date_latents`, `_date_timesteps`, `_date_to_vae` (latent layout -> VAE latents),
  `_date_finish_image` (safety checker, watermark, ...), `_date_tuple` (the stock `return_dict=False` tuple),
  `_date_guidance` (the guided denoiser's family options: FLUX's true CFG, SD3's skip-layer guidance),
  `_date_ip_adapter_embeds` (the stock IP-Adapter image embeddings, carried as fixed parts of the conditioning).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from diffusers.utils import BaseOutput

from date_diffusion.core.prediction import prediction_type_of
from date_diffusion.pipelines.callbacks import callback_hooks, callback_names
from date_diffusion.pipelines.conditioning import PackedConditioning, pack, pack_conditioning, unpack
from date_diffusion.pipelines.embeddings import replay_schedule, save_run
from date_diffusion.pipelines.options import PARAMETERS, DATEOptions, check_sampling, prepare
from date_diffusion.pipelines.reward_path import RewardPath, vae_input
from date_diffusion.pipelines.run_setup import prepared
from date_diffusion.sampling.date_step import DATEUpdate, Replay
from date_diffusion.sampling.guidance import UniversalGuidance
from date_diffusion.sampling.hooks import Interrupt, Progress
from date_diffusion.sampling.loop import GuidedDenoiser, SampleResult, StepState, sample, scheduler_step_starts

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
    """images: as diffusers (PIL list, numpy or tensor); traces: one dict per image (see `Trace`); records: one dict
    per image, what it was made with (prompt, seed, model, pipeline, scheduler, steps, guidance, size, dtype, DATE's
    settings and reward, the trace), as the command line records it; `save(path)` writes an image with its record."""

    images: list | object
    nsfw_content_detected: list[bool] | None
    traces: list[dict]
    prompts: list[str]
    records: list[dict] | None = None

    def save(self, path, index: int = 0):
        """Image `index` as a PNG at `path` (written atomically; an existing file is replaced, as `Image.save`
        does), its record in the PNG's text chunks as the command line writes them: `date-diffusion info PATH`
        shows it. Returns the path."""
        from PIL import Image

        from date_diffusion.outputs import save_png

        image = self.images[index]
        if not isinstance(image, Image.Image):
            raise TypeError(f"save() writes PIL images; these are {type(image).__name__}: call the pipeline with "
                            "output_type='pil' (the default)")  # fmt: skip
        return save_png(path, image, self.records[index] if self.records else None)


@dataclass
class Run:
    """The template's state for one call: what the sampling loop runs, and the call's own hooks."""

    scheduler: object
    model: GuidedDenoiser
    cond: PackedConditioning
    latents: torch.Tensor
    timesteps: torch.Tensor
    guidance_scale: float
    step_kwargs: dict | Callable | None = None
    to_vae: Callable | None = None  # the model's latent layout -> the VAE's (FLUX's packed latents)
    before: list = field(default_factory=list)  # hooks before DATE's: interrupt, Attend-and-Excite
    after: list = field(default_factory=list)  # hooks after DATE's: the call's callbacks


def _direction_generators(generator):
    """The random-direction ablation draws from its own stream per image, never the sampler's noise."""
    if isinstance(generator, list):
        return [torch.Generator().manual_seed(g.initial_seed() + 0x5EED) for g in generator]
    return None


# stock attributes a stock `__call__` sets from its arguments (read back through the stock properties)
_STATE = ("guidance_scale", "guidance_rescale", "clip_skip", "cross_attention_kwargs", "denoising_end")


class _Overlay:
    """`pipe` with some attributes read as other values (a stock property evaluated for another call's values)."""

    def __init__(self, pipe, **values):
        self.__dict__.update(values, _pipe=pipe)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def _stock_class(cls):
    return next(b for b in cls.__mro__ if b.__module__.startswith("diffusers.") and b.__name__.endswith("Pipeline"))


class DATEPipelineMixin:
    """Mixed in front of a stock diffusers pipeline; `pipe(...)` takes the stock arguments plus `DATEOptions`'."""

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
        cls._date_signature = inspect.Signature(params + extra + PARAMETERS)

        def __call__(self, *args, **kwargs):
            return self._date_call(*args, **kwargs)

        __call__.__signature__ = cls._date_signature
        __call__.__doc__ = (
            f"Arguments and defaults as `{_stock_class(cls).__name__}.__call__`, plus those of `DATEOptions`.\n\n"
            + (DATEOptions.__doc__ or "")
        )
        cls.__call__ = __call__

    # ------------------------------------------------------------------ the template

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """diffusers' `from_pretrained`, without the libraries' loading progress bars (`quiet.quiet_loading`); a
        component that does not load is named by its file (`loading.component_errors`)."""
        from date_diffusion.pipelines.loading import component_errors
        from date_diffusion.quiet import quiet_loading

        model = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        with quiet_loading(), component_errors(model):
            return super().from_pretrained(*args, **kwargs)

    @classmethod
    def from_single_file(cls, *args, **kwargs):
        """diffusers' `from_single_file`, without the libraries' loading progress bars (`quiet.quiet_loading`)."""
        from date_diffusion.quiet import quiet_loading

        with quiet_loading():
            return super().from_single_file(*args, **kwargs)

    @torch.no_grad()
    def _date_call(self, *args, **kwargs):
        bound = self._date_signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        call = SimpleNamespace(**{k: v for k, v in bound.arguments.items() if k != "self"})
        options = DATEOptions(**{p.name: getattr(call, p.name) for p in PARAMETERS})
        self._date_check_call(call, options)
        device = self._execution_device
        cond = self._date_encode(call, options, device)
        latents, timesteps = self._date_schedule(call, cond, device)
        self._num_timesteps = len(timesteps)
        run = Run(
            scheduler=self.scheduler,
            model=GuidedDenoiser(
                self._date_denoise(call, cond),
                self._date_prediction_type(),
                getattr(call, "guidance_rescale", 0.0),
                **self._date_guidance(call, cond, len(timesteps)),
            ),
            cond=cond,
            latents=latents,
            timesteps=timesteps,
            guidance_scale=self._guidance_scale,
            step_kwargs=self._date_step_kwargs(call),
            to_vae=lambda x: self._date_to_vae(call, x),
            before=[Interrupt(lambda: self._interrupt), *self._date_pre_steps(call, options, len(timesteps), cond)],
            after=callback_hooks(self, call, cond),
        )
        result, traces = self._date_run(run, options, call.generator)
        image, nsfw = self._date_output_image(call, result.latents, cond.cond.dtype, device)
        self.maybe_free_model_hooks()
        if not call.return_dict:
            return self._date_tuple(image, nsfw)
        records = self._date_records(call, options, traces)
        return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces, prompts=options.texts,
                                  records=records)  # fmt: skip

    def _date_records(self, call, options: DATEOptions, traces: list[dict]) -> list[dict]:
        """One record per image of a call: what the command line records of an image, as far as the call knows it
        (a seed where the image's own generator, or the call's only one, was seeded; the reward by its spec where
        `Resolved.load_reward` built it, else by its name)."""
        from date_diffusion import __version__

        n, generator = len(traces), call.generator
        per_prompt = getattr(call, "num_images_per_prompt", 1) or 1

        def per_image(value):
            values = value if isinstance(value, list) else [value] * (n // per_prompt)
            return [v for v in values for _ in range(per_prompt)] if len(values) * per_prompt == n else [None] * n

        prompts, negatives = per_image(call.prompt), per_image(getattr(call, "negative_prompt", None))
        generators = generator if isinstance(generator, list) else [generator] * n
        reward = options.reward if options.date is not None else None
        records = []
        for k, trace in enumerate(traces):
            g = generators[k] if k < len(generators) else None
            seed = {}
            if isinstance(g, torch.Generator):  # one generator for several images: image k is its k-th draw
                one = isinstance(generator, list) or n == 1
                seed = {"seed": g.initial_seed()} if one else {"generator_seed": g.initial_seed(), "image_in_batch": k}
            moved = options.date is not None and trace.get("final_distance", 0) > 0
            method = "replay" if options.replay_embeddings is not None else "date" if moved else "fixed"
            records.append({
                "prompt": prompts[k], "negative_prompt": negatives[k], **seed, "model": self.name_or_path,
                "pipeline": type(self).__name__, "scheduler": type(self.scheduler).__name__,
                "steps": call.num_inference_steps, "guidance_scale": getattr(call, "guidance_scale", None),
                "height": call.height, "width": call.width,
                "dtype": str(self._date_denoiser().dtype).replace("torch.", ""), "method": method,
                "date": options.date.to_dict() if options.date is not None else None,
                "reward": None if reward is None else getattr(reward, "spec", None) or getattr(reward, "name", None),
                "trace": trace, "date_diffusion_version": __version__,
            })  # fmt: skip
        return records

    def _date_schedule(self, call, cond: PackedConditioning, device):
        """(initial latents, timesteps) in the family's stock order."""
        n_images = cond.cond.shape[0]
        if self._date_latents_first:  # the schedule depends on the latents' size (flow matching's shift)
            latents = self._date_latents(call, n_images, cond.cond.dtype, device)
            return latents, self._date_timesteps(call, device, latents=latents)
        timesteps = self._date_timesteps(call, device)  # the initial noise is scaled by the first noise level
        return self._date_latents(call, n_images, cond.cond.dtype, device), timesteps

    # ------------------------------------------------------------------ public accessors (CLI, web page)

    @property
    def supports_negative_prompt(self) -> bool:
        """Whether the family samples with a negative prompt (classifier-free guidance)."""
        return self._date_negative_branch

    def default_image_size(self) -> int:
        """The side in pixels the model samples when no height / width is given."""
        return self._date_default_size()

    def settings_without_effect(self, guidance_scale: float, negative_prompt=None,
                                true_cfg_scale: float = 1.0) -> dict[str, str]:  # fmt: skip
        """The sampling settings a call with these values would take without any effect, each with why (what a
        record names as such instead of stating it as applied): `guidance_scale` where no classifier-free guidance
        runs and the denoiser takes no guidance input (FLUX.1-schnell, or a scale of 1 or less), `negative_prompt`
        where no negative branch runs."""
        cfg = self._date_cfg_at(guidance_scale, negative_prompt is not None, true_cfg_scale)
        takes_guidance, denoiser = self._date_guidance_input()
        why, out = self._date_no_cfg_reason(guidance_scale), {}
        if not cfg and not takes_guidance:
            out["guidance_scale"] = f"no classifier-free guidance runs ({why}) and {denoiser}"
        if negative_prompt is not None and not cfg:
            out["negative_prompt"] = f"no negative branch runs ({why})"
        return out

    @property
    def interrupt(self) -> bool:
        """Whether the current (or last) call was interrupted (the stock property; PixArt's stock class lacks it)."""
        return self._interrupt

    def request_interrupt(self) -> None:
        """End the current call at the next step (diffusers' `interrupt`, e.g. from a callback or a Stop button);
        each call starts uninterrupted."""
        self._interrupt = True

    def _date_check_call(self, call, options: DATEOptions) -> None:
        """Every check before any work: stock checks, DATE's arguments; sets the state."""
        check_sampling(call)
        if options.adapt_pooled and not self._date_has_pooled:
            raise ValueError(f"adapt_pooled=True: {type(self).__name__} has no pooled text embedding to adapt")
        call.height, call.width = call.height or self._date_default_size(), call.width or self._date_default_size()
        self._date_check_inputs(call)
        allowed = getattr(self, "_callback_tensor_inputs", ["latents"])
        names = callback_names(call)
        bad = [k for k in names if k not in allowed]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad} are not among this pipeline's: {allowed}")
        prepare(self, call, options)  # DATE's options; a scheduler whose clean estimate cannot be read is refused
        for name in _STATE:
            setattr(self, f"_{name}", getattr(call, name, None if name != "guidance_rescale" else 0.0))
        self._joint_attention_kwargs = getattr(call, "joint_attention_kwargs", None)
        self._interrupt, self._current_timestep = False, None

    # ------------------------------------------------------------------ adapter defaults (families override)

    def _date_default_size(self) -> int:
        return self.default_sample_size * self.vae_scale_factor

    def _date_check_inputs(self, call):
        """The stock `check_inputs` with the call's arguments."""
        names = callback_names(call)
        given = dict(callback_steps=getattr(call, "callback_steps", None), callback_on_step_end_tensor_inputs=names)
        self.check_inputs(**self._date_stock_args(self.check_inputs, call, **given))

    def _date_encode_prompt(self, call, device):
        """The stock `encode_prompt` with the call's arguments (its outputs as the family's stock pipeline has them)."""
        given = dict(
            device=device, do_classifier_free_guidance=self._date_cfg(), lora_scale=self._date_lora_scale(call)
        )
        return self.encode_prompt(**self._date_stock_args(self.encode_prompt, call, **given))

    def _date_pack(self, call, device, cond_parts, uncond_parts, adapted, names, negative_names, concat_cfg=True):
        """`pack_conditioning` of the family's text parts, with the call's IP-Adapter image embeddings (one part
        per adapter, as the stock pipeline prepares them) appended as parts DATE never moves; each branch carries
        its own half, so a batched `[uncond; cond]` call hands the denoiser `[negative; positive]` as stock."""
        images, negatives = self._date_ip_adapter_embeds(call, device, cond_parts[0].shape[0])
        image_names = tuple(f"ip_adapter_image_embeds_{k}" for k in range(len(images)))
        negative_names = negative_names if negative_names is not None else (None,) * len(names)
        return pack_conditioning(
            [*cond_parts, *images],
            [*uncond_parts, *(negatives or [])] if uncond_parts is not None else None,
            [*adapted, *(False for _ in images)],
            (*names, *image_names),
            (*negative_names, *(None for _ in images)),
            concat_cfg,
        )

    def _date_ip_adapter_embeds(self, call, device, n):
        """(positive parts, negative parts or None): the stock `prepare_ip_adapter_image_embeds` for `n` images,
        one `[n, ...]` tensor per adapter and branch; `([], None)` without IP-Adapter inputs. (As stock SD 1.x/2.x
        and SDXL prepare them; SD3 and FLUX override it.)"""
        image, embeds = getattr(call, "ip_adapter_image", None), getattr(call, "ip_adapter_image_embeds", None)
        if image is None and embeds is None:
            return [], None
        cfg = self._date_cfg()
        prepared = self.prepare_ip_adapter_image_embeds(image, embeds, device, n, cfg)
        if not cfg:
            return list(prepared), None
        halves = [p.chunk(2) for p in prepared]  # stock: [negative; positive] per adapter
        return [positive for _, positive in halves], [negative for negative, _ in halves]

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

    def _date_no_cfg_reason(self, guidance_scale: float) -> str:
        """Why no classifier-free guidance runs at `guidance_scale` (for records)."""
        takes_guidance, denoiser = self._date_guidance_input()
        if takes_guidance and guidance_scale > 1:  # stock: a guidance-distilled UNet is never run with CFG
            return f"{denoiser} instead"
        return "it runs at guidance_scale above 1"

    def _date_cfg_at(self, guidance_scale: float, negative: bool, true_cfg_scale: float) -> bool:
        """`_date_cfg` for a call with these values (the stock property read over them; the pipeline is left as
        it is)."""
        stock = getattr(type(self), "do_classifier_free_guidance", None)
        if isinstance(stock, property):
            return bool(stock.fget(_Overlay(self, _guidance_scale=guidance_scale)))
        return guidance_scale > 1

    def _date_guidance_input(self) -> tuple[bool, str]:
        """(whether the denoiser takes the guidance scale as an input, the sentence that says so for records):
        a guidance-distilled (LCM) UNet's guidance embedding."""
        unet = getattr(self, "unet", None)
        if unet is not None and unet.config.get("time_cond_proj_dim") is not None:
            return True, f"{type(unet).__name__} takes the guidance scale as its guidance embedding"
        return False, f"{type(self._date_denoiser()).__name__} takes no guidance input"

    def _date_latents(self, call, n, dtype, device):
        channels = self._date_denoiser().config.in_channels
        return self.prepare_latents(n, channels, call.height, call.width, dtype, device, call.generator, call.latents)

    def _date_timesteps(self, call, device, scheduler=None, latents=None, sigmas=None, **kwargs):
        """The stock `retrieve_timesteps` on `scheduler` (default: the pipeline's) with the call's steps, timesteps
        and sigmas (`sigmas`, `kwargs`: a family's own, e.g. the flow shift `mu`; `latents`: the call's initial
        latents where the family's schedule depends on their size). Set on the scheduler, as stock does."""
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

        steps, timesteps = call.num_inference_steps, getattr(call, "timesteps", None)
        sigmas = call.sigmas if sigmas is None else sigmas
        scheduler = self.scheduler if scheduler is None else scheduler
        return retrieve_timesteps(scheduler, steps, device, timesteps, sigmas, **kwargs)[0]

    def stock_timesteps(self, num_inference_steps: int, height: int | None = None, width: int | None = None,
                        scheduler=None, **call_arguments):  # fmt: skip
        """The timesteps this pipeline's `__call__` samples with these arguments (`call_arguments`: the stock
        ones that shape the schedule where the family takes them: `timesteps`, `sigmas`, `mu`, `denoising_end`),
        computed on `scheduler` (default: a copy of the pipeline's own, which stays as it is). Everything that asks
        which timesteps a run takes (step checks, editing, the benchmark, the page) asks here, so that it passes
        what the stock pipeline passes (FLUX.1-dev's resolution-dependent `mu`, FLUX's sigmas, ...)."""
        import copy

        defaults = {n: p.default for n, p in self._date_signature.parameters.items()
                    if n != "self" and p.default is not inspect.Parameter.empty}  # fmt: skip
        call = SimpleNamespace(**{**defaults, **call_arguments, "num_inference_steps": num_inference_steps})
        call.height, call.width = height or self._date_default_size(), width or self._date_default_size()
        probe = copy.deepcopy(self.scheduler) if scheduler is None else scheduler
        return self._date_timesteps(call, "cpu", probe)

    def _date_guidance(self, call, cond: PackedConditioning, n_steps: int) -> dict:
        """The guided denoiser's family options (`uncond_denoise`, `cfg_scale`, `extra`: see `GuidedDenoiser`)."""
        return {}

    @staticmethod
    def _date_flow_shift(scheduler, seq_len: int, max_shift: float) -> float:
        """The resolution-dependent shift `mu` of a flow-matching schedule, as the stock FLUX / SD3 pipelines compute
        it from the scheduler's config (`max_shift`: the stock pipeline's value where the config has none)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = scheduler.config
        return calculate_shift(
            seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", max_shift),
        )

    def _date_step_kwargs(self, call) -> dict:
        return self.prepare_extra_step_kwargs(call.generator, call.eta) if hasattr(call, "eta") else {}

    def _date_to_vae(self, call, latents):
        return latents

    def _date_finish_image(self, call, image, dtype, device):
        return image, None

    def _date_tuple(self, image, nsfw):
        return (image,)

    def _date_pre_steps(self, call, options, n_steps, cond) -> list:
        """Hooks before each step: Attend-and-Excite (moves the latents), EBCA (the UNet's cross-attention)."""
        hooks = []
        if options.attend_and_excite is not None:
            hooks.append(self._date_attend_excite(call, options.attend_and_excite, n_steps, cond))
        if options.ebca is not None:
            from date_diffusion.sampling.ebca import Ebca

            hooks.append(Ebca(self.unet, options.ebca, n_steps))
        return hooks

    def _date_vae_decode(self, call, latents):
        vae_latents = vae_input(self._date_to_vae(call, latents).to(self.vae.dtype), self.vae)
        return self.vae.decode(vae_latents, return_dict=False)[0]

    # ------------------------------------------------------------------ shared pieces

    def _date_output_image(self, call, latents, dtype, device):
        if call.output_type == "latent":
            return latents, None
        image, nsfw = self._date_finish_image(call, self._date_vae_decode(call, latents), dtype, device)
        denormalize = None if nsfw is None else [not flagged for flagged in nsfw]
        return self.image_processor.postprocess(image, output_type=call.output_type, do_denormalize=denormalize), nsfw

    _vae_input = staticmethod(vae_input)  # model latents -> what a decoder takes

    def _date_run(self, run: Run, options: DATEOptions, generator) -> tuple[SampleResult, list[dict]]:
        """The sampling loop for `run` with DATE's hooks (update or replay), data-space guidance and memory options
        as `options` say; returns the result and per-image traces."""
        path = RewardPath(self.vae, self.vae_scale_factor, options, run.to_vae)
        model = run.model
        if options.ug_scale:
            model = UniversalGuidance(model, path.decode, path.score, options.ug_scale, options.ug_every)
        starts = scheduler_step_starts(run.scheduler, len(run.timesteps))
        update = DATEUpdate(model, options.date if options.updating else None, run.cond.cond, starts,
                            path.decode, path.score, run.cond.mask, _direction_generators(generator),
                            keep_history=options.save_embeddings is not None)  # fmt: skip
        date_hooks = [update]
        if options.replay_embeddings is not None:
            schedule = replay_schedule(options.replay_embeddings, type(self).__name__, run.cond, len(run.timesteps),
                                       options.texts)  # fmt: skip
            date_hooks.insert(0, Replay(model, schedule, update.history))
        state = StepState(run.scheduler, run.latents, run.cond.cond, run.cond.uncond, run.guidance_scale)
        with prepared(self, self._date_denoiser(), options), self.progress_bar(total=len(run.timesteps)) as bar:
            hooks = [*run.before, *date_hooks, *run.after, Progress(bar.update)]
            result = update.result(sample(model, state, run.timesteps, hooks, run.step_kwargs))
        if options.save_embeddings is not None:
            save_run(options.save_embeddings, run.cond, result, self._date_embeddings_metadata(options, run))
        traces = [{**t.to_dict(), "reward_decoder": path.name} for t in result.traces]
        for hook in run.before:  # Attend-and-Excite's losses per image
            for trace, losses in zip(traces, getattr(hook, "losses", [])):
                trace["attend_excite_losses"] = losses
        return result, traces

    def _date_embeddings_metadata(self, options: DATEOptions, run: Run) -> dict:
        return {
            "pipeline": type(self).__name__,
            "model": self.config.get("_name_or_path", ""),
            "prompts": options.texts,
            "steps": len(run.timesteps),
            "guidance_scale": run.guidance_scale,
            "date": options.date.to_dict() if options.date is not None else None,
        }

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
