"""The benchmark's methods: one class per kind, all in one registry (`METHODS`).

fixed                 fixed embeddings, the run's step count
fixed@K               fixed embeddings, K steps (compute-matched baseline)
date:KEY=V,...        DATE; the DATE keys of `core/settings.py` (rho or rel, every, steps=0;10;20, intervals, grad,
                      anchor, prior, track, and the paper's ablations direction=random, normalize=false,
                      target=next), and the run keys decoder=tiny (the approximate reward decoder), reward=SPEC (the
                      reward this method follows, e.g. aug8(toy-clip), toy-ensemble, subjects(clip-l)), lowres=N
                      (decode x0_hat for the reward at N px with the real VAE: approximate)
ug:scale=S,every=N    data-space reward guidance (embedding fixed)
best-of-N             N fixed-embedding samples per (prompt, seed), the one the reward likes best
recommended           the model's recommended DATE setting and reward (`resolver.resolve_settings`)
ae[:res=R,iters=N,scale=S]       Attend-and-Excite (subject tokens found automatically; SD 1.x/2.x)
date+ae:KEY=V,...     DATE and Attend-and-Excite in the same run (DATE and run keys, and res, iters, scale)
ebca[:KEY=V,...]      energy-based cross-attention (Park et al. 2023), the paper's other baseline
select:n=N,at=K,...   N seeds to step K, the judge keeps the best x0_hat there, DATE continues it (DATE/run keys)

A method's label is its spec as given (it names the image folder); `record()` is its run.json entry and
`Method.from_record(label, record)` the inverse, which also reads the entries of earlier versions (`upgrade_record`).
The runner asks a method what it runs (`pipeline_kwargs(run)`, `steps_for`, `candidates`), the command line
whether it applies to a suite (`applies_to`), and the report where it lies on a plot (`plot_coordinates`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from date_diffusion.core.config import CANNOT_ACT, PAPER_RHO, DATEConfig, nonzero_in_float32
from date_diffusion.core.settings import (
    BLANKS,
    BY_FIELD,
    BY_KEY,
    MAX_INDEX,
    MAX_STEPS,
    Integer,
    Kind,
    Real,
    SettingError,
    Size,
    Text,
    given_twice,
    listed_twice,
    parse_keys,
    spec_items,
)
from date_diffusion.core.text import json_spelling, quoted
from date_diffusion.core.trace import moved
from date_diffusion.evaluation.suite_words import is_editing_suite, subject_words
from date_diffusion.resolver import resolve_settings
from date_diffusion.rewards.registry import RewardSpecError, UnknownReward, check_spec, renamed


class RewardSpec(Text):
    """A reward spec, checked by the reward registry (a bad one raises its `RewardSpecError`) before any loading."""

    def check(self, value, name):
        try:
            check_spec(super().check(value, name))
        except RewardSpecError as err:
            raise type(err)(f"{name}: {err}") from err  # (an `UnknownReward` stays one)
        return value


MAX_SLUG = 120  # characters of an image folder's name (`Method.slug`)


class CannotRun(ValueError):
    """A method that cannot run, or cannot act, in the run's steps (`Method.check`)."""


MAX_METHODS = 64  # methods one bench run compares
BEST_OF_STRIDE = 100_003  # candidate j of best-of-N for seed s uses seed s + j * stride (j = 0 is `fixed`)
RUN_KEYS = {"decoder": Text(), "reward": RewardSpec(), "lowres": Size(4096)}
AE_KEYS = {"res": Integer(1, 1024), "iters": Integer(0, MAX_STEPS), "scale": Real(0.0, 1e4)}
UG_KEYS = {"scale": Real(0.0, 1e6), "every": Integer(1, MAX_INDEX)}
SELECT_KEYS = {"n": Integer(2, 64), "at": Integer(0, MAX_INDEX), "judge": RewardSpec()}
FIXED_STEPS = Integer(1, MAX_STEPS)  # `fixed@K`
BEST_OF_N = Integer(1, 1000)  # `best-of-N`


@dataclass(frozen=True)
class Method:
    """A benchmark method. Subclasses set `kind` (the registry's name, stored in run.json), `pattern` (the spec
    syntax; its group is the text after the name), `options` (their `KEY=V` keys with kinds; a key is the field it
    sets), `required` keys and `date_keys` (whether the DATE keys of `core/settings.py` are accepted too)."""

    label: str
    kind: ClassVar[str]
    pattern: ClassVar[str]
    usage: ClassVar[str]  # the spec syntax as help and messages show it
    options: ClassVar[dict[str, Kind]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    date_keys: ClassVar[bool] = False

    @property
    def slug(self) -> str:
        """The image folder's name: the label with other characters as `_`; a longer one than `MAX_SLUG` (file
        systems allow 255 bytes a name) is cut and ends in a hash of the whole label, so two labels never share it."""
        slug = re.sub(r"[^A-Za-z0-9.=@-]+", "_", self.label)
        if len(slug) <= MAX_SLUG:
            return slug
        digest = hashlib.sha256(self.label.encode()).hexdigest()[:16]
        return f"{slug[: MAX_SLUG - len(digest) - 1]}-{digest}"

    @classmethod
    def record_kinds(cls) -> dict[str, Kind]:
        """The kinds of the keys of this method's run.json entry besides `method` and `date` (`from_record` checks
        each): its spec's options."""
        return cls.options

    @classmethod
    def from_spec(cls, spec: str, body: str | None, model=None) -> Method:
        values = _options(spec, body or "", cls.options, cls.date_keys)
        missing = [k for k in cls.required if k not in values]
        if missing:
            raise SettingError(f"{quoted(spec)} needs {missing[0]}=..., e.g. {cls.kind}:{missing[0]}=20")
        return cls(label=spec, **values)

    @property
    def candidates(self) -> int:
        """Samples made per (prompt, seed)."""
        return 1

    @property
    def seeds_per_job(self) -> int:
        """Seeds used per (prompt, seed): the job's and `BEST_OF_STRIDE` apart (candidates, or `Select`'s n)."""
        return self.candidates

    @property
    def image_method(self) -> str:
        """What an image's embedded record calls the method."""
        return self.label

    def image_method_of(self, trace: dict) -> str:
        """What the embedded record of an image this method made, with this trace, calls the method."""
        return self.image_method

    def steps_for(self, run_steps: int) -> int:
        return run_steps

    @property
    def reads_run_steps(self) -> bool:
        """Whether the run's step count decides this method's sampling (`fixed@K` samples its own K steps)."""
        return True

    def check(self, run_steps: int) -> None:
        """Raise `CannotRun` naming why this method cannot run or cannot act in a run of `run_steps` steps (the
        command line's up-front check, before any work: every constraint a method has on the run lives here)."""

    def check_scale(self) -> None:
        """A guidance method's `scale` acts only when it is above 0 in 32-bit floats (`ug`, `ae`)."""
        if not nonzero_in_float32(self.scale):
            raise self.cannot_act(f"scale={self.scale:g} is zero in 32-bit floats; give scale above 0")

    def cannot_act(self, why: str) -> CannotRun:
        return CannotRun(
            f"{quoted(self.label)} cannot act ({why}): its images would be the fixed sampler's under its label; "
            "list `fixed` instead, or give a setting that acts"
        )

    def select_seeds(self, pipe, run, prompts: list[str], seeds: list[int], call: dict) -> list[int]:
        """The seeds the images are sampled from (`Select` chooses among several; every other method: `seeds`)."""
        return seeds

    def pipeline_kwargs(self, run) -> dict:
        """The DATE pipeline's keyword arguments of this method; `run` gives `run.reward(spec=None)` (None: the
        run's reward) and `run.decoder(spec)`, each built once per run."""
        return {}

    def edits(self) -> bool:
        """Whether this method runs on editing suites (plain fixed and DATE only)."""
        return False

    def applies_to(self, suite: str) -> bool:
        return self.edits() or not is_editing_suite(suite)

    def plot_coordinates(self) -> dict:
        """Where this method lies on the report's sweeps (e.g. `{"rho": 2.0}`); empty: on none."""
        return {}

    def images_key(self, run_steps: int, reward: str | None) -> dict:
        """What decides this method's images in a run of `run_steps` steps whose reward is `reward`: two methods
        with the same key make the same images (`same_images`)."""
        from date_diffusion.rewards.registry import canonical

        entry = self.record()
        chosen = entry.get("reward") or reward  # one spelling of what it scores (`1*R`: R)
        return {**entry, "steps": self.steps_for(run_steps), "reward": canonical(chosen) if chosen else chosen}

    def record(self) -> dict:
        """The run.json entry (the label is its key)."""
        out = {"method": self.kind}
        for f in fields(self):
            if f.name != "label":
                value = getattr(self, f.name)
                out[f.name] = value.to_dict() if isinstance(value, DATEConfig) else value
        return out

    @classmethod
    def from_record(cls, label: str, record: dict) -> Method:
        """The method of a run.json entry (inverse of `record`; entries of earlier versions are converted)."""
        if "method" not in record:
            record = upgrade_record(label, record)
        if record["method"] not in METHODS:
            raise ValueError(f"unknown kind {quoted(record['method'])} (known: {', '.join(METHODS)})")
        kind = METHODS[record["method"]]
        names = {f.name for f in fields(kind)} - {"label"}
        unknown = [k for k in record if k not in names and k != "method"]
        if unknown:
            raise SettingError(f"{quoted(unknown[0])} is no key of a {kind.kind!r} entry (they are method, "
                               f"{', '.join(sorted(names))})").about(unknown[0])  # fmt: skip
        values = {k: v for k, v in record.items() if k in names}
        kinds = kind.record_kinds()
        for key, value in values.items():  # each through its kind, as the file spells it
            if key in kinds and value is not None:
                try:
                    values[key] = kinds[key].from_file(value, key)
                except UnknownReward:  # well formed: a plugin's reward not installed here (a report reads none)
                    continue
                except (SettingError, RewardSpecError) as err:
                    raise SettingError(str(err)).about(key) from None
        if values.get("date") is not None:
            try:
                values["date"] = DATEConfig.from_dict(_one_step_size(values["date"]))
            except SettingError as err:  # the key as the entry holds it: `date.rho`
                key = ".".join(["date", *([err.setting] if err.setting else [])])
                raise SettingError(str(err)).about(key) from None
        return kind(label=label, **values)


def _one_step_size(date):
    """A stored DATE setting: earlier versions kept the paper's rho beside a rho_relative that replaced it (anything
    but an object is left for `DATEConfig.from_dict` to refuse)."""
    return {**date, "rho": None} if isinstance(date, dict) and date.get("rho_relative") is not None else date


def _options(spec: str, body: str, kinds: dict, date_keys: bool) -> dict:
    """`KEY=V,...` -> field values: the method's own keys by their kinds, the DATE keys (if accepted) as `date`."""
    values, date_items, seen = {}, [], set()
    for item in spec_items(body, spec):
        key, eq, value = item.partition("=")
        if key in seen:
            raise given_twice(key, spec)
        seen.add(key)
        if key in kinds and eq:
            values[key] = kinds[key].value(value, f"{key} in {quoted(spec)}")
        elif date_keys and key in BY_KEY:
            date_items.append(item)
        else:
            keys = [*(BY_KEY if date_keys else ()), *kinds]
            raise SettingError(f"bad setting {quoted(item)} in {quoted(spec)}; keys: {', '.join(keys) or 'none'}")
    if date_keys:
        values["date"] = _date_config(parse_keys(",".join(date_items), spec), spec)
    return values


def _date_config(kwargs: dict, spec: str) -> DATEConfig:
    try:
        return DATEConfig(**kwargs)
    except ValueError as err:  # settings that do not go together, e.g. rho and rel
        raise SettingError(f"{quoted(spec)}: {err}") from err


@dataclass(frozen=True)
class Fixed(Method):
    """`fixed` (the run's step count) or `fixed@K` (K steps)."""

    steps: int | None = None
    kind = "fixed"
    pattern = r"fixed(?:@(\d+))?"
    usage = "fixed, fixed@K"

    @classmethod
    def record_kinds(cls):
        return {"steps": FIXED_STEPS}

    @classmethod
    def from_spec(cls, spec, body, model=None):
        return cls(spec, None if body is None else FIXED_STEPS.value(body, f"K in {quoted(spec)}"))

    @property
    def image_method(self) -> str:
        return "fixed"

    def steps_for(self, run_steps):
        return self.steps or run_steps

    @property
    def reads_run_steps(self) -> bool:
        return self.steps is None

    def edits(self):  # an editing run's steps are the run's: `fixed@K` does not edit
        return self.reads_run_steps


@dataclass(frozen=True)
class BestOf(Method):
    """`best-of-N`: N fixed-embedding samples, the run's reward keeps the best (candidate 0 is `fixed`'s)."""

    n: int = 1
    kind = "best-of"
    pattern = r"best-of-(\d+)"
    usage = "best-of-N"

    @classmethod
    def record_kinds(cls):
        return {"n": BEST_OF_N}

    @classmethod
    def from_spec(cls, spec, body, model=None):
        return cls(spec, BEST_OF_N.value(body, f"N in {quoted(spec)}"))

    @property
    def candidates(self):
        return self.n

    def check(self, run_steps):
        if self.n < 2:
            raise self.cannot_act("one candidate is the fixed sample itself; give N >= 2")


@dataclass(frozen=True)
class UniversalGuidance(Method):
    """`ug:scale=S,every=N`: data-space reward guidance with the run's reward, embedding fixed."""

    scale: float = 0.0
    every: int = 1
    kind = "ug"
    pattern = r"ug(?::(.*))?"
    usage = "ug:scale=S,every=N"
    options = UG_KEYS
    required = ("scale",)

    def check(self, run_steps):
        self.check_scale()

    def pipeline_kwargs(self, run):
        return {**super().pipeline_kwargs(run), "reward": run.reward(), "ug_scale": self.scale, "ug_every": self.every}


@dataclass(frozen=True)
class AttendExcite(Method):
    """`ae:res=R,iters=N,scale=S`: Attend-and-Excite on the suites' subject words."""

    res: int | None = None
    iters: int | None = None
    scale: float | None = None
    kind = "ae"
    pattern = r"ae(?::(.*))?"
    usage = "ae[:res=R,iters=N,scale=S]"
    options = AE_KEYS

    def check(self, run_steps):
        super().check(run_steps)
        if self.iters == 0:
            raise self.cannot_act("iters=0 alters no step; give iters >= 1")
        if self.scale is not None:
            self.check_scale()

    def pipeline_kwargs(self, run):
        given = {"attn_res": (self.res, self.res) if self.res else None, "max_iter_to_alter": self.iters,
                 "scale_factor": self.scale}  # fmt: skip
        ae = {"subjects": subject_words(), **{k: v for k, v in given.items() if v is not None}}
        return {**super().pipeline_kwargs(run), "attend_and_excite": ae}


EBCA_KEYS = {"attn": Real(0.0, 1e3), "norm": Real(0.0, 1e3), "tau": Real(0.0, 1.0), "iters": Integer(0, 100)}


@dataclass(frozen=True)
class Ebca(Method):
    """`ebca[:attn=G,norm=G,tau=R,iters=N]`: energy-based cross-attention (Park et al., 2023; `sampling.ebca`), the
    paper's other COCO baseline: each cross-attention layer's context is updated by gradient steps of size `attn` /
    `norm` on its energy and carried to the next layer; `tau`: the share of steps (from the first) that update;
    `iters`: updates per layer. Defaults: `sampling.ebca.EbcaConfig`'s (the EBCA authors')."""

    attn: float | None = None
    norm: float | None = None
    tau: float | None = None
    iters: int | None = None
    kind = "ebca"
    pattern = r"ebca(?::(.*))?"
    usage = "ebca[:attn=G,norm=G,tau=R,iters=N]"
    options = EBCA_KEYS

    def check(self, run_steps):
        from date_diffusion.sampling.ebca import EbcaConfig

        given = {"gamma_attn": self.attn, "gamma_norm": self.norm, "tau": self.tau, "iters": self.iters}
        config = EbcaConfig(**{k: v for k, v in given.items() if v is not None})
        if config.iters == 0:
            raise self.cannot_act("iters=0 updates no layer; give iters >= 1")
        if not (nonzero_in_float32(config.gamma_attn) or nonzero_in_float32(config.gamma_norm)):
            raise self.cannot_act("attn and norm are both zero in 32-bit floats; give one above 0")
        if int(run_steps * config.tau) == 0:
            raise self.cannot_act(f"tau={config.tau:g} of {run_steps} steps updates at no step; give a larger tau")

    def pipeline_kwargs(self, run):
        given = {"gamma_attn": self.attn, "gamma_norm": self.norm, "tau": self.tau, "iters": self.iters}
        return {**super().pipeline_kwargs(run), "ebca": {k: v for k, v in given.items() if v is not None}}


@dataclass(frozen=True)
class Date(Method):
    """`date:KEY=V,...`: DATE with these settings (the paper's where not given), following its own reward or the
    run's, optionally through an approximate reward decoder or a reduced-resolution decode."""

    date: DATEConfig = field(default_factory=DATEConfig)
    reward: str | None = None
    decoder: str | None = None
    lowres: int | None = None
    kind = "date"
    pattern = r"date(?::(.*))?"
    usage = "date[:KEY=V,...]"
    options = RUN_KEYS
    date_keys = True
    alone = True  # DATE is all the method does: an image it did not move is the fixed sampler's

    def image_method_of(self, trace):
        """`fixed` for an image whose embedding no update moved (every gradient zero or non-finite), as
        `generate` records it: DATE did nothing to it (`core.trace.moved`)."""
        return self.image_method if moved(trace) or not self.alone else "fixed"

    def images_key(self, run_steps, run_reward):
        """The update steps the schedule gives in this run, however it is written (`every=5`, `steps=0` and
        `intervals=0:1` at 4 steps; `steps=3;1` and `steps=1;3`); of the reward, what the step follows (none for a
        random direction; its direction alone for a normalised step without a prior: `2*R` is `R`); the trace-only
        score after each update, never."""
        key = super().images_key(run_steps, run_reward)
        try:
            steps = self.date.update_indices(self.steps_for(run_steps))
        except ValueError:  # outside the run: `check` names it
            return key
        schedule = dict(update_every=None, update_steps=steps, update_intervals=None)
        schedule.update(track_reward_after=True)  # a score for the trace only: never the image
        if len(steps) * self.date.grad_steps == 1:  # one gradient step from the original embedding: the anchor is
            schedule.update(anchor="previous", prior_weight=0.0)  # that embedding, and the prior's gradient is 0
        reward = key["reward"]
        if self.date.direction == "random":  # a random direction follows no reward: any reward makes these images
            reward = None
        elif reward and self.date.normalize and not schedule.get("prior_weight", self.date.prior_weight):
            from date_diffusion.rewards.registry import direction

            chosen = self.record().get("reward") or run_reward
            reward = direction(chosen)  # the normalised step keeps only its direction
        return {**key, "reward": reward, "date": {**key["date"], **schedule}}

    def check(self, run_steps):
        self.date.update_indices(self.steps_for(run_steps))  # steps outside the run (ValueError)
        if not self.date.acts(self.steps_for(run_steps)):  # generate's test (`DATEConfig.acts`)
            raise CannotRun(
                f"DATE cannot act in {quoted(self.label)} ({CANNOT_ACT}): its images would be the fixed sampler's "
                "under a DATE label; list `fixed` (or the method without DATE) instead, or give a step size above 0"
            )
        super().check(run_steps)  # date+ae: Attend-and-Excite's too

    def pipeline_kwargs(self, run):
        out = {**super().pipeline_kwargs(run), "date": self.date, "reward": run.reward(self.reward)}
        if self.decoder is not None:
            out["reward_decoder"] = run.decoder(self.decoder)
        if self.lowres is not None:
            out["reward_resolution"] = self.lowres
        return out

    def edits(self):
        return self.lowres is None  # the editing pipeline has no reduced-resolution decode

    def plot_coordinates(self):
        """A point of the rho sweep when this is the paper's DATE but for rho (the run's reward, exact decode)."""
        exact = self.reward is None and self.decoder is None and self.lowres is None
        if exact and self.date.rho is not None and replace(self.date, rho=PAPER_RHO) == DATEConfig():
            return {"rho": self.date.rho}
        return {}


@dataclass(frozen=True)
class DateAttendExcite(Date, AttendExcite):
    """`date+ae:KEY=V,...`: DATE and Attend-and-Excite in the same run."""

    kind = "date+ae"
    pattern = r"date\+ae(?::(.*))?"
    usage = "date+ae[:KEY=V,...]"
    options = {**RUN_KEYS, **AE_KEYS}
    alone = False

    def edits(self):
        return False

    def plot_coordinates(self):
        return {}


@dataclass(frozen=True)
class Select(Date):
    """`select:n=N,at=K,judge=SPEC,KEY=V,...`: N seeds (the job's and `BEST_OF_STRIDE` apart) sampled with fixed
    embeddings to loop index K; the judge (default: the run's reward) scores each x0_hat there, and the best seed is
    sampled in full with DATE (the DATE keys of `date:`). DATE's updates must lie at K or later, so that the
    trajectory it continues is the one the judge chose. The first K steps of the chosen seed are sampled again (the
    seconds per image count them)."""

    n: int = 2
    at: int = 10
    judge: str | None = None
    kind = "select"
    pattern = r"select(?::(.*))?"
    usage = "select:n=N,at=K[,judge=SPEC,...]"
    options = {**RUN_KEYS, **SELECT_KEYS}
    alone = False

    @property
    def seeds_per_job(self):
        return self.n

    def check(self, run_steps):
        if self.at >= run_steps:
            raise CannotRun(
                f"{quoted(self.label)}: the selection at step {self.at} lies past the run's {run_steps} steps; give "
                f"at= in 0..{run_steps - 1}"
            )
        first = min(self.date.update_indices(run_steps), default=self.at)
        if first < self.at:
            raise CannotRun(
                f"{quoted(self.label)}: DATE updates at step {first}, before the selection at {self.at}; give "
                f"steps=/intervals= at or after {self.at} (e.g. steps={self.at}), or a smaller at="
            )
        super().check(run_steps)

    def select_seeds(self, pipe, run, prompts, seeds, call):
        from date_diffusion.evaluation.selection import early_selection

        self.check(call["num_inference_steps"])
        return early_selection(pipe, prompts, seeds, self.n, self.at, run.reward(self.judge), BEST_OF_STRIDE, **call)

    def edits(self):
        return False

    def plot_coordinates(self):
        return {}


@dataclass(frozen=True)
class Recommended(Date):
    """`recommended`: the DATE setting and reward the model recommends, as `resolver.resolve_settings` resolves
    them (the run.json entry keeps what ran)."""

    kind = "recommended"
    pattern = r"recommended()"
    usage = "recommended"

    @classmethod
    def from_spec(cls, spec, body, model=None):
        resolved = resolve_settings(model)
        if not any(resolved.sources.get(name) == "model" for name in BY_FIELD):
            raise ValueError("method 'recommended' needs a model that recommends a DATE setting (the toy world)")
        return cls(spec, date=resolved.date, reward=resolved.reward)

    def plot_coordinates(self):
        return {}

    def images_key(self, run_steps, reward):
        """The DATE method it resolves to: `recommended` and the same settings written out make the same images."""
        return {**super().images_key(run_steps, reward), "method": Date.kind}


# DATE settings that choose how the schedule is written (one of them is given) or what the trace scores: never
# compared with their defaults by `date_without_effect`
_SPELLINGS = ("update_every", "update_steps", "update_intervals", "track_reward_after")


def date_without_effect(date: DATEConfig, given, run_steps: int, reward: str | None) -> dict[str, str]:
    """Of the DATE settings and the reward a user gave (`given`: their names), those that change no image of a run
    of `run_steps` steps: with the setting at its default (the reward: none) the images are the same
    (`Date.images_key`, as the benchmark compares methods); name -> why. A `generate` run names them in a note and
    under its records' `without_effect`, as bench refuses two methods that differ only by them."""
    from dataclasses import fields as config_fields
    from dataclasses import replace as with_value

    def key(config, chosen):
        return Date(label="date", date=config).images_key(run_steps, chosen)

    try:
        base = key(date, reward)
    except ValueError:  # a schedule outside the run: named by the run's own checks
        return {}
    defaults = {f.name: f.default for f in config_fields(DATEConfig)}
    out = {}
    for name in given:
        if name == "reward":
            if reward is not None and key(date, None) == base:
                out[name] = "DATE's step follows no reward here (a random direction); it scores the trace only"
        elif name in defaults and name not in _SPELLINGS and getattr(date, name) != defaults[name]:
            try:
                same = key(with_value(date, **{name: defaults[name]}), reward) == base
            except ValueError:  # the default does not go with the other settings: it cannot be left out
                same = False
            if same:
                out[name] = f"DATE's images are the same with its default {defaults[name]!r} in this run"
    return out


def settings_without_effect(resolved) -> dict[str, dict]:
    """`date_without_effect` of resolved settings (`resolver.Resolved`): the DATE settings and reward the user gave
    (source `user`) that change no image of its run, name -> {value, why}, as a record's `without_effect` states
    them (`generate` and the page alike); none where DATE does not act."""
    if not resolved.active:
        return {}
    given = [name for name, source in resolved.sources.items() if source == "user"]
    unused = date_without_effect(resolved.date, given, resolved.num_inference_steps, resolved.reward)
    return {name: {"value": resolved.reward if name == "reward" else getattr(resolved.date, name), "why": why}
            for name, why in unused.items()}  # fmt: skip


METHODS: dict[str, type[Method]] = {
    cls.kind: cls
    for cls in (Fixed, BestOf, UniversalGuidance, AttendExcite, Ebca, Date, DateAttendExcite, Select, Recommended)
}


def methods_usage() -> str:
    """Every method's spec syntax, for help texts and messages."""
    return ", ".join(cls.usage for cls in METHODS.values())


def parse_method(spec: str, model=None) -> Method:
    """The method of a spec; `model` (default: the toy world) is the one `recommended` asks."""
    spec = spec.strip()
    for cls in METHODS.values():
        if match := re.fullmatch(cls.pattern, spec, flags=re.S):
            return cls.from_spec(spec, match.group(1), model)
    raise ValueError(f"unknown method {quoted(spec)}; use {methods_usage()}")


def parse_methods(text: str, model=None) -> list[Method]:
    """Methods separated by spaces or '+' (commas belong to a method's settings; the '+' of `date+ae` is part
    of that method's name). `model` is the run's, whose recommendation `recommended` runs."""
    # a '+' splits unless it is the one of `date+ae` (after `date`, before `ae` and the name's end)
    pieces = re.split(r"\s*(?:(?<!\bdate)\+|(?<=\bdate)\+(?!ae\b))\s*|\s+", text.strip(BLANKS))
    if pieces == [""]:
        raise ValueError("no methods given")
    if len(pieces) > MAX_METHODS:  # each is a column of every table and a pass over the whole suite
        raise ValueError(f"{len(pieces)} methods listed: one run compares at most {MAX_METHODS}; split them over runs")
    if "" in pieces:
        raise ValueError("a '+' with no method on one side: '+' stands between two methods; a number is written "
                         "without a '+' sign (rho=1, not rho=+1)")  # fmt: skip
    methods = []
    for k, spec in enumerate(pieces):
        try:
            methods.append(parse_method(spec, model))
        except ValueError as err:
            if len(pieces) == 1:
                raise
            if "+" not in text:  # the pieces are the words typed: the method that is wrong, named
                raise ValueError(f"method {k + 1} of {len(pieces)}, {quoted(spec)}: {err}") from None
            read = ", ".join(quoted(p) for p in pieces)  # a '+' may have split what was meant as one method
            raise ValueError(f"methods are separated by spaces or '+', so this reads as {read} (a number is written "
                             f"without a '+' sign); {err}") from None  # fmt: skip
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a method is listed twice: {listed_twice(labels)}")
    twins = same_images(methods)
    if twins:
        raise ValueError(f"{twins[0]!r} and {twins[1]!r} are the same method with the same settings: list it once")
    return methods


def same_images(methods, run_steps: int | None = None, reward: str | None = None) -> tuple[str, str] | None:
    """The labels of the first two methods that make the same images: the same settings (`best-of-2 best-of-02`),
    or, given the run's step count and reward, the same settings in that run (`Method.images_key`: `fixed` and
    `fixed@K` at K steps, `date` and `date:reward=R` with the run's reward R, DATE schedules that update at the same
    steps); None when every method makes its own."""
    first: dict[str, str] = {}  # a method's settings -> the label that gave them first
    for m in methods:
        entry = m.record() if run_steps is None else m.images_key(run_steps, reward)
        key = json.dumps(entry, sort_keys=True, default=str)
        if key in first:
            return first[key], m.label
        first[key] = m.label
    return None


# ---------------------------------------------------------------- run.json entries of earlier versions

_OLD_AE = {"attn_res": "res", "max_iter_to_alter": "iters", "scale_factor": "scale"}


def upgrade_reward(spec: str | None) -> str | None:
    """A reward spec of an earlier version with the toy world's rewards under their new names (`clip` ->
    `toy-clip`, `aug8(ensemble)` -> `aug8(toy-ensemble)`); `clip-l` and `clip:SOURCE` stay. Specs of this version
    are returned as they are."""
    if spec is None:
        return None
    new = renamed()
    names = "|".join(re.escape(n) for n in sorted(new, key=len, reverse=True))
    return re.sub(rf"(?<![^(;+*\s])({names})(?![^);+\s])", lambda m: new[m.group(1)], spec)


def upgrade_record(label: str, old: dict) -> dict:
    """A run.json method entry of an earlier version (`kind`: fixed | best | ug | ae | date, with `steps`, `n`,
    `ug_scale`, `ug_every`, `ae`, `date`, `reward`, `reward_decoder`, `reward_resolution`) in today's layout."""
    kind = old.get("kind")
    ae = {new: old["ae"][name] for name, new in _OLD_AE.items() if (old.get("ae") or {}).get(name) is not None}
    if "res" in ae:
        ae["res"] = ae["res"][0]  # (R, R)
    if kind == "fixed":
        return {"method": "fixed", "steps": old.get("steps")}
    if kind == "best":
        return {"method": "best-of", "n": old["n"]}
    if kind == "ug":
        return {"method": "ug", "scale": old["ug_scale"], "every": old["ug_every"]}
    if kind == "ae":
        return {"method": "ae", **ae}
    if kind == "date":
        method = "date+ae" if old.get("ae") else "recommended" if label == "recommended" else "date"
        run_keys = {"reward": upgrade_reward(old.get("reward")), "decoder": old.get("reward_decoder"),
                    "lowres": old.get("reward_resolution")}  # fmt: skip
        return {"method": method, "date": old["date"], **run_keys, **ae}
    raise ValueError(f"neither a known kind nor a method: {json_spelling(old):.200}")
