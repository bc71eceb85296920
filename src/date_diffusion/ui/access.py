"""What a visitor of the page may make the server read (the registered rewards by name, and files under the folders
its operator named at start-up (`date-diffusion ui --allow-path DIR`); nothing else of the server's disk), and how
much work one request may ask of it (`request_work`, bounded by `date-diffusion ui --max-work N`).

The page's only field that can name a path is the reward (`NAME:SOURCE` in any term, also inside `augK(...)`,
`mean(...;...)`, `subjects(...)` and weighted sums); the model, the benchmark run and the approximate decoder are
fixed when the server starts. A source outside the allowed folders is refused with one message whatever the path
is, so the answer never tells whether it exists; inside an allowed folder, a source must exist (a name there that
reads like a hub id is not downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

from date_diffusion.rewards.registry import RewardSpecError, spec_sources


class PathRefused(ValueError):
    """A reward spec that would read outside what the page offers (its message never says whether a path exists)."""


def allowed_folders(paths) -> tuple[Path, ...]:
    """The operator's folders, resolved (symbolic links followed) once at start-up."""
    return tuple(Path(p).resolve() for p in paths or ())


def _inside(source: str, allowed: tuple[Path, ...]) -> Path | None:
    """The resolved path of `source` when it lies inside one of `allowed` (links followed: a link out is out)."""
    try:
        path = Path(source).resolve()
    except (OSError, ValueError, RuntimeError):  # an embedded NUL byte, a symlink loop
        return None
    return path if any(path == folder or path.is_relative_to(folder) for folder in allowed) else None


def check_reward_sources(spec: str, allowed: tuple[Path, ...], label: str = "reward") -> None:
    """Refuse (`PathRefused`) a spec with a source outside `allowed`; a malformed spec raises `RewardSpecError`."""
    for name, source in spec_sources(spec):
        if source is None:
            continue
        where = (
            f"inside the folders this server allows ({', '.join(str(f) for f in allowed)})"
            if allowed
            else "nowhere: this server allows no folder (its operator can start it with --allow-path DIR)"
        )
        path = _inside(source, allowed)
        if path is None:
            from date_diffusion.rewards.registry import standalone_names

            shown = ", ".join(standalone_names())  # each one the page takes (never `clip` alone)
            raise PathRefused(
                f"{label} {spec!r}: this page loads rewards by their registered names ({shown}) and from files "
                f"{where}; {name}:{source} is not one of them"
            )
        if not os.path.exists(path):  # inside an allowed folder: saying so reveals only what the operator offers
            raise PathRefused(f"{label} {spec!r}: {name}:{source}: no such file or folder in the allowed folders")


__all__ = ["PathRefused", "RewardSpecError", "allowed_folders", "check_reward_sources"]


# what one request may make the server do: its work, in sampling steps (`perf.work.request_work`)
MAX_WORK = 400  # the default --max-work: the paper's 50 steps with an update at each step is 50 + 3 * 50 = 200
MAX_QUEUE = 8  # requests waiting at once, beyond those running: one visitor's many cannot hold the page for long
