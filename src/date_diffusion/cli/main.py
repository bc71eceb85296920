"""`date-diffusion`: the command line."""

from __future__ import annotations

import argparse
import os
import sys

# transformers warns at import about optional image backends this package never uses
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from date_diffusion.cli import bench, edit, generate, info, toyworld, ui
from date_diffusion.cli.common import CLIError


def build_parser() -> argparse.ArgumentParser:
    from date_diffusion import __version__

    parser = argparse.ArgumentParser(
        prog="date-diffusion",
        description="DATE (Diffusion Adaptive Text Embedding): better text-image alignment at sampling time.",
        epilog="Run `date-diffusion COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"date-diffusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(sub)
    edit.add_parser(sub)
    info.add_parser(sub)
    toyworld.add_parser(sub)
    ui.add_parser(sub)
    bench.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CLIError as err:
        print(f"date-diffusion {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a model that cannot be found: the message already says how to fix it
        from date_diffusion.hub import ModelNotFoundError

        if isinstance(err, ModelNotFoundError):
            print(f"date-diffusion {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
