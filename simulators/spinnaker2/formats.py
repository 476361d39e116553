"""Weight formats on the SpiNNaker 2 link and in PE SRAM (spec A4.3).

| format | bytes per weight | value |
|---|---|---|
| ``f32`` | 4 | IEEE float32, little-endian |
| ``s16.15`` | 4 | int32 raw, value = raw / 2^15; round to nearest, saturate at the int32 ends |
| ``int8`` | 1 | level −127..127 × the projection's scale max|W|/127 |
| ``int4`` | ½ | level −7..7 × the projection's scale max|W|/7; two per byte, low nibble first |

``int8`` and ``int4`` use hwloop's symmetric quantizer (``hwloop.quantize.symmetric_levels``),
the one the PCM backend uses, so both devices see identical 4-bit weights. ``encode`` turns
float weights into the bytes a PE stores (and its scale); ``decode`` turns those bytes back
into the weights the device computes with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwloop.quantize import symmetric_levels, top_level
from simulators.spinnaker2.fixed import Fixed

FORMATS = ("f32", "s16.15", "int8", "int4")
_LEVEL_BITS = {"int8": 8, "int4": 4}


@dataclass(frozen=True)
class Encoded:
    """Weights as a PE stores them.

    Attributes:
        payload: the bytes (little-endian).
        scale: weight per level (int8, int4); 1.0 for f32 and s16.15.
        saturated: weights that lay beyond the format's range and were stored at its end.
    """

    payload: bytes
    scale: float
    saturated: int


def payload_bytes(count: int, fmt: str) -> int:
    """Bytes that ``count`` weights take in format ``fmt``."""
    _check_format(fmt)
    return (count + 1) // 2 if fmt == "int4" else count * (1 if fmt == "int8" else 4)


def encode(weights: np.ndarray, fmt: str, scale: float | None = None) -> Encoded:
    """Float weights (any shape, finite) → what a PE stores, in C order (ValueError for NaN,
    inf or an unknown format). ``scale`` (int8, int4; positive, finite) fixes the weight per
    level instead of max|W|/L; weights beyond ±L·scale are stored at ±L and counted."""
    _check_format(fmt)
    values = np.asarray(weights, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise ValueError("weights contain NaN or inf")
    if fmt == "f32":
        stored = values.astype("<f4")
        saturated = int((np.abs(values) > np.finfo(np.float32).max).sum())
        return Encoded(stored.tobytes(), 1.0, saturated)
    if fmt == "s16.15":
        fixed = Fixed()
        raw = fixed.from_float(values)
        return Encoded(raw.astype("<i4").tobytes(), 1.0, fixed.saturations)
    bits = _LEVEL_BITS[fmt]
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"the scale of {fmt} weights must be positive and finite, got {scale}")
    fixed_scale = None if scale is None else np.full((1, 1), float(scale))
    levels, chosen = symmetric_levels(values[None, :], bits, scale=fixed_scale)
    levels = levels.ravel()
    saturated = 0 if scale is None else int(
        (np.abs(values) / scale > top_level(bits) + 0.5).sum())
    if fmt == "int8":
        return Encoded(levels.astype("<i1").tobytes(), float(chosen.item()), saturated)
    nibbles = (levels & 0xF).astype(np.uint8)  # two's complement in 4 bits
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return Encoded((nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes(),
                   float(chosen.item()), saturated)


def decode(payload: bytes, count: int, fmt: str, scale: float = 1.0) -> np.ndarray:
    """The ``count`` weights (float64, flat, C order) that ``payload`` holds in ``fmt``
    (ValueError if the payload has the wrong length)."""
    expected = payload_bytes(count, fmt)
    if len(payload) != expected:
        raise ValueError(f"{count} weights in {fmt} take {expected} bytes, got {len(payload)}")
    if fmt == "f32":
        return np.frombuffer(payload, dtype="<f4").astype(np.float64)
    if fmt == "s16.15":
        return Fixed.to_float(np.frombuffer(payload, dtype="<i4"))
    if fmt == "int8":
        return np.frombuffer(payload, dtype="<i1").astype(np.float64) * scale
    packed = np.frombuffer(payload, dtype=np.uint8)
    nibbles = np.empty(packed.size * 2, dtype=np.int64)
    nibbles[0::2], nibbles[1::2] = packed & 0xF, packed >> 4
    levels = np.where(nibbles >= 8, nibbles - 16, nibbles)[:count]
    return levels.astype(np.float64) * scale


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r} (choose from: {', '.join(FORMATS)})")
