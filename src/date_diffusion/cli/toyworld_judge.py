"""`date-diffusion toyworld train-judge`: the toy world's learned judges (a toy ImageReward and its noise-aware
variant), trained on the toy UNet's own generations labelled by the exact evaluator."""

from __future__ import annotations

import json
from pathlib import Path

from date_diffusion.cli.common import HelpFormatter

EXAMPLES = """examples:
  date-diffusion toyworld train-judge --out runs/judge                       # every stage; re-run to resume
  date-diffusion toyworld train-judge --out runs/judge --stage data --worker 0/2   # data on two cores: this
  date-diffusion toyworld train-judge --out runs/judge --stage data --worker 1/2   # and this, at once
  date-diffusion toyworld train-judge --out runs/smoke --smoke               # a few images and steps (CI)"""


def _worker(text: str) -> tuple[int, int]:
    """--worker's type: its kind's reading (`common.COMMAND_KINDS`), a refusal argparse's usage error."""
    import argparse

    from date_diffusion.cli.common import COMMAND_KINDS, SettingError

    try:
        return COMMAND_KINDS["toyworld train-judge --worker"].parse(text, "--worker")
    except SettingError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--worker ")) from None


def _made(path: Path) -> bool:
    """Whether a stage's output is there: a folder with a complete shard, or a file."""
    return any(path.glob("shard-*.json")) if path.suffix != ".json" else path.is_file()


def add_judge_parser(tsub):
    from date_diffusion.toyworld.training.judge_recipe import JUDGE_STAGES

    j = tsub.add_parser(
        "train-judge",
        help="train the learned judges toy-judge and toy-judge-na (resumable)",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    j.add_argument("--out", required=True, help="output folder (re-running resumes)")
    j.add_argument("--stage", choices=JUDGE_STAGES, default=None, help="run one stage only (default: all, in order)")
    j.add_argument("--worker", type=_worker, default=None, help="with --stage data: make shards I, I+N, ... (I/N)")
    j.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    j.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    j.add_argument("--smoke", action="store_true", help="a few images and steps per stage (checks the recipe)")
    j.set_defaults(func=run_train_judge)
    return j


def run_train_judge(args) -> int:
    import torch

    from date_diffusion.cli.common import CLIError, resolve_device
    from date_diffusion.schemas import SchemaError
    from date_diffusion.toyworld.training.judge_recipe import JUDGE_STAGES, JudgeRecipe, check_same_recipe, run_stage

    if args.worker is not None and args.stage != "data":  # the other stages run whole: it would do nothing
        raise CLIError("--worker is read only by --stage data (its shards): add --stage data, or leave --worker out")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    recipe = (JudgeRecipe.smoke if args.smoke else JudgeRecipe)(out=Path(args.out), device=device)
    stages = [args.stage] if args.stage else list(JUDGE_STAGES)
    out = Path(args.out)
    needs = {
        "judge": ("data", [out / "data"]),
        "judge_na": ("data", [out / "data"]),
        "report": ("judge and judge_na", [out / "judge" / "config.json", out / "judge-na" / "config.json"]),
    }
    for stage in stages:  # a stage whose inputs no earlier stage made: said before anything is written
        before, made = needs.get(stage, (None, []))
        if made and not set(before.split(" and ")) & set(stages) and not all(map(_made, made)):
            raise CLIError(f"--stage {stage} needs the {before} stage(s) first: run them (or leave out --stage)")
    try:  # another recipe's folder, a damaged shard or checkpoint: named, nothing more made
        check_same_recipe(recipe)
        for stage in stages:
            run_stage(recipe, stage, args.worker or (0, 1))
    except SchemaError as err:
        raise CLIError(str(err)) from err
    report = Path(args.out) / "report.json"
    if report.exists() and args.stage in (None, "report"):
        summary = {
            name: {a: round(m["auc"], 3) for a, m in r["final"].items()}
            for name, r in json.loads(report.read_text()).items()
        }
        print("held-out AUC per aspect:", json.dumps(summary))
    return 0
