"""`date-diffusion ui`: the web interface (Gradio; `pip install date-diffusion[ui]`)."""

from __future__ import annotations

from dataclasses import dataclass

from date_diffusion.cli.common import HelpFormatter, from_namespace
from date_diffusion.perf.work import UPDATE_WORK
from date_diffusion.toyworld.world import NAME as TOY
from date_diffusion.ui.access import MAX_QUEUE, MAX_WORK

# Gradio, torch and the page are imported inside `run`: see cli/__init__.py


# the page takes no file from a visitor: Gradio's upload route accepts nothing larger than this
MAX_UPLOAD = "1kb"


def add_parser(sub):
    p = sub.add_parser(
        "ui",
        help="web page: fixed vs DATE side by side, step by step; benchmark runs",
        description="Serve the web interface. The default model is the shipped toy world (offline, CPU).",
        formatter_class=HelpFormatter,
        epilog="example:\n  date-diffusion ui --run runs/toy      # then open http://127.0.0.1:7860",
    )
    p.add_argument("--model", default=None, help=f"a diffusers folder or hub id (default: the toy world, `{TOY}`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--run", default=None, help="a `bench` run directory to show in a second tab")
    p.add_argument("--concurrency", type=int, default=1, help="requests served at once (default 1: queued)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--max-work",
        type=int,
        default=MAX_WORK,
        metavar="N",
        help=f"the most work one request may ask for, in sampling steps, each gradient step of a DATE update "
        f"counted as {UPDATE_WORK} steps (its backward pass, decoding and reward) and one more for each reward "
        f"model's run beyond the first (aug8(...): 8 runs); a request over it is refused before any work (default "
        f"{MAX_WORK})",
    )
    p.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose files the page's reward field may load (clip:DIR/model, ...); repeat for several "
        "(default: none, and the page loads rewards by their registered names only, never a path on this machine)",
    )
    p.set_defaults(func=run, validate=validate, interrupt_ends=True)  # Ctrl-C or SIGTERM: code 0 (cli/main.py)
    return p


@dataclass(frozen=True)
class UIOptions:
    """`ui`'s options, typed: built once from the namespace after `cli.main` has checked each value's kind."""

    model: str | None
    host: str
    port: int
    run: str | None
    concurrency: int
    device: str
    allow_path: tuple[str, ...]
    max_work: int

    @classmethod
    def from_args(cls, args) -> UIOptions:
        # the port goes to the socket library, which takes a plain int only: `--port 07861` is port 7861 (a
        # `core.settings.SpelledInt` keeps its spelling for messages; no message here needs it)
        return from_namespace(cls, args, allow_path=tuple(args.allow_path), port=int(args.port))


def validate(args) -> UIOptions:
    """`check` of the namespace's options: the options."""
    opts = UIOptions.from_args(args)  # the one read of the namespace
    check(opts)
    return opts


def _check_address(host: str, port: int) -> None:
    """--host and --port name an address this machine can listen on, and it is free: said before the model loads,
    in one line (Gradio's own answer comes after it, in two, blaming the port for an address that does not exist)."""
    import socket

    from date_diffusion.cli.common import CLIError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError) as err:
        raise CLIError(f"--host {host!r} is no address of this machine ({err}); use 127.0.0.1, or 0.0.0.0 for "
                       "every network interface") from None  # fmt: skip
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            probe.bind(address)
        except OSError as err:
            raise CLIError(f"--host {host!r} --port {port}: cannot listen there ({err.strerror or err}); choose "
                           "another port, or an address of this machine") from None  # fmt: skip


def _check_temporary_folder() -> None:
    """The page's files go under the temporary folder (TMPDIR): a name Gradio cannot serve files from (a control
    character: every file the page shows would be "not found"; a byte that is no UTF-8 text: Gradio fails) is
    refused before anything starts, naming TMPDIR."""
    import tempfile
    import unicodedata

    from date_diffusion.cli.common import CLIError
    from date_diffusion.core.text import is_control

    folder = tempfile.gettempdir()
    at = next((k for k, ch in enumerate(folder) if is_control(ch) or unicodedata.category(ch) == "Cs"), None)
    if at is not None:
        what = "a byte that is no UTF-8 text" if unicodedata.category(folder[at]) == "Cs" else "a control character"
        raise CLIError(f"the page's files go under the temporary folder {folder!r} (TMPDIR), whose name holds {what} "
                       f"at character {at + 1}: the page cannot serve files from it; set TMPDIR to a folder whose "
                       "name has none")  # fmt: skip


def check(opts: UIOptions) -> None:
    """`ui`'s checks beyond its options' kinds, before Gradio or torch is imported: Gradio installed, the model
    (one that cannot load is refused at once), --run a bench run's folder."""
    import importlib.util
    from pathlib import Path

    from date_diffusion.cli.common import CLIError, resolve_from_args, resolve_model

    if importlib.util.find_spec("gradio") is None:
        raise CLIError("the web interface needs Gradio: pip install 'date-diffusion[ui]'")
    _check_address(opts.host, opts.port)
    _check_temporary_folder()
    resolve_from_args(resolve_model(opts.model), {})
    if opts.run is not None and not (Path(opts.run) / "run.json").is_file():
        raise CLIError(f"--run {opts.run!r} is not a bench run (no run.json)")
    if opts.run is not None:
        from date_diffusion.ui.runview import view_files

        try:
            view_files(opts.run)  # every file the run view reads besides the records, a regular file
        except ValueError as err:
            raise CLIError(f"--run: {err}") from err


def run(args) -> int:
    """The page, until Ctrl-C or SIGTERM, whenever it comes (while checking, loading or serving): exit code 0 and
    its temporary folder removed."""
    from date_diffusion.cli.common import temporary_folder

    opts = validate(args)
    with temporary_folder("date-diffusion-ui-") as workdir:  # the page's files, removed at its end
        serve(opts, workdir)  # Ctrl-C or SIGTERM: its end, code 0 (`interrupt_ends`, cli/main.py)
    return 0


def serve(opts, workdir) -> None:
    import logging
    import os
    import time

    from date_diffusion.cli.common import resolve_device, resolve_model

    # Gradio writes the files the page shows (and its own) under GRADIO_TEMP_DIR, read when Gradio is imported: into
    # the page's folder, bounded with the requests' own (`Session._expire`) and removed with it
    gradio_temp = os.environ.get("GRADIO_TEMP_DIR")
    demo = None
    try:
        import torch

        from date_diffusion.ui.session import Session, gradio_cache

        os.environ["GRADIO_TEMP_DIR"] = str(gradio_cache(workdir))
        from date_diffusion.ui.access import allowed_folders
        from date_diffusion.ui.app import build_app

        device = resolve_device(opts.device)
        model = resolve_model(opts.model)
        if device == "cpu":
            torch.set_num_threads(1)  # small models: a second thread only spins
        folders = allowed_folders(list(opts.allow_path))
        session = Session(model, device, opts.concurrency, folders, opts.max_work, workdir=workdir)
        session.warm()
        demo = build_app(session, opts.run)
        demo.queue(default_concurrency_limit=opts.concurrency, max_size=MAX_QUEUE)  # beyond it: "queue is full"
        demo.launch(server_name=opts.host, server_port=opts.port, show_error=True, quiet=True, prevent_thread_lock=True,
                    allowed_paths=[str(session.workdir)],  # the run tab shows copies made there
                    max_file_size=MAX_UPLOAD)  # fmt: skip
        print(f"serving {model} on http://{opts.host}:{opts.port}", flush=True)  # once it answers, not before
        while demo.is_running:  # our own wait, so that an interrupt always reaches the handler of `run`
            time.sleep(0.1)
    finally:
        if demo is not None:
            session.stops.stop_all()  # a request being sampled ends at its next step, not after its last
            if getattr(demo, "server", None) is not None:  # uvicorn: end open connections (a visitor's progress
                demo.server.force_exit = True  # stream) at once, not after the 5 s Gradio's close waits for them,
                logging.getLogger("uvicorn.error").disabled = True  # without a traceback for each one ended
            demo.close()
        if gradio_temp is None:  # the page's images live only while it serves (`temporary_folder`)
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = gradio_temp
