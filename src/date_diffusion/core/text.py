"""Prompt text as every interface checks it: a prompt must show something, and hold no control character.

Whitespace, zero-width and other invisible format characters (U+200B, U+2060, U+FEFF, ...) encode nothing a text
encoder can draw from: a prompt made only of them is as empty as "" and is refused (or, in a one-prompt-a-line file,
skipped as a blank line) by the command line, the benchmark and the web page alike. A control character other than
a tab or a line break (NUL, ESC, a form feed, DEL, ...) is no text anybody typed into a prompt: it is a damaged file
or a pasted escape sequence, and is refused naming where it is. So is a bidirectional embedding, override or isolate
(U+202A..U+202E, U+2066..U+2069): it makes a prompt display in another order than it reads (in records, file
listings, a terminal), so what a user sees is not what the encoder got; the marks U+200E/U+200F/U+061C, which only
set a direction, stay text. (Line breaks are text: a quoted CSV cell may hold
one, as captions of the paper's COCO subset do; every encoder reads them as spaces.)
"""

from __future__ import annotations

import unicodedata

# separators (spaces), control characters, format characters (zero-width ...), and combining marks: a mark shows
# only on a character before it, so a text of marks alone (U+0301 U+0308 ...) shows nothing of its own
_INVISIBLE = ("Z", "Cc", "Cf", "Mn", "Me")


def is_blank(text: str) -> bool:
    """Whether `text` has no visible character."""
    return not any(not unicodedata.category(ch).startswith(_INVISIBLE) for ch in text)


LINE_SPACE = "\t\n\r"  # the control characters that are text: a tab, and line breaks (a CSV cell may hold them)


# bidirectional embeddings, overrides and isolates: they reorder how the text around them displays
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def control_character(text: str) -> int | None:
    """The index of the first control character of `text` other than a tab or a line break (Unicode category Cc),
    or of a bidirectional embedding, override or isolate (`BIDI_CONTROLS`), or None."""
    controls = (k for k, ch in enumerate(text) if ch not in LINE_SPACE and unicodedata.category(ch) == "Cc")
    bidi = (k for k, ch in enumerate(text) if ch in BIDI_CONTROLS)
    return min((k for k in (next(controls, None), next(bidi, None)) if k is not None), default=None)


def check_prompt(text, name: str, empty: bool = False) -> str:
    """`text` stripped, or ValueError naming `name` when it holds a control character or (unless `empty`: a
    negative prompt may be empty) shows nothing."""
    at = control_character(text) if isinstance(text, str) else None
    if at is not None and text[at] in BIDI_CONTROLS:
        raise ValueError(f"{name} holds the bidirectional control U+{ord(text[at]):04X} at character {at + 1}: it "
                         "makes the prompt display in another order than the encoder reads it; remove it (the marks "
                         "U+200E/U+200F set a direction and are accepted)")  # fmt: skip
    if at is not None:
        raise ValueError(f"{name} holds the control character U+{ord(text[at]):04X} at character {at + 1}: a "
                         "prompt is text; remove it (a damaged file or a pasted escape sequence)")  # fmt: skip
    if isinstance(text, str) and empty and is_blank(text):
        return ""
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


def prepare_prompt(text, name: str, empty: bool = False) -> tuple[str, str | None]:
    """A prompt (`empty`: a negative prompt) as every interface takes it: refused when it holds a control character
    or shows nothing (`check_prompt`), stripped, and cut to what encoders read (`cut_prompt`); (the text, a note
    when it was cut)."""
    return cut_prompt(check_prompt(text, name, empty), name)


def quoted(value, most: int = 100) -> str:
    """`value` as an error message quotes it: its repr when short, else the repr's start and end (a file's name
    stays readable) and the value's length: a message stays one readable line, whatever a user typed. (A path is
    quoted whole, as `repr`: a file's full name is what the user needs, and the system bounds its length.)"""
    shown = repr(value)
    if len(shown) <= most:
        return shown
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(shown):,} characters written out"
    half = most // 2 - 5
    return f"{shown[:half]}...{shown[-half:]} ({size})"
