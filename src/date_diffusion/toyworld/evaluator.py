"""The exact evaluator: reads a toy-world image back into objects and checks a prompt against them.

Segmentation: pixels far from the background colour are foreground; 8-connected foreground components of at
least `MIN_AREA` pixels are objects. Each object gets the palette colour nearest its median pixel, and the
shape whose template (rendered by the same code as the scenes, at both object sizes) best overlaps its
rescaled soft mask: each pixel's distance from the background relative to the object's own core, so that the
blurred notches of a small decoded cross or the corners of a small triangle still count as partly background.

Version 2 (see docs/evaluator-audit.md): version 1 compared binary masks with big templates only and read
small decoded crosses and triangles as circles; it also judged relations by the dominant axis, where the world
defines them by a cone (`scene._relation_holds`), widened here by the error of reading centres from pixels.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from date_diffusion.toyworld import scene
from date_diffusion.toyworld.scene import COLORS, PLURALS, RELATIONS, SHAPES, PromptSpec

EVALUATOR_VERSION = 2
MIN_AREA = 20
FOREGROUND_DISTANCE = 70.0  # RGB distance from the background
TEMPLATE = 24
BIG_EXTENT = 17  # bounding-box extent (px) separating "small" from "big"
# A relation holds when the displacement lies in the renderer's cone (|across| <= 0.6 |along|), widened by the
# error of reading centres from pixels: the largest ratio read on 3000 rendered position scenes was 0.70.
RELATION_CONE = 0.75
_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
_NAMES = list(COLORS)


@dataclass
class Detection:
    color: str
    shape: str
    size: str
    cx: float
    cy: float
    area: int
    shape_score: float


@lru_cache(maxsize=1)
def _templates() -> list[tuple[str, np.ndarray]]:
    out = []
    for shape in SHAPES:
        for size in scene.SIZES:
            img = scene.render(scene.Scene([scene.PlacedObject("red", shape, size, 32, 32)]))
            dist = _distance(img)
            out.append((shape, _soft_crop(dist, dist > FOREGROUND_DISTANCE)))
    return out


def _distance(image: np.ndarray) -> np.ndarray:
    return np.linalg.norm(image.astype(np.float64) - np.array(scene.BACKGROUND, dtype=np.float64), axis=-1)


def _foreground(image: np.ndarray) -> np.ndarray:
    return _distance(image) > FOREGROUND_DISTANCE


def _soft_crop(dist: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The object's distance from the background relative to its core (the 80th percentile inside its mask),
    clipped to [0, 1], over its half-strength bounding box, resized to TEMPLATE x TEMPLATE."""
    core = np.percentile(dist[mask], 80)
    soft = np.clip(dist / core, 0, 1) * ndimage.binary_dilation(mask, iterations=1)
    ys, xs = np.nonzero(soft >= 0.5)
    crop = soft[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    return np.asarray(Image.fromarray(crop).resize((TEMPLATE, TEMPLATE), Image.Resampling.BILINEAR))


_YY, _XX = np.mgrid[:TEMPLATE, :TEMPLATE]
_CORNERS = np.hypot(_YY - (TEMPLATE - 1) / 2, _XX - (TEMPLATE - 1) / 2) > TEMPLATE / 2 + 1.5
CORNER_MASS = 0.14  # mean soft strength outside the inscribed circle: circles <= 0.12, squares >= 0.15 (audit)


def _circle_or_square(best: str, ious: dict, crop: np.ndarray) -> str:
    """A small decoded circle and a rounded square overlap both templates almost equally (within 0.05): then the
    corners of the crop decide, empty for a circle, filled for a square."""
    if best in ("circle", "square") and abs(ious["circle"] - ious["square"]) < 0.05:
        return "square" if crop[_CORNERS].mean() > CORNER_MASS else "circle"
    return best


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in an HxWx3 uint8 image (any size; rescaled to 64x64 first)."""
    image = np.asarray(image)[..., :3]
    if image.shape[:2] != (scene.IMAGE_SIZE, scene.IMAGE_SIZE):
        image = np.asarray(Image.fromarray(image).resize((scene.IMAGE_SIZE,) * 2, Image.Resampling.BILINEAR))
    dist = _distance(image)
    labels, n = ndimage.label(dist > FOREGROUND_DISTANCE, structure=np.ones((3, 3)))
    templates = _templates()
    found = []
    for k in range(1, n + 1):
        mask = labels == k
        area = int(mask.sum())
        if area < MIN_AREA:
            continue
        color = _NAMES[int(np.argmin(np.linalg.norm(_PALETTE - np.median(image[mask], axis=0), axis=1)))]
        m = _soft_crop(np.where(labels == k, dist, 0.0), mask)
        ious = {}
        for s, t in templates:  # soft intersection over union, the best of the shape's two sizes
            ious[s] = max(ious.get(s, 0.0), float(np.minimum(m, t).sum() / max(1e-9, np.maximum(m, t).sum())))
        shape = _circle_or_square(max(ious, key=ious.get), ious, m)
        ys, xs = np.nonzero(mask)
        extent = max(np.ptp(ys), np.ptp(xs)) + 1
        size = "big" if extent >= BIG_EXTENT else "small"
        found.append(Detection(color, shape, size, float(xs.mean()), float(ys.mean()), area, float(ious[shape])))
    return found


_SINGULAR = {v: k for k, v in PLURALS.items()}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_OBJ = r"(a|an|one|two|three)\s+(?:(small|big)\s+)?(\w+)\s+(\w+)"


_KNOWN = frozenset(scene.vocabulary()) | frozenset(_NUMBERS)


class CaptionError(ValueError):
    """A prompt the exact evaluator cannot read. `unknown` lists its words outside the toy world's vocabulary, in the
    order they first appear; empty when every word is known but the sentence is not one of the toy grammar."""

    def __init__(self, text: str, unknown=(), why: str | None = None):
        self.text, self.unknown = text, tuple(unknown)
        grammar = "known words, but not a sentence it reads (like 'two green triangles')"
        stray = next((ch for ch in text if not (ch.isalnum() or ch.isspace() or ch in ",'’")), None)
        if stray is not None:  # a mark or an invisible character, which joins or splits no word it knows
            grammar += f"; it holds {_character(stray)}, which no sentence it reads has"
        self.why = why or (f"unknown words: {', '.join(self.unknown)}" if self.unknown else grammar)
        super().__init__(f"not a toy-world caption ({self.why}): {text!r}")


def _character(ch: str) -> str:
    """A character as a message names it: visible ones quoted, others by code point and name (`U+200B ZERO WIDTH
    SPACE`), which no quote would show."""
    import unicodedata

    if ch.isprintable() and not unicodedata.category(ch).startswith(("C", "Z")):
        return repr(ch)
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'an unnamed character')}"


def unknown_words(text: str) -> list[str]:
    """The words of `text` the toy world does not know (each once, in order)."""
    words = re.findall(r"\w+(?:['’]\w+)*", text.lower())  # whole words as typed: `c1rcle`, `circle3`, `circle's`
    return [w for w in dict.fromkeys(words) if w not in _KNOWN]


def parse_caption(text: str) -> PromptSpec:
    """The spec of a caption written in the toy grammar (raises `CaptionError`, naming the words it does not know,
    otherwise)."""
    unknown = unknown_words(text)
    if unknown:
        raise CaptionError(text, unknown)
    t = " ".join(text.lower().replace(",", " ").split())
    rel = next((r for r, words in RELATIONS.items() if f" {words} " in t), None)
    parts = t.split(f" {RELATIONS[rel]} ") if rel else t.split(" and ")
    objects, size = [], None
    for part in parts:
        m = re.fullmatch(_OBJ, part.strip())
        if not m or m.group(3) not in COLORS or _SINGULAR.get(m.group(4), m.group(4)) not in SHAPES:
            raise CaptionError(text)
        n = _NUMBERS[m.group(1)]
        size = m.group(2) or size
        objects.append((m.group(3), _SINGULAR.get(m.group(4), m.group(4)), n))
    if rel and len(objects) != 2:
        raise CaptionError(text, why="a relation needs exactly two objects")
    category = (
        "position"
        if rel
        else "single"
        if len(objects) == 1 and objects[0][2] == 1
        else ("counting" if len(objects) == 1 else "two_object")
    )
    return PromptSpec(category, tuple(objects), rel, size if len(objects) == 1 else None)


def _relation_ok(a: Detection, b: Detection, relation: str) -> bool:
    dx, dy = b.cx - a.cx, b.cy - a.cy  # image y grows downwards
    along, across = {"left": (dx, dy), "right": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along > 0 and abs(across) <= RELATION_CONE * along


def evaluate(image: np.ndarray, spec: PromptSpec | str) -> dict:
    """Per-aspect verdict of `image` for `spec` and overall `pass` (every aspect holds).

    objects: every named shape is present; colors: every named colour-shape pair is present (attribute
    binding); count: each named object appears exactly as often as asked and nothing else is in the image;
    position: the named relation holds between the two objects; size: the named size (single objects).
    """
    if isinstance(spec, str):
        spec = parse_caption(spec)
    dets = detect(image)
    aspects = {
        "objects": all(any(d.shape == s for d in dets) for _, s, _ in spec.objects),
        "colors": all(any(d.shape == s and d.color == c for d in dets) for c, s, _ in spec.objects),
        "count": all(sum(d.shape == s and d.color == c for d in dets) == n for c, s, n in spec.objects)
        and len(dets) == sum(n for _, _, n in spec.objects),
    }
    if spec.relation is not None:
        (ca, sa, _), (cb, sb, _) = spec.objects
        a = [d for d in dets if d.color == ca and d.shape == sa]
        b = [d for d in dets if d.color == cb and d.shape == sb]
        aspects["position"] = len(a) == 1 and len(b) == 1 and _relation_ok(a[0], b[0], spec.relation)
    if spec.size is not None:
        c, s, _ = spec.objects[0]
        aspects["size"] = any(d.color == c and d.shape == s and d.size == spec.size for d in dets)
    return {"pass": all(aspects.values()), "aspects": aspects, "detections": [asdict(d) for d in dets]}


def evaluate_prompt(image: np.ndarray, prompt: str) -> dict:
    """`evaluate` for a caption. A prompt outside the grammar gets no verdict, with why: `{"pass": None, "aspects":
    {}, "error": ..., "why": ..., "unknown_words": [...], "knows": ...}` (`why` in a few words, the unknown words,
    and what the toy world knows, `scene.describe_vocabulary()`)."""
    try:
        spec = parse_caption(prompt)
    except CaptionError as err:
        return {"pass": None, "aspects": {}, "error": str(err), "why": err.why, "unknown_words": list(err.unknown),
                "knows": scene.describe_vocabulary()}  # fmt: skip
    return evaluate(image, spec)
