"""Keeping the clean-image estimate every scheduler step computes (`pred_original_sample`), without changing the
sampler: for measurements (the judges' training data, selection at an early step)."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def recorded_x0(scheduler):
    """`with recorded_x0(pipe.scheduler) as seen:` -> `seen[i]` is the x0_hat of the i-th scheduler step taken
    inside the block (detached). Schedulers without `pred_original_sample` are refused."""
    seen, step = [], scheduler.step

    def recording(*args, **kwargs):
        out = step(*args, **kwargs)
        x0 = out[1] if isinstance(out, tuple) else getattr(out, "pred_original_sample", None)
        if x0 is None:
            raise ValueError(f"{type(scheduler).__name__} returns no clean-image estimate (pred_original_sample)")
        seen.append(x0.detach())
        return out

    scheduler.step = recording
    try:
        yield seen
    finally:
        del scheduler.step  # the instance attribute: the class's step is back
