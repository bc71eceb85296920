"""The reward registry: every reward by name, and rewards built from text specs such as `0.5*clip-l+1*imagereward`.

A spec is one term or a `+`-sum of `WEIGHT*TERM`; a term is `NAME`, `NAME:SOURCE` (a folder, file or hub id), or a
wrapper around a spec: `augK(SPEC)` (K augmented views), `mean(SPEC;SPEC;...)` (ensemble), `subjects(SPEC)`
(subject-aware). `clip-l` is the paper's CLIP.

Each reward is one `RewardRecord` (its name, builder, what source it takes and its words in `SPEC_HELP`); the
built-in ones are `BUILT_IN`, and a plugin (`plugins.py`; the toy world's `toy-clip`, `toy-ensemble`, ... come so)
adds its own with `register_reward`, and names it renamed with `register_renamed` (refused with the new name).
`SPEC_HELP` and docs/rewards.md's list are made from the records. A spec is parsed once (`parse_spec`) into a tree
of `Sum`, `Named`, `Augmented`, `Mean` and `Subjects`; checking reads the tree, building walks it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from date_diffusion import plugins
from date_diffusion.core.config import nonzero_in_float32
from date_diffusion.core.settings import Real, is_real, parse_integer
from date_diffusion.core.text import quoted
from date_diffusion.hub import PAPER_CLIP, is_local_path

# Each builder imports its reward's module when called: the command line imports this registry to build its
# help and check specs, before (or without) importing torch and transformers.


class RewardSpecError(ValueError):
    """A reward spec that names no known reward, or has a malformed weight."""


class UnknownReward(RewardSpecError):
    """A reward spec well formed but naming a reward not registered here (a plugin's, not installed)."""


SOURCES = ("none", "optional", "required")


@dataclass(frozen=True)
class RewardRecord:
    """One reward. `build(source, device)` makes it (`source` None where the spec gives none); `source` is what
    the spec may give after `NAME:` (`none`, `optional`, `required`); `help` its words in `SPEC_HELP` ("" where a
    neighbour's words cover it, or to leave it unlisted); `alone`, for a required source, the message when the name
    comes without one (default: the generic one)."""

    name: str
    build: Callable
    source: str = "none"
    help: str = ""
    alone: str | None = None
    members: tuple[str, ...] = ()  # an ensemble's rewards (by name), each run for one score
    from_hub: bool = False  # without a source its model comes from the hub (`clip-l`: openai/clip-vit-large-patch14)

    @property
    def runs(self) -> int:
        """The models one score runs (an ensemble's members): what a request's cost counts."""
        return max(1, len(self.members))

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"reward {self.name!r}: source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"reward name {self.name!r}: letters, digits, '_', '.' and '-' only")


@dataclass(frozen=True)
class Renamed:
    """A name of an earlier version: refused with its new name. `owner` is whose reward it is (`the toy world`);
    `what`, for an old name that is now a reward taking a source, what the new one is (`its CLIP`)."""

    old: str
    new: str
    owner: str
    what: str = ""


def _clip(source, device):
    """`clip:ID_OR_PATH`: any CLIP in transformers format."""
    from date_diffusion.rewards.clip import CLIPScoreReward

    return CLIPScoreReward.from_pretrained(source, device=device)


@dataclass(frozen=True)
class ClipAlias:
    """The builder of a named CLIP at a fixed `target` (a folder or hub id), such as `clip-l`: the name is another
    spelling of `clip:TARGET` (`spec`), which `canonical` and the twice-listed checks see through."""

    target: str

    def __call__(self, source, device):
        return _clip(self.target, device)

    @property
    def spec(self) -> str:
        return f"clip:{self.target}"


def clip_alias(target) -> ClipAlias:
    """A builder of the CLIP at `target` (a fixed folder or hub id): a named CLIP such as `clip-l`."""
    return ClipAlias(str(target))


def _pickscore(source, device):
    from date_diffusion.rewards.clip import PickScoreReward

    return PickScoreReward.from_pretrained(source, device=device)


def _imagereward(source, device):
    from date_diffusion.rewards.imagereward import ImageRewardReward

    return ImageRewardReward.from_pretrained(source, device=device)


def _aesthetic(source, device):
    from date_diffusion.rewards.aesthetic import AestheticReward

    return AestheticReward.from_pretrained(source, device=device)


def _openclip(quick_gelu: bool) -> Callable:
    """`openclip:FILE` (LAION's GELU models) and `openclip-quickgelu:FILE` (OpenAI-trained weights): an
    OpenCLIP-format ViT checkpoint (file, folder or hub repo), its architecture read from the weights' shapes."""

    def build(source, device):
        from date_diffusion.rewards.openclip import OpenCLIPReward

        return OpenCLIPReward.from_checkpoint(source, quick_gelu=quick_gelu, device=device)

    return build


def _hps(version: str) -> Callable:
    """`hpsv2[:FILE]`, `hpsv2.1[:FILE]`: HPS checkpoint from a file, a folder or the hub (default xswu/HPSv2)."""

    def build(source, device):
        from date_diffusion.rewards.hps import HPSReward

        return HPSReward.from_pretrained(source, version=version, device=device)

    return build


BUILT_IN: tuple[RewardRecord, ...] = (
    RewardRecord("clip-l", clip_alias(PAPER_CLIP), help="clip-l (the paper's CLIP ViT-L/14)", from_hub=True),
    RewardRecord("clip", _clip, "required", "clip:ID_OR_PATH",
                 alone="'clip' alone names no model: use clip-l (the paper's CLIP ViT-L/14), clip:ID_OR_PATH"),
    RewardRecord("pickscore", _pickscore, "optional", "pickscore[:ID]", from_hub=True),
    RewardRecord("imagereward", _imagereward, "optional", "imagereward[:DIR]", from_hub=True),
    RewardRecord("aesthetic", _aesthetic, "optional", "aesthetic[:FILE]", from_hub=True),
    RewardRecord("openclip", _openclip(False), "required",
                 "openclip:FILE (an OpenCLIP-format ViT checkpoint; openclip-quickgelu:FILE for OpenAI-trained "
                 "weights)"),
    RewardRecord("openclip-quickgelu", _openclip(True), "required"),
    RewardRecord("hpsv2", _hps("hpsv2"), "optional", "hpsv2[:FILE] and hpsv2.1[:FILE] (100 x cosine)", from_hub=True),
    RewardRecord("hpsv2.1", _hps("hpsv2.1"), "optional", from_hub=True),
)  # fmt: skip
GRAMMAR_HELP = (
    "weighted sums like 0.5*clip-l+1*imagereward, and wrappers "
    "augK(SPEC) (mean over K augmented views), mean(SPEC;SPEC;...) and subjects(SPEC) (subject-aware)"
)
_RECORDS: dict[str, RewardRecord] = {r.name: r for r in BUILT_IN}
_RENAMED: dict[str, Renamed] = {}


def register_reward(record: RewardRecord) -> None:
    """Add a reward (a plugin's) by its record; a name already taken is refused (the same record again: nothing)."""
    if not isinstance(record, RewardRecord):
        raise TypeError(f"register_reward() takes a RewardRecord, got {type(record).__name__}")
    known = _RECORDS.get(record.name)
    if known is not None and known != record:
        raise ValueError(f"reward {record.name!r} is registered already")
    if record.name in _RENAMED:
        raise ValueError(f"reward name {record.name!r} is an earlier name of {_RENAMED[record.name].new!r}")
    _RECORDS[record.name] = record


def register_renamed(old: str, new: str, owner: str, what: str = "") -> None:
    """Refuse `old` (an earlier version's name) with its new name `new`; where `old` is still a reward that takes a
    source (`clip`), its message when given alone names `new` too."""
    entry = Renamed(old, new, owner, what)
    if _RENAMED.get(old, entry) != entry:
        raise ValueError(f"reward name {old!r} is renamed already, to {_RENAMED[old].new!r}")
    _RENAMED[old] = entry


def records() -> tuple[RewardRecord, ...]:
    """Every reward's record: the built-in ones, then the plugins' (loaded on first use)."""
    plugins.load()
    return tuple(_RECORDS.values())


def standalone_names() -> list[str]:
    """The rewards a spec may name alone (no `NAME:SOURCE`): what a place that takes no sources (the page) offers."""
    return [r.name for r in records() if r.source != "required"]


def renamed() -> dict[str, str]:
    """Earlier names -> new names."""
    plugins.load()
    return {old: r.new for old, r in _RENAMED.items()}


def spec_help() -> str:
    """What a reward spec may be, made from the records (`SPEC_HELP`)."""
    return ", ".join([*(r.help for r in records() if r.help), GRAMMAR_HELP])


def reward_list() -> str:
    """docs/rewards.md's list of rewards (a Markdown table), made from the records."""
    rows = [f"| `{r.name}` | {r.source} | {r.help or '-'} |" for r in records()]
    return "\n".join(["| reward | source | in `--reward`'s help |", "|---|---|---|", *rows]) + "\n"


def __getattr__(name):
    if name == "SPEC_HELP":  # made when asked: plugins add rewards
        return spec_help()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- a spec, parsed once -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """`NAME` or `NAME:SOURCE`."""

    name: str
    source: str | None


@dataclass(frozen=True)
class Augmented:
    """`augK(SPEC)`."""

    views: int
    inner: Sum


@dataclass(frozen=True)
class Mean:
    """`mean(SPEC;SPEC;...)`."""

    parts: tuple[Sum, ...]


@dataclass(frozen=True)
class Subjects:
    """`subjects(SPEC)`."""

    inner: Sum


@dataclass(frozen=True)
class Sum:
    """A spec: `WEIGHT*TERM + ...` (one term of weight 1 is the term itself)."""

    terms: tuple[tuple[float, Named | Augmented | Mean | Subjects], ...]


# bounds that keep a spec's cost finite: views of augK(...), wrappers inside each other, a term's weight
MAX_VIEWS, MAX_NESTING, MAX_WEIGHT = 64, 8, 1e6
WEIGHT = Real(-MAX_WEIGHT, MAX_WEIGHT)  # a reward term's weight (`2*clip-l`)
MAX_TERMS, MAX_SPEC_CHARS = 32, 4096  # rewards scored per image, and a spec's length (each term is a model's run)


def _split(text: str, sep: str) -> list[str]:
    """`text` split at `sep` outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise RewardSpecError(f"unbalanced parentheses in reward {quoted(text)}; use {spec_help()}")
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise RewardSpecError(f"unbalanced parentheses in reward {quoted(text)}; use {spec_help()}")
    return [*parts, cur]


def _wrapped(name: str, inner: str, known: dict):
    """`augK(...)`, `mean(...;...)`, `subjects(...)`."""
    if m := re.fullmatch(r"aug([0-9]+)", name):
        views = parse_integer(m.group(1))
        if not 1 <= views <= MAX_VIEWS:
            raise RewardSpecError(f"{name}(...) needs 1 to {MAX_VIEWS} views, e.g. aug8(clip-l)")
        return Augmented(views, _sum(inner, known))
    if name == "mean":
        parts = tuple(_sum(part, known) for part in _split(inner, ";"))
        if len(parts) == 1:  # the reward itself, under another spelling
            raise RewardSpecError(f"mean({inner}) is the mean of one reward, which is that reward: write {inner}, "
                                  "or mean(A;B) for the mean of two or more")  # fmt: skip
        _once(parts, _split(inner, ";"), f"{name}({inner})", "weight it in a sum instead (2*A+B)")
        return Mean(parts)
    if name == "subjects":
        found = _sum(inner, known)
        if any(isinstance(node, Subjects) for node in _nodes(found)):
            raise RewardSpecError(f"subjects({inner}) splits the prompt's subjects inside a split: give "
                                  "subjects(...) once, around the reward")  # fmt: skip
        return Subjects(found)
    raise RewardSpecError(f"unknown reward wrapper {quoted(name)}; use {spec_help()}")


def _term(term: str, known: dict):
    """One `NAME`, `NAME:SOURCE` or `WRAPPER(...)`."""
    if m := re.fullmatch(r"([A-Za-z0-9_-]+)\((.*)\)", term, flags=re.S):
        return _wrapped(m.group(1), m.group(2), known)
    kind, colon, source = term.partition(":")
    _refuse_old_name(kind, source, known)
    record = known.get(kind)
    well_formed = re.fullmatch(r"[A-Za-z0-9_.-]+", kind) and not (colon and not source) and "(" not in term
    if record is None and well_formed and ")" not in term:
        raise UnknownReward(f"unknown reward {quoted(term)}; use {spec_help()}")
    if record is None or (colon and not source) or "(" in term or ")" in term:
        raise RewardSpecError(f"unknown reward {quoted(term)}; use {spec_help()}")
    if not source and record.source == "required":
        raise RewardSpecError(f"reward {quoted(kind)} needs a checkpoint: {kind}:FILE (a file, folder or hub repo)")
    if source and record.source == "none":
        shown = source if len(source) <= 60 else "SOURCE"
        raise RewardSpecError(
            f"reward {kind!r} takes no source ({quoted(term)}); for a model of your own use clip:{shown}"
        )
    return Named(kind, source or None)


def _refuse_old_name(kind: str, source: str, known: dict) -> None:
    """A name alone that names no model (`clip`), and earlier versions' names, refused with what to write."""
    old = _RENAMED.get(kind)
    record = known.get(kind)
    if record is not None and record.alone and not source:
        also = f", or on {old.owner} {old.new} ({old.what}, called {kind!r} in earlier versions)" if old else ""
        raise RewardSpecError(record.alone + also)
    if old is not None and record is None:
        raise RewardSpecError(f"reward {kind!r} is {old.owner}'s, now called {old.new!r}")


def _sum(spec: str, known: dict) -> Sum:
    terms = [t.strip() for t in _split(str(spec), "+")]
    if not any(terms) or not all(terms):
        raise RewardSpecError(f"empty reward term in {quoted(str(spec))}; use {spec_help()}")
    weighted = []
    for term in terms:
        weight, star, rest = term.partition("*") if "*" in term.split("(")[0] else ("", "", term)
        name = rest.strip().split(":")[0].split("(")[0]
        if any(c.isspace() for c in weight.strip() + name):  # a weight or a name holds no blank (a source path may)
            raise RewardSpecError(f"reward term {quoted(term)} holds a space: the terms of a sum are joined by '+' "
                                  "(toy-clip+0.5*toy-clip-eval)")  # fmt: skip
        if star and "*" in rest.split("(")[0]:
            raise RewardSpecError(f"reward term {quoted(term)} has more than one weight: give one, before the reward "
                                  "(2*clip-l)")  # fmt: skip
        if star and is_real(rest.strip()) and not is_real(weight.strip()):
            raise RewardSpecError(f"reward term {quoted(term)}: the weight goes before the reward: "
                                  f"{rest.strip()}*{weight.strip()}")  # fmt: skip
        try:  # a refusal quotes the weight as typed (`1e7`), never as Python spells it (`10000000.0`)
            w = WEIGHT.value(weight, "the weight") if star else 1.0
        except ValueError as err:
            raise RewardSpecError(f"bad weight in reward {quoted(term)}: {err}") from err
        if not nonzero_in_float32(abs(w)):  # its model would run at every update for a term that adds nothing
            raise RewardSpecError(f"reward term {quoted(term)} has weight 0 (in 32-bit floats) in {quoted(str(spec))}: "
                                  "it would run for nothing; leave it out")  # fmt: skip
        weighted.append((w, _term((rest if star else term).strip(), known)))
    names = [(rest if "*" in t.split("(")[0] else t).strip() for t in terms for _, _, rest in [t.partition("*")]]
    _once([node for _, node in weighted], names, str(spec), "give it once, with the sum of the weights")
    scored = [leaf for _, node in weighted for leaf in _scored(node)]
    models = [_model(leaf) for leaf in scored]
    for k, leaf in enumerate(scored):  # through a mean too: `mean(a;b)+a` runs `a` twice for 1.5*a + 0.5*b
        if models[k] in models[:k]:
            raise RewardSpecError(
                f"reward {quoted(_as_written(leaf))} is scored twice in {quoted(str(spec))} "
                "(in a mean or an ensemble, and beside it): give it once, weighted (1.5*a+0.5*b for mean(a;b)+a)"
            )
    return Sum(tuple(weighted))


def _nodes(node):
    """`node` and every node inside it (sums, means, wrappers)."""
    yield node
    inner = [t for _, t in node.terms] if isinstance(node, Sum) else list(node.parts) if isinstance(node, Mean) else (
        [node.inner] if hasattr(node, "inner") else [])  # fmt: skip
    for child in inner:
        yield from _nodes(child)


def _model(node):
    """A node as the model it runs, for telling two spellings of one reward apart: a name that is another spelling
    of a `clip:TARGET` (`toy-clip`, `clip-l`: `ClipAlias`) as that, and a source that is a path here by its real
    path (`clip:./x` and `clip:/abs/x`); any other node as it is."""
    if not isinstance(node, Named):
        return node
    record = _RECORDS.get(node.name)
    spec = getattr(record.build, "spec", None) if record is not None and node.source is None else None
    if spec is not None:
        name, _, source = spec.partition(":")
        node = Named(name, source)
    if node.source and is_local_path(node.source):
        node = Named(node.name, os.path.realpath(os.path.expanduser(node.source)))
    return node


def shared_model(spec: str, other: str) -> str | None:
    """A model both specs run (through sums, means, wrappers and ensembles, each spelling of it seen through:
    `_model`), as the first spec writes it, or None: a held-out metric that is the reward would score the reward."""

    def models(text):  # every named reward anywhere in the tree, an ensemble as its members (`_scored`)
        leaves = [leaf for node in _nodes(parse_spec(text)) if isinstance(node, Named) for leaf in _scored(node)]
        return {_model(leaf): leaf for leaf in leaves}

    theirs = models(other)
    return next((_as_written(leaf) for model, leaf in models(spec).items() if model in theirs), None)


def _scored(node):
    """The rewards a spec's node runs, through sums and means (a wrapper, `augK` or `subjects`, scores otherwise
    than its reward alone: it is one of them)."""
    if isinstance(node, Sum):
        for _, term in node.terms:
            yield from _scored(term)
    elif isinstance(node, Mean):
        for part in node.parts:
            yield from _scored(part)
    elif isinstance(node, Named) and node.name in _RECORDS and _RECORDS[node.name].members:
        for member in _RECORDS[node.name].members:  # an ensemble is the mean of its members: `mean(...)` by name
            yield Named(member, None)
    else:
        yield node


def _as_written(node) -> str:
    """A node as a spec writes it (for messages)."""
    if isinstance(node, Named):
        return node.name + (f":{node.source}" if node.source else "")
    if isinstance(node, Augmented):
        return f"aug{node.views}(...)"
    return "subjects(...)" if isinstance(node, Subjects) else "mean(...)"


def _once(nodes, texts, spec: str, fix: str) -> None:
    """One reward listed twice in one sum or mean (`clip+clip`, `mean(a;a)`) is refused: the model would run once
    per listing for what one listing with a weight says."""
    models = [_model(node) for node in nodes]
    for k, node in enumerate(models):
        if node in models[:k]:
            first = texts[models.index(node)].strip()
            also = f" (as {quoted(first)}: one model, two names)" if first != texts[k].strip() else ""
            raise RewardSpecError(f"reward {quoted(texts[k].strip())} is listed twice in {quoted(spec)}{also}: {fix}")


def _views(text: str) -> int:
    """The most augmented views any reward inside `text` is scored on (nested `augK(...)` multiply)."""
    stack, most = [1], 1
    for m in re.finditer(r"aug([0-9]+)\(|\(|\)", text):
        if m.group(0) == ")":
            stack.pop() if len(stack) > 1 else None
        else:
            stack.append(stack[-1] * (parse_integer(m.group(1)) if m.group(1) else 1))
            most = max(most, stack[-1])
    return most


def _depths(text: str):
    """The parenthesis depth after each character of `text`."""
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        yield depth


def canonical(spec: str) -> str:
    """One spelling of what a spec scores, for telling two specs that score the same apart from two that do not:
    a term of weight 1 alone is the term, a mean's parts and a sum's terms in one order (`1*R` and `R`;
    `mean(a;b)` and `mean(b;a)`; a mean of one part is refused when parsed). A spec that does not parse is its own
    text."""
    try:
        return _spelled(parse_spec(spec))
    except (RewardSpecError, ValueError):
        return str(spec)


def direction(spec: str) -> str:
    """One spelling of where a spec's gradient points, for DATE's normalised step (which keeps only the direction):
    a spec whose weights are all scaled by one positive factor points as the spec does (`2*R` as `R`, `2*a+2*b` as
    `a+b`); otherwise `canonical`."""
    try:
        node = parse_spec(spec)
    except (RewardSpecError, ValueError):
        return str(spec)
    total = sum(w for w, _ in node.terms)
    if total <= 0:
        return canonical(spec)
    return "+".join(sorted(f"{round(w / total, 12)!r}*{_spelled(t)}" for w, t in node.terms))


def _spelled(node) -> str:
    if isinstance(node, Sum):
        if len(node.terms) == 1 and node.terms[0][0] == 1:
            return _spelled(node.terms[0][1])
        return "+".join(sorted(f"{w!r}*{_spelled(t)}" for w, t in node.terms))
    if isinstance(node, Mean):
        return f"mean({';'.join(sorted(_spelled(p) for p in node.parts))})"
    if isinstance(node, Augmented):
        return f"aug{node.views}({_spelled(node.inner)})"
    if isinstance(node, Subjects):
        return f"subjects({_spelled(node.inner)})"
    record = _RECORDS.get(node.name)
    if record is not None and record.members and node.source is None:  # an ensemble: the mean of its members
        return f"mean({';'.join(sorted(_spelled(_model(Named(m, None))) for m in record.members))})"
    node = _model(node)
    return node.name if node.source is None else f"{node.name}:{node.source}"


def parse_spec(spec: str) -> Sum:
    """A spec's tree, every bound, name and source checked (`RewardSpecError` otherwise); nothing is loaded."""
    text = str(spec)
    if len(text) > MAX_SPEC_CHARS:
        raise RewardSpecError(f"reward spec of {len(text):,} characters; at most {MAX_SPEC_CHARS:,}")
    terms = len(re.findall(r"[A-Za-z][\w.-]*(?=[:;+()]|$)", text))
    if terms > MAX_TERMS:
        raise RewardSpecError(f"reward {quoted(text)} names {terms} rewards; at most {MAX_TERMS}")
    depth = max(_depths(text), default=0)
    if depth > MAX_NESTING:
        raise RewardSpecError(f"reward {quoted(text)} nests {depth} wrappers; at most {MAX_NESTING}")
    views = _views(text)
    if views > MAX_VIEWS:
        raise RewardSpecError(f"reward {quoted(text)} scores {views} augmented views per image; at most {MAX_VIEWS}")
    return _sum(spec, {r.name: r for r in records()})


def reward_runs(spec: str, prompt: str | None = None) -> int:
    """How many reward models' runs score one image under `spec`: each named reward its record's `runs` (an
    ensemble's members), `augK(...)` K times what it wraps, `mean(...)` and a sum each part's runs, `subjects(...)`
    its inner spec's for the prompt and for each of its subjects (two subjects assumed without a prompt). What a
    request's cost is bounded by (`perf.work.request_work`)."""
    from date_diffusion.rewards.subjects import subject_prompts

    texts = 1 + (len(subject_prompts(prompt)) if prompt is not None else 2)

    def runs(node) -> int:
        if isinstance(node, Sum):
            return sum(runs(term) for _, term in node.terms)
        if isinstance(node, Augmented):
            return node.views * runs(node.inner)
        if isinstance(node, Mean):
            return sum(runs(part) for part in node.parts)
        if isinstance(node, Subjects):
            return texts * runs(node.inner)
        return _RECORDS[node.name].runs

    return runs(parse_spec(spec))


def check_spec(spec: str) -> None:
    """Raise `RewardSpecError` for a malformed spec, without loading any model (validate before work starts)."""
    parse_spec(spec)


def _named(node) -> list[Named]:
    """The `Named` leaves of a tree, left to right."""
    if isinstance(node, Named):
        return [node]
    if isinstance(node, Sum):
        return [leaf for _, term in node.terms for leaf in _named(term)]
    if isinstance(node, Mean):
        return [leaf for part in node.parts for leaf in _named(part)]
    return _named(node.inner)


def spec_sources(spec: str) -> list[tuple[str, str | None]]:
    """(reward name, source or None) of every term of a spec, wrappers and weighted sums walked
    (`mean(clip:/a;0.5*aug8(hpsv2:/b))` -> [('clip', '/a'), ('hpsv2', '/b')]); checked as `check_spec` checks,
    nothing loaded. A caller that must limit what a spec may read (the web page) looks at the sources."""
    return [(leaf.name, leaf.source) for leaf in _named(parse_spec(spec))]


def hub_names(spec: str) -> list[str]:
    """The rewards of a spec whose models come from the hub by their name alone (`clip-l`, `pickscore` without a
    source: `RewardRecord.from_hub`); nothing for a spec that does not parse (its check names it)."""
    try:
        sources = spec_sources(spec)
    except (RewardSpecError, ValueError):
        return []
    return [name for name, source in sources if source is None and name in _RECORDS and _RECORDS[name].from_hub]


def _build_named(node: Named, device):
    """A named reward built from its source; a source it cannot be built from (a folder without a config, a damaged
    weights file, a pipe) is `RewardSpecError` naming the term and the file, whatever the loader raised."""
    import os

    from date_diffusion.hub import ModelNotFoundError, explain_load_error, is_hub_id, is_local_path

    if node.source is not None and not os.path.lexists(os.path.expanduser(node.source)):
        if is_local_path(node.source):
            raise explain_load_error(node.source, FileNotFoundError())  # a path, not a hub id to look up
        if not is_hub_id(node.source):
            raise RewardSpecError(f"reward {node.name}:{node.source}: {node.source!r} is no file or folder here, "
                                  "and no hub repository (owner/name): check the path")  # fmt: skip
    if node.source is not None and os.path.exists(node.source) and not os.path.isfile(node.source):
        if not os.path.isdir(node.source):  # a pipe or a device: reading it could block or never end
            raise RewardSpecError(f"reward {node.name}:{node.source}: {node.source!r} is not a regular file or a "
                                  "folder (a device, pipe or socket): give the reward's file or folder")  # fmt: skip
    try:
        return _RECORDS[node.name].build(node.source, device)
    except (RewardSpecError, ModelNotFoundError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001  (each loader's own exception: OSError, SafetensorError, ...)
        if node.source is None:
            raise
        why = f": {err}" if isinstance(err, ValueError) else f" ({type(err).__name__}: {err})"  # ours say what
        raise RewardSpecError(f"reward {node.name}:{node.source}: {node.source!r} cannot be loaded as "
                              f"the {node.name} reward{why}") from err  # fmt: skip


def build(node, device):
    """The reward a parsed spec (or any node of one) stands for, built on `device`."""
    if isinstance(node, Named):
        return _build_named(node, device)
    if isinstance(node, Sum):
        from date_diffusion.rewards.base import WeightedReward

        weighted = [(w, build(term, device)) for w, term in node.terms]
        return weighted[0][1] if len(weighted) == 1 and weighted[0][0] == 1.0 else WeightedReward(weighted)
    if isinstance(node, Augmented):
        from date_diffusion.rewards.augment import AugmentedReward

        return AugmentedReward(build(node.inner, device), views=node.views)
    if isinstance(node, Mean):
        from date_diffusion.rewards.ensemble import EnsembleReward

        return EnsembleReward([build(part, device) for part in node.parts])
    from date_diffusion.rewards.subjects import SubjectReward

    return SubjectReward(build(node.inner, device))


def reward_from_spec(spec: str, device: str = "cpu"):
    """One reward, or a combination of rewards, from a text spec (see the module docstring and `SPEC_HELP`)."""
    return build(parse_spec(spec), device)


LIST_START, LIST_END = "<!-- reward list: made by `python -m date_diffusion.rewards.registry FILE` -->", "<!-- end -->"


def with_reward_list(text: str) -> str:
    """`text` (docs/rewards.md) with the part between `LIST_START` and `LIST_END` made from the records."""
    head, _, rest = text.partition(LIST_START)
    _, _, tail = rest.partition(LIST_END)
    return f"{head}{LIST_START}\n{reward_list()}{LIST_END}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from date_diffusion.rewards import registry  # (the module plugins register into, not this __main__ copy)

    path = Path(sys.argv[1])
    path.write_text(registry.with_reward_list(path.read_text(encoding="utf-8")), encoding="utf-8")
