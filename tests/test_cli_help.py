"""What a new user sees on the command line: examples in every `--help`, `--timings` as a table, clean stderr, and a
bench run that says how much it has to do before it does it."""

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import warnings

import pytest

from date_diffusion.cli.main import build_parser, main
from date_diffusion.perf.timings import PREFIX, Timings

NO_EXAMPLES_YET: set[str] = set()  # commands whose epilog is still to be written (strict xfail)


def commands(parser=None, path=()):
    """(command words, parser) of every command and sub-command, e.g. (("toyworld", "train"), ...)."""
    for action in (parser or build_parser())._actions:  # argparse has no public walk of its sub-commands
        for name, sub in action.choices.items() if action.nargs == argparse.PARSER else ():
            yield (*path, name), sub
            yield from commands(sub, (*path, name))


def examples(help_text: str) -> list[str]:
    """The commands of the `examples:` section of a `--help` (up to its first blank line); a line ending in a
    backslash continues on the next, as in a shell."""
    lines = help_text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"examples?:", line)]
    if not starts:
        return []
    block, pending = [], ""
    for line in lines[starts[0] + 1 :]:
        if not line.strip():
            break
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
        else:
            block.append(pending)
            pending = ""
    return block


def command_params():
    for words, _ in commands():
        todo = pytest.mark.xfail(strict=True, reason=f"{words[0]}: no examples yet (NO_EXAMPLES_YET)")
        yield pytest.param(words, marks=[todo] if words[0] in NO_EXAMPLES_YET else [], id=" ".join(words))


@pytest.mark.parametrize("words", list(command_params()))
def test_every_command_help_has_examples_that_parse(words):
    parser = dict(commands())[words]
    lines = examples(parser.format_help())
    assert lines, f"`date-diffusion {' '.join(words)} --help` has no examples: section"
    for line in lines:
        argv = shlex.split(line, comments=True)
        assert argv[: 1 + len(words)] == ["date-diffusion", *words], line
        build_parser().parse_args(argv[1:])  # a usage error exits (SystemExit) and fails the test


def test_every_command_says_what_it_does_and_every_option_what_it_takes():
    for words, parser in commands():
        assert parser.description, f"`date-diffusion {' '.join(words)} --help` has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # its choices are listed with their own help
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"`date-diffusion {' '.join(words)} --help`: {name} has no help"


def test_the_readmes_command_list_names_every_command():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    listed = {line.split()[1] for line in block.splitlines() if line.startswith("date-diffusion ")}
    assert listed == {words[0] for words, _ in commands() if len(words) == 1}


def test_timings_table_aligned_with_shares_and_json_line(capsys):
    timings = Timings("table", started=0.0)
    timings.parts.update({"imports and checks": 3.0, "loading": 1.0, "sampling": 4.0})
    timings.marks.update({"first sampling step done": 4.5, "end": 10.0})
    timings.print()
    header, *rows = capsys.readouterr().err.strip().splitlines()[1:]
    table = dict(re.fullmatch(r"  (\S.*?) +(\d+\.\d\d) +(\d+)%", r).group(1, 3) for r in rows[:5])
    assert table == {"imports and checks": "30", "loading": "10", "sampling": "40", "other": "20", "total": "100"}
    assert len({len(r) for r in [header, *rows[:5]]}) == 1  # aligned: every row as wide as the header
    assert rows[5] == "  first sampling step done at 4.50 s"
    for output in ("json", True):  # True: a bare `--timings` while the flag is a switch
        same = Timings(output, started=0.0)
        same.parts["loading"] = 1.0
        same.print()
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line.removeprefix(PREFIX))["parts"] == {"loading": 1.0}
    for off in (None, False):
        Timings(off).print()
        assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="table, json"):
        Timings("csv")


def test_generate_stderr_has_no_library_noise(tmp_path):
    def generate(*argv, **env):
        cmd = [sys.executable, "-m", "date_diffusion", "generate", *argv, "--out", str(tmp_path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **env})

    res = generate("a red circle", "--steps", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    for noise in ("torchvision", "Traceback", "warnings.warn", "[transformers]"):
        assert noise not in res.stderr, res.stderr
    # output captured to a file or pipe: no progress bar (on a terminal only), each image's lines say what is done
    assert "images:" not in res.stderr and "\r" not in res.stderr + res.stdout, res.stderr
    assert res.stdout.startswith("'a red circle' seed 0 -> ")
    missing = generate("a cat", "--model", "nobody/nothing", HF_HUB_OFFLINE="1")  # the hub warns on the way
    assert missing.returncode == 2
    (line,) = missing.stderr.splitlines()  # the error alone
    assert line.startswith("date-diffusion generate: error: --model 'nobody/nothing': could not load 'nobody/nothing'")


def test_generate_shows_its_progress_bar_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a terminal 100 columns wide
    cmd = [sys.executable, "-m", "date_diffusion", "generate", "a red circle", "--steps", "2", "--out", str(tmp_path)]
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=terminal, timeout=300, env=os.environ.copy())
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert res.returncode == 0
    assert b"images: 100%" in shown and b"1/1" in shown  # the bar, on the terminal
    assert res.stdout.decode().startswith("'a red circle' seed 0 -> ")  # the results, on stdout


@pytest.mark.parametrize(
    "argv",
    [["generate", "a cat", "--model", "/no/such/model"], ["generate", "a cat", "--model", "./no-such.safetensors"],
     ["generate", "a cat", "--model", "{readme}"], ["generate", "a cat", "--model", "{folder}"],
     ["generate", "a cat", "--model", "nobody/nothing"], ["edit", "{image}", "--source-prompt", "a",
      "--target-prompt", "b", "--model", "{readme}"], ["bench", "--suite", "toy", "--model", "/no/such/model",
      "--out", "{folder}/run"], ["ui", "--model", "{folder}"]],
)  # fmt: skip
def test_a_model_that_cannot_load_is_refused_before_the_heavy_imports(tmp_path, argv):
    """A missing path, a text file, a file of another kind, a folder without model_index.json, a hub id not cached
    while offline: refused (exit 2, one line) before torch or diffusers is imported, so at once."""
    from PIL import Image

    (tmp_path / "README.md").write_text("a model card")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    argv = [a.format(readme=tmp_path / "README.md", folder=tmp_path, image=tmp_path / "in.png") for a in argv]
    code = ("import sys; from date_diffusion.cli.main import main; code = main(sys.argv[1:]); "
            "print(code, *(m in sys.modules for m in ('torch', 'diffusers', 'gradio')))")  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert res.stdout.split() == ["2", "False", "False", "False"], res.stderr
    (line,) = res.stderr.splitlines()
    assert "error: " in line and ("--model" in line or "could not load" in line), line


def test_warnings_and_library_logs_inside_a_command_are_one_note_each(monkeypatch, capsys):
    from transformers.utils import logging as transformers_logging

    from date_diffusion.cli import info

    def command(args):
        warnings.warn("something the user\n  should know", stacklevel=1)
        warnings.warn("`local_dir_use_symlinks` argument is deprecated and ignored", stacklevel=1)  # silenced
        transformers_logging.get_logger("transformers.somewhere").warning("a library's remark")
        logging.getLogger("diffusers.models").warning("modules that should be kept in float32: []")  # silenced
        return 0

    library = transformers_logging.get_logger("transformers")  # configured: its own stderr handler
    before = (list(library.handlers), library.propagate)
    monkeypatch.setattr(info, "run", command)
    assert main(["info", __file__]) == 0  # an existing file: the options are checked before the command
    assert capsys.readouterr().err.splitlines() == [
        "date-diffusion info: note: something the user should know",  # the command's name first (round ten)
        "date-diffusion info: note: a library's remark (transformers)",
    ]
    assert (library.handlers, library.propagate) == before  # the library's own handler is back after the command


def test_bench_says_how_many_images_and_how_long_before_the_work(tmp_path, capsys):
    argv = ["bench", "--suite", "toy", "--limit", "2", "--seeds", "1", "--steps", "4", "--batch-size", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("process 1/1: ")]
    count = re.fullmatch(r"process 1/1: 2 images per method, (\d+) to make \(fixed 2, date 2\)", lines[0])
    assert count and int(count.group(1)) == 2 * 2 * 1  # methods x prompts x seeds
    assert re.match(r"process 1/1: estimate: about \d+ s more, \d+ s in all; s per image: fixed \d", lines[1])
    assert "(counted in sampling steps from fixed)" in lines[1]  # date is not timed before it runs
    assert "| fixed |" in captured.out  # the results after the work
