"""Lava 0.10.0's fixed-point CUBA LIF (``PyLifModelBitAcc``, spec §2.2), trainable on the host.

Host units (the project's convention for Loihi 2, docs/loihi2.md):

* The layer passes a current I = Σ w·x in host weight units. One host weight unit is
  2^12 = 4096 Lava activation units, so Lava's activation is a = floor(4096·I) (the floor is
  what the Dense exponent shift does to a sum; the ``loihi2`` backend keeps exponents ≥ 0, so
  activations are whole and the floor is exact).
* States are Lava's integers / 2^18 (= 64·4096, so that ∂u/∂I = 1): u_int = 2^18·u,
  v_int = 2^18·v. The threshold is ϑ = vth/4096 (Lava spikes where v_int > 64·vth,
  strictly), so the default vth = 4096 is ϑ = 1. Every scale is a power of two: float64
  holds the integers exactly.
* Decays are Lava's integers: ``du`` ∈ [−1, 4095] (the current keeps (4095 − du)/4096 per
  step: 4095 forgets it, −1 keeps it all), ``dv`` ∈ [0, 4096] (the voltage keeps
  (4096 − dv)/4096). They, and ``vth``, are shared by a Lava population: fixed
  hyperparameters, not trained. Lava's LIF has no current bias, so layers of these models
  keep their bias at 0 (``current_bias``); its voltage bias is not used.

One step in Lava's integers, tz = truncation toward zero:

    a = floor(4096·I)
    u_int = wrap24( tz(u_int·(4095 − du)/4096) + 64·a )      (−2^24 where > 2^23, +2^24 where
                                                                 <= −2^23, once)
    v_int = sat24( tz(v_int·(4096 − dv)/4096) + u_int )        (clip to ±(2^23 − 1))

The forward values are exactly Lava's; floor, tz, wrap, saturation and reset are
straight-through (derivative 1), so αu = (4095 − du)/4096, αv = (4096 − dv)/4096, ∂u/∂I = 1,
∂v/∂u = 1. The step runs in float64 and returns the input's dtype. float32 is exact too while
|u_int|, |v_int| < 2^24: saturation keeps |v_int| < 2^23, and |a| ≤ 2^18 keeps |u_int| ≤ 2^23
(one wrap then suffices; larger activations can leave u_int beyond ±2^23). Training uses float64
(``integer_dynamics``), where the layer's sums of currents are exact too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hwloop.neurons.base import (
    Coefficients,
    NeuronModel,
    Params,
    State,
    StepJacobians,
    stack_matrix,
    stack_vector,
)
from hwloop.neurons.surrogates import slayer, spike

_PSI = slayer(5.0, 0.2)
WEIGHT_UNIT = 4096.0
"""2^12: Lava activation units per host weight unit."""
SHIFT = 64.0
"""2^6: Lava's activation and threshold shift (a enters u as 64·a; Lava spikes where
v_int > 64·vth)."""
STATE_UNIT = WEIGHT_UNIT * SHIFT
"""2^18: Lava state integers per host unit."""
DECAY_UNIT = 4096.0
"""Lava's decay scale: x ← tz(x·(4096 − δ)/4096)."""
_LIMIT = 2.0**23
"""u_int wraps once past ±2^23; v_int saturates at ±(2^23 − 1)."""


@dataclass
class _LavaLIF(NeuronModel):
    """Lava's shared integer hyperparameters ``du``, ``dv``, ``vth`` (module doc); no trainable
    parameters."""

    state_names = ("u", "v")
    param_names = ()
    current_bias = False
    integer_dynamics = True

    du: int = 4095
    dv: int = 410
    vth: int = 4096

    def __post_init__(self) -> None:
        _check_integer("du", self.du, -1, 4095)
        _check_integer("dv", self.dv, 0, 4096)
        _check_integer("vth", self.vth, 0, 131071)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {}

    def coefficients(self, params: Params) -> Coefficients:
        return {}

    def _integrate(self, current: Tensor, u_prev: Tensor, v_kept: Tensor) -> tuple[Tensor, Tensor]:
        """Lava's u and v update: host-unit tensors (..., N) → (u_int, v_int) float64, where
        ``v_kept`` is the voltage after any reset."""
        scaled = WEIGHT_UNIT * current.double()
        activation = straight_through(scaled, torch.floor(scaled))
        u = decay_toward_zero(STATE_UNIT * u_prev.double(), 4095 - self.du) + SHIFT * activation
        u = wrap24(u)
        v = decay_toward_zero(STATE_UNIT * v_kept.double(), 4096 - self.dv) + u
        return u, saturate24(v)

    def _jacobian_matrix(self, v_keep: Tensor | float, like: Tensor) -> Tensor:
        """A = [[αu, 0], [αu, v_keep]] (2, 2, ..., N)."""
        alpha_u = (4095 - self.du) / DECAY_UNIT
        return stack_matrix([[alpha_u, 0.0], [alpha_u, v_keep]], like)


@dataclass
class LoihiLIF(_LavaLIF):
    """Lava's fixed-point LIF as a hidden neuron: state (u, v) in host units, ψ =
    SLAYER(5, 0.2)(v − ϑ), dz/ds = [0, ψ].

    The stored v is the voltage before Lava's reset; the reset v ← 0 after a spike enters the
    next step through (1 − z_{t-1}), so Lava's monitored voltage is v·(1 − z).
    """

    name = "loihi_lif"

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        u_prev, v_prev = state
        u, v = self._integrate(current, u_prev, (1.0 - spike_prev.double()) * v_prev.double())
        z = spike((v - SHIFT * self.vth) / STATE_UNIT, _PSI)
        return (to_host(u, current), to_host(v, current)), z.to(current.dtype)

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        u_prev, v_prev = state
        kept = 1.0 - spike_prev
        _, v = self._integrate(current, u_prev, kept * v_prev)
        psi = _PSI((v - SHIFT * self.vth) / STATE_UNIT).to(current.dtype)
        return StepJacobians(
            A=self._jacobian_matrix(kept * ((4096 - self.dv) / DECAY_UNIT), current),
            c=stack_vector([1.0, 1.0], current),
            K=current.new_zeros((0, 2, *current.shape)),
            dz_ds=stack_vector([0.0, psi], current),
        )


@dataclass
class LoihiLI(_LavaLIF):
    """Lava's fixed-point LIF as a readout that (almost) never spikes: its output is v, exactly
    Lava's monitored voltage / 2^18 (after Lava's reset where v_int > 64·vth, which the largest
    ``vth`` = 131071 leaves to saturated voltages); dz/ds = [0, 1]."""

    name = "loihi_li"
    spiking = False

    vth: int = 131071

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        u_prev, v_prev = state
        u, v = self._integrate(current, u_prev, v_prev)
        v = straight_through(v, torch.where(v > SHIFT * self.vth, torch.zeros_like(v), v))
        output = to_host(v, current)
        return (to_host(u, current), output), output

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        return StepJacobians(
            A=self._jacobian_matrix((4096 - self.dv) / DECAY_UNIT, current),
            c=stack_vector([1.0, 1.0], current),
            K=current.new_zeros((0, 2, *current.shape)),
            dz_ds=stack_vector([0.0, 1.0], current),
        )


def _check_integer(name: str, value: int, low: int, high: int) -> None:
    """Refuse (ValueError) anything but an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, {high}]")


def straight_through(x: Tensor, exact: Tensor) -> Tensor:
    """The value of ``exact`` with the derivative of ``x`` (straight-through)."""
    return exact.detach() + (x - x.detach())


def decay_toward_zero(x: Tensor, keep: int) -> Tensor:
    """tz(x·keep/4096) with an integer ``keep``, straight-through (exact in float64 while
    |x·keep| < 2^53)."""
    product = x * (keep / DECAY_UNIT)
    return straight_through(product, torch.trunc(product))


def wrap24(x: Tensor) -> Tensor:
    """Lava's one-shot 24-bit wrap of a current (float64 integers), straight-through:
    x − 2^24 where x > 2^23, x + 2^24 where x <= −2^23."""
    span = 2 * _LIMIT
    return straight_through(x, torch.where(x > _LIMIT, x - span,
                                           torch.where(x <= -_LIMIT, x + span, x)))


def saturate24(x: Tensor) -> Tensor:
    """Clip a voltage (float64 integers) to ±(2^23 − 1), straight-through."""
    return straight_through(x, x.clamp(1.0 - _LIMIT, _LIMIT - 1.0))


def to_host(state: Tensor, like: Tensor) -> Tensor:
    """A Lava integer state (float64) in host units, in the dtype of ``like``."""
    return (state / STATE_UNIT).to(like.dtype)
