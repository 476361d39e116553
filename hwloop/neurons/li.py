"""LI: the leaky-integrator readout (hypr.md §2.5).

    τ = τ0 + (τ1 − τ0)·tau_u  if interpolation  else  τ = tau_u
    α = exp(−1/τ),   u_t = α·u_{t-1} + (1 − α)·I_t,   output u_t,   dz/ds = [1]

State [u] (d = 1). Initialisation tau_u ~ U(0, 1) with interpolation, else U(τ0, τ1). The
readout is never constrained (as in the HYPR code). With interpolation and τ0 = τ1 the time
constant is fixed and its gradient is exactly 0.
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
    TAU_MAX,
    TAU_MIN,
    check_range,
    stack_matrix,
    stack_vector,
    uniform,
)


@dataclass
class LI(NeuronModel):
    """Hyperparameters: ``tau_range`` [τ0, τ1] in steps, ``interpolation`` (see module doc)."""

    name = "li"
    state_names = ("u",)
    param_names = ("tau_u",)
    spiking = False

    tau_range: tuple[float, float] = (15.0, 25.0)
    interpolation: bool = False

    def __post_init__(self) -> None:
        check_range("tau_range", self.tau_range, TAU_MIN, TAU_MAX)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        low, high = (0.0, 1.0) if self.interpolation else self.tau_range
        return {"tau_u": uniform(size, low, high, generator, dtype)}

    def coefficients(self, params: Params) -> Coefficients:
        low, high = self.tau_range
        raw = params["tau_u"]
        tau = low + (high - low) * raw if self.interpolation else raw
        alpha = torch.exp(-1.0 / tau)
        scale = (high - low) if self.interpolation else 1.0
        return {"alpha": alpha, "dalpha": alpha / tau**2 * scale}

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        (u_prev,) = state
        alpha = coeffs["alpha"]
        u = alpha * u_prev + (1.0 - alpha) * current
        return (u,), u

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        (u_prev,) = state
        alpha = coeffs["alpha"].expand_as(u_prev)
        return StepJacobians(
            A=stack_matrix([[alpha]], u_prev),
            c=stack_vector([1.0 - alpha], u_prev),
            K=stack_vector([(u_prev - current) * coeffs["dalpha"]], u_prev).unsqueeze(0),
            dz_ds=stack_vector([1.0], u_prev),
        )
