"""One typed request per call: the stock arguments a family's pipeline takes plus DATE's options, frozen.

`request_class(stock_parameters)` makes a family's request class once, when its pipeline class is defined, from
the stock `__call__` signature (the stock defaults are the fields' defaults). `Request`, its base, declares the
arguments the templates read for every family, with the neutral value a family without them behaves as (no
`eta`, no guidance rescale, no custom schedule, ...); a family's own fields (FLUX's `true_cfg_scale`, SDXL's
`original_size`, ...) are read only by its adapter. The call is bound, checked and frozen once at the boundary
(`DATEPipelineMixin.__call__`); a check that settles a value (the default size, a coerced step count, PixArt's
aspect-ratio bin) returns a new request (`dataclasses.replace`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field

from date_diffusion.pipelines.options import DATEOptions


@dataclass(frozen=True, eq=False)
class Request:
    """The arguments the templates read (each family's request class gives them its stock defaults)."""

    options: DATEOptions = field(default_factory=DATEOptions)
    stock_names: frozenset = field(default=frozenset(), repr=False)  # the family's stock argument names
    prompt: object = None
    negative_prompt: object = None
    prompt_embeds: object = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    timesteps: object = None
    sigmas: object = None
    guidance_scale: float = 1.0
    guidance_rescale: float = 0.0
    num_images_per_prompt: int = 1
    eta: float | None = None
    generator: object = None
    latents: object = None
    ip_adapter_image: object = None
    ip_adapter_image_embeds: object = None
    output_type: str = "pil"
    return_dict: bool = True
    cross_attention_kwargs: dict | None = None
    joint_attention_kwargs: dict | None = None
    clip_skip: int | None = None
    denoising_end: float | None = None
    callback_on_step_end: object = None
    callback_on_step_end_tensor_inputs: list = field(default_factory=lambda: ["latents"])
    callback: object = None
    callback_steps: int | None = None

    def stock_args(self, method, **given) -> dict:
        """Keyword arguments for a stock method: `given`, then this call's stock arguments of the same names."""
        names = inspect.signature(method).parameters
        return {n: given[n] if n in given else getattr(self, n) for n in names if n in given or n in self.stock_names}

    @property
    def per_prompt(self) -> int:
        """Outputs per prompt: the stock `num_images_per_prompt`, or a video pipeline's `num_videos_per_prompt`."""
        video = "num_videos_per_prompt" in self.stock_names
        return (self.num_videos_per_prompt if video else self.num_images_per_prompt) or 1

    def replace(self, **changes) -> Request:
        return dataclasses.replace(self, **changes)


def _field(parameter: inspect.Parameter):
    default = parameter.default
    if isinstance(default, (list, dict, set)):  # a fresh copy per request, as a stock call's default
        return field(default_factory=lambda: copy.copy(default))
    return field(default=default)


def request_class(name: str, parameters: list[inspect.Parameter], state: dict | None = None) -> type[Request]:
    """A family's request class: a field per stock `parameters` entry (its default), plus `state` (name ->
    default): values a family's check settles for later steps that are no arguments (PixArt's requested size)."""
    names = frozenset(p.name for p in parameters)
    fields_ = [(p.name, object, _field(p)) for p in parameters]
    fields_ += [(k, object, field(default=v)) for k, v in (state or {}).items()]
    fields_.append(("stock_names", frozenset, field(default=names, repr=False)))
    return dataclasses.make_dataclass(name, fields_, bases=(Request,), frozen=True, eq=False)
