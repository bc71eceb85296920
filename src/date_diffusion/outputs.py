"""Writing results so that nothing is lost: atomic writes, names that never replace a file, PNG provenance.

Every image the package writes carries its settings in PNG text chunks: `parameters` in the plain-text format
other Stable Diffusion tools read (prompt, `Negative prompt:`, then `Key: value` pairs), and `date-diffusion`
with the full JSON record. `read_png_metadata` gets both back.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
PNG_RECORD_KEY = "date-diffusion"
PNG_PARAMETERS_KEY = "parameters"


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success rename it to `path`, on any error remove it. A reader
    never sees a half-written file, and a killed writer leaves only a hidden `.NAME.PID.tmp` behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # as a plainly created file (some writers create theirs private)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: Path, data: str | bytes) -> None:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def claimed_stem(folder: Path, stem: str, suffixes: tuple[str, ...], overwrite: bool = False):
    """Yield `stem`, or `stem-2`, `stem-3`, ...: the first name none of whose files (`name + suffix`) exists. The
    name is held by an exclusively created hidden `.name.claim` file while the caller writes, so two processes
    writing into one folder never pick the same name; the claim is removed at the end (a killed process leaves
    only the hidden claim, and the name is then skipped). With `overwrite`, `stem` itself."""
    folder = Path(folder)
    if overwrite:
        yield stem
        return
    k = 1
    while True:
        name = stem if k == 1 else f"{stem}-{k}"
        k += 1
        if any((folder / f"{name}{s}").exists() for s in suffixes):
            continue
        claim = folder / f".{name}.claim"
        try:
            claim.open("x").close()
        except FileExistsError:
            continue
        if any((folder / f"{name}{s}").exists() for s in suffixes):  # written between the check and the claim
            claim.unlink()
            continue
        break
    try:
        yield name
    finally:
        claim.unlink(missing_ok=True)


def parameters_text(record: dict) -> str:
    """The `parameters` chunk: prompt, negative prompt, then settings as `Key: value, ...`."""
    lines = [record.get("prompt", "")]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    date = record.get("date") or {}
    pairs = {
        "Steps": record.get("steps"),
        "Sampler": record.get("scheduler"),
        "CFG scale": record.get("guidance_scale"),
        "Seed": record.get("seed"),
        "Size": f"{record['width']}x{record['height']}" if record.get("width") else None,
        "Model": record.get("model"),
        "DATE": "off" if record.get("method") == "fixed" else ("on" if date else None),
        "DATE rho": date.get("rho") if date.get("rho_relative") is None else None,
        "DATE rho relative": date.get("rho_relative"),
        "DATE update steps": (record.get("trace") or {}).get("update_steps"),
        "DATE reward": record.get("reward") if record.get("method") != "fixed" else None,
    }
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def png_bytes(image, record: dict | None = None) -> bytes:
    """A PIL image (or uint8 HxWx3 array) as PNG bytes, with `record` in its text chunks."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    info = None
    if record is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_PARAMETERS_KEY, parameters_text(record))
        info.add_text(PNG_RECORD_KEY, json.dumps(record))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: Path, image, record: dict | None = None) -> Path:
    atomic_write(Path(path), png_bytes(image, record))
    return Path(path)


def read_png_metadata(path) -> dict:
    """`{"parameters": text or None, "record": dict or None}` of a PNG (ValueError naming the file otherwise)."""
    try:
        with Image.open(path) as img:
            img.load()
            text = dict(getattr(img, "text", {}) or {})
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{path} is not a readable image ({err})") from err
    record = text.get(PNG_RECORD_KEY)
    return {"parameters": text.get(PNG_PARAMETERS_KEY), "record": json.loads(record) if record else None}


def open_rgb(path) -> Image.Image:
    """An image file as 8-bit RGB whatever its mode and bit depth: 16-bit and 32-bit grayscale are scaled to 8 bits
    (Pillow's own conversion clips them to white), float images are read as 0..1, alpha is dropped."""
    with Image.open(path) as img:
        img.load()
        if img.mode.startswith("I"):
            levels = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if img.mode.startswith("I;16") or levels.max() > 255 else 255.0
            return Image.fromarray((levels / peak * 255).round().clip(0, 255).astype(np.uint8)).convert("RGB")
        if img.mode == "F":
            levels = np.asarray(img, dtype=np.float64)
            return Image.fromarray((levels * 255).round().clip(0, 255).astype(np.uint8)).convert("RGB")
        return img.convert("RGB")
