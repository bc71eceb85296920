"""What both templates (generation and editing) run once a call is encoded: DATE's sampling loop over a `Run`,
then decoding and the output object with a record per image."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.utils import BaseOutput

from date_diffusion.core.finite import NonFiniteOutputWarning, nonfinite_rows
from date_diffusion.core.trace import moved
from date_diffusion.pipelines.conditioning import PackedConditioning
from date_diffusion.pipelines.embeddings import replay_schedule, save_run
from date_diffusion.pipelines.options import DATEOptions
from date_diffusion.pipelines.reward_path import RewardPath
from date_diffusion.pipelines.run_setup import prepared
from date_diffusion.sampling.date_step import MODEL_FIX, DATEUpdate, Replay, SampleResult, TraceRecorder, update_steps
from date_diffusion.sampling.guidance import UniversalGuidance
from date_diffusion.sampling.hooks import Progress
from date_diffusion.sampling.loop import GuidedDenoiser, Hooks, StepState, sample, scheduler_step_starts
from date_diffusion.version import __version__


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
class DATEVideoPipelineOutput(BaseOutput):
    """A video pipeline's output: frames as the stock video pipelines have them (per video a list of PIL frames, or
    an array / tensor `[B, F, H, W, 3]` / `[B, F, 3, H, W]` by `output_type`), and as `DATEPipelineOutput` the
    traces, prompts and one record per video; `save(path)` writes a video with its record."""

    frames: list | object
    traces: list[dict]
    prompts: list[str]
    records: list[dict] | None = None
    fps: int | None = None

    def save(self, path, index: int = 0):
        """Video `index` as an animated WebP at `path` (written atomically), its record inside as the command line
        writes it: `date-diffusion info PATH` shows it. Returns the path."""
        from date_diffusion.outputs import save_media

        frames = self.frames[index]
        if not isinstance(frames, list):
            raise TypeError(f"save() writes PIL frames; these are {type(frames).__name__}: call the pipeline with "
                            "output_type='pil'")  # fmt: skip
        return save_media(path, frames, self.records[index] if self.records else None, self.fps)


@dataclass
class Run:
    """What the sampling loop runs for one call, with the call's own hooks by role."""

    scheduler: object
    model: GuidedDenoiser
    cond: PackedConditioning
    latents: torch.Tensor
    timesteps: torch.Tensor
    guidance_scale: float
    step_kwargs: dict | Callable | None = None
    to_vae: Callable | None = None  # the model's latent layout -> the VAE's (FLUX's packed latents)
    vae_decode: Callable | None = None  # the family's own VAE decoding for the reward (video VAEs; `RewardPath`)
    video: bool = False  # the reward scores frames of videos (`DATEOptions.reward_frames`)
    before: list = field(default_factory=list)  # hooks before each step: interrupt, Attend-and-Excite, an editor's
    after: list = field(default_factory=list)  # hooks after each step: the call's callbacks, an editor's residuals


def _direction_generators(generator):
    """The random-direction ablation draws from its own stream per image, never the sampler's noise."""
    if isinstance(generator, list):
        return [torch.Generator().manual_seed(g.initial_seed() + 0x5EED) for g in generator]
    return None


def output_provider(run: Run, options: DATEOptions, model, path: RewardPath, starts, generator, pipeline_name):
    """The one provider of the model output at DATE's steps: the update, a replay, or none (plain sampling)."""
    if options.replay_embeddings is not None:
        schedule = replay_schedule(options.replay_embeddings, pipeline_name, run.cond, len(run.timesteps),
                                   options.texts)  # fmt: skip
        return Replay(model, schedule)
    if not options.updating:
        return None
    return DATEUpdate(model, options.date, run.cond.cond, starts, path.decode, path.score, run.cond.mask,
                      _direction_generators(generator))  # fmt: skip


def run_date(pipe, module, run: Run, options: DATEOptions, generator) -> tuple[SampleResult, list[dict]]:
    """The sampling loop for `run` with DATE's provider (update or replay), data-space guidance and memory options
    as `options` say (`module`: the denoiser module); returns the result and per-image traces."""
    path = RewardPath(pipe.vae, pipe.vae_scale_factor, options, run.to_vae, run.vae_decode)
    model = run.model
    if options.ug_scale:
        model = UniversalGuidance(model, path.decode, path.score, options.ug_scale, options.ug_every)
    starts = scheduler_step_starts(run.scheduler, len(run.timesteps))
    replay = options.replay_embeddings
    steps = update_steps(options.date, len(starts)) if replay is None else replay.update_steps()  # the trace's
    recorder = TraceRecorder(run.cond.cond, steps, keep_history=options.save_embeddings is not None)
    provider = output_provider(run, options, model, path, starts, generator, type(pipe).__name__)
    state = StepState(run.scheduler, run.latents, run.cond.cond, run.cond.uncond, run.guidance_scale)
    with prepared(pipe, module, options), pipe.progress_bar(total=len(run.timesteps)) as bar:
        hooks = Hooks(run.before, provider, run.after, [recorder, Progress(bar.update)])
        result = recorder.result(sample(model, state, run.timesteps, hooks, run.step_kwargs))
    if options.save_embeddings is not None:
        save_run(options.save_embeddings, run.cond, result, embeddings_metadata(pipe, options, run))
    for trace in result.traces:
        trace.reward_decoder = path.video_name() if run.video else path.name
    for hook in run.before:  # Attend-and-Excite's losses per image
        for trace, losses in zip(result.traces, getattr(hook, "losses", [])):
            trace.attend_excite_losses = losses
    return result, [t.to_dict() for t in result.traces]


def embeddings_metadata(pipe, options: DATEOptions, run: Run) -> dict:
    return {
        "pipeline": type(pipe).__name__,
        "model": pipe.config.get("_name_or_path", ""),
        "prompts": options.texts,
        "steps": len(run.timesteps),
        "guidance_scale": run.guidance_scale,
        "date": options.date.to_dict() if options.date is not None else None,
    }


def output_image(pipe, adapter, request, latents, dtype, device):
    """The stock output: decoded, finished (safety checker, watermark, ...) and post-processed; latents as they are
    for `output_type="latent"`."""
    if request.output_type == "latent":
        return adapter.latent_output(request, latents), None
    decoded = adapter.decode(request, latents)
    bad = nonfinite_rows(decoded)
    if bad:  # stock turns NaN into black pixels without a word: a warning, which the command line makes an error
        warnings.warn(NonFiniteOutputWarning(
            f"the decoded images {bad} of the batch hold values that are not finite (NaN or infinity): their pixels "
            f"mean nothing; {MODEL_FIX}"), stacklevel=3)  # fmt: skip
    image, nsfw = adapter.finish(request, decoded, dtype, device)
    return adapter.postprocess(request, image, nsfw), nsfw


def image_records(pipe, module, request, options: DATEOptions, traces: list[dict]) -> list[dict]:
    """One record per image of a call: what the command line records of an image, as far as the call knows it
    (a seed where the image's own generator, or the call's only one, was seeded; the reward by its spec where
    `Resolved.load_reward` built it, else by its name)."""
    n, generator = len(traces), request.generator
    per_prompt = request.per_prompt

    def per_image(value):
        values = value if isinstance(value, list) else [value] * (n // per_prompt)
        return [v for v in values for _ in range(per_prompt)] if len(values) * per_prompt == n else [None] * n

    prompts, negatives = per_image(request.prompt), per_image(request.negative_prompt)
    generators = generator if isinstance(generator, list) else [generator] * n
    reward = options.reward if options.date is not None else None
    fps = pipe.date_adapter.fps(request) if getattr(pipe, "video_fps", None) is not None else None
    video = {} if fps is None else {"num_frames": request.num_frames, "fps": fps}  # a video's frames and rate
    records = []
    for k, trace in enumerate(traces):
        g = generators[k] if k < len(generators) else None
        seed = {}
        if isinstance(g, torch.Generator):  # one generator for several images: image k is its k-th draw
            one = isinstance(generator, list) or n == 1
            seed = {"seed": g.initial_seed()} if one else {"generator_seed": g.initial_seed(), "image_in_batch": k}
        dated = options.date is not None and moved(trace)
        method = "replay" if options.replay_embeddings is not None else "date" if dated else "fixed"
        records.append({
            "prompt": prompts[k], "negative_prompt": negatives[k], **seed, "model": pipe.name_or_path,
            "pipeline": type(pipe).__name__, "scheduler": type(pipe.scheduler).__name__,
            "steps": request.num_inference_steps, "guidance_scale": request.guidance_scale,
            "height": request.height, "width": request.width, **video,
            "dtype": str(module.dtype).replace("torch.", ""), "method": method,
            "date": options.date.to_dict() if options.date is not None else None,
            "reward": None if reward is None else getattr(reward, "spec", None) or getattr(reward, "name", None),
            "trace": trace, "date_diffusion_version": __version__,
        })  # fmt: skip
    return records
