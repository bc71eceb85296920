"""Method specs shared by evaluation commands: `fixed` or `date:rho=0.5,every=10,anchor=previous,grad=1`."""

from __future__ import annotations

from date_diffusion.core.config import DATEConfig

_KEYS = {"rho": ("rho", float), "every": ("update_every", int), "grad": ("grad_steps", int),
         "anchor": ("anchor", str), "prior": ("prior_weight", float),
         "steps": ("update_steps", lambda v: [int(x) for x in v.split(";") if x])}  # fmt: skip


def parse_method(spec: str) -> tuple[str, DATEConfig | None]:
    """(label, DATEConfig or None for fixed embeddings)."""
    name, _, args = spec.partition(":")
    if name == "fixed" and not args:
        return spec, None
    if name != "date":
        raise ValueError(f"unknown method {spec!r}; use fixed or date:rho=R,every=N (keys: {', '.join(_KEYS)})")
    kwargs = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if key not in _KEYS or not eq:
            raise ValueError(f"bad setting {item!r} in {spec!r}; keys: {', '.join(_KEYS)} (e.g. date:rho=0.5,every=10)")
        field, conv = _KEYS[key]
        try:
            kwargs[field] = conv(value)
        except ValueError as err:
            raise ValueError(f"bad value in {item!r}: {err}") from err
    return spec, DATEConfig(**kwargs)
