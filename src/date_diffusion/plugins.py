"""Plugins: packages that add model families, rewards, model-folder files or a default model through the public
registration APIs (`families.register`, `rewards.registry.register_reward` / `register_renamed`,
`model_folder.register_file` / `register_default_model`).

A plugin declares an entry point in the group `date_diffusion.plugins` (pyproject.toml:
`[project.entry-points."date_diffusion.plugins"] NAME = "package.module:register"`) naming a function of no
arguments that registers what the plugin brings. The registries load every plugin the first time they are asked
(`load()`), so no lower module imports a plugin. The shipped toy world is one (`toyworld/plugin.py`).

A plugin whose entry point cannot be imported, or whose function raises, is a `PluginError` naming it, raised each
time a registry is asked.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import import_module

GROUP = "date_diffusion.plugins"
# This package's own plugins, as pyproject.toml declares them: used where the installed metadata lacks them (a
# source tree on PYTHONPATH, an install made before the plugin existed). A test keeps the two equal.
OWN = {"toyworld": "date_diffusion.toyworld.plugin:register"}


class PluginError(RuntimeError):
    """A plugin that failed to load or to register."""


@dataclass(frozen=True)
class Plugin:
    """One entry point of the group: `value` is `module:function` (extras in brackets are ignored)."""

    name: str
    value: str

    def load(self):
        module, _, attr = self.value.split("[")[0].strip().partition(":")
        found = import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            found = getattr(found, part)
        return found


_state: dict = {"loaded": False, "loading": False, "failure": None}


def installed() -> dict[str, str]:
    """name -> value of the group's entry points in the installed distributions' `entry_points.txt` (the first of a
    name along sys.path), read directly: `importlib.metadata` costs the command line's start tens of milliseconds."""
    found: dict[str, str] = {}
    for folder in sys.path:
        try:
            names = sorted(n for n in os.listdir(folder or ".") if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(folder or ".", name, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except OSError:
                continue
            for key, value in _section(text, GROUP).items():
                found.setdefault(key, value)
    return found


def _section(text: str, group: str) -> dict[str, str]:
    """`key = value` lines of one `[group]` of an entry_points.txt (an INI file)."""
    out, inside = {}, False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
        elif inside and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def entry_points() -> list[Plugin]:
    """The plugins, by name: the installed ones, then this package's own where not installed."""
    found = {**OWN, **installed()}
    return [Plugin(name, found[name]) for name in sorted(found)]


def load() -> None:
    """Load every plugin once (the registries call this before answering); a failure is raised again each call."""
    if _state["failure"] is not None:
        raise _state["failure"]
    if _state["loaded"] or _state["loading"]:  # (a plugin registering asks the registries: no second load)
        return
    _state["loading"] = True
    try:
        for ep in entry_points():
            try:
                ep.load()()
            except Exception as err:  # noqa: BLE001  (whatever a plugin raises, it is named)
                _state["failure"] = PluginError(
                    f"plugin {ep.name!r} (entry point {ep.value!r} in group {GROUP!r}) failed to register: "
                    f"{type(err).__name__}: {err}"
                )
                raise _state["failure"] from err
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def reset() -> None:
    """Forget that plugins were loaded (tests; registrations already made stay)."""
    _state.update(loaded=False, loading=False, failure=None)
