"""Scheduler names accepted by the CLI, each a stock diffusers scheduler built from the model's own config."""

from __future__ import annotations

SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def is_same(name: str, class_name: str | None) -> bool:
    """Whether the scheduler `name` (see SCHEDULERS) is what a model shipping `class_name` already runs."""
    cls_name, extra = SCHEDULERS[name]
    return class_name == cls_name and not extra


def make_scheduler(name: str, base_config):
    """A scheduler called `name` (see SCHEDULERS) with the model's training schedule from `base_config`."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(base_config, **extra)


def check_steps_fit(pipe, steps: int, name: str = "--steps", height=None, width=None, scheduler=None) -> None:
    """A step count the pipeline's scheduler (or `scheduler`, e.g. an editor's own) cannot take (e.g. 1000 DDIM
    steps with `steps_offset=1` reaches past the last training timestep) is refused (`SettingError` about
    `num_inference_steps`, naming `name`) before sampling. The timesteps are prepared as the stock pipeline prepares
    them (`pipe.stock_timesteps`: FLUX.1-dev's resolution-dependent shift included), on a copy of the scheduler:
    the command line, the benchmark and the web page ask the same question once the model is loaded."""
    import copy

    from date_diffusion.core.settings import SettingError

    probe = copy.deepcopy(scheduler if scheduler is not None else pipe.scheduler)
    try:
        timesteps = pipe.stock_timesteps(steps, height, width, scheduler=probe)
    except (ValueError, IndexError) as err:
        raise SettingError(f"{name} {steps}: {type(probe).__name__} cannot take it ({err}); use fewer").about(
            "num_inference_steps"
        ) from err
    acp = getattr(probe, "alphas_cumprod", None)
    if acp is not None and len(timesteps) and int(timesteps.max()) >= len(acp):
        raise SettingError(
            f"{name} {steps} is more than {type(probe).__name__} can take with this model's configuration "
            f"(its timesteps would pass {len(acp) - 1}); use fewer steps"
        ).about("num_inference_steps")
