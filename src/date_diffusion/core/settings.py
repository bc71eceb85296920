"""DATE's settings table: every `DATEConfig` field once, with its value kind (parser and range), its command-line
flag, its benchmark key, its web-page label and its help text.

`DATEConfig` validates its fields with these kinds; the command line's DATE flags, the benchmark's `date:KEY=V`
keys and the web page's DATE fields are generated from `SETTINGS`, so every setting exists in every interface and
is parsed and checked the same way. Text (a flag, a key's value, a page field) is parsed by the kind; Python values
(the API) are checked by it; numpy scalars and arrays count as the numbers and lists they hold.

Settings of one `group` are alternatives (`step`: rho or rho_relative; `schedule`: update_every, update_steps or
update_intervals): one source (the user, the model, the paper) sets the whole group.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from date_diffusion.core.text import json_spelling, quoted, spelled

ANCHORS = ("previous", "original")
DIRECTIONS = ("gradient", "random")
REWARD_TARGETS = ("x0", "next")
MAX_INDEX = 10_000  # loop indices beyond any scheduler's step count
MAX_FRAMES = 10_000  # frames of a video a model makes (`--frames`, a record's `num_frames`)
# the blanks a value may be surrounded by: ASCII's only (a no-break space or an ideographic space around a number
# is a pasted character, refused with the number, not stripped as Python's `str.strip` strips it)
BLANKS = " \t\n\r\f\v"


class SettingError(ValueError):
    """A setting's value that cannot run; the message names the setting as the interface calls it, and `setting`
    (where known) is the setting's own name (a `DATEConfig` field, `reward`, `num_inference_steps`, ...)."""

    setting: str | None = None

    def about(self, setting: str) -> SettingError:
        """This error, marked as being about `setting` (the first marking stands)."""
        self.setting = self.setting or setting
        return self


def _num(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:  # a bound: 1000000, never 1e+06
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


class Kind:
    """A value kind: `parse` reads text, `check` validates a Python value; both raise `SettingError` naming `name`."""

    metavar = "VALUE"

    def parse(self, text: str, name: str):
        return text

    def check(self, value, name: str):
        return value

    def from_file(self, raw, name: str):
        """A value a JSON file gives: of the kind's own type, never text standing for a number or a truth value
        (`"10"`, `"true"`), which a file writes without quotes; a kind whose values are text takes text."""
        if isinstance(raw, str) and type(self).parse is not Kind.parse:
            raise SettingError(f"{name} must be written without quotes (as a number, true/false or a list), got the "
                               f"text {quoted(raw)}")  # fmt: skip
        try:
            return self.check(raw, name)
        except SettingError as err:  # quoted as the file spells it (`true`, `null`), not as Python does (`True`)
            raise SettingError(str(err).replace(f"got {raw!r}", f"got {json_spelling(raw)}")) from None

    def value(self, raw, name: str):
        """Text or a Python value -> the checked value (a message about text quotes the text typed)."""
        if not isinstance(raw, str):
            return self.check(raw, name)
        typed = raw.strip(BLANKS)
        try:
            parsed = self.parse(typed, name)
        except SettingError as err:  # as typed, its blanks too (` x ` is quoted `' x '`)
            raise SettingError(str(err).replace(f"got {typed!r}", f"got {raw!r}")) from None
        try:
            return self.check(parsed, name)
        except SettingError as err:  # as typed, its blanks too (`--out " "` is quoted `' '`, never `''`)
            raise SettingError(str(err).replace(f"got {quoted(parsed)}", f"got {raw!r}")) from None

    def format(self, value) -> str:
        """The text `parse` reads back as `value`."""
        return str(value)

    def describe(self) -> str:
        return ""


@dataclass(frozen=True)
class Real(Kind):
    low: float
    high: float
    metavar = "X"

    def _error(self, value, name):
        return SettingError(
            f"{name} must be a finite number >= {_num(self.low)} and <= {_num(self.high)}, got {quoted(value)}"
        )

    def parse(self, text, name):
        try:
            value = parse_real(text)
        except BeyondFloat as err:
            raise SettingError(f"{name}: {err}; write a value >= {_num(self.low)} and <= {_num(self.high)}") from None
        except ValueError:
            raise self._error(text, name) from None
        if math.isfinite(value) and not within(text.strip(BLANKS), self.low, self.high):
            raise self._error(text, name)
        stripped = text.strip(BLANKS)
        return value if repr(value) == stripped else SpelledReal(value, stripped)  # `0` is quoted as typed

    def check(self, value, name):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise self._error(value, name)
        if not within(value, self.low, self.high):
            raise self._error(value, name)
        if isinstance(getattr(value, "text", None), str):  # typed (or a file's: `schemas.SpelledFloat`)
            return SpelledReal(value, value.text)  # a float to everything but a message (`core.text.spelled`)
        return float(value)  # 5 and 5.0 are one setting: every record and fingerprint holds it as the float

    def describe(self):
        return f"{_num(self.low)} to {_num(self.high)}"


def within(value, low, high) -> bool:
    """Whether a number lies in [low, high] as it was written: a number's text (typed, or kept by a number read from
    a file: `schemas.SpelledFloat`'s `text`) is compared as the decimal it spells, not as the float it rounds to
    (`100.00000000000000001` is above 100, though its float is 100.0)."""
    spelled = value if isinstance(value, str) else getattr(value, "text", None)
    if isinstance(spelled, str):
        return Decimal(low) <= Decimal(spelled) <= Decimal(high)
    return low <= value <= high


def _integer(value, name: str, low: int, high: int, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise SettingError(f"{name} must be {what} from {low} to {high}, got {quoted(value)}") from None
    if not low <= number <= high:
        raise SettingError(f"{name} must be {what} from {low} to {high}, got {quoted(value)}")
    return value if isinstance(value, SpelledInt) else number  # a later message quotes it as typed too


class SpelledReal(float):
    """A number read from text that keeps the text it was written as (`text`: `0`, `0.50`, `1e-1`) where that differs
    from the float's own spelling, for a later message (`core.text.spelled`: `--guidance 0 has no effect`).
    Everything else (`repr`, `str`, arithmetic, `json.dumps`, records, fingerprints) sees the plain float."""

    def __new__(cls, value, text=None):
        number = super().__new__(cls, value)
        if text is not None:
            number.text = text
        return number


class SpelledText(str):
    """A name read from text with the blanks around it (a shell's quoting) stripped, keeping the text typed (`text`)
    where it differs, so that a later message (an unknown scheduler or reward) quotes what was typed
    (`core.text.spelled`). Everything else (comparisons, `json.dumps`, records) sees the plain stripped name."""

    def __new__(cls, text):
        name = super().__new__(cls, text.strip())
        if name != text:
            name.text = str(text)
        return name


class SpelledInt(int):
    """An integer read from text that keeps the text it was written as (`text`: `0009`, `+4`) where that differs
    from its digits, so that a later message (an update step outside the run, a batch size out of range) quotes what
    was typed (`core.text.quoted`, `spelled`). Everything else (`repr`, `str`, arithmetic, `json.dumps`, the records
    written) sees the plain integer."""

    def __new__(cls, text):
        if not isinstance(text, str):  # a copy or an unpickling: the value itself (`__dict__` restores the text)
            return super().__new__(cls, text)
        number = super().__new__(cls, text)
        number.text = text
        return number


_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_DIGITS = 4000  # below Python's limit on converting text to int (4300 digits); far beyond any integer here


def parse_integer(text) -> int:
    """The one reading of an integer from text, at every boundary (the command line's `type=int`, setting kinds,
    the page, files, benchmark specs, comma lists): ASCII digits with an optional sign, surrounding blanks allowed.
    Python's `int()` also takes `1_000`, non-ASCII digits (`١٢`) and other spellings nobody types as a number on
    purpose; they are refused (ValueError), never read as another number than the one shown."""
    stripped = text.strip(BLANKS) if isinstance(text, str) else None
    if stripped is None or not _INTEGER.fullmatch(stripped) or len(stripped) > MAX_DIGITS:
        raise ValueError(f"invalid integer {quoted(text)}: write it with the digits 0-9 and an optional sign")
    number = int(stripped)
    return number if str(number) == stripped else SpelledInt(stripped)  # `0009` is quoted as typed, not as `9`


_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


class BeyondFloat(ValueError):
    """A number written in digits that a 64-bit float cannot hold: it would read as infinity or as 0."""


def parse_real(text) -> float:
    """The one reading of a real number from text (every float flag, setting kind, LoRA scale and reward weight):
    ASCII decimal or scientific notation with an optional sign, surrounding blanks allowed; `inf` and `nan` are read
    (so that a range check names them). Python's `float()` also takes `1_0` (a mistyped `1.0` read as 10) and other
    scripts' digits (`٣`); they are refused (ValueError), never read as another number than the one shown. So is a
    number beyond a float's range (`1e400`, `1e-400`: BeyondFloat), which `float()` reads as infinity or 0."""
    stripped = text.strip(BLANKS) if isinstance(text, str) else None
    if stripped is None or len(stripped) > MAX_DIGITS or not _REAL.fullmatch(stripped):
        raise ValueError(
            f"invalid number {quoted(text)}: write it with the digits 0-9, a point and an optional exponent"
        )
    value = float(stripped)
    finite_text = stripped.lstrip("+-")[:1].lower() not in ("i", "n")
    mantissa = re.split("[eE]", stripped)[0]
    if finite_text and math.isinf(value):
        raise BeyondFloat(f"number {quoted(text)} is too large for a 64-bit float (it reads as infinity)")
    if value == 0 and any(digit in "123456789" for digit in mantissa):
        raise BeyondFloat(f"number {quoted(text)} is too small for a 64-bit float (it reads as 0)")
    return value


def is_integer(text) -> bool:
    """Whether `parse_integer` reads `text` (a file or folder name made of digits, ...)."""
    try:
        parse_integer(text)
    except ValueError:
        return False
    return True


def is_real(text) -> bool:
    """Whether `parse_real` reads `text` (the part after a LoRA file's last `:`, ...)."""
    try:
        parse_real(text)
    except ValueError:
        return False
    return True


def _parse_int(text: str, name: str, low: int, high: int, what: str):
    try:
        return parse_integer(text)
    except ValueError:
        raise SettingError(f"{name} must be {what} from {low} to {high}, got {quoted(text)}") from None


@dataclass(frozen=True)
class Integer(Kind):
    low: int
    high: int
    metavar = "N"

    def parse(self, text, name):
        return _parse_int(text, name, self.low, self.high, "an integer")

    def check(self, value, name):
        return _integer(value, name, self.low, self.high, "an integer")

    def describe(self):
        return f"{self.low} to {self.high}"


MAX_SEED = 2**63 - 1  # torch generators take seeds in [0, 2**63) without wrapping
DEFAULT_SEED = 0  # `--seed` not given, the page's seed field left blank


class _OwnMessageInteger(Kind):
    """An integer kind whose every refusal is one message of its own (`_error`), within `_bounds()`."""

    def _error(self, value, name) -> SettingError:
        raise NotImplementedError

    def _bounds(self) -> tuple[int, int]:
        raise NotImplementedError

    def parse(self, text, name):
        try:
            return parse_integer(text)
        except ValueError:
            raise self._error(text, name) from None

    def check(self, value, name):
        try:
            return _integer(value, name, *self._bounds(), "an integer")
        except SettingError:
            raise self._error(value, name) from None


@dataclass(frozen=True)
class Seed(_OwnMessageInteger):
    """A generator seed: an integer in [0, 2**63)."""

    metavar = "SEED"

    def _error(self, value, name):
        return SettingError(f"{name} must be in [0, 2**63), got {quoted(value)}")

    def parse(self, text, name):
        try:
            return parse_integer(text)
        except ValueError:  # not a number as the digits 0-9 write it (`１`, `1e3`, `x`): said so, not a range
            raise SettingError(f"{name} must be a whole number written with the digits 0-9, in [0, 2**63), got "
                               f"{quoted(text)}") from None  # fmt: skip

    def _bounds(self):
        return 0, MAX_SEED

    def describe(self):
        return "0 to 2**63 - 1"


@dataclass(frozen=True)
class Size(_OwnMessageInteger):
    """An image side in pixels: a positive multiple of `step` up to `high`."""

    high: int = 4096
    step: int = 8
    metavar = "PX"

    def _error(self, value, name):
        return SettingError(f"{name} must be a positive multiple of {self.step} up to {self.high}, got {quoted(value)}")

    def _bounds(self):
        return self.step, self.high

    def check(self, value, name):
        number = super().check(value, name)
        if number % self.step:
            raise self._error(value, name)
        return number

    def describe(self):
        return f"a multiple of {self.step} up to {self.high}"


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...]

    @property
    def metavar(self):
        return "{" + ",".join(self.choices) + "}"

    def check(self, value, name):
        if value not in self.choices:
            raise SettingError(f"{name} must be one of {', '.join(self.choices)}, got {quoted(value)}")
        return value

    def describe(self):
        return ""  # the choices are the metavar


class Text(Kind):
    """Text, non-empty unless `empty` (blanks alone are no text): a folder, a hub id, a reward spec, a name; with
    `prose`, text an encoder reads (a prompt: blanks at its ends are stripped by `core.text.check_prompt`), where a
    no-break space at an end is no pasted character to refuse."""

    def __init__(self, empty: bool = False, prose: bool = False):
        self.empty, self.prose = empty, prose

    def check(self, value, name):
        if not isinstance(value, str) or not (self.empty or value.strip()):
            raise SettingError(f"{name} must be a non-empty text, got {quoted(value)}")
        inner = "" if self.prose else value.strip(BLANKS)
        for end, ch in (("start", inner[:1]), ("end", inner[-1:])):
            if ch.isspace():  # a no-break or ideographic space, pasted: refused as beside a number, never stripped
                raise SettingError(f"{name} {quoted(value)} has U+{ord(ch):04X} {unicodedata.name(ch, 'a blank')} at "
                                   f"its {end} (a pasted character): remove it")  # fmt: skip
        return value


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Boolean(Kind):
    metavar = "{true,false}"

    def parse(self, text, name):
        word = text.lower()
        if word not in TRUE + FALSE:
            raise SettingError(f"{name} must be one of {'/'.join(TRUE + FALSE)}, got {quoted(text)}")
        return word in TRUE

    def check(self, value, name):
        if type(value).__name__ not in ("bool", "bool_"):  # Python's or numpy's, never 0/1 or a string
            raise SettingError(f"{name} must be True or False, got {quoted(value)}")
        return bool(value)

    def format(self, value):
        return "true" if value else "false"

    def describe(self):
        return "true or false"


def _items(text: str, name: str) -> list[str]:
    """A list's items in text: separated by commas or semicolons (the benchmark's specs use semicolons). A blank
    item (`1,,2`, `1,2,`) is a slip, refused rather than read as one item fewer; so is a list of none (`''`: the
    option left out says "none given", never an empty value read as a list of nothing)."""
    if not text.strip(BLANKS):
        raise SettingError(f"{name} is empty ({quoted(text)}): give at least one item, or leave it out")
    items = [v.strip(BLANKS) for v in text.replace(";", ",").split(",")]
    if not all(items):
        raise SettingError(f"{name} has an empty item in {quoted(text)}: separate the items by single commas")
    return items


def listed_twice(items) -> list[str]:
    """The values a list gives more than once (as text, sorted, each as typed: `01 (the same as 1)` where the two
    spellings differ, `core.settings.SpelledInt`): every list reader refuses them."""

    def shown(value) -> str:
        text = getattr(value, "text", None)
        return text if isinstance(text, str) else str(value)

    twice = []
    for k, value in enumerate(items):
        if value in items[:k]:
            first = shown(items[items.index(value)])
            twice.append(shown(value) if shown(value) == first else f"{shown(value)} (the same as {first})")
    return sorted(dict.fromkeys(twice))


def _sequence(value, name: str, what: str) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise SettingError(f"{name} must be a list of {what}, got {quoted(value)}")
    return list(value.tolist() if hasattr(value, "tolist") else value)  # numpy arrays count as lists


@dataclass(frozen=True)
class IndexList(Kind):
    """Loop indices: `0,10,20` (or `0;10;20`)."""

    metavar = "I,J,..."

    def parse(self, text, name):
        return [_parse_int(v, name, 0, MAX_INDEX, "a list of loop indices") for v in _items(text, name)]

    def check(self, value, name):
        items = tuple(
            _integer(i, name, 0, MAX_INDEX, "a list of loop indices") for i in _sequence(value, name, "loop indices")
        )
        twice = listed_twice(items)
        if twice:  # a list's value given twice is refused, as every list option's (cli.common._once_each)
            given = ",".join(map(spelled, items))
            raise SettingError(f"{name} lists {', '.join(twice)} twice, got {given}: list each once")
        return items

    def format(self, value):
        return ";".join(str(v) for v in value)

    def describe(self):
        return "comma-separated"


@dataclass(frozen=True)
class IntervalList(Kind):
    """`(start, end)` pairs of loop indices: `0:5,20:25` (or `0:5;20:25`), every index with start <= i < end."""

    metavar = "S:E,..."

    def parse(self, text, name):
        pairs = []
        for item in _items(text, name):  # each refused as typed (`2:0`, `1:2:3`, `:2`), never a piece or a list
            ends = item.split(":")
            if len(ends) != 2 or not all(map(is_integer, ends)) or not 0 <= parse_integer(ends[0]) < parse_integer(
                    ends[1]) <= MAX_INDEX:  # fmt: skip
                raise SettingError(f"{name} must be START:END pairs of loop indices with 0 <= START < END <= "
                                   f"{MAX_INDEX}, like 0:5,20:25, got {quoted(item)}")  # fmt: skip
            pairs.append((parse_integer(ends[0]), parse_integer(ends[1])))
        return pairs

    def check(self, value, name):
        pairs = []
        for pair in _sequence(value, name, "(start, end) pairs"):
            pair = _sequence(pair, name, "(start, end) pairs")
            if len(pair) != 2:
                raise SettingError(f"{name} must be (start, end) pairs with 0 <= start < end, got {quoted(value)}")
            start, end = (_integer(v, name, 0, MAX_INDEX, "pairs of loop indices") for v in pair)
            if not start < end:
                raise SettingError(f"{name} must be (start, end) pairs with 0 <= start < end, got "
                                   f"{spelled(start)}:{spelled(end)}")  # fmt: skip
            pairs.append((start, end))
        ordered = sorted(pairs)
        for (s1, e1), (s2, e2) in zip(ordered, ordered[1:]):
            if s2 < e1:  # a step in two intervals: listed twice, as in every list option
                first, second = (f"{spelled(s)}:{spelled(e)}" for s, e in ((s1, e1), (s2, e2)))
                raise SettingError(f"{name}: the intervals {first} and {second} overlap (step {s2} is in both): "
                                   "give each step once")  # fmt: skip
        return tuple(pairs)

    def format(self, value):
        return ";".join(f"{s}:{e}" for s, e in value)

    def describe(self):
        return "comma-separated"


@dataclass(frozen=True)
class Setting:
    field: str  # the DATEConfig field (the API's name)
    kind: Kind
    flag: str  # the command line's flag
    key: str  # the benchmark's `date:KEY=V` key
    label: str  # the web page's field label (and its name in the page's messages)
    help: str
    group: str | None = None  # alternatives: one source sets the whole group
    optional: bool = False  # None is a valid value (another member of the group is used)

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def elem_id(self) -> str:
        """The web page's element id of the field."""
        return "date-" + self.field.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("rho", Real(0.0, 100.0), "--rho", "rho", "rho",
            "update distance per sample (Frobenius norm of the embedding's change)", group="step", optional=True),
    Setting("rho_relative", Real(0.0, 1.0), "--rho-relative", "rel", "rho (relative)",
            "scale-free step instead of rho: each update moves this fraction of the prompt embedding's norm (the "
            "paper's rho 0.5 on SD 1.5 is 0.002)", group="step", optional=True),
    Setting("update_every", Integer(1, MAX_INDEX), "--update-every", "every", "update every",
            "update at sampling steps i % N == 0 (steps as diffusers counts them, whatever the scheduler)",
            group="schedule", optional=True),
    Setting("update_steps", IndexList(), "--update-steps", "steps", "update steps",
            "update at these sampling steps, e.g. 0,10,20", group="schedule", optional=True),
    Setting("update_intervals", IntervalList(), "--update-intervals", "intervals", "update intervals",
            "update at every step of these START:END ranges (END excluded), e.g. 0:5,20:25", group="schedule",
            optional=True),
    Setting("grad_steps", Integer(1, 100), "--grad-steps", "grad", "gradient steps", "gradient steps per update step"),
    Setting("anchor", Choice(ANCHORS), "--anchor", "anchor", "anchor",
            "previous: updates accumulate (the reference); original: each update re-anchors to the prompt embedding"),
    Setting("prior_weight", Real(0.0, 1e4), "--prior-weight", "prior", "prior weight",
            "weight of mean((c - c_org)^2) added to the loss"),
    Setting("track_reward_after", Boolean(), "--track-reward-after", "track", "track reward after",
            "also score x0_hat after each update, for the trace only (one more decode and reward)"),
    Setting("direction", Choice(DIRECTIONS), "--direction", "direction", "direction",
            "ablation: random moves each sample rho in a random direction instead of along the gradient"),
    Setting("normalize", Boolean(), "--normalize", "normalize", "normalize",
            "ablation: false takes the raw step rho * g instead of rho * g / ||g||"),
    Setting("reward_target", Choice(REWARD_TARGETS), "--reward-target", "target", "reward target",
            "ablation: next scores the decoded next noisy sample instead of the clean estimate x0_hat"),
)  # fmt: skip
BY_FIELD = {s.field: s for s in SETTINGS}
BY_KEY = {s.key: s for s in SETTINGS}
GROUPS: dict[str, tuple[str, ...]] = {}
for _s in SETTINGS:
    GROUPS.setdefault(_s.group or _s.field, ())
    GROUPS[_s.group or _s.field] += (_s.field,)


DTYPES = ("float32", "float16", "bfloat16")  # the weights' precisions a model is loaded in (`--dtype`, run.json)
MAX_STEPS = 1000  # every supported family is trained on 1000 timesteps; schedulers refuse more
MAX_BATCH = 1024  # images per forward pass (`--batch-size`, run.json's `batch_size`)
MAX_GUIDANCE = 100.0  # far above any model's useful range; larger values only overflow to black images
# the sampling settings resolved beside DATE's (`resolver`), with their kinds
SAMPLING = {"num_inference_steps": Integer(1, MAX_STEPS), "guidance_scale": Real(0.0, MAX_GUIDANCE)}


def given_twice(key: str, spec: str) -> SettingError:
    """The refusal of a key given twice in one spec (`date:rho=1,rho=2`): never the last one silently."""
    return SettingError(f"{key} is given twice in {quoted(spec)}: give each key once")


def spec_items(body: str, spec: str) -> list[str]:
    """A benchmark spec's `KEY=V,KEY=V` items (none for an empty body). A blank item (`date:rho=0.5,`,
    `date:rho=1,,every=2`) is a slip, refused as the lists' blank items are, never dropped without a word."""
    items = body.split(",") if body else []
    if not all(item.strip() for item in items):
        raise SettingError(f"{quoted(spec)} has an empty item: separate its KEY=VALUE settings by single commas")
    return items


def parse_keys(text: str, spec: str) -> dict:
    """The benchmark's `KEY=V,KEY=V` DATE settings -> DATEConfig keyword arguments (keys from `SETTINGS`)."""
    out = {}
    for item in spec_items(text, spec):
        key, eq, value = item.partition("=")
        if key not in BY_KEY or not eq:
            raise SettingError(f"bad setting {quoted(item)} in {quoted(spec)}; keys: {', '.join(BY_KEY)}")
        setting = BY_KEY[key]
        if setting.field in out:
            raise given_twice(key, spec)
        out[setting.field] = setting.kind.value(value, f"{key} in {quoted(spec)}")
    return out


def format_keys(values: dict) -> str:
    """DATEConfig keyword arguments -> the benchmark's `KEY=V,...` text (inverse of `parse_keys`)."""
    return ",".join(f"{BY_FIELD[f].key}={BY_FIELD[f].kind.format(v)}" for f, v in values.items() if v is not None)
