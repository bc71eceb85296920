"""`toyworld train-judge`: the learned judges' whole recipe, each stage resumed or skipped when done.

`data` (the toy UNet's generations, `judge_data`), `judge` (the toy ImageReward on final images), `judge_na` (the
noise-aware judge on x0_hat; independent of `judge`, so the two can train at once), `report` (both on the held-out
generations: `report.json`). Layout of `out`: `data/`, `judge/`, `judge-na/`, `work/<stage>/` (checkpoints and
logs), `report.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

JUDGE_STAGES = ("data", "judge", "judge_na", "report")


@dataclass
class JudgeRecipe:
    out: Path
    shards: int = 40
    judge_steps: int = 2500
    judge_na_steps: int = 2500
    batch: int = 64
    render_pool: int | None = None  # clean renders mixed into batches; None: judge.RENDER_POOL
    device: str = "cpu"

    @classmethod
    def smoke(cls, out: Path, device: str = "cpu") -> JudgeRecipe:
        """Every stage on a few images for a few steps: proves the recipe runs, not that it learns."""
        return cls(out, shards=0, judge_steps=3, judge_na_steps=3, batch=8, render_pool=16, device=device)


RECIPE_FILE = "recipe.json"
_OWN = ("data", "judge", "judge-na", "work", "report.json")  # what the stages write into the folder


def check_same_recipe(recipe: JudgeRecipe) -> None:
    """A folder is resumed only with the recipe it was started with (its `recipe.json`, written at its start):
    another (`--smoke` over a full run, or the reverse) would take the other's shards and judges as its own.
    A folder holding the stages' files without it is refused too. `SchemaError` naming the file."""
    from date_diffusion.outputs import atomic_write, not_new_folder
    from date_diffusion.schemas import JUDGE_RECIPE, SchemaError, read_json

    out = Path(recipe.out)
    path = out / RECIPE_FILE
    settings = {k: v for k, v in asdict(recipe).items() if k not in ("out", "device")}
    if path.exists():
        old = read_json(path, JUDGE_RECIPE)
        differ = [f"{k} {json.dumps(old.get(k))} (now {json.dumps(v)})" for k, v in settings.items() if old.get(k) != v]
        if differ:
            raise SchemaError(f"{path}: this folder was started with another recipe: {'; '.join(differ)}; "
                              f"{JUDGE_RECIPE.fix}")  # fmt: skip
        return
    made = [name for name in _OWN if (out / name).exists()]
    if made:
        raise SchemaError(f"{path} is missing, and {out} holds what a recipe made ({', '.join(made)}) under "
                          f"settings it recorded: restore it, or give another --out")  # fmt: skip
    foreign = not_new_folder(out, (), f"`toyworld train-judge` ({RECIPE_FILE})")
    if foreign:  # a bench run, a model, a user's files: the stages would write beside them
        raise SchemaError(foreign)
    atomic_write(path, json.dumps(settings, indent=1) + "\n")


def run_stage(recipe: JudgeRecipe, stage: str, worker: tuple[int, int] = (0, 1)) -> None:
    from date_diffusion.toyworld.training import judge, judge_data

    out = Path(recipe.out)
    data = out / "data"
    if stage == "data":
        if recipe.shards == 0:  # smoke: HELD_OUT + 1 shards of 4 images, 10 steps
            shards = range(worker[0], judge.HELD_OUT + 1, worker[1])
            judge_data.generate_shards(data, shards, recipe.device, size=4, steps=10)
        else:
            judge_data.generate_shards(data, range(worker[0], recipe.shards, worker[1]), recipe.device)
    elif stage in ("judge", "judge_na"):
        na = stage == "judge_na"
        judge.train_judge(
            data,
            out / ("judge-na" if na else "judge"),
            steps=recipe.judge_na_steps if na else recipe.judge_steps,
            batch=recipe.batch,
            noise_aware=na,
            device=recipe.device,
            work=out,
            render_pool=recipe.render_pool or judge.RENDER_POOL,
        )
    elif stage == "report":
        from date_diffusion.toyworld.judge import JudgeModel

        report = {
            name: judge.held_out_report(JudgeModel.from_pretrained(out / name), data) for name in ("judge", "judge-na")
        }
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")


def run_all(recipe: JudgeRecipe, stages=JUDGE_STAGES) -> None:
    for stage in stages:
        run_stage(recipe, stage)
