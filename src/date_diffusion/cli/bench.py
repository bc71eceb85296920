"""`date-diffusion bench` and `date-diffusion report`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from date_diffusion.bench.suites import DEFAULT_SEED_BASE, FILE_SUITES, SUITES, run_seeds
from date_diffusion.cli.common import CLIError, HelpFormatter, from_namespace, int_list, say_unused, str_list
from date_diffusion.core.config import PAPER_UPDATE_EVERY
from date_diffusion.core.settings import DTYPES
from date_diffusion.core.text import quoted, spelled, spelled_as_read
from date_diffusion.editing import CFG_SRC, SKIP_FRACTION
from date_diffusion.evaluation.methods import methods_usage
from date_diffusion.families import PAPER_EVAL_CLIP, PAPER_REWARD, by_name
from date_diffusion.model_folder import fingerprint
from date_diffusion.perf import MODELS as PERF_MODELS
from date_diffusion.perf import VARIANTS
from date_diffusion.toyworld import world

# torch, accelerate and the benchmark are imported inside the functions that need them: see cli/__init__.py

BATCH_SIZE = 32  # images per forward pass of a new run (`--batch-size`)
_SD = by_name("sd")  # the family the paper ran, whose defaults the help quotes
_TOY_SEEDS = ", ".join(f"{n}: {d.seeds} from {d.seed_base}" for n, d in world.SUITES.items())
BENCH_EXAMPLES = """examples:
  date-diffusion bench --suite toy --methods "fixed date best-of-2" --out runs/toy
  date-diffusion bench --suite toy --limit 12 --seeds 4 --methods "fixed date best-of-2" --out runs/toy-quick
  date-diffusion bench --suite toy-validation --methods "fixed date:rho=0.25 date:rho=1 recommended" --out runs/val
  date-diffusion bench --suite edit-toy --seeds 2 --methods "fixed date" --out runs/edit
  date-diffusion bench --suite ane --model stable-diffusion-v1-5/stable-diffusion-v1-5 --seeds 4 --out runs/ane
  date-diffusion bench --preset paper-coco --captions coco5k.csv --out runs/paper   # the paper's Table 1 (GPU)

Before the long part it prints how many images it makes and, after the first batch of each method, an estimate
of the time the rest takes. Re-running the same command resumes; `accelerate launch --multi_gpu --num_processes N
-m date_diffusion bench ...` shards the prompts over N processes (docs/benchmarks.md)."""
REPORT_EXAMPLES = """examples:
  date-diffusion report runs/toy
  date-diffusion report --rescore runs/toy
  date-diffusion report runs/geneval --export geneval exports/geneval   # GenEval's layout, one folder per method
  date-diffusion report runs/t2i --export t2i-compbench exports/t2i"""
PERF_EXAMPLES = """examples:
  date-diffusion bench-perf --model toy --out runs/perf
  date-diffusion bench-perf --model sd15-random-512 --variants fixed,date,date-checkpointing --repeats 3 --out runs/perf
  date-diffusion bench-perf --model sd15-random-512 --device cuda --dtype float16 --batch-size 1,2,4 --out runs/gpu
  date-diffusion bench-perf --first-command --repeats 5 --out runs/perf"""


class _Formatter(HelpFormatter):
    """`HelpFormatter`, naming each value of an option of several (`--export KIND DIR`: the action's `value_names`;
    a tuple `metavar` would be the same in the help, but the options' generated tests expect a text metavar)."""

    def _metavar_formatter(self, action, default_metavar):
        names = getattr(action, "value_names", None)
        if names:
            return lambda size: names
        return super()._metavar_formatter(action, default_metavar)


def _add_export_arguments(p, when: str) -> None:
    """`--export KIND DIR` and `--geneval-metadata FILE` (bench and report)."""
    from date_diffusion.bench.export import KINDS

    a = p.add_argument(
        "--export",
        nargs=2,
        default=None,
        help=f"{when}, write each method's images into DIR/<method>/ in the layout an official evaluator reads "
        f"(KIND: {', '.join(KINDS)}; DIR new or empty; docs/benchmarks.md)",
    )
    a.value_names = ("KIND", "DIR")
    p.add_argument(
        "--geneval-metadata",
        default=None,
        metavar="FILE",
        help="--export geneval: GenEval's evaluation_metadata.jsonl, line N the prompt of item N (default: the "
        "run's --prompts-file / --captions when it is that .jsonl file)",
    )
    p.add_argument(
        "--export-partial",
        action="store_true",
        help="--export: export an interrupted run anyway, saying which images are missing (by default an export "
        "needs every prompt with every seed in every method)",
    )


def add_parsers(sub):
    _add_bench_parser(sub)
    _add_perf_parser(sub)
    r = sub.add_parser(
        "report",
        help="re-render tables and plots of a bench run",
        epilog=REPORT_EXAMPLES,
        formatter_class=_Formatter,
    )
    r.add_argument("dir", help="a `bench` run's --out folder")
    r.add_argument(
        "--rescore",
        action="store_true",
        help="toy world: re-run the current exact evaluator on the images scored by an earlier version first",
    )
    _add_export_arguments(r, "then")
    r.set_defaults(func=run_report, validate=validate_report)


def _add_bench_parser(sub):
    p = sub.add_parser(
        "bench",
        help="compare methods on a prompt suite (resumable; accelerate launch to shard)",
        epilog=BENCH_EXAMPLES,
        formatter_class=_Formatter,
    )
    from date_diffusion.bench.presets import PRESETS

    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a paper protocol (docs/benchmarks.md): fixes suite, model, scheduler, steps, guidance, seeds, reward, "
        "eval CLIP, methods, batch size and dtype; prints the paper's table beside the measured one",
    )
    _add_bench_suite_arguments(p)
    _add_export_arguments(p, "once the images are made")
    _add_bench_run_arguments(p)
    p.set_defaults(bench_defaults={a.dest: a.default for a in p._actions})


def _add_bench_suite_arguments(p):
    """`bench`'s suite, editing, prompt and seed options."""
    p.add_argument(
        "--suite",
        default=None,
        choices=SUITES,
        help="toy-validation: tuning prompts outside the suite, seeds from 0 (for choosing defaults); "
        "edit-toy / edit CSV (--prompts-file): editing by DDPM inversion",
    )
    p.add_argument(
        "--edit-skip",
        type=int,
        default=None,
        help=f"editing: steps not regenerated (default {round(100 * SKIP_FRACTION)}%% of --steps)",
    )
    p.add_argument(
        "--cfg-src", type=float, default=None, help=f"editing: guidance of the inversion (default {CFG_SRC:g})"
    )
    p.add_argument("--captions", default=None, help="coco: CSV with a caption column, or a text file")
    p.add_argument(
        "--prompts-file",
        default=None,
        help="prompts: a text file, one prompt a line (T2I-CompBench's lists), or a .jsonl file of objects with a "
        "prompt field (GenEval's evaluation_metadata.jsonl)",
    )
    p.add_argument(
        "--methods",
        default="fixed date",
        help=f"space- or +-separated: {methods_usage()} (see docs/benchmarks.md)",
    )
    p.add_argument(
        "--seeds", type=int, default=None, help=f"seeds per prompt (default: the toy suites' ({_TOY_SEEDS}), else 1)"
    )
    p.add_argument(
        "--seed-base",
        type=int,
        default=None,
        help="first seed (default: the toy suites' (the evaluation suite's are never used for tuning); "
        f"{DEFAULT_SEED_BASE} elsewhere, as the paper)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="a sample of N prompts spread over the suite's categories: the categories take turns, each giving its "
        "next prompt in suite order, so the sample is always the same (toy, --limit 12: two of each of its six); a "
        "file without categories gives its first N. Image folders keep the full suite's prompt numbers",
    )
    p.add_argument(
        "--categories",
        type=str_list,
        default=None,
        help="comma-separated prompt categories to keep (toy: single, two_object, color_binding, counting, "
        "position, novel; ane: animal_animal, animal_object, object_object)",
    )


def _add_bench_run_arguments(p):
    """`bench`'s model, sampling, metrics and output options."""
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"default: the model's recommended value, else its family's ({_SD.title}: "
        f"{_SD.sampling['num_inference_steps']})",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help=f"default: the model's recommended value, else its family's ({_SD.title}: "
        f"{_SD.sampling['guidance_scale']:g})",
    )
    p.add_argument("--model", default=None, help=f"default: the toy world (`{PERF_MODELS[0]}`)")
    p.add_argument("--scheduler", default=None, help="a scheduler name (default: the model's own)")
    p.add_argument(
        "--reward",
        default=None,
        help=f"reward DATE, UG and best-of-N use (default: the model's plain reward: {world.PLAIN_REWARD} on the toy "
        f"world, {PAPER_REWARD} elsewhere; `date:reward=SPEC` and `recommended` follow their own)",
    )
    p.add_argument(
        "--eval-clip",
        default=None,
        help=f"CLIP for the CLIP-score metric, never the reward (default: {world.EVAL_CLIP} on the toy world, else "
        f"the family's, {PAPER_EVAL_CLIP})",
    )
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per forward pass (default: the run's own when it resumes one, else {BATCH_SIZE}; a "
                        "resumed image is the uninterrupted run's to the last bit at the run's own)")  # fmt: skip
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' precision")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--fid-real", default=None, help="folder of real images for FID (toy: rendered automatically)")
    p.add_argument(
        "--inception-weights",
        default=None,
        help="torch-fidelity Inception weights (pt_inception-2015-12-05-6726825d.pth) for Inception FID",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the run's folder: run.json, results.md / .csv / .json, the plots and images/ (re-running the same "
        "command there resumes)",
    )
    p.set_defaults(func=run_bench, validate=validate_bench)


def _add_perf_parser(sub):
    f = sub.add_parser(
        "bench-perf",
        help="time and memory of DATE vs fixed sampling (one process per run)",
        epilog=PERF_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    f.add_argument("--model", default=PERF_MODELS[0], help=f"{', '.join(PERF_MODELS)}, or a diffusers folder")
    f.add_argument(
        "--variants",
        type=str_list,
        default="fixed,date,date-checkpointing",
        help=f"comma-separated: {', '.join(VARIANTS)} (lowres: the real VAE decodes for the reward at the reward's "
        "input size)",
    )
    f.add_argument(
        "--batch-size", type=int_list, default=[1], help="comma-separated batch sizes, e.g. 1,2,4 (default 1)"
    )
    f.add_argument("--steps", type=int, default=10, help="sampling steps of each measured run")
    f.add_argument(
        "--update-every",
        type=int,
        default=PAPER_UPDATE_EVERY,
        help="with the default 10 steps: one update, the paper's share of update steps",
    )
    f.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each configuration, each in its own process (shown: median [min, max])",
    )
    f.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    f.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' precision")
    f.add_argument("--threads", type=int, default=1, help="torch CPU threads of each measuring process")
    f.add_argument(
        "--reward",
        default=None,
        help=f"reward spec (default: {world.PLAIN_REWARD} on the toy world, a random-weight CLIP-L for sd15-random, "
        f"{PAPER_REWARD} for a folder)",
    )
    f.add_argument("--tiny-decoder", default=None, help="AutoencoderTiny folder for date-approx (toy: shipped)")
    f.add_argument("--out", default=None, help="folder for perf-<model>.json and .md")
    f.add_argument("--overwrite", action="store_true", help="replace the files of an earlier measurement in --out")
    f.add_argument(
        "--first-command",
        action="store_true",
        help="instead: time the README's main command (toy world, --compare) in --repeats fresh processes, with "
        "where the time goes; writes first-command.json and .md",
    )
    f.set_defaults(func=run_bench_perf, validate=validate_perf)


# bench-perf options read only by the variants whose names start so (a DATE update, the approximate decoder)
READ_BY_VARIANTS = {"reward": "date", "update_every": "date", "tiny_decoder": "date-approx"}
# what `bench-perf --first-command` times is the README's main command at its own settings: these would do nothing
FIRST_COMMAND_UNREAD = ("model", "variants", "batch_size", "steps", "update_every", "device", "dtype", "reward",
                        "tiny_decoder")  # fmt: skip


@dataclass(frozen=True)
class ExportOptions:
    """`--export KIND DIR`, `--geneval-metadata` and `--export-partial` (bench and report), typed."""

    export: tuple[str, str] | None  # (KIND, DIR)
    geneval_metadata: str | None
    export_partial: bool

    @classmethod
    def from_args(cls, args) -> ExportOptions:
        return from_namespace(cls, args, export=None if args.export is None else tuple(args.export))


@dataclass(frozen=True)
class BenchOptions:
    """`bench`'s options, typed: built once from the namespace (`from_args`, with `--preset`'s settings) after
    `cli.main` has checked each value through its kind."""

    preset: str | None
    suite: str | None
    edit_skip: int | None
    cfg_src: float | None
    captions: str | None
    prompts_file: str | None
    methods: str
    seeds: int | None
    seed_base: int | None
    limit: int | None
    categories: tuple[str, ...] | None
    export: ExportOptions
    steps: int | None
    guidance: float | None
    model: str | None
    scheduler: str | None
    reward: str | None
    eval_clip: str | None
    batch_size: int | None
    dtype: str
    threads: int | None
    fid_real: str | None
    inception_weights: str | None
    out: str

    @classmethod
    def from_args(cls, args) -> BenchOptions:
        """The options, those `--preset` fixes set to its values (a clash with a value given is a usage error)."""
        categories = None if args.categories is None else tuple(args.categories)
        opts = from_namespace(cls, args, export=ExportOptions.from_args(args), categories=categories)
        if not opts.preset:
            return opts
        from date_diffusion.bench.presets import apply_preset

        try:
            return apply_preset(opts, args.bench_defaults)[1]
        except ValueError as err:
            raise CLIError(str(err)) from err


@dataclass(frozen=True)
class ReportOptions:
    """`report`'s options, typed."""

    dir: str
    rescore: bool
    export: ExportOptions

    @classmethod
    def from_args(cls, args) -> ReportOptions:
        return from_namespace(cls, args, export=ExportOptions.from_args(args))


@dataclass(frozen=True)
class PerfOptions:
    """`bench-perf`'s options (and the global --debug), typed."""

    model: str
    variants: tuple[str, ...]
    batch_size: tuple[int, ...]
    steps: int
    update_every: int
    repeats: int
    device: str
    dtype: str
    threads: int
    reward: str | None
    tiny_decoder: str | None
    out: str | None
    overwrite: bool
    first_command: bool
    debug: bool

    @classmethod
    def from_args(cls, args) -> PerfOptions:
        lists = dict(variants=tuple(args.variants), batch_size=tuple(args.batch_size))
        return from_namespace(cls, args, debug=getattr(args, "debug", False), **lists)


def require_bench_extra() -> None:
    """The benchmark's plots and FID need the `bench` extra; say so before any work."""
    import importlib.util

    missing = [m for m in ("matplotlib", "torchmetrics") if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"the benchmark needs {', '.join(missing)}: pip install 'date-diffusion[bench]'")


def validate_bench(args) -> tuple:
    """Every check of `bench` that needs no model: (options, model, run settings, methods, suite items)."""
    require_bench_extra()
    opts = BenchOptions.from_args(args)  # the one read of the namespace
    from date_diffusion.cli.common import resolve_model

    if not opts.preset and opts.suite is None:
        raise CLIError("--suite is required (or --preset NAME, a paper protocol)")
    model = resolve_model(opts.model)
    settings, methods, items = _prepare(opts, model)
    _check_report_files(opts.out)  # the report at the end writes them: a folder of their name is found now
    prompts = lambda: {it.index: it.prompt for it in items}
    _export_target(opts.export, opts.out, prompts, _suite_metadata(settings.suite, settings.captions))
    return opts, model, settings, methods, items


def run_bench(args) -> int:
    opts, model, settings, methods, items = validate_bench(args)
    import torch
    from accelerate import PartialState

    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    # Without a GPU, accelerate's state only sees the other processes when told it is on the CPU; the CPU
    # launch is `accelerate launch --multi_gpu --num_processes N` (torchrun), as `--cpu` starts one process.
    state = PartialState(cpu=not torch.cuda.is_available())
    if opts.preset and state.is_main_process:
        from date_diffusion.bench.presets import cost_notice, get_preset

        print(cost_notice(get_preset(opts.preset), len(items), state.num_processes), file=sys.stderr)
    from date_diffusion.bench.runner import as_the_run_spells_it

    # the model's files read whole once every usage check has passed (as long as reading the model)
    settings = replace(settings, model_content=fingerprint(model, whole=True))
    settings = as_the_run_spells_it(out, settings)  # `--model runs/m/` resumes the run of `runs/m`
    threads = torch.get_num_threads() if str(state.device).startswith("cpu") else None  # a CPU's float sums
    settings, made_in = _made_in(out, settings, opts.batch_size, state.num_processes, threads, state.is_main_process)
    _check_folder(out, settings, methods, items)
    from date_diffusion.bench.runner import run_lock

    # shared with other bench processes; a report or a page reading the run is refused while it is held. Held
    # from the start where the folder exists (a resume), and once the first command made it (run.json written
    # after the model loaded): never an image made without it
    with run_lock(out):
        run, pipe, scorer = _load_run(out, model, opts.dtype, settings, methods, state.device, made_in)
        if opts.guidance is not None and state.is_main_process:
            _say_guidance_without_effect(pipe, settings.guidance)
        with run_lock(out, must=True):
            _generate_share(run, pipe, methods, items, scorer, made_in["batch_size"], state)
            state.wait_for_everyone()
            if state.is_main_process:
                _finish_bench(out, opts, settings, methods)
    return 0


def _say_guidance_without_effect(pipe, guidance: float) -> None:
    """`--guidance` given that changes no image of the run (`--guidance 0.5`: no classifier-free guidance runs, as
    with 1): said once, never taken without a word; run.json and the report state it as given."""
    unused = pipe.settings_without_effect(guidance)
    if "guidance_scale" in unused:
        say_unused("bench", f"--guidance {spelled_as_read(guidance)}", unused["guidance_scale"],
                   listed="run.json and the report state it as given")  # fmt: skip


def _made_in(out: Path, settings, given: int | None, processes: int, threads: int | None, say: bool) -> tuple:
    """(the settings with how the run makes its images, how this command makes them: `runner.MADE_IN` -> value): a
    new run records its batch size, processes and (on a CPU) threads; a resume takes the run's batch size unless
    --batch-size is given, and says when its images may differ from an uninterrupted run's in float32's last digits
    (a batch's float sums depend on its size and members, a CPU's on its threads): another batch size given, other
    processes or threads, or a run.json of an earlier version, which does not record them (nothing is then
    recorded: the run's own are unknown). A run that made no image yet (its first command stopped before one) is
    made as this command makes it."""
    from date_diffusion.bench.runner import MADE_IN, SettingsMismatch, made_any, made_in_problem, read_run

    old = None
    if (out / "run.json").is_file() and made_any(out):
        try:
            old = read_run(out)
        except SettingsMismatch:  # named by the folder's own check, next
            old = None
    recorded = (old or {}).get("batch_size")
    edited = made_in_problem(out, old or {})  # what the images' records say
    if edited:
        raise CLIError(edited)
    now = {"batch_size": given or recorded or BATCH_SIZE, "processes": processes, "threads": threads}
    differ = "the images made now may differ from an uninterrupted run's in float32's last digits"
    notes = []
    if old is not None and recorded is None:
        notes.append(f"this run's run.json (an earlier version's) does not record the batch size its images were "
                     f"made in: they are made now in batches of {now['batch_size']}; unless that was the run's, "
                     f"{differ}")  # fmt: skip
    elif given and recorded and given != recorded:
        notes.append(f"--batch-size {spelled(given)}: this run made its images in batches of {recorded}; {differ} "
                     "(leave --batch-size out to make them in the run's own)")  # fmt: skip
    if old is not None and old.get("processes") not in (None, processes):
        notes.append(f"this run shared its images among {old['processes']} processes, this command among "
                     f"{processes}; {differ}")  # fmt: skip
    if old is not None and old.get("threads") not in (None, threads):
        notes.append(
            f"this run made its images with {old['threads']} CPU threads, this command with "
            f"{threads or 'a GPU'}; {differ} (--threads {old['threads']} makes them as the run did)"
        )
    for note in notes if say else ():
        print(f"date-diffusion bench: note: {note}", file=sys.stderr)
    if old is not None:  # what the run recorded first stays (`runner.MADE_IN`), unknown ones unknown
        return replace(settings, **{name: old.get(name) for name in MADE_IN}), now
    return replace(settings, **now), now


def _check_folder(out: Path, settings, methods, items) -> None:
    """Before loading: a folder of another run, images a resume cannot trust, prompts this run does not select."""
    from date_diffusion.bench.runner import (
        RESUME_FIX,
        SettingsMismatch,
        compare_settings,
        describe_untrusted,
        read_run,
        run_methods,
        unverified_images,
    )

    try:
        compare_settings(out, settings)  # before loading: a folder of another run is refused at once
    except SettingsMismatch as err:
        raise CLIError(str(err)) from err
    run_methods_ = methods
    if (out / "run.json").is_file():  # every method of the run: the report at the end reads them all
        listed = {m.label for m in methods}
        run_methods_ = [*methods, *(m for m in run_methods(read_run(out)) if m.label not in listed)]
    untrusted = unverified_images(out, settings, run_methods_, items)  # each file the run or its report would read
    if untrusted:
        raise CLIError(describe_untrusted(out, untrusted, RESUME_FIX))


def _load_run(out: Path, model: str, dtype: str, settings, methods, device, made_in: dict):
    """(the run, the pipeline, the scorer), with what depends on the model checked before run.json is written."""
    from date_diffusion.bench.runner import BenchRun, SettingsMismatch, check_settings
    from date_diffusion.pipelines import load_date_pipeline

    run = BenchRun(settings, out, device, made_in)
    pipe = load_date_pipeline(model, dtype, run.device, settings.scheduler)
    pipe.set_progress_bar_config(disable=True)
    _check_loaded(pipe, run, methods)  # what depends on the model, before run.json is written
    try:
        check_settings(out, settings)  # another process may have started this folder with other settings meanwhile
    except SettingsMismatch as err:
        raise CLIError(str(err)) from err
    return run, pipe, run.scorer()


def _generate_share(run, pipe, methods, items, scorer, batch_size: int, state) -> None:
    """This process's images: sharded by prompt, each process owns the prompts with index % world == rank."""
    from tqdm.auto import tqdm

    from date_diffusion.bench.runner import generate_methods

    jobs = [
        (it, s) for it in items if it.index % state.num_processes == state.process_index for s in run.settings.seeds
    ]
    process = f"process {state.process_index + 1}/{state.num_processes}"
    say = lambda line: tqdm.write(f"{process}: {line}", file=sys.stderr)
    desc = f"[{state.process_index}] images" if state.num_processes > 1 else "images"
    generate_methods(run, pipe, methods, jobs, scorer, batch_size, say, desc)


def _finish_bench(out: Path, opts: BenchOptions, settings, methods) -> None:
    """The main process's end of a run: the report (and the paper's table), the export, where everything is."""
    from date_diffusion.bench.report import write_report

    report = write_report(out)
    print(report["markdown"])
    if opts.preset:
        from date_diffusion.bench.presets import get_preset, paper_table

        print(paper_table(get_preset(opts.preset), out))
    target = _export_target(opts.export, out, dict, _suite_metadata(settings.suite, settings.captions))
    if target is not None:
        _export(out, [m.slug for m in methods], *target, opts.export.export_partial)
    print_written(out, report["files"])


def print_written(out: Path, files: list[Path]) -> None:
    """The run's last lines: where its tables, plots and images are, and how to look at them."""
    tables = [f for f in files if f.suffix != ".png"]
    plots = [f for f in files if f.suffix == ".png"]
    print(f"results: {tables[0]} (the tables above)" + "".join(f", {f}" for f in tables[1:]))
    if plots:
        print(f"plots: {', '.join(str(f) for f in plots)}")
    print(f"images with their records: {out / 'images'}/METHOD/PROMPT/samples/SEED.png")
    print(f"in the browser: date-diffusion ui --run {out}")


def _check_loaded(pipe, run, methods) -> None:
    """With the model loaded: every method's step count fits its scheduler, and its rewards and decoders load (one
    that does not is named with the option or method that gave it)."""
    from date_diffusion.hub import ModelNotFoundError
    from date_diffusion.rewards.registry import RewardSpecError
    from date_diffusion.schedulers import check_steps_fit

    def loaded(what: str, load):
        try:
            return load()
        except (RewardSpecError, ModelNotFoundError) as err:
            raise CLIError(f"{what}: {err}") from err

    for m in methods:
        steps = m.steps_for(run.settings.steps)
        try:
            check_steps_fit(pipe, steps, "--steps" if steps == run.settings.steps else f"{m.label}: steps")
        except ValueError as err:
            raise CLIError(str(err)) from err
        _check_attention_res(pipe, m)
        if getattr(m, "lowres", None) is not None and m.lowres >= max(pipe.default_image_shape()):
            raise CLIError(f"--methods: {quoted(m.label)} decodes for the reward at {m.lowres} px, and the model's "
                           f"images are {'x'.join(map(str, pipe.default_image_shape()))}: it is the method without "
                           "lowres; give a smaller lowres, or leave it out")  # fmt: skip
        if m.applies_to(run.settings.suite):
            loaded(f"method {quoted(m.label)}", lambda: m.pipeline_kwargs(run))
    loaded(f"--reward {quoted(run.settings.reward)}", run.reward)
    if run.settings.eval_clip:
        loaded(f"--eval-clip {quoted(run.settings.eval_clip)}", lambda: run.reward(run.settings.eval_clip))


def _check_attention_res(pipe, method) -> None:
    """An Attend-and-Excite method's `res` (default `DEFAULT_ATTN_RES`) is the side of cross-attention maps the
    model makes (any other side collects no map and fails at the first step)."""
    from date_diffusion.sampling.attend_excite import DEFAULT_ATTN_RES, attention_resolutions

    if not hasattr(method, "res") or getattr(pipe, "unet", None) is None:
        return  # no Attend-and-Excite, or a family without a UNet (refused by the pipeline's own check)
    res = method.res or DEFAULT_ATTN_RES
    sides = attention_resolutions(pipe.unet)
    if res not in sides:
        given = f"res={res}" if method.res else f"the default res={res}"
        raise CLIError(
            f"--methods {quoted(method.label)}: {given} is no side of this model's cross-attention maps "
            f"({', '.join(map(str, sides)) or 'none'}); give res= one of them"
        )


def _prepare(opts: BenchOptions, model: str):
    """The run's settings, its methods and the suite's items; every usage error is found here, before any work (a
    model that cannot load before the heavy imports)."""
    from date_diffusion.bench.suites import default_seeds, load_suite
    from date_diffusion.cli.common import resolve_from_args
    from date_diffusion.evaluation.methods import parse_methods

    # the run's reward and sampling resolve as `generate --paper-defaults` would (the methods carry their own DATE)
    flags = dict(reward=opts.reward, num_inference_steps=opts.steps, guidance_scale=opts.guidance,
                 scheduler=opts.scheduler)  # fmt: skip
    resolved = resolve_from_args(model, flags, paper_defaults=True)
    from date_diffusion.bench.runner import RunSettings  # (imports torch)

    try:
        methods = parse_methods(opts.methods, model)
    except ValueError as err:
        raise CLIError(f"--methods {quoted(opts.methods)}: {err}") from err
    _check_suite_reads(opts)
    try:
        items = load_suite(opts.suite, opts.captions or opts.prompts_file, opts.limit, _listed(opts.categories))
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    _note_suite_counts(opts, items)
    bad = [m.label for m in methods if not m.applies_to(opts.suite)]
    if bad:
        raise CLIError(
            f"methods {bad} do not apply to suite {quoted(opts.suite)}; editing runs fixed (plain edit) and date:..."
        )
    n_seeds, base = default_seeds(opts.suite)  # editing suites: one source layout and inversion per seed
    n_seeds, base = opts.seeds or n_seeds, opts.seed_base if opts.seed_base is not None else base
    recorded = _recorded_methods(opts.out, methods)  # a resume's run holds these too
    if opts.steps is not None and not any(m.reads_run_steps for m in [*recorded, *methods]):  # given, read by none
        raise CLIError(f"--steps {spelled(opts.steps)}: no method of this run reads it (each samples its own steps: "
                       f"{', '.join(m.label for m in methods)}); leave it out")  # fmt: skip
    _check_together(opts, model, methods, resolved.num_inference_steps, base + n_seeds - 1)
    _check_distinct_in_run(recorded, methods, resolved.num_inference_steps, resolved.reward, opts.out)
    eval_clip = _eval_clip(opts.eval_clip, model, resolved.family)
    _check_held_out(
        eval_clip,
        opts.eval_clip is None,
        [(resolved.reward, "the run's reward")]
        + [
            (spec, f"the {what} of {quoted(m.label)}")
            for m in methods
            for what in ("reward", "judge")
            if (spec := getattr(m, what, None))
        ],
    )  # fmt: skip  (a `select` judge picks by its model too)
    return (
        RunSettings(
            suite=opts.suite,
            captions=opts.captions or opts.prompts_file,
            limit=opts.limit,
            categories=_listed(opts.categories) or None,
            seeds=run_seeds(base, n_seeds),
            steps=resolved.num_inference_steps,
            guidance=resolved.guidance_scale,
            model=model,
            model_files=fingerprint(model),
            reward=resolved.reward,
            eval_clip=eval_clip,
            scheduler=resolved.scheduler,
            dtype=opts.dtype,
            fid_real=opts.fid_real,
            inception_weights=opts.inception_weights,
            edit_skip=opts.edit_skip,
            cfg_src=opts.cfg_src if opts.cfg_src is not None else CFG_SRC,
            methods={m.label: m.record() for m in methods},
        ),
        methods,
        items,
    )


def _check_suite_reads(opts) -> None:
    """Options the suite does not read are refused, never recorded in run.json as if they acted: a prompts file for
    a suite with its own prompts, the editing options for a suite that samples, both prompt files at once."""
    from date_diffusion.evaluation.suite_words import is_editing_suite

    unread = []
    if opts.suite not in FILE_SUITES:
        unread += [f for f, v in (("--captions", opts.captions), ("--prompts-file", opts.prompts_file)) if v]
    if not is_editing_suite(opts.suite):
        unread += [f for f, v in (("--edit-skip", opts.edit_skip), ("--cfg-src", opts.cfg_src)) if v is not None]
    if unread:
        raise CLIError(f"suite {quoted(opts.suite)} does not read {', '.join(unread)} (a prompts file: the suites "
                       f"{', '.join(FILE_SUITES)}; the editing options: the editing suites): leave "
                       f"{'it' if len(unread) == 1 else 'them'} out")  # fmt: skip
    if opts.captions and opts.prompts_file:
        raise CLIError("--captions and --prompts-file both name the suite's prompts file: give one")


def _note_suite_counts(opts, items) -> None:
    """What a suite's prompts file and --limit make of the run, said where it is not what was asked for: a prompt
    listed more than once (each is its own item, as the benchmark counts it: their images are the same), a --limit
    above the prompts there are, the columns of the file that are not read (as `generate` says them)."""
    from date_diffusion.bench.suites import read_captions_and_columns, unread_columns
    from date_diffusion.evaluation.suite_words import is_editing_suite

    for flag, path in (("--prompts-file", opts.prompts_file), ("--captions", opts.captions)):
        prompts = path and not is_editing_suite(opts.suite)  # an editing suite's file is rows of edits, all read
        note = unread_columns(Path(path), read_captions_and_columns(Path(path))[1], flag) if prompts else None
        if note:
            print(f"date-diffusion bench: note: {note}", file=sys.stderr)
    seen, again = {}, []
    for it in items:
        if it.prompt in seen:
            again.append(f"{it.index + 1} is {seen[it.prompt] + 1}")
        seen.setdefault(it.prompt, it.index)
    if again:
        print(f"date-diffusion bench: note: the prompts file lists a prompt more than once (prompt "
              f"{', '.join(again[:3])}{', ...' if len(again) > 3 else ''}, counting from 1): each is its own item of "
              "the suite, with the same images", file=sys.stderr)  # fmt: skip
    if opts.limit and opts.limit > len(items):
        print(f"date-diffusion bench: note: --limit {opts.limit} is more than the suite's {len(items)} prompts: all "
              "of them run", file=sys.stderr)  # fmt: skip


def _listed(values: tuple | None) -> list | None:
    """A tuple option as the list the suites and run.json take."""
    return None if values is None else list(values)


def _recorded_methods(out, methods) -> list:
    """The methods a run folder's run.json already holds under other labels than `methods`' (a resume that adds a
    method compares it with them too); none for a new folder or one whose run.json does not read (named later)."""
    from date_diffusion.bench.runner import SettingsMismatch, read_run, run_methods

    if out is None or not (Path(out) / "run.json").is_file():
        return []
    try:
        recorded = run_methods(read_run(Path(out)))
    except (SettingsMismatch, ValueError, OSError):
        return []
    labels = {m.label for m in methods}
    return [m for m in recorded if m.label not in labels]


def _check_distinct_in_run(recorded, methods, steps: int, reward: str | None, out) -> None:
    """Two methods that make the same images in this run (`methods.same_images` at its steps and reward), among
    those listed and those its run.json already holds (`recorded`), are refused, as two spellings of one method are:
    their columns would be one method's images twice. One the run holds is named as the run's."""
    from date_diffusion.evaluation.methods import same_images

    twins = same_images([*recorded, *methods], steps, reward)
    if not twins:
        return
    held = [m for m in recorded if m.label in twins]
    if held:  # a resume that spells a method of the run otherwise
        given = next(label for label in twins if label != held[0].label)
        raise CLIError(f"--methods: {given!r} makes the same images as {held[0].label!r} (at the run's {steps} steps "
                       f"and reward {reward!r}), which the run {str(out)!r} already holds (its run.json): list it "
                       f"as {held[0].label!r} to resume it, or give another --out")  # fmt: skip
    raise CLIError(f"--methods: {twins[0]!r} and {twins[1]!r} make the same images in this run (at its {steps} "
                   f"steps and reward {reward!r}): list one")  # fmt: skip


def _check_together(opts: BenchOptions, model: str, methods, steps: int, last_seed: int) -> None:
    """What the options' kinds cannot see alone: each method's own constraints on the run (`Method.check`), the last
    seed (best-of-N's candidates included), the editing skip inside the run, the files FID reads."""
    from date_diffusion.cli.common import checked
    from date_diffusion.core.settings import MAX_SEED, Seed
    from date_diffusion.evaluation.methods import BEST_OF_STRIDE, CannotRun
    from date_diffusion.hub import ModelNotFoundError
    from date_diffusion.pipelines.loading import check_tiny_decoder

    for m in methods:
        try:
            m.check(steps)  # every method's own constraints on the run (`Method.check`), before any work
            if getattr(m, "decoder", None) is not None:
                check_tiny_decoder(model, m.decoder)
        except CannotRun as err:
            raise CLIError(f"--methods: {err}") from err
        except (ValueError, ModelNotFoundError) as err:
            raise CLIError(f"method {quoted(m.label)} with {m.steps_for(steps)} steps: {err}") from err
    checked(Seed(), last_seed, "--seed-base + --seeds - 1")
    offset = (max(m.seeds_per_job for m in methods) - 1) * BEST_OF_STRIDE  # best-of-N's candidates' seeds
    if last_seed + offset > MAX_SEED:  # a seed typed, never one computed, is quoted
        first = opts.seed_base if opts.seed_base is not None else "the suite's"
        raise CLIError(f"--seed-base {first}: best-of-N's candidates draw seeds up to {offset:,} above each image's "
                       f"seed, past the largest seed (2**63 - 1); give a --seed-base of at most "
                       f"{MAX_SEED - offset - (last_seed - (opts.seed_base or 0))}")  # fmt: skip
    if opts.edit_skip is not None and opts.edit_skip >= steps:
        raise CLIError(f"--edit-skip must be in [0, {steps - 1}] (below --steps), got {opts.edit_skip}")
    problem = fid_inputs_problem(opts.fid_real, opts.inception_weights)
    if problem:
        raise CLIError(f"--{problem[0].replace('_', '-')} {problem[1]}")


def fid_inputs_problem(fid_real: str | None, inception_weights: str | None) -> tuple[str, str] | None:
    """(setting, what is wrong) of the files FID reads, or None: bench checks its options (`--fid-real`,
    `--inception-weights`) with it and report the fields of run.json that hold them (`fid_real`, ...)."""
    import importlib.util

    from date_diffusion.schemas import not_a_file

    if fid_real is not None and not os.path.isdir(fid_real):
        return "fid_real", f"{fid_real!r} is not a folder of real images; give the folder"
    if inception_weights:
        why = not_a_file(inception_weights, limit=1 << 34)
        if why:
            return "inception_weights", f"{inception_weights!r} is {why}; give torch-fidelity's weights file"
        if importlib.util.find_spec("torch_fidelity") is None:
            return "inception_weights", "needs torch-fidelity: pip install torch-fidelity (or leave it out)"
    return None


def _eval_clip(spec: str | None, model: str, family: str) -> str | None:
    """`--eval-clip` (checked), default: the toy world's held-out CLIP on toy-world models, else the family's."""
    from date_diffusion.families import by_name
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    if spec is None:
        return world.default_eval_clip(model) or by_name(family).eval_clip
    try:
        if spec:  # empty: no held-out CLIP metric
            check_spec(spec)
    except RewardSpecError as err:
        raise CLIError(f"--eval-clip {quoted(spec)}: {err}") from err
    return spec or None  # run.json says "no metric" as the scorer reads it


def _check_held_out(eval_clip: str | None, default: bool, rewards) -> None:
    """The held-out CLIP metric is held out: no model of it is one a reward runs (`toy-clip` as the metric of a run
    whose reward is `toy-clip`, or `clip:FOLDER` of the same folder), whose gain it would report as a held-out one.
    `rewards`: (spec, what it is) pairs."""
    from date_diffusion.rewards.registry import shared_model

    for spec, what in rewards:
        shared = shared_model(eval_clip, spec) if eval_clip and spec else None
        if shared is not None:
            metric = f"the default --eval-clip {quoted(eval_clip)}" if default else f"--eval-clip {quoted(eval_clip)}"
            raise CLIError(f"{metric} runs {shared}, which {what} ({quoted(spec)}) runs too: "
                           "the held-out CLIP metric would score the reward; give a CLIP the rewards do not hold "
                           "(or '' for no held-out metric)")  # fmt: skip


def _suite_metadata(suite: str | None, file: str | None) -> str | None:
    """The run's prompts file when it is GenEval's metadata (a `.jsonl` file the suite was read from)."""
    from date_diffusion.bench.suites import is_jsonl

    return file if suite in ("prompts", "coco") and is_jsonl(file) else None


def _export_target(export: ExportOptions, run_dir, prompts, suite_metadata: str | None):
    """`--export KIND DIR` of the run in `run_dir` checked before any work: (kind, DIR, GenEval metadata file or
    None), None without `--export`. `prompts()`: the run's {index: prompt} the layout must hold."""
    from date_diffusion.bench.export import KINDS, ExportError, check_fresh, check_geneval_prompts, check_t2i_prompts
    from date_diffusion.cli.common import OUT, checked

    if export.export is None:
        if export.geneval_metadata is not None:
            raise CLIError("--geneval-metadata is read only by --export geneval DIR: add that, or leave the file out")
        if export.export_partial:
            raise CLIError("--export-partial is read only by --export KIND DIR: add that, or leave it out")
        return None
    kind, out = export.export
    if kind not in KINDS:
        raise CLIError(f"--export KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    run, target = Path(run_dir).resolve(), Path(out).resolve()
    if target == run or target in run.parents:
        raise CLIError(f"--export DIR {out!r} holds the run's own folder: export into a folder outside it")
    if run in target.parents:  # the run's folder holds what the run wrote (in images/: strays of the run)
        raise CLIError(f"--export DIR {out!r} lies inside the run's folder {str(run_dir)!r}: export into a folder "
                       "outside it")  # fmt: skip
    checked(OUT, out, "--export DIR")  # writable, and inside no other run
    metadata = None
    try:
        check_fresh(out, "--export DIR")
        if kind == "geneval":
            metadata = export.geneval_metadata or suite_metadata
            if metadata is None:
                raise CLIError(
                    "--export geneval needs GenEval's evaluation_metadata.jsonl: run the suite from it (--suite "
                    "prompts --prompts-file evaluation_metadata.jsonl) or give --geneval-metadata FILE"
                )
            if export.geneval_metadata is None and not Path(metadata).is_file():
                raise CLIError(
                    f"--export geneval: the run's prompts file {metadata!r} is not found from here; give "
                    "--geneval-metadata FILE"
                )
            check_geneval_prompts(prompts(), metadata)
        else:
            if export.geneval_metadata is not None:
                raise CLIError(f"--geneval-metadata is for --export geneval, not {kind}: leave it out")
            check_t2i_prompts(prompts())
    except ExportError as err:
        raise CLIError(f"--export {kind}: {err}") from err
    return kind, out, metadata


def _export(run_dir: Path, slugs: list[str], kind: str, out: str, metadata: str | None, partial: bool,
            check_only: bool = False) -> None:  # fmt: skip
    """`--export KIND DIR` of the run (`check_only`: its checks alone, `bench.export.check_export`, before any
    work)."""
    from date_diffusion.bench.export import ExportError, check_export, export_run

    try:
        if check_only:
            check_export(run_dir, slugs, kind, out, metadata, partial=partial)
            return
        counts = export_run(run_dir, slugs, kind, out, metadata, partial=partial,
                            say=lambda line: print(line, file=sys.stderr))  # fmt: skip
    except ExportError as err:
        raise CLIError(f"--export {kind}: {err}") from err
    for slug, n in counts.items():
        print(f"exported {n} images of {slug} to {Path(out) / slug} ({kind}'s layout)", file=sys.stderr)


def _run_prompts(run_dir: Path, slugs: list[str]) -> dict[int, str]:
    """Index: prompt of every finished image of the run's methods (a method without one is refused)."""
    from date_diffusion.bench.export import ExportError, method_items

    prompts = {}
    for slug in slugs:
        try:
            items = method_items(run_dir / "images" / slug)
        except ExportError as err:  # no finished image, or images without their prompt's record: said as it is
            fix = "" if "bench command" in str(err) else "; finish the run (the same bench command)"
            raise CLIError(f"--export: method {slug!r}: {err}{fix}") from err
        prompts.update({index: meta.get("prompt") or "" for index, meta, _ in items})
    return prompts


def validate_report(args) -> ReportOptions:
    """`check_report` of the namespace's options: the options."""
    opts = ReportOptions.from_args(args)  # the one read of the namespace
    check_report(opts)
    return opts


def _check_report_files(folder) -> None:
    """Each name a report writes in a run's folder (`bench.report.REPORT_FILES`) is a file or absent: a folder (or a
    pipe) of that name is named before any work, never found once part of the report is written."""
    from date_diffusion.bench.report import REPORT_FILES
    from date_diffusion.outputs import overwrite_blocker

    blocked = overwrite_blocker(Path(folder) / name for name in REPORT_FILES)
    if blocked is not None:
        what = "a folder" if blocked.is_dir() else "no regular file"
        raise CLIError(f"{str(blocked)!r} is {what}, where the report writes its {blocked.name}: move it out of "
                       "the run's folder")  # fmt: skip


def check_report(opts: ReportOptions) -> None:
    """A bench run's folder: its run.json readable as a run's settings, every record the report reads trusted
    (`trusted_records`: as a resume checks them); `--export` checked with its images."""
    from date_diffusion.bench.runner import SettingsMismatch, UntrustedRun, trusted_records
    from date_diffusion.outputs import unwritable

    path = Path(opts.dir) / "run.json"
    if not path.exists() and not path.is_symlink():
        raise CLIError(f"{opts.dir} is not a bench run (no run.json)")
    why = unwritable(opts.dir, folder=True)  # the report's files are written into the run's folder
    if why:
        raise CLIError(f"{opts.dir!r} cannot take the report's files ({why})")
    _check_report_files(opts.dir)
    try:
        run, methods, _ = trusted_records(Path(opts.dir))
    except (SettingsMismatch, UntrustedRun) as err:
        raise CLIError(str(err)) from err
    problem = fid_inputs_problem(run.get("fid_real"), run.get("inception_weights"))
    if problem:
        raise CLIError(f"{path}: field {problem[0]!r} {problem[1]}")
    slugs = [m.slug for m in methods]
    prompts = lambda: _run_prompts(Path(opts.dir), slugs)
    _export_target(opts.export, opts.dir, prompts, _suite_metadata(run.get("suite"), run.get("captions")))


def run_report(args) -> int:
    from date_diffusion.bench.runner import run_lock

    require_bench_extra()
    opts = validate_report(args)
    with run_lock(Path(opts.dir), exclusive=True) as held:
        if not held:  # a report read mid-run would write a partial state over the run's final results
            raise CLIError(
                f"another process holds the run {str(opts.dir)!r} (a bench making its images, which writes the run's "
                "report when it ends, or a report or a page reading it): run `report` after it (its tables would "
                "be of a part of the run)"
            )
        return _report(opts)


def _report(opts) -> int:
    from date_diffusion.bench.report import write_report
    from date_diffusion.bench.runner import read_run, run_methods

    target = slugs = None
    if opts.export.export is not None:  # checked whole before anything is written (a usage error writes nothing)
        run = read_run(Path(opts.dir))
        target = _export_target(opts.export, opts.dir, dict, _suite_metadata(run.get("suite"), run.get("captions")))
        slugs = [m.slug for m in run_methods(run)]
        _export(Path(opts.dir), slugs, *target, opts.export.export_partial, check_only=True)
    if opts.rescore:
        from date_diffusion.bench.runner import rescore

        print(f"re-scored {rescore(Path(opts.dir))} images with the current exact evaluator", file=sys.stderr)
    report = write_report(Path(opts.dir))
    if report["incomplete"]:
        print(f"date-diffusion report: note: an incomplete run: {report['incomplete']}", file=sys.stderr)
    print(report["markdown"])
    if target is not None:
        _export(Path(opts.dir), slugs, *target, opts.export.export_partial)
    print_written(Path(opts.dir), report["files"])
    return 0


def validate_perf(args) -> PerfOptions:
    """`check_perf` of the namespace's options: the options. With `--first-command`, an option it does not read
    given (even at its default value) is refused."""
    opts = PerfOptions.from_args(args)  # the one read of the namespace
    if opts.first_command:
        unread = [f"--{dest.replace('_', '-')}" for dest in FIRST_COMMAND_UNREAD if dest in args.options_given]
        if unread:
            raise CLIError(f"--first-command times the README's main command at its own settings: it does not read "
                           f"{', '.join(unread)}; leave {'it' if len(unread) == 1 else 'them'} out")  # fmt: skip
    else:
        for dest, prefix in READ_BY_VARIANTS.items():  # an option none of the measured variants reads
            readers = [v for v in VARIANTS if v.startswith(prefix)]
            if dest in args.options_given and not set(readers) & set(opts.variants):
                flag = f"--{dest.replace('_', '-')}"
                raise CLIError(f"{flag} is read only by the {', '.join(readers)} variants: add one to --variants, or "
                               "leave it out")  # fmt: skip
    check_perf(opts)
    return opts


def check_perf(opts: PerfOptions) -> None:
    """`bench-perf`'s checks beyond its options' kinds, before any measuring process starts: the variants' names,
    the model (a bench-perf name, or a diffusers folder or hub id that resolves) and the reward spec."""
    bad = [v for v in opts.variants if v not in VARIANTS]
    if bad:
        raise CLIError(f"unknown --variants {bad}; choose from {', '.join(VARIANTS)}")
    if opts.out is not None:  # an earlier measurement is never replaced without a word
        from date_diffusion.perf.bench_perf import FIRST_COMMAND_STEM, results_stem

        stem = FIRST_COMMAND_STEM if opts.first_command else results_stem(opts.model)
        taken = [name for name in (f"{stem}.json", f"{stem}.md") if os.path.lexists(os.path.join(opts.out, name))]
        blocked = next((n for n in taken if not os.path.isfile(os.path.join(opts.out, n))), None)
        if blocked is not None:  # a folder of that name is no earlier measurement, --overwrite or not
            raise CLIError(f"--out {opts.out!r} holds {blocked}, which is no file: move it, or give another --out")
        if taken and not opts.overwrite:
            raise CLIError(f"--out {opts.out!r} holds {taken[0]} of an earlier measurement: give another --out, or "
                           "--overwrite to replace it")  # fmt: skip
    if opts.first_command:
        return
    from date_diffusion.cli.common import resolve_from_args

    model = opts.model
    if opts.tiny_decoder is not None:
        from date_diffusion.hub import ModelNotFoundError
        from date_diffusion.pipelines.loading import check_tiny_decoder

        try:
            check_tiny_decoder(model, opts.tiny_decoder)
        except ModelNotFoundError as err:
            raise CLIError(f"--tiny-decoder: {err}") from err
    if model not in PERF_MODELS:
        resolve_from_args(model, {"reward": opts.reward})  # the folder or hub id, and the reward spec
    elif opts.reward is not None:
        from date_diffusion.rewards.registry import RewardSpecError, check_spec

        try:
            check_spec(opts.reward)
        except RewardSpecError as err:
            raise CLIError(f"--reward {quoted(opts.reward)}: {err}") from err


def run_bench_perf(args) -> int:
    from date_diffusion.perf.bench_perf import PerfSettings, SettingsRefused, WorkerFailed, bench_perf

    opts = validate_perf(args)
    try:
        if opts.first_command:
            from date_diffusion.perf.first_command import first_command

            print(first_command(opts.repeats, opts.threads, opts.out)["markdown"])
            return 0
        settings = PerfSettings(opts.steps, opts.update_every, opts.device, opts.dtype, opts.threads, opts.reward,
                                opts.tiny_decoder)  # fmt: skip
        variants, sizes = list(opts.variants), list(opts.batch_size)
        print(bench_perf(opts.model, opts.out, opts.repeats, variants, sizes, settings)["markdown"])
    except SettingsRefused as err:  # found by the measuring process once the model loaded: nothing measured
        raise CLIError(str(err)) from None
    except WorkerFailed as err:  # one line (cli/main.py); the measuring process's own traceback only with --debug
        if opts.debug:
            print(f"the failed process's output:\n{err.traceback.rstrip()}", file=sys.stderr)
        raise
    return 0
