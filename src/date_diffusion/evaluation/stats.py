"""Paired statistics for comparing methods on the same (prompt, seed) pairs."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean of `values` (e.g. paired differences)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_difference(treated, control, **kwargs) -> tuple[float, float, float]:
    """Bootstrap CI of mean(treated - control) over pairs (same prompt and seed)."""
    t, c = np.asarray(treated, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if t.shape != c.shape:
        raise ValueError(f"paired samples differ in length: {t.shape} vs {c.shape}")
    return bootstrap_ci(t - c, **kwargs)
