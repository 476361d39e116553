"""Weight quantizers: what a device can hold, computed on the host.

Arrays are numpy float64 unless stated; weights use the (out, in) layout, so "per output
channel" means one scale per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def symmetric_levels(
    weights: np.ndarray, bits: int, *, per_channel: bool = False, scale: np.ndarray | None = None,
    rounding: str = "nearest", clip: str = "saturate", rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric uniform quantization to the integer levels −L..L, L = 2^(bits−1) − 1.

    Args:
        weights: (out, in) real weights.
        bits: 1..8. (1 bit gives L = 0; callers that need a sign bit use bits ≥ 2.)
        per_channel: one scale per output row instead of one per tensor.
        scale: use this scale ((1,1) or (out, 1)) instead of max|W|/L (e.g. a fixed device range).
        rounding, clip, rng: as in ``quantize_levels`` (clip only acts when ``scale`` is given).

    Returns:
        levels: (out, in) int64 in [−L, L], W/scale rounded (half to even by default) and clipped.
        scale: (1, 1) or (out, 1) float64 weight per level; an all-zero tensor/row gets scale 1.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if scale is None:
        scale = level_scale(weights, bits, per_channel=per_channel)
    scale = np.asarray(scale, dtype=np.float64)
    levels = quantize_levels(weights / scale, bits, rounding=rounding, clip=clip, rng=rng)
    return levels, scale


def top_level(bits: int) -> int:
    """L = 2^(bits−1) − 1: the largest level of a symmetric signed n-bit format (7 at 4 bits)."""
    return 2 ** (bits - 1) - 1


ROUNDINGS = ("nearest", "stochastic")
CLIP_POLICIES = ("saturate", "wrap", "error")


DEFAULT_RANGE_FACTOR = 3.0
"""Device range / initial max|W|: trained weights grow a few times beyond their initial range
(cue: 1.0 → 3.8), and a range of 1× saturates the readout (docs/pcm.md)."""


def level_scale(
    weights: np.ndarray, bits: int, *, range_factor: float = 1.0, per_channel: bool = False
) -> np.ndarray:
    """A device's weight per level, fixed when a layer is first written:
    range_factor · max|W| / L per tensor (1, 1) or per output row (out, 1); 1 where W is 0."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8, got {bits}")
    weights = np.asarray(weights, dtype=np.float64)
    top = max(top_level(bits), 1)
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


def clip_levels(values: np.ndarray, top: int, policy: str) -> np.ndarray:
    """Integer-valued levels → int64 levels in −top..top (top ≥ 0), by ``policy``:

    - ``saturate``: clip to [−top, top];
    - ``wrap``: wrap around modulo 2·top + 1 (the number of levels), like a counter that overflows
      from +top to −top; values already in range are unchanged;
    - ``error``: raise ValueError naming how many values lie outside [−top, top].
    """
    _check_clip_policy(policy)
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    values = _finite(values)
    if not np.array_equal(values, np.rint(values)):
        raise ValueError("clip_levels needs integer-valued levels; round them first")
    return _clip_integers(values, top, policy)


def _check_clip_policy(policy: str) -> None:
    if policy not in CLIP_POLICIES:
        choices = ", ".join(CLIP_POLICIES)
        raise ValueError(f"unknown clip policy {policy!r} (choose from: {choices})")


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("cannot clip NaN or inf")
    return values


def _clip_integers(values: np.ndarray, top: int, policy: str) -> np.ndarray:
    """``clip_levels`` for checked input: finite integer-valued float64, a known policy."""
    if policy == "error":
        outside = int((np.abs(values) > top).sum())
        if outside:
            raise ValueError(f"{outside} values fall outside the levels ±{top}; "
                             "use a larger scale or clip='saturate'")
    if policy == "wrap":
        return (np.mod(values + top, 2 * top + 1) - top).astype(np.int64)
    return np.clip(values, -top, top).astype(np.int64)


def quantize_levels(
    values: np.ndarray, bits: int, *, rounding: str = "nearest", clip: str = "saturate",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Values already in level units (W / scale) → int64 levels in −L..L.

    rounding: ``nearest`` (half to even) or ``stochastic`` (unbiased; needs ``rng``).
    clip: a ``clip_levels`` policy (``saturate``, ``wrap``, ``error``) for rounded values beyond ±L.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8, got {bits}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r} (choose from: {', '.join(ROUNDINGS)})")
    _check_clip_policy(clip)
    values = _finite(values)
    if rounding == "stochastic":
        if rng is None:
            raise ValueError("stochastic rounding needs a random generator (rng=...)")
        rounded = stochastic_round(values, rng)
    else:
        rounded = np.rint(values)
    return _clip_integers(rounded, top_level(bits), clip)


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
        return top_level(self.bits)

    @property
    def step(self) -> float:
        """Conductance per level (µS)."""
        return (self.g_max - self.g_min) / self.top

    def device_levels(self) -> np.ndarray:
        """(L + 1,) conductance of one device at magnitude 0..L: g_min + m·Δg (µS)."""
        return self.g_min + np.arange(self.top + 1) * self.step

    def to_conductances(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target (G+, G−) for integer levels (same shape)."""
        levels = np.asarray(levels)
        table = self.device_levels()
        return table[np.maximum(levels, 0)], table[np.maximum(-levels, 0)]

    def to_levels(self, g_plus: np.ndarray, g_minus: np.ndarray) -> np.ndarray:
        """Nearest level of a pair's difference, clipped to ±L (int64)."""
        return np.clip(np.rint((g_plus - g_minus) / self.step), -self.top, self.top).astype(
            np.int64)


SIGN_MODES = ("mixed", "excitatory", "inhibitory")


def lava_dense_weights(
    weights: np.ndarray, num_weight_bits: int = 8, sign_mode: str = "mixed"
) -> np.ndarray:
    """The int64 weights a Lava 0.10 fixed-point ``Dense`` actually uses (same shape as weights).

    Steps, as in Lava: truncate toward zero to integers (3.7 → 3, −3.7 → −3); clip (mixed
    [−256, 255], excitatory [0, 255], inhibitory [−255, 0]); drop k = 8 − num_weight_bits
    (+1 if mixed) low bits: ``(w >> k) << k`` (floor, so −3 → −4 at k = 1) for mixed/excitatory,
    ``−((−w >> k) << k)`` (magnitude truncation) for inhibitory. Results lie on the multiples of
    2^k in [−256, 256 − 2^k] (mixed), [0, 256 − 2^k] (excitatory) or [−(256 − 2^k), 0] (inhibitory).
    """
    if not 1 <= num_weight_bits <= 8:
        raise ValueError(f"num_weight_bits must lie in 1..8, got {num_weight_bits}")
    if sign_mode not in SIGN_MODES:
        raise ValueError(f"unknown sign mode {sign_mode!r} (choose from: {', '.join(SIGN_MODES)})")
    weights = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(weights).all():
        raise ValueError("cannot convert NaN or inf weights")
    low, high = {"mixed": (-256, 255), "excitatory": (0, 255), "inhibitory": (-255, 0)}[sign_mode]
    clipped = np.clip(np.trunc(weights), low, high).astype(np.int64)
    k = 8 - num_weight_bits + (1 if sign_mode == "mixed" else 0)
    if sign_mode == "inhibitory":
        return -(((-clipped) >> k) << k)
    return (clipped >> k) << k


def mantissa_exponent(weights: np.ndarray, mantissa_bits: int = 8) -> tuple[np.ndarray, int]:
    """Shared-exponent weights: W ≈ mantissa · 2^exponent.

    The exponent is the smallest integer e with max|W| ≤ M · 2^e, M = 2^(mantissa_bits−1) − 1
    (symmetric signed mantissa; 127 at 8 bits), so the largest weight uses the top of the
    mantissa range; an all-zero W gets e = 0. mantissa = rint(W / 2^e) (half to even) clipped to
    ±M, int64 of W's shape; the error is at most 2^(e−1) per weight.
    """
    if not 2 <= mantissa_bits <= 8:
        raise ValueError(f"mantissa_bits must lie in 2..8, got {mantissa_bits}")
    weights = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(weights).all():
        raise ValueError("cannot convert NaN or inf weights")
    top = top_level(mantissa_bits)
    peak = float(np.abs(weights).max(initial=0.0))
    if peak == 0.0:
        return np.zeros(weights.shape, dtype=np.int64), 0
    exponent = int(np.ceil(np.log2(peak / top)))
    while peak > np.ldexp(top, exponent):  # fix up the float log2 so the rule holds exactly
        exponent += 1
    while peak <= np.ldexp(top, exponent - 1):
        exponent -= 1
    mantissa = np.clip(np.rint(np.ldexp(weights, -exponent)), -top, top).astype(np.int64)
    return mantissa, exponent
