"""Lava 0.10.0's fixed-point ATRLIF (``PyATRLIFModelFixed``, tag ``fixed_pt``; spec §4.1).

Adaptive threshold and refractoriness LIF. One step, with a = the summed activation the Dense
connections deliver this step (all states int64 (B, N), tz = truncation toward zero):

    i ← wrap24( tz( trunc(i·(4096 − (δi·4096 + 1))) / 4096 ) + (a << 6) )
    v ← sat24( tz(v·Fv/4096) + i + b ),              Fv = trunc(4096 − δv·4096)
    θ ← tz((θ − θ0)·Fθ/4096) + θ0,                   Fθ = trunc(4096 − δθ·4096)
    r ← tz(r·Fr/4096),                               Fr = trunc(4096 − δr·4096)
    s = (v − r) ≥ θ          (≥, where LIF needs v > vth·64)
    r ← r + 2θ, θ ← θ + θ_step   where s             (v is not reset)

The deltas are fractions (Lava's process takes them so even in the fixed-point model). Two
roundings differ on purpose, as in Lava's numpy code: the current multiplies by the *float*
factor and truncates the float64 product to an integer before the shift, while v, θ and r
truncate the factor to an integer first. θ0 = trunc(theta_0·64) and θ_step =
trunc(theta_step·64) are computed on the first step, which also overwrites the θ state with θ0
(any initial θ is discarded: ``atrlif_start``). Bias b = bias_mant·2^bias_exp (floor shift),
recomputed every step.

Lava keeps i, v, θ, r in int32 and does not clip θ or r; where one of its int32 intermediates
would overflow, ``atrlif_step`` raises instead of silently differing.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from simulators.loihi2.lif import check_activation

INT32_LIMIT = 2**31
"""Lava holds every ATRLIF state and intermediate in int32."""
CURRENT_DECAY_OFFSET = 1
"""Lava's ``ds_offset``: the current keeps (4096 − δi·4096 − 1)/4096 per step."""


@dataclass(frozen=True)
class AtrlifParameters:
    """Parameters of one ATRLIF population, as Lava's ``ATRLIF`` process takes them.

    Attributes:
        delta_i: current decay fraction in [0, 1] (Lava's default 0.4).
        delta_v: voltage decay fraction in [0, 1] (0.4).
        delta_theta: threshold decay fraction in [0, 1] (0.2), toward theta_0.
        delta_r: refractory-state decay fraction in [0, 1] (0.2).
        theta_0: baseline threshold in unscaled units (5); the device uses trunc(·64).
        theta_step: threshold increase per spike, unscaled (3.75); the device uses trunc(·64).
        bias_mant: (N,) bias mantissas, −4096..4095.
        bias_exp: (N,) bias exponents, −7..7.
    """

    delta_i: float
    delta_v: float
    delta_theta: float
    delta_r: float
    theta_0: float
    theta_step: float
    bias_mant: np.ndarray
    bias_exp: np.ndarray

    def __post_init__(self) -> None:
        for name in ("delta_i", "delta_v", "delta_theta", "delta_r"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} is a decay fraction in [0, 1], got {value}")
        for value in (self.scaled_theta_0, self.scaled_theta_step):
            if abs(value) >= INT32_LIMIT:
                raise ValueError(f"a scaled threshold ({value}) does not fit Lava's int32")

    @property
    def size(self) -> int:
        return int(np.asarray(self.bias_mant).shape[0])

    @property
    def scaled_theta_0(self) -> int:
        """θ0 as the device holds it: np.int32(theta_0·64), i.e. truncated toward zero."""
        return int(float(self.theta_0) * 2**THRESHOLD_SHIFT)

    @property
    def scaled_theta_step(self) -> int:
        """θ_step as the device holds it: np.int32(theta_step·64), truncated toward zero."""
        return int(float(self.theta_step) * 2**THRESHOLD_SHIFT)

    @property
    def current_factor(self) -> float:
        """The current's float64 decay factor 4096 − (δi·4096 + 1), kept as a float."""
        return DECAY_UNIT - (float(self.delta_i) * DECAY_UNIT + CURRENT_DECAY_OFFSET)

    @property
    def integer_factors(self) -> tuple[int, int, int]:
        """The integer decay factors (Fv, Fθ, Fr) = trunc(4096 − δ·4096) of v, θ and r."""
        return tuple(int(DECAY_UNIT - float(delta) * DECAY_UNIT)
                     for delta in (self.delta_v, self.delta_theta, self.delta_r))


def float_decay(state: Tensor, factor: float) -> Tensor:
    """tz(trunc(state·factor) / 4096) with a float64 factor, as Lava's ATRLIF current does:
    the float64 product is truncated to an integer (numpy's ``np.int64(float array)``), then
    shifted right by 12 toward zero."""
    product = (state.to(torch.float64) * factor).to(torch.int64)  # float → int truncates
    return decay(product, 1)


def atrlif_start(
    i: Tensor, v: Tensor, theta: Tensor, r: Tensor, parameters: AtrlifParameters
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What Lava's first step does before its first update: θ is overwritten with θ0 for every
    neuron (whatever initial θ was given); i, v and r are kept."""
    return i, v, torch.full_like(theta, parameters.scaled_theta_0), r


def atrlif_initial_state(
    batch: int, parameters: AtrlifParameters, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(i, v, θ, r) for a fresh population of ``batch`` samples: zeros, and θ = θ0."""
    zeros = torch.zeros(batch, parameters.size, dtype=torch.int64, device=device)
    return atrlif_start(zeros, zeros.clone(), zeros.clone(), zeros.clone(), parameters)


def atrlif_step(
    i: Tensor, v: Tensor, theta: Tensor, r: Tensor, activation: Tensor,
    parameters: AtrlifParameters,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One step of (B, N) int64 states (after ``atrlif_start``) with activation (B, N) int64
    → the new i, v, θ, r and the spikes s (B, N) bool."""
    check_activation(activation)
    theta_0, theta_step = parameters.scaled_theta_0, parameters.scaled_theta_step
    factor_v, factor_theta, factor_r = parameters.integer_factors
    bias = shift(torch.as_tensor(np.asarray(parameters.bias_mant), dtype=torch.int64,
                                 device=v.device),
                 torch.as_tensor(np.asarray(parameters.bias_exp), dtype=torch.int64,
                                 device=v.device))
    summed = float_decay(i, parameters.current_factor) + (activation << ACTIVATION_SHIFT)
    offset = theta - theta_0
    i = wrap24(summed)
    v = saturate24(decay(v, factor_v) + i + bias)
    theta = decay(offset, factor_theta) + theta_0
    r = decay(r, factor_r)
    margin = v - r
    spikes = margin >= theta
    doubled = 2 * theta
    r = torch.where(spikes, r + doubled, r)
    theta = torch.where(spikes, theta + theta_step, theta)
    _check_int32(summed, offset, margin, doubled, r, theta)
    return i, v, theta, r, spikes


def _check_int32(*values: Tensor) -> None:
    """Raise where Lava's int32 arithmetic would have wrapped (the emulator computes in int64
    and refuses rather than silently differing)."""
    present = [value.abs().max() for value in values if value.numel()]
    if present and int(torch.stack(present).max()) >= INT32_LIMIT:
        raise ValueError("an ATRLIF state left int32 (i + a·64, θ, r, 2θ or v − r), where "
                         "Lava's int32 arithmetic wraps")
