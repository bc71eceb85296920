"""Values that are not finite (NaN, infinity) in what a run makes: which images of a batch hold them, and the warning
a pipeline gives when a finished image does. Light: no torch import (the tensors come from the caller)."""

from __future__ import annotations


class NonFiniteOutputWarning(UserWarning):
    """A finished image (decoded, before it is turned into pixels) holds NaN or infinite values: the model's weights
    or configs make them (or float16 overflows in the VAE). The pipeline returns what stock diffusers returns (NaN
    becomes black pixels); the command line, the benchmark and the page stop instead of writing such an image."""


def nonfinite_rows(values) -> list[int]:
    """The indices along the first dimension (the images of a batch) of `values` (a tensor) that hold a value that
    is not finite."""
    import torch

    flat = values.reshape(values.shape[0], -1) if values.dim() > 1 else values.reshape(-1, 1)
    return (~torch.isfinite(flat)).any(1).nonzero().flatten().tolist()
