"""`date-diffusion info IMAGE`: the settings an image was made with, read from its PNG text chunks."""

from __future__ import annotations

import json

# imports inside `run`: see cli/__init__.py


def add_parser(sub):
    p = sub.add_parser("info", help="print the settings stored in images written by generate, edit or bench")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print the full JSON record (default: a summary)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from date_diffusion.cli.common import CLIError
    from date_diffusion.outputs import read_png_metadata

    for path in args.images:
        try:
            meta = read_png_metadata(path)
        except (ValueError, FileNotFoundError) as err:
            raise CLIError(str(err)) from err
        if meta["record"] is None and meta["parameters"] is None:
            raise CLIError(f"{path} carries no settings (it was not written by date-diffusion or another SD tool)")
        print(f"== {path}")
        if args.json and meta["record"] is not None:
            print(json.dumps(meta["record"], indent=1))
        else:
            print(meta["parameters"] or json.dumps(meta["record"], indent=1))
            trace = (meta["record"] or {}).get("trace") or {}
            for u in trace.get("updates", []):
                after = f" -> {u['reward_after']:.4f}" if "reward_after" in u else ""
                moved = f"moved {u['update_norm']:.3f}"
                print(f"  update at step {u['step']}: reward {u['reward_before']:.4f}{after}, {moved}")
    return 0
