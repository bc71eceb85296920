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
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(sub)
    edit.add_parser(sub)
    info.add_parser(sub)
    toyworld.add_parser(sub)
    ui.add_parser(sub)
    bench.add_parsers(sub)
    return parser


def _quiet_loading(debug: bool) -> None:
    """No per-file progress bars while models load (the command prints its own progress)."""
    if debug:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub and transformers


def _sigterm_as_interrupt() -> None:
    """SIGTERM ends a command like Ctrl-C: the file being written is discarded, every finished file stays."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 usage error (nothing was done), 1 runtime failure, 130 interrupted (Ctrl-C)."""
    args = build_parser().parse_args(argv)
    name = f"date-diffusion {args.command}"
    _sigterm_as_interrupt()
    _quiet_loading(args.debug)
    try:
        return args.func(args) or 0
    except CLIError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; every file written so far is complete", file=sys.stderr)
        return 130
    except Exception as err:
        from date_diffusion.hub import ModelNotFoundError

        if isinstance(err, ModelNotFoundError):  # the message already says how to fix it
            print(f"{name}: error: {err}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        print(f"{name}: failed: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def console() -> None:
    """The `date-diffusion` program: `main`, then exit without tearing down the interpreter.

    Every file a command writes is complete and closed when `main` returns; what remains at exit is the
    interpreter's teardown of torch, diffusers and transformers (about a second on a CPU), which only delays
    the prompt. Exit handlers still run and the standard streams are flushed."""
    import atexit

    code = main()
    atexit._run_exitfuncs()  # noqa: SLF001  (handlers registered by libraries: logging, temporary files, ...)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be shown
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
