"""Known answers for the paired statistics of bench reports (`evaluation.stats`)."""

import inspect
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from date_diffusion.evaluation.stats import bootstrap_ci, paired_difference

TREATED = [3.0, 5.0, 4.0, 7.0, 6.0]
CONTROL = [1.0, 2.0, 4.0, 5.0, 3.0]  # differences 2, 3, 0, 2, 3: mean 10 / 5 = 2


def exact_percentile_interval(values, level):
    """The percentile interval of the exact bootstrap distribution of the mean: all n^n equally likely resamples
    enumerated, each end the smallest resample mean whose cumulative probability reaches the quantile."""
    v = np.asarray(values, dtype=np.float64)
    means = np.sort([v[list(idx)].mean() for idx in itertools.product(range(v.size), repeat=v.size)])
    alpha = (1 - level) / 2

    def quantile(p):
        return float(means[math.ceil(p * means.size - 1e-9) - 1])

    return quantile(alpha), quantile(1 - alpha)


@pytest.mark.parametrize("level, interval", [(0.95, (1.0, 2.8)), (0.8, (1.4, 2.6))])
def test_paired_difference_known_mean_and_exact_bootstrap_interval(level, interval):
    # the exact distribution (3125 resamples) puts 1.95% of its mass below 1.0 and 4.51% up to it, 93.86% up to 2.6
    # and 98.98% up to 2.8 (95%); 8.35% up to 1.2, 16.03% up to 1.4 and 83.62% up to 2.4 (80%): every end is
    # more than 3 Monte-Carlo standard errors (10 000 resamples) from the next value, so the estimate lands on it
    assert exact_percentile_interval(np.subtract(TREATED, CONTROL), level) == pytest.approx(interval, abs=1e-12)
    for seed in (0, 1, 2):
        mean, low, high = paired_difference(TREATED, CONTROL, level=level, seed=seed)
        assert mean == 2.0
        assert (low, high) == pytest.approx(interval, abs=1e-12)


def test_paired_difference_is_antisymmetric_and_checks_pairing():
    mean, low, high = paired_difference(TREATED, CONTROL)
    assert paired_difference(CONTROL, TREATED) == pytest.approx((-mean, -high, -low), abs=1e-12)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0])


def _scipy_rng(seed):
    # scipy >= 1.15 takes `rng`; older releases only `random_state`
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


# a fixed, skewed data set (25 draws of an exponential, rounded, written out)
SKEWED = [0.708, 1.025, 0.569, 0.895, 0.207, 3.384, 0.01, 2.809, 0.575, 0.301, 0.541, 0.312, 0.9, 1.074, 1.884,
          0.222, 3.145, 0.736, 0.348, 0.884, 0.075, 0.06, 1.224, 0.773, 2.196]  # fmt: skip


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap(level):
    data = np.array(SKEWED)
    b = 10_000
    mean, low, high = bootstrap_ci(data, n_resamples=b, level=level, seed=0)
    assert mean == pytest.approx(24.857 / 25, rel=1e-12)
    ref = stats.bootstrap(
        (data,), np.mean, n_resamples=b, confidence_level=level, method="percentile", **_scipy_rng(12345)
    ).confidence_interval
    # Monte-Carlo error of a bootstrap quantile: sqrt(a (1 - a) / B) / density at the quantile, the density from the
    # normal approximation of the mean's bootstrap distribution (sd = population sd / sqrt(n)); two independent
    # estimates differ by sqrt(2) of it; allowed: 4 of those standard errors (here 0.028 at 95%, 0.018 at 80%)
    alpha = (1 - level) / 2
    sd = data.std() / np.sqrt(data.size)
    density = stats.norm.pdf(stats.norm.ppf(alpha)) / sd
    tol = 4 * math.sqrt(2) * math.sqrt(alpha * (1 - alpha) / b) / density
    assert abs(low - ref.low) <= tol and abs(high - ref.high) <= tol, (low, high, ref, tol)
    assert low < mean < high


def test_all_values_equal_give_a_zero_width_interval_at_that_value():
    assert bootstrap_ci([1.5] * 7) == (1.5, 1.5, 1.5)
    assert paired_difference([2.0, 3.0, 4.0], [1.75, 2.75, 3.75]) == (0.25, 0.25, 0.25)


def test_one_value_and_no_values():
    assert bootstrap_ci([4.2]) == (4.2, 4.2, 4.2)
    assert paired_difference([1.0], [3.5]) == (-2.5, -2.5, -2.5)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
