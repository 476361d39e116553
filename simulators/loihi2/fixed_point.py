"""Integer primitives of Lava 0.10.0's fixed-point (``fixed_pt``) models (spec §2.2, §3.2).

Every function takes and returns int64 tensors (any shape; integer scalars broadcast) and
computes exactly what Lava's NumPy models compute. The two roundings differ on purpose:
decays truncate toward zero (``decay``), exponents shift with floor (``shift``).
"""

from __future__ import annotations

import torch
from torch import Tensor

DECAY_UNIT = 4096
"""Decays are integers δ in [0, 4096]: x ← tz(x·(4096 − δ)/4096)."""
STATE_LIMIT = 2**23
"""u, v are 24-bit signed: u wraps once past ±2^23, v saturates at ±(2^23 − 1)."""
ACTIVATION_SHIFT = 6
"""The synaptic input a enters the current as a << 6."""
THRESHOLD_SHIFT = 6
"""The threshold vth enters as vth << 6."""


def decay(state: Tensor, factor: Tensor | int) -> Tensor:
    """tz(state·factor / 4096): the product truncated toward zero (e.g. −1·4095/4096 → 0)."""
    return torch.div(state * factor, DECAY_UNIT, rounding_mode="trunc")


def shift(values: Tensor, exponent: Tensor | int) -> Tensor:
    """values·2^exponent: a left shift for exponent > 0, a floor (arithmetic) right shift for
    exponent < 0 (−7 with exponent −2 → −2)."""
    if isinstance(exponent, int):
        return values << exponent if exponent >= 0 else values >> -exponent
    exponent = torch.as_tensor(exponent, dtype=torch.int64)
    return torch.where(exponent >= 0, values << exponent.clamp(min=0),
                       values >> (-exponent).clamp(min=0))


def wrap24(current: Tensor) -> Tensor:
    """Lava's one-shot 24-bit wrap of the current: u − 2^24 where u > 2^23, u + 2^24 where
    u ≤ −2^23 (so exactly +2^23 is kept and −2^23 becomes +2^23)."""
    span = 2 * STATE_LIMIT
    return torch.where(current > STATE_LIMIT, current - span,
                       torch.where(current <= -STATE_LIMIT, current + span, current))


def saturate24(voltage: Tensor) -> Tensor:
    """Clip the voltage to [−(2^23 − 1), 2^23 − 1]."""
    return voltage.clamp(-(STATE_LIMIT - 1), STATE_LIMIT - 1)
