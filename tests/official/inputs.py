"""Inputs shared by `scripts/record_official.py` (run beside the official code) and the tests that read its records.

Everything here is made from integers, so the recorder (its own torch and numpy) and the tests rebuild the very
same weights, images and prompts without storing them: weights of any OpenCLIP state dict from its key names and
shapes and a seed (`hashed_state`), test images of any size (`make_image`). Imports only numpy and torch.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

# A small OpenCLIP ViT in open_clip's config format: input 224 (the real models' size, so resize and pad sizes
# are the real ones), 2 heads a tower (head width 64), CLIP's full vocabulary (the real tokenizer's ids).
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}

# Prompts that OpenCLIP's text cleaning (ftfy, HTML unescaping twice, whitespace) changes, and plain ones.
HARD_PROMPTS = [
    "a photo of a cat",
    "A RED Car   parked\tnear  the\nsea",
    "the cat\u2019s \u201cfavourite\u201d hat",
    "salt &amp; pepper on a plate",
    "a sign reading &lt;open&gt; &amp;amp; closed",
    "&quot;quoted&quot; text and it&#39;s fine",
    "a \ufb01sh and a \ufb02ower in the \ufb01eld",
    "\uff21 \uff42\uff4c\uff55\uff45 \uff43\uff41\uff54 \uff4f\uff4e \uff41 mat",
    "caf\u00c3\u00a9 cr\u00c3\u00a8me br\u00c3\u00bbl\u00c3\u00a9e",
    "a\u00a0dog\u2003under a\u2009tree",
    "na\u00efve caf\u00e9 in Z\u00fcrich",
    "a \U0001f431 on a sofa, 3 cats and 12 dogs",
    "\u4e00\u53ea\u732b and a dog",
    "it's the dog's ball, isn't it? we'll see",
    " ".join(["a very long prompt about a red house with a green door"] * 8),
]
# A second set, never recorded in the tests' data: for checking again on inputs the code was not fitted to.
FRESH_PROMPTS = [
    "two \u201cvintage\u201d cars &amp; a bicycle",
    "the museum\u2019s &lt;main&gt; hall at night",
    "\uff53\uff55\uff4e\uff53\uff45\uff54 over the \ufb01ords",
    "a bowl of ramen   with\t\tan egg",
    "cr\u00c3\u00a8me de la cr\u00c3\u00a8me &amp;amp; friends",
    "A Portrait Of An Old Man, Oil On Canvas",
]

# (height, width) of the recorded test images: square, landscape, portrait, odd sizes, SDXL's 1216 x 832 and one
# smaller than the model's input (an upscale).
SHAPES = [(512, 512), (480, 640), (640, 480), (333, 500), (832, 1216), (96, 128)]
FRESH_SHAPES = [(768, 768), (576, 1024), (1024, 576), (405, 720), (1216, 832)]

_M1, _M2, _M3 = 0x45D9F3B, 0x27D4EB2F, 0x165667B1  # odd multipliers below 2**31: int64 products never overflow


def _hash(index: torch.Tensor, salt: int) -> torch.Tensor:
    """32-bit integer hash of each int64 `index` (a few multiply-xorshift rounds), exact in int64 arithmetic."""
    mask = 0xFFFFFFFF
    x = (index * _M1 + salt) & mask
    x = ((x ^ (x >> 16)) * _M2) & mask
    x = ((x ^ (x >> 15)) * _M3) & mask
    return x ^ (x >> 16)


def hashed_tensor(key: str, shape, seed: int) -> torch.Tensor:
    """Uniform values in [-0.5, 0.5) for one tensor, from its name, shape and `seed` alone (float64)."""
    n = math.prod(shape)
    salt = zlib.crc32(f"{seed}:{key}".encode()) & 0x7FFFFFFF
    return (_hash(torch.arange(n, dtype=torch.int64), salt).double() / 2**32 - 0.5).reshape(tuple(shape))


def hashed_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Random-looking float32 weights of an OpenCLIP state dict with these key shapes, every value a float16 value
    (so a float16 file of them holds them exactly). Scales: matrices ~1/sqrt(fan in), embeddings 0.2, layer norm
    weights about 1, biases about 0.05, logit scale log(100)."""
    out = {}
    for key, shape in sorted(shapes.items()):
        u = hashed_tensor(key, shape, seed)
        if key.endswith("logit_scale"):
            value = torch.full(tuple(shape), math.log(100.0), dtype=torch.float64)
        elif key.rsplit(".", 1)[-1] == "weight" and len(shape) == 1:  # layer norms
            value = 1.0 + 0.4 * u
        elif len(shape) <= 1:  # biases, class embedding
            value = 0.1 * u
        elif "embedding" in key:  # token and positional embeddings
            value = 0.7 * u
        else:
            fan_in = shape[0] if key.endswith(("proj", "text_projection")) else math.prod(shape[1:])
            value = u * (12.0 / fan_in) ** 0.5
        out[key] = value.float().half().float()
    return out


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image (height, width, 3) with gradients, blocks and noise, made from integers alone."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    channels = []
    for c in range(3):
        noise = _hash(torch.from_numpy((y * 4099 + x) * 3 + c), seed * 7919 + 17).numpy() & 63
        gradient = (x * (90 + 40 * c)) // width + (y * (150 - 35 * c)) // height
        blocks = ((x * 7 // width + y * 5 // height + c + seed) % 2) * 40
        channels.append(np.clip(gradient + blocks + noise - 16, 0, 255))
    return np.stack(channels, axis=-1).astype(np.uint8)
