"""ALIF: adaptive leaky integrate-and-fire as in the HYPR code (hypr.md §2.4).

    α = exp(−1/τ_u),   ρ = exp(−1/τ_a)
    a_t = ρ·a_{t-1} + (1 − ρ)·z_{t-1}
    A_t = b_j0 + β_a·a_t                                  (adaptive threshold)
    u_t = α·u_{t-1} + (1 − α)·I_t − A_t·z_{t-1}           (soft reset, one step late)
    z_t = H(u_t − A_t),   ψ = SLAYER(5, 0.2)(u_t − A_t),   dz/ds = [ψ, −β_a·ψ]

State [u, a] (d = 2). Trainable τ_u, τ_a (time constants in steps, used directly), initialised
N(mean, std) and bounded below after each optimizer step (τ_u ≥ 10, τ_a ≥ 100 by default).
Before the first step nothing bounds them, so the mean must lie 4 std above 0 (a τ ≤ 0 makes
α = exp(−1/τ) ≥ 1 and the run diverge).
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
    normal,
    stack_matrix,
    stack_vector,
)
from hwloop.neurons.surrogates import slayer, spike

_PSI = slayer(5.0, 0.2)


@dataclass
class ALIF(NeuronModel):
    """Hyperparameters: ``beta_a`` β_a, ``b_j0``, initial τ distributions, lower bounds."""

    name = "alif"
    state_names = ("u", "a")
    param_names = ("tau_u", "tau_a")

    beta_a: float = 1.8
    b_j0: float = 0.01
    tau_u_mean: float = 20.0
    tau_u_std: float = 5.0
    tau_a_mean: float = 150.0
    tau_a_std: float = 10.0
    tau_u_min: float = 10.0
    tau_a_min: float = 100.0

    def __post_init__(self) -> None:
        check_number("beta_a", self.beta_a, 0.0)
        check_number("b_j0", self.b_j0, 0.0)
        _check_time_constant("tau_u", self.tau_u_mean, self.tau_u_std, self.tau_u_min)
        _check_time_constant("tau_a", self.tau_a_mean, self.tau_a_std, self.tau_a_min)

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        return {
            "tau_u": normal(size, self.tau_u_mean, self.tau_u_std, generator, dtype),
            "tau_a": normal(size, self.tau_a_mean, self.tau_a_std, generator, dtype),
        }

    def coefficients(self, params: Params) -> Coefficients:
        tau_u, tau_a = params["tau_u"], params["tau_a"]
        alpha, rho = torch.exp(-1.0 / tau_u), torch.exp(-1.0 / tau_a)
        return {"alpha": alpha, "rho": rho, "dalpha": alpha / tau_u**2, "drho": rho / tau_a**2}

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        u_prev, a_prev = state
        alpha, rho = coeffs["alpha"], coeffs["rho"]
        a = rho * a_prev + (1.0 - rho) * spike_prev
        threshold = self.b_j0 + self.beta_a * a
        u = alpha * u_prev + (1.0 - alpha) * current - threshold * spike_prev
        return (u, a), spike(u - threshold, _PSI)

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        u_prev, a_prev = state
        alpha, rho = coeffs["alpha"], coeffs["rho"]
        a = rho * a_prev + (1.0 - rho) * spike_prev
        threshold = self.b_j0 + self.beta_a * a
        u = alpha * u_prev + (1.0 - alpha) * current - threshold * spike_prev
        psi = _PSI(u - threshold)
        kappa = (a_prev - spike_prev) * coeffs["drho"]

        return StepJacobians(
            A=stack_matrix([[alpha, -self.beta_a * rho * spike_prev], [0.0, rho]], u),
            c=stack_vector([1.0 - alpha, 0.0], u),
            K=stack_matrix(
                [[(u_prev - current) * coeffs["dalpha"], 0.0], [-self.beta_a * spike_prev * kappa, kappa]],
                u,
            ),
            dz_ds=stack_vector([psi, -self.beta_a * psi], u),
        )

    def constrain_(self, params: Params) -> None:
        params["tau_u"].clamp_(min=self.tau_u_min)
        params["tau_a"].clamp_(min=self.tau_a_min)


def _check_time_constant(prefix: str, mean: float, std: float, minimum: float) -> None:
    """Options of a time constant τ ~ N(mean, std), bounded below by ``minimum`` after each
    optimizer step. Nothing bounds the draws before the first step, and a τ ≤ 0 makes the run
    diverge (NaN), so the mean must lie at least 4 std above 0 (as the defaults do)."""
    check_number(f"{prefix}_mean", mean, TAU_MIN, TAU_MAX)
    check_number(f"{prefix}_std", std, 0.0, TAU_MAX)
    check_number(f"{prefix}_min", minimum, TAU_MIN, TAU_MAX)
    if mean < 4.0 * std:
        raise ValueError(
            f"{prefix}_std={std!r} with {prefix}_mean={mean!r} must keep "
            f"{prefix}_mean >= 4*{prefix}_std (initial time constants <= 0 give NaN)"
        )
