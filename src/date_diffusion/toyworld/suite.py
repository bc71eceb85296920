"""The toy world's fixed, versioned evaluation prompt suite, and validation prompts kept apart from it.

`prompt_suite()` reads `suite/prompts_v1.json` (committed); `build_suite_v1()` is the code that wrote it, kept
so the file can be checked. Evaluation uses seeds from `EVAL_SEED_BASE` up; sweeps that choose defaults use
`validation_prompts()` (never in the suite) and seeds below `EVAL_SEED_BASE`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from date_diffusion.toyworld import scene
from date_diffusion.toyworld.scene import OBJECT_TYPES, RELATIONS, PromptSpec

SUITE_VERSION = "v1"
SUITE_PATH = Path(__file__).resolve().parent / "suite" / f"prompts_{SUITE_VERSION}.json"
EVAL_SEED_BASE = 1000


def _pairs(rng, n, held_out: bool):
    out, seen = [], set()
    pool = [p for p in scene._ALL_PAIRS if scene.is_held_out(*p) == held_out]
    for i in rng.permutation(len(pool)):
        a, b = pool[i]
        if rng.random() < 0.5:
            a, b = b, a
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append((a, b))
        if len(out) == n:
            break
    return out


def build_suite_v1() -> list[PromptSpec]:
    rng = np.random.default_rng(1234)
    specs = [PromptSpec("single", ((c, s, 1),)) for c, s in OBJECT_TYPES]
    specs += [PromptSpec("two_object", ((a[0], a[1], 1), (b[0], b[1], 1))) for a, b in _pairs(rng, 40, False)]
    # colour binding: both colour assignments of the same two shapes
    taken = {sp.caption for sp in specs}
    n_binding = 0
    for a, b in _pairs(rng, 180, False):
        pair = [
            PromptSpec("color_binding", ((a[0], a[1], 1), (b[0], b[1], 1))),
            PromptSpec("color_binding", ((b[0], a[1], 1), (a[0], b[1], 1))),
        ]
        if n_binding == 20 or scene.is_held_out((b[0], a[1]), (a[0], b[1])) or {p.caption for p in pair} & taken:
            continue
        specs += pair
        taken |= {p.caption for p in pair}
        n_binding += 1
    for i in rng.permutation(len(OBJECT_TYPES))[:24]:
        c, s = OBJECT_TYPES[i]
        specs.append(PromptSpec("counting", ((c, s, 2 + int(rng.integers(2))),)))
    rels = list(RELATIONS)
    for k, (a, b) in enumerate(_pairs(rng, 48, False)):
        specs.append(PromptSpec("position", ((a[0], a[1], 1), (b[0], b[1], 1)), rels[k % 4]))
    for k, (a, b) in enumerate(_pairs(rng, 18, True)):
        objs = ((a[0], a[1], 1), (b[0], b[1], 1))
        specs.append(PromptSpec("novel", objs))
        specs.append(PromptSpec("novel", objs, rels[k % 4]))
    return specs


def write_suite(path: Path = SUITE_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": s.caption, **s.to_json()} for s in build_suite_v1()]
    path.write_text(json.dumps({"version": SUITE_VERSION, "prompts": rows}, indent=1) + "\n")


def prompt_suite() -> list[tuple[str, PromptSpec]]:
    rows = json.loads(SUITE_PATH.read_text())["prompts"]
    return [(r["prompt"], PromptSpec.from_json(r)) for r in rows]


def validation_prompts(n: int = 60, seed: int = 99) -> list[tuple[str, PromptSpec]]:
    """Prompts for tuning (rho, schedule): same categories, none of them in the evaluation suite."""
    taken = {p for p, _ in prompt_suite()}
    rng = np.random.default_rng(seed)
    cats = ["single", "two_object", "counting", "position", "novel"]
    out, seen = [], set(taken)
    while len(out) < n:
        spec = scene.sample_spec(rng, cats[len(out) % len(cats)], allow_held_out=cats[len(out) % len(cats)] == "novel")
        if spec.category == "novel" and not scene.is_held_out(spec.objects[0][:2], spec.objects[1][:2]):
            continue
        if spec.caption not in seen:
            seen.add(spec.caption)
            out.append((spec.caption, spec))
    return out
