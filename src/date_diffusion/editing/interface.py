"""`pipe.edit(image, source_prompt, target_prompt, ...)`: text-guided editing with DATE on every DATE pipeline.

`EditingMixin` sits beside `DATEPipelineMixin` in each family's pipeline class and runs one template over the
family's adapter (the same `_date_encode`, `_date_denoise`, `_date_guidance`, `_date_to_vae` as generation):

1. the plan: the editor and its defaults (`_date_edit_defaults`, see `editing.EDIT_DEFAULTS`), steps, skip or
   strength, source and target guidance;
2. two branches, each a stock-style call through the family's checks and encoding: the source prompt with the
   source guidance (never adapted) and the target prompt with the target guidance and DATE's options;
3. the image's latents in the model's layout (`_date_edit_layout`: FLUX packs them);
4. the editor's `Run` (`ddpm`: edit-friendly DDPM inversion, then regeneration with the noise maps; `flowedit`:
   FlowEdit's ODE on z_edit), run by the template's `_date_run` with DATE's update hook on the target branch;
5. decoding and the generation's output object (`DATEPipelineOutput`, with DATE's traces).

A family adds only small hooks: `_date_edit_defaults` (its editor), `_date_edit_call_args` (stock arguments an edit
fixes, e.g. PixArt's resolution binning off) and `_date_edit_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from date_diffusion.editing import EDIT_DEFAULTS, EditDefaults
from date_diffusion.pipelines.common import DATEOptions, DATEPipelineOutput, PackedConditioning, Run
from date_diffusion.pipelines.reward_path import latent_stats
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


@dataclass
class Branch:
    """One prompt's side of an edit: its stock-style call, packed conditioning, guided denoiser and guidance."""

    call: SimpleNamespace
    cond: PackedConditioning
    model: GuidedDenoiser
    guidance: float


def edit_plan(defaults: EditDefaults, steps=None, skip=None, strength=None, cfg_src=None, cfg_tar=None, n_min=0,
              n_avg=1) -> EditPlan:  # fmt: skip
    """The plan from the caller's values (None: the family's default; `strength` in (0, 1]: the fraction of steps
    regenerated, as diffusers' img2img counts it), checked."""
    steps = defaults.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
    if skip is not None and strength is not None:
        raise ValueError("give `skip` or `strength`, not both")
    if strength is not None:
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        skip = steps - min(int(steps * strength), steps)
    skip = defaults.skip_for(steps) if skip is None else skip
    if not 0 <= skip < steps:
        raise ValueError(f"skip must be in [0, {steps - 1}] (steps not regenerated), got {skip}")
    if defaults.editor != "flowedit" and (n_min, n_avg) != (0, 1):
        raise ValueError("n_min and n_avg are FlowEdit's (SD3, FLUX); this family edits by DDPM inversion")
    if not 0 <= n_min <= steps - skip or n_avg < 1:
        raise ValueError(f"n_min must be in [0, {steps - skip}] and n_avg >= 1, got n_min {n_min}, n_avg {n_avg}")
    cfg_src = defaults.cfg_src if cfg_src is None else cfg_src
    cfg_tar = defaults.cfg_tar if cfg_tar is None else cfg_tar
    return EditPlan(defaults.editor, steps, skip, cfg_src, cfg_tar, n_min, n_avg)


def model_latents(vae_latents: torch.Tensor, vae) -> torch.Tensor:
    """VAE latents -> the model's (the inverse of `pipelines.reward_path.vae_input`)."""
    cfg = vae.config
    if stats := latent_stats(cfg, vae_latents):
        mean, std = stats
        return (vae_latents - mean) * cfg.scaling_factor / std
    return (vae_latents - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor


def edit_defaults(pipeline_class) -> EditDefaults:
    """A DATE pipeline class's editor and its defaults (`editing.EDIT_DEFAULTS`, by the class's family)."""
    from date_diffusion.families import by_pipeline_class

    return EDIT_DEFAULTS[by_pipeline_class(pipeline_class.__name__).name]


class EditingMixin:
    """`edit(...)` for a DATE pipeline (mixed in beside `DATEPipelineMixin`)."""

    @property
    def _date_edit_defaults(self) -> EditDefaults:
        return edit_defaults(type(self))

    @torch.no_grad()
    def edit(
        self,
        image,
        source_prompt: str | list[str],
        target_prompt: str | list[str],
        num_inference_steps: int | None = None,
        skip: int | None = None,
        cfg_src: float | None = None,
        cfg_tar: float | None = None,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        *,
        strength: float | None = None,
        height: int | None = None,
        width: int | None = None,
        n_min: int = 0,
        n_avg: int = 1,
        **kwargs,
    ) -> DATEPipelineOutput:
        """Text-guided editing of `image` (one image per target prompt), optionally with DATE.

        The family's editor (`ddpm`: SD 1.x/2.x, SDXL, PixArt; `flowedit`: SD3, FLUX; see `docs/editing.md`) runs
        `num_inference_steps` steps and regenerates all but the first `skip` (or the fraction `strength`), the
        source branch with `source_prompt` and guidance `cfg_src`, the target branch with `target_prompt` and
        `cfg_tar`; DATE adapts the target embedding at its update indices (counted from the first regenerated
        step), its reward scoring the target branch's x0_hat. Defaults are the family's (`editing.EDIT_DEFAULTS`).
        With `target_prompt == source_prompt`, `cfg_tar == cfg_src` and no DATE the result reconstructs the input
        (DDPM: up to float rounding; FlowEdit: its latents exactly). `n_min`, `n_avg`: FlowEdit's. `kwargs`:
        `date`, `reward`, `adapt_pooled` and the reward path's options of `DATEOptions`, and stock arguments of the
        family's `__call__` that both branches take (e.g. `max_sequence_length`, `cross_attention_kwargs`).
        """
        plan = edit_plan(self._date_edit_defaults, num_inference_steps, skip, strength, cfg_src, cfg_tar, n_min,
                         n_avg)  # fmt: skip
        options, stock = self._date_edit_arguments(kwargs)
        device = self._execution_device
        pixels = self.image_processor.preprocess(image, height=height, width=width).to(device, self.vae.dtype)
        size = dict(height=pixels.shape[-2], width=pixels.shape[-1])
        stock.update(size, num_inference_steps=plan.steps, generator=generator, output_type=output_type)
        if negative_prompt is not None:  # else the stock default (PixArt's is "")
            stock["negative_prompt"] = negative_prompt
        source = self._date_edit_branch(source_prompt, plan.cfg_src, stock, DATEOptions(), plan, device)
        target = self._date_edit_branch(target_prompt, plan.cfg_tar, stock, options, plan, device)
        if pixels.shape[0] != len(options.texts):
            raise ValueError(f"got {pixels.shape[0]} images for {len(options.texts)} target prompts")
        x_src = self._date_edit_latents(target.call, pixels, target.cond.cond.dtype)
        editor = self._date_edit_ddpm if plan.editor == "ddpm" else self._date_edit_flow
        run = editor(x_src, source, target, plan, generator, device)
        result, traces = self._date_run(run, options, generator)
        image, nsfw = self._date_output_image(target.call, result.latents, target.cond.cond.dtype, device)
        self.maybe_free_model_hooks()
        records = [{**r, "source_prompt": source_prompt, "editor": plan.editor, "skip": plan.skip}
                   for r in self._date_records(target.call, options, traces)]  # fmt: skip
        return DATEPipelineOutput(images=image, nsfw_content_detected=nsfw, traces=traces, prompts=options.texts,
                                  records=records)  # fmt: skip

    # ------------------------------------------------------------------ the template's pieces

    def _date_edit_arguments(self, kwargs: dict) -> tuple[DATEOptions, dict]:
        """(DATE's options, stock arguments) of an edit's extra keyword arguments; others are refused."""
        date = set(DATEOptions.__dataclass_fields__)
        names = self._date_signature.parameters
        stock = {n for n in names if n not in RESERVED | date and not any(part in n for part in RESERVED_PARTS)}
        unknown = sorted(set(kwargs) - set(EDIT_OPTIONS) - stock)
        if unknown:
            raise TypeError(
                f"edit() got {unknown}; it takes the DATE options {', '.join(EDIT_OPTIONS)} and the stock arguments "
                f"{', '.join(sorted(stock))}"
            )
        options = DATEOptions(**{k: v for k, v in kwargs.items() if k in EDIT_OPTIONS})
        return options, {**self._date_edit_call_args(), **{k: v for k, v in kwargs.items() if k in stock}}

    def _date_edit_branch(self, prompt, guidance, stock: dict, options: DATEOptions, plan: EditPlan, device):
        """One prompt's call through the family's checks, encoding and guided denoiser, as generation runs them."""
        bound = self._date_signature.bind(self, prompt=prompt, guidance_scale=guidance, **stock)
        bound.apply_defaults()
        call = SimpleNamespace(**{k: v for k, v in bound.arguments.items() if k != "self"})
        self._date_check_call(call, options)
        cond = self._date_encode(call, options, device)
        guidance_options = self._date_guidance(call, cond, plan.steps - plan.skip)
        denoise = self._date_denoise(call, cond)
        rescale = getattr(call, "guidance_rescale", 0.0)
        model = GuidedDenoiser(denoise, self._date_prediction_type(), rescale, **guidance_options)
        return Branch(call, cond, model, guidance)

    def _date_edit_latents(self, call, pixels: torch.Tensor, dtype) -> torch.Tensor:
        """The image's latents in the model's layout (the VAE's mode, as diffusers' inversion pipelines take it)."""
        vae = self.vae
        upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
        if upcast:  # as stock SDXL img2img: a float16 SDXL VAE overflows
            vae.to(dtype=torch.float32)
        try:
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
        return self._date_edit_layout(call, model_latents(latents, vae).to(dtype))

    def _date_edit_ddpm(self, x_src, source: Branch, target: Branch, plan: EditPlan, generator, device) -> Run:
        """Edit-friendly DDPM inversion with the source branch, then the target branch's regeneration."""
        from date_diffusion.editing.ddpm_inversion import AddResiduals, inversion_scheduler, invert

        sched = inversion_scheduler(self.scheduler.config, plan.steps, device)
        inv = invert(source.model, sched, x_src, source.cond.cond, source.cond.uncond, source.guidance, generator)
        return Run(
            scheduler=sched,
            model=target.model,
            cond=target.cond,
            latents=inv.xts[plan.skip],
            timesteps=inv.timesteps[plan.skip :],
            guidance_scale=target.guidance,
            step_kwargs=lambda i: {"eta": 1.0, "variance_noise": inv.zs[plan.skip + i]},
            to_vae=lambda x: self._date_to_vae(target.call, x),
            before=[Interrupt(lambda: self._interrupt)],
            after=[AddResiduals(inv.residuals, plan.skip)],
        )

    def _date_edit_flow(self, x_src, source: Branch, target: Branch, plan: EditPlan, generator, device) -> Run:
        """FlowEdit on the model's own Euler schedule, from loop index `skip` (n_max = steps - skip)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        from date_diffusion.editing.flowedit import FlowEditDenoiser, FlowEditStep

        if not isinstance(self.scheduler, FlowMatchEulerDiscreteScheduler):
            raise ValueError(f"FlowEdit integrates with Euler steps: {type(self.scheduler).__name__} is not "
                             "FlowMatchEulerDiscreteScheduler")  # fmt: skip
        timesteps = self._date_timesteps(target.call, device, latents=x_src)
        self.scheduler.set_begin_index(plan.skip)  # as diffusers' img2img pipelines start inside the schedule
        model = FlowEditDenoiser(target.model, x_src)
        n_edit = plan.steps - plan.skip - plan.n_min
        step = FlowEditStep(model, source.model, source.cond.cond, source.cond.uncond, source.guidance, n_edit,
                            plan.n_avg, generator)  # fmt: skip
        return Run(
            scheduler=self.scheduler,
            model=model,
            cond=target.cond,
            latents=x_src.clone(),
            timesteps=timesteps[plan.skip :],
            guidance_scale=target.guidance,
            to_vae=lambda x: self._date_to_vae(target.call, x),
            before=[Interrupt(lambda: self._interrupt), step],
        )

    # ------------------------------------------------------------------ family hooks (adapters override)

    def _date_edit_call_args(self) -> dict:
        """Stock arguments an edit fixes for this family."""
        return {}

    def _date_edit_layout(self, call, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's latent layout -> the model's (the inverse of `_date_to_vae`)."""
        return latents
