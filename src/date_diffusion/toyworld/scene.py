"""The toy world's scene grammar and renderer.

A scene is 1-3 flat shapes on a plain background, rendered at 64x64 with anti-aliasing. A `PromptSpec` is the
structured meaning of a caption (which objects, how many, which relation); the renderer draws a random scene
that satisfies a spec, and the evaluator checks an image against one. Everything is deterministic given a
`numpy.random.Generator`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4
BACKGROUND = (235, 235, 235)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (230, 205, 25),
    "green": (35, 165, 60),
    "blue": (35, 75, 215),
    "purple": (145, 50, 190),
}
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES = {"small": 6.5, "big": 10.5}  # half-extent in pixels at 64x64
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
NUMBER_WORDS = {2: "two", 3: "three"}
CATEGORIES = ("single", "two_object", "color_binding", "counting", "position", "novel")

# Object types are (colour, shape). A fixed tenth of the unordered pairs of distinct object types never appear
# together in any multi-object training scene: prompts built from them form the "novel" category.
OBJECT_TYPES = tuple(itertools.product(COLORS, SHAPES))
_ALL_PAIRS = [(a, b) for a, b in itertools.combinations(OBJECT_TYPES, 2) if a[0] != b[0] and a[1] != b[1]]
_order = np.random.default_rng(20251026).permutation(len(_ALL_PAIRS))
HELD_OUT_PAIRS = frozenset(frozenset(_ALL_PAIRS[i]) for i in _order[: len(_ALL_PAIRS) // 10])


def is_held_out(a: tuple[str, str], b: tuple[str, str]) -> bool:
    return frozenset((a, b)) in HELD_OUT_PAIRS


@dataclass(frozen=True)
class PromptSpec:
    """What a caption asks for: objects with counts, optionally a relation `objects[0] <relation> objects[1]`."""

    category: str
    objects: tuple[tuple[str, str, int], ...]  # (colour, shape, count)
    relation: str | None = None
    size: str | None = None  # only for single objects

    @property
    def caption(self) -> str:
        def phrase(color, shape, count, size=None):
            if count == 1:
                words = ([size] if size else []) + [color, shape]
                return " ".join(["an" if words[0][0] in "aeiou" else "a"] + words)
            return f"{NUMBER_WORDS[count]} {color} {PLURALS[shape]}"

        parts = [phrase(c, s, n, self.size) for c, s, n in self.objects]
        if self.relation is not None:
            return f"{parts[0]} {RELATIONS[self.relation]} {parts[1]}"
        return " and ".join(parts)

    def to_json(self) -> dict:
        return {
            "category": self.category,
            "objects": [list(o) for o in self.objects],
            "relation": self.relation,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, d: dict) -> PromptSpec:
        return cls(d["category"], tuple(tuple(o) for o in d["objects"]), d.get("relation"), d.get("size"))


@dataclass
class PlacedObject:
    color: str
    shape: str
    size: str
    cx: float
    cy: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]


@dataclass
class Scene:
    objects: list[PlacedObject] = field(default_factory=list)


def vocabulary() -> list[str]:
    """Every word the grammar can produce (the toy tokenizer's whole-word vocabulary)."""
    words = {"a", "an", "and", "of", "the", "to"} | set(COLORS) | set(SHAPES) | set(PLURALS.values()) | set(SIZES)
    words |= set(NUMBER_WORDS.values())
    for rel in RELATIONS.values():
        words |= set(rel.split())
    return sorted(words)


def describe_vocabulary() -> str:
    """The toy world's words by kind, in one line: what a prompt can ask for (said where a prompt falls outside it:
    the terminal, the grids, the page, the README)."""
    counts = ["a", *NUMBER_WORDS.values()]
    kinds = {"shapes": SHAPES, "colours": COLORS, "counts": counts, "sizes": SIZES, "relations": RELATIONS.values()}
    return "; ".join(f"{kind}: {', '.join(words)}" for kind, words in kinds.items())


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        h = r * 2 * 0.92
        return [(cx, cy - h / 2 - 0.1 * r), (cx + r * 1.05, cy + h / 2), (cx - r * 1.05, cy + h / 2)]
    if shape == "cross":
        a = r * 0.38
        return [
            (cx - a, cy - r),
            (cx + a, cy - r),
            (cx + a, cy - a),
            (cx + r, cy - a),
            (cx + r, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + r),
            (cx - a, cy + r),
            (cx - a, cy + a),
            (cx - r, cy + a),
            (cx - r, cy - a),
            (cx - a, cy - a),
        ]
    return None


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, scale: float = 1.0):
    cx, cy, r = cx * scale, cy * scale, r * scale
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r), fill=fill)


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render a scene to an HxWx3 uint8 array (anti-aliased by supersampling)."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    scale = SUPERSAMPLE * size / IMAGE_SIZE
    for o in scene.objects:
        draw_shape(draw, o.shape, o.cx, o.cy, o.radius, COLORS[o.color], scale)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def _relation_holds(a: PlacedObject, b: PlacedObject, relation: str, margin: float = 4.0) -> bool:
    dx, dy = b.cx - a.cx, b.cy - a.cy  # image y grows downwards
    if relation in ("left", "right"):
        d = dx if relation == "left" else -dx
        return d > margin and abs(dy) <= 0.6 * abs(dx)
    d = dy if relation == "above" else -dy
    return d > margin and abs(dx) <= 0.6 * abs(dy)


def place(spec: PromptSpec, rng: np.random.Generator, max_tries: int = 200) -> Scene:
    """A random scene that satisfies `spec`: objects inside the canvas, not overlapping, relation clear."""
    wanted = [(c, s) for c, s, n in spec.objects for _ in range(n)]
    for _ in range(max_tries):
        sizes = [spec.size or str(rng.choice(list(SIZES))) for _ in wanted]
        objs = []
        for (c, s), sz in zip(wanted, sizes):
            r = SIZES[sz]
            lo, hi = r + 2, IMAGE_SIZE - r - 2
            objs.append(PlacedObject(c, s, sz, float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))))
        if any(
            np.hypot(a.cx - b.cx, a.cy - b.cy) < (a.radius + b.radius) * 1.3 + 2
            for a, b in itertools.combinations(objs, 2)
        ):
            continue
        if spec.relation is not None and not _relation_holds(objs[0], objs[1], spec.relation):
            continue
        return Scene(objs)
    raise RuntimeError(f"could not place {spec.caption!r}")


def sample_spec(rng: np.random.Generator, category: str | None = None, allow_held_out: bool = False) -> PromptSpec:
    """A random caption spec from the training distribution (held-out pairs excluded unless allowed)."""
    if category is None:
        category = str(rng.choice(["single", "two_object", "counting", "position"], p=[0.3, 0.25, 0.2, 0.25]))
    if category == "single":
        c, s = OBJECT_TYPES[rng.integers(len(OBJECT_TYPES))]
        size = str(rng.choice(list(SIZES))) if rng.random() < 0.3 else None
        return PromptSpec("single", ((c, s, 1),), size=size)
    if category == "counting":
        c, s = OBJECT_TYPES[rng.integers(len(OBJECT_TYPES))]
        return PromptSpec("counting", ((c, s, int(rng.choice([2, 3]))),))
    while True:
        a, b = (OBJECT_TYPES[i] for i in rng.choice(len(OBJECT_TYPES), 2, replace=False))
        if a[0] == b[0] or a[1] == b[1]:  # distinct colours and shapes keep every caption unambiguous
            continue
        if allow_held_out or not is_held_out(a, b):
            break
    objects = ((a[0], a[1], 1), (b[0], b[1], 1))
    if category in ("two_object", "color_binding", "novel"):
        return PromptSpec(category, objects)
    if category == "position":
        return PromptSpec("position", objects, relation=str(rng.choice(list(RELATIONS))))
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def hard_negative(spec: PromptSpec, rng: np.random.Generator) -> PromptSpec:
    """A caption that differs from `spec` in one attribute (colour binding, count, relation, object)."""
    objs = list(spec.objects)
    if len(objs) == 2 and rng.random() < 0.5:
        (c1, s1, n1), (c2, s2, n2) = objs
        if spec.relation is not None and rng.random() < 0.5:
            flip = {"left": "right", "right": "left", "above": "below", "below": "above"}
            return PromptSpec(spec.category, spec.objects, flip[spec.relation])
        return PromptSpec(spec.category, ((c2, s1, n1), (c1, s2, n2)), spec.relation)
    if len(objs) == 1 and objs[0][2] > 1 and rng.random() < 0.5:
        c, s, n = objs[0]
        return PromptSpec(spec.category, ((c, s, 5 - n),))
    i = int(rng.integers(len(objs)))
    c, s, n = objs[i]
    if rng.random() < 0.5:
        c = str(rng.choice([x for x in COLORS if x != c]))
    else:
        s = str(rng.choice([x for x in SHAPES if x != s]))
    objs[i] = (c, s, n)
    return PromptSpec(spec.category, tuple(objs), spec.relation, spec.size)


def sample_batch(rng: np.random.Generator, n: int, with_negatives: bool = False):
    """`n` random (image uint8 HxWx3, caption[, hard-negative caption]) training examples."""
    images, captions, negatives = [], [], []
    for _ in range(n):
        spec = sample_spec(rng)
        images.append(render(place(spec, rng)))
        captions.append(spec.caption)
        if with_negatives:
            negatives.append(hard_negative(spec, rng).caption)
    out = (np.stack(images), captions)
    return out + (negatives,) if with_negatives else out
