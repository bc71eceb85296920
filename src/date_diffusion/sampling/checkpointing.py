"""Fine-grained activation checkpointing for the gradient passes of update steps.

diffusers' `enable_gradient_checkpointing()` on the VAE checkpoints whole decoder blocks, so the backward pass
still recomputes and holds every activation of the largest (full-resolution) block at once; and a transformers
CLIP checkpoints its layers only in training mode. Update steps run frozen models in eval mode, so here each
residual block, up-sampler, attention and transformer encoder layer is checkpointed on its own: the backward
pass holds one unit's activations plus one input per unit. The values and gradients are unchanged (tested).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

# diffusers building blocks and transformers encoder layers (CLIPEncoderLayer, ...), matched by class name so
# that any model built from them is covered
_UNITS = ("ResnetBlock2D", "Upsample2D", "Attention", "AutoencoderTinyBlock")


def _is_unit(module: torch.nn.Module) -> bool:
    name = type(module).__name__
    return name in _UNITS or name.endswith("EncoderLayer")


def _units(module: torch.nn.Module):
    """Outermost checkpointable units under `module` (a unit's own children are not wrapped again)."""
    for child in module.children():
        if _is_unit(child):
            yield child
        else:
            yield from _units(child)


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


@contextmanager
def fine_checkpointing(*modules: torch.nn.Module | None):
    """Within the block, every unit under `modules` (None entries skipped) recomputes its activations in
    the backward pass instead of keeping them; gradient-free calls run as usual."""
    patched = [(u, u.__dict__.get("forward")) for m in modules if m is not None for u in _units(m)]
    for unit, _ in patched:
        unit.forward = _checkpointed(unit.forward)
    try:
        yield len(patched)
    finally:
        for unit, own in patched:  # an instance-level forward (e.g. an offload hook) is put back as it was
            if own is None:
                del unit.forward
            else:
                unit.forward = own
