"""The contract every neuron model implements (hypr.md §2).

A model is a dataclass of fixed hyperparameters. Trainable per-neuron parameters live outside
it, in a ``dict[name, Tensor (N,)]`` owned by the layer; the model turns them into step
coefficients (``coefficients``), which the pure ``step`` and ``jacobians`` functions use.

Shapes: ``...`` is any leading shape — (B,) for one step, (B, λ) for a whole subsequence.
The reduced state s has d entries, held as a tuple of d tensors of shape (..., N); the spike
z (..., N) is kept apart from it. ``step`` reads the previous spike z_{t-1}, which HYPR treats
as a constant input (§2.7).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

State = tuple[Tensor, ...]
Params = dict[str, Tensor]
Coefficients = dict[str, Tensor]

FLOAT32_MAX = float(torch.finfo(torch.float32).max)
"""The largest float32 (≈ 3.4e38): networks may compute in float32, so every hyperparameter
must fit."""

TAU_MIN, TAU_MAX = 1e-3, 1e6
"""Allowed time constants τ, in steps. At 1e-3 and below α = exp(−1/τ) is exactly 0 in float32
and float64 (and dα/dτ = α/τ² is 0/0 = NaN once τ² underflows); above 1e6, float32 rounds
1 − α by more than 1 % (and to 0, a neuron deaf to its input, above about 3e7)."""


@dataclass
class StepJacobians:
    """Per-step derivatives of one neuron, evaluated at (I_t, s_{t-1}, z_{t-1}).

    Matrix indices come first, so that ``A[i, j]`` is a contiguous (..., N) tensor (HYPR's scans
    run on these layouts without copies).

    Attributes:
        A: (d, d, ..., N) ∂s_t/∂s_{t-1} with z_{t-1} held constant; A[i, j] = ∂s_i/∂s_j.
        c: (d, ..., N) ∂s_t/∂I_t.
        K: (n_p, d, ..., N) K[k, i] = ∂s_i/∂p_k for each raw parameter p_k (``param_names``).
        dz_ds: (d, ..., N) the spike's derivative w.r.t. the new state s_t used to turn
            dL/dz_t into dL/ds_t (hand-written per model, §2).
    """

    A: Tensor
    c: Tensor
    K: Tensor
    dz_ds: Tensor


@dataclass
class NeuronModel(ABC):
    """Hyperparameters of a neuron model plus its pure step and Jacobian functions."""

    name: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]]
    param_names: ClassVar[tuple[str, ...]]
    spiking: ClassVar[bool] = True
    current_bias: ClassVar[bool] = True
    """Whether layers of this model add a trainable bias to the input current (False where
    the device has no current bias: the layer's bias stays 0 and frozen)."""
    integer_dynamics: ClassVar[bool] = False
    """Whether ``step`` reproduces a device's integer arithmetic exactly (which float64
    networks guarantee)."""

    @property
    def state_size(self) -> int:
        """d, the number of reduced state entries."""
        return len(self.state_names)

    def options(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (for configs and run files)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @abstractmethod
    def init_params(
        self, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Params:
        """Draw the raw trainable parameters, each of shape (size,)."""

    @abstractmethod
    def coefficients(self, params: Params) -> Coefficients:
        """Differentiable step coefficients (decay factors, ...) from the raw parameters."""

    @abstractmethod
    def step(
        self, current: Tensor, state: State, spike: Tensor, coeffs: Coefficients
    ) -> tuple[State, Tensor]:
        """One time step: (I_t, s_{t-1}, z_{t-1}) -> (s_t, z_t). All tensors (..., N)."""

    @abstractmethod
    def jacobians(
        self, current: Tensor, state: State, spike: Tensor, coeffs: Coefficients
    ) -> StepJacobians:
        """Closed-form Jacobians of ``step`` at (I_t, s_{t-1}, z_{t-1}); see StepJacobians."""

    def constrain_(self, params: Params) -> None:
        """Project the raw parameters onto their allowed set, in place (after optimizer steps)."""

    def initial_state(self, shape: tuple[int, ...], like: Tensor) -> tuple[State, Tensor]:
        """All-zero state and spike of ``shape`` (..., N), dtype and device taken from ``like``."""
        zeros = like.new_zeros(shape)
        return tuple(zeros.clone() for _ in self.state_names), zeros.clone()


def check_number(
    name: str, value: float, low: float = -math.inf, high: float = math.inf, *, above: bool = False
) -> None:
    """Refuse (ValueError) a ``value`` that is not finite in float32 or lies outside
    [low, high] — outside (low, high] with ``above``. ``name`` is the option's name."""
    problem = _problem(value, low, high, above)
    if problem is not None:
        raise ValueError(f"{name}={value!r} must {problem}")


def check_range(
    name: str,
    value: tuple[float, float],
    low: float = -math.inf,
    high: float = math.inf,
    *,
    above: bool = False,
) -> None:
    """Refuse (ValueError) a pair (first, second) unless first <= second and both pass
    ``check_number(name, ·, low, high, above=above)``."""
    for end in value:
        problem = _problem(end, low, high, above)
        if problem is not None:
            raise ValueError(f"{name}={value!r}: both ends must {problem}")
    first, second = value
    if first > second:
        raise ValueError(f"{name}={value!r} must be ordered: low <= high")


def _problem(value: float, low: float, high: float, above: bool) -> str | None:
    """What ``value`` violates, as the end of a sentence, or None if it is allowed."""
    if not abs(value) <= FLOAT32_MAX:  # also NaN
        return f"be finite and at most {FLOAT32_MAX:.3g} in magnitude (float32)"
    if (value > low if above else value >= low) and value <= high:
        return None
    bracket = "(" if above else "["
    if high == math.inf:
        return f"be {'>' if above else '>='} {low:g}"
    return f"lie in {bracket}{low:g}, {high:g}]"


def uniform(
    size: int, low: float, high: float, generator: torch.Generator, dtype: torch.dtype
) -> Tensor:
    """(size,) samples of U(low, high), drawn in float64 so float32/float64 runs agree."""
    sample = torch.rand(size, generator=generator, dtype=torch.float64)
    return (low + (high - low) * sample).to(dtype)


def normal(
    size: int, mean: float, std: float, generator: torch.Generator, dtype: torch.dtype
) -> Tensor:
    """(size,) samples of N(mean, std²), drawn in float64."""
    sample = torch.randn(size, generator=generator, dtype=torch.float64)
    return (mean + std * sample).to(dtype)


def stack_matrix(rows: list[list[Tensor | float]], like: Tensor) -> Tensor:
    """Stack a nested list (a × b) of (..., N) tensors or scalars into (a, b, ..., N).

    One flat stack: every entry is copied once (nested stacks would copy twice)."""
    flat = stack_vector([entry for row in rows for entry in row], like)
    return flat.view(len(rows), len(rows[0]), *like.shape)


def stack_vector(entries: list[Tensor | float], like: Tensor) -> Tensor:
    """Stack d (..., N) tensors or scalars into (d, ..., N)."""
    return torch.stack([_full(entry, like) for entry in entries])


def _full(entry: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(entry, Tensor):
        return entry.expand_as(like) if entry.shape != like.shape else entry
    return torch.full_like(like, float(entry))
