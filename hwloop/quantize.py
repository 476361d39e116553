"""Weight quantizers: what a device can hold, computed on the host.

Arrays are numpy float64 unless stated; weights use the (out, in) layout, so "per output
channel" means one scale per row.
"""

from __future__ import annotations

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
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8, got {bits}")
    weights = np.asarray(weights, dtype=np.float64)
    top = 2 ** (bits - 1) - 1
    if scale is None:
        peak = np.abs(weights).max(axis=1, keepdims=True) if per_channel else (
            np.abs(weights).max(keepdims=True).reshape(1, 1)
        )
        scale = np.where(peak > 0, peak / max(top, 1), 1.0)
    levels = np.clip(np.rint(weights / scale), -top, top).astype(np.int64)
    return levels, np.asarray(scale, dtype=np.float64)
