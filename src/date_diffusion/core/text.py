"""Prompt text as every interface checks it: a prompt must show something.

Whitespace, zero-width and other invisible format characters (U+200B, U+2060, U+FEFF, ...) and control characters
encode nothing a text encoder can draw from: a prompt made only of them is as empty as "" and is refused (or, in a
one-prompt-a-line file, skipped as a blank line) by the command line, the benchmark and the web page alike.
"""

from __future__ import annotations

import unicodedata

_INVISIBLE = ("Z", "Cc", "Cf")  # separators (spaces), control characters, format characters (zero-width ...)


def is_blank(text: str) -> bool:
    """Whether `text` has no visible character."""
    return not any(not unicodedata.category(ch).startswith(_INVISIBLE) for ch in text)


def check_prompt(text, name: str) -> str:
    """`text` stripped, or ValueError naming `name` when it shows nothing."""
    if not isinstance(text, str) or is_blank(text):
        shown = repr(text) if isinstance(text, str) and len(text) <= 40 else f"{len(str(text))} characters"
        raise ValueError(f"{name} is empty (no visible character in {shown}): give the text the image should show")
    return text.strip()


# No supported text encoder reads more than about a thousand tokens (CLIP 77, T5 up to 512), and no token is
# longer than a few dozen characters: a prompt's first MAX_PROMPT_CHARS characters hold everything any encoder
# reads, so cutting there changes no image and bounds the work a prompt can cause (tokenizing, records, file names).
MAX_PROMPT_CHARS = 20_000


def cut_prompt(text: str, name: str) -> tuple[str, str | None]:
    """(`text` cut to `MAX_PROMPT_CHARS`, a note saying so or None)."""
    if len(text) <= MAX_PROMPT_CHARS:
        return text, None
    note = (f"{name} has {len(text):,} characters; text encoders read far fewer (at most about a thousand tokens), "
            f"so only its first {MAX_PROMPT_CHARS:,} characters are used")  # fmt: skip
    return text[:MAX_PROMPT_CHARS], note


def prepare_prompt(text, name: str) -> tuple[str, str | None]:
    """A prompt as every interface takes it: refused when it shows nothing (`check_prompt`), stripped, and cut to
    what encoders read (`cut_prompt`); (the text, a note when it was cut)."""
    return cut_prompt(check_prompt(text, name), name)
