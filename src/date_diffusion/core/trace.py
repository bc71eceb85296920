"""What DATE did to each image, as typed records: an update step's `UpdateRecord` and an image's `Trace`. They are
serialised at the edge (`to_dict`: pipeline outputs, records, files), and the file schemas that read them back
(`schemas.TRACE`, `schemas.UPDATE`) are derived from these types. Light: no torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UpdateRecord:
    """What one update step did to one image: the step, where the scheduler was (`timestep` where its timesteps
    are times of the training schedule, `sigma` where it works in sigmas), the distance moved, whether it was
    skipped (a zero or non-finite gradient), each gradient step's norm, the reward of x0_hat before the update
    and (with `track_reward_after`) after it."""

    step: int
    timestep: int | None = None
    sigma: float | None = None
    update_norm: float = 0.0
    skipped: bool = False
    grad_norms: list[float] = field(default_factory=list)
    reward_before: float | None = None
    reward_after: float | None = None

    def to_dict(self) -> dict:
        """The record as files hold it (keys without a value left out)."""
        out = {"step": self.step}
        out.update({k: v for k, v in (("timestep", self.timestep), ("sigma", self.sigma)) if v is not None})
        out.update(update_norm=self.update_norm, skipped=self.skipped, grad_norms=self.grad_norms)
        out["reward_before"] = self.reward_before
        if self.reward_after is not None:
            out["reward_after"] = self.reward_after
        return out


@dataclass
class Trace:
    """What DATE did to one image; `to_dict()` is its form in outputs and files (`schemas.TRACE` derives from it)."""

    update_steps: list[int] = field(default_factory=list)
    updates: list[UpdateRecord] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    final_distance: float = 0.0  # ||c_final - c_org||_F
    reward_decoder: str | None = None  # what decoded x0_hat for the reward (the pipelines' reward path)
    attend_excite_losses: list | None = None  # Attend-and-Excite's losses, where it ran

    def to_dict(self) -> dict:
        out = {
            "update_steps": self.update_steps,
            "skipped_steps": self.skipped_steps,
            "final_distance": self.final_distance,
            "updates": [u.to_dict() for u in self.updates],
        }
        if self.reward_decoder is not None:
            out["reward_decoder"] = self.reward_decoder
        if self.attend_excite_losses is not None:
            out["attend_excite_losses"] = self.attend_excite_losses
        return out


# why an image DATE was to update is not `moved`, as every command that notes it says it
DID_NOT_MOVE = "a step that is zero in the embedding's precision, or every gradient zero"
# what an image DATE did not move is: the original embedding's, as the fixed image, though not always to the bit
UNMOVED_IMAGE = ("sampled with the original embedding, as the fixed image is (a pixel or two may differ by a level: "
                 "its update steps ran the model on their own, which rounds otherwise)")  # fmt: skip


def moved(trace: dict | None) -> bool:
    """Whether DATE moved this image's embedding (a trace as files hold it): an image no update moved (every
    update skipped: a zero or non-finite gradient) is the fixed-embedding sampler's image."""
    return bool(trace) and (trace.get("final_distance") or 0) > 0


def rounded_away(trace: dict | None, date) -> dict | None:
    """The first update of `trace` that moved the embedding less than half of the absolute step it was asked to take
    (`date`: its `DATEConfig`; float32's rounding of the embedding's values ate the rest: a step below their
    precision), or None. Judged only where each update moves exactly `rho` from the embedding before it (one
    normalised gradient step from the previous embedding); a relative step below that precision is refused before
    any work (`DATEConfig.moves`). None for an image no update moved (`moved`: it is the fixed image, said as such)."""
    exact = date is not None and date.rho_relative is None and date.rho is not None and date.normalize
    if not moved(trace) or not exact or date.grad_steps != 1 or date.anchor != "previous":
        return None
    half = date.rho / 2
    return next((u for u in trace.get("updates", []) if not u.get("skipped") and u["update_norm"] < half), None)


def stood_still(trace: dict | None) -> bool:
    """Whether DATE was to update this image (update steps planned) and no update moved its embedding."""
    return bool(trace) and bool(trace.get("update_steps")) and not moved(trace)
