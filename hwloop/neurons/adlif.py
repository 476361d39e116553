"""SE-adLIF as in the HYPR code (hypr.md §2.3).

    τ_u = τu0 + (τu1 − τu0)·ρ_u,  τ_w = τw0 + (τw1 − τw0)·ρ_w,  α = exp(−1/τ_u),  β = exp(−1/τ_w)
    u_t = α·u_{t-1}·(1 − z_{t-1}) + (1 − α)·(I_t − w_{t-1})
    z_t = H(u_t − sg(ϑ)),   ψ = SLAYER(5, 0.2)(u_t − ϑ)
    w_t = β·w_{t-1} + (1 − β)·c_a·(a·u_t·(1 − z_t) + b·z_{t-1}),   dz/ds = [ψ, 0]

State [u, w] (d = 2): u is the pre-reset potential (the reset happens next step). Trainable
ρ_u, ρ_w ∈ [0, 1], a, b (clipped to their ranges) and ϑ, whose gradient is exactly 0 (it sits
behind a stop-gradient, as in the HYPR code).
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
class AdLIF(NeuronModel):
    """Hyperparameters: τ ranges (steps), a and b ranges, threshold ϑ, ``adapt_coeff`` c_a."""

    name = "adlif"
    state_names = ("u", "w")
    param_names = ("tau_u", "tau_w", "a", "b", "thr")

    tau_u_range: tuple[float, float] = (5.0, 25.0)
    tau_w_range: tuple[float, float] = (60.0, 300.0)
    a_range: tuple[float, float] = (0.0, 1.0)
    b_range: tuple[float, float] = (0.0, 1.0)
    thr: float = 1.0
    adapt_coeff: float = 120.0

    def __post_init__(self) -> None:
        check_range("tau_u_range", self.tau_u_range, TAU_MIN, TAU_MAX)
        check_range("tau_w_range", self.tau_w_range, TAU_MIN, TAU_MAX)
        check_range("a_range", self.a_range)
        check_range("b_range", self.b_range, 0.0)
        check_number("thr", self.thr, 0.0, above=True)
        check_number("adapt_coeff", self.adapt_coeff, 0.0)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {
            "tau_u": uniform(size, 0.0, 1.0, generator, dtype),
            "tau_w": uniform(size, 0.0, 1.0, generator, dtype),
            "a": uniform(size, *self.a_range, generator, dtype),
            "b": uniform(size, *self.b_range, generator, dtype),
            "thr": torch.full((size,), self.thr, dtype=dtype),
        }

    def coefficients(self, params: Params) -> Coefficients:
        (u0, u1), (w0, w1) = self.tau_u_range, self.tau_w_range
        tau_u = u0 + (u1 - u0) * params["tau_u"]
        tau_w = w0 + (w1 - w0) * params["tau_w"]
        alpha, beta = torch.exp(-1.0 / tau_u), torch.exp(-1.0 / tau_w)
        return {
            "alpha": alpha,
            "beta": beta,
            "dalpha": alpha / tau_u**2 * (u1 - u0),
            "dbeta": beta / tau_w**2 * (w1 - w0),
            "a": params["a"],
            "b": params["b"],
            "thr": params["thr"].detach(),
        }

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        u_prev, w_prev = state
        alpha, beta = coeffs["alpha"], coeffs["beta"]
        u = alpha * u_prev * (1.0 - spike_prev) + (1.0 - alpha) * (current - w_prev)
        z = spike(u - coeffs["thr"], _PSI)
        drive = coeffs["a"] * u * (1.0 - z) + coeffs["b"] * spike_prev
        w = beta * w_prev + (1.0 - beta) * self.adapt_coeff * drive
        return (u, w), z

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        u_prev, w_prev = state
        alpha, beta, a, b = coeffs["alpha"], coeffs["beta"], coeffs["a"], coeffs["b"]
        kept = 1.0 - spike_prev
        u = alpha * u_prev * kept + (1.0 - alpha) * (current - w_prev)
        psi = _PSI(u - coeffs["thr"])
        z = (u - coeffs["thr"] > 0).to(u.dtype)
        post_reset = u * (1.0 - z)
        gain = (1.0 - beta) * self.adapt_coeff
        g = gain * a * ((1.0 - z) - u * psi)  # ∂w_t/∂u_t within the step
        k = (u_prev * kept - current + w_prev) * coeffs["dalpha"]
        drive = a * post_reset + b * spike_prev
        return StepJacobians(
            A=stack_matrix(
                [[alpha * kept, -(1.0 - alpha)], [g * alpha * kept, beta - g * (1.0 - alpha)]], u
            ),
            c=stack_vector([1.0 - alpha, g * (1.0 - alpha)], u),
            K=stack_matrix(
                [
                    [k, g * k],
                    [0.0, (w_prev - self.adapt_coeff * drive) * coeffs["dbeta"]],
                    [0.0, gain * post_reset],
                    [0.0, gain * spike_prev],
                    [0.0, 0.0],
                ],
                u,
            ),
            dz_ds=stack_vector([psi, 0.0], u),
        )

    def constrain_(self, params: Params) -> None:
        params["tau_u"].clamp_(0.0, 1.0)
        params["tau_w"].clamp_(0.0, 1.0)
        params["a"].clamp_(*self.a_range)
        params["b"].clamp_(*self.b_range)
