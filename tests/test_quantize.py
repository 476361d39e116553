"""Properties of the symmetric uniform quantizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hwloop.quantize import (
    CLIP_POLICIES,
    ConductanceMap,
    clip_levels,
    lava_dense_weights,
    mantissa_exponent,
    quantize_levels,
    stochastic_round,
    symmetric_levels,
)
from stats import SUITE_FALSE_FAILURE, assert_stochastic_rounding

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


# The suite's only checks of a statistic of fresh random draws are the two stochastic rounding
# tests below (hypothesis draws their seeds): at most 101 examples each (100, plus an @example).
# Each example gets an equal share of the suite's false-failure budget: 1e-6 / 202 ≈ 4.95e-9.
ROUNDING_FALSE_FAILURE = SUITE_FALSE_FAILURE / (2 * 101)
# Enough draws that rounding up with a probability off by 0.01 fails, for every fraction, but for
# a chance below 0.1 % (half-width ≤ 5.9·√(n/4) ≈ 1310 ups, against a shift of 0.01·n = 2000).
ROUNDING_DRAWS = 200_000


@settings(max_examples=100, deadline=None)
@given(st.floats(-20, 20, allow_nan=False), st.integers(0, 2**32 - 1))
@example(-1e-05, 26)  # 2 of 20,000 draws rounded down, where 0.2 are expected: failed 4σ
def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour(value: float, seed: int) -> None:
    draws = stochastic_round(np.full(ROUNDING_DRAWS, value), np.random.default_rng(seed))
    assert_stochastic_rounding(draws, value, ROUNDING_FALSE_FAILURE)


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
        quantize_levels(values, 4, clip="bounce")
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


# ---- symmetric_levels options, clip_levels -------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(weights, st.integers(1, 8), st.floats(0.05, 3))
def test_explicit_defaults_change_nothing(w: np.ndarray, bits: int, scale: float) -> None:
    fixed = np.array([[scale]])
    levels, _ = symmetric_levels(w, bits, scale=fixed)
    explicit, _ = symmetric_levels(w, bits, scale=fixed, rounding="nearest", clip="saturate")
    np.testing.assert_array_equal(explicit, levels)
    top = 2 ** (bits - 1) - 1
    np.testing.assert_array_equal(levels, np.clip(np.rint(w / scale), -top, top))


@settings(max_examples=30, deadline=None)
@given(st.floats(-1, 1), st.integers(0, 2**32 - 1))
def test_stochastic_symmetric_levels_are_unbiased(value: float, seed: int) -> None:
    scale = np.array([[0.3]])
    levels, _ = symmetric_levels(np.full((1, ROUNDING_DRAWS), value), 4, scale=scale,
                                 rounding="stochastic", rng=np.random.default_rng(seed))
    assert_stochastic_rounding(levels, value / 0.3, ROUNDING_FALSE_FAILURE)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-100, 100), min_size=1, max_size=30), st.integers(0, 10),
       st.sampled_from(CLIP_POLICIES))
def test_clip_levels_policies(values: list[int], top: int, policy: str) -> None:
    levels = np.array(values, dtype=np.float64)
    outside = int((np.abs(levels) > top).sum())
    if policy == "error" and outside:
        with pytest.raises(ValueError, match=f"^{outside} values fall outside the levels ±{top}"):
            clip_levels(levels, top, policy)
        return
    clipped = clip_levels(levels, top, policy)
    assert clipped.dtype == np.int64 and np.abs(clipped).max() <= top
    inside = np.abs(levels) <= top
    np.testing.assert_array_equal(clipped[inside], levels[inside])  # in range: unchanged
    if policy == "saturate":
        np.testing.assert_array_equal(clipped, np.clip(levels, -top, top))
    if policy == "wrap":  # same residue modulo the number of levels
        assert np.all((clipped - levels) % (2 * top + 1) == 0)


def test_clip_levels_table_and_bad_arguments() -> None:
    values = np.array([-9.0, -8.0, 8.0, 7.0, 0.0, 16.0])
    np.testing.assert_array_equal(clip_levels(values, 7, "saturate"), [-7, -7, 7, 7, 0, 7])
    np.testing.assert_array_equal(clip_levels(values, 7, "wrap"), [6, 7, -7, 7, 0, 1])
    with pytest.raises(ValueError, match="4 values fall outside the levels ±7"):
        clip_levels(values, 7, "error")
    np.testing.assert_array_equal(clip_levels(np.array([3.0, -7.0]), 7, "error"), [3, -7])
    np.testing.assert_array_equal(quantize_levels(np.array([8.2, -7.6]), 4, clip="wrap"), [-7, 7])
    with pytest.raises(ValueError, match="unknown clip policy"):
        clip_levels(values, 7, "bounce")
    with pytest.raises(ValueError, match="integer-valued"):
        clip_levels(np.array([0.5]), 7, "saturate")
    with pytest.raises(ValueError, match="NaN or inf"):
        clip_levels(np.array([np.inf]), 7, "saturate")
    with pytest.raises(ValueError, match="unknown rounding"):
        symmetric_levels(np.ones((1, 2)), 4, rounding="up")
    with pytest.raises(ValueError, match="bits must lie in 1..8"):
        quantize_levels(np.ones(2), 0)


@settings(max_examples=100, deadline=None)
@given(weights, st.integers(2, 8), st.floats(0.05, 3))
def test_nearest_levels_monotone_elementwise(w: np.ndarray, bits: int, scale: float) -> None:
    larger = w + np.abs(np.roll(w, 1))  # w <= larger elementwise
    fixed = np.array([[scale]])
    smaller_levels, _ = symmetric_levels(w, bits, scale=fixed)
    larger_levels, _ = symmetric_levels(larger, bits, scale=fixed)
    assert np.all(smaller_levels <= larger_levels)


# ---- ConductanceMap ----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.floats(0, 5), st.floats(1, 30), st.data())
def test_conductance_pairs_are_bounded_and_round_trip(bits: int, g_min: float, span: float,
                                                      data: st.DataObject) -> None:
    mapping = ConductanceMap(bits=bits, g_min=g_min, g_max=g_min + span)
    top = 2 ** (bits - 1) - 1
    assert mapping.step == pytest.approx(span / top)
    levels = data.draw(arrays(np.int64, (3, 4), elements=st.integers(-top, top)))
    g_plus, g_minus = mapping.to_conductances(levels)
    for g in (g_plus, g_minus):
        assert np.all(g >= g_min) and np.all(g <= mapping.g_max + 1e-9)
    back = mapping.to_levels(g_plus, g_minus)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, levels)
    wild = mapping.to_levels(g_plus * 3, g_minus)  # out-of-range pairs still read as legal levels
    assert np.abs(wild).max() <= top


def test_conductance_map_rejects_bad_ranges() -> None:
    assert ConductanceMap(bits=4).step == pytest.approx(25.0 / 7)
    with pytest.raises(ValueError, match="bits in 2..8"):
        ConductanceMap(bits=9)
    with pytest.raises(ValueError, match="g_min < g_max"):
        ConductanceMap(g_min=5.0, g_max=5.0)
    with pytest.raises(ValueError, match="g_min < g_max"):
        ConductanceMap(g_min=-1.0)


# ---- Lava Dense weights (spec §3.2) -------------------------------------------------------------

LAVA_EXAMPLES = [  # weight, num_weight_bits, sign mode, what Lava's fixed-point Dense uses
    (83, 8, "mixed", 82),
    (1000, 8, "mixed", 254),
    (-3.7, 8, "mixed", -4),
    (3.7, 8, "mixed", 2),
    (255, 8, "mixed", 254),
    (-3, 8, "mixed", -4),
    (3, 8, "mixed", 2),
    (1, 8, "mixed", 0),
    (-1, 8, "mixed", -2),
    (-1000, 8, "mixed", -256),
    (-256, 1, "mixed", -256),
    (255, 1, "mixed", 0),
    (-1, 1, "mixed", -256),
    (255, 8, "excitatory", 255),
    (-5, 8, "excitatory", 0),
    (255, 7, "excitatory", 254),
    (-3, 7, "inhibitory", -2),
    (-300, 8, "inhibitory", -255),
    (-255, 7, "inhibitory", -254),
    (7, 8, "inhibitory", 0),
]


@pytest.mark.parametrize(("weight", "bits", "mode", "expected"), LAVA_EXAMPLES)
def test_lava_dense_examples(weight: float, bits: int, mode: str, expected: int) -> None:
    out = lava_dense_weights(np.array([[weight]]), num_weight_bits=bits, sign_mode=mode)
    assert out.dtype == np.int64 and out.item() == expected


def test_lava_dense_vector_example_and_bad_arguments() -> None:
    np.testing.assert_array_equal(lava_dense_weights(np.array([[3, 1, -1]])), [[2, 0, -2]])
    with pytest.raises(ValueError, match="num_weight_bits must lie in 1..8"):
        lava_dense_weights(np.ones((1, 1)), num_weight_bits=9)
    with pytest.raises(ValueError, match="unknown sign mode"):
        lava_dense_weights(np.ones((1, 1)), sign_mode="null")
    with pytest.raises(ValueError, match="NaN or inf"):
        lava_dense_weights(np.array([[np.nan]]))


lava_weights = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 5)),
                      elements=st.floats(-600, 600, allow_nan=False))
sign_modes = st.sampled_from(["mixed", "excitatory", "inhibitory"])


@settings(max_examples=100, deadline=None)
@given(lava_weights, st.integers(1, 8), sign_modes)
def test_lava_dense_is_bounded_on_its_grid_and_idempotent(w: np.ndarray, bits: int,
                                                          mode: str) -> None:
    out = lava_dense_weights(w, bits, mode)
    k = 8 - bits + (1 if mode == "mixed" else 0)
    low, high = {"mixed": (-256, 256 - 2**k), "excitatory": (0, 256 - 2**k),
                 "inhibitory": (-(256 - 2**k), 0)}[mode]
    assert out.dtype == np.int64 and out.shape == w.shape
    assert np.all((out >= low) & (out <= high)) and np.all(out % 2**k == 0)
    np.testing.assert_array_equal(lava_dense_weights(out.astype(np.float64), bits, mode), out)


@settings(max_examples=100, deadline=None)
@given(lava_weights, st.integers(1, 8), sign_modes)
def test_lava_dense_is_monotone(w: np.ndarray, bits: int, mode: str) -> None:
    larger = w + np.abs(np.roll(w, 1, axis=1))
    assert np.all(lava_dense_weights(w, bits, mode) <= lava_dense_weights(larger, bits, mode))


@settings(max_examples=100, deadline=None)
@given(st.integers(-300, 300), st.integers(1, 8), sign_modes)
def test_lava_dense_matches_the_reference_steps_for_integers(w: int, bits: int, mode: str) -> None:
    """A scalar transcription of spec §3.2 (Python ints: >> is a floor shift)."""
    k = 8 - bits + (1 if mode == "mixed" else 0)
    if mode == "mixed":
        expected = (min(max(w, -256), 255) >> k) << k
    elif mode == "excitatory":
        expected = (min(max(w, 0), 255) >> k) << k
    else:
        expected = -((min(max(-w, 0), 255) >> k) << k)
    assert lava_dense_weights(np.array([[float(w)]]), bits, mode).item() == expected


# ---- mantissa / exponent -------------------------------------------------------------------------

me_elements = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False).filter(
    lambda x: x == 0 or abs(x) > 1e-200)
me_weights = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 5)),
                    elements=me_elements)


@settings(max_examples=100, deadline=None)
@given(me_weights, st.integers(2, 8))
def test_mantissa_exponent_bounds_error_and_minimal_exponent(w: np.ndarray, bits: int) -> None:
    mantissa, exponent = mantissa_exponent(w, bits)
    top = 2 ** (bits - 1) - 1
    assert mantissa.dtype == np.int64 and mantissa.shape == w.shape and isinstance(exponent, int)
    assert np.abs(mantissa).max() <= top
    restored = np.ldexp(mantissa.astype(np.float64), exponent)
    assert np.all(np.abs(w - restored) <= 2.0 ** (exponent - 1))
    peak = np.abs(w).max()
    if peak == 0:
        assert exponent == 0 and not mantissa.any()
    else:
        assert peak <= top * 2.0**exponent and peak > top * 2.0 ** (exponent - 1)


@settings(max_examples=100, deadline=None)
@given(me_weights, st.integers(2, 8))
def test_mantissa_exponent_is_idempotent(w: np.ndarray, bits: int) -> None:
    mantissa, exponent = mantissa_exponent(w, bits)
    again, same = mantissa_exponent(np.ldexp(mantissa.astype(np.float64), exponent), bits)
    assert same == exponent
    np.testing.assert_array_equal(again, mantissa)


@settings(max_examples=100, deadline=None)
@given(me_weights, st.integers(2, 8))
def test_mantissa_is_monotone_under_a_shared_exponent(w: np.ndarray, bits: int) -> None:
    larger = w + np.abs(np.roll(w, 1, axis=1))
    mantissa, _ = mantissa_exponent(np.concatenate([w, larger]), bits)
    assert np.all(mantissa[: len(w)] <= mantissa[len(w):])


def test_mantissa_exponent_examples_and_bad_arguments() -> None:
    mantissa, exponent = mantissa_exponent(np.array([[1.0, -0.5, 0.25]]), 8)
    assert exponent == -6 and mantissa.tolist() == [[64, -32, 16]]  # 1.0 <= 127/64, > 127/128
    mantissa, exponent = mantissa_exponent(np.array([[254.0, -3.0]]), 8)
    assert exponent == 1 and mantissa.tolist() == [[127, -2]]  # -1.5 rounds half to even
    mantissa, exponent = mantissa_exponent(np.array([[127.0, 1.0]]), 8)
    assert exponent == 0 and mantissa.tolist() == [[127, 1]]
    assert mantissa_exponent(np.zeros((2, 2)))[1] == 0
    with pytest.raises(ValueError, match="mantissa_bits must lie in 2..8"):
        mantissa_exponent(np.ones((1, 1)), 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        mantissa_exponent(np.array([[np.inf]]))
