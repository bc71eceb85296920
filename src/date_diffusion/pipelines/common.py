"""The one `__call__` every DATE pipeline runs, and the mixin that puts it in front of a stock diffusers pipeline.

A family's DATE pipeline is `class XDATEPipeline(DATEPipelineMixin, XPipeline)` with `adapter = XAdapter` (its
`pipelines.adapter.Adapter`: what the family adds). `__call__` takes exactly the stock arguments (the signature is
read from the stock class, with the stock defaults) plus DATE's (`DATEOptions`), binds them into the family's
frozen request (`pipelines.request`) and runs `generate`, which reads top to bottom:

1. check the request (stock checks, DATE's options) and set the stock call state;
2. encode the prompt (the adapter's `PackedConditioning`);
3. prepare latents and timesteps in the family's stock order;
4. run the sampling loop with DATE's hooks (`pipelines.run.run_date`);
5. decode and return the stock output, with traces and records.

With no update it equals the stock pipeline. `pipe.edit(...)` is the second template (`pipelines.edit`).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import fields

import torch

from date_diffusion.editing.plan import EditArguments
from date_diffusion.pipelines.adapter import Adapter, prediction_type
from date_diffusion.pipelines.callbacks import callback_hooks, callback_names
from date_diffusion.pipelines.conditioning import PackedConditioning, pack, pack_conditioning, unpack
from date_diffusion.pipelines.options import PARAMETERS, DATEOptions, check_sampling, prepare
from date_diffusion.pipelines.request import Request, request_class
from date_diffusion.pipelines.run import (
    DATEPipelineOutput,
    DATEVideoPipelineOutput,
    Run,
    image_records,
    output_image,
    run_date,
)
from date_diffusion.sampling.hooks import Interrupt
from date_diffusion.sampling.loop import GuidedDenoiser

__all__ = [
    "DATEOptions",
    "DATEPipelineMixin",
    "DATEPipelineOutput",
    "DATEVideoPipelineOutput",
    "PackedConditioning",
    "generate",
    "pack",
    "pack_conditioning",
    "unpack",
]

# stock attributes a stock `__call__` sets from its arguments (read back through the stock properties)
_STATE = ("guidance_scale", "guidance_rescale", "clip_skip", "cross_attention_kwargs", "denoising_end",
          "joint_attention_kwargs")  # fmt: skip


# read-only call state for step-end callbacks: name -> doc (the value is the attribute `_<name>` a call sets)
_CALL_STATE = {
    "guidance_scale": "The current call's guidance scale (a step-end callback may change `_guidance_scale`).",
    "num_timesteps": "The number of denoising steps of the current (or last) call.",
}


def _stock_class(cls):
    return next(b for b in cls.__mro__ if b.__module__.startswith("diffusers.") and b.__name__.endswith("Pipeline"))


class DATEPipelineMixin:
    """Mixed in front of a stock diffusers pipeline; `pipe(...)` takes the stock arguments plus `DATEOptions`'."""

    adapter: type[Adapter] = Adapter

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        stock = inspect.signature(_stock_class(cls).__call__).parameters.values()
        params = [p for p in stock if p.kind != inspect.Parameter.VAR_KEYWORD]
        # the deprecated arguments the stock `__call__` reads from its `**kwargs` (SD's `callback`, PixArt's
        # `mask_feature`) are named arguments here; any other unknown argument is refused
        takes_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in stock)
        deprecated = dict.fromkeys(cls.adapter.deprecated_kwargs) if takes_kwargs else {}
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in {**cls.adapter.extra_parameters, **deprecated}.items()
            if name not in {p.name for p in params}
        ]
        cls._date_signature = inspect.Signature(params + extra + PARAMETERS)
        arguments = [p for p in params + extra if p.name != "self"]
        cls._date_request = request_class(f"{_stock_class(cls).__name__}Request", arguments, cls.adapter.request_state)

        def __call__(self, *args, **kwargs):
            return generate(self, self._date_bind(*args, **kwargs))

        __call__.__signature__ = cls._date_signature
        __call__.__doc__ = (
            f"Arguments and defaults as `{_stock_class(cls).__name__}.__call__`, plus those of `DATEOptions`.\n\n"
            + (DATEOptions.__doc__ or "")
        )
        cls.__call__ = __call__
        # the call state diffusers' step-end callbacks read (`pipe.guidance_scale`, `pipe.num_timesteps`), where the
        # stock class has none (PixArt's, whose DATE class takes `callback_on_step_end` as the newer pipelines do)
        for name, doc in _CALL_STATE.items():
            if not hasattr(_stock_class(cls), name):
                setattr(cls, name, property(lambda self, _n=f"_{name}": getattr(self, _n), doc=doc))

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

    def edit(self, image, source_prompt, target_prompt, **kwargs) -> DATEPipelineOutput:
        """Text-guided editing of `image` with DATE: the keyword arguments of `editing.plan.EditArguments`
        (steps, skip or strength, guidance per branch, size, FlowEdit's n_min / n_avg), DATE's options and stock
        arguments both branches take; see `pipelines.edit.edit`."""
        from date_diffusion.pipelines.edit import edit

        return edit(self, image, source_prompt, target_prompt, **kwargs)

    edit.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("self", "image", "source_prompt",
                                                                                "target_prompt")]
        + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields(EditArguments)]
        + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    )  # fmt: skip

    @property
    def date_adapter(self) -> Adapter:
        """The family's adapter over this pipeline."""
        return self.adapter(self)

    def _date_bind(self, *args, **kwargs) -> Request:
        """The call's arguments as the family's frozen request (stock defaults applied; DATE's as `DATEOptions`)."""
        bound = self._date_signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = {k: v for k, v in bound.arguments.items() if k != "self"}
        options = DATEOptions(**{p.name: values.pop(p.name) for p in PARAMETERS})
        return self._date_request(options=options, **values)

    def stock_timesteps(self, num_inference_steps: int, height: int | None = None, width: int | None = None,
                        scheduler=None, **call_arguments):  # fmt: skip
        """The timesteps this pipeline's `__call__` samples with these arguments (`call_arguments`: the stock
        ones that shape the schedule where the family takes them: `timesteps`, `sigmas`, `mu`, `denoising_end`),
        computed on `scheduler` (default: a copy of the pipeline's own, which stays as it is). Everything that asks
        which timesteps a run takes (step checks, editing, the benchmark, the page) asks here, so that it passes
        what the stock pipeline passes (FLUX.1-dev's resolution-dependent `mu`, FLUX's sigmas, ...)."""
        adapter = self.date_adapter
        side = adapter.default_size()
        request = self._date_bind(num_inference_steps=num_inference_steps, height=height or side,
                                  width=width or side, **call_arguments)  # fmt: skip
        probe = copy.deepcopy(self.scheduler) if scheduler is None else scheduler
        return adapter.timesteps(request, "cpu", probe)

    @property
    def supports_negative_prompt(self) -> bool:
        """Whether the family samples with a negative prompt (classifier-free guidance)."""
        return self.adapter.negative_branch

    def default_image_size(self) -> int:
        """The side in pixels the model samples when no height / width is given."""
        return self.date_adapter.default_size()

    def default_image_shape(self) -> tuple[int, int]:
        """(height, width) the model samples when none is given: the stock call's defaults where it has them (the
        video pipelines': Wan's 480 x 832), else the square `default_image_size`."""
        params = self._date_signature.parameters
        height, width = (params[k].default if k in params else None for k in ("height", "width"))
        if isinstance(height, int) and isinstance(width, int):
            return height, width
        side = self.default_image_size()
        return side, side

    @property
    def video_fps(self) -> int | None:
        """A video pipeline's frames per second (what its videos are written at); None for image pipelines."""
        return self.adapter.video_fps

    def settings_without_effect(self, guidance_scale: float, negative_prompt=None,
                                true_cfg_scale: float | None = None) -> dict[str, str]:  # fmt: skip
        """The sampling settings a call with these values would take without any effect, each with why (what a
        record names as such instead of stating it as applied): `guidance_scale` where it is not the scale of the
        classifier-free guidance that runs and the denoiser takes no guidance input (FLUX.1-schnell, Qwen-Image, or
        a scale of 1 or less), `negative_prompt` where no negative branch runs. `true_cfg_scale`: default the stock
        one, where the family takes it."""
        adapter = self.date_adapter
        if true_cfg_scale is None:
            stock = self._date_signature.parameters.get("true_cfg_scale")
            true_cfg_scale = stock.default if stock is not None else 1.0
        cfg = adapter.cfg_at(guidance_scale, negative_prompt is not None, true_cfg_scale)
        takes_guidance, denoiser = adapter.guidance_input()
        why, out = adapter.no_cfg_reason(guidance_scale), {}
        if not (cfg and adapter.guidance_is_cfg_scale) and not takes_guidance:
            out["guidance_scale"] = f"no classifier-free guidance runs ({why}) and {denoiser}"
        if negative_prompt is not None and not cfg:
            out["negative_prompt"] = f"no negative branch runs ({why})"
        return out

    def applied_settings(self, guidance_scale: float, negative_prompt=None) -> dict:
        """The record's `guidance_scale` and `negative_prompt` as a call with them applies them: one without
        effect (`settings_without_effect`) is null, and named under `without_effect` with its value and why."""
        without = self.settings_without_effect(guidance_scale, negative_prompt=negative_prompt)
        given = {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
        out = {name: None if name in without else value for name, value in given.items()}
        if without:
            out["without_effect"] = {name: {"value": given[name], "why": why} for name, why in without.items()}
        return out

    @property
    def interrupt(self) -> bool:
        """Whether the current (or last) call was interrupted (the stock property; PixArt's stock class lacks it)."""
        return self._interrupt

    def request_interrupt(self) -> None:
        """End the current call at the next step (diffusers' `interrupt`, e.g. from a callback or a Stop button);
        each call starts uninterrupted."""
        self._interrupt = True


def check(pipe, adapter: Adapter, request: Request) -> Request:
    """Every check before any work (stock checks, DATE's options); returns the request the run takes and sets the
    stock call state (guidance scale, attention kwargs, interrupt) on the pipeline, as a stock call does."""
    request = check_sampling(request)
    warn_deprecated(adapter, request)
    if request.options.adapt_pooled and not adapter.has_pooled:
        raise ValueError(f"adapt_pooled=True: {type(pipe).__name__} has no pooled text embedding to adapt")
    request = adapter.check(adapter.sized(request))
    allowed = getattr(pipe, "_callback_tensor_inputs", ["latents"])
    bad = [k for k in callback_names(request) if k not in allowed]
    if bad:
        raise ValueError(f"callback_on_step_end_tensor_inputs {bad} are not among this pipeline's: {allowed}")
    options = prepare(pipe, request, request.options, hasattr(adapter, "attend_excite"))
    for name in _STATE:
        setattr(pipe, f"_{name}", getattr(request, name))
    pipe._interrupt, pipe._current_timestep = False, None
    return request.replace(options=options)


def warn_deprecated(adapter: Adapter, request: Request) -> None:
    """The stock warning for each deprecated argument the call gives (`Adapter.deprecated_kwargs`)."""
    from diffusers.utils import deprecate

    for name, message in adapter.deprecated_kwargs.items():
        if getattr(request, name, None) is not None:
            deprecate(name, "1.0.0", message, standard_warn=False)


def pre_steps(pipe, adapter: Adapter, request: Request, n_steps: int, cond) -> list:
    """Hooks before each step: the interrupt, Attend-and-Excite (moves the latents), EBCA (cross-attention)."""
    options = request.options
    hooks = [Interrupt(lambda: pipe._interrupt)]
    if options.attend_and_excite is not None:
        hooks.append(adapter.attend_excite(request, options.attend_and_excite, n_steps, cond))
    if options.ebca is not None:
        from date_diffusion.sampling.ebca import Ebca

        hooks.append(Ebca(pipe.unet, options.ebca, n_steps))
    return hooks


def schedule(adapter: Adapter, request: Request, cond: PackedConditioning, device):
    """(initial latents, timesteps) in the family's stock order."""
    n_images, dtype = cond.cond.shape[0], cond.cond.dtype
    if adapter.latents_first:  # the schedule depends on the latents' size (flow matching's shift)
        latents = adapter.latents(request, n_images, dtype, device)
        return latents, adapter.timesteps(request, device, latents=latents)
    timesteps = adapter.timesteps(request, device)  # the initial noise is scaled by the first noise level
    return adapter.latents(request, n_images, dtype, device), timesteps


def guided_denoiser(pipe, adapter: Adapter, request: Request, cond, n_steps: int) -> GuidedDenoiser:
    """The family's denoiser with classifier-free guidance and the family's guidance options."""
    options = adapter.guidance(request, cond, n_steps)
    return GuidedDenoiser(adapter.denoiser(request, cond), prediction_type(pipe), request.guidance_rescale, **options)


def step_kwargs(pipe, request: Request) -> dict:
    """`scheduler.step`'s extra arguments (eta, generator) where the stock pipeline passes them."""
    return pipe.prepare_extra_step_kwargs(request.generator, request.eta) if request.eta is not None else {}


@torch.no_grad()
def generate(pipe, request: Request):
    """The generation template (see the module's docstring)."""
    adapter, device = pipe.date_adapter, pipe._execution_device
    # 1. checks and the stock call state
    request = check(pipe, adapter, request)
    # 2. the prompt's conditioning
    cond = adapter.encode(request, device)
    # 3. latents and timesteps
    latents, timesteps = schedule(adapter, request, cond, device)
    pipe._num_timesteps = len(timesteps)
    # 4. the sampling loop with DATE
    run = Run(
        scheduler=pipe.scheduler,
        model=guided_denoiser(pipe, adapter, request, cond, len(timesteps)),
        cond=cond,
        latents=latents,
        timesteps=timesteps,
        guidance_scale=pipe._guidance_scale,
        step_kwargs=step_kwargs(pipe, request),
        to_vae=lambda x: adapter.to_vae(request, x),
        vae_decode=adapter.vae_decode,
        video=adapter.video_fps is not None,
        before=pre_steps(pipe, adapter, request, len(timesteps), cond),
        after=callback_hooks(pipe, lambda: adapter.cfg(request), request, cond),
    )
    result, traces = run_date(pipe, adapter.module, run, request.options, request.generator)
    # 5. decoding and the stock output
    image, nsfw = output_image(pipe, adapter, request, result.latents, cond.cond.dtype, device)
    pipe.maybe_free_model_hooks()
    if not request.return_dict:
        return adapter.output_tuple(image, nsfw)
    records = image_records(pipe, adapter.module, request, request.options, traces)
    if adapter.video_fps is not None:  # the stock video pipelines' `frames`
        return DATEVideoPipelineOutput(frames=image, traces=traces, prompts=request.options.texts, records=records,
                                       fps=adapter.fps(request))  # fmt: skip
    return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces,
                              prompts=request.options.texts, records=records)  # fmt: skip
