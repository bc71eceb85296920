"""`DATEConfig`: every knob of the DATE update, with the paper's defaults (each field's kind, range, flag and help
live in `core/settings.py`)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from date_diffusion.core.settings import ANCHORS, DIRECTIONS, REWARD_TARGETS, SETTINGS, SettingError
from date_diffusion.core.text import json_kind, json_spelling, quoted, spelled

__all__ = ["ANCHORS", "DIRECTIONS", "REWARD_TARGETS", "DATEConfig", "SettingError"]
PAPER_RHO = 0.5
PAPER_UPDATE_EVERY = 10


MIN_RELATIVE = 2.0**-24  # the smallest relative step `DATEConfig.moves` counts as a move
# why `DATEConfig.acts` is false, as every command that refuses or notes it says it
CANNOT_ACT = "a step size that is zero in 32-bit floats, a relative one below 2^-24, or no update step"


def nonzero_in_float32(value: float) -> bool:
    """Whether `value` (>= 0) stays above 0 in 32-bit floats (`1e-320` rounds to 0; values above 1 count as 1)."""
    return struct.unpack("f", struct.pack("f", min(value, 1.0)))[0] > 0


class _PaperRho(float):
    """The default of `DATEConfig.rho`: the paper's value, told apart from the same value given."""


class _PaperEvery(int):
    """The default of `DATEConfig.update_every`: the paper's value, told apart from the same value given."""


_DEFAULTS = (_PaperRho, _PaperEvery)


@dataclass
class DATEConfig:
    """Settings of Diffusion Adaptive Text Embedding.

    Which sampling steps update the embedding is given by exactly one of:
      - `update_every`: steps `i` with `i % update_every == 0` (paper: 10 of 50 steps -> 0, 10, 20, 30, 40);
      - `update_steps`: an explicit list of steps;
      - `update_intervals`: `(start, end)` pairs, every step with `start <= i < end`.
    Giving `update_steps` or `update_intervals` replaces the default `update_every`; giving `update_every` beside
    one of them is refused (even at the paper's 10), as is `rho` beside `rho_relative` (rho is then None).
    Steps count as diffusers counts them (`num_inference_steps` of them, `sampling.loop.step_starts`): an update
    acts at the first loop iteration of its step, so a scheduler that runs more iterations than steps (PNDM's
    warm-up, Heun's and KDPM2's two evaluations a step) neither shifts nor adds updates.

    rho: distance each update moves every sample's embedding (Frobenius norm over all tokens).
    rho_relative: scale-free alternative to `rho` (give one of the two): each sample moves
        `rho_relative * ||c_org||_F`, the norm of its original embedding's adapted part, so one setting means
        the same relative step on every backbone. The paper's rho = 0.5 on SD 1.5 is about 0.002 (0.5 / 243,
        see docs/step-size.md).
    grad_steps: gradient steps per update step (reference: `num_upt_prompt`).
    anchor: "previous" accumulates (`c <- c - rho g/|g|`, the reference default); "original" re-anchors
        (`c <- c_org - rho g/|g|`), the paper's closed-form solution.
    prior_weight: weight of `mean((c - c_org)^2)` (per sample, over tokens and channels) added to the loss.
    track_reward_after: also score the image after each update (one extra decode + reward, no gradient);
        for the trace only, it does not change the sample.

    The paper's ablations (defaults = DATE):
    direction: "random" moves each sample `rho` in a random direction instead of along the gradient.
    normalize: False takes the raw step `c <- c - rho * g` instead of `rho * g / ||g||`.
    reward_target: "next" scores the decoded next noisy sample (`alpha_prev * x0_hat + sigma_prev * eps_hat`,
        a DDIM step, the noisy image) instead of the clean estimate `x0_hat`.
    """

    rho: float | None = _PaperRho(PAPER_RHO)
    rho_relative: float | None = None
    update_every: int | None = _PaperEvery(PAPER_UPDATE_EVERY)
    update_steps: Sequence[int] | None = None
    update_intervals: Sequence[tuple[int, int]] | None = None
    grad_steps: int = 1
    anchor: str = "previous"
    prior_weight: float = 0.0
    track_reward_after: bool = True
    direction: str = "gradient"
    normalize: bool = True
    reward_target: str = "x0"

    def __post_init__(self):
        self._one_of_each_group()
        for setting in SETTINGS:  # each field's kind and range (core/settings.py)
            value = getattr(self, setting.field)
            if value is not None or not setting.optional:
                try:
                    checked = setting.kind.check(value, setting.field)
                except SettingError as err:
                    raise err.about(setting.field) from None
                # a default stays marked as one, so that `dataclasses.replace(config, rho_relative=...)` may set the
                # other member of its group
                setattr(self, setting.field, type(value)(checked) if isinstance(value, _DEFAULTS) else checked)
        if self.prior_weight and self.direction == "random":  # the prior is a term of the loss it does not follow
            raise SettingError(
                "prior_weight acts on the loss's gradient, which direction 'random' does not follow: "
                "leave one of them out"
            )
        if self.direction == "random" and not self.normalize:  # the ablation's point is the same distance
            raise SettingError(
                "direction 'random' moves the embedding rho along a random direction, the distance DATE moves it; "
                "normalize false would step rho times the raw noise (its norm grows with the embedding's size): "
                "leave one of them out"
            )
        if self.rho_relative is not None and not self.normalize:  # the fraction is a distance, and would not be
            raise SettingError(
                "normalize false steps rho times the raw gradient, so a relative step (rho_relative, a fraction of "
                "the embedding's norm: the distance each update moves) would move another distance than its "
                "fraction: give rho (an absolute step) with normalize false, or leave normalize out"
            )
        if self.prior_weight and not nonzero_in_float32(self.prior_weight):  # the loss is float32 at the most
            raise SettingError(f"prior_weight {self.prior_weight!r} is 0 in 32-bit floats, so the prior term adds "
                               "nothing: give 0 (no prior) or a weight that acts")  # fmt: skip

    def _one_of_each_group(self) -> None:
        """One member of each group of alternatives: one given beside another is refused naming both, even at the
        paper's value (it would be ignored); the paper's rho and update_every fill a group nobody set."""
        if self.rho_relative is not None:
            if self.rho is not None and not isinstance(self.rho, _PaperRho):
                raise SettingError(
                    f"give only one of rho ({self.rho}) and rho_relative ({self.rho_relative}): both set the step size"
                )
            self.rho = None
        elif self.rho is None:
            raise SettingError("no step size: set rho (>= 0) or rho_relative")
        explicit = [n for n in ("update_steps", "update_intervals") if getattr(self, n) is not None]
        if len(explicit) > 1:
            raise SettingError("give only one of update_steps and update_intervals")
        if explicit:
            if self.update_every is not None and not isinstance(self.update_every, _PaperEvery):
                raise SettingError(
                    f"give only one of update_every ({self.update_every}) and {explicit[0]}: both set the schedule"
                )
            self.update_every = None
        elif self.update_every is None:
            raise SettingError("no update schedule: set update_every (>= 1), update_steps or update_intervals")

    @property
    def moves(self) -> bool:
        """Whether an update can move the embedding at all: a zero step size makes DATE the fixed sampler, and so
        does one that is 0 in the embedding's precision (32-bit floats at the most: `rho=1e-320` rounds to 0). A
        relative step (`rho_relative`) moves `rho_relative * ||c||`: below `MIN_RELATIVE` (2^-24, 32-bit floats'
        unit roundoff) that is less than the rounding of the embedding's own norm, and counts as no move whatever
        the model (`rel=1e-45` moved 0.0)."""
        if self.rho_relative is None:
            return nonzero_in_float32(self.rho)
        return self.rho_relative >= MIN_RELATIVE

    def acts(self, num_loop_steps: int) -> bool:
        """Whether DATE can act in a run of `num_loop_steps` sampling steps (`moves`, and at least one update step):
        the one test of every command that says DATE cannot act and records its images as method `fixed`."""
        return self.moves and bool(self.update_indices(num_loop_steps))

    def step_sizes(self, original, adapt_mask=None):
        """The distance each sample moves per update, `[B]` (or the float rho): `rho`, or `rho_relative` times
        the Frobenius norm of the adapted part of each sample's original embedding."""
        import torch

        if self.rho_relative is None:
            return self.rho
        part = original if adapt_mask is None else original * adapt_mask
        return self.rho_relative * torch.linalg.vector_norm(part.flatten(1), dim=1, dtype=torch.float64)

    def update_indices(self, num_loop_steps: int) -> list[int]:
        """Sorted steps that update, checked against a run of `num_loop_steps` sampling steps."""
        last = num_loop_steps - 1
        if self.update_every is not None:
            return list(range(0, num_loop_steps, self.update_every))
        if self.update_steps is not None:
            bad = [i for i in self.update_steps if i > last]
            if bad:
                raise ValueError(f"update_steps {','.join(map(spelled, bad))} are outside the run: allowed indices are "
                                 f"0..{last}")  # fmt: skip
            return sorted(set(self.update_steps))
        bad = [iv for iv in self.update_intervals if iv[1] > num_loop_steps]
        if bad:
            pairs = ",".join(f"{spelled(start)}:{spelled(end)}" for start, end in bad)  # as typed, not `[(0, 5)]`
            raise ValueError(f"update_intervals {pairs} end past the run: allowed range is 0..{num_loop_steps}")
        return sorted({i for s, e in self.update_intervals for i in range(s, e)})

    @classmethod
    def from_dict(cls, data) -> DATEConfig:
        """The inverse of `to_dict`, for a setting a file gives (a run.json method, a PNG record, an embeddings
        file): an object of DATEConfig's fields, each through its kind. Anything else, or a key that is no field,
        is a SettingError naming it, never Python's TypeError."""
        if not isinstance(data, dict):
            raise SettingError(f"DATE's settings must be an object of its fields, got {json_kind(data)}")
        unknown = [key for key in data if key not in FIELD_NAMES]
        if unknown:
            raise SettingError(f"{quoted(unknown[0])} is no DATE setting (they are {', '.join(FIELD_NAMES)})").about(
                unknown[0]
            )
        try:
            return cls(**data)
        except SettingError as err:  # a file's value quoted as the file spells it (`true`, `null`), not as Python
            said = str(err)
            for value in data.values():
                said = said.replace(f"got {value!r}", f"got {json_spelling(value)}")
            raise SettingError(said).about(getattr(err, "setting", None)) from None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("update_steps", "update_intervals"):
            if d[k] is not None:
                d[k] = [list(v) if isinstance(v, tuple) else v for v in d[k]]
        return d


FIELD_NAMES = tuple(f.name for f in fields(DATEConfig))  # what a file's DATE settings may hold (`from_dict`)
