"""The ALIF neuron and leaky readout of "E-prop on SpiNNaker 2" (Rostami et al. 2022, after
Bellec et al. 2020), the network SpiNNaker 2 trains on chip (spec A3; docs/spinnaker2.md).

Fixed time constants in steps (α = exp(−1/τ_m), ρ = exp(−1/τ_a), κ = exp(−1/τ_out)):

    a_t = ρ·a_{t-1} + (1 − ρ)·z_{t-1},   A_t = v_th + β·a_t
    v_t = α·v_{t-1} + (1 − α)·I_t − A_t·z_{t-1}
    z_t = H(v_t − A_t),   ψ_t = γ·[(1 + h)·N(u; 0, w) − h·N(u; w, 6w) − h·N(u; −w, 6w)]

with u = v_t − A_t and N the Gaussian density. The readout ``eprop_li`` is y_t = κ·y_{t-1} + I_t
(the output weights times the spikes low-passed by κ).

E-prop's eligibility convention (Bellec et al.): the neuron's own last spike z_{t-1} enters the
adaptation with its pseudo-derivative ψ_{t-1}, and the reset term −A_t·z_{t-1} is not
differentiated. ``step`` states this convention to autograd (the value of z_{t-1} is unchanged;
the reset uses a detached threshold), so the closed-form Jacobians

    A = [[α, 0], [(1 − ρ)·ψ_{t-1}, ρ − (1 − ρ)·β·ψ_{t-1}]],   c = [1 − α, 0],   dz/ds = [ψ, −β·ψ]

are exactly autograd's, and hwloop's e-prop on this model computes the traces of spec A3
(ε^v, ε^a). Neither layer has a current bias (the chip has none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hwloop.neurons.base import (
    TAU_MAX,
    TAU_MIN,
    Coefficients,
    NeuronModel,
    Params,
    State,
    StepJacobians,
    check_number,
    stack_matrix,
    stack_vector,
)
from hwloop.neurons.surrogates import Surrogate, spike

SIDE_WIDTH = 6.0
"""Width of the surrogate's side lobes, in units of its central width."""


def three_gaussian(gamma: float, width: float, height: float) -> Surrogate:
    """ψ(u) = γ·[(1 + h)·N(u; 0, w) − h·N(u; w, 6w) − h·N(u; −w, 6w)] (the e-prop code's
    surrogate; γ = 0.5, w = 0.5, h = 0.15 there)."""
    side = SIDE_WIDTH * width

    def density(x: Tensor, mean: float, sigma: float) -> Tensor:
        return torch.exp(-((x - mean) ** 2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))

    def psi(x: Tensor) -> Tensor:
        return gamma * ((1.0 + height) * density(x, 0.0, width) - height * density(x, width, side)
                        - height * density(x, -width, side))

    return psi


@dataclass
class EpropALIF(NeuronModel):
    """Hyperparameters: ``tau_m``, ``tau_a`` (steps), ``v_th``, ``beta``, the surrogate's
    ``gamma``, ``width``, ``height``. Defaults: the e-prop reference network at dt = 1 ms."""

    name = "eprop_alif"
    state_names = ("v", "a")
    param_names = ()
    current_bias = False

    tau_m: float = 5.0
    tau_a: float = 150.0
    v_th: float = 1.6
    beta: float = 0.184
    gamma: float = 0.5
    width: float = 0.5
    height: float = 0.15

    def __post_init__(self) -> None:
        check_number("tau_m", self.tau_m, TAU_MIN, TAU_MAX)
        check_number("tau_a", self.tau_a, TAU_MIN, TAU_MAX)
        check_number("v_th", self.v_th, 0.0, above=True)
        check_number("beta", self.beta, 0.0)
        check_number("gamma", self.gamma, 0.0)
        check_number("width", self.width, 0.0, above=True)
        check_number("height", self.height, 0.0)
        self._psi = three_gaussian(self.gamma, self.width, self.height)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {}

    def coefficients(self, params: Params) -> Coefficients:
        return {"alpha": torch.tensor(math.exp(-1.0 / self.tau_m), dtype=torch.float64),
                "rho": torch.tensor(math.exp(-1.0 / self.tau_a), dtype=torch.float64)}

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        v_prev, a_prev = state
        alpha, rho = _as(coeffs["alpha"], current), _as(coeffs["rho"], current)
        # z_{t-1} as a function of the previous state (e-prop's convention, module doc)
        own_spike = _carry_gradient(spike_prev, v_prev - self.v_th - self.beta * a_prev,
                                    self._psi)
        a = rho * a_prev + (1.0 - rho) * own_spike
        threshold = self.v_th + self.beta * a
        v = alpha * v_prev + (1.0 - alpha) * current - threshold.detach() * spike_prev
        return (v, a), spike(v - threshold, self._psi)

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        v_prev, a_prev = state
        alpha, rho = _as(coeffs["alpha"], current), _as(coeffs["rho"], current)
        psi_prev = self._psi(v_prev - self.v_th - self.beta * a_prev)
        a = rho * a_prev + (1.0 - rho) * spike_prev
        threshold = self.v_th + self.beta * a
        v = alpha * v_prev + (1.0 - alpha) * current - threshold * spike_prev
        psi = self._psi(v - threshold)
        return StepJacobians(
            A=stack_matrix([[alpha.expand_as(v), 0.0],
                            [(1.0 - rho) * psi_prev, rho - (1.0 - rho) * self.beta * psi_prev]],
                           v),
            c=stack_vector([(1.0 - alpha).expand_as(v), 0.0], v),
            K=v.new_zeros((0, 2, *v.shape)),
            dz_ds=stack_vector([psi, -self.beta * psi], v),
        )


@dataclass
class EpropLI(NeuronModel):
    """The e-prop readout y_t = κ·y_{t-1} + I_t, κ = exp(−1/τ_out); ``tau_out`` in steps."""

    name = "eprop_li"
    state_names = ("y",)
    param_names = ()
    spiking = False
    current_bias = False

    tau_out: float = 10.0

    def __post_init__(self) -> None:
        check_number("tau_out", self.tau_out, TAU_MIN, TAU_MAX)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {}

    def coefficients(self, params: Params) -> Coefficients:
        return {"kappa": torch.tensor(math.exp(-1.0 / self.tau_out), dtype=torch.float64)}

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        y = _as(coeffs["kappa"], current) * state[0] + current
        return (y,), y

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        kappa = _as(coeffs["kappa"], current).expand_as(current)
        return StepJacobians(
            A=stack_matrix([[kappa]], current),
            c=stack_vector([1.0], current),
            K=current.new_zeros((0, 1, *current.shape)),
            dz_ds=stack_vector([1.0], current),
        )


def _as(value: Tensor, like: Tensor) -> Tensor:
    """A coefficient in the dtype and on the device of ``like``."""
    return value.to(dtype=like.dtype, device=like.device)


def _carry_gradient(value: Tensor, x: Tensor, psi: Surrogate) -> Tensor:
    """``value`` whose derivative is ψ(x)·dx (the value itself unchanged)."""
    if not torch.is_grad_enabled():
        return value
    return value + (x - x.detach()) * psi(x.detach())
