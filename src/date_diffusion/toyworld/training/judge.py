"""Training the toy ImageReward (`toy-judge`) and its noise-aware variant (`toy-judge-na`) on the shards of
`judge_data`, and measuring them on held-out generations (AUC per aspect, calibration).

Every generated image is paired with its own caption, two hard negatives (`scene.hard_negative`) and one other
shard caption; the exact evaluator labels each pair aspect by aspect (`evaluator.evaluate`). A quarter of each
batch are clean renders with their captions or hard negatives, labelled the same way. The last `HELD_OUT` shards
are never trained on. The noise-aware judge (trained the same way, from scratch) reads `x0_hat` at a random captured
step (or the final image), labelled with the verdict of the trajectory's final image: a value model of the final
image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from date_diffusion.outputs import save_pretrained
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.evaluator import evaluate
from date_diffusion.toyworld.judge import ASPECTS, JudgeModel, ToyJudge
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.runner import Stage, done_marker, mark_done

HELD_OUT = 4  # the last shards: held-out generations for the report
RENDER_FRACTION = 0.25
RENDER_POOL = 4000


def verdict_vector(verdict: dict) -> tuple[list[float], list[float]]:
    """(labels, mask) over ASPECTS for one evaluator verdict; an aspect the caption does not ask about is masked."""
    values = {"pass": verdict["pass"], **verdict["aspects"]}
    return [float(values.get(a, 0)) for a in ASPECTS], [float(a in values) for a in ASPECTS]


@dataclass
class Pairs:
    """(image index, caption, labels, mask) rows over a set of images."""

    index: np.ndarray
    captions: list[str]
    labels: np.ndarray
    mask: np.ndarray

    @classmethod
    def build(cls, images: np.ndarray, specs: list[scene.PromptSpec], seed: int) -> Pairs:
        rng = np.random.default_rng(seed)
        index, captions, labels, mask = [], [], [], []
        for i, spec in enumerate(specs):
            other = specs[int(rng.integers(len(specs)))]
            for s in (spec, scene.hard_negative(spec, rng), scene.hard_negative(spec, rng), other):
                y, m = verdict_vector(evaluate(images[i], s))
                index.append(i)
                captions.append(s.caption)
                labels.append(y)
                mask.append(m)
        return cls(np.array(index), captions, np.array(labels, np.float32), np.array(mask, np.float32))


def load_shards(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(final images, x0_hat at the captured steps, rows) of every complete shard in `data_dir`, in shard order."""
    from date_diffusion.schemas import JUDGE_SHARD, SchemaError, read_tensors

    images, x0, rows = [], [], []
    for meta in sorted(Path(data_dir).glob("shard-*.json")):
        shard = read_shard(meta)
        tensors = read_tensors(meta.with_suffix(".safetensors"), JUDGE_SHARD.fix, numpy=True)
        if any(name not in tensors for name in ("images", "x0")) or len(tensors["images"]) != len(shard["rows"]):
            raise SchemaError(f"{meta.with_suffix('.safetensors')} does not hold the images and x0 of the "
                              f"{len(shard['rows'])} rows of {meta.name}; {JUDGE_SHARD.fix}")  # fmt: skip
        images.append(tensors["images"])
        x0.append(tensors["x0"])
        rows += shard["rows"]
    if not rows:
        raise FileNotFoundError(f"no complete shards in {data_dir}: run the judge data stage first")
    return np.concatenate(images), np.concatenate(x0), rows


def split(rows: list[dict], shard: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out rows (the last HELD_OUT shards of `shard` rows each)."""
    n = len(rows)
    cut = n - HELD_OUT * shard
    return np.arange(cut), np.arange(cut, n)


def render_pairs(seed: int, n: int = RENDER_POOL) -> tuple[np.ndarray, Pairs]:
    rng = np.random.default_rng(seed)
    specs = [scene.sample_spec(rng, allow_held_out=True) for _ in range(n)]
    images = np.stack([scene.render(scene.place(s, rng)) for s in specs])
    return images, Pairs.build(images, specs, seed)


def _tensor(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255


def judge_loss(model: JudgeModel, images, captions, labels, mask, device) -> torch.Tensor:
    logits = model.logits(_tensor(images, device), captions)
    loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels).to(device), reduction="none")
    m = torch.from_numpy(mask).to(device)
    return (loss * m).sum() / m.sum()


class JudgeData:
    """Generated pairs (training part), the render pool, and how a batch is drawn (final images or x0_hat)."""

    def __init__(self, data_dir: Path, seed: int, noise_aware: bool, render_pool: int = RENDER_POOL):
        self.images, self.x0, rows = load_shards(data_dir)
        specs = [scene.PromptSpec.from_json(r["spec"]) for r in rows]
        train, _ = split(rows, _shard_size(data_dir))
        self.pairs = Pairs.build(self.images, specs, seed)
        keep = np.isin(self.pairs.index, train)
        self.rows = np.nonzero(keep)[0]
        self.renders, self.render_pairs = render_pairs(seed + 1, render_pool)
        self.noise_aware = noise_aware

    def batch(self, rng: np.random.Generator, n: int):
        k = int(round(n * RENDER_FRACTION))
        gen = self.rows[rng.integers(len(self.rows), size=n - k)]
        ren = rng.integers(len(self.render_pairs.captions), size=k)
        idx = self.pairs.index[gen]
        if self.noise_aware:  # a captured step or the final image, uniformly
            step = rng.integers(self.x0.shape[1] + 1, size=len(idx))
            gen_images = np.where(
                (step == self.x0.shape[1])[:, None, None, None],
                self.images[idx],
                self.x0[idx, np.minimum(step, self.x0.shape[1] - 1)],
            )
        else:
            gen_images = self.images[idx]
        images = np.concatenate([gen_images, self.renders[self.render_pairs.index[ren]]])
        captions = [self.pairs.captions[i] for i in gen] + [self.render_pairs.captions[i] for i in ren]
        labels = np.concatenate([self.pairs.labels[gen], self.render_pairs.labels[ren]])
        mask = np.concatenate([self.pairs.mask[gen], self.render_pairs.mask[ren]])
        return images, captions, labels, mask


def read_shard(path: Path) -> dict:
    """A data shard's JSON (`judge_data.write_shard`), through its schema: a damaged one is named, and so is one
    whose rows are not its index's (a shard copied under another's name: its seeds say which it is), which would
    put training images among the held-out ones."""
    from date_diffusion.core.settings import is_integer
    from date_diffusion.schemas import JUDGE_SHARD, SchemaError, read_json
    from date_diffusion.toyworld.training.judge_data import SEED_BASE, SHARD, shard_seal

    shard = read_json(path, JUDGE_SHARD, limit=10**8)
    if "sealed" in shard and shard["sealed"] != shard_seal(shard, Path(path)):
        raise SchemaError(f"{path}: the shard was changed since it was made (its rows or its tensors edited by hand: "
                          f"its seal no longer matches); {JUDGE_SHARD.fix}")  # fmt: skip
    index = Path(path).stem.removeprefix("shard-")
    seeds = [row.get("seed") if isinstance(row, dict) else None for row in shard["rows"]]
    if not is_integer(index) or seeds != [SEED_BASE + int(index) * SHARD + k for k in range(len(seeds))]:
        raise SchemaError(f"{path}: its rows are not those of shard {index} (their seeds are another shard's, or "
                          f"none); {JUDGE_SHARD.fix}")  # fmt: skip
    return shard


def _shard_size(data_dir: Path) -> int:
    first = sorted(Path(data_dir).glob("shard-*.json"))[0]
    return len(read_shard(first)["rows"])


def new_judge(noise_aware: bool, device: str = "cpu") -> JudgeModel:
    """An untrained head over the judge's CLIP (`toy-clip`; `toy-clip-na` for the noise-aware judge)."""
    from transformers import CLIPModel, CLIPTokenizer

    from date_diffusion.toyworld import world

    base = "toy-clip-na" if noise_aware else "toy-clip"
    clip = CLIPModel.from_pretrained(world.CLIPS[base])
    from date_diffusion.model_folder import fingerprint

    head = ToyJudge(base_clip=base, width=clip.config.vision_config.hidden_size,
                    base_clip_files=fingerprint(world.CLIPS[base]))  # fmt: skip
    return JudgeModel(head, clip, CLIPTokenizer.from_pretrained(world.CLIPS[base])).to(device)


def train_judge(
    data_dir: Path,
    out: Path,
    steps: int = 4000,
    batch: int = 64,
    noise_aware: bool = False,
    seed: int = 7,
    device: str = "cpu",
    lr: float = 3e-4,
    work: Path | None = None,
    render_pool: int = RENDER_POOL,
) -> JudgeModel:
    """Train a judge's head into `out` (resumable: `work/work/<stage>` holds its checkpoints, `work` defaulting to
    `out`); the CLIP stays frozen."""
    out = Path(out)
    name = "judge_na" if noise_aware else "judge"
    cfg = TrainConfig(Path(work or out), seed=seed, device=device, checkpoint_every=250)
    if done_marker(cfg, name).exists():
        return JudgeModel.from_pretrained(out, device)
    torch.manual_seed(seed)
    model = new_judge(noise_aware, device)
    data = JudgeData(data_dir, seed, noise_aware, render_pool)
    stage = Stage(cfg, name, model.head, steps, lr=lr)

    def loss_fn(step):
        images, captions, labels, mask = data.batch(np.random.default_rng([seed, step]), batch)
        return judge_loss(model, images, captions, labels, mask, device)

    stage.run(loss_fn)
    save_pretrained(model.head.to(torch.float16), out)  # shipped in float16, loaded back as float32
    model.head.to(torch.float32)
    meta = {"data": Path(data_dir).name, "steps": steps, "batch": batch, "seed": seed, "lr": lr}
    meta["noise_aware"] = noise_aware
    (out / "judge.json").write_text(json.dumps(meta, indent=1) + "\n")
    mark_done(cfg, name)
    return model


@torch.no_grad()
def judge_logits(model: JudgeModel, images: np.ndarray, captions: list[str], device="cpu", batch=256):
    out = [model.logits(_tensor(images[i : i + batch], device), captions[i : i + batch]).float().cpu()
           for i in range(0, len(captions), batch)]  # fmt: skip
    return torch.cat(out)


def aspect_metrics(logits: torch.Tensor, labels: np.ndarray, mask: np.ndarray) -> dict:
    """Per aspect: AUC, expected calibration error (10 bins), Brier score, positives' share and pair count."""
    from torchmetrics.functional.classification import binary_auroc, binary_calibration_error

    out = {}
    for k, aspect in enumerate(ASPECTS):
        keep = torch.from_numpy(mask[:, k] > 0)
        y = torch.from_numpy(labels[:, k])[keep].long()
        if y.numel() == 0 or y.min() == y.max():
            continue
        p = logits[keep, k].sigmoid()
        out[aspect] = {
            "auc": float(binary_auroc(p, y)),
            "ece": float(binary_calibration_error(p, y, n_bins=10)),
            "brier": float(((p - y.float()) ** 2).mean()),
            "positive": float(y.float().mean()),
            "pairs": int(y.numel()),
        }
    return out


def held_out_report(model: JudgeModel, data_dir: Path, seed: int = 7) -> dict:
    """The judge on the held-out shards' pairs: on final images, and on x0_hat at each captured step (labelled
    with the final image's verdict, what the noise-aware judge predicts)."""
    images, x0, rows = load_shards(data_dir)
    _, held = split(rows, _shard_size(data_dir))
    specs = [scene.PromptSpec.from_json(rows[i]["spec"]) for i in held]
    pairs = Pairs.build(images[held], specs, seed + 100)
    model.eval()
    report = {
        "final": aspect_metrics(
            judge_logits(model, images[held][pairs.index], pairs.captions), pairs.labels, pairs.mask
        )
    }
    capture = read_shard(sorted(Path(data_dir).glob("shard-*.json"))[0])["capture"]
    for k, step in enumerate(capture):
        logits = judge_logits(model, x0[held][pairs.index, k], pairs.captions)
        report[f"x0_step_{step}"] = aspect_metrics(logits, pairs.labels, pairs.mask)
    return report
