"""Training data of the toy ImageReward (`toy-judge`): the shipped toy UNet's own generations with their clean-image
estimates `x0_hat` along the way, written in resumable shards; labels come from the exact evaluator when training.

Captions are drawn from the grammar (held-out pairs included, as the suite's novel prompts use them) and never equal
a suite or validation prompt. Each batch of captions is generated one way, chosen by the shard's random generator:
fixed embeddings at a guidance drawn from `GUIDANCE`, the same with Gaussian noise added to the prompt embedding
(`PERTURB` times its per-token norm), or DATE (rho from `DATE_RHO`, every 10th step, reward `toy-clip`). A shard is
`shard-NNNN.safetensors` (uint8 `images` [N, 64, 64, 3] and `x0` [N, len(capture_steps()), 64, 64, 3]) beside
`shard-NNNN.json` (captions, specs, seeds, how each was made), the JSON written last: a shard with both is complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from date_diffusion.outputs import save_tensors
from date_diffusion.sampling.record import recorded_x0
from date_diffusion.toyworld import scene

STEPS = 50
GUIDANCE = (1.5, 3.0, 5.0, 7.5)
PERTURB = (0.1, 0.2)
DATE_RHO = (0.5, 1.0, 2.0)
SHARD = 128
BATCH = 16
SEED_BASE = 5_000_000  # generation seeds far from the suite's (1000 up) and validation's (0 up)


def capture_steps(steps: int = STEPS) -> tuple[int, ...]:
    """The loop indices whose x0_hat is kept: every tenth of the run (0, 5, ..., 45 of 50: DATE's paper-default updates
    are among them)."""
    return tuple(range(0, steps, max(1, steps // 10)))


def excluded_captions() -> set[str]:
    """The captions the judge never trains on: the evaluation suite's and the validation prompts'."""
    from date_diffusion.toyworld.suite import prompt_suite, validation_prompts

    return {p for p, _ in prompt_suite()} | {p for p, _ in validation_prompts()}


def judge_specs(rng: np.random.Generator, n: int, excluded: set[str]) -> list[scene.PromptSpec]:
    """`n` grammar specs, a tenth of them from held-out pairs, none of whose captions is in `excluded`."""
    out = []
    while len(out) < n:
        novel = rng.random() < 0.1
        spec = scene.sample_spec(rng, "novel" if novel else None, allow_held_out=novel)
        if spec.caption not in excluded:
            out.append(spec)
    return out


def _to_uint8(pipe, latents: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        x = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return ((x + 1) / 2).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _way(rng: np.random.Generator) -> dict:
    """How one batch is generated: fixed (60%), perturbed embedding (20%) or DATE (20%)."""
    kind = str(rng.choice(["fixed", "perturbed", "date"], p=[0.6, 0.2, 0.2]))
    way = {"kind": kind, "guidance_scale": float(rng.choice(GUIDANCE))}
    if kind == "perturbed":
        way["perturb"] = float(rng.choice(PERTURB))
    if kind == "date":
        way["rho"] = float(rng.choice(DATE_RHO))
    return way


def generate_batch(pipe, reward, specs, seeds, way: dict, steps: int = STEPS):
    """(final images, x0_hat at `capture_steps(steps)`) as uint8 arrays for one batch generated `way`."""
    from date_diffusion.core.config import DATEConfig

    captions = [s.caption for s in specs]
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    kwargs = dict(num_inference_steps=steps, guidance_scale=way["guidance_scale"], generator=gens, output_type="latent")
    if way["kind"] == "perturbed":
        embeds, negative = pipe.encode_prompt(captions, pipe.device, 1, True)
        noise = torch.randn(embeds.shape, generator=gens[0]).to(embeds.device)
        kwargs.update(
            prompt_embeds=embeds + way["perturb"] * noise * embeds.norm(dim=-1, keepdim=True) / embeds.shape[-1] ** 0.5
        )
        kwargs.update(negative_prompt_embeds=negative)
    else:
        kwargs["prompt"] = captions
    if way["kind"] == "date":
        kwargs.update(date=DATEConfig(rho=way["rho"], update_every=10), reward=reward)
    with recorded_x0(pipe.scheduler) as seen:
        latents = pipe(**kwargs).images
    if len(seen) != steps:
        raise RuntimeError(f"expected {steps} scheduler steps, saw {len(seen)}")
    x0 = torch.stack([seen[i] for i in capture_steps(steps)], 1)  # [B, C, ...]
    b, c = x0.shape[:2]
    x0_images = _to_uint8(pipe, x0.flatten(0, 1)).reshape(b, c, *scene_shape())
    return _to_uint8(pipe, latents), x0_images


def scene_shape() -> tuple[int, int, int]:
    return (scene.IMAGE_SIZE, scene.IMAGE_SIZE, 3)


def shard_specs(index: int, size: int, excluded: set[str]) -> tuple[list[scene.PromptSpec], np.random.Generator]:
    """Shard `index`'s captions, and the generator that then draws how each batch is made."""
    rng = np.random.default_rng([20261202, index])
    return judge_specs(rng, size, excluded), rng


def write_shard(out: Path, index: int, pipe, reward, excluded: set[str], size: int = SHARD, steps: int = STEPS):
    """Generate shard `index` into `out` (skipped when already complete); returns its JSON path."""
    meta_path = out / f"shard-{index:04d}.json"
    if meta_path.exists():
        return meta_path
    specs, rng = shard_specs(index, size, excluded)
    images, x0s, rows = [], [], []
    for start in range(0, size, BATCH):
        batch = specs[start : start + BATCH]
        seeds = [SEED_BASE + index * SHARD + start + k for k in range(len(batch))]  # distinct while size <= SHARD
        way = _way(rng)
        final, x0 = generate_batch(pipe, reward, batch, seeds, way, steps)
        images.append(final)
        x0s.append(x0)
        rows += [{"prompt": s.caption, "spec": s.to_json(), "seed": seed, **way} for s, seed in zip(batch, seeds)]
    tensors = {"images": np.ascontiguousarray(np.concatenate(images)), "x0": np.ascontiguousarray(np.concatenate(x0s))}
    save_tensors({k: torch.from_numpy(v) for k, v in tensors.items()}, out / f"shard-{index:04d}.safetensors")
    meta = {"capture": list(capture_steps(steps)), "steps": steps, "rows": rows}
    meta_path.write_text(json.dumps({**meta, "sealed": shard_seal(meta, meta_path)}) + "\n")
    return meta_path


def shard_seal(meta: dict, meta_path: Path) -> str:
    """The seal of a shard: its JSON (every field but the seal) and its tensors file together, so that rows edited
    by hand (a prompt, a spec) or images replaced are told apart when the shard is read (`judge.read_shard`)."""
    from date_diffusion.model_folder import fingerprint
    from date_diffusion.schemas import sealed

    content = {k: v for k, v in meta.items() if k != "sealed"}
    return sealed({**content, "tensors": fingerprint(meta_path.with_suffix(".safetensors"))})


def generate_shards(out: Path, shards: range, device: str = "cpu", size: int = SHARD, steps: int = STEPS) -> None:
    """Write the shards `shards` into `out` (resumable: complete shards are kept)."""
    from date_diffusion.pipelines import DATEPipeline
    from date_diffusion.rewards.registry import reward_from_spec
    from date_diffusion.toyworld import world

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = DATEPipeline.from_pretrained(world.PIPELINE).to(device)
    pipe.set_progress_bar_config(disable=True)
    reward = reward_from_spec(world.PLAIN_REWARD, device=device)
    excluded = excluded_captions()
    for index in shards:
        write_shard(out, index, pipe, reward, excluded, size, steps)
        print(f"shard {index} done", flush=True)
