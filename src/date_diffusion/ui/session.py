"""What the web page does, as plain functions (tested without a browser): validate the form, run the fixed and
the DATE sample from one seed, and collect what DATE did (rewards, x0_hat before and after each update, the
distance moved, the exact evaluator's verdicts, files to download)."""

from __future__ import annotations

import json
import math
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from date_diffusion.core.config import DATEConfig
from date_diffusion.rewards.base import Reward
from date_diffusion.toyworld.evaluator import judge_for


class InputError(ValueError):
    """A form value that cannot run: shown in the page, the server carries on."""


@dataclass
class Form:
    prompt: str
    negative_prompt: str = ""
    seed: float = 0
    steps: float = 50
    guidance: float = 5.0
    rho: float = 0.5
    schedule: str = "every 10"
    grad_steps: float = 1
    anchor: str = "previous"
    prior_weight: float = 0.0
    reward: str = "clip"
    approximate: bool = False


def _integer(value, name: str, low: int, high: int) -> int:
    if value is None or isinstance(value, bool) or not math.isfinite(float(value)) or float(value) != int(value):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _number(value, name: str, low: float, high: float = math.inf) -> float:
    if value is None or isinstance(value, bool) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if not low <= float(value) <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


def parse_schedule(text: str) -> dict:
    """`every N` or a comma-separated list of loop indices (`0, 10, 20`) -> DATEConfig schedule fields."""
    text = (text or "").strip().lower()
    if text.startswith("every"):
        n = text[5:].strip()
        if not n.isdigit():
            raise InputError(f"schedule 'every N' needs a whole number N >= 1, got {text!r}")
        return {"update_every": _integer(int(n), "schedule 'every N'", 1, 10_000)}
    try:
        steps = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as err:
        raise InputError(f"schedule must be 'every N' or indices like '0, 10, 20', got {text!r}") from err
    if not steps:
        raise InputError("schedule is empty: write 'every 10' or indices like '0, 10, 20'")
    return {"update_steps": steps}


def check_form(form: Form) -> tuple[dict, DATEConfig]:
    """The sampling arguments and the DATE settings of a form, or `InputError` naming the field and the fix."""
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    if not (form.prompt or "").strip():
        raise InputError("prompt is empty: type what the image should show")
    steps = _integer(form.steps, "steps", 1, 1000)
    sampling = dict(
        prompt=form.prompt.strip(),
        negative_prompt=(form.negative_prompt or "").strip() or None,
        seed=_integer(form.seed, "seed", 0, 2**63 - 1),
        steps=steps,
        guidance=_number(form.guidance, "guidance", 0.0, 100.0),
    )
    try:
        date = DATEConfig(
            rho=_number(form.rho, "rho", 0.0, 100.0),
            grad_steps=_integer(form.grad_steps, "gradient steps", 1, 20),
            anchor=form.anchor,
            prior_weight=_number(form.prior_weight, "prior weight", 0.0),
            **parse_schedule(form.schedule),
        )
        date.update_indices(steps)
        check_spec(form.reward)
    except RewardSpecError as err:
        raise InputError(f"reward: {err}") from err
    except ValueError as err:
        raise InputError(str(err)) from err
    return sampling, date


class RecordingReward(Reward):
    """The reward DATE follows, keeping every image it scores: with gradient = x0_hat before an update, without =
    x0_hat after it (the loop's `track_reward_after`)."""

    def __init__(self, reward: Reward):
        super().__init__()
        self.reward, self.name = reward, reward.name
        self.seen: list[tuple[str, torch.Tensor]] = []

    def forward(self, images, prompts):
        kind = "before" if torch.is_grad_enabled() else "after"
        self.seen.append((kind, images[0].detach().float().clamp(0, 1).cpu()))
        return self.reward(images, prompts)


@dataclass
class Session:
    """The model (one pipeline per allowed concurrent request), rewards built once, the Stop flag."""

    model: str
    device: str = "cpu"
    concurrency: int = 1
    stop: threading.Event = field(default_factory=threading.Event)
    _pipes: queue.Queue = field(default_factory=queue.Queue)
    _rewards: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="date-diffusion-ui-")))

    def __post_init__(self):
        from date_diffusion.hub import model_defaults

        self.defaults = model_defaults(self.model)
        self._loaded = 0

    def _pipeline(self):
        with self._lock:
            if self._pipes.empty() and self._loaded < self.concurrency:
                from date_diffusion.pipelines import load_date_pipeline

                pipe = load_date_pipeline(self.model, "auto", self.device)
                pipe.set_progress_bar_config(disable=True)
                self._loaded += 1
                return pipe
        return self._pipes.get()

    def warm(self) -> None:
        """Load the first pipeline and the default reward now, so the first request does not wait for them."""
        self._pipes.put(self._pipeline())
        self.reward(self.defaults.get("reward", "clip"))

    def reward(self, spec: str):
        with self._lock:
            if spec not in self._rewards:
                from date_diffusion.rewards.registry import reward_from_spec

                self._rewards[spec] = reward_from_spec(spec, self.device)
            return self._rewards[spec]

    def decoder(self):
        with self._lock:
            if "decoder" not in self._rewards:
                from date_diffusion.hub import tiny_decoder_for

                self._rewards["decoder"] = tiny_decoder_for(self.model).to(self.device)
            return self._rewards["decoder"]

    def compare(self, form: Form, progress=None) -> dict:
        """The fixed and the DATE image of one seed and what DATE did (see `collect`)."""
        sampling, date = check_form(form)
        reward = RecordingReward(self.reward(form.reward))
        decoder = self.decoder() if form.approximate else None
        self.stop.clear()
        pipe = self._pipeline()
        try:
            return run_pair(pipe, sampling, date, reward, decoder, self, progress)
        finally:
            self._pipes.put(pipe)


def _callback(session: Session, total: int, offset: int, progress):
    def on_step_end(pipe, i, t, tensors):
        if session.stop.is_set():
            pipe._interrupt = True
        if progress is not None:
            progress((offset + i + 1) / total, f"step {offset + i + 1} of {total}")
        return tensors

    return on_step_end


def run_pair(pipe, sampling: dict, date: DATEConfig, reward, decoder, session: Session, progress=None) -> dict:
    steps = sampling["steps"]
    out_dir = Path(tempfile.mkdtemp(dir=session.workdir))
    common = dict(
        prompt=sampling["prompt"],
        negative_prompt=sampling["negative_prompt"] if pipe._date_negative_branch else None,
        num_inference_steps=steps,
        guidance_scale=sampling["guidance"],
    )
    t0 = time.perf_counter()
    fixed = pipe(**common, generator=torch.Generator().manual_seed(sampling["seed"]),
                 callback_on_step_end=_callback(session, 2 * steps, 0, progress))  # fmt: skip
    stopped = pipe._interrupt
    dated = None
    if not stopped:
        dated = pipe(
            **common,
            generator=torch.Generator().manual_seed(sampling["seed"]),
            date=date,
            reward=reward,
            reward_decoder=decoder,
            save_embeddings=out_dir / "embeddings.safetensors",
            callback_on_step_end=_callback(session, 2 * steps, steps, progress),
        )
        stopped = pipe._interrupt
    seconds = time.perf_counter() - t0
    return collect(session, sampling, date, fixed, dated, reward, out_dir, seconds, stopped)


def collect(session, sampling, date, fixed, dated, reward, out_dir: Path, seconds: float, stopped: bool) -> dict:
    """Everything the page shows, and the files it offers."""
    from date_diffusion.outputs import save_png

    record = {**sampling, "model": session.model, "date": date.to_dict(), "reward": reward.name}
    record.update(guidance_scale=sampling["guidance"], method="date")
    result = {"stopped": stopped, "seconds": seconds, "fixed": fixed.images[0], "date": None, "files": []}
    result["files"].append(str(save_png(out_dir / "fixed.png", fixed.images[0], {**record, "method": "fixed"})))
    judge = judge_for(session.model) or (lambda image, prompt: None)
    result["verdicts"] = {"fixed": judge(fixed.images[0], sampling["prompt"])}
    if dated is not None:
        trace = dated.traces[0]
        result.update(date=dated.images[0], trace=trace, strip=strip(reward.seen, trace))
        result["verdicts"]["date"] = judge(dated.images[0], sampling["prompt"])
        result["files"].append(str(save_png(out_dir / "date.png", dated.images[0], {**record, "trace": trace})))
        (out_dir / "trace.json").write_text(json.dumps({**record, "trace": trace}, indent=1))
        result["files"] += [str(out_dir / "trace.json"), str(out_dir / "embeddings.safetensors")]
    return result


def strip(seen: list, trace: dict) -> list[tuple]:
    """(image, caption) of x0_hat before and after every update step, in order."""
    steps = [u["step"] for u in trace["updates"]]
    out, k = [], -1
    for kind, image in seen:
        k += kind == "before" and (not out or out[-1][2] == "after")
        step = steps[min(max(k, 0), len(steps) - 1)] if steps else 0
        out.append((_pil(image), f"step {step}: x0_hat {kind}", kind))
    return [(img, caption) for img, caption, _ in out]


def _pil(image01: torch.Tensor):
    from PIL import Image

    arr = (image01.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)


def reward_plot(trace: dict):
    """Reward before and after each update (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    steps = [u["step"] for u in trace["updates"]]
    ax.plot(steps, [u["reward_before"] for u in trace["updates"]], "o-", label="before update")
    ax.plot(steps, [u.get("reward_after", float("nan")) for u in trace["updates"]], "s--", label="after update")
    ax.set_xlabel("sampling step")
    ax.set_ylabel("reward of x0_hat")
    ax.legend()
    fig.tight_layout()
    return fig


def summary(result: dict) -> str:
    """The text under the images: verdicts, distance moved, seconds, and whether Stop ended the run."""
    lines = []
    if result["stopped"]:
        lines.append("**Stopped** before the end: the images show where sampling was.")
    for kind in ("fixed", "date"):
        verdict = result["verdicts"].get(kind)
        if verdict is not None and verdict.get("pass") is not None:
            failed = [a for a, ok in verdict["aspects"].items() if not ok]
            text = "PASS" if verdict["pass"] else "FAIL (" + ", ".join(failed) + ")"
            lines.append(f"Exact evaluator, {'fixed embedding' if kind == 'fixed' else 'DATE'}: **{text}**")
    if result.get("trace"):
        moved = ", ".join(f"{u['update_norm']:.3f}" for u in result["trace"]["updates"])
        lines.append(f"Embedding moved {result['trace']['final_distance']:.3f} in all (per update: {moved}).")
    lines.append(f"{result['seconds']:.1f} s for both images.")
    return "\n\n".join(lines)
