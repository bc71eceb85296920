"""Keeping the clean-image estimate every scheduler step computes, without changing the sampler: for measurements
(the judges' training data, selection at an early step)."""

from __future__ import annotations

from contextlib import contextmanager

from date_diffusion.core.prediction import check_scheduler, preconditioning

OWN_ESTIMATES = ("pred_original_sample", "denoised")  # what diffusers' step outputs name their clean estimate


@contextmanager
def recorded_x0(scheduler):
    """`with recorded_x0(pipe.scheduler) as seen:` -> `seen[i]` is the x0_hat of the i-th scheduler step taken
    inside the block (detached): the estimate the step returns (`pred_original_sample`, LCM's `denoised`), or
    where its output names none (multistep solvers, PNDM, TCD, flow matching) the one its preconditioning gives
    (`core.prediction`), read before the step moves the scheduler on. A scheduler whose estimate cannot be derived
    is refused here, before any step."""
    check_scheduler(scheduler)
    seen, step = [], scheduler.step

    def recording(model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
        derived = preconditioning(scheduler, timestep).x0_of_sample(sample, model_output)
        out = step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        own = next((getattr(out, name) for name in OWN_ESTIMATES if getattr(out, name, None) is not None), None)
        seen.append((derived if own is None else own).detach())
        return out if return_dict else out.to_tuple()

    scheduler.step = recording
    try:
        yield seen
    finally:
        del scheduler.step  # the instance attribute: the class's step is back
