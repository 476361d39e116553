"""Exact acceptance bounds for statistical tests.

A check on random draws fails now and then even when the code is right; its false-failure rate
is how often. The bounds here come from the exact binomial distribution, not from a normal
approximation, which is far off in the tails and for rare events (a count whose mean is 0.2).
docs/testing.md lists every statistical test of the suite with its bound.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

SUITE_FALSE_FAILURE = 1e-6
"""The most the whole suite may fail by chance, per run, when the code is right."""


def binomial_acceptance(n: int, p: float, false_failure: float) -> tuple[int, int]:
    """The counts (low, high) such that a Binomial(n, p) count lies below ``low`` with
    probability at most ``false_failure / 2``, and above ``high`` with probability at most
    ``false_failure / 2``; the narrowest such interval."""
    if not 0 < false_failure < 1:
        raise ValueError(f"false_failure must lie in (0, 1), got {false_failure}")
    low = int(binom.ppf(false_failure / 2, n, p))  # smallest k with P(X <= k) >= rate / 2
    high = int(binom.isf(false_failure / 2, n, p))  # smallest k with P(X > k) <= rate / 2
    return low, high


def assert_stochastic_rounding(draws: np.ndarray, exact: float, false_failure: float) -> None:
    """Assert that ``draws`` are independent unbiased stochastic roundings of ``exact``: each is
    floor(exact) or ceil(exact), and the number rounded up lies in the binomial acceptance
    interval for p = exact − floor(exact), so the mean of the draws is ``exact`` within it.

    Unbiased rounding fails this with probability at most ``false_failure`` (plus n·2⁻⁵³ when the
    generator draws uniforms on a 2⁻⁵³ grid, so that p is met only to within 2⁻⁵³). A rounding
    that rounds up with probability p + δ fails it, for most seeds, once |δ|·n exceeds the
    interval's half-width by two standard deviations, √(n·p·(1 − p)) each.
    """
    floor, ceil = np.floor(exact), np.ceil(exact)
    strays = draws[(draws != floor) & (draws != ceil)]
    assert strays.size == 0, f"{exact!r} rounded to {np.unique(strays)[:5].tolist()}"
    ups = int(np.count_nonzero(draws > floor))
    low, high = binomial_acceptance(draws.size, exact - floor, false_failure)
    assert low <= ups <= high, (
        f"{ups} of {draws.size} draws rounded {exact!r} up; unbiased rounding lands in "
        f"{low}..{high} with probability ≥ 1 − {false_failure:.2g}"
    )
