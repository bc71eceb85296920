"""Writing results so that nothing is lost: atomic writes, names that never replace a file, PNG provenance.

Every image the package writes carries its settings in PNG text chunks: `parameters` in the plain-text format
other Stable Diffusion tools read (prompt, `Negative prompt:`, then `Key: value` pairs), and `date-diffusion`
with the full JSON record. A video (a list of frames) is written as an animated WebP through Pillow (lossless, at
its frame rate), the same two texts in its XMP packet. One writer knows both (`media_bytes`, `save_media`), and
`read_png_metadata` gets the texts back from either.
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
VIDEO_SUFFIX = ".webp"
_XMP_NS = "urn:date-diffusion:record"


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success rename it to `path`, on any error remove it. A reader
    never sees a half-written file, and a killed writer leaves only a hidden `.NAME.PID.tmp` behind. A `path` that
    is a device, pipe or socket (`/dev/null`) is refused (`ValueError`): the rename would replace it."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        from date_diffusion.schemas import what_is

        raise ValueError(f"{str(path)!r} is {what_is(path)}, which a file written there would replace; give a "
                         "regular file's name")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # as a plainly created file (some writers create theirs private)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plain_mode(*paths) -> None:
    """Each file (a folder: every file inside it) gets the mode a plainly created file has under the umask:
    safetensors writes its files private (0600), whatever the umask, through `save_file` and every library's
    `save_pretrained`."""
    for path in map(Path, paths):
        for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            os.chmod(file, 0o666 & ~_UMASK)


def save_tensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """`safetensors.torch.save_file`, the file with the umask's mode (`plain_mode`)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    plain_mode(path)


def save_pretrained(model, folder) -> None:
    """`model.save_pretrained(folder)` (a diffusers or transformers model, a tokenizer, a pipeline), its files
    with the umask's mode (`plain_mode`)."""
    model.save_pretrained(folder)
    plain_mode(folder)


def _special_entry(folder: Path) -> Path | None:
    """The first entry of `folder` (not below it) that is neither a file nor a folder (a FIFO, a device, a socket),
    or None; None too for a folder that is not there or not readable."""
    try:
        return next((p for p in Path(folder).iterdir() if p.exists() and not p.is_file() and not p.is_dir()), None)
    except OSError:
        return None


def unwritable(path, folder: bool = False) -> str | None:
    """Why `path` (a file, or with `folder` a folder) cannot be written, or None: an entry of the other type is in the
    way, or the nearest existing folder above it is not writable. Nothing is created."""
    path = Path(path).absolute()
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > 255:  # what Linux, macOS and Windows file systems take
        return "a name in it is longer than file systems take (255 bytes a name); give a shorter path"
    size = len(os.fsencode(str(path)))
    if size > 4000:  # the whole path, below Linux's 4096 with room for the names written inside
        return f"the path is {size:,} bytes, longer than file systems take (4,000); give a shorter path"
    for link in (path, *path.parents):  # a symbolic link that leads nowhere: nothing can be made through it
        if link.is_symlink() and not link.exists():
            try:
                Path(link).resolve(strict=False)  # a loop raises
                what = f"a symbolic link to {os.readlink(link)!r}, which is missing"
            except (OSError, RuntimeError):
                what = "a symbolic link loop"
            return f"{str(link)!r} is {what}; point it to a folder or give another path"
    from date_diffusion.schemas import what_is

    if path.is_dir() if not folder else path.exists() and not path.is_dir():
        return f"it is {what_is(path)}; give a new name"
    if not folder and path.exists() and not path.is_file():  # written by replacing it: the device itself would go
        return f"it is {what_is(path)}, which a file written here would replace; give a regular file's name"
    special = _special_entry(path) if folder else None
    if special is not None:  # an output of that name (`--overwrite`) would replace it
        return (
            f"it holds {special.name!r}, {what_is(special)}, which an output file of that name would replace; "
            "move it out, or give another folder"
        )
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{str(parent)!r} is not a writable folder"
    return None


def overwrite_blocker(paths) -> Path | None:
    """The first of `paths` (the names an `--overwrite` replaces) that is there and is not a file (a folder, a
    device, a pipe, a socket): replacing it would fail, or destroy it, only once the work is done. None if none."""
    return next((Path(p) for p in paths if Path(p).exists() and not Path(p).is_file()), None)


EMBEDDINGS_FORMATS = "date-diffusion/embeddings/"  # how every saved-embeddings file's `format` begins


def saved_embeddings(path) -> bool:
    """Whether the .safetensors file at `path` is one `--save-embeddings` (or the page) wrote: its metadata's
    `format` (read from its header; an unreadable file is not)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            return str((f.metadata() or {}).get("format", "")).startswith(EMBEDDINGS_FORMATS)
    except (OSError, SafetensorError):
        return False


def package_output(path) -> bool:
    """Whether the file at `path` is one this package writes beside an image (an earlier group's member that
    `--overwrite` may remove): an image or video carrying a date-diffusion record, a JSON record of one, or a
    saved-embeddings file. A user's file that only has such a name is not, nor a link (the package writes none:
    replacing a link would drop the user's link, whatever it points to)."""
    path = Path(path)
    if path.is_symlink():
        return False
    try:
        if path.suffix == ".json":
            from date_diffusion.schemas import loads, read_small_text

            record = loads(read_small_text(path))
            if not isinstance(record, dict) or "prompt" not in record:
                return False  # generate's record states its version; an edit's (of earlier versions too) its editor
            return "date_diffusion_version" in record or {"editor", "source_prompt", "target_prompt"} <= set(record)
        if path.suffix == ".safetensors":
            return saved_embeddings(path)
        return read_png_metadata(path)["record"] is not None
    except Exception:  # noqa: BLE001  (unreadable, damaged, another program's: not ours)
        return False


def not_new_folder(folder, own=(), what: str = "") -> str | None:
    """Why `folder`, which a command fills from the start (a training run), is not new: it holds visible entries
    other than `own` (a bench run, a model, a user's files), which the command would write beside; None when it is
    absent or holds only those."""
    folder = Path(folder)
    entries = folder.iterdir() if folder.is_dir() else ()
    others = sorted(p.name for p in entries if p.name not in own and not p.name.startswith("."))
    if not others:
        return None
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return f"--out {str(folder)!r} holds other files ({shown}) and is no {what} folder: give a new or empty folder"


def check_reader() -> None:
    """`BrokenPipeError` when standard output is a pipe whose reader went away (`bench ... | head`): a long command
    that writes its results only at the end (bench's tables) checks between batches, so that its reader leaving ends
    it as a write to that pipe would (exit code 141), never after all its work. Nothing else is written or read."""
    import select
    import stat
    import sys

    try:
        fd = sys.__stdout__.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        poller = select.poll()
        poller.register(fd, select.POLLOUT)  # the end a reader closed reports POLLERR
        gone = any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no standard output, or no poll here: nothing to tell
        return
    if gone:
        raise BrokenPipeError("the reader of standard output went away")


def atomic_write(path: Path, data: str | bytes) -> None:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def file_group(replaces=(), own_only: bool = False):
    """Files that belong together (an image, its record, its fixed twin, its grid): each is written to a hidden
    staging name (`group.write(path, data)`, or `group.path(path)` for a writer of its own), and once all are written
    they are renamed in the order given, the last one (the record) marking the group complete. On any error or
    interrupt none of them appears: staged files are removed, and so are those already renamed. `replaces`: the
    names of an earlier group this one replaces (`--overwrite`); those it does not write again are removed once it
    is complete, so no member of the earlier group stays beside the new one. `own_only`: a name that holds, when the
    group is complete, anything but an earlier output of the package (`package_output`: a user's file or link put
    there while the command ran) is kept, and the group is not written (`OutputTaken`)."""
    group = _FileGroup()
    done = []
    try:
        yield group
        for path in [path for _, path in group.staged] + [Path(p) for p in replaces] if own_only else ():
            if os.path.lexists(path) and not package_output(path):
                raise OutputTaken(
                    f"{path} was taken by a file or link of another program while this command ran: "
                    "it is kept, and this image's files are not written; move it and run again"
                )
        for tmp, path in group.staged:
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
            done.append(path)
        written = set(done)
        done = []
        for path in map(Path, replaces):
            if path not in written and path.is_file():
                path.unlink()
    finally:
        for tmp, _ in group.staged:
            tmp.unlink(missing_ok=True)
        for path in done:  # a group renamed only in part (interrupted between renames)
            path.unlink(missing_ok=True)


class OutputTaken(FileExistsError):
    """An output's name taken while the command ran by what the package did not write (`file_group(own_only=True)`)."""


class _FileGroup:
    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []

    def path(self, path) -> Path:
        """The staging name of `path`, to be written by the caller."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.staged")
        self.staged.append((tmp, path))
        return tmp

    def write(self, path, data: str | bytes) -> None:
        atomic_write(self.path(path), data)


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
        if any(os.path.lexists(folder / f"{name}{s}") for s in suffixes):
            continue
        claim = folder / f".{name}.claim"
        try:
            claim.open("x").close()
        except FileExistsError:
            continue
        if any(os.path.lexists(folder / f"{name}{s}") for s in suffixes):  # written between the check and the claim
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
    lines.append(", ".join(f"{k}: {_plain(v)}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def _plain(value) -> str:
    """A value as the `parameters` text writes it: a number as its plain float or int (a number that keeps its typed
    spelling for messages, `--cfg-tar 7`, is written `7.0`, as the record read back from JSON gives it, so that
    `info` finds the text the record's), anything else as `str`."""
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    if isinstance(value, list):
        return f"[{', '.join(_plain(v) for v in value)}]"
    return str(value)


def pixels_digest(image_uint8: np.ndarray) -> str:
    """The fingerprint of an image's pixels (RGB, as read back from its PNG)."""
    import hashlib

    array = np.ascontiguousarray(image_uint8, dtype=np.uint8)
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:20]


def shown_digest(image: Image.Image) -> str:
    """The fingerprint of the pixels an image shows (`pixels_digest`): its RGB, with its alpha where any pixel is
    not opaque (the images the package writes have none, so a copy made transparent is told apart)."""
    rgba = np.asarray(image.convert("RGBA"))
    return pixels_digest(rgba if (rgba[..., 3] < 255).any() else rgba[..., :3])


SEAL_KEYS = ("pixels", "sealed")  # what a file's record carries about itself, beside the record written


def sealed_record(record: dict, image: Image.Image | None) -> dict:
    """`record` as an image's file carries it: with the fingerprint of the image's pixels (`pixels`; none for a
    video) and its seal (`sealed`, over every other field), so that a reader (`read_png_metadata`) tells a record
    or an image changed since apart from the one written."""
    from date_diffusion.schemas import sealed

    carried = {k: v for k, v in record.items() if k not in SEAL_KEYS}
    if image is not None:
        carried["pixels"] = shown_digest(image)
    carried["sealed"] = sealed(carried)
    return carried


def png_bytes(image, record: dict | None = None) -> bytes:
    """A PIL image (or uint8 HxWx3 array) as PNG bytes, with `record` in its text chunks (sealed with the image's
    pixels: `sealed_record`)."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    elif image.info:  # a source file's colour profile, transparency or gamma (`open_rgb` keeps them): never written,
        image = image.copy()  # the PNG is its pixels and its record alone (`png_layout_problem`)
        image.info = {}
    info = None
    if record is not None:
        record = sealed_record(record, image)
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_PARAMETERS_KEY, parameters_text(record))
        info.add_text(PNG_RECORD_KEY, json.dumps(record))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: Path, image, record: dict | None = None) -> Path:
    atomic_write(Path(path), png_bytes(image, record))
    return Path(path)


def is_video(media) -> bool:
    """Whether `media` is a video: a list of frames (PIL images), as the video pipelines' `frames[k]`."""
    return isinstance(media, (list, tuple))


def media_suffix(media) -> str:
    """The file suffix `media_bytes` writes `media` with: `.png` for an image, `.webp` for a video."""
    return suffix_for(video=is_video(media))


def suffix_for(video: bool) -> str:
    """The file suffix of a video (`VIDEO_SUFFIX`) or of an image (`.png`), as `media_bytes` writes them."""
    return VIDEO_SUFFIX if video else ".png"


def media_bytes(media, record: dict | None = None, fps: int | None = None) -> bytes:
    """An image as PNG bytes (`png_bytes`), or a video (a list of frames) as a lossless animated WebP at `fps`
    frames per second (the record's `fps`, else 16), looping, with `record` in its XMP packet."""
    if not is_video(media):
        return png_bytes(media, record)
    frames = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in media]
    fps = fps or (record or {}).get("fps") or 16
    extra = {} if record is None else {"xmp": _xmp_packet(sealed_record(record, None))}
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0,
                   lossless=True, **extra)  # fmt: skip
    return buf.getvalue()


def save_media(path: Path, media, record: dict | None = None, fps: int | None = None) -> Path:
    """`media` (an image or a video) written atomically at `path` with its record (`media_bytes`)."""
    atomic_write(Path(path), media_bytes(media, record, fps))
    return Path(path)


def _xmp_packet(record: dict) -> bytes:
    """An XMP packet holding `parameters_text(record)` and the JSON record (XML-escaped)."""
    from xml.sax.saxutils import escape

    rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    return (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{rdf}"><rdf:Description xmlns:dd="{_XMP_NS}">'
        f"<dd:{PNG_PARAMETERS_KEY}>{escape(parameters_text(record))}</dd:{PNG_PARAMETERS_KEY}>"
        f"<dd:record>{escape(json.dumps(record))}</dd:record></rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def _xmp_texts(xmp) -> dict:
    """{"parameters": ..., "date-diffusion": ...} from an XMP packet `_xmp_packet` wrote ({} for another's)."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(xmp if isinstance(xmp, (bytes, str)) else bytes(xmp))
    except ElementTree.ParseError:
        return {}
    texts = {}
    for name, key in ((PNG_PARAMETERS_KEY, PNG_PARAMETERS_KEY), ("record", PNG_RECORD_KEY)):
        node = root.find(f".//{{{_XMP_NS}}}{name}")
        if node is not None and node.text:
            texts[key] = node.text
    return texts


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first bytes of every PNG file


_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# every chunk `png_bytes` writes, and no other: its texts as Pillow's `add_text` writes them (tEXt, or iTXt for a
# text outside Latin-1: a prompt with `’` or `猫`)
PNG_CHUNKS_WRITTEN = (b"IHDR", b"tEXt", b"iTXt", b"IDAT", b"IEND")


def _png_chunks(f):
    """Each chunk of the PNG open in `f` (read past its signature) as (type, text key or None), in file order, up to
    and including IEND (where `f` is left); reads the chunk headers and text keys only."""
    import struct

    while len(header := f.read(8)) == 8:
        length, kind = struct.unpack(">I4s", header)
        key = None
        if kind in _TEXT_CHUNKS:
            key = f.read(min(length, 80)).split(b"\0", 1)[0].decode("latin-1")
            f.seek(length - min(length, 80) + 4, 1)
        else:
            f.seek(length + 4, 1)
        yield kind, key
        if kind == b"IEND":
            return


def _text_keys(path) -> list[str]:
    """The keys of a PNG's text chunks (tEXt, zTXt, iTXt), in file order, each as often as it stands (Pillow's
    `text` keeps one per key); [] for a file that is no PNG."""
    with open(path, "rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return []
        return [key for kind, key in _png_chunks(f) if kind in _TEXT_CHUNKS]


def parameters_changed(text: str | None, record: dict) -> bool:
    """Whether a PNG's `parameters` text (None: it has none) is not the one `png_bytes` writes for `record` (the
    record as a file holds it, numbers as written: compared as the values they state)."""
    from date_diffusion.schemas import plain_numbers

    return text != parameters_text(plain_numbers(record))


def png_layout_problem(data) -> str | None:
    """Why the PNG `data` is not laid out as `png_bytes` writes one, or None: a chunk it never writes (an animation's
    `acTL`/`fdAT`, a gamma or colour profile that changes what a viewer shows, a text of another program), a text
    given twice, or bytes after its end. (A run's image is what its pixels show and nothing else: a viewer that
    reads such a chunk would show another picture than the one verified, an export would hand the chunk on.)
    `data`: the file's bytes, or its path (its chunk headers read, never the whole file)."""
    with io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb") as f:
        return _layout_problem(f, f.seek(0, os.SEEK_END) + f.seek(0))


def _layout_problem(f, size: int) -> str | None:
    if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:  # no PNG at all: the format's own check names it
        return None
    keys, last = [], None
    for kind, key in _png_chunks(f):
        last = kind
        name = kind.decode("latin-1", "replace")
        if kind not in PNG_CHUNKS_WRITTEN:
            what = " (an animation)" if kind in (b"acTL", b"fcTL", b"fdAT") else ""
            return f"it holds a chunk {name!r}{what}, which date-diffusion never writes"
        if key is not None and (key not in (PNG_RECORD_KEY, PNG_PARAMETERS_KEY) or key in keys):
            return f"it holds a text {key!r}{' twice' if key in keys else ''}, which date-diffusion never writes"
        if key is not None:
            keys.append(key)
    if last != b"IEND":
        return "it ends before its last chunk (IEND): cut short"
    if f.tell() != size:
        return f"{size - f.tell()} bytes follow its end (IEND), which date-diffusion never writes"
    return None


def read_png_metadata(path) -> dict:
    """`{"parameters": text or None, "record": dict or None, "size": (width, height), "sealed": bool}` of a PNG, or
    of a video `media_bytes` wrote (its XMP packet); ValueError naming the file otherwise. A record that carries a
    seal (`sealed_record`) is checked against it and against the image's pixels: one changed since it was written,
    or an image whose pixels were, is a `SchemaError`; the record is returned without the seal's fields."""
    try:
        with Image.open(path) as img:
            img.load()
            size = img.size
            text = dict(getattr(img, "text", {}) or {})
            if img.format == "WEBP" and img.info.get("xmp"):
                text = _xmp_texts(img.info["xmp"])
            # the pixels' fingerprint, where a record may carry one to check it against (never a video's)
            pixels = shown_digest(img) if PNG_RECORD_KEY in text and img.format != "WEBP" else None
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as err:
        beside = [Path(path).with_suffix(ext) for ext in (".png", ".webp")] if Path(path).suffix == ".json" else []
        image = next((p for p in beside if p.is_file()), None)
        if image is not None and package_output(path):  # the record generate and edit write beside an image
            raise ValueError(f"{path} is the record date-diffusion writes beside the image {str(image)!r}: give the "
                             f"image (its record is checked against its pixels there)") from err  # fmt: skip
        raise ValueError(f"{path} is not a readable image ({err})") from err
    except ValueError as err:  # Pillow's bound on text chunks (a decompression bomb) and other refusals
        raise ValueError(f"{path}: Pillow refuses its text ({err}); it was not written by date-diffusion") from err
    from date_diffusion.schemas import PNG_RECORD, SchemaError, UnreadableJSONError, check_png_record, loads

    twice = [key for key in (PNG_RECORD_KEY, PNG_PARAMETERS_KEY) if _text_keys(path).count(key) > 1]
    if twice:  # Pillow keeps the last of two: which one a reader sees would be the file's order, never said
        raise SchemaError(f"{path} holds its {twice[0]!r} text twice (another program added one); "
                          f"{PNG_RECORD.fix}")  # fmt: skip
    record = text.get(PNG_RECORD_KEY)
    if record:
        try:
            record = loads(record)
        except json.JSONDecodeError as err:  # `loads`: also JSON nested beyond any record, a number too long
            why = str(err) if isinstance(err, UnreadableJSONError) else f"not JSON ({err})"
            raise SchemaError(f"{path} is not a valid {PNG_RECORD.what}: {why}; {PNG_RECORD.fix}") from err
        check_seal(record, pixels, path)
        check_png_record(record, path)
    seal = isinstance(record, dict) and "sealed" in record
    if seal:
        record = {k: v for k, v in record.items() if k not in SEAL_KEYS}
    return {"parameters": text.get(PNG_PARAMETERS_KEY), "record": record or None, "size": size, "sealed": seal}


def check_seal(record, pixels: str | None, path) -> None:
    """A sealed record (`sealed_record`) is the one written, over the pixels written (`pixels`: the image's
    fingerprint, None for a video): `SchemaError` naming what changed otherwise. An unsealed record passes."""
    from date_diffusion.schemas import PNG_RECORD, SchemaError, sealed

    if not isinstance(record, dict) or "sealed" not in record:
        return
    if record["sealed"] != sealed(record):
        raise SchemaError(f"{path}: its record was changed since it was written (its seal no longer matches: a "
                          f"setting edited by another program); {PNG_RECORD.fix}")  # fmt: skip
    if pixels is not None and record.get("pixels") not in (None, pixels):
        raise SchemaError(f"{path}: its pixels were changed since its record was written (the image edited, or "
                          "replaced keeping the record): its settings are not this image's")  # fmt: skip


def transparent_share(path) -> float:
    """The share of an image's pixels that are not fully opaque (0 for an image without transparency): what
    `open_rgb` drops with the alpha channel, showing the colours stored under it."""
    with Image.open(path) as img:
        if "A" not in img.getbands() and "transparency" not in img.info:
            return 0.0
        alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    return float((alpha < 255).mean()) if alpha.size else 0.0


def open_rgb(path) -> Image.Image:
    """An image file as 8-bit RGB, upright, whatever its mode and bit depth: 16-bit and 32-bit grayscale are scaled
    to 8 bits (Pillow's own conversion clips them to white); float images are read as 0..1, or as 0..255 or
    0..65535 when their values go beyond 1 or 255; alpha is dropped; a photo's EXIF orientation is applied (as every
    viewer shows it)."""
    from PIL import ImageOps

    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I") or img.mode == "F":
            levels = np.asarray(img, dtype=np.float64)
            top = float(np.nanmax(levels)) if levels.size else 0.0
            if img.mode == "F":
                peak = 1.0 if top <= 1 else 255.0 if top <= 255 else 65535.0
            else:
                peak = 65535.0 if img.mode.startswith("I;16") or top > 255 else 255.0
            scaled = np.nan_to_num(levels / peak * 255, nan=0.0)
            return Image.fromarray(scaled.round().clip(0, 255).astype(np.uint8)).convert("RGB")
        return img.convert("RGB")
