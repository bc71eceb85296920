"""An edit's arguments and its plan (the editor, steps, skip, each branch's guidance), checked once."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from date_diffusion.editing import EditDefaults


@dataclass(frozen=True)
class EditArguments:
    """An edit's own arguments (see `edit`)."""

    num_inference_steps: int | None = None
    skip: int | None = None
    cfg_src: float | None = None
    cfg_tar: float | None = None
    negative_prompt: str | list[str] | None = None
    generator: torch.Generator | list[torch.Generator] | None = None
    output_type: str = "pil"
    strength: float | None = None
    height: int | None = None
    width: int | None = None
    n_min: int = 0
    n_avg: int = 1


@dataclass(frozen=True)
class EditPlan:
    """What an edit runs: the editor, `steps` in all, the first `skip` not regenerated, each branch's guidance,
    and FlowEdit's `n_min` (last steps sampled plainly) and `n_avg` (noise draws per step)."""

    editor: str
    steps: int
    skip: int
    cfg_src: float
    cfg_tar: float
    n_min: int = 0
    n_avg: int = 1


def edit_plan(defaults: EditDefaults, arguments: EditArguments) -> EditPlan:
    """The plan from the caller's values (None: the family's default; `strength` in (0, 1]: the fraction of steps
    regenerated, as diffusers' img2img counts it), checked."""
    a = arguments
    steps = defaults.steps if a.num_inference_steps is None else int(a.num_inference_steps)
    if steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
    if a.skip is not None and a.strength is not None:
        raise ValueError("give `skip` or `strength`, not both")
    skip = a.skip
    if a.strength is not None:
        if not 0 < a.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {a.strength}")
        skip = steps - min(int(steps * a.strength), steps)
    skip = defaults.skip_for(steps) if skip is None else skip
    if not 0 <= skip < steps:
        raise ValueError(f"skip must be in [0, {steps - 1}] (steps not regenerated), got {skip}")
    if defaults.editor != "flowedit" and (a.n_min, a.n_avg) != (0, 1):
        raise ValueError("n_min and n_avg are FlowEdit's (the flow families); this family edits by DDPM inversion")
    if not 0 <= a.n_min <= steps - skip or a.n_avg < 1:
        raise ValueError(f"n_min must be in [0, {steps - skip}] and n_avg >= 1, got n_min {a.n_min}, n_avg {a.n_avg}")
    cfg_src = defaults.cfg_src if a.cfg_src is None else a.cfg_src
    cfg_tar = defaults.cfg_tar if a.cfg_tar is None else a.cfg_tar
    return EditPlan(defaults.editor, steps, skip, cfg_src, cfg_tar, a.n_min, a.n_avg)
