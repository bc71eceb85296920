"""Generate and score every (method, prompt, seed) of a benchmark run: resumable, atomic, shardable.

Layout of a run directory (GenEval-compatible per method):
  run.json                                    settings (a rerun with other settings is refused)
  images/<method>/<index:05d>/metadata.jsonl  {"prompt", "tag", "spec"}
  images/<method>/<index:05d>/samples/<seed:05d>.png   the image
  images/<method>/<index:05d>/samples/<seed:05d>.json  its record (written last: marks the image done)
An image depends only on (method, prompt, seed): one generator per image, whatever the batch or process count.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from date_diffusion.bench.suites import Item, subject_words
from date_diffusion.evaluation.methods import Method
from date_diffusion.outputs import atomic_write, png_bytes

BEST_OF_STRIDE = 100_003  # candidate j of best-of-N for seed s uses seed s + j * stride (j = 0 is `fixed`)


class SettingsMismatch(ValueError):
    pass


@dataclass
class RunSettings:
    suite: str
    captions: str | None
    limit: int | None
    seeds: list[int]
    steps: int
    guidance: float
    model: str
    reward: str
    eval_clip: str
    scheduler: str | None = None
    dtype: str = "float32"
    fid_real: str | None = None  # folder of real images for FID (coco); the toy suite renders its own
    edit_skip: int | None = None  # editing suites: steps not regenerated
    cfg_src: float = 3.5  # editing suites: guidance of the inversion (the regeneration uses `guidance`)
    inception_weights: str | None = None  # torch-fidelity Inception weights file, for Inception FID
    categories: list[str] | None = None  # only these prompt categories
    methods: dict = field(default_factory=dict)  # label -> method settings


def method_record(m: Method) -> dict:
    d = asdict(m)
    d["date"] = m.date.to_dict() if m.date is not None else None
    return d


def method_from_record(label: str, record: dict) -> Method:
    """The method a run.json entry describes (inverse of `method_record`)."""
    from date_diffusion.core.config import DATEConfig

    fields = {k: v for k, v in record.items() if k in Method.__dataclass_fields__}
    if fields.get("date") is not None:
        fields["date"] = DATEConfig(**fields["date"])
    return Method(**{**fields, "label": label})


def check_settings(out: Path, settings: RunSettings) -> None:
    """Write run.json, or check it: same run settings; a method label may be added, never redefined."""
    path = out / "run.json"
    new = asdict(settings)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SettingsMismatch(f"{path} is damaged ({err}); use another --out, or delete the folder") from err
        diff = {k: (old.get(k), v) for k, v in new.items() if k != "methods" and old.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise SettingsMismatch(
                f"{out} holds a run with other settings ({detail}); use another --out or the same settings"
            )
        for label, rec in new["methods"].items():
            if label in old["methods"] and not _same_settings(old["methods"][label], rec):
                raise SettingsMismatch(
                    f"method {label!r} in {out} was run with other settings; rename it or use another --out"
                )
        new["methods"] = {**old["methods"], **new["methods"]}
    atomic_write(path, json.dumps(new, indent=1))


def _same_settings(old, new) -> bool:
    """Equal, where a setting added by a later version (absent from `old`) counts as equal at its default None."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same_settings(old.get(k), new.get(k)) for k in set(old) | set(new))
    return old == new


def is_done(png: Path, record: Path) -> bool:
    """An image counts as made when its record parses and its PNG opens; anything less is made again."""
    from PIL import Image

    if not record.exists():
        return False
    try:
        json.loads(record.read_text())
        with Image.open(png) as img:
            img.verify()
        return True
    except Exception:  # a damaged record or image (e.g. a full disk): regenerate both
        return False


def image_paths(out: Path, method: Method, index: int, seed: int) -> tuple[Path, Path]:
    d = out / "images" / method.slug / f"{index:05d}" / "samples"
    return d / f"{seed:05d}.png", d / f"{seed:05d}.json"


def peak_memory_mb(device) -> float:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the process's peak so far


def _uint8(image01: torch.Tensor) -> np.ndarray:
    return (image01.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def sub_prompts(prompt: str) -> list[str]:
    """Attend-and-Excite's split of a multi-subject prompt into one sub-prompt per subject (the metric's)."""
    from date_diffusion.rewards.subjects import subject_prompts

    return subject_prompts(prompt, relations=False)


class Scorer:
    """Metrics per image: the reward, a held-out CLIP score (and, for multi-subject prompts, the minimum over
    the subjects' sub-prompts: Attend-and-Excite's minimum object similarity), and the toy world's exact
    evaluator."""

    def __init__(self, reward, eval_clip):
        self.reward, self.eval_clip = reward, eval_clip

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor, prompts: list[str], specs: list[dict | None]) -> list[dict]:
        reward = self.reward(images01, prompts).tolist()
        clip = self.eval_clip(images01, prompts).tolist() if self.eval_clip is not None else [None] * len(prompts)
        out = []
        for j, spec in enumerate(specs):
            rec = {"reward": reward[j], "clip_eval": clip[j]}
            parts = sub_prompts(prompts[j]) if self.eval_clip is not None else []
            if parts:
                sims = self.eval_clip(images01[j : j + 1].expand(len(parts), -1, -1, -1), parts)
                rec["min_object_clip"] = float(sims.min())
            if spec is not None:
                rec.update(exact_verdict(_uint8(images01[j]), spec))
            out.append(rec)
        return out


def exact_verdict(image_uint8: np.ndarray, spec: dict) -> dict:
    """The toy world's exact evaluator on one image, as record fields (with the evaluator's version)."""
    from date_diffusion.toyworld.evaluator import EVALUATOR_VERSION, evaluate
    from date_diffusion.toyworld.scene import PromptSpec

    verdict = evaluate(image_uint8, PromptSpec.from_json(spec))
    return {"exact": float(verdict["pass"]), "aspects": verdict["aspects"], "evaluator_version": EVALUATOR_VERSION}


def record_paths(out: Path) -> list[Path]:
    """The record of every image of a run, all methods (each PNG is beside its record)."""
    return sorted(Path(out).glob("images/*/*/samples/*.json"))


def rescore(out: Path) -> int:
    """Re-run the current exact evaluator on every image of a run whose record was scored by another version;
    the earlier verdict stays in the record as `exact_v<version>`. Returns how many records changed version."""
    from PIL import Image

    from date_diffusion.toyworld.evaluator import EVALUATOR_VERSION

    changed = 0
    for rec_path in record_paths(out):
        rec = json.loads(rec_path.read_text())
        old = rec.get("evaluator_version", 1)
        if rec.get("spec") is None or old == EVALUATOR_VERSION:
            continue
        image = np.asarray(Image.open(rec_path.with_suffix(".png")).convert("RGB"))
        rec[f"exact_v{old}"] = rec.get("exact")
        rec.update(exact_verdict(image, rec["spec"]))
        atomic_write(rec_path, json.dumps(rec))
        changed += 1
    return changed


def source_image(item: Item, seed: int, size: int):
    """The image an editing item starts from (a PIL image at the model's size) and, on the toy world, its scene."""
    from PIL import Image

    if "spec" in item.source:
        from date_diffusion.toyworld.edits import EditCase, source_scene
        from date_diffusion.toyworld.scene import PromptSpec, render

        case = EditCase(
            item.category,
            PromptSpec.from_json(item.source["spec"]),
            PromptSpec.from_json(item.spec),
            item.source["changed"],
        )
        src = source_scene(case, seed, item.index)
        return Image.fromarray(render(src)).resize((size, size), Image.Resampling.BICUBIC), (case, src)
    return Image.open(item.source["image"]).convert("RGB").resize((size, size), Image.Resampling.BICUBIC), None


def edit_batch(pipe, method: Method, batch, settings: RunSettings, reward):
    """Edit each item's source image toward its prompt; returns (images01, traces, extra metrics per image)."""
    from date_diffusion.toyworld.edits import score_edit

    if method.kind not in ("fixed", "date") or method.steps or method.ae:
        raise ValueError(f"method {method.label!r} does not apply to editing; use fixed (plain edit) or date:...")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    sources = [source_image(it, s, size) for it, s in batch]
    skip = settings.edit_skip if settings.edit_skip is not None else round(0.36 * settings.steps)
    res = pipe.edit(
        [img for img, _ in sources],
        [it.source["prompt"] for it, _ in batch],
        [it.prompt for it, _ in batch],
        num_inference_steps=settings.steps,
        skip=skip,
        cfg_src=settings.cfg_src,
        cfg_tar=settings.guidance,
        generator=[torch.Generator().manual_seed(s) for _, s in batch],
        output_type="pt",
        date=method.date,
        reward=reward if method.date is not None else None,
    )
    images = res.images.float()
    extras = []
    for k, (img, toy) in enumerate(sources):
        edited = (images[k].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        extra = {"pixel_distance": float(np.abs(edited.astype(float) - np.asarray(img, float)).mean() / 255)}
        if toy is not None:
            extra.update(score_edit(toy[0], toy[1], edited))
        extras.append(extra)
    return images, res.traces, extras


def generate_method(
    pipe,
    method: Method,
    jobs: list[tuple[Item, int]],
    settings: RunSettings,
    reward,
    scorer,
    out: Path,
    batch_size: int,
    device,
    desc: str = "",
) -> int:
    """Generate (or, on editing suites, edit) the missing images of `jobs` for `method`; returns how many."""
    todo = [(it, s) for it, s in jobs if not is_done(*image_paths(out, method, it.index, s))]
    reward = _method_reward(method, reward, device)
    n_cand = method.n if method.kind == "best" else 1
    per_batch = max(1, batch_size // n_cand)
    made = 0
    for start in tqdm(range(0, len(todo), per_batch), desc=desc or method.label, leave=False):
        batch = todo[start : start + per_batch]
        if batch[0][0].source is not None:
            t0 = time.perf_counter()
            images, traces, extras = edit_batch(pipe, method, batch, settings, reward)
            seconds = (time.perf_counter() - t0) / len(batch)
            metrics = scorer(images, [it.prompt for it, _ in batch], [None] * len(batch))
            made += _write(
                out,
                method,
                batch,
                images,
                traces,
                [{**m, **e} for m, e in zip(metrics, extras)],
                list(range(len(batch))),
                seconds,
                device,
                1,
                settings,
            )
            continue
        prompts = [it.prompt for it, _ in batch for _ in range(n_cand)]
        seeds = [s + j * BEST_OF_STRIDE for _, s in batch for j in range(n_cand)]
        t0 = time.perf_counter()
        extra = {"ug_scale": method.ug_scale, "ug_every": method.ug_every} if method.kind == "ug" else {}
        if method.ae is not None:
            ae = {k: v for k, v in method.ae.items() if not (k == "token_indices" and v == "auto")}
            extra["attend_and_excite"] = {"subjects": subject_words(), **ae}
        if method.reward_decoder is not None:
            extra["reward_decoder"] = _decoder(pipe, settings, method.reward_decoder)
        if method.reward_resolution is not None:
            extra["reward_resolution"] = method.reward_resolution
        res = pipe(
            prompts,
            num_inference_steps=method.steps or settings.steps,
            guidance_scale=settings.guidance,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            output_type="pt",
            date=method.date,
            reward=reward if (method.date is not None or method.ug_scale) else None,
            **extra,
        )
        images = res.images.float()
        traces = res.traces
        chosen = list(range(len(batch)))
        if n_cand > 1:  # best-of-N: keep the candidate the reward scores highest
            with torch.no_grad():
                scores = reward(images, prompts).view(len(batch), n_cand)
            best = scores.argmax(dim=1).tolist()
            chosen = [b * n_cand + j for b, j in enumerate(best)]
        seconds = (time.perf_counter() - t0) / len(batch)
        images = images[chosen]
        metrics = scorer(images, [it.prompt for it, _ in batch], [it.spec for it, _ in batch])
        made += _write(out, method, batch, images, traces, metrics, chosen, seconds, device, n_cand, settings)
    return made


def _png_record(record: dict, method: Method, settings: RunSettings) -> dict:
    """What a bench image's PNG carries: its record with the run settings that made it."""
    return {
        **record,
        "model": settings.model,
        "steps": method.steps or settings.steps,
        "guidance_scale": settings.guidance,
        "scheduler": settings.scheduler,
        "reward": method.reward or settings.reward,
        "date": method.date.to_dict() if method.date is not None else None,
        "method": "fixed" if method.kind == "fixed" else method.label,
    }


def _write(out, method, batch, images, traces, metrics, chosen, seconds, device, n_cand, settings) -> int:
    """Each image, then its record (the record marks it done), atomically."""
    memory = peak_memory_mb(device)
    for k, (it, seed) in enumerate(batch):
        png, rec_path = image_paths(out, method, it.index, seed)
        meta = png.parent.parent / "metadata.jsonl"
        if not meta.exists():
            atomic_write(
                meta, json.dumps({"prompt": it.prompt, "tag": it.category, "spec": it.spec, "source": it.source}) + "\n"
            )
        record = {
            "method": method.label,
            "index": it.index,
            "prompt": it.prompt,
            "category": it.category,
            "spec": it.spec,
            "seed": seed,
            "seconds": seconds,
            "peak_memory_mb": memory,
            **metrics[k],
            "trace": traces[chosen[k]],
        }
        if n_cand > 1:
            record["best_of"] = {"n": n_cand, "chosen": chosen[k] % n_cand}
        atomic_write(png, png_bytes(_uint8(images[k]), _png_record(record, method, settings)))
        atomic_write(rec_path, json.dumps(record))
    return len(batch)


_DECODERS: dict = {}
_REWARDS: dict = {}


def _method_reward(method: Method, run_reward, device):
    """The reward a method follows: its own `reward=` spec (built once per run), else the run's."""
    if method.reward is None:
        return run_reward
    if method.reward not in _REWARDS:
        from date_diffusion.rewards.registry import reward_from_spec

        _REWARDS[method.reward] = reward_from_spec(method.reward, device)
    return _REWARDS[method.reward]


def _decoder(pipe, settings: RunSettings, spec: str):
    """The approximate reward decoder of a method, loaded once per run."""
    if spec not in _DECODERS:
        from date_diffusion.hub import tiny_decoder_for

        _DECODERS[spec] = tiny_decoder_for(settings.model, spec).to(pipe.device, pipe.vae.dtype)
    return _DECODERS[spec]


def load_records(out: Path, method: Method) -> list[dict]:
    root = out / "images" / method.slug
    records = []
    for path in sorted(root.glob("*/samples/*.json")) if root.exists() else []:
        try:
            records.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is damaged ({err}): re-run the same bench command to make it again") from err
    return records
