"""One `bench-perf` measurement in its own process, so that its peak memory is its own.

`python -m date_diffusion.perf.worker '<json>'` prints one JSON line: wall time of the sampling call, time of
normal and update steps, the parts of an update step, and memory (peak RSS and, on CUDA, max allocated).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import defaultdict

import torch

VARIANTS = (
    "fixed",
    "date",
    "date-checkpointing",
    "date-approx",
    "date-approx-checkpointing",
    "date-lowres",
    "date-lowres-checkpointing",
)
# date-lowres: the real VAE decodes x0_hat for the reward at the reward's own input size (CLIP: 224 px; the toy
# CLIP takes 64 px, the toy images' own size, so the toy world uses half of it)
LOWRES = {"toy": 32}


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    model: str,
    variant: str,
    steps: int,
    update_every: int,
    device: str,
    dtype: str,
    threads: int,
    seed: int = 0,
    tiny_decoder: str | None = None,
    reward: str | None = None,
    batch: int = 1,
) -> dict:
    torch.set_num_threads(threads)
    from date_diffusion.core.config import DATEConfig
    from date_diffusion.perf.models import load

    pipe, reward, size = load(model, getattr(torch, dtype), reward)
    pipe.to(device)
    reward.to(device)
    pipe.set_progress_bar_config(disable=True)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    events = []  # (start, seconds, part): every timed call; assigned to steps afterwards

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            _sync(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(device)
            events.append(
                (t0, time.perf_counter() - t0, f"{name} ({'grad' if torch.is_grad_enabled() else 'no grad'})")
            )
            return out

        return wrapper

    pipe.unet.forward = timed("unet", pipe.unet.forward)
    pipe.vae.decode = timed("vae decode", pipe.vae.decode)
    reward.forward = timed("reward", reward.forward)
    date = None
    decoder = None
    if variant != "fixed":
        date = DATEConfig(rho=0.5, update_every=update_every, track_reward_after=False)
    if variant.startswith("date-approx"):
        decoder = _tiny_decoder(model, tiny_decoder, device, getattr(torch, dtype))
        decoder.decode = timed("tiny decode", decoder.decode)
    stamps = []
    gen = [torch.Generator().manual_seed(seed + k) for k in range(batch)]

    def on_step(p, i, t, kw):
        _sync(device)
        stamps.append(time.perf_counter())
        return {}

    _sync(device)
    t0 = time.perf_counter()
    out = pipe(
        ["a photo of a cat and a dog"] * batch,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=8.0,
        generator=gen,
        output_type="latent",
        date=date,
        reward=reward if date else None,
        gradient_checkpointing=variant.endswith("checkpointing"),
        reward_decoder=decoder,
        reward_resolution=LOWRES.get(model, 224) if variant.startswith("date-lowres") else None,
        callback_on_step_end=on_step,
    )
    _sync(device)
    total = time.perf_counter() - t0
    durations = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    updates = set(out.traces[0]["update_steps"]) if date else set()
    normal = [d for i, d in enumerate(durations) if i not in updates]
    update = [d for i, d in enumerate(durations) if i in updates]
    result = {
        "model": model,
        "variant": variant,
        "steps": steps,
        "update_steps": sorted(updates),
        "size": size,
        "device": device,
        "dtype": dtype,
        "threads": threads,
        "batch": batch,
        "total_s": total,
        "per_image_s": total / batch,
        "normal_step_s": sorted(normal)[len(normal) // 2] if normal else None,
        "update_step_s": sum(update) / len(update) if update else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_loaded,
    }
    if str(device).startswith("cuda"):
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if update:
        # forward parts inside update steps, per update step; the remainder is backward and bookkeeping
        bounds = list(zip([t0] + stamps[:-1], stamps))
        parts = defaultdict(float)
        for start, seconds, name in events:
            step = next((i for i, (a, b) in enumerate(bounds) if a <= start < b), None)
            if step in updates:
                parts[name] += seconds / len(update)
        parts["backward + other"] = result["update_step_s"] - sum(parts.values())
        result["update_parts_s"] = dict(parts)
    return result


def _tiny_decoder(model, path, device, dtype):
    from diffusers import AutoencoderTiny

    from date_diffusion.toyworld import world

    if path is None and model == "toy":
        path = world.TINY_DECODER
    if path is None:  # SD architecture with random weights: TAESD's architecture, random weights (same cost)
        return AutoencoderTiny().to(device, dtype)
    return AutoencoderTiny.from_pretrained(str(path)).to(device, dtype)


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
