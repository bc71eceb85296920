"""Setting a pipeline up for one DATE run: every module frozen, the reward and the approximate decoder on the
execution device (so they follow `enable_model_cpu_offload`), and in memory-saving mode gradient checkpointing of
the denoiser (its own switch, restored afterwards) and of the decoders and the reward (`sampling.checkpointing`)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from date_diffusion.sampling.checkpointing import fine_checkpointing


def run_modules(pipe, options) -> list:
    """Every module of the pipeline and of the run (reward, approximate decoder), moved to the execution device."""
    device = torch.device(pipe._execution_device)
    for extra in (options.reward, options.reward_decoder):
        if isinstance(extra, torch.nn.Module) and any(p.device != device for p in extra.parameters()):
            extra.to(device)
    parts = (*pipe.components.values(), options.reward, options.reward_decoder)  # a reward may be a plain function
    return [m for m in parts if isinstance(m, torch.nn.Module)]


@contextmanager
def prepared(pipe, denoiser, options):
    """The run's modules frozen and, with `options.gradient_checkpointing`, checkpointed while the run lasts."""
    for module in run_modules(pipe, options):
        module.requires_grad_(False)
    switch = (
        options.gradient_checkpointing
        and getattr(denoiser, "_supports_gradient_checkpointing", False)
        and not denoiser.is_gradient_checkpointing
    )
    if switch:  # the denoiser's own switch checkpoints each resnet / attention
        denoiser.enable_gradient_checkpointing()
    fine = (
        fine_checkpointing(getattr(pipe.vae, "decoder", None), options.reward_decoder, options.reward)
        if options.gradient_checkpointing
        else nullcontext()
    )
    try:
        with fine:  # both act only where gradients are
            yield
    finally:
        if switch:
            denoiser.disable_gradient_checkpointing()
