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
from dataclasses import dataclass

import torch

from date_diffusion.families import by_name
from date_diffusion.toyworld import world

# date-lowres: the real VAE decodes x0_hat for the reward at the reward's own input size (CLIP: 224 px; the toy
# CLIP takes 64 px, the toy images' own size, so the toy world uses half of it)
LOWRES = {world.NAME: 32}


@dataclass
class Spec:
    """One measurement: a model, a variant, and the run settings (the worker's JSON argument)."""

    model: str
    variant: str
    steps: int
    update_every: int
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    seed: int = 0
    tiny_decoder: str | None = None
    reward: str | None = None
    batch: int = 1


class Clock:
    """Timed calls (start, seconds, part) and the end time of every sampling step, synchronised on CUDA."""

    def __init__(self, device):
        self.device, self.events, self.stamps = device, [], []

    def now(self) -> float:
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    def timed(self, name, fn):
        def wrapper(*args, **kwargs):
            t0 = self.now()
            out = fn(*args, **kwargs)
            grad = "grad" if torch.is_grad_enabled() else "no grad"
            self.events.append((t0, self.now() - t0, f"{name} ({grad})"))
            return out

        return wrapper

    def on_step(self, pipe, i, t, tensors):
        self.stamps.append(self.now())
        return {}


def measure(spec: Spec) -> dict:
    torch.set_num_threads(spec.threads)
    from date_diffusion.perf.models import load

    pipe, reward, size = load(spec.model, getattr(torch, spec.dtype), spec.reward)
    check_settings(pipe, spec, size)
    pipe.to(spec.device)
    reward.to(spec.device)
    pipe.set_progress_bar_config(disable=True)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if str(spec.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(spec.device)
    clock = Clock(spec.device)
    pipe.unet.forward = clock.timed("unet", pipe.unet.forward)
    pipe.vae.decode = clock.timed("vae decode", pipe.vae.decode)
    reward.forward = clock.timed("reward", reward.forward)
    t0 = clock.now()
    out = _sample(spec, pipe, reward, size, clock)
    total = clock.now() - t0
    result = _result(spec, size, total, rss_loaded)
    result.update(_step_times(spec, out, t0, clock, result))
    return result


def check_settings(pipe, spec: Spec, size: int) -> None:
    """The step count the model's scheduler takes (`schedulers.check_steps_fit`, as `generate` asks it), once it is
    loaded and before anything is measured: otherwise a usage line for the parent (`bench_perf.SettingsRefused`)."""
    from date_diffusion.core.settings import SettingError
    from date_diffusion.perf.bench_perf import USAGE_EXIT, USAGE_MARK
    from date_diffusion.schedulers import check_steps_fit

    try:
        check_steps_fit(pipe, spec.steps, "--steps", size, size)
    except SettingError as err:
        print(f"{USAGE_MARK}{err}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from None


def _sample(spec: Spec, pipe, reward, size: int, clock: Clock):
    """The measured sampling call of the variant."""
    from date_diffusion.core.config import DATEConfig

    date = None if spec.variant == "fixed" else DATEConfig(update_every=spec.update_every, track_reward_after=False)
    decoder = None
    if spec.variant.startswith("date-approx"):
        decoder = _tiny_decoder(spec.model, spec.tiny_decoder, spec.device, getattr(torch, spec.dtype))
        decoder.decode = clock.timed("tiny decode", decoder.decode)
    return pipe(
        ["a photo of a cat and a dog"] * spec.batch,
        height=size,
        width=size,
        num_inference_steps=spec.steps,
        guidance_scale=by_name("sd").sampling["guidance_scale"],  # the paper's, whatever the model
        generator=[torch.Generator().manual_seed(spec.seed + k) for k in range(spec.batch)],
        output_type="latent",
        date=date,
        reward=reward if date else None,
        gradient_checkpointing=spec.variant.endswith("checkpointing"),
        reward_decoder=decoder,
        reward_resolution=LOWRES.get(spec.model, 224) if spec.variant.startswith("date-lowres") else None,
        callback_on_step_end=clock.on_step,
    )


def _result(spec: Spec, size: int, total: float, rss_loaded: float) -> dict:
    result = {
        "model": spec.model,
        "variant": spec.variant,
        "steps": spec.steps,
        "size": size,
        "device": spec.device,
        "dtype": spec.dtype,
        "threads": spec.threads,
        "batch": spec.batch,
        "total_s": total,
        "per_image_s": total / spec.batch,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_loaded,
    }
    if str(spec.device).startswith("cuda"):
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(spec.device) / 2**20
    return result


def _step_times(spec: Spec, out, t0: float, clock: Clock, result: dict) -> dict:
    """Normal and update steps' times, and (with updates) the forward parts inside update steps, per update step;
    the remainder is backward and bookkeeping."""
    bounds = list(zip([t0] + clock.stamps[:-1], clock.stamps))
    durations = [b - a for a, b in bounds]
    updates = set(out.traces[0]["update_steps"]) if spec.variant != "fixed" else set()
    normal = [d for i, d in enumerate(durations) if i not in updates]
    update = [d for i, d in enumerate(durations) if i in updates]
    times = {
        "update_steps": sorted(updates),
        "normal_step_s": sorted(normal)[len(normal) // 2] if normal else None,
        "update_step_s": sum(update) / len(update) if update else None,
    }
    if update:
        parts = defaultdict(float)
        for start, seconds, name in clock.events:
            step = next((i for i, (a, b) in enumerate(bounds) if a <= start < b), None)
            if step in updates:
                parts[name] += seconds / len(update)
        parts["backward + other"] = times["update_step_s"] - sum(parts.values())
        times["update_parts_s"] = dict(parts)
    return times


def _tiny_decoder(model, path, device, dtype):
    from diffusers import AutoencoderTiny

    if path is None and model == world.NAME:
        path = world.TINY_DECODER
    if path is None:  # SD architecture with random weights: TAESD's architecture, random weights (same cost)
        return AutoencoderTiny().to(device, dtype)
    return AutoencoderTiny.from_pretrained(str(path)).to(device, dtype)


if __name__ == "__main__":
    print(json.dumps(measure(Spec(**json.loads(sys.argv[1])))))
