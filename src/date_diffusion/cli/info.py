"""`date-diffusion info IMAGE`: the settings an image was made with, read from its PNG text chunks (a video: its
WebP's XMP packet); for a grid, one block per panel (what its header says)."""

from __future__ import annotations

import json
import sys

# imports inside `run`: see cli/__init__.py


EXAMPLES = """examples:
  date-diffusion info outputs/a-red-circle-s0.png
  date-diffusion info outputs/*.png
  date-diffusion info --json runs/toy/images/date/00000/samples/01000.png"""


def add_parser(sub):
    from date_diffusion.cli.common import HelpFormatter

    p = sub.add_parser(
        "info",
        help="print the settings stored in images written by generate, edit or bench",
        description="Print the settings an image was made with, read from its PNG text chunks (a WebP video's\n"
        "XMP packet): prompt, model, seed, sampling and DATE settings, the reward, DATE's updates and, for a\n"
        "grid, what each panel's header says. Images and videos written by date-diffusion (and in Python by\n"
        "`out.save(path)`) carry them;\n"
        "other tools' A1111-style `parameters` are shown as they are.",
        formatter_class=HelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="one or more PNG images or WebP videos")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per image, nothing else: its `image` path, its full `record`, `sealed` (whether "
        "the record's seal was checked), and, for an image without one, another tool's `parameters` text (null "
        "where absent), e.g. for jq (default: a summary)",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Each image's settings; an image whose settings cannot be shown is one error line, the others are shown all
    the same (`info outputs/*.png` over a folder holding another program's image), and the exit code is then 2."""
    from date_diffusion.cli.common import CLIError
    from date_diffusion.core.text import one_line

    refused = 0
    for path in args.images:  # each once (its kind, `Each(FILE)`, refuses one image given twice)
        try:
            show(path, args.json)
        except CLIError as err:
            sys.stdout.flush()  # the images shown so far come first, in the order given
            print(f"{args.command_prog}: error: {one_line(err)}", file=sys.stderr)
            refused += 1
    return 2 if refused else 0


def show(path, as_json: bool) -> None:
    """One image's settings on stdout (`as_json`: one JSON object), or `CLIError` saying why they cannot be shown."""
    from date_diffusion.cli.common import CLIError
    from date_diffusion.core.text import printable
    from date_diffusion.outputs import parameters_changed, parameters_text, png_layout_problem, read_png_metadata

    try:
        meta = read_png_metadata(path)
    except (ValueError, FileNotFoundError) as err:  # a `SchemaError` (an edited record) is a ValueError
        raise CLIError(str(err)) from err
    if meta["record"] is None and meta["parameters"] is None:
        raise CLIError(f"{path} carries no settings (it was not written by date-diffusion or another SD tool)")
    record = meta["record"] or {}
    made = (record.get("width"), record.get("height"))
    if None not in made and not record.get("panels") and tuple(made) != tuple(meta["size"]):
        width, height = meta["size"]
        raise CLIError(f"{path}: its record is of a {made[0]}x{made[1]} image, and it is {width}x{height} "
                       "(resized or replaced since): its settings are not this image's")  # fmt: skip
    layout = png_layout_problem(path) if meta["record"] is not None else None
    if as_json:  # the output is JSON alone: one object per image (JSON escapes every control character)
        other = meta["parameters"] if meta["record"] is None else None  # never beside the checked record
        shown = {"image": str(path), "record": meta["record"], "parameters": other, "sealed": meta["sealed"],
                 "changed_by_another_program": layout}  # fmt: skip
        print(json.dumps(shown, indent=1))
        return
    if layout:  # an animation, another program's chunk: a viewer may show another picture than the record's
        print(f"date-diffusion info: note: {printable(str(path))}: {layout} (another program changed it since; "
              "its record verifies its pixels alone)", file=sys.stderr)  # fmt: skip
    if meta["record"] is not None and not meta["sealed"]:
        print(f"date-diffusion info: note: {printable(str(path))}: its record carries no seal (an earlier "
              "version wrote it, or another program removed the seal): its settings are shown as written, "
              "unverified", file=sys.stderr)  # fmt: skip
    print(f"== {printable(str(path))}")
    if meta["record"] is not None:  # the settings as the checked record states them, never another text
        shown = parameters_text(meta["record"])
        if meta["parameters"] is not None and parameters_changed(meta["parameters"], meta["record"]):
            print(f"date-diffusion info: note: {printable(str(path))}: its `parameters` text is not what its "
                  "date-diffusion record says (another program changed it); shown from the record",
                  file=sys.stderr)  # fmt: skip
        print(printable(shown, lines=True))
    else:  # another tool's `parameters` text is shown with its line breaks, any other control escaped
        print(printable(meta["parameters"], lines=True))
    for line in summary(meta["record"] or {}):
        print(printable(line))


# the settings the `parameters` line states of DATE (rho, the relative step, the update steps it made)
_STATED = ("rho", "rho_relative", "update_every", "update_steps", "update_intervals")


def settings_lines(record: dict) -> list[str]:
    """What else made the image, beyond the `parameters` line: its LoRAs with their scales, DATE's settings that are
    not the paper's, how the reward decoded (`--reward-decoder`, `--reward-resolution`, `--reward-frames`) and a
    video's frame count: from the summary alone, the image can be made again."""
    from date_diffusion.core.config import DATEConfig

    lines = []
    if isinstance(record.get("replayed_from"), str):  # no update ran: the file's embeddings made the image
        lines.append(f"  replayed from {record['replayed_from']} (its saved embeddings, its steps, guidance and "
                     "scheduler; no DATE update ran)")  # fmt: skip
    loras = [pair for pair in record.get("loras") or [] if isinstance(pair, list) and len(pair) == 2]
    if loras:
        lines.append("  LoRAs: " + ", ".join(f"{path} at scale {scale}" for path, scale in loras))
    date = record.get("date") if record.get("method") != "fixed" else None
    if isinstance(date, dict):
        paper = DATEConfig().to_dict()
        other = [f"{k} {json.dumps(v)}" for k, v in date.items() if k in paper and k not in _STATED and v != paper[k]]
        lines += [f"  DATE, beside the paper's settings: {', '.join(other)}"] if other else []
        ways = (
            ("reward_decoder", "by the decoder {}"),
            ("reward_resolution", "at {} px"),
            ("reward_frames", "{} frames"),
        )
        decoding = [shown.format(record[key]) for key, shown in ways if record.get(key) is not None]
        lines += [f"  the reward decoded approximately: {', '.join(decoding)}"] if decoding else []
    if record.get("num_frames") is not None:
        lines.append(f"  frames: {record['num_frames']}")
    unused = record.get("without_effect")  # settings given that changed nothing: named with their values and why
    for name, entry in unused.items() if isinstance(unused, dict) else ():
        if isinstance(entry, dict):
            lines.append(f"  without effect: {name} {json.dumps(entry.get('value'))} ({entry.get('why')})")
    return lines


def summary(record: dict) -> list[str]:
    """A grid's panels, one block each (method, verdict, reward, distance moved) and the line under them, then
    DATE's updates."""
    from date_diffusion.cli.edit import EDIT_IMAGES
    from date_diffusion.grids import grid_note, header_lines, update_text

    lines = settings_lines(record)
    if "editor" in record and record.get("image") in EDIT_IMAGES:  # one of the images `edit` writes
        lines.append(f"  this image: {EDIT_IMAGES[record['image']]}")
    panels = record.get("panels") or []
    for k, panel in enumerate(panels, 1):
        method, *rest = header_lines(panel)
        lines += [f"  panel {k}: {method}", *(f"    {line}" for line in rest)]
    note = grid_note(panels)
    lines += [f"  under the panels: {note}"] if note else []
    trace = record.get("trace") or {}
    lines += [f"  update at step {u['step']}: {update_text(u)}" for u in trace.get("updates", [])]
    return lines
