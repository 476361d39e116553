"""BRF: balanced resonate-and-fire (hypr.md §2.2).

    ω = exp(omega) if exponential_omega else |omega|;   b' = exp(b_offset) if exponential_b else |b_offset|

Euler mode:        p(ω) = (−1 + sqrt(1 − (δω)²))/δ,   β_t = p(ω) − b' − q_{t-1}
                   u_t = u_{t-1} + δ·(β_t·u_{t-1} − ω·v_{t-1} + I_t)
                   v_t = v_{t-1} + δ·(ω·u_{t-1} + β_t·v_{t-1})
Exponential mode:  β_t = −b' − q_{t-1},  r = exp(δβ_t),  φ = δω      (no p(ω) term)
                   u_t = r·(cos φ·u_{t-1} − sin φ·v_{t-1}) + δ·I_t,   v_t = r·(sin φ·u_{t-1} + cos φ·v_{t-1})
Both:              x_t = u_t − θ − q_{t-1},  z_t = H(x_t),  q_t = 0.9·q_{t-1} + z_t,  dz/ds = [ψ, 0, −ψ]

State [u, v, q] (d = 3); no membrane reset. δ is the step in seconds (0.01), ω in rad/s.
In Euler mode p(ω) is NaN when δω > 1 (as in the HYPR code), so the initial ranges must keep
δω < 1, and δb' ≤ 2·sqrt(1 − (δω)²), beyond which the Euler step grows without bound.
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
    check_range,
    stack_matrix,
    stack_vector,
    uniform,
)
from hwloop.neurons.surrogates import SURROGATES, spike

_Q_DECAY = 0.9


@dataclass
class BRF(NeuronModel):
    """Hyperparameters: threshold ``thr`` θ, step ``dt`` δ (s), surrogate name, mode flags,
    initial ranges of ω (rad/s) and b'."""

    name = "brf"
    state_names = ("u", "v", "q")
    param_names = ("omega", "b_offset")

    thr: float = 1.0
    dt: float = 0.01
    surrogate: str = "double_gaussian"
    use_exponential: bool = False
    exponential_omega: bool = False
    exponential_b: bool = False
    omega_range: tuple[float, float] = (5.0, 10.0)
    b_range: tuple[float, float] = (2.0, 3.0)

    def __post_init__(self) -> None:
        if self.surrogate not in SURROGATES:
            raise ValueError(
                f"unknown surrogate {self.surrogate!r} (choose from: {', '.join(SURROGATES)})"
            )
        check_number("thr", self.thr, 0.0, above=True)
        check_number("dt", self.dt, 0.0, above=True)
        # exponential parameters are initialised from the logarithms of their ranges
        check_range("omega_range", self.omega_range, 0.0 if self.exponential_omega else -math.inf)
        check_range("b_range", self.b_range, 0.0 if self.exponential_b else -math.inf)
        self._check_step_size()

    def _check_step_size(self) -> None:
        """Refuse initial ω and b' that the discretisation cannot follow (module doc)."""
        omega_step = self.dt * max(abs(end) for end in self.omega_range)  # largest initial δω
        if self.use_exponential:
            if omega_step > math.pi:
                raise ValueError(
                    f"omega_range={self.omega_range!r} with dt={self.dt!r} must keep "
                    "abs(omega)*dt <= pi (higher frequencies alias): "
                    f"ends within ±{math.pi / self.dt:g}"
                )
            return
        if omega_step >= 1.0:
            raise ValueError(
                f"omega_range={self.omega_range!r} with dt={self.dt!r} must keep abs(omega)*dt < 1 "
                f"in Euler mode (p(omega) is NaN beyond): ends within ±{1.0 / self.dt:g} "
                "(exclusive), a smaller dt, or use_exponential=true"
            )
        b_step = self.dt * max(abs(end) for end in self.b_range)  # largest initial δb'
        b_limit = 2.0 * math.sqrt(1.0 - omega_step**2)
        if b_step > b_limit:
            raise ValueError(
                f"b_range={self.b_range!r} with dt={self.dt!r} and "
                f"omega_range={self.omega_range!r} must keep abs(b)*dt <= "
                f"2*sqrt(1 - (omega*dt)^2) = {b_limit:.4g} in Euler mode (the Euler step grows "
                f"without bound beyond): ends within ±{b_limit / self.dt:.4g}, a smaller dt, "
                "or use_exponential=true"
            )

    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        def draw(bounds: tuple[float, float], exponential: bool) -> Tensor:
            low, high = bounds
            if exponential:
                low, high = math.log(low + 1e-10), math.log(high + 1e-10)
            return uniform(size, low, high, generator, dtype)

        return {
            "omega": draw(self.omega_range, self.exponential_omega),
            "b_offset": draw(self.b_range, self.exponential_b),
        }

    def coefficients(self, params: Params) -> Coefficients:
        omega_raw, b_raw = params["omega"], params["b_offset"]
        if self.exponential_omega:
            omega = torch.exp(omega_raw)
            domega = omega
        else:
            omega, domega = omega_raw.abs(), torch.sign(omega_raw)
        if self.exponential_b:
            b_off = torch.exp(b_raw)
            db = b_off
        else:
            b_off, db = b_raw.abs(), torch.sign(b_raw)
        coeffs = {"omega": omega, "b_off": b_off, "domega": domega, "db": db}
        if self.use_exponential:
            phi = self.dt * omega
            coeffs.update(cos=torch.cos(phi), sin=torch.sin(phi))
        else:
            root = torch.sqrt(1.0 - (self.dt * omega) ** 2)
            coeffs.update(p=(root - 1.0) / self.dt, dp=-self.dt * omega / root)
        return coeffs

    def step(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        u_prev, v_prev, q_prev = state
        u, v = self._oscillate(current, u_prev, v_prev, q_prev, coeffs)
        z = spike(u - self.thr - q_prev, SURROGATES[self.surrogate])
        return (u, v, _Q_DECAY * q_prev + z), z

    def _oscillate(
        self, current: Tensor, u_prev: Tensor, v_prev: Tensor, q_prev: Tensor, c: Coefficients
    ) -> tuple[Tensor, Tensor]:
        dt = self.dt
        if self.use_exponential:
            r = torch.exp(dt * (-c["b_off"] - q_prev))
            re = r * (c["cos"] * u_prev - c["sin"] * v_prev)
            im = r * (c["sin"] * u_prev + c["cos"] * v_prev)
            return re + dt * current, im
        beta = c["p"] - c["b_off"] - q_prev
        u = u_prev + dt * (beta * u_prev - c["omega"] * v_prev + current)
        v = v_prev + dt * (c["omega"] * u_prev + beta * v_prev)
        return u, v

    def jacobians(
        self, current: Tensor, state: State, spike_prev: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        u_prev, v_prev, q_prev = state
        dt, c = self.dt, coeffs
        u, v = self._oscillate(current, u_prev, v_prev, q_prev, c)
        psi = SURROGATES[self.surrogate](u - self.thr - q_prev)
        if self.use_exponential:
            r = torch.exp(dt * (-c["b_off"] - q_prev))
            dt_re, dt_im = dt * (u - dt * current), dt * v
            r_cos, r_sin = r * c["cos"], r * c["sin"]
            row_u = [r_cos, -r_sin, -dt_re]
            row_v = [r_sin, r_cos, -dt_im]
            k_omega = [-dt_im, dt_re]
            k_b = [-dt_re, -dt_im]
        else:
            diag = 1.0 + dt * (c["p"] - c["b_off"] - q_prev)
            dt_omega = dt * c["omega"]
            row_u = [diag, -dt_omega, -dt * u_prev]
            row_v = [dt_omega, diag, -dt * v_prev]
            k_omega = [dt * (c["dp"] * u_prev - v_prev), dt * (u_prev + c["dp"] * v_prev)]
            k_b = [row_u[2], row_v[2]]
        row_q = [psi * row_u[0], psi * row_u[1], _Q_DECAY + psi * (row_u[2] - 1.0)]
        k_omega = [k * c["domega"] for k in k_omega]
        k_b = [k * c["db"] for k in k_b]
        return StepJacobians(
            A=stack_matrix([row_u, row_v, row_q], u),
            c=stack_vector([dt, 0.0, psi * dt], u),
            K=stack_matrix(
                [[k_omega[0], k_omega[1], psi * k_omega[0]], [k_b[0], k_b[1], psi * k_b[0]]], u
            ),
            dz_ds=stack_vector([psi, 0.0, -psi], u),
        )

    def constrain_(self, params: Params) -> None:
        if self.exponential_omega:
            params["omega"].clamp_(-10.0, math.log(math.pi / self.dt))
