"""`date-diffusion toyworld ...`: train the toy world's models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("toyworld", help="the toy world: train its models")
    tsub = p.add_subparsers(dest="toy_command", required=True)
    t = tsub.add_parser("train", help="train every toy-world model (resumable)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    t.add_argument("--out", required=True, help="output folder (re-running resumes from its checkpoints)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    t.add_argument("--smoke", action="store_true", help="a few steps of each stage on a few images (CI)")
    t.set_defaults(func=run_train)

    e = tsub.add_parser("eval", help="methods on the prompt suite: exact evaluator, held-out CLIP, paired CIs",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    e.add_argument("--methods", default="fixed,date", help="methods separated by spaces (quoted) or +: "
                   "fixed, date:rho=R,every=N,anchor=A,grad=G,prior=P,steps=0;10")  # fmt: skip
    e.add_argument("--prompts", choices=["suite", "validation"], default="suite",
                   help="suite: the versioned evaluation suite (seeds from 1000); validation: tuning prompts (seeds from 0)")
    e.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    e.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    e.add_argument("--steps", type=int, default=50)
    e.add_argument("--guidance", type=float, default=None, help="default: the toy model's recommended scale")
    e.add_argument("--model", default=None, help="default: the shipped toy pipeline")
    e.add_argument("--reward", default="clip")
    e.add_argument("--eval-clip", default="clip-eval", help="held-out CLIP for scoring (never the reward)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--out", required=True, help="folder for records.json, summary.json and results.md")
    e.set_defaults(func=run_eval)

    x = tsub.add_parser("export", help="copy a finished training run into the package as the shipped toy world")
    x.add_argument("--from", dest="run_dir", required=True, help="the --out folder of `toyworld train`")
    x.add_argument("--guidance", type=float, required=True, help="recommended guidance scale (chosen by a sweep)")
    x.add_argument("--rho", type=float, required=True, help="recommended rho (chosen on validation prompts)")
    x.add_argument("--update-every", type=int, required=True, help="recommended update_every")
    x.add_argument("--dest", default=None, help="default: the installed package's toyworld/assets")
    x.set_defaults(func=run_export)
    return p


def run_train(args) -> int:
    import torch

    from date_diffusion.cli.common import resolve_device
    from date_diffusion.toyworld.train import TrainConfig, train_all

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = (TrainConfig.smoke if args.smoke else TrainConfig)(out=args.out, seed=args.seed, device=device)
    timings = train_all(cfg)
    print(json.dumps(timings, indent=1))
    return 0


def run_eval(args) -> int:
    import torch

    from date_diffusion.cli.common import CLIError, load_reward
    from date_diffusion.cli.generate import load_pipeline, resolve_model
    from date_diffusion.evaluation import toy
    from date_diffusion.evaluation.methods import parse_method
    from date_diffusion.hub import model_defaults
    from date_diffusion.toyworld.suite import EVAL_SEED_BASE, prompt_suite, validation_prompts

    torch.set_num_threads(args.threads)
    try:
        methods = [parse_method(m) for m in args.methods.replace("+", " ").split()]
    except ValueError as err:
        raise CLIError(str(err)) from err
    model = resolve_model(args.model)
    pipe = load_pipeline(model, "float32", "cpu", None)
    pipe.set_progress_bar_config(disable=True)
    guidance = args.guidance or model_defaults(model).get("guidance_scale", 8.0)
    reward = load_reward(args.reward, "cpu")
    eval_reward = load_reward(args.eval_clip, "cpu")
    prompts = prompt_suite() if args.prompts == "suite" else validation_prompts()
    prompts = prompts[: args.limit] if args.limit else prompts
    base = EVAL_SEED_BASE if args.prompts == "suite" else 0
    seeds = list(range(base, base + args.seeds))
    out = Path(args.out)
    records, summaries, comparisons = {}, {}, {}
    for label, cfg in methods:
        records[label] = toy.sample_and_score(pipe, reward, eval_reward, prompts, seeds, cfg, args.steps, guidance,
                                              args.batch_size, desc=label)  # fmt: skip
        summaries[label] = toy.summarize(records[label])
        if label != methods[0][0]:
            comparisons[label] = toy.compare(records[label], records[methods[0][0]])
        toy.save(out / "records.json", records)
    settings = {"model": model, "guidance": guidance, "steps": args.steps, "seeds": seeds, "prompts": args.prompts,
                "limit": args.limit, "reward": args.reward, "eval_clip": args.eval_clip, "threads": args.threads}
    toy.save(out / "summary.json", {"settings": settings, "summaries": summaries, "comparisons": comparisons})
    table = toy.markdown_tables(summaries, comparisons)
    (out / "results.md").write_text(f"settings: {json.dumps(settings)}\n\n{table}\n")
    print(table)
    return 0


def run_export(args) -> int:
    from date_diffusion.core.config import DATEConfig
    from date_diffusion.hub import TOY_ASSETS
    from date_diffusion.toyworld.train import export

    DATEConfig(rho=args.rho, update_every=args.update_every)  # validates both
    recommended = {"guidance_scale": args.guidance, "rho": args.rho, "update_every": args.update_every}
    dest = Path(args.dest) if args.dest else TOY_ASSETS
    export(Path(args.run_dir), dest, recommended)
    print(f"exported {args.run_dir} -> {dest} with {recommended}")
    return 0
