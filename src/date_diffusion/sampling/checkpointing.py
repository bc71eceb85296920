"""Fine-grained activation checkpointing for the gradient passes of update steps, and returning freed memory.

diffusers' `enable_gradient_checkpointing()` on the VAE checkpoints whole decoder blocks, so the backward pass
still recomputes and holds every activation of the largest (full-resolution) block at once; and a transformers
CLIP checkpoints its layers only in training mode. Update steps run frozen models in eval mode, so here each
residual block, up-sampler, attention and transformer encoder layer is checkpointed on its own: the backward
pass holds one unit's activations plus one input per unit. The layers between units are grouped with them, so
that they keep no full-resolution activations either: a decoder's output head (norm, activation, convolution)
is one unit, and a `Sequential` of layers and units (the tiny decoder) runs as segments that each end at a
unit. The values and gradients are unchanged (tested).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from functools import cache

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# diffusers building blocks and transformers encoder layers (CLIPEncoderLayer, ...), matched by class name so
# that any model built from them is covered
_UNITS = ("ResnetBlock2D", "Upsample2D", "Attention", "AutoencoderTinyBlock")


def _is_unit(module: nn.Module) -> bool:
    name = type(module).__name__
    return name in _UNITS or name.endswith("EncoderLayer")


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def _identity(x, *args, **kwargs):
    return x


def _segments(seq: nn.Sequential) -> list[list[nn.Module]]:
    """The children of `seq` in runs that each end at a unit; layers after the last unit join the last run."""
    runs, current = [], []
    for child in seq:
        current.append(child)
        if _is_unit(child):
            runs.append(current)
            current = []
    if current:
        runs[-1].extend(current)
    return runs


def _segmented(seq: nn.Sequential):
    """A forward for `seq` that checkpoints each segment as one piece."""

    def run_segment(x, layers):
        for layer in layers:
            x = layer(x)
        return x

    segments, run = _segments(seq), _checkpointed(run_segment)

    def forward(x):
        for layers in segments:
            x = run(x, layers)
        return x

    return forward


def _head(module: nn.Module):
    """(module, forward) patches that run a decoder's `conv_norm_out -> conv_act -> conv_out` as one unit."""
    parts = [getattr(module, n, None) for n in ("conv_norm_out", "conv_act", "conv_out")]
    if not isinstance(parts[0], nn.GroupNorm) or not all(isinstance(p, nn.Module) for p in parts):
        return []
    norm, act, conv = (type(p).forward.__get__(p) for p in parts)  # the class forwards, whatever is patched
    return [
        (parts[0], _checkpointed(lambda x: conv(act(norm(x))))),
        (parts[1], _identity),
        (parts[2], _identity),
    ]


def _plan(module: nn.Module):
    """(module, forward) for every outermost checkpointed piece under `module` (a piece is not entered again)."""
    for child in module.children():
        if _is_unit(child):
            yield child, _checkpointed(child.forward)
        elif isinstance(child, nn.Sequential) and any(_is_unit(c) for c in child):
            yield child, _segmented(child)
        else:
            yield from _plan(child)
    yield from _head(module)


@contextmanager
def fine_checkpointing(*modules: nn.Module | None):
    """Within the block, every unit under `modules` (entries that are no modules skipped) recomputes its activations in
    the backward pass instead of keeping them; gradient-free calls run as usual. Yields the number of
    checkpointed pieces."""
    roots = [root for root in modules if isinstance(root, nn.Module)]  # a reward may be a plain function
    plan = [(m, forward) for root in roots for m, forward in _plan(root)]
    patched = [(m, m.__dict__.get("forward")) for m, _ in plan]
    for m, forward in plan:
        m.forward = forward
    try:
        yield sum(forward is not _identity for _, forward in plan)
    finally:
        for m, own in patched:  # an instance-level forward (e.g. an offload hook) is put back as it was
            if own is None:
                del m.forward
            else:
                m.forward = own


@cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def release_freed_memory(tensor: torch.Tensor) -> None:
    """Give memory that the C allocator holds freed back to the operating system (glibc's `malloc_trim`).

    Between the parts of an update step on a CPU, glibc keeps the freed activations of one part (the many small
    and medium tensors of a denoiser pass) in its heap, and the next part (decoder, backward) allocates its large
    tensors elsewhere: the process's peak memory is then the sum of both. Acts only for CPU tensors on glibc."""
    trim = _malloc_trim()
    if trim is not None and tensor.device.type == "cpu":
        trim(0)
