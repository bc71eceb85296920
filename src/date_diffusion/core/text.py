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

import math
import numbers
import re
import unicodedata

# separators (spaces), control characters, format characters (zero-width ...), combining marks (a mark shows only
# on a character before it, so a text of marks alone, U+0301 U+0308 ..., shows nothing of its own), surrogates and
# code points no character is assigned to (noncharacters such as U+FFFF included)
_INVISIBLE = ("Z", "Cc", "Cf", "Mn", "Me", "Cs", "Cn")
# letters and symbols that are blank by design: the Hangul fillers, the Braille blank, the object replacement
BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\ufffc")


def is_blank(text: str) -> bool:
    """Whether `text` has no visible character."""
    return all(ch in BLANK_CHARACTERS or unicodedata.category(ch).startswith(_INVISIBLE) for ch in text)


LINE_SPACE = "\t\n\r"  # the control characters that are text: a tab, and line breaks (a CSV cell may hold them)


# bidirectional embeddings, overrides and isolates: they reorder how the text around them displays
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# tag characters: invisible, they spell a hidden ASCII text an encoder still reads; as text they belong only in an
# emoji tag sequence (a subdivision flag: U+1F3F4, tags, U+E007F CANCEL TAG)
_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


# the byte-order mark (also named zero width no-break space, deprecated as such since Unicode 3.2): at a file's
# start its reader leaves it out; inside a text it is what joined files or a paste left, invisible, and read
BYTE_ORDER_MARK = "\ufeff"


def _is_tag(ch: str) -> bool:
    return "\U000e0000" <= ch <= "\U000e007f"


def is_control(ch: str) -> bool:
    """Whether `ch` is a control character (Unicode category Cc: line breaks and tabs included) or a bidirectional
    embedding, override or isolate: what no name shows and no terminal should be sent as it is."""
    return unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS


def control_character(text: str) -> int | None:
    """The index of the first character of `text` that is no prompt text, or None: a control character other than
    a tab or a line break (Unicode category Cc), a bidirectional embedding, override or isolate (`BIDI_CONTROLS`),
    a lone surrogate (no character at all: text decoded with errors kept), a tag character outside an emoji
    tag sequence (hidden text), or a byte-order mark (`BYTE_ORDER_MARK`)."""
    flags = {k for m in _TAG_SEQUENCE.finditer(text) for k in range(m.start(), m.end())}
    for k, ch in enumerate(text):
        if (is_control(ch) and ch not in LINE_SPACE) or unicodedata.category(ch) == "Cs":
            return k
        if (_is_tag(ch) and k not in flags) or ch == BYTE_ORDER_MARK:
            return k
    return None


def _why(ch: str) -> str:
    """What the character `control_character` found is, and why a prompt cannot hold it."""
    if ch in BIDI_CONTROLS:
        return ("the bidirectional control {}: it makes the prompt display in another order than the encoder reads "
                "it; remove it (the marks U+200E/U+200F set a direction and are accepted)")  # fmt: skip
    if unicodedata.category(ch) == "Cs":
        return "the lone surrogate {}: it is no character (text decoded from invalid bytes); remove it"
    if ch == BYTE_ORDER_MARK:
        return ("the byte-order mark {}: an invisible character that files joined or a paste leave in the text, "
                "which the encoder still reads; remove it")  # fmt: skip
    if _is_tag(ch):
        return ("the tag character {}: an invisible character that spells hidden text the encoder still reads "
                "(outside an emoji flag); remove it")  # fmt: skip
    return "the control character {}: a prompt is text; remove it (a damaged file or a pasted escape sequence)"


# how the command line gives an empty negative prompt, or none (`check_prompt`'s `empty_fix` on the page differs)
SHELL_EMPTY_FIX = "give '' for an empty one, or leave it out"


def check_prompt(text, name: str, empty: bool = False, empty_fix: str = SHELL_EMPTY_FIX) -> str:
    """`text` stripped, or ValueError naming `name` when it holds a control character or shows nothing (with
    `empty`, a negative prompt: `''` exactly is a value; a text of blanks or invisible characters is refused, never
    taken as `''` without a word, with `empty_fix`: how the interface gives an empty one, or none)."""
    at = control_character(text) if isinstance(text, str) else None
    if at is not None:
        what, why = _why(text[at]).split("{}", 1)
        raise ValueError(f"{name} holds {what}U+{ord(text[at]):04X} at character {at + 1}{why}")
    shown = spelled(text) if isinstance(text, str) and len(text) <= 40 else f"{len(str(text))} characters"
    if isinstance(text, str) and empty and is_blank(text):
        if text == "":  # a value: `''` switches on a negative branch where the pipeline has one
            return ""
        raise ValueError(f"{name} shows nothing ({shown}) and is not empty: {empty_fix}")
    if not isinstance(text, str) or is_blank(text):
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


def prepare_prompt(text, name: str, empty: bool = False, empty_fix: str = SHELL_EMPTY_FIX) -> tuple[str, str | None]:
    """A prompt (`empty`: a negative prompt) as every interface takes it: refused when it holds a control character
    or shows nothing (`check_prompt`), stripped, and cut to what encoders read (`cut_prompt`); (the text, a note
    when it was cut)."""
    return cut_prompt(check_prompt(text, name, empty, empty_fix), name)


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words (a dict is an object, a list an array), as every message about a
    file's value names it."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, numbers.Number):
        return "a number"
    kinds = {dict: "an object", list: "an array", tuple: "an array", str: "text", type(None): "null"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), type(value).__name__)


def json_spelling(value) -> str:
    """A value a JSON file gave, as the file spells it (`true`, `null`, `[5000]`; a number as written, where the
    reader kept its spelling: `schemas.SpelledFloat`, `core.settings.SpelledInt`), for a message that quotes it."""
    import json

    if isinstance(value, numbers.Number) and isinstance(getattr(value, "text", None), str):
        return value.text  # `-0`, `1e3`: as written
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, (list, tuple)) and len(value) <= 100:  # each value as written (`[-0, 1e3]`); a long one
        return "[" + ", ".join(map(json_spelling, value)) + "]"  # as JSON writes it (a message shows its start)
    try:  # NaN and Infinity as Python's JSON writes them, never Python's `nan`
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def spelled(value) -> str:
    """A value as a message shows it: a number or name as it was typed where its reader kept the text (`0009`:
    `core.settings.SpelledInt`; `1e-9`: `schemas.SpelledFloat`; `' ddim'`: `SpelledText`), anything else as its
    repr."""
    text = getattr(value, "text", None)
    if isinstance(value, numbers.Number) and isinstance(text, str):
        return text
    if isinstance(value, str) and isinstance(text, str):  # a name typed with blanks around it (`SpelledText`)
        value = text
    if isinstance(value, str) and value and is_blank(value):  # shows nothing: each character that is no space
        return repr(value).translate(
            {ord(ch): f"\\u{ord(ch):04x}" for ch in set(value) if ch != " " and ord(ch) <= 0xFFFF}
        )  # fmt: skip  (`'\ufe0f'`, never a quote that looks empty)
    return repr(value)


def spelled_as_read(value) -> str:
    """`spelled`, and the number read where the nearest float is another number than the one typed (a note about
    what a value does then speaks of the value that ran: `--guidance 1.0000000000000001` runs as 1.0, no guidance)."""
    from decimal import Decimal, InvalidOperation

    shown, text = spelled(value), getattr(value, "text", None)
    if isinstance(value, float) and isinstance(text, str) and math.isfinite(value):
        try:
            other = Decimal(text.strip()).normalize() != Decimal(repr(float(value))).normalize()
        except InvalidOperation:
            other = False
        if other:
            return f"{shown} (read as {float(value)!r}, the nearest float)"
    return shown


def quoted(value, most: int = 100) -> str:
    """`value` as an error message quotes it: `spelled` when short, else its start and end (a file's name
    stays readable) and the value's length: a message stays one readable line, whatever a user typed. (A path is
    quoted whole, as `repr`: a file's full name is what the user needs, and the system bounds its length.)"""
    shown = spelled(value)
    if len(shown) <= most:
        return shown
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(shown):,} characters written out"
    half = most // 2 - 5
    return f"{shown[:half]}...{shown[-half:]} ({size})"


def printable(text: str, lines: bool = False) -> str:
    """`text` as a terminal may show it: each control character (ESC, BEL, ..., and with `lines` false also line
    breaks and tabs) and bidirectional control written as its escape (`\\x1b`, `\\u202e`), so that text from a file
    (a foreign PNG's parameters, a library's message) can neither recolour nor retitle the terminal, nor reorder
    what is shown."""
    keep = LINE_SPACE if lines else ""
    return "".join(ch if ch in keep or not is_control(ch) else ascii(ch)[1:-1] for ch in text)


def name_of(path) -> str:
    """A file's name found on disk, as a message shows it: each control character, line break and tab written as
    its escape (`printable`: one_line would join a line break to a space, naming a file that is not there), and a
    byte that is not UTF-8 (kept by Python as a lone surrogate) as the byte (`\\xff`)."""
    text = "".join(f"\\x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in str(path))
    return printable(text)


def one_line(text: str, most: int = 2000) -> str:
    """A message (an error, a note) as one readable line: each run of blanks holding a line break or a tab as one
    space (a run of plain spaces is kept: a quoted value of three spaces stays three), its control characters
    escaped (`printable`), and, beyond `most` characters, its start and end around the count of characters left
    out (a library's note may quote a whole prompt)."""
    text = printable(re.sub(r"\s*[^\S ]\s*", " ", str(text)).strip())
    if len(text) <= most:
        return text
    half = most // 2
    return f"{text[:half]} ...({len(text) - 2 * half:,} characters)... {text[-half:]}"
