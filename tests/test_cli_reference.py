"""docs/cli.md shows each command's `--help` as the parsers print it, for every command."""

from pathlib import Path

from date_diffusion.cli.reference import SECTION, updated

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(parser, prefix=""):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            if sub._subparsers:
                yield from _commands(sub, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}"


def test_every_command_has_a_section():
    from date_diffusion.cli.main import build_parser

    documented = {m.group(1) for m in SECTION.finditer(CLI_MD.read_text())}
    assert set(_commands(build_parser())) - documented == set()


def test_each_sections_help_is_the_parsers():
    text = CLI_MD.read_text()
    assert updated(text) == text, "docs/cli.md is out of date: run python -m date_diffusion.cli.reference docs/cli.md"
