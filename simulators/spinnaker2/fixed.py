"""s16.15 fixed-point arithmetic as a SpiNNaker 2 PE computes it in integer code (spec A4.3).

A value is an int32 ``raw`` with value = raw / 2^15 (range about ±65,536, step 2^-15 ≈ 3.05e-5).

- Add and subtract in int64, then saturate to int32 (``overflow="saturate"``, counted) or wrap
  like unchecked C (``overflow="wrap"``).
- Multiply: the 64-bit product shifted right by 15 with floor (``rounding="floor"``) or
  rounded half up by adding 2^14 first (``rounding="half_up"``), then saturated or wrapped.
- Decay factors (α, ρ, κ ∈ [0, 1)) are unsigned 0.32 fractions d, applied as (x·d) >> 32.
- Conversion from float: round to nearest, saturate (counted).

``Fixed`` holds the two options and counts every saturation in ``saturations``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRACTION_BITS = 15
ONE = 1 << FRACTION_BITS
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
OVERFLOWS = ("saturate", "wrap")
ROUNDINGS = ("floor", "half_up")


def decay_fraction(factor: float) -> int:
    """A decay factor in [0, 1) as an unsigned 0.32 fraction (rounded to nearest, at most
    2^32 − 1)."""
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"a decay factor must lie in [0, 1), got {factor!r}")
    return min(int(round(factor * 2**32)), 2**32 - 1)


@dataclass
class Fixed:
    """s16.15 arithmetic on int64 numpy arrays holding int32 raw values.

    Args:
        overflow: ``saturate`` (clip to int32, counted) or ``wrap`` (two's complement).
        rounding: ``floor`` or ``half_up`` for the products' shift.
    """

    overflow: str = "saturate"
    rounding: str = "floor"
    saturations: int = 0

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"unknown overflow {self.overflow!r} (choose from: "
                             f"{', '.join(OVERFLOWS)})")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r} (choose from: "
                             f"{', '.join(ROUNDINGS)})")

    def from_float(self, values: np.ndarray) -> np.ndarray:
        """Float values (finite) → raw int64 arrays of int32 values (nearest, saturated)."""
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("cannot convert NaN or inf to s16.15")
        return self._saturate(np.rint(np.ldexp(values, FRACTION_BITS)).astype(np.int64))

    @staticmethod
    def to_float(raw: np.ndarray) -> np.ndarray:
        """Raw values → float64 values (exact)."""
        return np.ldexp(np.asarray(raw, dtype=np.float64), -FRACTION_BITS)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._limit(np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64))

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._limit(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64))

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(a·b) >> 15: the 64-bit product (exact for int32 operands) shifted."""
        product = np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64)
        if self.rounding == "half_up":
            product = product + (1 << (FRACTION_BITS - 1))
        return self._limit(product >> FRACTION_BITS)

    def decay(self, x: np.ndarray, fraction: int) -> np.ndarray:
        """(x·d) >> 32 for a 0.32 fraction d (``decay_fraction``): |x·d| < 2^31·2^32 = 2^63,
        exact in int64, and the result never overflows."""
        return (np.asarray(x, dtype=np.int64) * np.int64(fraction)) >> 32

    def _limit(self, values: np.ndarray) -> np.ndarray:
        if self.overflow == "wrap":
            return (values + 2**31) % 2**32 - 2**31
        return self._saturate(values)

    def _saturate(self, values: np.ndarray) -> np.ndarray:
        beyond = (values < INT32_MIN) | (values > INT32_MAX)
        self.saturations += int(beyond.sum())
        return np.clip(values, INT32_MIN, INT32_MAX)
