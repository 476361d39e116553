"""LIF: leaky integrate-and-fire with reset (hwloop's own; not in the HYPR code, hypr.md §2.6).

Defined in HYPR's conventions so that it is SE-adLIF with a = b = 0 and no adaptation state:

    τ_u = τu0 + (τu1 − τu0)·ρ_u,   α = exp(−1/τ_u)
    u_t = α·(1 − z_{t-1})·u_{t-1} + (1 − α)·I_t
    z_t = H(u_t − ϑ),   ψ = SLAYER(5, 0.2)(u_t − ϑ),   dz/ds = [ψ]

State [u] (d = 1); trainable ρ_u ∈ [0, 1] (initialised U(0, 1), clipped to [0, 1]).
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
    check_number,
    check_range,
    stack_matrix,
    stack_vector,
    uniform,
)
from hwloop.neurons.surrogates import slayer, spike

_PSI = slayer(5.0, 0.2)


@dataclass
class LIF(NeuronModel):
    """Hyperparameters: ``tau_u_range`` [τu0, τu1] in steps, threshold ``thr`` ϑ."""

    name = "lif"
    state_names = ("u",)
    param_names = ("tau_u",)

    tau_u_range: tuple[float, float] = (5.0, 25.0)
    thr: float = 1.0

    def __post_init__(self) -> None:
        check_range("tau_u_range", self.tau_u_range, TAU_MIN, TAU_MAX)
        check_number("thr", self.thr, 0.0, above=True)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {"tau_u": uniform(size, 0.0, 1.0, generator, dtype)}

    def coefficients(self, params: Params) -> Coefficients:
        low, high = self.tau_u_range
        tau = low + (high - low) * params["tau_u"]
        alpha = torch.exp(-1.0 / tau)
        return {"alpha": alpha, "dalpha": alpha / tau**2 * (high - low)}

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        (u_prev,) = state
        alpha = coeffs["alpha"]
        u = alpha * (1.0 - spike_prev) * u_prev + (1.0 - alpha) * current
        return (u,), spike(u - self.thr, _PSI)

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        (u_prev,) = state
        alpha = coeffs["alpha"]
        kept = 1.0 - spike_prev
        u = alpha * kept * u_prev + (1.0 - alpha) * current
        psi = _PSI(u - self.thr)
        return StepJacobians(
            A=stack_matrix([[alpha * kept]], u),
            c=stack_vector([1.0 - alpha], u),
            K=stack_vector([(u_prev * kept - current) * coeffs["dalpha"]], u).unsqueeze(0),
            dz_ds=stack_vector([psi], u),
        )

    def constrain_(self, params: Params) -> None:
        params["tau_u"].clamp_(0.0, 1.0)
