"""Lava 0.10.0's fixed-point resonate-and-fire neuron (``PyRFModelFixed``, tag ``fixed_pt``;
spec §4.2).

The ``RF`` process computes, once at construction (numpy float64, as Lava does):

    sin_decay = trunc((1 − alpha)·sin(2π/period) · 2^decay_bits)
    cos_decay = trunc((1 − alpha)·cos(2π/period) · 2^decay_bits)
    vth       = trunc(vth · 2^state_exp)

One step, with a_re, a_im = the summed activations its two InPorts (``a_real_in``,
``a_imag_in``) receive this step, sc(x) = sign(x)·(|x| >> decay_bits), all in int64:

    re' = sat24( sc(cos·re) − sc(sin·im) + (a_re << state_exp) )
    im' = sat24( sc(sin·re) + sc(cos·im) + (a_im << state_exp) )
    s   = (re' ≥ vth) ∧ (im' ≥ 0) ∧ (im < 0)       (upward zero crossing of im; no reset)

where im is the imaginary state before the update and sat24 clips to ±(2^23 − 1). An
unconnected InPort delivers zeros. ``decay_bits`` must be ≥ 1: with 0 Lava keeps the decays
as floats and its fixed-point model fails on its first step (numpy cannot right-shift floats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from simulators.loihi2.fixed_point import saturate24

INT32_LIMIT = 2**31
"""Lava shifts the received activations left by state_exp in int32."""


@dataclass(frozen=True)
class RfParameters:
    """Parameters of one RF population, exactly as Lava's ``RF`` process takes them.

    Attributes:
        period: resonator period in steps (the phase advances 2π/period per step).
        alpha: decay fraction of the amplitude per step.
        state_exp: the inputs are shifted left by it, the threshold scaled by 2^state_exp; ≥ 0.
        decay_bits: precision of the integer sin/cos decays; ≥ 1 for the fixed-point model.
        vth: threshold on the real part, unscaled.
    """

    period: float
    alpha: float
    state_exp: int
    decay_bits: int
    vth: float

    def __post_init__(self) -> None:
        if int(self.decay_bits) < 1:
            raise ValueError("decay_bits must be ≥ 1: with 0 Lava's fixed-point RF keeps float "
                             "decays and fails on its first step")
        if int(self.state_exp) < 0:
            raise ValueError(f"state_exp must be ≥ 0, got {self.state_exp}")
        if not float(self.period):
            raise ValueError("period must not be 0")

    @property
    def decays(self) -> tuple[int, int]:
        """(sin_decay, cos_decay) as Lava's ``RF`` computes and stores them."""
        return rf_decays(self.period, self.alpha, self.decay_bits)

    @property
    def scaled_vth(self) -> int:
        """The threshold the fixed-point model compares with: trunc(vth·2^state_exp) (Lava
        scales with ``int`` when state_exp > 0, else truncates into its int32 Var)."""
        if int(self.state_exp) > 0:
            return int(self.vth * (1 << int(self.state_exp)))
        return int(np.int32(self.vth))


def rf_decays(period: float, alpha: float, decay_bits: int) -> tuple[int, int]:
    """Lava's ``RF.__init__``: (1 − alpha)·sin/cos(2π/period) in numpy float64, scaled by
    2^decay_bits and truncated toward zero with ``np.int32`` (same expression, same order)."""
    sin_decay = (1 - alpha) * np.sin(np.pi * 2 * 1 / period)
    cos_decay = (1 - alpha) * np.cos(np.pi * 2 * 1 / period)
    scale = 1 << int(decay_bits)
    if max(abs(sin_decay), abs(cos_decay)) * scale >= INT32_LIMIT:
        raise ValueError(f"decays scaled by 2^{decay_bits} do not fit Lava's int32")
    return int(np.int32(sin_decay * scale)), int(np.int32(cos_decay * scale))


def scaled_product(product: Tensor, bits: int) -> Tensor:
    """sign(p)·(|p| >> bits): Lava's RF ``scale_volt``, a right shift truncating toward zero."""
    return torch.sign(product) * (product.abs() >> bits)


def rf_step(
    real: Tensor, imag: Tensor, a_real: Tensor, a_imag: Tensor, parameters: RfParameters
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of (B, N) int64 real and imaginary states with the activations (B, N) int64
    received on ``a_real_in`` and ``a_imag_in`` → the new real, imag and the spikes (B, N)
    bool. ``imag`` is the previous imaginary state the zero crossing is tested against."""
    exponent, bits = int(parameters.state_exp), int(parameters.decay_bits)
    for activation in (a_real, a_imag):
        if activation.numel() and int(activation.abs().max()) << exponent >= INT32_LIMIT:
            raise ValueError("an activation << state_exp reached 2^31, where Lava's int32 "
                             "shift overflows")
    sin_decay, cos_decay = parameters.decays
    new_real = saturate24(scaled_product(cos_decay * real, bits)
                          - scaled_product(sin_decay * imag, bits) + (a_real << exponent))
    new_imag = saturate24(scaled_product(sin_decay * real, bits)
                          + scaled_product(cos_decay * imag, bits) + (a_imag << exponent))
    spikes = (new_real >= parameters.scaled_vth) & (new_imag >= 0) & (imag < 0)
    return new_real, new_imag, spikes
