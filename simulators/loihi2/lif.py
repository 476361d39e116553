"""Lava 0.10.0's fixed-point CUBA LIF (``PyLifModelBitAcc``, tag ``fixed_pt``; spec §2.2).

One step, with a = the summed activation the Dense connections deliver this step:

    u ← wrap24( tz(u·(4096 − (du + 1))/4096) + (a << 6) )
    v ← sat24( tz(v·(4096 − dv)/4096) + u + b ),   b = bias_mant·2^bias_exp (floor shift)
    s = v > (vth << 6);   v ← 0 where s  (u is not reset)

tz truncates toward zero; wrap24 and sat24 are in ``fixed_point``. ``du = −1`` means no current
decay, ``dv = 0`` no voltage leak. The threshold is fixed when the network starts (Lava caches
it on its first step and ignores later changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from simulators.loihi2.fixed_point import (
    ACTIVATION_SHIFT,
    DECAY_UNIT,
    THRESHOLD_SHIFT,
    decay,
    saturate24,
    shift,
    wrap24,
)


ACTIVATION_LIMIT = 2**25
"""Lava shifts the activation left by 6 in int32: |a| must stay below 2^25."""


@dataclass(frozen=True)
class LifParameters:
    """Integer parameters of one LIF population, as Lava's ``LIF`` process takes them.

    Attributes:
        du: current decay, −1..4095 (the current keeps (4096 − du − 1)/4096 per step).
        dv: voltage decay, 0..4096 (the voltage keeps (4096 − dv)/4096 per step).
        vth: threshold mantissa, 0..131071 (the voltage must exceed vth·64).
        bias_mant: (N,) bias mantissas, −4096..4095.
        bias_exp: (N,) bias exponents, −7..7.
    """

    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: np.ndarray

    @property
    def size(self) -> int:
        return int(np.asarray(self.bias_mant).shape[0])

    @cached_property
    def bias(self) -> Tensor:
        """(N,) int64 bias_mant·2^bias_exp (floor shift for negative exponents)."""
        return shift(torch.as_tensor(self.bias_mant, dtype=torch.int64),
                     torch.as_tensor(self.bias_exp, dtype=torch.int64))


def lif_step(
    u: Tensor, v: Tensor, activation: Tensor, parameters: LifParameters
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of (B, N) int64 current u and voltage v with activation (B, N) int64 → the new
    u, v and the spikes s (B, N) bool."""
    check_activation(activation)
    u = wrap24(decay(u, DECAY_UNIT - (parameters.du + 1)) + (activation << ACTIVATION_SHIFT))
    v = saturate24(decay(v, DECAY_UNIT - parameters.dv) + u + parameters.bias)
    spikes = v > (parameters.vth << THRESHOLD_SHIFT)
    return u, v.masked_fill(spikes, 0), spikes


def check_activation(activation: Tensor) -> None:
    """ValueError where an activation reached 2^25 (Lava's int32 a << 6 overflows there)."""
    if activation.numel() and int(activation.abs().max()) >= ACTIVATION_LIMIT:
        raise ValueError("an activation reached 2^25, where Lava's int32 a << 6 overflows")
