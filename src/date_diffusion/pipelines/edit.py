"""`pipe.edit(image, source_prompt, target_prompt, ...)`: the editing template, a second template over the same
family adapter as generation (`pipelines.adapter`), with DATE on the target branch.

1. the plan: the editor and its defaults (`editing.EDIT_DEFAULTS`, by family), steps, skip or strength, source
   and target guidance;
2. two branches, each a request through the family's checks and encoding, as generation runs them: the source
   prompt with the source guidance (never adapted) and the target prompt with the target guidance and DATE's
   options;
3. the image's latents in the model's layout (the adapter's `from_vae`: FLUX packs them);
4. the editor's `Run` (`ddpm`: edit-friendly DDPM inversion, then regeneration with the noise maps; `flowedit`:
   FlowEdit's ODE on z_edit), run by `run.run_date` with DATE's update on the target branch;
5. decoding and the generation's output object (`DATEPipelineOutput`, with DATE's traces and records).

A family adds nothing for editing beyond its adapter (and `Adapter.edit_arguments`, stock arguments an edit fixes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from date_diffusion.core.vae import encode_image, model_latents
from date_diffusion.editing import EditDefaults
from date_diffusion.editing.plan import EditArguments, EditPlan, edit_plan
from date_diffusion.pipelines.common import check, guided_denoiser
from date_diffusion.pipelines.conditioning import PackedConditioning
from date_diffusion.pipelines.options import DATEOptions
from date_diffusion.pipelines.request import Request
from date_diffusion.pipelines.run import DATEPipelineOutput, Run, image_records, output_image, run_date
from date_diffusion.sampling.hooks import Interrupt
from date_diffusion.sampling.loop import GuidedDenoiser

# the DATE options an edit takes (the others belong to generation: replay, save, guidance baselines, A&E)
EDIT_OPTIONS = ("date", "reward", "reward_prompt", "gradient_checkpointing", "reward_decoder", "reward_resolution",
                "adapt_pooled")  # fmt: skip
# stock arguments the edit sets itself (or that have no meaning for an edit); other stock arguments pass through
RESERVED = {"prompt", "prompt_2", "prompt_3", "negative_prompt", "num_inference_steps", "guidance_scale", "height",
            "width", "generator", "output_type", "return_dict", "num_images_per_prompt", "eta", "timesteps",
            "sigmas", "mu", "latents", "denoising_end", "self"}  # fmt: skip
RESERVED_PARTS = ("embeds", "callback", "ip_adapter")


@dataclass(frozen=True)
class Branch:
    """One prompt's side of an edit: its checked request, packed conditioning, guided denoiser and guidance."""

    request: Request
    cond: PackedConditioning
    model: GuidedDenoiser
    guidance: float


def edit_defaults(pipeline_class) -> EditDefaults:
    """A DATE pipeline class's editor and its defaults (its family record's `edit`)."""
    from date_diffusion.families import by_pipeline_class

    family = by_pipeline_class(pipeline_class.__name__)
    if family.edit is None:
        raise ValueError(f"{family.title} has no editor: edit() runs on the families whose record names one")
    return family.edit


def split_arguments(pipe, kwargs: dict) -> tuple[EditArguments, DATEOptions, dict]:
    """(the edit's own arguments, DATE's options, stock arguments) of an edit's keyword arguments; others refused."""
    own = {f.name for f in fields(EditArguments)}
    date = {f.name for f in fields(DATEOptions)}
    names = pipe._date_signature.parameters
    stock = {n for n in names if n not in RESERVED | date and not any(part in n for part in RESERVED_PARTS)}
    unknown = sorted(set(kwargs) - own - set(EDIT_OPTIONS) - stock)
    if unknown:
        raise TypeError(
            f"edit() got {unknown}; it takes the DATE options {', '.join(EDIT_OPTIONS)} and the stock arguments "
            f"{', '.join(sorted(stock))}"
        )
    arguments = EditArguments(**{k: v for k, v in kwargs.items() if k in own})
    options = DATEOptions(**{k: v for k, v in kwargs.items() if k in EDIT_OPTIONS})
    return arguments, options, {**pipe.adapter.edit_arguments, **{k: v for k, v in kwargs.items() if k in stock}}


def branch(pipe, base: Request, prompt, guidance: float, options: DATEOptions, n_steps: int) -> Branch:
    """One prompt's request through the family's checks, encoding and guided denoiser, as generation runs them."""
    adapter = pipe.date_adapter
    request = check(pipe, adapter, base.replace(prompt=prompt, guidance_scale=guidance, options=options))
    cond = adapter.encode(request, pipe._execution_device)
    return Branch(request, cond, guided_denoiser(pipe, adapter, request, cond, n_steps), guidance)


def image_latents(pipe, request: Request, pixels: torch.Tensor, dtype) -> torch.Tensor:
    """The image's latents in the model's layout (the VAE's mode, as diffusers' inversion pipelines take it)."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:  # as stock SDXL img2img: a float16 SDXL VAE overflows
        vae.to(dtype=torch.float32)
    try:
        latents = encode_image(vae, pixels.to(vae.dtype))
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return pipe.date_adapter.from_vae(request, model_latents(latents, vae).to(dtype))


def ddpm_run(pipe, x_src, source: Branch, target: Branch, plan: EditPlan, generator, device) -> Run:
    """Edit-friendly DDPM inversion with the source branch, then the target branch's regeneration."""
    from date_diffusion.editing.ddpm_inversion import AddResiduals, inversion_scheduler, invert

    sched = inversion_scheduler(pipe.scheduler.config, plan.steps, device)
    inv = invert(source.model, sched, x_src, source.cond.cond, source.cond.uncond, source.guidance, generator)
    adapter = pipe.date_adapter
    return Run(
        scheduler=sched,
        model=target.model,
        cond=target.cond,
        latents=inv.xts[plan.skip],
        timesteps=inv.timesteps[plan.skip :],
        guidance_scale=target.guidance,
        step_kwargs=lambda i: {"eta": 1.0, "variance_noise": inv.zs[plan.skip + i]},
        to_vae=lambda x: adapter.to_vae(target.request, x),
        before=[Interrupt(lambda: pipe._interrupt)],
        after=[AddResiduals(inv.residuals, plan.skip)],
    )


def flowedit_run(pipe, x_src, source: Branch, target: Branch, plan: EditPlan, generator, device) -> Run:
    """FlowEdit on the model's own Euler schedule, from loop index `skip` (n_max = steps - skip)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from date_diffusion.editing.flowedit import FlowEditDenoiser, FlowEditStep

    if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
        raise ValueError(f"FlowEdit integrates with Euler steps: {type(pipe.scheduler).__name__} is not "
                         "FlowMatchEulerDiscreteScheduler")  # fmt: skip
    adapter = pipe.date_adapter
    timesteps = adapter.timesteps(target.request, device, latents=x_src)
    pipe.scheduler.set_begin_index(plan.skip)  # as diffusers' img2img pipelines start inside the schedule
    model = FlowEditDenoiser(target.model, x_src)
    n_edit = plan.steps - plan.skip - plan.n_min
    step = FlowEditStep(model, source.model, source.cond.cond, source.cond.uncond, source.guidance, n_edit,
                        plan.n_avg, generator)  # fmt: skip
    return Run(
        scheduler=pipe.scheduler,
        model=model,
        cond=target.cond,
        latents=x_src.clone(),
        timesteps=timesteps[plan.skip :],
        guidance_scale=target.guidance,
        to_vae=lambda x: adapter.to_vae(target.request, x),
        before=[Interrupt(lambda: pipe._interrupt), step],
    )


@torch.no_grad()
def edit(pipe, image, source_prompt, target_prompt, **kwargs) -> DATEPipelineOutput:
    """Text-guided editing of `image` (one image per target prompt), optionally with DATE.

    The family's editor (`ddpm`: SD 1.x/2.x, SDXL, PixArt; `flowedit`: SD3, FLUX; see `docs/editing.md`) runs
    `num_inference_steps` steps and regenerates all but the first `skip` (or the fraction `strength`), the source
    branch with `source_prompt` and guidance `cfg_src`, the target branch with `target_prompt` and `cfg_tar`; DATE
    adapts the target embedding at its update indices (counted from the first regenerated step), its reward
    scoring the target branch's x0_hat. Defaults are the family's (`editing.EDIT_DEFAULTS`). With `target_prompt ==
    source_prompt`, `cfg_tar == cfg_src` and no DATE the result reconstructs the input (DDPM: up to float rounding;
    FlowEdit: its latents exactly). `n_min`, `n_avg`: FlowEdit's. Keyword arguments: those of `EditArguments`;
    `date`, `reward`, `adapt_pooled` and the reward path's options of `DATEOptions`; and stock arguments of the
    family's `__call__` that both branches take (e.g. `max_sequence_length`, `cross_attention_kwargs`).
    """
    # 1. the plan
    arguments, options, stock = split_arguments(pipe, kwargs)
    plan = edit_plan(edit_defaults(type(pipe)), arguments)
    device = pipe._execution_device
    pixels = pipe.image_processor.preprocess(image, height=arguments.height, width=arguments.width)
    pixels = pixels.to(device, pipe.vae.dtype)
    negative = {} if arguments.negative_prompt is None else {"negative_prompt": arguments.negative_prompt}
    base = pipe._date_bind(
        height=pixels.shape[-2],
        width=pixels.shape[-1],
        num_inference_steps=plan.steps,
        generator=arguments.generator,
        output_type=arguments.output_type,
        **negative,
        **stock,
    )  # fmt: skip  (no negative prompt given: the stock default, PixArt's is "")
    # 2. the two branches
    n_steps = plan.steps - plan.skip
    source = branch(pipe, base, source_prompt, plan.cfg_src, DATEOptions(), n_steps)
    target = branch(pipe, base, target_prompt, plan.cfg_tar, options, n_steps)
    texts = target.request.options.texts
    if pixels.shape[0] != len(texts):
        raise ValueError(f"got {pixels.shape[0]} images for {len(texts)} target prompts")
    # 3. the image's latents
    x_src = image_latents(pipe, target.request, pixels, target.cond.cond.dtype)
    # 4. the editor's run, with DATE on the target branch
    editor = ddpm_run if plan.editor == "ddpm" else flowedit_run
    run = editor(pipe, x_src, source, target, plan, arguments.generator, device)
    module = pipe.date_adapter.module
    result, traces = run_date(pipe, module, run, target.request.options, arguments.generator)
    # 5. decoding and the output
    image, nsfw = output_image(pipe, pipe.date_adapter, target.request, result.latents, target.cond.cond.dtype,
                               device)  # fmt: skip
    pipe.maybe_free_model_hooks()
    records = [{**r, "source_prompt": source_prompt, "editor": plan.editor, "skip": plan.skip}
               for r in image_records(pipe, module, target.request, target.request.options, traces)]  # fmt: skip
    return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces, prompts=texts,
                              records=records)  # fmt: skip
