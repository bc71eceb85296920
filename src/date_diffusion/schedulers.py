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


def make_scheduler(name: str, base_config):
    """A scheduler called `name` (see SCHEDULERS) with the model's training schedule from `base_config`."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(base_config, **extra)


def check_steps_fit(scheduler, steps: int, name: str = "--steps") -> None:
    """A step count the model's scheduler cannot take (e.g. 1000 DDIM steps with `steps_offset=1` reaches past the
    last training timestep) is refused (`SettingError` about `num_inference_steps`, naming `name`) before sampling:
    the command line, the benchmark and the web page ask the same question once the model is loaded."""
    import copy

    from date_diffusion.core.settings import SettingError

    probe = copy.deepcopy(scheduler)
    try:
        probe.set_timesteps(steps)
    except (ValueError, IndexError) as err:
        raise SettingError(f"{name} {steps}: {type(scheduler).__name__} cannot take it ({err}); use fewer").about(
            "num_inference_steps"
        ) from err
    acp = getattr(probe, "alphas_cumprod", None)
    if acp is not None and len(probe.timesteps) and int(probe.timesteps.max()) >= len(acp):
        raise SettingError(
            f"{name} {steps} is more than {type(scheduler).__name__} can take with this model's configuration "
            f"(its timesteps would pass {len(acp) - 1}); use fewer steps"
        ).about("num_inference_steps")
