"""The checkpointed optimisation loop every model trains with, and how its state is written and read back.

A stage's folder (`out/work/<name>`) holds `model.safetensors`, `optimizer.safetensors`, `ema.safetensors` (with
EMA), `checkpoint.json` (step, optimizer scalars and param groups, LR schedule), `log.jsonl` and, once finished,
`done`. Everything is safetensors + JSON: no pickle.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from date_diffusion.core.text import one_line
from date_diffusion.outputs import save_tensors
from date_diffusion.schemas import TRAIN_CHECKPOINT, SchemaError, read_json, read_tensors
from date_diffusion.toyworld.training.config import TrainConfig, run_id


def stage_dir(cfg: TrainConfig, stage: str) -> Path:
    """Where `stage` keeps its checkpoints, log and `done` marker (and, for some, its `final` model)."""
    return cfg.out / "work" / stage


def outputs_fingerprint(outputs) -> str:
    """One fingerprint of a stage's outputs (folders and files: `model_folder.fingerprint` of each, configs and
    captions whole, weights by size and ends)."""
    import hashlib

    from date_diffusion.model_folder import fingerprint

    return hashlib.sha256("\0".join(f"{Path(p).name}:{fingerprint(p)}" for p in outputs).encode()).hexdigest()[:20]


def mark_done(cfg: TrainConfig, stage: str, outputs=()) -> None:
    """Say `stage` finished, for this run (`done_marker`, holding the run's `run_id`), sealing what it wrote
    (`outputs`, folders and files, by `outputs_fingerprint`): a finished stage's files edited since are named when
    they are read back (`finished`)."""
    seal = f"{outputs_fingerprint(outputs)}\n" if outputs else ""
    done_marker(cfg, stage).write_text(run_id(cfg) + "\n" + seal)


def finished(cfg: TrainConfig, stage: str, load, outputs=()):
    """A finished stage's output read back (`load()`): one that does not load, or is not what the stage writes
    (damaged, edited), is a `SchemaError` naming the stage's folder and the fix, never a library's traceback; one
    another run made (its `done` holds another `run_id`: copied from a run of another seed) is named too, and so are
    `outputs` changed since the stage sealed them (`mark_done`: a config or the captions edited by hand)."""
    made_by, *sealed = done_marker(cfg, stage).read_text().split() or [""]
    if made_by and made_by != run_id(cfg):  # an empty marker: an earlier version's, which recorded no run
        raise SchemaError(f"{stage_dir(cfg, stage)}: the finished stage {stage!r} was trained by another run (other "
                          "settings, e.g. another seed); delete that folder to train the stage again")  # fmt: skip
    if sealed and outputs and sealed[0] != outputs_fingerprint(outputs):
        names = ", ".join(str(p) for p in outputs)
        raise SchemaError(f"{names}: the files of the finished stage {stage!r} were changed since it finished (a "
                          "config, the captions or weights edited by hand); delete the stage's folder "
                          f"{stage_dir(cfg, stage)} and what it wrote to train it again")  # fmt: skip
    try:
        return load()
    except Exception as err:  # noqa: BLE001 - whatever the file's damage, the stage is named
        raise SchemaError(
            f"{stage_dir(cfg, stage)}: the files of the finished stage {stage!r} do not load "
            f"({type(err).__name__}: {one_line(err, 300)}); delete that folder to train the stage again"
        ) from err


def done_marker(cfg: TrainConfig, stage: str) -> Path:
    """The file whose existence says `stage` finished (its outputs are written)."""
    return stage_dir(cfg, stage) / "done"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def load_ema_shadow(folder: Path) -> list[torch.Tensor]:
    """The EMA weights of the stage checkpoint in `folder`, in the order of the model's trainable parameters."""
    shadow = read_tensors(folder / "ema.safetensors", TRAIN_CHECKPOINT.fix)
    return [shadow[str(i)] for i in range(len(shadow))]


_CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "ema.safetensors")


def _settle_checkpoint(folder: Path) -> None:
    """Finish or discard a checkpoint write that was interrupted. `checkpoint.json.new` exists only once every
    `<name>.new` beside it is whole: then each is moved into place (checkpoint.json last); without it, the
    `.new` files are an unfinished write and are removed, and the previous checkpoint stands."""
    commit = folder / "checkpoint.json.new"
    for name in _CHECKPOINT_FILES:
        new = folder / f"{name}.new"
        if commit.exists() and new.exists():
            new.replace(folder / name)
        else:
            new.unlink(missing_ok=True)
    if commit.exists():
        commit.replace(folder / "checkpoint.json")


def _truncate_log(log: Path, step: int) -> None:
    """Drop the log lines of steps from `step` on (logged by a run interrupted after its last checkpoint): the
    resumed run logs them again, so the log reads as an uninterrupted run's."""
    if not log.exists():
        return
    lines = log.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] < step]  # and no torn line
    if kept != lines:
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(log)


def _warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(200, max(1, steps // 10))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )


def read_checkpoint(cfg: TrainConfig, folder: Path, steps: int, ema: bool) -> dict:
    """A stage's `checkpoint.json`, checked as every reader of it (a resume, `toyworld finalize`) checks it: one
    that cannot be this run's stage at a step of it (damaged, edited, past the stage's `steps`, of another schedule,
    written by another run: another seed) is a `SchemaError` naming it."""
    ckpt = folder / "checkpoint.json"
    meta = read_json(ckpt, TRAIN_CHECKPOINT)
    fix = TRAIN_CHECKPOINT.fix
    if meta["step"] > steps:
        raise SchemaError(f"{ckpt}: its step {meta['step']} lies past the stage's {steps} steps; {fix}")
    if meta["sched"].get("last_epoch") != meta["step"]:
        raise SchemaError(f"{ckpt}: its step {meta['step']} is not its learning-rate schedule's "
                          f"({meta['sched'].get('last_epoch')!r}); {fix}")  # fmt: skip
    if ema and "ema_step" not in meta:
        raise SchemaError(f"{ckpt}: field 'ema_step' is missing; {fix}")
    if meta.get("run") not in (None, run_id(cfg)):  # copied from a run of other settings (another seed)
        raise SchemaError(f"{ckpt}: this checkpoint was written by another run (other settings, e.g. another "
                          f"seed); {fix}")  # fmt: skip
    return meta


class Stage:
    """Checkpointed optimisation loop shared by every model (weights and optimizer state as safetensors)."""

    def __init__(
        self, cfg: TrainConfig, name: str, model: torch.nn.Module, steps: int, lr: float, ema_decay: float | None = None
    ):
        self.cfg, self.name, self.model, self.steps = cfg, name, model, steps
        self.dir = stage_dir(cfg, name)
        self.dir.mkdir(parents=True, exist_ok=True)
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        self.sched = _warmup_cosine(self.opt, steps)
        self.ema = None
        if ema_decay is not None:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(params, decay=ema_decay, use_ema_warmup=True, power=3 / 4)
        self.start = self._resume()

    def _resume(self) -> int:
        """Load the latest checkpoint, if any; returns the step to start from. A checkpoint that cannot be resumed
        from (damaged, edited, of another stage length) is a `SchemaError` naming checkpoint.json, nothing trained."""
        _settle_checkpoint(self.dir)
        ckpt = self.dir / "checkpoint.json"
        if not ckpt.exists():
            return 0
        meta = read_checkpoint(self.cfg, self.dir, self.steps, ema=self.ema is not None)
        fix = TRAIN_CHECKPOINT.fix
        try:
            self.model.load_state_dict(read_tensors(self.dir / "model.safetensors", fix))
            self.opt.load_state_dict(_unflatten_optimizer(read_tensors(self.dir / "optimizer.safetensors", fix),
                                                          meta["opt"]))  # fmt: skip
            self.sched.load_state_dict(meta["sched"])
            if self.ema is not None:
                self.ema.shadow_params = load_ema_shadow(self.dir)
                self.ema.optimization_step = meta["ema_step"]
        except SchemaError:  # a file that does not read: named by `read_tensors`
            raise
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise SchemaError(f"{self.dir}: its checkpoint does not load into the stage's model and optimizer "
                              f"({type(err).__name__}: {err}); {fix}") from err  # fmt: skip
        _truncate_log(self.dir / "log.jsonl", meta["step"])
        return meta["step"]

    def _checkpoint(self, step: int):
        """Write the checkpoint of `step` as one unit: every file first as `<name>.new`, `checkpoint.json.new` last
        (atomically: its existence says the set is whole), then each moved over the old one. An interruption
        anywhere leaves either the previous checkpoint or a whole new set that `_settle_checkpoint` completes,
        never model weights of one step beside the step number of another."""
        _settle_checkpoint(self.dir)
        tensors, opt_meta = _flatten_optimizer(self.opt)
        save_tensors(
            {k: v.contiguous() for k, v in self.model.state_dict().items()}, self.dir / "model.safetensors.new"
        )
        save_tensors(tensors, self.dir / "optimizer.safetensors.new")
        meta = {"step": step, "opt": opt_meta, "sched": self.sched.state_dict(), "run": run_id(self.cfg)}
        if self.ema is not None:
            shadow = {str(i): p.contiguous() for i, p in enumerate(self.ema.shadow_params)}
            save_tensors(shadow, self.dir / "ema.safetensors.new")
            meta["ema_step"] = self.ema.optimization_step
        tmp = self.dir / "checkpoint.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.dir / "checkpoint.json.new")
        _settle_checkpoint(self.dir)

    def _step(self, loss: torch.Tensor):
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.step(p for p in self.model.parameters() if p.requires_grad)

    def run(self, loss_fn: Callable[[int], torch.Tensor], stop_at: int | None = None):
        """`loss_fn(step)` builds that step's batch and returns its loss; `stop_at` ends early (checkpointed)."""
        self.model.train()
        t0 = time.time()
        end = self.steps if stop_at is None else min(self.steps, stop_at)
        bar = tqdm(range(self.start, end), desc=self.name, initial=self.start, total=end)
        for step in bar:
            loss = loss_fn(step)
            self._step(loss)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % 25 == 0 or step == self.steps - 1:  # opened for each line: an interrupt leaves no empty log
                with open(self.dir / "log.jsonl", "a") as log:
                    log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed_s": time.time() - t0}) + "\n")
            if (step + 1) % self.cfg.checkpoint_every == 0 or step == end - 1:
                self._checkpoint(step + 1)
        if self.ema is not None:
            self.ema.copy_to(p for p in self.model.parameters() if p.requires_grad)
        self.model.eval()
        return self.model
