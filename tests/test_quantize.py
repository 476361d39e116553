"""Properties of the symmetric uniform quantizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hwloop.quantize import symmetric_levels

weights = arrays(
    np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
    elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(weights, st.integers(2, 8), st.booleans())
def test_levels_are_bounded_and_error_is_half_a_step(w: np.ndarray, bits: int, per_channel: bool) -> None:
    levels, scale = symmetric_levels(w, bits, per_channel=per_channel)
    top = 2 ** (bits - 1) - 1
    assert levels.dtype == np.int64 and np.abs(levels).max() <= top
    assert scale.shape == ((w.shape[0], 1) if per_channel else (1, 1))
    assert np.all(np.abs(w - levels * scale) <= scale / 2 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(weights, st.integers(2, 8))
def test_idempotent_with_its_scale(w: np.ndarray, bits: int) -> None:
    levels, scale = symmetric_levels(w, bits)
    again, same_scale = symmetric_levels(levels * scale, bits, scale=scale)
    assert np.array_equal(again, levels) and np.array_equal(same_scale, scale)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=30), st.integers(2, 8))
def test_monotone(values: list[float], bits: int) -> None:
    w = np.sort(np.array(values))[None, :]
    levels, _ = symmetric_levels(w, bits, scale=np.array([[0.37]]))
    assert np.all(np.diff(levels[0]) >= 0)


def test_four_bits_give_fifteen_levels_and_bad_bits_are_rejected() -> None:
    levels, scale = symmetric_levels(np.linspace(-1, 1, 101)[None, :], 4)
    assert sorted(set(levels.ravel().tolist())) == list(range(-7, 8))
    assert scale.item() == pytest.approx(1 / 7)
    assert symmetric_levels(np.zeros((2, 3)), 4)[1].item() == 1.0
    with pytest.raises(ValueError, match="bits must lie in 1..8"):
        symmetric_levels(np.ones((2, 2)), 9)
