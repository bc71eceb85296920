"""Method specs shared by the evaluation commands.

fixed                 fixed embeddings, the run's step count
fixed@K               fixed embeddings, K steps (compute-matched baseline)
date:KEY=V,...        DATE; keys: rho (or rel, the scale-free rho_relative), every, steps (0;10;20), grad, anchor,
                      prior, the paper's ablations direction=random, normalize=0, target=next, and decoder=tiny,
                      reward=SPEC (the reward this method follows, e.g. aug8(clip), ensemble, subjects(clip)),
                      lowres=N (decode x0_hat for the reward at N px with the real VAE: approximate)
ug:scale=S,every=N    data-space reward guidance (embedding fixed)
best-of-N             N fixed-embedding samples per (prompt, seed), the one the reward likes best
recommended           the model's recommended DATE setting (the toy world ships one)
ae[:res=R,iters=N,scale=S]       Attend-and-Excite (subject tokens found automatically; SD 1.x/2.x)
date+ae:KEY=V,...     DATE and Attend-and-Excite in the same run (DATE keys and res, iters, scale)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from date_diffusion.core.config import DATEConfig

_DATE_KEYS = {
    "rho": ("rho", float),
    "rel": ("rho_relative", float),
    "every": ("update_every", int),
    "grad": ("grad_steps", int),
    "anchor": ("anchor", str),
    "prior": ("prior_weight", float),
    "steps": ("update_steps", lambda v: [int(x) for x in v.split(";") if x]),
    "direction": ("direction", str),
    "normalize": ("normalize", lambda v: v not in ("0", "false", "False")),
    "target": ("reward_target", str),
}
# method options that are not DATE settings: the approximate reward decoder, the reward DATE follows (a reward
# spec without commas, e.g. aug8(clip), ensemble, subjects(clip), mean(clip;clip-s1); default: the run's --reward)
_RUN_KEYS = {"decoder": str, "reward": str, "lowres": int}
_UG_KEYS = {"scale": float, "every": int}
_AE_KEYS = {
    "res": ("attn_res", lambda v: (int(v), int(v))),
    "iters": ("max_iter_to_alter", int),
    "scale": ("scale_factor", float),
}


@dataclass(frozen=True)
class Method:
    label: str
    kind: str  # fixed | date | ug | best
    steps: int | None = None  # None: the run's step count
    date: DATEConfig | None = None
    ug_scale: float = 0.0
    ug_every: int = 1
    n: int = 1
    ae: dict | None = None  # Attend-and-Excite options (token indices found automatically)
    reward_decoder: str | None = None  # "tiny" or a folder/hub id: the approximate reward-decoding path
    reward: str | None = None  # the reward this method follows (a spec); None: the run's reward
    reward_resolution: int | None = None  # the approximate reduced-resolution VAE decode for the reward (px)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.=@-]+", "_", self.label)


def _settings(spec: str, body: str, keys: dict) -> dict:
    out = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if key not in keys or not eq:
            raise ValueError(f"bad setting {item!r} in {spec!r}; keys: {', '.join(keys)}")
        conv = keys[key][1] if isinstance(keys[key], tuple) else keys[key]
        name = keys[key][0] if isinstance(keys[key], tuple) else key
        try:
            out[name] = conv(value)
        except ValueError as err:
            raise ValueError(f"bad value in {item!r} of {spec!r}: {err}") from err
    return out


def parse_method(spec: str) -> Method:
    spec = spec.strip()
    if spec == "fixed":
        return Method(spec, "fixed")
    if m := re.fullmatch(r"fixed@(\d+)", spec):
        return Method(spec, "fixed", steps=int(m.group(1)))
    if m := re.fullmatch(r"best-of-(\d+)", spec):
        if int(m.group(1)) < 1:
            raise ValueError(f"best-of-N needs N >= 1, got {spec!r}")
        return Method(spec, "best", n=int(m.group(1)))
    name, _, body = spec.partition(":")
    if name == "date":
        items = [x for x in body.split(",") if x]
        run = _settings(spec, ",".join(x for x in items if x.partition("=")[0] in _RUN_KEYS), _RUN_KEYS)
        if "reward" in run:
            from date_diffusion.rewards.registry import check_spec

            check_spec(run["reward"])
        body = ",".join(x for x in items if x.partition("=")[0] not in _RUN_KEYS)
        return Method(
            spec,
            "date",
            date=DATEConfig(**_settings(spec, body, _DATE_KEYS)),
            reward_decoder=run.get("decoder"),
            reward=run.get("reward"),
            reward_resolution=run.get("lowres"),
        )
    if name == "ae":
        return Method(spec, "ae", ae={"token_indices": "auto", **_settings(spec, body, _AE_KEYS)})
    if name == "date+ae":
        items = [x for x in body.split(",") if x]
        ae_part = ",".join(x for x in items if x.partition("=")[0] in _AE_KEYS)
        date_part = ",".join(x for x in items if x.partition("=")[0] not in _AE_KEYS)
        return Method(
            spec,
            "date",
            date=DATEConfig(**_settings(spec, date_part, _DATE_KEYS)),
            ae={"token_indices": "auto", **_settings(spec, ae_part, _AE_KEYS)},
        )
    if name == "ug":
        kw = _settings(spec, body, _UG_KEYS)
        if "scale" not in kw:
            raise ValueError(f"{spec!r} needs a scale, e.g. ug:scale=20")
        return Method(spec, "ug", ug_scale=kw["scale"], ug_every=kw.get("every", 1))
    raise ValueError(
        f"unknown method {spec!r}; use fixed, fixed@K, date:rho=R,every=N, ug:scale=S, best-of-N, ae, date+ae"
    )


def recommended_spec(recommended: dict) -> str:
    """The `date:...` spec of a model's recommended DATE setting (`toyworld.json`'s `recommended`)."""
    keys = {"rho": "rho", "rho_relative": "rel", "update_every": "every", "grad_steps": "grad", "reward": "reward"}
    items = [f"{short}={recommended[k]}" for k, short in keys.items() if recommended.get(k) is not None]
    return "date:" + ",".join(items)


def parse_methods(text: str, recommended: dict | None = None) -> list[Method]:
    """Methods separated by spaces or '+' (commas belong to a method's settings; the '+' of `date+ae` is part
    of that method's name). `recommended` is the model's recommended setting, run by the method `recommended`."""
    methods = []
    for spec in (m for m in re.split(r"\s+|(?<!\bdate)\+", text.strip()) if m):
        if spec == "recommended":
            if not recommended:
                raise ValueError("method 'recommended' needs a model that recommends a DATE setting (the toy world)")
            import dataclasses

            methods.append(dataclasses.replace(parse_method(recommended_spec(recommended)), label="recommended"))
        else:
            methods.append(parse_method(spec))
    if not methods:
        raise ValueError("no methods given")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a method is listed twice: {labels}")
    return methods
