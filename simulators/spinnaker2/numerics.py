"""The arithmetic of the PE kernels in the chip's two numeric modes (spec A4.3).

``F32`` emulates the Cortex-M4F FPU: numpy float32, every operation rounded to float32, no
fused multiply-add, weighted sums sequential in index order. ``S1615`` computes in s16.15
(``fixed.Fixed``): saturating (counted) or wrapping sums, products shifted by 15 (floor or
half up), factors in [0, 1) applied as 0.32 fractions, other constants as s16.15 values.

The kernels are written once against the methods both share (``add``, ``sub``, ``mul``,
``scale`` by a configuration constant, ``dot``, ``psi``, payload ``encode``/``decode``).
Constants derived from the configuration (α, 1 − α, (1 − α)(1 − ρ), ...) are computed in
float64 and rounded once, to float32 or to their fixed-point form.

The pseudo-derivative (spec A3 step 4), with u = v − A, w = ``width``, σ = ``side_width``,
h = ``side_height``, in this float32 operation order:
    e0 = exp(−((u·u)·c0)),  e1 = exp(−((d1·d1)·c1)) with d1 = u − w,  e2 likewise with
    d2 = u + w,  ψ = (g0·e0 − g1·e1) − g1·e2,
where c0 = 1/(2w²), c1 = 1/(2σ²), g0 = γ(1 + h)/(w√(2π)), g1 = γh/(σ√(2π)).
In s16.15, ψ is that float32 value rounded to s16.15 (``surrogate="float"``), or a table of
256 values over u ∈ [−4, 4] interpolated linearly in integer arithmetic (``"lut"``; u beyond
the table takes the end value) — a model of the exp accelerator, whose precision is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulators.spinnaker2.fixed import (
    FRACTION_BITS,
    INT32_MAX,
    INT32_MIN,
    ONE,
    Fixed,
    decay_fraction,
)

NUMERIC_MODES = ("f32", "s16.15")
SURROGATES = ("float", "lut")
LUT_SIZE, LUT_RANGE = 256, 4


@dataclass(frozen=True)
class Surrogate:
    """The Gaussian pseudo-derivative's constants (spec A3 step 4), float32."""

    width: np.float32
    c0: np.float32
    c1: np.float32
    g0: np.float32
    g1: np.float32

    @staticmethod
    def of(gamma: float, width: float, side_width: float, side_height: float) -> Surrogate:
        root = math.sqrt(2.0 * math.pi)
        return Surrogate(np.float32(width), np.float32(1.0 / (2.0 * width**2)),
                         np.float32(1.0 / (2.0 * side_width**2)),
                         np.float32(gamma * (1.0 + side_height) / (width * root)),
                         np.float32(gamma * side_height / (side_width * root)))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """ψ(u) for float32 u, every operation in float32 (the order of the module doc)."""
        d1, d2 = u - self.width, u + self.width
        e0 = np.exp(-((u * u) * self.c0))
        e1 = np.exp(-((d1 * d1) * self.c1))
        e2 = np.exp(-((d2 * d2) * self.c1))
        return (self.g0 * e0 - self.g1 * e1) - self.g1 * e2


def sequential_sum(products: np.ndarray) -> np.ndarray:
    """Float32 sums over the last axis, strictly in index order (no pairwise summation)."""
    if products.shape[-1] == 0:
        return np.zeros(products.shape[:-1], np.float32)
    return np.add.accumulate(products, axis=-1)[..., -1]


class F32:
    """IEEE float32 arithmetic (the M4F FPU)."""

    name = "f32"
    dtype = np.dtype("<f4")
    one = np.float32(1.0)

    def __init__(self, surrogate: Surrogate) -> None:
        self.surrogate = surrogate

    @staticmethod
    def const(value: float) -> np.float32:
        return np.float32(value)

    scale_by = const

    @staticmethod
    def scale(x: np.ndarray, factor: np.float32) -> np.ndarray:
        return factor * x

    @staticmethod
    def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    @staticmethod
    def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    @staticmethod
    def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    @staticmethod
    def dot(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Σ_i W[j, i] x[i], (rows, cols) × (cols,) → (rows,), sequential in i."""
        return sequential_sum(weights * x)

    def psi(self, u: np.ndarray) -> np.ndarray:
        return self.surrogate(u)

    @staticmethod
    def from_host(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float32)

    to_f32 = from_f32 = from_host

    @staticmethod
    def encode(values: np.ndarray) -> np.ndarray:
        """Values → uint32 packet payloads (the float32 bits)."""
        return np.ascontiguousarray(values, np.float32).view(np.uint32)

    @staticmethod
    def decode(payloads: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(payloads, np.uint32).view(np.float32)


@dataclass(frozen=True)
class Factor:
    """A constant of the s16.15 kernels: a 0.32 fraction (``fraction``) for values in [0, 1),
    else an s16.15 raw value (``raw``)."""

    fraction: int | None
    raw: int


class S1615:
    """s16.15 arithmetic on int64 arrays of int32 raw values (``fixed.Fixed``)."""

    name = "s16.15"
    dtype = np.dtype("<i4")
    one = ONE

    def __init__(self, surrogate: Surrogate, fixed: Fixed, table: str = "float") -> None:
        if table not in SURROGATES:
            raise ValueError(f"unknown surrogate {table!r} (choose from: "
                             f"{', '.join(SURROGATES)})")
        self.surrogate, self.fixed, self.table = surrogate, fixed, table
        grid = np.linspace(-LUT_RANGE, LUT_RANGE, LUT_SIZE).astype(np.float32)
        self.lut = Fixed().from_float(surrogate(grid))

    def const(self, value: float) -> int:
        return int(self.fixed.from_float(np.array(value)))

    def scale_by(self, value: float) -> Factor:
        fraction = decay_fraction(value) if 0.0 <= value < 1.0 else None
        return Factor(fraction, self.const(value))

    def scale(self, x: np.ndarray, factor: Factor) -> np.ndarray:
        if factor.fraction is not None:
            return self.fixed.decay(x, factor.fraction)
        return self.fixed.mul(x, factor.raw)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.fixed.add(a, b)

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.fixed.sub(a, b)

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.fixed.mul(a, b)

    def dot(self, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Σ_i W[j, i] x[i]: each product shifted, then a sequential saturating sum."""
        return self.saturating_sum(self.fixed.mul(weights, x))

    def saturating_sum(self, terms: np.ndarray) -> np.ndarray:
        """Sequential sums over the last axis with a saturating (or wrapping) add after each
        term: exact int64 cumulative sums, and a term-by-term loop only for the rows where a
        partial sum leaves the int32 range."""
        if terms.shape[-1] == 0:
            return np.zeros(terms.shape[:-1], np.int64)
        partial = np.cumsum(terms, axis=-1)
        result = partial[..., -1].copy()
        outside = ((partial < INT32_MIN) | (partial > INT32_MAX)).any(axis=-1)
        for row in zip(*np.nonzero(outside)):
            total = np.int64(0)
            for term in terms[row]:
                total = self.fixed.add(total, term)
            result[row] = total
        return result

    def psi(self, u: np.ndarray) -> np.ndarray:
        if self.table == "float":
            return self.fixed.from_float(self.surrogate(self.to_f32(u)))
        limit = LUT_RANGE * ONE
        step = 2 * limit  # the table's span, raw
        span = (np.clip(np.asarray(u, np.int64), -limit, limit) + limit) * (LUT_SIZE - 1)
        index = np.minimum(span // step, LUT_SIZE - 2)
        offset = span - index * step
        low, high = self.lut[index], self.lut[index + 1]
        return low + ((high - low) * offset) // step

    def from_host(self, values: np.ndarray) -> np.ndarray:
        return self.fixed.from_float(np.asarray(values, np.float64))

    def from_f32(self, values: np.ndarray) -> np.ndarray:
        return self.fixed.from_float(np.asarray(values, np.float64))

    @staticmethod
    def to_f32(raw: np.ndarray) -> np.ndarray:
        """Raw → float32 (the M4F's VCVT with 15 fraction bits)."""
        return np.asarray(raw).astype(np.float32) * np.float32(2.0**-FRACTION_BITS)

    @staticmethod
    def encode(raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw).astype("<i4").view(np.uint32)

    @staticmethod
    def decode(payloads: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(payloads, np.uint32).view("<i4").astype(np.int64)


Numerics = F32 | S1615
