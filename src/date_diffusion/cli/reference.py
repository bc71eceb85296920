"""docs/cli.md's help blocks, made from the parsers: each `## \\`date-diffusion CMD\\`` section's first code block
is `date-diffusion CMD --help` at 120 columns. `python -m date_diffusion.cli.reference docs/cli.md` rewrites them;
a test checks that the file agrees with the parsers."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

COLUMNS = "120"
SECTION = re.compile(r"^## `date-diffusion ([a-z -]+)`\n\n```\n(.*?)```\n", re.S | re.M)


def help_text(command: str) -> str:
    """What `date-diffusion COMMAND --help` prints (COMMAND may be `toyworld train`), at `COLUMNS` columns."""
    from date_diffusion.cli.main import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS
    try:
        parser = build_parser()
        for word in command.split():
            parser = next(a for a in parser._subparsers._group_actions if word in a.choices).choices[word]
        return parser.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def updated(text: str) -> str:
    """`text` (docs/cli.md) with every section's help block made from the parsers."""
    return SECTION.sub(lambda m: f"## `date-diffusion {m.group(1)}`\n\n```\n{help_text(m.group(1))}```\n", text)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(updated(path.read_text()))
