"""SpiNNaker 2 weight formats: what a PE stores and reads back (spec A4.3; docs/spinnaker2.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hwloop.quantize import symmetric_levels
from simulators.spinnaker2.formats import FORMATS, decode, encode, payload_bytes

weights = arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e4, 1e4, width=64))


@settings(max_examples=200, deadline=None)
@given(values=weights, fmt=st.sampled_from(FORMATS))
def test_decoding_gives_the_quantized_weights_and_encoding_them_again_gives_the_same_bytes(
        values: np.ndarray, fmt: str) -> None:
    stored = encode(values, fmt)
    assert len(stored.payload) == payload_bytes(values.size, fmt)
    held = decode(stored.payload, values.size, fmt, stored.scale)
    if fmt == "f32":
        expected = values.astype(np.float32).astype(np.float64)
    elif fmt == "s16.15":
        expected = np.rint(values * 2**15) / 2**15
    else:
        levels, scale = symmetric_levels(values[None, :], 8 if fmt == "int8" else 4)
        expected = (levels * scale).ravel()
    np.testing.assert_array_equal(held, expected)
    again = encode(held, fmt) if fmt in ("f32", "s16.15") else None
    if again is not None:  # a held weight is stored as the same bytes
        assert again.payload == stored.payload


def test_int4_packs_two_levels_per_byte_low_nibble_first() -> None:
    stored = encode(np.array([1.0, -7.0, 7.0]), "int4")  # scale 1: levels 1, −7, 7
    assert stored.scale == 1.0
    assert stored.payload == bytes([0x1 | (0x9 << 4), 0x7])  # −7 is 0b1001
    np.testing.assert_array_equal(decode(stored.payload, 3, "int4", 1.0), [1.0, -7.0, 7.0])


def test_s16_15_saturates_and_counts() -> None:
    stored = encode(np.array([70_000.0, -70_000.0, 0.5]), "s16.15")
    assert stored.saturated == 2
    np.testing.assert_array_equal(decode(stored.payload, 3, "s16.15"),
                                  [(2**31 - 1) / 2**15, -(2**16), 0.5])


def test_bad_weights_payloads_and_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        encode(np.array([1.0, np.nan]), "int8")
    with pytest.raises(ValueError, match="take 2 bytes, got 3"):
        decode(b"abc", 3, "int4")
    with pytest.raises(ValueError, match="unknown weight format 'int2'"):
        encode(np.ones(2), "int2")


def test_a_fixed_scale_holds_the_levels_and_counts_what_it_clips() -> None:
    weights = np.array([0.0, 0.1, -0.36, 0.7, 2.0, -5.0])
    encoded = encode(weights, "int4", scale=0.1)
    assert encoded.scale == 0.1 and encoded.saturated == 2  # 2.0 and -5.0 lie beyond 7 levels
    np.testing.assert_allclose(decode(encoded.payload, 6, "int4", 0.1),
                               [0.0, 0.1, -0.4, 0.7, 0.7, -0.7])
    with pytest.raises(ValueError, match="scale of int8 weights must be positive"):
        encode(weights, "int8", scale=-1.0)
