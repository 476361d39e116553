"""Lava 0.10.0's fixed-point ATRLIF (``PyATRLIFModelFixed``, spec §4.1), trainable on the host.

Adaptive threshold and refractoriness LIF: a LIF without reset whose threshold θ rises by
θ_step at each spike and decays back to θ0, and whose refractory state r jumps by 2θ at each
spike and decays to 0; it spikes where v − r ≥ θ.

Host units are those of ``hwloop.neurons.loihi`` (docs/loihi2.md): the layer's current I is in
host weight units, Lava's activation is a = floor(4096·I), and every state is Lava's integer
/ 2^18 (so ∂i/∂I = 1). The thresholds are taken as Lava's process takes them, unscaled: Lava
uses θ0 = trunc(64·theta_0) and θ_step = trunc(64·theta_step) voltage integers, so in host
units ϑ0 = trunc(64·theta_0)/2^18 (the default theta_0 = 4096 is ϑ0 = 1, like ``loihi_lif``'s
vth = 4096) and ϑ_step = trunc(64·theta_step)/2^18 (the default 3072 is 0.75; Lava's own
defaults 5 and 3.75 have the same ratio). The decays are fractions δ ∈ [0, 1], as Lava's
fixed-point model takes them. All six are shared by a Lava population: fixed hyperparameters,
not trained. Lava's ATRLIF bias is not used (``current_bias``).

State (i, v, θ̃, r), each Lava's integer / 2^18, chosen so that the all-zero state is Lava's
start (Lava's first step overwrites θ with θ0):

* i, v: Lava's current and voltage (v is never reset);
* θ̃ = θ − θ0 and r: the threshold offset and the refractory state *before* the updates of
  this step's spike. Lava's ``r += 2θ, θ += θ_step where s`` enters the next step through
  z_{t-1}, as ``loihi_lif`` applies Lava's reset through (1 − z_{t-1}). Lava's monitored
  values after a step are therefore

      θ_Lava = θ̃ + ϑ0 + ϑ_step·z,        r_Lava = r + 2·(θ̃ + ϑ0)·z      (host units).

One step in Lava's integers (x_int = 2^18·x, tz = truncation toward zero):

    a      = floor(4096·I)
    i_int  = wrap24( tz( trunc(i_int·Fi) / 4096 ) + 64·a ),    Fi = 4096 − (δi·4096 + 1) (float)
    v_int  = sat24( tz(v_int·Fv/4096) + i_int ),                Fv = trunc(4096 − δv·4096)
    θ̃_int = tz((θ̃_int + θ_step·z_{t-1})·Fθ/4096),             Fθ = trunc(4096 − δθ·4096)
    r_int  = tz((r_int + 2·(θ̃_int + θ0)·z_{t-1})·Fr/4096),     Fr = trunc(4096 − δr·4096)
    z      = (v_int − r_int ≥ θ̃_int + θ0)                      (≥, not >)

with wrap24 Lava's one-shot 24-bit wrap (−2^24 where > 2^23, +2^24 where ≤ −2^23) and sat24
the clip to ±(2^23 − 1); θ̃ and r are not clipped. The current multiplies by the *float*
factor Fi and truncates the float64 product, while v, θ̃ and r truncate the factor first:
two roundings, as Lava's NumPy code does.

The forward values are exactly Lava's; floor, tz, wrap and saturation are straight-through
(derivative 1), so αi = Fi/4096, αv = Fv/4096, αθ = Fθ/4096, αr = Fr/4096, and the spike's
surrogate is ψ = SLAYER(5, 0.2) at x = v − r − θ̃ − ϑ0 (host units). The step runs in float64
(every integer stays below 2^53) and returns the input's dtype. float32 is exact while every
|state integer| < 2^24: saturation keeps |v_int| < 2^23, |a| ≤ 2^18 keeps |i_int| ≤ 2^23; a
spike needs 0 ≤ θ + r ≤ v_int < 2^23, so r_int + 2θ < 2^24 always and θ̃_int < 2^24 where
θ_step ≤ 2^23 (theta_step ≤ 2^17). Training uses float64 (``integer_dynamics``).

Lava holds these states in int32 and wraps silently where one leaves it; the host model
computes on in float64 instead (``simulators.loihi2.atrlif`` refuses such runs). Since a spike
needs θ + r < 2^23, that takes θ0 or θ_step near 2^30 (2θ, θ + θ_step) or a current
i + 64·a beyond 2^31 (activations near 2^25), not long runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hwloop.neurons.base import (
    Coefficients,
    NeuronModel,
    Params,
    State,
    StepJacobians,
    check_number,
    stack_matrix,
    stack_vector,
)
from hwloop.neurons.loihi import (
    DECAY_UNIT,
    SHIFT,
    STATE_UNIT,
    WEIGHT_UNIT,
    decay_toward_zero,
    saturate24,
    straight_through,
    to_host,
    wrap24,
)
from hwloop.neurons.surrogates import slayer

_PSI = slayer(5.0, 0.2)
_CURRENT_OFFSET = 1.0
"""Lava's ``ds_offset``: the current keeps (4096 − δi·4096 − 1)/4096 per step."""
_INT32_MAX = 2**31 - 1
"""θ0 and θ_step must fit Lava's int32 (and be ≥ 0)."""


@dataclass
class LoihiATRLIF(NeuronModel):
    """Lava's fixed-point ATRLIF as a hidden neuron (module doc): state (i, v, θ̃, r) in host
    units, no trainable parameters, dz/ds = ψ·[0, 1, −1, −1]."""

    name = "loihi_atrlif"
    state_names = ("i", "v", "theta_offset", "r")
    param_names = ()
    current_bias = False
    integer_dynamics = True

    delta_i: float = 0.4
    delta_v: float = 0.4
    delta_theta: float = 0.2
    delta_r: float = 0.2
    theta_0: float = 4096.0
    theta_step: float = 3072.0

    def __post_init__(self) -> None:
        for name in ("delta_i", "delta_v", "delta_theta", "delta_r"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("theta_0", "theta_step"):
            value = getattr(self, name)
            check_number(name, value)
            if not 0 <= _scaled(value) <= _INT32_MAX:
                raise ValueError(
                    f"{name}={value!r} must keep trunc({name}*64) in [0, {_INT32_MAX}] "
                    "(Lava's int32)"
                )

    # -- Lava's integer constants -------------------------------------------------------------

    @property
    def scaled_theta_0(self) -> int:
        """θ0 = trunc(64·theta_0), Lava's baseline threshold in voltage integers."""
        return _scaled(self.theta_0)

    @property
    def scaled_theta_step(self) -> int:
        """θ_step = trunc(64·theta_step), Lava's threshold increase per spike."""
        return _scaled(self.theta_step)

    @property
    def current_factor(self) -> float:
        """Fi = 4096 − (δi·4096 + 1), kept as a float64 as Lava does."""
        return DECAY_UNIT - (float(self.delta_i) * DECAY_UNIT + _CURRENT_OFFSET)

    @property
    def integer_factors(self) -> tuple[int, int, int]:
        """(Fv, Fθ, Fr) = trunc(4096 − δ·4096) for v, θ and r."""
        return tuple(
            int(DECAY_UNIT - float(delta) * DECAY_UNIT)
            for delta in (self.delta_v, self.delta_theta, self.delta_r)
        )  # type: ignore[return-value]

    # -- the model contract -------------------------------------------------------------------

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {}

    def coefficients(self, params: Params) -> Coefficients:
        return {}

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        new = self._integrate(current, state, spike_prev)
        margin = new[1] - new[3] - new[2] - self.scaled_theta_0  # Lava integers, exact
        z = _spike_at_least(margin / STATE_UNIT)
        return tuple(to_host(x, current) for x in new), z.to(current.dtype)

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        with torch.no_grad():
            _, v, theta, r = self._integrate(current, state, spike_prev)
            psi = _PSI((v - r - theta - self.scaled_theta_0) / STATE_UNIT).to(current.dtype)
        alpha_i = self.current_factor / DECAY_UNIT
        alpha_v, alpha_theta, alpha_r = (f / DECAY_UNIT for f in self.integer_factors)
        return StepJacobians(
            A=stack_matrix(
                [
                    [alpha_i, 0.0, 0.0, 0.0],
                    [alpha_i, alpha_v, 0.0, 0.0],
                    [0.0, 0.0, alpha_theta, 0.0],
                    [0.0, 0.0, (2.0 * alpha_r) * spike_prev, alpha_r],
                ],
                current,
            ),
            c=stack_vector([1.0, 1.0, 0.0, 0.0], current),
            K=current.new_zeros((0, 4, *current.shape)),
            dz_ds=stack_vector([0.0, psi, -psi, -psi], current),
        )

    def _integrate(
        self, current: Tensor, state: State, spike_prev: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Lava's update of (i, v, θ̃, r) from host-unit tensors (..., N) → the new states as
        Lava integers in float64 (straight-through)."""
        i_prev, v_prev, theta_prev, r_prev = (STATE_UNIT * x.double() for x in state)
        z = spike_prev.double()
        factor_v, factor_theta, factor_r = self.integer_factors
        scaled = WEIGHT_UNIT * current.double()
        activation = straight_through(scaled, torch.floor(scaled))
        product = i_prev * self.current_factor  # the float64 product Lava truncates
        i = _truncate(_truncate(product) / DECAY_UNIT) + SHIFT * activation
        i = wrap24(i)
        v = decay_toward_zero(v_prev, factor_v) + i
        v = saturate24(v)
        theta = decay_toward_zero(theta_prev + self.scaled_theta_step * z, factor_theta)
        r = decay_toward_zero(r_prev + 2.0 * (theta_prev + self.scaled_theta_0) * z, factor_r)
        return i, v, theta, r


def _scaled(value: float) -> int:
    """trunc(64·value), as Lava's np.int32(value·64); huge values stay huge (checked after)."""
    product = float(value) * SHIFT
    return int(product) if math.isfinite(product) else _INT32_MAX + 1


def _truncate(x: Tensor) -> Tensor:
    """tz(x), straight-through."""
    return straight_through(x, torch.trunc(x))


def _spike_at_least(x: Tensor) -> Tensor:
    """H(x) with H(0) = 1 (Lava's ≥), whose derivative is ψ(x) (forward gradient injection,
    as ``surrogates.spike``; ψ is not evaluated under ``torch.no_grad``)."""
    fired = (x >= 0).to(x.dtype)
    if not torch.is_grad_enabled():
        return fired
    return fired + (x - x.detach()) * _PSI(x.detach())


