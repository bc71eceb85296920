"""`date-diffusion`: the command line."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import sys
import threading
import time
import warnings
from contextlib import contextmanager

from date_diffusion.cli import bench, edit, generate, info, toyworld, ui
from date_diffusion.cli.common import CLIError, attach_kinds, check_kinds, hub_named, remove_made
from date_diffusion.core.text import one_line, quoted
from date_diffusion.hub import offline_without_network
from date_diffusion.quiet import restated, silenced  # the libraries' remarks: dropped, or said short

# Libraries that write their log records to stderr through a handler of their own instead of the root logger's
OWN_HANDLERS = ("transformers", "diffusers", "huggingface_hub")


class _Once:
    """An option that is given once: given twice (`--steps 2 --steps 3`, `--compare --compare`) it is refused,
    never the last one taken nor the repetition passed over."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(parser, "given_options", None)
        if self.option_strings and given is not None:
            if self.dest in given:
                taken = "" if self.nargs == 0 else " (only one value is taken)"
                parser.error(f"argument {'/'.join(self.option_strings)}: given twice{taken}; give it once")
            given[self.dest] = option_string
        super().__call__(parser, namespace, values, option_string)


class _StoreOnce(_Once, argparse._StoreAction):  # noqa: SLF001  (argparse's `store`, which every value option uses)
    pass


class _StoreTrueOnce(_Once, argparse._StoreTrueAction):  # noqa: SLF001  (a switch: `--compare`)
    pass


class _VersionAlone(argparse._VersionAction):  # noqa: SLF001  (argparse's `version`)
    """`--version` given alone: beside anything else (`--version extra`, `--version generate ...`) it is refused,
    never the rest passed over with exit 0."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(parser, "given_args", None) or []
        if len(given) > 1:
            rest = " ".join(a for a in given if a != option_string)
            parser.error(f"argument {option_string}: shows the version and takes nothing else, got {quoted(rest)}; "
                         f"run `{parser.prog} {option_string}` alone")  # fmt: skip
        super().__call__(parser, namespace, values, option_string)


def _real(text: str) -> float:
    """`core.settings.parse_real` as an argparse type: a number beyond a float's range says so (argparse shows only
    "invalid float value" for any other ValueError). The number shows itself as typed (`schemas.SpelledFloat`:
    `1e-9`, never `1e-09`), so that a command's own check quotes it as the user wrote it."""
    from date_diffusion.core.settings import BeyondFloat, parse_real
    from date_diffusion.schemas import SpelledFloat

    try:
        parse_real(text)
    except BeyondFloat as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return SpelledFloat(text.strip())


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error in one line (what is wrong, then where the options are listed), never the whole
    usage text; its subcommands' parsers are of the same class. Every `type=int` reads through
    `core.settings.parse_integer` (ASCII digits only), every `type=float` through `parse_real`, and a single-valued
    option or switch given twice is refused (`_Once`; repeatable options, `action="append"`, stay repeatable)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from date_diffusion.core.settings import parse_integer

        self.register("type", int, parse_integer)
        self.register("type", float, _real)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.register("action", "store_true", _StoreTrueOnce)
        self.register("action", "version", _VersionAlone)

    def parse_known_args(self, args=None, namespace=None):
        self.given_options = {}  # dest -> the option string that set it, in this parse (`_Once`)
        self.typed = {}  # dest -> the text typed for a number option (`_get_values`)
        self.seen = set()  # the dests of the options given, a default value too (`_get_values`)
        self.given_args = list(sys.argv[1:] if args is None else args)  # `_VersionAlone`
        try:
            parsed, rest = super().parse_known_args(args, namespace)
            # a subcommand's parser ran inside this parse and recorded its own: the namespace keeps both
            parsed.typed_texts = {**getattr(parsed, "typed_texts", {}), **self.typed}
            parsed.options_given = frozenset(getattr(parsed, "options_given", ())) | self.seen
            return parsed, rest
        finally:
            self.given_options = self.typed = self.given_args = self.seen = None

    def parse_args(self, args=None, namespace=None):
        """argparse's, an argument no option takes refused by the innermost command's parser (`date-diffusion
        toyworld train: error: unrecognized arguments: ...`, its own --help named), not the top-level one's."""
        given = list(sys.argv[1:] if args is None else args)
        parsed, rest = self.parse_known_args(args, namespace)
        command = getattr(parsed, "command_parser", self)
        if rest:
            command.error(f"unrecognized arguments: {' '.join(rest)}")
        after = given[given.index("--") + 1 :] if "--" in given else []
        named = next((a for a in after if a.split("=", 1)[0] in command._option_string_actions), None)
        if named is not None:  # `-- "-a" --steps 4`: the options after `--` would be taken as prompts
            command.error(f"{named!r} comes after `--`, so it is read as text, not as the option "
                          f"{named.split('=', 1)[0]}: put the options before `--` (after it goes only text that "
                          "starts with a dash)")  # fmt: skip
        return parsed

    def _get_values(self, action, arg_strings):
        """argparse's conversion, keeping the text typed for a number (`type=int`/`float`): `check_kinds` checks
        that text, so a refusal quotes what was typed (`1e308`), never the number's own spelling (`1e+308`). Each
        option given is kept too (`options_given`): a check of what was given never compares with a default."""
        if action.type in (int, float) and action.nargs is None and len(arg_strings) == 1:
            self.typed[action.dest] = arg_strings[0]
        if action.option_strings:  # given, whatever its value: `options_given` (`--seed 0` is given)
            self.seen.add(action.dest)
        return super()._get_values(action, arg_strings)

    def error(self, message):
        """argparse's own messages quote a bad value whole (`invalid int value: '999...'`): each long quoted value
        is shown as `core.text.quoted` shows it, so the message stays one readable line."""
        message = re.sub(r"'((?:[^'\\]|\\.){81,})'", lambda m: quoted(m.group(1)), message)
        if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: expected one argument", message):
            flag = m.group(1)  # its value is missing, or starts with '-' (argparse reads that as an option)
            message += f" (a value that starts with '-' is given as {flag}=VALUE)"
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from date_diffusion import __version__

    parser = _Parser(
        prog="date-diffusion",
        description="DATE (Diffusion Adaptive Text Embedding): better text-image alignment at sampling time.",
        epilog="Run `date-diffusion COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"date-diffusion {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of a failure, and the libraries' warnings as they print them",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(sub)
    edit.add_parser(sub)
    info.add_parser(sub)
    toyworld.add_parser(sub)
    ui.add_parser(sub)
    bench.add_parsers(sub)
    describe_commands(parser)
    attach_kinds(parser)
    return parser


def describe_commands(parser: argparse.ArgumentParser) -> None:
    """A command without a description of its own is described by its line in the list of commands (its `help`),
    so that its `--help` says what it does."""
    for action in parser._actions:  # noqa: SLF001  (argparse keeps its subcommands there)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {choice.dest: choice.help for choice in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = helps[name][0].upper() + helps[name][1:] + "."
                describe_commands(sub)


def _quiet_loading(debug: bool) -> None:
    """No per-file progress bars while models load (the command prints its own progress)."""
    if debug:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub and transformers


_NAME = ["date-diffusion"]  # the command running, as its notes start (`main` sets it)


def note(text: str, source: str = "") -> None:
    """One `date-diffusion COMMAND: note:` line on stderr (above a progress bar; the command running, `_NAME`),
    unless the text is a library's remark (`quiet.silenced`); a long one it restates in short (`quiet.restated`)."""
    text = one_line(restated(text), 1000)
    if not text or silenced(text):
        return
    from tqdm import tqdm

    tqdm.write(f"{_NAME[0]}: note: {text}" + (f" ({source})" if source else ""), file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` of a command: the warning as a note."""
    note(str(message), "" if category is UserWarning else category.__name__)


class _NoteHandler(logging.Handler):
    """The root logger's handler while a command runs: each record as a note naming its library."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            note(record.getMessage(), record.name.split(".")[0] if record.name != "root" else "")
        except Exception:  # a malformed record: what logging does with it
            self.handleError(record)


class _Routing:
    """Records of the `OWN_HANDLERS` libraries go to the root logger (and so to the notes) instead of their own
    handlers. The libraries add those handlers when first used, so a library is routed when its first record is
    made: a record factory runs before any handler sees the record. `restore` undoes it all."""

    def __init__(self):
        self.factory, self.saved = logging.getLogRecordFactory(), {}
        logging.setLogRecordFactory(self.make)

    def make(self, name, *args, **kwargs) -> logging.LogRecord:
        top = name.split(".")[0]
        library = logging.getLogger(top) if top in OWN_HANDLERS else None
        if library is not None and (library.handlers or not library.propagate):
            self.saved.setdefault(library, (library.handlers, library.propagate))
            library.handlers, library.propagate = [], True
        return self.factory(name, *args, **kwargs)

    def restore(self) -> None:
        logging.setLogRecordFactory(self.factory)
        for library, (handlers, propagate) in self.saved.items():
            library.handlers, library.propagate = handlers, propagate


@contextmanager
def notes(debug: bool):
    """While a command runs, the libraries' warnings (`warnings.warn` and log records) are one note each, those
    `quiet.REMARKS` none; with --debug they print as the libraries print them. A finished image that is not finite
    (`NonFiniteOutputWarning`) is an error: no command writes it."""
    from date_diffusion.core.finite import NonFiniteOutputWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteOutputWarning)
        if debug:
            yield
            return
        handler, routing, root = _NoteHandler(), _Routing(), logging.getLogger()
        root.addHandler(handler)
        try:
            warnings.showwarning = _show_warning
            yield
        finally:
            root.removeHandler(handler)
            routing.restore()


SIGTERM_GRACE = 5.0  # seconds a command has to end after SIGTERM before the process ends without it
_RUNNING = threading.Event()  # set while a command runs (`main`): SIGTERM between commands ends nothing
_WATCHING = []  # the SIGTERM watcher thread, started once per process


def _sigterm_as_interrupt() -> None:
    """SIGTERM ends a command like Ctrl-C: the file being written is discarded, every finished file stays.

    Python runs its handler in the main thread between two Python steps, so inside one long library call (a
    convolution at 4096 px) it would wait for the call to return. The signal is also written to a wakeup socket
    (`signal.set_wakeup_fd`, at the moment it arrives) that a watcher thread reads: when the command has not ended
    within `SIGTERM_GRACE` seconds, the watcher ends the process (exit code 143, as a shell reports SIGTERM). Every
    file a command writes is written whole or not at all, so the finished ones stay either way."""
    import signal
    import socket

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _interrupt)
    # a hang-up (the terminal closed, an ssh session dropped) ends it the same way, unless it is ignored (`nohup`)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _interrupt)
    if sys.unraisablehook is not _resend_dropped:  # an interrupt Python would drop is sent again
        _PREVIOUS_UNRAISABLE[0], sys.unraisablehook = sys.unraisablehook, _resend_dropped
    if _WATCHING:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):  # not supported here: the handler alone
        return

    def watch():
        while True:
            arrived = reader.recv(64)
            if not {signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)} & set(arrived) or not _RUNNING.is_set():
                continue
            deadline = time.monotonic() + SIGTERM_GRACE
            while _RUNNING.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            if _RUNNING.is_set():
                remove_made()  # a folder the command made and wrote nothing into goes, as on a failure
                if _INTERRUPT_ENDS.is_set():  # a server (the page): SIGTERM is its end, whatever held it
                    print("stopped", file=sys.__stdout__, flush=True)
                    os._exit(0)
                print(f"{_NAME[0]}: terminated: a library call did not return within {SIGTERM_GRACE:g} s of "
                      "SIGTERM; every finished file stays", file=sys.__stderr__, flush=True)  # fmt: skip
                os._exit(143)

    _WATCHING.append((reader, writer, threading.Thread(target=watch, name="date-diffusion-sigterm", daemon=True)))
    _WATCHING[0][2].start()


_INTERRUPTED = threading.Event()  # set once SIGTERM arrived: a failure that follows is the interrupt's doing
_INTERRUPT_ENDS = threading.Event()  # set while a command whose end is an interrupt runs (`interrupt_ends`: the page)


def _interrupt(signum, frame):
    """SIGTERM's handler: a KeyboardInterrupt where the command runs. Where Python drops it (the signal arrived
    inside an object's `__del__`, a weakref callback such as an import lock's, ...: `_resend_dropped`), the signal is
    sent again a moment later, to arrive where it ends the command. A library that takes the interrupt for an error
    of its own (an import it broke: "cannot load module more than once per process") ends the command as an
    interrupt too (`_INTERRUPTED`, read by `main`)."""
    _INTERRUPTED.set()
    raise KeyboardInterrupt


_PREVIOUS_UNRAISABLE = [sys.unraisablehook]


def _resend_dropped(unraisable) -> None:
    """`sys.unraisablehook` while a command runs: Python's report of an exception it drops (raised in a finalizer, a
    weakref callback, a garbage collection). SIGTERM's KeyboardInterrupt dropped there is neither printed ("Exception
    ignored in ...") nor lost: the signal is sent again a moment later. Anything else is reported as before."""
    import signal

    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _INTERRUPTED.is_set():
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    _PREVIOUS_UNRAISABLE[0](unraisable)


def _command_prog(argv: list[str]) -> str:
    """The full name of the command `argv` names (`date-diffusion toyworld train`), read before the parser runs (a
    refusal of the arguments' text itself starts with it, as every usage error does); `date-diffusion` if none."""
    from date_diffusion.cli.common import command_parsers

    commands = dict(command_parsers(build_parser()))
    words = list(itertools.takewhile(lambda a: not a.startswith("-"), itertools.dropwhile(
        lambda a: a.startswith("-"), argv)))  # fmt: skip
    named = [" ".join(words[:n]) for n in range(1, len(words) + 1) if " ".join(words[:n]) in commands]
    return commands[named[-1]].prog if named else "date-diffusion"


def _text_arguments(argv: list[str]) -> list[str]:
    """The command line as the text the user typed. Under a C or POSIX locale without UTF-8 mode, Python decodes
    argument bytes as ASCII and keeps the rest as lone surrogates ('\\udcc3'), which no tokenizer takes: they are
    turned back into the bytes typed and read as UTF-8; an argument that is not UTF-8 is a usage error."""
    out = []
    for k, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
            out.append(arg)
            continue
        except UnicodeEncodeError:
            pass
        try:
            out.append(os.fsencode(arg).decode("utf-8"))
        except UnicodeDecodeError:
            shown = repr(os.fsencode(arg))[1:]  # the bytes typed, `'o\xff'`, never Python's `'o\udcff'`
            fix = ("a file or folder with such a name: rename it to UTF-8 (e.g. `convmv`); typed text: type it in a "
                   "UTF-8 terminal (e.g. LANG=C.UTF-8)")  # fmt: skip
            if os.path.lexists(os.fsencode(arg)):  # an existing file's name: the terminal is not what is wrong
                fix = "it names a file whose name is not UTF-8: rename it to UTF-8 (e.g. `convmv`), or copy it"
            raise CLIError(f"argument {k + 1} ({shown}) is not UTF-8 text; {fix}") from None
    return out


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (`info FILE | head -3`): what is left to show goes nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _Shown:
    """Standard output that cannot take more (`> /dev/full`, an I/O error of the terminal): what cannot be shown is
    dropped, as on a closed stdout, and the command's exit code stays its own; a reader that went away still ends
    the command (BrokenPipeError). Standard error (`errors=True`) drops a broken pipe too: its notes, progress bars
    and messages never end or fail a command (`2> /dev/full`, a log on a full disk), nor turn a usage error's exit
    code 2 into a failure's 1."""

    def __init__(self, stream, errors: bool = False, closed: bool = False):
        self._stream, self._errors, self._closed = stream, errors, closed  # closed: `>&-`, `stream` is os.devnull
        self.dropped = False  # whether text was dropped (`main` then says so once, on stderr)

    def _guard(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            if not self._errors:
                raise
            return None
        except OSError:
            self.dropped = True
            return None

    def write(self, text):
        self.dropped |= self._closed and bool(text)
        return self._guard(self._stream.write, text) or len(text)

    def flush(self):
        self._guard(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _interrupted(args, name: str) -> int:
    """How an interrupted command ends: a server (the page) is stopped, code 0; any other says so, code 130."""
    if getattr(args, "interrupt_ends", False):
        print("stopped", flush=True)
        return 0
    print(f"{name}: interrupted; every file written so far is complete", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 usage error (nothing was done), 1 runtime failure, 130 interrupted (Ctrl-C)."""
    closed = sys.stdout is None  # closed before the program started (`>&-`): what would show goes nowhere
    if closed:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the process's stream, open until it ends)
    if sys.stderr is None:  # `2>&-`: `print(file=None)` would write the notes and errors into stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):  # text the terminal's encoding lacks is shown escaped, never a failure
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if sys.stdout is not None and not isinstance(sys.stdout, _Shown):
        sys.stdout = _Shown(sys.stdout, closed=closed)
    if isinstance(sys.stdout, _Shown):
        sys.stdout.dropped = False  # this command's own
    if sys.stderr is not None and not isinstance(sys.stderr, _Shown):
        sys.stderr = _Shown(sys.stderr, errors=True)
    given = sys.argv[1:] if argv is None else list(argv)
    try:
        os.getcwd()
    except FileNotFoundError:  # the folder the command was started in was deleted: relative paths mean nothing
        print(f"{_command_prog(given)}: error: the current folder no longer exists; cd to a folder that exists",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        argv = _text_arguments(given)
    except CLIError as err:
        print(f"{_command_prog(given)}: error: {one_line(err)}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    name = _NAME[0] = args.command_prog
    if getattr(args, "interrupt_ends", False):
        _INTERRUPT_ENDS.set()
    _sigterm_as_interrupt()
    _RUNNING.set()
    try:
        _quiet_loading(args.debug)
        offline = offline_without_network(args, hub_named(args))
        if offline:
            print(f"{name}: note: {offline}", file=sys.stderr)
        check_kinds(args)  # every command: each value through its option's kind, before anything else
        with notes(args.debug):
            code = args.func(args) or 0
        if getattr(sys.stdout, "dropped", False):  # said once, never silently lost (the files are written)
            print(f"{name}: note: standard output is closed or full: what the command showed there (what it wrote, "
                  "where) was dropped", file=sys.stderr)  # fmt: skip
        return code
    except CLIError as err:
        print(f"{name}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args, name)
    except BrokenPipeError:  # the reader of stdout went away: nothing more is shown
        _quiet_broken_pipe()
        # a command that only reads (`info | head -3`) has done all it was asked for; another stopped half-way
        return 0 if args.command == "info" else 141
    except Exception as err:
        from date_diffusion.hub import ModelNotFoundError
        from date_diffusion.schemas import SchemaError

        if _INTERRUPTED.is_set():  # a library's error that SIGTERM's interrupt caused, part way through its work
            return _interrupted(args, name)
        # the message already says how to fix it: a model that is not there; a file that is not what its reader
        # expects (it names the file, the field and the fix), whichever command read it
        if isinstance(err, (ModelNotFoundError, SchemaError)):
            print(f"{name}: error: {one_line(err)}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        print(
            f"{name}: failed: {type(err).__name__}: {one_line(err)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        _RUNNING.clear()
        _INTERRUPT_ENDS.clear()
        _NAME[0] = "date-diffusion"


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
            if stream is not None:  # None: the stream was closed before the program started (`>&-`)
                stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be shown
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
