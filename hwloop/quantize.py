"""Weight quantizers: what a device can hold, computed on the host.

Arrays are numpy float64 unless stated; weights use the (out, in) layout, so "per output
channel" means one scale per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def symmetric_levels(
    weights: np.ndarray, bits: int, *, per_channel: bool = False, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric uniform quantization to the integer levels −L..L, L = 2^(bits−1) − 1.

    Args:
        weights: (out, in) real weights.
        bits: 1..8. (1 bit gives L = 0; callers that need a sign bit use bits ≥ 2.)
        per_channel: one scale per output row instead of one per tensor.
        scale: use this scale ((1,1) or (out, 1)) instead of max|W|/L (e.g. a fixed device range).

    Returns:
        levels: (out, in) int64 in [−L, L], round-half-to-even of W/scale, clipped.
        scale: (1, 1) or (out, 1) float64 weight per level; an all-zero tensor/row gets scale 1.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if scale is None:
        scale = level_scale(weights, bits, per_channel=per_channel)
    scale = np.asarray(scale, dtype=np.float64)
    return quantize_levels(weights / scale, bits), scale


ROUNDINGS = ("nearest", "stochastic")
CLIP_POLICIES = ("saturate", "error")


def level_scale(
    weights: np.ndarray, bits: int, *, range_factor: float = 1.0, per_channel: bool = False
) -> np.ndarray:
    """A device's weight per level, fixed when a layer is first written:
    range_factor · max|W| / L per tensor (1, 1) or per output row (out, 1); 1 where W is 0."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8, got {bits}")
    weights = np.asarray(weights, dtype=np.float64)
    top = max(2 ** (bits - 1) - 1, 1)
    peak = np.abs(weights).max(axis=1, keepdims=True) if per_channel else (
        np.abs(weights).max(keepdims=True).reshape(1, 1)
    )
    scale = range_factor * peak / top
    return np.where(scale > 0, scale, 1.0)  # an all-zero (or subnormal) tensor gets scale 1


def stochastic_round(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round down or up to a neighbouring integer with probability given by the distance to it,
    so that E[result] = values (unbiased). Returns float64 integers."""
    values = np.asarray(values, dtype=np.float64)
    floor = np.floor(values)
    return floor + (rng.random(values.shape) < values - floor)


def quantize_levels(
    values: np.ndarray, bits: int, *, rounding: str = "nearest", clip: str = "saturate",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Values already in level units (W / scale) → int64 levels in −L..L.

    rounding: ``nearest`` (half to even) or ``stochastic`` (unbiased; needs ``rng``).
    clip: ``saturate`` clips to ±L; ``error`` raises ValueError if any value rounds outside.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8, got {bits}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r} (choose from: {', '.join(ROUNDINGS)})")
    if clip not in CLIP_POLICIES:
        raise ValueError(f"unknown clip policy {clip!r} (choose from: {', '.join(CLIP_POLICIES)})")
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("cannot quantize NaN or inf")
    if rounding == "stochastic":
        if rng is None:
            raise ValueError("stochastic rounding needs a random generator (rng=...)")
        rounded = stochastic_round(values, rng)
    else:
        rounded = np.rint(values)
    top = 2 ** (bits - 1) - 1
    outside = int((np.abs(rounded) > top).sum())
    if clip == "error" and outside:
        raise ValueError(f"{outside} values fall outside the levels ±{top}; "
                         "use a larger scale or clip='saturate'")
    return np.clip(rounded, -top, top).astype(np.int64)


@dataclass(frozen=True)
class ConductanceMap:
    """Integer levels q in −L..L on a differential pair of conductances (µS), L = 2^(bits−1) − 1
    (15 levels at 4 bits): G+ = g_min + max(q, 0)·step, G− = g_min + max(−q, 0)·step."""

    bits: int = 4
    g_min: float = 0.0
    g_max: float = 25.0

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"a differential pair needs bits in 2..8, got {self.bits}")
        if not 0 <= self.g_min < self.g_max:
            raise ValueError(f"need 0 <= g_min < g_max, got {self.g_min}, {self.g_max}")

    @property
    def top(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def step(self) -> float:
        """Conductance per level (µS)."""
        return (self.g_max - self.g_min) / self.top

    def to_conductances(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target (G+, G−) for integer levels (same shape)."""
        levels = np.asarray(levels)
        return (self.g_min + np.maximum(levels, 0) * self.step,
                self.g_min + np.maximum(-levels, 0) * self.step)

    def to_levels(self, g_plus: np.ndarray, g_minus: np.ndarray) -> np.ndarray:
        """Nearest level of a pair's difference, clipped to ±L (int64)."""
        return np.clip(np.rint((g_plus - g_minus) / self.step), -self.top, self.top).astype(
            np.int64)
