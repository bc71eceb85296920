"""Evaluate sampling methods on the toy world's prompt suite with the exact evaluator and the held-out CLIP.

Every method sees the same (prompt, seed) pairs, one generator per image, so comparisons are paired.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from date_diffusion.core.config import DATEConfig
from date_diffusion.evaluation.stats import bootstrap_ci, paired_difference
from date_diffusion.toyworld.evaluator import evaluate


def sample_and_score(pipe, reward, eval_reward, prompts, seeds, date: DATEConfig | None, steps: int,
                     guidance: float, batch_size: int = 64, desc: str = "") -> list[dict]:  # fmt: skip
    """One record per (prompt, seed): evaluator verdict, reward and held-out CLIP score of the final image."""
    jobs = [(p, spec, s) for p, spec in prompts for s in seeds]
    records = []
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc or "sampling", leave=False):
        batch = jobs[start : start + batch_size]
        t0 = time.perf_counter()
        out = pipe(
            [p for p, _, _ in batch], num_inference_steps=steps, guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for _, _, s in batch], output_type="pt",
            date=date, reward=reward if date is not None else None,
        )  # fmt: skip
        elapsed = (time.perf_counter() - t0) / len(batch)
        images = out.images.float()
        with torch.no_grad():
            final_reward = reward(images, [p for p, _, _ in batch]).tolist()
            held_out = eval_reward(images, [p for p, _, _ in batch]).tolist()
        uint8 = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for j, (prompt, spec, seed) in enumerate(batch):
            verdict = evaluate(uint8[j], spec)
            records.append({"prompt": prompt, "category": spec.category, "seed": seed, "pass": verdict["pass"],
                            "aspects": verdict["aspects"], "reward": final_reward[j], "clip_eval": held_out[j],
                            "seconds": elapsed, "trace": out.traces[j]})  # fmt: skip
    return records


def summarize(records: list[dict]) -> dict:
    """Accuracy per category (and overall) with bootstrap 95% CIs, plus mean held-out CLIP score."""
    by_cat = defaultdict(list)
    for r in records:
        by_cat[r["category"]].append(r)
        by_cat["all"].append(r)
    out = {}
    for cat, rs in by_cat.items():
        acc = bootstrap_ci([float(r["pass"]) for r in rs])
        out[cat] = {"n": len(rs), "accuracy": acc, "clip_eval": float(np.mean([r["clip_eval"] for r in rs])),
                    "reward": float(np.mean([r["reward"] for r in rs]))}  # fmt: skip
    return out


def compare(treated: list[dict], control: list[dict]) -> dict:
    """Paired differences (treated - control) per category: accuracy and held-out CLIP score, with CIs."""
    key = lambda r: (r["prompt"], r["seed"])  # noqa: E731
    ctrl = {key(r): r for r in control}
    pairs = defaultdict(list)
    for r in treated:
        c = ctrl[key(r)]
        pairs[r["category"]].append((r, c))
        pairs["all"].append((r, c))
    return {
        cat: {
            "n": len(ps),
            "accuracy_diff": paired_difference([float(a["pass"]) for a, _ in ps], [float(b["pass"]) for _, b in ps]),
            "clip_eval_diff": paired_difference([a["clip_eval"] for a, _ in ps], [b["clip_eval"] for _, b in ps]),
            "reward_diff": paired_difference([a["reward"] for a, _ in ps], [b["reward"] for _, b in ps]),
        }
        for cat, ps in pairs.items()
    }


def fmt_ci(m, lo, hi, pct: bool = True) -> str:
    if pct:
        return f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def markdown_tables(summaries: dict[str, dict], comparisons: dict[str, dict]) -> str:
    cats = ["single", "two_object", "color_binding", "counting", "position", "novel", "all"]
    lines = ["| method | " + " | ".join(cats) + " | held-out CLIP |", "|---" * (len(cats) + 2) + "|"]
    for name, s in summaries.items():
        cells = [f"{100 * s[c]['accuracy'][0]:.1f}" if c in s else "-" for c in cats]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['all']['clip_eval']:.4f} |")
    for name, comp in comparisons.items():
        lines += ["", f"**{name} minus the first method** (paired, 95% bootstrap CI; accuracy in percentage points)", "",
                  "| category | n | accuracy | held-out CLIP | reward |", "|---|---|---|---|---|"]  # fmt: skip
        for c in cats:
            if c in comp:
                d = comp[c]
                lines.append(f"| {c} | {d['n']} | {fmt_ci(*d['accuracy_diff'])} | "
                             f"{fmt_ci(*d['clip_eval_diff'], pct=False)} | {fmt_ci(*d['reward_diff'], pct=False)} |")  # fmt: skip
    return "\n".join(lines)


def save(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
