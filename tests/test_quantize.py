"""Properties of the symmetric uniform quantizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hwloop.quantize import ConductanceMap, quantize_levels, stochastic_round, symmetric_levels

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


@settings(max_examples=100, deadline=None)
@given(st.floats(-20, 20, allow_nan=False), st.integers(0, 2**32 - 1))
def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour(value: float, seed: int) -> None:
    draws = stochastic_round(np.full(20_000, value), np.random.default_rng(seed))
    assert set(np.unique(draws)) <= {np.floor(value), np.ceil(value)}
    fraction = value - np.floor(value)
    standard_error = max(np.sqrt(fraction * (1 - fraction) / draws.size), 1e-12)
    assert abs(draws.mean() - value) <= 4 * standard_error + 1e-12


@settings(max_examples=200, deadline=None)
@given(weights, st.integers(2, 8), st.sampled_from(["nearest", "stochastic"]))
def test_quantized_levels_are_idempotent_and_bounded(w: np.ndarray, bits: int, rounding: str) -> None:
    top = 2 ** (bits - 1) - 1
    levels = quantize_levels(w, bits, rounding=rounding, rng=np.random.default_rng(0))
    assert np.abs(levels).max() <= top
    again = quantize_levels(levels.astype(np.float64), bits, rounding=rounding,
                            rng=np.random.default_rng(1))
    np.testing.assert_array_equal(again, levels)


@settings(max_examples=200, deadline=None)
@given(weights, st.integers(2, 8))
def test_nearest_levels_are_monotone(w: np.ndarray, bits: int) -> None:
    flat = np.sort(w.ravel())
    levels = quantize_levels(flat, bits)
    assert np.all(np.diff(levels) >= 0)


def test_clip_policies() -> None:
    values = np.array([-9.0, 0.4, 9.0])
    np.testing.assert_array_equal(quantize_levels(values, 4, clip="saturate"), [-7, 0, 7])
    with pytest.raises(ValueError, match="2 values fall outside the levels ±7"):
        quantize_levels(values, 4, clip="error")
    with pytest.raises(ValueError, match="unknown clip policy"):
        quantize_levels(values, 4, clip="wrap")
    with pytest.raises(ValueError, match="needs a random generator"):
        quantize_levels(values, 4, rounding="stochastic")
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_levels(np.array([np.nan]), 4)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.floats(0, 5), st.floats(1, 30))
def test_conductance_map_round_trips_every_level(bits: int, g_min: float, span: float) -> None:
    mapping = ConductanceMap(bits=bits, g_min=g_min, g_max=g_min + span)
    levels = np.arange(-mapping.top, mapping.top + 1)
    g_plus, g_minus = mapping.to_conductances(levels)
    assert g_plus.min() >= g_min and g_plus.max() <= mapping.g_max + 1e-9
    assert np.all((g_plus == g_min) | (g_minus == g_min))  # one device of a pair stays at g_min
    np.testing.assert_array_equal(mapping.to_levels(g_plus, g_minus), levels)
    assert ConductanceMap().step == pytest.approx(25.0 / 7) and ConductanceMap().top == 7
