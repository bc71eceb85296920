"""What runs: a model and the user's overrides -> the DATE settings, the reward, the step count and the guidance
scale that will run, with where each value came from.

The command line, the web page, the benchmark and Python callers all resolve through `resolve_settings`, so the same
model with the same overrides runs the same DATE everywhere. Sources, in order of precedence:

- `user`: a value the caller gave (a flag, a page field, a keyword argument);
- `model`: the model's own recommendation or its own plain reward (its folder's file, `model_folder.py`; the toy
  world's model ships one), and its own scheduler; `paper_defaults=True` ignores the model's DATE and reward
  recommendation (its sampling recommendation stays) and, where the paper ran the family, its scheduler: SD
  1.x/2.x sample with DDIM on the model's own training schedule (`Family.paper_scheduler`) whatever scheduler the
  checkpoint ships;
- `family`: the family's defaults (`families.py`: the paper's sampling settings where the paper ran the family,
  else the stock diffusers pipeline's; the paper's reward, CLIP ViT-L/14);
- `paper`: the DATE paper's settings (`DATEConfig`'s defaults: rho 0.5 at every 10th step).

A group of alternatives (rho or rho_relative; update_every, update_steps or update_intervals) comes whole from
one source: a user's `rho` replaces a model's `rho_relative`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.settings import BY_FIELD, GROUPS, SAMPLING, SettingError, SpelledText, Text
from date_diffusion.core.text import json_spelling, quoted
from date_diffusion.families import by_name
from date_diffusion.model_folder import ModelFile
from date_diffusion.model_folder import default_model as registered_default
from date_diffusion.model_folder import read as read_model_file
from date_diffusion.pipelines.loading import family_defaults, family_of
from date_diffusion.rewards.registry import RewardSpecError, check_spec, reward_from_spec

OVERRIDES = (*BY_FIELD, "reward", "scheduler", *SAMPLING)


@dataclass(frozen=True)
class Resolved:
    """The settings a run uses. `call_arguments()` are the DATE pipeline's keyword arguments (with
    `reward=resolved.load_reward(device)`); `record()` is what every image's record states."""

    model: str
    family: str
    date: DATEConfig
    reward: str
    num_inference_steps: int
    guidance_scale: float
    sources: dict = field(default_factory=dict)  # setting -> user | model | family | paper
    scheduler: str | None = None  # a `schedulers.SCHEDULERS` name; None: the model's own
    reward_named_by: str = "reward"  # where `reward` was given, as errors name it (a flag, a model file's key)

    @property
    def active(self) -> bool:
        """Whether DATE can move the embedding (a non-zero step and at least one update step in the run)."""
        return self.date.acts(self.num_inference_steps)

    def call_arguments(self) -> dict:
        return {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "date": self.date,
        }

    def load_reward(self, device: str = "cpu"):
        """The reward `self.reward` names, built on `device` (its `spec` is the text: what image records state)."""
        reward = reward_from_spec(self.reward, device)
        reward.spec = self.reward
        return reward

    def record(self) -> dict:
        return {
            "reward": self.reward,
            "steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "date": self.date.to_dict(),
            "sources": dict(self.sources),
        }


def default_model() -> str:
    """The default model of every command: the one a plugin names (the shipped toy world)."""
    path = registered_default()
    if path is None or not path.exists():
        raise FileNotFoundError("no default model is installed with this copy; pass a model id or folder")
    return str(path)


def resolve_settings(
    model=None, *, family=None, paper_defaults: bool = False, names=None, check_reward: bool = True, **overrides
) -> Resolved:
    """The settings that run for `model` (a folder, hub id or single file; default: the toy world) with the caller's
    `overrides` (`DATEConfig` fields, `reward`, `scheduler`, `num_inference_steps`, `guidance_scale`; None = not
    given; text is parsed as a flag would be). `names` maps a setting to the name errors use (a flag, a page label);
    `check_reward=False` skips checking the reward spec (a replay needs none)."""
    names = {k: (names or {}).get(k, k) for k in OVERRIDES}
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"resolve_settings() got unknown settings {unknown}; known: {', '.join(OVERRIDES)}")
    user = _checked({k: v for k, v in overrides.items() if v is not None}, names)
    model = str(model) if model is not None else default_model()
    fam = family_of(model, family)
    own = read_model_file(model)
    advice = _advice(own)
    date_advice = {} if paper_defaults else {k: v for k, v in advice.items() if k in BY_FIELD or k == "reward"}
    date, sources = _date(user, date_advice, names)
    reward, sources["reward"] = _first(
        ("user", user.get("reward")),
        ("model", date_advice.get("reward")),
        ("model", own.reward if own is not None else None),
        ("family", by_name(fam).reward),
    )
    family_sampling = family_defaults(fam)
    for name in SAMPLING:
        value, sources[name] = _first(
            ("user", user.get(name)), ("model", advice.get(name)), ("family", family_sampling[name])
        )
        user[name] = value
    recommended = (advice.get("scheduler"), own and f"{own.path}: recommended.scheduler")
    scheduler, sources["scheduler"] = _scheduler(user.get("scheduler"), recommended, model, fam, paper_defaults,
                                                 names)  # fmt: skip
    reward_named_by = names["reward"]
    if sources["reward"] == "model" and own is not None:  # a spec the model's file gives: that file and its key
        reward_named_by = f"{own.path}: {'recommended.reward' if date_advice.get('reward') else 'reward'}"
    elif sources["reward"] == "family":  # nobody typed it: say whose default it is, and how to choose another
        reward_named_by = (f"the default reward of {fam} models (neither {names['reward']} nor the model's folder "
                           f"names one; {names['reward']} REWARD chooses another),")  # fmt: skip
    resolved = Resolved(model, fam, date, reward, user["num_inference_steps"], user["guidance_scale"], sources,
                        scheduler, reward_named_by)  # fmt: skip
    # a schedule the model's file recommends is named by that file and its key, not by the flag
    _check_schedule(resolved, {k: f"{own.path}: recommended.{k}" if k in date_advice and sources.get(k) == "model"
                               else names[k] for k in names})  # fmt: skip
    if check_reward:
        _check_reward(reward, reward_named_by)
    return resolved


def _advice(own: ModelFile | None) -> dict:
    """The model's recommended settings, each through its setting's kind, errors naming the file and the key."""
    advice = own.recommended if own is not None else {}
    if not advice:
        return {}
    where = f"{own.path}: recommended"
    known = {k: v for k, v in advice.items() if k in OVERRIDES}
    unknown = sorted(set(advice) - set(known))
    if unknown:
        said = ", ".join(json_spelling(k) for k in unknown)  # as the file spells its keys
        raise SettingError(f"{where} has unknown settings {said}; known: {', '.join(OVERRIDES)}")
    return _checked(known, {k: f"{where}.{k}" for k in OVERRIDES}, from_file=True)


def _first(*candidates):
    """(value, source) of the first candidate whose value is set."""
    return next((value, source) for source, value in candidates if value is not None)


def _checked(given: dict, names: dict, from_file: bool = False) -> dict:
    """The caller's values (or a JSON file's, typed as JSON) through their kinds; alternatives of one group refused
    together."""
    out = {}
    for key, value in given.items():
        kind = BY_FIELD[key].kind if key in BY_FIELD else SAMPLING.get(key)
        read = kind and (kind.from_file if from_file else kind.value)
        try:
            if not kind and isinstance(value, str):  # a name (reward, scheduler): a pasted blank beside it refused
                Text(empty=True).check(value, names[key])
            out[key] = read(value, names[key]) if kind else SpelledText(value) if isinstance(value, str) else value
        except SettingError as err:
            raise err.about(key) from None
    for members in GROUPS.values():
        both = [m for m in members if m in out]
        if len(both) > 1:
            raise SettingError(f"give only one of {' and '.join(names[m] for m in both)}").about(both[0])
    return out


def _scheduler(given, recommended: tuple, model: str, family: str, paper_defaults: bool,
               names: dict) -> tuple[str | None, str]:  # fmt: skip
    """(scheduler name or None for the model's own, source): the caller's; under `paper_defaults` the paper's
    sampler for the family unless the model already ships it; the one the model's file recommends (`recommended`:
    (name, where the file says it)); else the model's own. A name is one of `SCHEDULERS`, wherever it comes from."""
    from date_diffusion.schedulers import SCHEDULERS, is_same

    for name, where in ((given, names["scheduler"]), recommended):
        if name is not None and name not in SCHEDULERS:
            # a class name as records and `info` show it (`DDIMScheduler`): the names that build it
            named = [key for key, (cls, _) in SCHEDULERS.items() if cls == name]
            also = f" ({name} is {' or '.join(named)} here)" if named else ""
            if any(is_same(key, _own_scheduler(model)) for key in named):  # the model's own: nothing to give
                also = f" ({name} is the model's own scheduler: it runs without --scheduler)"
            also = f" (names are lower case here: {name.lower()})" if name.lower() in SCHEDULERS else also
            raise SettingError(f"unknown {where} {quoted(name)}{also}; choose one of: {', '.join(SCHEDULERS)}").about(
                "scheduler"
            )
    if given is not None:
        return given, "user"
    paper = by_name(family).paper_scheduler
    if paper_defaults and paper is not None:
        from date_diffusion.pipelines import scheduler_class_name

        return (None if is_same(paper, scheduler_class_name(model)) else paper), "paper"
    return (recommended[0], "model") if recommended[0] is not None else (None, "model")


def _own_scheduler(model: str) -> str | None:
    """The class name of the model's own scheduler, or None where it cannot be read here."""
    from date_diffusion.pipelines import scheduler_class_name

    try:
        return scheduler_class_name(model)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _date(user: dict, advice: dict, names: dict) -> tuple[DATEConfig, dict]:
    """DATEConfig from the caller's values, then the model's advice, then the paper's, one group at a time."""
    kwargs, sources = {}, {}
    for members in GROUPS.values():
        for source, values in (("user", user), ("model", advice)):
            chosen = {m: values[m] for m in members if values.get(m) is not None}
            if chosen:
                kwargs.update(chosen)
                sources.update(dict.fromkeys(chosen, source))
                break
        else:
            sources[members[0]] = "paper"  # the first member of a group is the paper's (rho, update_every)
    try:
        return DATEConfig(**kwargs), sources
    except ValueError as err:
        # a setting the message names that the model recommends, the caller never gave: said, with how to override it
        advised = [f"{names[k]} {json_spelling(v)} is the model's recommendation" for k, v in kwargs.items()
                   if sources.get(k) == "model" and re.search(rf"\b{k}\b", str(err))]  # fmt: skip
        renamed = _renamed(err, names)
        if advised:
            said = f"{renamed} ({'; '.join(advised)}, which a value given for its setting replaces)"
            renamed = SettingError(said).about(renamed.setting)
        raise renamed from err


def _check_schedule(resolved: Resolved, names: dict) -> None:
    try:
        resolved.date.update_indices(resolved.num_inference_steps)
    except ValueError as err:
        raise _renamed(err, names) from err


def _check_reward(spec, name: str) -> None:
    if not isinstance(spec, str):
        raise SettingError(f"{name} must be a reward spec (text such as clip-l), got {type(spec).__name__}").about(
            "reward"
        )
    try:
        check_spec(spec)
    except RewardSpecError as err:
        raise SettingError(f"{name} {quoted(spec)}: {err}").about("reward") from err


def _renamed(err: ValueError, names: dict) -> SettingError:
    """A DATEConfig error whose message starts with a field name, with the interface's name for it instead."""
    message = str(err)
    for key in sorted(names, key=len, reverse=True):
        if message.startswith(key):
            return SettingError(names[key] + message[len(key) :]).about(key)
    return SettingError(message)
