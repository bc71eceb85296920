"""The toy world's editing suite: a rendered source scene, a target caption, and exact checks of the edit.

Kinds: `color` (one object changes colour), `shape` (one object becomes another shape), `position` (the
relation of two objects flips). The source image is the renderer's scene for the source caption, laid out by
the case's seed. An edit *succeeds* when the evaluator passes the edited image for the target caption; it
*preserves* when everything the edit does not name stays: each object keeps its place (centroid within
`MOVE_TOLERANCE` pixels; for position edits: keeps its colour and shape) and unnamed objects keep colour and
shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from date_diffusion.toyworld import scene
from date_diffusion.toyworld.evaluator import detect, evaluate
from date_diffusion.toyworld.scene import COLORS, SHAPES, PromptSpec

MOVE_TOLERANCE = 6.0
FLIP = {"left": "right", "right": "left", "above": "below", "below": "above"}


@dataclass(frozen=True)
class EditCase:
    kind: str
    source: PromptSpec
    target: PromptSpec
    changed_object: int | None  # index in source.objects of the object the edit changes (None: relation edit)


def edit_suite(per_kind: int = 20, seed: int = 4321) -> list[EditCase]:
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(per_kind):  # colour of a single object, or of one of two objects
        spec = scene.sample_spec(rng, "single" if k % 2 == 0 else "two_object")
        i = int(rng.integers(len(spec.objects)))
        c, s, n = spec.objects[i]
        others = {o[0] for o in spec.objects}
        new = str(rng.choice([x for x in COLORS if x not in others]))
        objs = list(spec.objects)
        objs[i] = (new, s, n)
        cases.append(EditCase("color", spec, PromptSpec(spec.category, tuple(objs)), i))
    for k in range(per_kind):  # shape
        spec = scene.sample_spec(rng, "single" if k % 2 == 0 else "two_object")
        i = int(rng.integers(len(spec.objects)))
        c, s, n = spec.objects[i]
        others = {o[1] for o in spec.objects}
        objs = list(spec.objects)
        objs[i] = (c, str(rng.choice([x for x in SHAPES if x not in others])), n)
        cases.append(EditCase("shape", spec, PromptSpec(spec.category, tuple(objs)), i))
    for _ in range(per_kind):  # position
        spec = scene.sample_spec(rng, "position")
        cases.append(EditCase("position", spec, PromptSpec("position", spec.objects, FLIP[spec.relation]), None))
    return cases


def source_scene(case: EditCase, seed: int, index: int) -> scene.Scene:
    return scene.place(case.source, np.random.default_rng([seed, index, 7]))


def score_edit(case: EditCase, source: scene.Scene, edited: np.ndarray) -> dict:
    """`changed` (the target caption holds), `preserved` (what the edit does not name stayed), per object."""
    changed = bool(evaluate(edited, case.target)["pass"])
    dets = detect(edited)
    preserved = True
    for obj in source.objects:
        index = next(i for i, (c, s, _) in enumerate(case.source.objects) if (c, s) == (obj.color, obj.shape))
        want_c, want_s, _ = case.target.objects[index]
        if case.kind == "position":  # objects keep identity; their places are what changes
            preserved &= any(d.color == want_c and d.shape == want_s for d in dets)
            continue
        near = [d for d in dets if np.hypot(d.cx - obj.cx, d.cy - obj.cy) <= MOVE_TOLERANCE]
        if index == case.changed_object:
            preserved &= bool(near)  # the edited object stays where it was
        else:
            preserved &= any(d.color == obj.color and d.shape == obj.shape for d in near)
    return {"changed": changed, "preserved": bool(preserved), "exact": float(changed and preserved)}
