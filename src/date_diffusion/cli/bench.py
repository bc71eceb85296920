"""`date-diffusion bench` and `date-diffusion report`."""

from __future__ import annotations

import sys
from pathlib import Path

from date_diffusion.bench.suites import DEFAULT_SEED_BASE, SUITES
from date_diffusion.cli.common import CLIError, HelpFormatter, int_list, str_list
from date_diffusion.core.config import PAPER_UPDATE_EVERY
from date_diffusion.editing import CFG_SRC, SKIP_FRACTION
from date_diffusion.families import PAPER_EVAL_CLIP, PAPER_REWARD, by_name
from date_diffusion.perf import MODELS as PERF_MODELS
from date_diffusion.perf import VARIANTS
from date_diffusion.toyworld import world

# torch, accelerate and the benchmark are imported inside the functions that need them: see cli/__init__.py

_SD = by_name("sd")  # the family the paper ran, whose defaults the help quotes
_TOY_SEEDS = ", ".join(f"{n}: {d.seeds} from {d.seed_base}" for n, d in world.SUITES.items())
BENCH_EXAMPLES = """examples:
  date-diffusion bench --suite toy --methods "fixed date best-of-2" --out runs/toy
  date-diffusion bench --suite toy --limit 8 --seeds 4 --methods "fixed date best-of-2" --out runs/toy-quick
  date-diffusion bench --suite toy-validation --methods "fixed date:rho=0.25 date:rho=1 recommended" --out runs/val
  date-diffusion bench --suite edit-toy --seeds 2 --methods "fixed date" --out runs/edit
  date-diffusion bench --suite ane --model stable-diffusion-v1-5/stable-diffusion-v1-5 --seeds 4 --out runs/ane

Before the long part it prints how many images it makes and, after the first batch of each method, an estimate
of the time the rest takes. Re-running the same command resumes; `accelerate launch --multi_gpu --num_processes N
-m date_diffusion bench ...` shards the prompts over N processes (docs/benchmarks.md)."""
REPORT_EXAMPLES = """examples:
  date-diffusion report runs/toy
  date-diffusion report --rescore runs/toy"""
PERF_EXAMPLES = """examples:
  date-diffusion bench-perf --model toy --out runs/perf
  date-diffusion bench-perf --model sd15-random-512 --variants fixed,date,date-checkpointing --repeats 3 --out runs/perf
  date-diffusion bench-perf --model sd15-random-512 --device cuda --dtype float16 --batch-size 1,2,4 --out runs/gpu
  date-diffusion bench-perf --first-command --repeats 5 --out runs/perf"""


def add_parsers(sub):
    _add_bench_parser(sub)
    _add_perf_parser(sub)
    r = sub.add_parser(
        "report",
        help="re-render tables and plots of a bench run",
        epilog=REPORT_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    r.add_argument("dir")
    r.add_argument(
        "--rescore",
        action="store_true",
        help="toy world: re-run the current exact evaluator on the images scored by an earlier version first",
    )
    r.set_defaults(func=run_report, validate=validate_report)


def _add_bench_parser(sub):
    p = sub.add_parser(
        "bench",
        help="compare methods on a prompt suite (resumable; accelerate launch to shard)",
        epilog=BENCH_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--suite",
        required=True,
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
    p.add_argument("--cfg-src", type=float, default=CFG_SRC, help="editing: guidance of the inversion")
    p.add_argument("--captions", default=None, help="coco: CSV with a caption column, or a text file")
    p.add_argument("--prompts-file", default=None, help="prompts: a text file, one prompt a line")
    p.add_argument(
        "--methods",
        default="fixed date",
        help="space- or +-separated: fixed, fixed@K, date:rho=R,every=N,..., ug:scale=S,every=N, best-of-N, ae, "
        "date+ae:..., recommended (see docs/benchmarks.md)",
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
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of the suite")
    p.add_argument(
        "--categories",
        type=str_list,
        default=None,
        help="comma-separated prompt categories to keep (toy: single, two_object, color_binding, counting, "
        "position, novel; ane: animal_animal, animal_object, object_object)",
    )
    _add_bench_run_arguments(p)


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
    p.add_argument("--model", default=None, help="default: the toy world")
    p.add_argument("--scheduler", default=None)
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
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--fid-real", default=None, help="folder of real images for FID (toy: rendered automatically)")
    p.add_argument(
        "--inception-weights",
        default=None,
        help="torch-fidelity Inception weights (pt_inception-2015-12-05-6726825d.pth) for Inception FID",
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_bench, validate=validate_bench)


def _add_perf_parser(sub):
    f = sub.add_parser(
        "bench-perf",
        help="time and memory of DATE vs fixed sampling (one process per run)",
        epilog=PERF_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    f.add_argument("--model", default="toy", help=f"{', '.join(PERF_MODELS)}, or a diffusers folder")
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
    f.add_argument("--steps", type=int, default=10)
    f.add_argument(
        "--update-every",
        type=int,
        default=PAPER_UPDATE_EVERY,
        help="with the default 10 steps: one update, the paper's share of update steps",
    )
    f.add_argument("--repeats", type=int, default=3)
    f.add_argument("--device", default="cpu")
    f.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    f.add_argument("--threads", type=int, default=1)
    f.add_argument(
        "--reward",
        default=None,
        help=f"reward spec (default: {world.PLAIN_REWARD} on the toy world, a random-weight CLIP-L for sd15-random, "
        f"{PAPER_REWARD} for a folder)",
    )
    f.add_argument("--tiny-decoder", default=None, help="AutoencoderTiny folder for date-approx (toy: shipped)")
    f.add_argument("--out", default=None, help="folder for perf-<model>.json and .md")
    f.add_argument(
        "--first-command",
        action="store_true",
        help="instead: time the README's main command (toy world, --compare) in --repeats fresh processes, with "
        "where the time goes; writes first-command.json and .md",
    )
    f.set_defaults(func=run_bench_perf, validate=validate_perf)


def require_bench_extra() -> None:
    """The benchmark's plots and FID need the `bench` extra; say so before any work."""
    import importlib.util

    missing = [m for m in ("matplotlib", "torchmetrics") if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"the benchmark needs {', '.join(missing)}: pip install 'date-diffusion[bench]'")


def validate_bench(args) -> tuple:
    """Every check of `bench` that needs no model: (model, run settings, methods, suite items)."""
    require_bench_extra()
    from date_diffusion.cli.common import resolve_model

    model = resolve_model(args.model)
    return (model, *_prepare(args, model))


def run_bench(args) -> int:
    from date_diffusion.cli.common import validate

    model, settings, methods, items = validate(args)
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from date_diffusion.bench.report import write_report
    from date_diffusion.bench.runner import (
        BenchRun,
        SettingsMismatch,
        check_settings,
        compare_settings,
        generate_methods,
    )
    from date_diffusion.pipelines import load_date_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    # Without a GPU, accelerate's state only sees the other processes when told it is on the CPU; the CPU
    # launch is `accelerate launch --multi_gpu --num_processes N` (torchrun), as `--cpu` starts one process.
    state = PartialState(cpu=not torch.cuda.is_available())
    try:
        compare_settings(out, settings)  # before loading: a folder of another run is refused at once
    except SettingsMismatch as err:
        raise CLIError(str(err)) from err
    run = BenchRun(settings, out, state.device)
    pipe = load_date_pipeline(model, args.dtype, run.device, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    _check_loaded(pipe, run, methods)  # what depends on the model, before run.json is written
    check_settings(out, settings)
    scorer = run.scorer()
    # shard by prompt: each process owns the prompts with index % world == rank
    jobs = [(it, s) for it in items if it.index % state.num_processes == state.process_index for s in settings.seeds]
    process = f"process {state.process_index + 1}/{state.num_processes}"
    say = lambda line: tqdm.write(f"{process}: {line}", file=sys.stderr)
    desc = f"[{state.process_index}] images" if state.num_processes > 1 else "images"
    generate_methods(run, pipe, methods, jobs, scorer, args.batch_size, say, desc)
    state.wait_for_everyone()
    if state.is_main_process:
        print(write_report(out)["markdown"])
    return 0


def _check_loaded(pipe, run, methods) -> None:
    """With the model loaded: every method's step count fits its scheduler, and its rewards and decoders load."""
    from date_diffusion.schedulers import check_steps_fit

    for m in methods:
        steps = m.steps_for(run.settings.steps)
        try:
            check_steps_fit(pipe.scheduler, steps, "--steps" if steps == run.settings.steps else f"{m.label}: steps")
        except ValueError as err:
            raise CLIError(str(err)) from err
        if m.applies_to(run.settings.suite):
            m.pipeline_kwargs(run)
    run.scorer()


def _prepare(args, model: str):
    """The run's settings, its methods and the suite's items; every usage error is found here, before any work."""
    from date_diffusion.bench.runner import RunSettings
    from date_diffusion.bench.suites import default_seeds, load_suite
    from date_diffusion.cli.common import resolve_from_args
    from date_diffusion.evaluation.methods import parse_methods

    # the run's reward and sampling resolve as `generate --paper-defaults` would (the methods carry their own DATE)
    flags = dict(reward=args.reward, num_inference_steps=args.steps, guidance_scale=args.guidance)
    resolved = resolve_from_args(model, flags, paper_defaults=True)
    try:
        methods = parse_methods(args.methods, model)
    except ValueError as err:
        raise CLIError(f"--methods {args.methods!r}: {err}") from err
    try:
        items = load_suite(args.suite, args.captions or args.prompts_file, args.limit, args.categories)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    bad = [m.label for m in methods if not m.applies_to(args.suite)]
    if bad:
        raise CLIError(
            f"methods {bad} do not apply to suite {args.suite!r}; editing runs fixed (plain edit) and date:..."
        )
    n_seeds, base = default_seeds(args.suite)  # editing suites: one source layout and inversion per seed
    n_seeds, base = args.seeds or n_seeds, args.seed_base if args.seed_base is not None else base
    _check_together(args, model, methods, resolved.num_inference_steps, base + n_seeds - 1)
    return (
        RunSettings(
            suite=args.suite,
            captions=args.captions or args.prompts_file,
            limit=args.limit,
            categories=args.categories or None,
            seeds=list(range(base, base + n_seeds)),
            steps=resolved.num_inference_steps,
            guidance=resolved.guidance_scale,
            model=model,
            reward=resolved.reward,
            eval_clip=_eval_clip(args.eval_clip, model, resolved.family),
            scheduler=args.scheduler,
            dtype=args.dtype,
            fid_real=args.fid_real,
            inception_weights=args.inception_weights,
            edit_skip=args.edit_skip,
            cfg_src=args.cfg_src,
            methods={m.label: m.record() for m in methods},
        ),
        methods,
        items,
    )


def _check_together(args, model: str, methods, steps: int, last_seed: int) -> None:
    """What the options' kinds cannot see alone: the scheduler's name, each method's update steps inside its run,
    the last seed (best-of-N's candidates included), the editing skip inside the run, Inception FID's package."""
    import importlib.util

    from date_diffusion.bench.runner import BEST_OF_STRIDE
    from date_diffusion.cli.common import checked
    from date_diffusion.core.settings import Seed
    from date_diffusion.schedulers import SCHEDULERS

    if args.scheduler is not None and args.scheduler not in SCHEDULERS:
        raise CLIError(f"unknown --scheduler {args.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    from date_diffusion.hub import ModelNotFoundError, check_tiny_decoder

    for m in methods:
        date = getattr(m, "date", None)
        try:
            if date is not None:
                date.update_indices(m.steps_for(steps))
            if getattr(m, "decoder", None) is not None:
                check_tiny_decoder(model, m.decoder)
        except (ValueError, ModelNotFoundError) as err:
            raise CLIError(f"method {m.label!r} with {m.steps_for(steps)} steps: {err}") from err
    last = last_seed + (max(m.candidates for m in methods) - 1) * BEST_OF_STRIDE
    checked(Seed(), last, "--seed-base + --seeds - 1 (with best-of-N's candidates)")
    if args.edit_skip is not None and args.edit_skip >= steps:
        raise CLIError(f"--edit-skip must be in [0, {steps - 1}] (below --steps), got {args.edit_skip}")
    if args.inception_weights and importlib.util.find_spec("torch_fidelity") is None:
        raise CLIError("--inception-weights needs torch-fidelity: pip install torch-fidelity (or leave it out)")


def _eval_clip(spec: str | None, model: str, family: str) -> str:
    """`--eval-clip` (checked), default: the toy world's held-out CLIP on toy-world models, else the family's."""
    from date_diffusion.families import by_name
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    if spec is None:
        return world.default_eval_clip(model) or by_name(family).eval_clip
    try:
        if spec:  # empty: no held-out CLIP metric
            check_spec(spec)
    except RewardSpecError as err:
        raise CLIError(f"--eval-clip {spec!r}: {err}") from err
    return spec


def validate_report(args) -> None:
    """A bench run's folder: its run.json readable as a run's settings."""
    from date_diffusion.bench.runner import SettingsMismatch, read_run

    if not (Path(args.dir) / "run.json").is_file():
        raise CLIError(f"{args.dir} is not a bench run (no run.json)")
    try:
        read_run(Path(args.dir))
    except SettingsMismatch as err:
        raise CLIError(str(err)) from err


def run_report(args) -> int:
    from date_diffusion.bench.report import write_report
    from date_diffusion.cli.common import validate

    require_bench_extra()
    validate(args)
    if args.rescore:
        from date_diffusion.bench.runner import rescore

        print(f"re-scored {rescore(Path(args.dir))} images with the current exact evaluator", file=sys.stderr)
    print(write_report(Path(args.dir))["markdown"])
    return 0


def validate_perf(args) -> None:
    """`bench-perf`'s checks beyond its options' kinds: the variants' names."""
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        raise CLIError(f"unknown --variants {bad}; choose from {', '.join(VARIANTS)}")


def run_bench_perf(args) -> int:
    from date_diffusion.cli.common import validate
    from date_diffusion.perf.bench_perf import PerfSettings, bench_perf

    validate(args)
    if args.first_command:
        from date_diffusion.perf.first_command import first_command

        print(first_command(args.repeats, args.threads, args.out)["markdown"])
        return 0
    settings = PerfSettings(args.steps, args.update_every, args.device, args.dtype, args.threads, args.reward,
                            args.tiny_decoder)  # fmt: skip
    print(bench_perf(args.model, args.out, args.repeats, args.variants, args.batch_size, settings)["markdown"])
    return 0
