"""A second, independently written reader of toy-world images, for auditing the exact evaluator.

It shares no code with `evaluator.py` beyond the world's definitions (palette, shapes, sizes, relations):
foreground by colour saturation instead of distance from the background, 4-connected components instead of
8-connected, colour by the mean hue of the component's saturated core instead of the nearest palette colour to
the median pixel, and shape from geometric measurements (vertical asymmetry, solidity against the convex hull,
area over the squared farthest reach from the centre, fill of the bounding box) instead of template overlap.
Where the two readers disagree, one of them is wrong: `audit` collects those cases for a person to look at.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from date_diffusion.toyworld.scene import COLORS, SIZES, PromptSpec

SATURATION = 0.3  # foreground: HSV saturation above this (the background is grey, saturation 0)
CORE_SATURATION = 0.55
MIN_PIXELS = 12
# A relation holds inside the renderer's cone (|across| <= 0.6 |along|, scene._relation_holds) widened by the
# error of reading centres from pixels: on 3000 rendered position scenes the largest ratio read was 0.70.
CONE = 0.75
_HUES = {name: colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))[0] for name, rgb in COLORS.items()}
_SIZE_SPLIT = SIZES["small"] + SIZES["big"]  # px: extents below the mean of the two diameters are small


@dataclass
class Reading:
    color: str
    shape: str
    size: str
    cx: float
    cy: float
    pixels: int
    fill: float
    solidity: float
    asymmetry: float


def _hsv(image: np.ndarray) -> np.ndarray:
    rgb = image[..., :3].astype(np.float64) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0.0)
    hue = np.zeros_like(mx)
    d = np.maximum(mx - mn, 1e-9)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    return np.stack([hue, sat, mx], -1)


def _color(hues: np.ndarray) -> str:
    angle = np.angle(np.exp(2j * np.pi * hues).mean()) / (2 * np.pi) % 1.0  # circular mean
    return min(_HUES, key=lambda n: min(abs(angle - _HUES[n]), 1 - abs(angle - _HUES[n])))


def _shape(mask: np.ndarray) -> tuple[str, float, float, float]:
    ys, xs = np.nonzero(mask)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    fill = len(ys) / float(h * w)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    solidity = len(ys) / ConvexHull(corners).volume
    asymmetry = (ys.mean() - (ys.min() + ys.max()) / 2) / h  # > 0: mass low in the box (an upright triangle)
    reach = np.hypot(ys - ys.mean(), xs - xs.mean()).max() + 0.5
    compact = len(ys) / reach**2  # area over the squared farthest reach: disc pi, square 2
    # thresholds between the ranges measured on renders (see docs/evaluator-audit.md)
    if asymmetry > 0.07:
        shape = "triangle"
    elif solidity < 0.87:
        shape = "cross"
    elif compact > 2.45:
        shape = "circle"
    elif fill < 0.7:
        shape = "cross"
    else:
        shape = "square"
    return shape, fill, solidity, asymmetry


def read(image: np.ndarray) -> list[Reading]:
    """The objects of a 64x64 HxWx3 uint8 toy-world image."""
    hsv = _hsv(np.asarray(image))
    labels, n = ndimage.label(hsv[..., 1] > SATURATION)  # 4-connected
    out = []
    for k in range(1, n + 1):
        mask = labels == k
        if mask.sum() < MIN_PIXELS:
            continue
        core = mask & (hsv[..., 1] > CORE_SATURATION)
        color = _color(hsv[..., 0][core if core.any() else mask])
        shape, fill, solidity, asym = _shape(mask)
        ys, xs = np.nonzero(mask)
        extent = max(np.ptp(ys), np.ptp(xs)) + 1
        size = "big" if extent >= _SIZE_SPLIT else "small"
        out.append(Reading(color, shape, size, xs.mean(), ys.mean(), int(mask.sum()), fill, solidity, asym))
    return out


def _relation(a: Reading, b: Reading, relation: str) -> bool:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    along, across = {"left": (dx, dy), "right": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along > 0 and abs(across) <= CONE * along


def verdict(image: np.ndarray, spec: PromptSpec) -> bool:
    """Whether the image shows exactly what the spec asks (objects, colours, counts, relation, size)."""
    objs = read(image)
    want = {(c, s): n for c, s, n in spec.objects}
    have: dict[tuple[str, str], int] = {}
    for o in objs:
        have[(o.color, o.shape)] = have.get((o.color, o.shape), 0) + 1
    if have != want:
        return False
    if spec.relation is not None:
        (ca, sa, _), (cb, sb, _) = spec.objects
        a = next(o for o in objs if (o.color, o.shape) == (ca, sa))
        b = next(o for o in objs if (o.color, o.shape) == (cb, sb))
        if not _relation(a, b, spec.relation):
            return False
    if spec.size is not None and objs[0].size != spec.size:
        return False
    return True


def _match(a_objs, b_objs, radius: float = 4.0):
    """Pairs of objects of two readings whose centres are within `radius` px (greedy, nearest first)."""
    pairs = sorted(
        ((np.hypot(a.cx - b.cx, a.cy - b.cy), i, j) for i, a in enumerate(a_objs) for j, b in enumerate(b_objs)),
        key=lambda p: p[0],
    )
    used_a, used_b, out = set(), set(), []
    for d, i, j in pairs:
        if d <= radius and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j))
    return out, [i for i in range(len(a_objs)) if i not in used_a], [j for j in range(len(b_objs)) if j not in used_b]


_AGREEMENT = {(True, True): "both pass", (False, False): "both fail", (True, False): "evaluator only"}
_AGREEMENT[False, True] = "reader only"


def audit(cases, detect, evaluate) -> dict:
    """Compare the exact evaluator with this reader on `cases` (image uint8, PromptSpec, label) pairs.

    `detect(image) -> detections` and `evaluate(image, spec) -> {"pass": ...}` are the evaluator's functions.
    Returns the shape and colour confusion tables of objects both readers found at one place (evaluator, reader),
    objects only one of them found, the verdict agreement table, and every disagreement (label, what differs)."""
    shape_conf: dict[str, int] = {}
    color_conf: dict[str, int] = {}
    verdicts = {"both pass": 0, "both fail": 0, "evaluator only": 0, "reader only": 0}
    unmatched = {"evaluator only": 0, "reader only": 0}
    disagreements = []
    for image, spec, label in cases:
        ours, theirs = detect(image), read(image)
        pairs, only_a, only_b = _match(ours, theirs)
        unmatched["evaluator only"] += len(only_a)
        unmatched["reader only"] += len(only_b)
        notes = []
        for i, j in pairs:
            a, b = ours[i], theirs[j]
            key = f"{a.shape} -> {b.shape}"
            shape_conf[key] = shape_conf.get(key, 0) + 1
            ckey = f"{a.color} -> {b.color}"
            color_conf[ckey] = color_conf.get(ckey, 0) + 1
            if (a.shape, a.color) != (b.shape, b.color):
                notes.append(f"object at ({a.cx:.0f},{a.cy:.0f}): {a.color} {a.shape} vs {b.color} {b.shape}")
        notes += [f"only the evaluator sees {ours[i].color} {ours[i].shape}" for i in only_a]
        notes += [f"only the reader sees {theirs[j].color} {theirs[j].shape}" for j in only_b]
        v1, v2 = bool(evaluate(image, spec)["pass"]), verdict(image, spec)
        verdicts[
            {(1, 1): "both pass", (0, 0): "both fail", (1, 0): "evaluator only", (0, 1): "reader only"}[v1, v2]
        ] += 1
        if v1 != v2 or notes:
            disagreements.append(
                {"label": label, "caption": spec.caption, "evaluator": v1, "reader": v2, "notes": notes}
            )
    return {
        "images": len(cases),
        "verdicts": verdicts,
        "shape_confusion": dict(sorted(shape_conf.items())),
        "color_confusion": {k: v for k, v in sorted(color_conf.items()) if k.split(" -> ")[0] != k.split(" -> ")[1]},
        "unmatched_objects": unmatched,
        "disagreements": disagreements,
    }
