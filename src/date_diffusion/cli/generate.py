"""`date-diffusion generate`: images with DATE (and, with --compare, the fixed-embedding image beside each)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from date_diffusion.cli.common import (
    FLAGS,
    OPTION_KINDS,
    CLIError,
    DateOptions,
    HelpFormatter,
    ModelOptions,
    add_date_arguments,
    add_model_arguments,
    check_negative_prompt,
    check_overwrite,
    checked,
    family_help,
    from_namespace,
    load_reward,
    model_kwargs,
    output_dir,
    output_stem,
    resolve_device,
    resolve_from_args,
    resolve_model,
    say_unused,
    say_without_effect,
)
from date_diffusion.core.config import CANNOT_ACT
from date_diffusion.core.settings import DEFAULT_SEED, DTYPES, Seed, SettingError
from date_diffusion.core.text import prepare_prompt, quoted, spelled, spelled_as_read
from date_diffusion.core.trace import DID_NOT_MOVE, UNMOVED_IMAGE, moved, rounded_away
from date_diffusion.hub import is_hub_id
from date_diffusion.model_folder import fingerprint
from date_diffusion.schedulers import check_steps_fit
from date_diffusion.toyworld import world

# torch, diffusers and the pipelines are imported inside the functions that need them: see cli/__init__.py

EXAMPLES = """examples:
  date-diffusion generate "a red circle to the left of a blue square" --compare
  date-diffusion generate "a cat wearing a crown" --model stable-diffusion-v1-5/stable-diffusion-v1-5
  date-diffusion generate --prompts-file prompts.txt --model my-sdxl.safetensors --lora style.safetensors:0.7
  date-diffusion generate "a red circle" --save-embeddings
  date-diffusion generate --replay-embeddings outputs/a-red-circle-s0-embeddings.safetensors --out replayed

Files never replace earlier ones: a name already taken gets -2, -3, ... (or pass --overwrite)."""


def add_parser(sub):
    p = sub.add_parser(
        "generate",
        help="generate images with DATE",
        description="Sample images with DATE: the prompt's embedding is adapted during sampling so that a reward "
        "of the predicted clean image goes up. " + family_help(),
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="one or more prompts")
    p.add_argument(
        "--prompts-file", default=None, help="more prompts: a text file (one a line) or a CSV with a `prompt` column"
    )
    add_model_arguments(p)
    add_date_arguments(p)
    s = p.add_argument_group("sampling (defaults: per family, see above)")
    s.add_argument("--steps", type=int, default=None, help="number of sampling steps")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    s.add_argument("--height", type=int, default=None, help="image height in pixels (a multiple of 8)")
    s.add_argument("--width", type=int, default=None, help="image width in pixels (a multiple of 8)")
    s.add_argument("--negative-prompt", default=None, help="what the images should not show (default: none)")
    s.add_argument("--frames", type=int, default=None,
                   help="video models: frames per video (default: the model's stock count, e.g. Wan's 81)")  # fmt: skip
    s.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed of the first image; image k uses seed + k (default 0)"
    )
    s.add_argument("--images-per-prompt", type=int, default=1, help="(default 1)")
    s.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images per forward pass (default 4); a batch's float sums depend on "
        "its size and members, so an image may differ by a level in a pixel or two between batch sizes (each "
        "record states the batch it was sampled in)",
    )
    _add_output_arguments(p)
    _add_speed_arguments(p)
    p.set_defaults(func=run, validate=validate)
    return p


def _add_output_arguments(p) -> None:
    """`generate`'s output options."""
    o = p.add_argument_group("output")
    o.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    o.add_argument("--overwrite", action="store_true", help="replace files of the same name instead of renaming")
    o.add_argument("--compare", action="store_true", help="also sample with fixed embeddings (same seed); a grid")
    o.add_argument(
        "--save-embeddings", action="store_true", help="also write the adapted embeddings (safetensors + metadata)"
    )
    o.add_argument(
        "--replay-embeddings",
        default=None,
        metavar="FILE",
        help="re-create a DATE image from a saved embeddings file (no reward model needed); prompt, seed and "
        "settings come from the file",
    )


def _add_speed_arguments(p) -> None:
    """`generate`'s memory and speed options."""
    a = p.add_argument_group("memory and speed")
    a.add_argument(
        "--reward-decoder",
        default=None,
        help="APPROXIMATE: decode x0_hat for the reward with a tiny decoder: 'tiny' (the family's TAESD; "
        "the toy world's own) or a folder / hub id",
    )
    a.add_argument(
        "--reward-resolution",
        type=int,
        default=None,
        metavar="PX",
        help="APPROXIMATE: decode x0_hat for the reward at PX pixels per side with the real VAE (e.g. 224 for "
        "CLIP rewards, which see that size anyway)",
    )
    a.add_argument(
        "--reward-frames",
        type=int,
        default=None,
        metavar="K",
        help="video models: the reward scores K evenly spaced latent frames of x0_hat, each decoded alone "
        "(approximate after the first under a causal video VAE), the mean over them (default 4)",
    )
    a.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="memory-saving mode: update steps recompute activations instead of keeping them (and on Linux CPUs "
        "give freed memory back between their parts); same result, a little slower",
    )
    a.add_argument(
        "--timings",
        nargs="?",
        const="table",
        choices=["table", "json"],
        help="print where the time went (imports, loading, first sampling step, sampling, writing) to stderr: a "
        "table, or with `json` one JSON line",
    )


@dataclass(frozen=True)
class GenerateOptions:
    """`generate`'s options, typed: built once from the namespace (`from_args`) after `cli.main` has checked each
    value through its kind; what the command derives (a replay's settings, the prepared prompts) is a new object
    (`dataclasses.replace`)."""

    prompts: tuple[str, ...]
    prompts_file: str | None
    model: ModelOptions
    date: DateOptions
    steps: int | None
    guidance: float | None
    height: int | None
    width: int | None
    negative_prompt: str | None
    frames: int | None
    seed: int
    images_per_prompt: int
    batch_size: int
    out: str
    overwrite: bool
    compare: bool
    save_embeddings: bool
    replay_embeddings: str | None
    reward_decoder: str | None
    reward_resolution: int | None
    reward_frames: int | None
    gradient_checkpointing: bool
    timings: str | None
    options_given: frozenset[str]  # the dests of the options typed, a default value too (`cli.main._Parser`)

    @classmethod
    def from_args(cls, args) -> GenerateOptions:
        given = dict(prompts=tuple(args.prompts), model=ModelOptions.from_args(args), date=DateOptions.from_args(args))
        return from_namespace(cls, args, **given)


def read_prompts_file(path) -> tuple[list[str], list[str]]:
    """(prompts from a file as every command reads one (`bench.suites.read_captions`: text, CSV, jsonl), notes: a
    CSV's columns other than its prompt column, which nothing reads)."""
    from date_diffusion.bench.suites import read_captions_and_columns, unread_columns

    try:
        prompts, columns = read_captions_and_columns(Path(path))
    except FileNotFoundError:
        raise CLIError(f"--prompts-file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as err:
        raise CLIError(f"--prompts-file {str(path)!r}: {err}") from err
    if not prompts:
        raise CLIError(f"--prompts-file {str(path)!r} holds no prompt")
    note = unread_columns(Path(path), columns, "--prompts-file")
    return prompts, [note] if note else []


def replay_settings(opts: GenerateOptions):
    """With --replay-embeddings: the saved file, and the options with the run's settings taken from its metadata
    (each value from the file checked through its option's kind)."""
    from date_diffusion.pipelines.embeddings import load_embeddings
    from date_diffusion.schemas import REPLAY, SchemaError

    if opts.prompts or opts.prompts_file:
        raise CLIError("--replay-embeddings takes its prompt from the file; give no PROMPT or --prompts-file")
    given = [
        flag
        for flag, value in (
            ("--steps", opts.steps),
            ("--guidance", opts.guidance),
            ("--height", opts.height),
            ("--width", opts.width),
            ("--negative-prompt", opts.negative_prompt),
            ("--frames", opts.frames),
        )
        if value is not None
    ]
    given += [
        flag
        for dest, flag in (("seed", "--seed"), ("images_per_prompt", "--images-per-prompt"))
        if dest in opts.options_given
    ]  # `--seed 0` given is as much a value replaced as `--seed 5`
    if given:  # each would be replaced by the file's value without a word
        raise CLIError(f"--replay-embeddings takes the seed, steps, guidance, size and negative prompt from the file; "
                       f"leave out {', '.join(given)}")  # fmt: skip
    unused = [FLAGS[name] for name, value in opts.date.values if value is not None]
    unused += [flag for flag, value in (
        ("--reward", opts.date.reward), ("--paper-defaults", opts.date.paper_defaults),
        ("--reward-decoder", opts.reward_decoder), ("--reward-resolution", opts.reward_resolution),
        ("--reward-frames", opts.reward_frames), ("--gradient-checkpointing", opts.gradient_checkpointing),
    ) if value]  # fmt: skip
    if unused:  # a replay runs no DATE update: each would be taken and do nothing
        them = "it" if len(unused) == 1 else "them"
        raise CLIError(f"--replay-embeddings replays the saved embeddings and runs no DATE update, so "
                       f"{', '.join(unused)} would do nothing: leave {them} out")  # fmt: skip
    if "batch_size" in opts.options_given:  # one image, sampled alone: a batch size would be passed over
        raise CLIError("--replay-embeddings samples the one saved image alone (a batch of 1), so --batch-size would "
                       "do nothing: leave it out")  # fmt: skip
    try:
        saved = load_embeddings(opts.replay_embeddings)
    except ValueError as err:
        raise CLIError(f"--replay-embeddings: {err}") from err
    meta = saved.metadata
    where = f"--replay-embeddings {opts.replay_embeddings!r}"
    try:
        REPLAY.check(meta, where)
    except SchemaError as err:
        raise CLIError(str(err)) from err
    if opts.model.scheduler is not None and opts.model.scheduler != meta.get("scheduler_name"):
        made = meta.get("scheduler_name") or f"the model's own ({meta.get('scheduler', 'unknown')})"
        raise CLIError(f"{where} was sampled with the scheduler {made}, and --scheduler {opts.model.scheduler!r} "
                       "would replace it: the image would not be the saved run's; leave out --scheduler")  # fmt: skip
    made_in = meta.get("dtype") if meta.get("dtype") in DTYPES else None  # the precision its embeddings ran in
    if made_in is not None and opts.model.dtype not in ("auto", made_in):
        raise CLIError(f"{where} was sampled in {made_in}, and --dtype {opts.model.dtype} would replace it: the image "
                       "would not be the saved run's; leave out --dtype")  # fmt: skip
    recorded = meta.get("model_arg")
    if (
        opts.model.name is None
        and isinstance(recorded, str)
        and not Path(recorded).expanduser().exists()
        and not is_hub_id(recorded)
    ):  # a folder of the machine it was made on: the file names it, the user gives where it is here
        raise CLIError(f"{where}: its 'model_arg' {recorded!r} is no file or folder here; give the model it was "
                       "made with: --model PATH_OR_ID")  # fmt: skip
    model = replace(opts.model, name=opts.model.name or meta.get("model_arg"), dtype=made_in or opts.model.dtype,
                    scheduler=opts.model.scheduler or meta.get("scheduler_name"),
                    loras=replay_loras(opts.model.loras, meta.get("loras") or [], where))  # fmt: skip
    replayed = replace(opts, prompts=(meta["prompt"],), seed=int(meta["seed"]), images_per_prompt=1, model=model,
                       steps=int(meta["steps"]), guidance=float(meta["guidance_scale"]), height=int(meta["height"]),
                       width=int(meta["width"]), negative_prompt=meta.get("negative_prompt"),
                       frames=meta.get("num_frames"))  # fmt: skip
    _check_file_values(opts, replayed)
    return replayed, saved


def replay_loras(given: tuple[str, ...], recorded: list, where: str) -> tuple[str, ...]:
    """The LoRAs of a replay: those the file records (`loras`: [FILE, SCALE] pairs), each a file here; `--lora`
    beside it names them where they are now, with the scales they were made with, in their order (a moved LoRA).
    Any other LoRAs, or none, would make another image than the saved run's: refused."""
    from date_diffusion.pipelines.loading import parse_lora

    pairs = [p for p in recorded if isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
             and isinstance(p[1], (int, float)) and not isinstance(p[1], bool)]  # fmt: skip
    if len(pairs) != len(recorded):
        raise CLIError(f"{where}: its 'loras' must be [FILE, SCALE] pairs, got {quoted(json.dumps(recorded))}; write "
                       "it with `date-diffusion generate --save-embeddings`")  # fmt: skip
    if given:
        try:
            scales = [parse_lora(spec)[1] for spec in given]
        except SettingError as err:
            raise CLIError(f"--lora: {err}") from err
        if scales != [float(scale) for _, scale in pairs]:
            made = ", ".join(f"{path}:{scale:g}" for path, scale in pairs) or "no LoRA"
            raise CLIError(
                f"{where} was made with {made}, and --lora gives {', '.join(given)}: the image would "
                "not be the saved run's; give the same LoRAs at the same scales, or leave out --lora"
            )
        return given
    for path, scale in pairs:
        if not Path(path).is_file():
            raise CLIError(
                f"{where}: its 'loras' names {path!r}, which is no file here; run the replay from "
                f"the folder it was made in, or give the LoRA where it is now: --lora FILE:{scale:g}"
            )
    return tuple(f"{path}:{scale!r}" for path, scale in pairs)


def _check_file_values(given: GenerateOptions, replayed: GenerateOptions) -> None:
    """The values a replay took from its file, each through its option's kind (in the parser's order), a refusal
    naming the file and its key (the user typed none of them); those the user gave were checked already."""
    from date_diffusion.core.text import check_prompt

    where = f"--replay-embeddings {given.replay_embeddings!r}:"
    try:
        check_prompt(replayed.prompts[0], f"{where} its 'prompt'")
        if given.negative_prompt is None and replayed.negative_prompt is not None:
            check_prompt(replayed.negative_prompt, f"{where} its 'negative_prompt'", empty=True)
    except ValueError as err:
        raise CLIError(str(err)) from None
    values = [("model_arg", "--model", replayed.model.name)] * (given.model.name is None)
    values += [("scheduler_name", "--scheduler", replayed.model.scheduler)] * (given.model.scheduler is None)
    values += [(key, flag, getattr(replayed, flag[2:].replace("-", "_")))
               for key, flag in (("steps", "--steps"), ("guidance_scale", "--guidance"), ("height", "--height"),
                                 ("width", "--width"), ("negative_prompt", "--negative-prompt"), ("seed", "--seed"),
                                 ("num_frames", "--frames"))]  # fmt: skip
    for key, option, value in values:
        if value is not None:
            checked(OPTION_KINDS[option], value, f"{where} its {key!r}")


def check_together(opts: GenerateOptions) -> None:
    """What the options' kinds cannot see alone: the last seed, and options that exclude each other."""
    checked(Seed(), opts.seed + opts.images_per_prompt - 1, "--seed + --images-per-prompt - 1")
    if opts.replay_embeddings and opts.save_embeddings:
        raise CLIError("--save-embeddings and --replay-embeddings: a replay writes no new embeddings; give one")


def prepared_prompts(opts: GenerateOptions) -> tuple[GenerateOptions, list[str]]:
    """The prompts (PROMPT and --prompts-file) and the negative prompt refused when empty and cut to what encoders
    read, before any work: the options with them, and the notes of what was cut."""
    from_file, notes = read_prompts_file(opts.prompts_file) if opts.prompts_file else ([], [])
    prompts = list(opts.prompts) + from_file
    if not prompts:
        raise CLIError("give at least one PROMPT (or --prompts-file FILE)")
    negative, given = opts.negative_prompt, len(opts.prompts)

    def name(k: int) -> str:  # where prompt k came from: the arguments, or the prompts file
        if k >= given:
            return f"prompt {k - given + 1} of --prompts-file {quoted(str(opts.prompts_file))}"
        return "PROMPT" if len(prompts) == 1 else f"PROMPT {k + 1}"

    typed = list(prompts)  # as given, for a message that quotes one
    cut = [False] * len(prompts)  # which prompts were cut to what encoders read
    try:
        for k, prompt in enumerate(prompts):
            prompts[k], note = prepare_prompt(prompt, name(k))
            notes += [note] if note else []
            cut[k] = note is not None
        if negative is not None:
            negative, note = prepare_prompt(negative, "--negative-prompt", empty=True)
            notes += [note] if note else []
    except ValueError as err:
        raise CLIError(str(err)) from None
    seen: dict[str, int] = {}  # prompt -> its first index (one pass: a long --prompts-file checks in linear time)
    twice = next((k for k, prompt in enumerate(prompts) if seen.setdefault(prompt, k) != k), None)
    if twice is not None:  # the same prompt and seeds: the same images again, under a `-2` name
        first = seen[prompts[twice]]
        alike = cut[first] or cut[twice]  # equal only in the part that is used
        same = f"the same in its first {len(prompts[twice]):,} characters, the part that is used, as" if alike else ""
        blanks = not alike and typed[twice] != typed[first]  # typed otherwise: both shown, and why they are one
        other = f" {quoted(typed[first])}, once the blanks at each one's ends are left out (a prompt is read " \
                "without them)" if blanks else ""  # fmt: skip
        raise CLIError(f"{name(twice)} {quoted(typed[twice])} is {same or 'the same prompt as'} {name(first)}"
                       f"{other}: its images would be the same; give each prompt once (--images-per-prompt N for "
                       "more seeds)")  # fmt: skip
    return replace(opts, prompts=tuple(prompts), negative_prompt=negative), notes


def check_replay_family(opts: GenerateOptions, model: str, family: str, saved) -> None:
    """Another family's embeddings: their shapes cannot fit, say so before any load."""
    from date_diffusion.families import by_name

    ours, theirs = by_name(family).date_class, saved.metadata.get("pipeline")
    if theirs != ours:
        raise CLIError(f"--replay-embeddings {opts.replay_embeddings!r} were saved by {theirs}, and --model "
                       f"{model!r} runs {ours}: replay them with the model they were saved with")  # fmt: skip


def validate(args) -> dict:
    """`check` of the namespace's options (the validation layer, `cli.common.validate`)."""
    return check(GenerateOptions.from_args(args))[1]


@dataclass
class Job:
    """What a generate run works with once checked (`check`: the resolved settings, a replay's file, the prepared
    prompts, where it writes, how the model loads, notes for the user) and once loaded (`load`: the pipeline, the
    size, the reward, the approximate decoder, the toy world's judge)."""

    date_active: bool
    prompts: list
    out: Path
    loading: dict
    settings: object
    saved: object
    notes: list
    timings: object = None
    pipe: object = None
    height: int | None = None
    width: int | None = None
    reward: object = None
    decoder: object = None
    judge: object = None
    model_files: str | None = None  # `model_folder.fingerprint` of a local model (each record states it)
    # the same of every file whole, where embeddings are saved or a file that states it is replayed (a replay then
    # refuses a model changed anywhere in its weights)
    model_content: str | None = None
    # the DATE settings (and reward) given that change no image: name -> {value, why} (`date_without_effect`)
    date_unused: dict = field(default_factory=dict)
    lora_files: list = field(default_factory=list)  # `model_folder.fingerprint` of each LoRA, in order


def check(opts: GenerateOptions) -> tuple[GenerateOptions, Job]:
    """Everything checked and resolved before any model loads and before anything is written: prompts, model,
    family, defaults, DATE settings, the output folder (not created yet). Returns the options with what was derived
    (a replay's settings, the prepared prompts) and the job."""
    check_together(opts)
    saved = None
    if opts.replay_embeddings:
        opts, saved = replay_settings(opts)
    opts, notes = prepared_prompts(opts)
    if saved is not None and "sealed" not in saved.metadata:  # an earlier version's file: nothing to check it by
        notes.append(f"--replay-embeddings {str(opts.replay_embeddings)!r} carries no seal (an earlier version wrote "
                     "it): its embeddings and settings are replayed as written, unverified")  # fmt: skip
    together = saved.metadata.get("batch_size") if saved is not None else None
    if isinstance(together, int) and not isinstance(together, bool) and together > 1:
        notes.append(f"--replay-embeddings {str(opts.replay_embeddings)!r}: its image was sampled in a batch of "
                     f"{together}, the replay alone; a batch's float sums depend on its size, so the replay may differ "
                     "from it by a level in a pixel or two")  # fmt: skip
    loading = model_kwargs(opts.model)
    model = resolve_model(opts.model.name)
    flags = {**opts.date.overrides(), "num_inference_steps": opts.steps, "guidance_scale": opts.guidance,
             "scheduler": opts.model.scheduler}  # fmt: skip
    settings = resolve_from_args(model, flags, opts.model.family, opts.date.paper_defaults, check_reward=saved is None)
    if saved is not None:
        check_replay_family(opts, model, settings.family, saved)
    ext = check_video_options(opts, settings.family)
    check_overwritten(opts, ext)
    if opts.reward_decoder and saved is None:
        from date_diffusion.hub import ModelNotFoundError
        from date_diffusion.pipelines.loading import check_tiny_decoder

        try:
            check_tiny_decoder(settings.model, opts.reward_decoder)
        except ModelNotFoundError as err:
            raise CLIError(f"--reward-decoder: {err}") from err
    whole = opts.save_embeddings or (saved is not None and saved.metadata.get("model_content") is not None)
    job = Job(date_active=settings.active, prompts=list(opts.prompts), out=Path(opts.out), loading=loading,
              settings=settings, saved=saved, notes=notes, model_files=fingerprint(settings.model),
              model_content=fingerprint(settings.model, whole=True) if whole else None,
              lora_files=[fingerprint(path, whole=whole) for path, _ in loading["loras"]])  # fmt: skip
    if saved is not None:
        check_replay_model(opts, job)
    else:
        from date_diffusion.evaluation.methods import settings_without_effect

        job.date_unused = settings_without_effect(settings)
    return opts, job


def check_replay_model(opts: GenerateOptions, job: Job) -> None:
    """A replay's model is the one its file was saved with: a local model whose files changed since (a config
    edited, weights retrained, one layer fine-tuned: `model_content`, every file whole; a file of an earlier version
    states only `model_files`, sizes and ends) would make another image under the replay's name."""
    key = "model_content" if job.saved.metadata.get("model_content") is not None else "model_files"
    theirs, ours = job.saved.metadata.get(key), getattr(job, key)
    if theirs is not None and ours is not None and theirs != ours:
        raise CLIError(f"--replay-embeddings {opts.replay_embeddings!r} was saved with other files of the model "
                       f"{job.settings.model!r} (its configs or weights changed since): the replay would make "
                       "another image; replay it with the model as it was")  # fmt: skip
    loras = job.saved.metadata.get("lora_files")
    if loras is not None and loras != job.lora_files:
        raise CLIError(f"--replay-embeddings {opts.replay_embeddings!r} was saved with LoRAs whose files have changed "
                       "since (other weights under the recorded names): the replay would make another image; replay "
                       "it with the LoRAs as they were")  # fmt: skip


def plan(opts: GenerateOptions) -> tuple[GenerateOptions, Job]:
    """`check`, with its notes (a prompt cut to what encoders read) and a note when DATE cannot act."""
    import sys

    opts, job = check(opts)
    for note in job.notes:
        print(f"date-diffusion generate: note: {note}", file=sys.stderr)
    images = len(job.prompts) * opts.images_per_prompt
    if images > opts.batch_size:  # more than one batch: what the run makes is said before any work, as bench does
        also = " (each also without DATE: --compare)" if opts.compare else ""
        print(f"date-diffusion generate: {images:,} images to make{also} ({len(job.prompts):,} prompts x "
              f"{opts.images_per_prompt} per prompt) in batches of {opts.batch_size}; an estimate of the time "
              "follows the first batch", file=sys.stderr)  # fmt: skip
    say_without_effect("generate", job.date_unused)
    if not job.date_active and job.saved is None:
        print(f"date-diffusion generate: note: DATE cannot move the embedding with these settings ({CANNOT_ACT}); "
              "the images use the fixed embedding and are recorded as method 'fixed'", file=sys.stderr)  # fmt: skip
    return opts, job


def long_request(opts: GenerateOptions, job: Job) -> str | None:
    """What a request far beyond a usual run asks (its work in sampling steps, `perf.work.request_work`), said
    before it starts: one command line can ask for days of work, and nothing else would say so before its first
    batch ends. None for a request within what the web page takes by default."""
    from date_diffusion.perf.work import request_work
    from date_diffusion.ui.access import MAX_WORK

    settings = job.settings
    date = settings.date if job.date_active and job.saved is None else None
    height, width = job.pipe.default_image_shape()
    size = job.height * job.width / (height * width)  # a larger image: each step costs at least that many times more
    per_image = max(request_work(settings.num_inference_steps, date, settings.reward, p, size) for p in job.prompts)
    if per_image <= MAX_WORK:
        return None
    images = len(job.prompts) * opts.images_per_prompt
    larger = f", at {job.width}x{job.height}: {size:,.4g} times the pixels of the model's {width}x{height}" * (size > 1)
    return (
        f"this request is {per_image:,} sampling steps' work per image ({settings.num_inference_steps} steps, "
        f"each DATE gradient step counted with its backward pass and reward runs{larger}), {images:,} image(s): "
        f"{per_image / MAX_WORK:,.0f} times the most the web page takes ({MAX_WORK}); it may run for a long time "
        "(Ctrl-C or SIGTERM ends it, every finished image kept)"
    )


def run(args) -> int:
    from date_diffusion.cli import STARTED
    from date_diffusion.perf.timings import Timings

    opts = GenerateOptions.from_args(args)  # the one read of the namespace
    timings = Timings(opts.timings, STARTED)
    with timings.part("imports and checks"):
        opts, job = plan(opts)  # every check that needs no model first: a refusal answers before the heavy imports
        import torch

    job.timings = timings
    device = resolve_device(opts.model.device)
    if opts.model.offload and device == "cpu":
        raise CLIError("--offload moves models between the CPU and an accelerator; with --device cpu leave it out")
    if device == "cpu" and world.is_toy_world(job.settings.model) and "OMP_NUM_THREADS" not in os.environ:
        # the toy world's models are too small to gain from threads: a second one only spins
        torch.set_num_threads(1)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # the command prints its own progress
    with timings.part("loading"):
        load(opts, job, device)
    work = long_request(opts, job)  # once every check has passed: said of a request that runs
    if work:
        print(f"date-diffusion generate: note: {work}", file=sys.stderr)
    with output_dir(job.out):  # created last, once every check has passed: a refused command leaves no folder
        generate_all(opts, job)
    timings.print()
    return 0


def load(opts: GenerateOptions, job: Job, device: str) -> None:
    """The pipeline, the reward, the approximate decoder and the toy world's judge, into `job`."""
    from date_diffusion.pipelines import load_date_pipeline

    settings = job.settings
    try:
        pipe = load_date_pipeline(settings.model, opts.model.dtype, device, settings.scheduler, **job.loading)
    except ValueError as err:  # unreadable single file, LoRA for another model, ...
        raise CLIError(str(err)) from err
    pipe.set_progress_bar_config(disable=True)
    made_with = job.saved.metadata.get("scheduler") if job.saved is not None else None
    if made_with is not None and made_with != type(pipe.scheduler).__name__:  # the model's own, changed since
        raise CLIError(f"--replay-embeddings {opts.replay_embeddings!r} was sampled with {made_with}, and the model "
                       f"now samples with {type(pipe.scheduler).__name__}: the replay would make another image; "
                       "replay it with the model as it was")  # fmt: skip
    default_height, default_width = pipe.default_image_shape()
    height, width = opts.height or default_height, opts.width or default_width
    if opts.reward_resolution is not None and opts.reward_resolution >= max(height, width):
        raise CLIError(f"--reward-resolution {opts.reward_resolution} is not below the images' {width}x{height}: the "
                       "reward would decode at the image's size or larger (no cheaper, nothing approximated); "
                       "give a smaller size, or leave it out")  # fmt: skip
    try:
        check_steps_fit(pipe, settings.num_inference_steps, "--steps", height, width)
    except ValueError as err:
        raise CLIError(str(err)) from err
    check_negative_prompt(pipe, opts.negative_prompt)
    unused = pipe.settings_without_effect(settings.guidance_scale, negative_prompt=opts.negative_prompt)
    if "negative_prompt" in unused:  # given, and no negative branch runs: said, never taken without a word
        say_unused("generate", "--negative-prompt", unused["negative_prompt"])
    if "guidance_scale" in unused and settings.sources.get("guidance_scale") == "user":  # `--guidance 0`: as 1
        given = "--guidance" if job.saved is None else "the replayed file's guidance"  # (a replay takes no --guidance)
        say_unused("generate", f"{given} {spelled_as_read(settings.guidance_scale)}", unused["guidance_scale"])
    job.height, job.width, job.pipe = height, width, pipe
    job.reward = None if job.saved is not None else load_reward(settings.reward, device, settings.reward_named_by)
    job.decoder = None
    if opts.reward_decoder and job.saved is None:
        from date_diffusion.pipelines.loading import tiny_decoder_for

        job.decoder = tiny_decoder_for(settings.model, opts.reward_decoder).to(device, pipe.vae.dtype)
    job.judge = world.judge_for(settings.model)


def output_suffixes(ext: str) -> tuple[str, ...]:
    """The files one image (or video, `ext`) of generate may write, after its name's stem."""
    return (ext, ".json", f"-fixed{ext}", "-compare.png", "-embeddings.safetensors")


def check_overwritten(opts: GenerateOptions, ext: str) -> None:
    """With --overwrite, every name an image would replace or remove is an earlier output of the same prompt and
    seed (`cli.common.check_overwrite`), named before any work, not found once the image is made."""
    if not opts.overwrite:
        return  # a taken name gets -2, -3, ...
    seeds = range(opts.seed, opts.seed + opts.images_per_prompt)
    groups = [(output_stem(p, seed), p, seed) for p in opts.prompts for seed in seeds]
    writes = {ext, ".json", *((f"-fixed{ext}", "-compare.png") if opts.compare else ())}
    writes |= {"-embeddings.safetensors"} if opts.save_embeddings else set()
    check_overwrite(opts.out, groups, output_suffixes(ext), writes, "the images then get names of their own")


def check_video_options(opts: GenerateOptions, family: str) -> str:
    """--frames and --reward-frames are a video model's; an image decoder (--reward-decoder) is an image model's
    (imports the family's pipeline module). Returns the suffix its media are written with."""
    from date_diffusion.families import by_name
    from date_diffusion.outputs import suffix_for

    pipe = by_name(family).date_pipeline()
    if pipe.adapter.video_fps is None:
        given = [flag for flag, value in (("--frames", opts.frames), ("--reward-frames", opts.reward_frames)) if value]
        if given:
            raise CLIError(f"{' and '.join(given)}: {pipe.__name__} makes images, not videos; leave them out")
    elif opts.reward_decoder:
        raise CLIError(f"--reward-decoder decodes images; {pipe.__name__} makes videos (use --reward-frames "
                       "or --reward-resolution to make the reward's decoding cheaper)")  # fmt: skip
    return suffix_for(video=pipe.adapter.video_fps is not None)


def generate_all(opts: GenerateOptions, job: Job) -> None:
    from tqdm.auto import tqdm

    jobs = [(p, opts.seed + k) for p in job.prompts for k in range(opts.images_per_prompt)]
    kinds = (["fixed"] if opts.compare else []) + ["replay" if job.saved is not None else "date"]
    # a progress bar on a terminal only (disable=None); elsewhere (a file, a pipe) each finished image's lines say it
    bar = tqdm(total=len(jobs) * len(kinds), desc="images", unit="img", disable=None)
    started = time.perf_counter()
    for start in range(0, len(jobs), opts.batch_size):
        if start == opts.batch_size:  # after the first batch, while images are left: bench's estimate
            from date_diffusion.bench.runner import estimate_line

            elapsed = time.perf_counter() - started
            per_image = elapsed / start
            line = estimate_line(
                per_image * (len(jobs) - start), elapsed, f"{per_image:.2f} (timed on the first batch)"
            )
            tqdm.write(f"date-diffusion generate: {line}", file=sys.stderr)
        batch = jobs[start : start + opts.batch_size]
        with tempfile.TemporaryDirectory() as tmp:
            emb_path = Path(tmp) / "batch.safetensors" if opts.save_embeddings else None
            results = {}
            for kind in kinds:
                with job.timings.part("sampling"):
                    try:
                        results[kind] = sample(opts, job, kind, batch, emb_path)
                    except ValueError as err:  # saved embeddings that do not fit this model (shapes, start)
                        if kind != "replay":
                            raise
                        raise CLIError(f"--replay-embeddings {opts.replay_embeddings!r}: {err}") from err
                bar.update(len(batch))
            saved = None
            if emb_path is not None and "date" in results:
                from date_diffusion.pipelines.embeddings import load_embeddings

                saved = load_embeddings(emb_path)
            gone = None  # the reader of standard output left: every image sampled is still written, then it ends
            for j, (prompt, seed) in enumerate(batch):
                with job.timings.part("evaluating and writing"):
                    try:
                        write_image(opts, job, results, j, prompt, seed, saved, len(batch))
                    except BrokenPipeError as err:  # raised by its printed lines, after its files are written
                        gone = err
            if gone is not None:
                raise gone
    bar.close()


def sample(opts: GenerateOptions, job: Job, kind, batch, emb_path):
    """One batch with fixed embeddings, DATE, or a replay of saved DATE embeddings."""
    import torch

    # One generator per image: an image's noise depends on its prompt and seed only (the batch's float sums on its
    # size and members: a level in a pixel or two, which each record's `batch_size` accounts for)
    gens = [torch.Generator("cpu").manual_seed(s) for _, s in batch]
    extra = {} if opts.negative_prompt is None else {"negative_prompt": [opts.negative_prompt] * len(batch)}
    if job.pipe.video_fps is not None:  # a video model: its frames as PIL images, as images are
        extra.update(output_type="pil", **({"num_frames": opts.frames} if opts.frames else {}))
    if kind == "date":
        extra.update(
            date=job.settings.date,
            reward=job.reward,
            reward_decoder=job.decoder,
            reward_resolution=opts.reward_resolution,
            gradient_checkpointing=opts.gradient_checkpointing,
            save_embeddings=emb_path,
            **({"reward_frames": opts.reward_frames} if opts.reward_frames else {}),
        )
    elif kind == "replay":
        extra["replay_embeddings"] = job.saved

    def first_step(pipe, i, t, tensors):
        job.timings.mark("first sampling step done")
        return {}

    return job.pipe(
        prompt=[p for p, _ in batch],
        callback_on_step_end=first_step if job.timings.enabled else None,
        height=job.height,
        width=job.width,
        num_inference_steps=job.settings.num_inference_steps,
        guidance_scale=job.settings.guidance_scale,
        generator=gens,
        **extra,
    )


def base_record(opts: GenerateOptions, job: Job, prompt, seed) -> dict:
    """What every image's record states about the run. A setting that had no effect (FLUX.1-schnell's guidance
    scale, a negative prompt without a negative branch) is not stated as applied: its field is null and
    `without_effect` names it with its value and why."""
    from date_diffusion import __version__

    pipe, settings = job.pipe, job.settings
    applied = pipe.applied_settings(settings.guidance_scale, negative_prompt=opts.negative_prompt)
    record = {
        "prompt": prompt,
        "negative_prompt": applied["negative_prompt"],
        "seed": seed,
        "model": settings.model,
        "family": settings.family,
        "pipeline": type(pipe).__name__,
        "loras": [list(x) for x in job.loading["loras"]],
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_name": settings.scheduler,
        "steps": settings.num_inference_steps,
        "guidance_scale": applied["guidance_scale"],
        "height": job.height,
        "width": job.width,
        "dtype": str(pipe.unet.dtype if hasattr(pipe, "unet") else pipe.transformer.dtype).replace("torch.", ""),
        "sources": {k: settings.sources[k] for k in ("num_inference_steps", "guidance_scale", "scheduler")},
        "date_diffusion_version": __version__,
        "model_files": job.model_files,
        "lora_files": job.lora_files,
        **({"model_content": job.model_content} if job.model_content is not None else {}),
    }
    without = {**applied.get("without_effect", {}), **(job.date_unused if job.saved is None else {})}
    if without:
        record["without_effect"] = without
    return record


def replaced(out: Path, stem: str, suffixes, opts: GenerateOptions) -> list[Path]:
    """The files of an earlier group `--overwrite` replaces, never the embeddings file a replay reads."""
    source = Path(opts.replay_embeddings).resolve() if opts.replay_embeddings else None
    return [out / f"{stem}{s}" for s in suffixes if (out / f"{stem}{s}").resolve() != source]


def write_image(opts: GenerateOptions, job: Job, results, j, prompt, seed, saved, batch_images: int = 1) -> None:
    """The DATE (or replayed) image, its record, and optionally the fixed image, the grid and the embeddings: new
    names when taken (unless --overwrite), each file written atomically; every file written is printed."""
    from tqdm.auto import tqdm

    from date_diffusion.grids import grid_label
    from date_diffusion.outputs import claimed_stem, file_group, media_bytes, media_suffix

    out, kind = job.out, "replay" if job.saved is not None else "date"
    image = outputs_of(results[kind])[j]  # an image, or a video's frames
    ext = media_suffix(image)
    suffixes = output_suffixes(ext)
    with (
        claimed_stem(out, output_stem(prompt, seed), suffixes, opts.overwrite) as stem,
        file_group(replaced(out, stem, suffixes, opts) if opts.overwrite else (), own_only=True) as group,
    ):
        record = {**base_record(opts, job, prompt, seed), "batch_size": batch_images}  # the images sampled with it
        record.update({k: v for k, v in results[kind].records[j].items() if k in ("num_frames", "fps")})
        fixed_record = {**record, "method": "fixed", "date": None, "reward": None}
        fixed_without = {k: v for k, v in record.get("without_effect", {}).items() if k not in job.date_unused}
        fixed_record.pop("without_effect", None)
        fixed_record.update({"without_effect": fixed_without} if fixed_without else {})
        if kind == "date":
            record["sources"] = dict(job.settings.sources)
        # an image whose embedding DATE did not move (every update skipped: a zero or non-finite gradient) is the
        # fixed image, and is recorded as such
        record.update(
            method=kind if (kind == "replay" or job.date_active) and moved(results[kind].traces[j]) else "fixed",
            reward=job.settings.reward if kind == "date" else None,
            date=job.settings.date.to_dict() if kind == "date" else job.saved.metadata.get("date"),
            reward_decoder=opts.reward_decoder if kind == "date" else None,
            reward_resolution=opts.reward_resolution if kind == "date" else None,
            **({"reward_frames": opts.reward_frames or 4} if "fps" in record and kind == "date" else {}),
            gradient_checkpointing=opts.gradient_checkpointing,
            trace=results[kind].traces[j],
        )
        if kind == "replay":  # its sampling settings are the file's, none the user's
            record["replayed_from"] = str(opts.replay_embeddings)
            record["sources"] = dict.fromkeys(record["sources"], "replay")
        lines = [f"{quoted(prompt)} seed {seed} -> {out / (stem + ext)}", f"    record: {out / (stem + '.json')}"]
        if kind == "date" and job.date_active and record["method"] == "fixed":  # the plan's note covers the rest
            lines.append(
                f"    note: DATE did not move this image's embedding ({DID_NOT_MOVE}); it is {UNMOVED_IMAGE}, and is "
                "recorded as method 'fixed'"
            )
        short = rounded_away(record["trace"], job.settings.date) if record["method"] == "date" else None
        if short is not None:  # an absolute step below the embedding's precision: said, never passed as DATE's
            lines.append(f"    note: DATE's step of {spelled(job.settings.date.rho)} moved the embedding only "
                         f"{short['update_norm']:.2g} at step {short['step']}: the step is below the precision of the "
                         "embedding's values (float32 rounds most of it away); give a larger --rho, or "
                         "--rho-relative")  # fmt: skip
        if kind == "replay" and record["method"] == "fixed":  # embeddings saved where DATE could not act
            lines.append("    note: the replayed embeddings are the original ones (DATE never moved them); the image "
                         f"is {UNMOVED_IMAGE}, and is recorded as method 'fixed'")  # fmt: skip
        if job.judge is not None:
            record["evaluator"] = {kind: job.judge(image, prompt)}
        summary = []
        if opts.compare:
            fixed = outputs_of(results["fixed"])[j]
            if job.judge is not None:
                record["evaluator"]["fixed"] = job.judge(fixed, prompt)
            record.update(fixed_image=f"{stem}-fixed{ext}", compare_grid=f"{stem}-compare.png")
            if job.reward is not None:
                from date_diffusion.grids import final_rewards

                record["final_reward"] = final_rewards(job.reward, {"fixed": fixed, "date": image}, prompt)
            group.write(out / f"{stem}-fixed{ext}", media_bytes(fixed, fixed_record))
            panels = write_compare(group, out / f"{stem}-compare.png", fixed, image, record, kind)
            lines.append(f"    fixed image: {out / (stem + f'-fixed{ext}')}")
            lines.append(f"    grid ({grid_label(panels)}): {out / (stem + '-compare.png')}")
            summary = change_summary(fixed, image, panels, record, kind)
        if saved is not None:
            from date_diffusion.pipelines.embeddings import save_replayable

            save_replayable(group.path(out / f"{stem}-embeddings.safetensors"), saved.select(j), record,
                            opts.model.name)  # fmt: skip
            record["embeddings"] = f"{stem}-embeddings.safetensors"
            lines.append(f"    embeddings: {out / (stem + '-embeddings.safetensors')}")
        group.write(out / f"{stem}{ext}", media_bytes(image, record))
        group.write(out / f"{stem}.json", json.dumps(record, indent=1))  # last: the group is complete
    tqdm.write("\n".join(lines + describe(record, verdicts=not opts.compare) + summary))


def outputs_of(result) -> list:
    """A pipeline output's images, or a video pipeline's videos (`frames`: per video a list of frames)."""
    return result.frames if hasattr(result, "frames") else result.images


def write_compare(group, path: Path, fixed, image, record: dict, kind: str) -> list[dict]:
    """The grid fixed | DATE (| their amplified difference, where they differ little), with every panel's record,
    into `group` (`outputs.file_group`); returns the panel records."""
    from date_diffusion.grids import fixed_date_grid, grid_record, still
    from date_diffusion.outputs import png_bytes

    verdicts = record.get("evaluator", {})
    verdicts = {"fixed": verdicts.get("fixed"), "date": verdicts.get(kind)}
    grid, panels = fixed_date_grid(
        still(fixed), still(image), record["method"], verdicts, record["trace"], record.get("final_reward")
    )
    group.write(path, png_bytes(grid, grid_record(record, panels)))
    return panels


def change_summary(fixed, image, panels: list[dict], record: dict, kind: str) -> list[str]:
    """What the grid's headers say, in lines: each finished image's reward (the DATE image's with its difference to
    the fixed one), what DATE changed (distance moved, share of pixels), both verdicts (and, for a prompt outside
    the toy world, what it knows)."""
    from date_diffusion.grids import (
        changed_pixels,
        changed_text,
        distance_text,
        knows_line,
        reward_text,
        shown_verdicts,
        still,
        verdict_lines,
    )

    fixed_panel, date = panels[0], panels[1]
    changed, total = changed_pixels(still(fixed), still(image))
    lines = []
    label = date["method"]  # as the grid's header names it: `DATE`, `DATE (inactive)`, `DATE (replayed)`
    if "final_reward" in date:  # the comparison that means something: both finished images, one reward
        shown = f"fixed {fixed_panel['final_reward']:.4f}, {label} {reward_text(date).removeprefix('reward ')}"
        lines.append(f"    reward of the finished images ({record['reward']}): {shown}")
    moved = f"embedding moved {distance_text(date['final_distance'])}" if "final_distance" in date else (
        "no distance recorded")  # fmt: skip
    shown = changed_text({"pixels_changed": changed, "pixels": total})
    lines.append(f"    {label} changed: {moved}, pixels changed {shown}")
    if "evaluator" not in record:
        return [*lines, "    evaluator: none for this model (the exact evaluator judges the toy world only)"]
    both = shown_verdicts(record, {k: record["evaluator"][k] for k in ("fixed", kind)})
    knows = knows_line(both)
    return [*lines, "    " + "; ".join(verdict_lines(both)), *([f"    {knows}"] if knows else [])]


def describe(meta: dict, verdicts: bool = True) -> list[str]:
    """One line per DATE update, then (with `verdicts`) the exact evaluator's verdict on each image (and, for a
    prompt outside the toy world, what it knows)."""
    from date_diffusion.grids import knows_line, shown_verdicts, update_text, verdict_lines

    lines = [f"    step {u['step']:3d}: {update_text(u)}" for u in meta["trace"]["updates"]]
    evaluator = shown_verdicts(meta, meta.get("evaluator", {}) if verdicts else {})
    knows = knows_line(evaluator)
    return lines + [f"    {line}" for line in [*verdict_lines(evaluator), *([knows] if knows else [])]]
