"""s16.15 arithmetic of a SpiNNaker 2 PE (spec A4.3; docs/spinnaker2.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.spinnaker2.fixed import INT32_MAX, INT32_MIN, ONE, Fixed, decay_fraction

in_range = st.floats(-100.0, 100.0, allow_nan=False)


def test_sums_saturate_and_count_or_wrap_like_unchecked_c() -> None:
    fixed = Fixed()
    assert fixed.add(np.array([INT32_MAX, 5]), np.array([1, 6])).tolist() == [INT32_MAX, 11]
    assert fixed.sub(np.array([INT32_MIN]), np.array([1])).tolist() == [INT32_MIN]
    assert fixed.saturations == 2
    wrapping = Fixed(overflow="wrap")
    assert wrapping.add(np.array([INT32_MAX]), np.array([1])).tolist() == [INT32_MIN]
    assert wrapping.saturations == 0


def test_products_shift_with_floor_or_round_half_up() -> None:
    half = np.array([1])  # 2^-15 × 0.5 = 2^-16: half a step
    assert Fixed().mul(half, np.array([ONE // 2])).tolist() == [0]
    assert Fixed(rounding="half_up").mul(half, np.array([ONE // 2])).tolist() == [1]
    assert Fixed().mul(np.array([-1]), np.array([ONE // 2])).tolist() == [-1]  # floor: −2^-16
    assert Fixed().mul(np.array([3 * ONE]), np.array([-2 * ONE])).tolist() == [-6 * ONE]


def test_conversion_rounds_to_nearest_and_saturates() -> None:
    fixed = Fixed()
    raw = fixed.from_float(np.array([0.25, 1e6, -1e6, 2**-16 * 1.01]))
    assert raw.tolist() == [ONE // 4, INT32_MAX, INT32_MIN, 1]
    assert fixed.saturations == 2
    assert Fixed.to_float(raw)[0] == 0.25
    with pytest.raises(ValueError, match="NaN or inf"):
        fixed.from_float(np.array([np.inf]))


@settings(max_examples=300, deadline=None)
@given(a=in_range, b=in_range, factor=st.floats(0.0, 0.999999))
def test_products_and_decays_stay_within_one_step_of_the_real_result(
        a: float, b: float, factor: float) -> None:
    fixed = Fixed()
    x, y = fixed.from_float(np.array([a])), fixed.from_float(np.array([b]))
    exact_product = Fixed.to_float(x)[0] * Fixed.to_float(y)[0]
    assert abs(Fixed.to_float(fixed.mul(x, y))[0] - exact_product) <= 2**-15
    d = decay_fraction(factor)
    assert abs(Fixed.to_float(fixed.decay(x, d))[0] - Fixed.to_float(x)[0] * d / 2**32) <= 2**-15
    assert fixed.saturations == 0


def test_decay_fractions_are_unsigned_0_32() -> None:
    assert decay_fraction(0.5) == 2**31 and decay_fraction(0.0) == 0
    assert decay_fraction(1 - 1e-12) == 2**32 - 1
    assert Fixed().decay(np.array([INT32_MIN, INT32_MAX]), 2**32 - 1).tolist() == [
        INT32_MIN, INT32_MAX - 1]
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="decay factor"):
            decay_fraction(bad)
    with pytest.raises(ValueError, match="unknown overflow"):
        Fixed(overflow="clip")
