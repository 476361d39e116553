"""Surrogate derivatives psi(x) of the Heaviside spike function and the spike operator.

A spike is emitted when x > 0 (H(0) = 0). Its value is H(x); every derivative of it, in
reverse or forward mode, is psi(x)·dx ("forward gradient injection", hypr.md §2).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

Surrogate = Callable[[Tensor], Tensor]


def slayer(k: float, c: float) -> Surrogate:
    """SLAYER surrogate psi(x) = c·k/2 · exp(−k·|x|); peak c·k/2 at x = 0."""

    def psi(x: Tensor) -> Tensor:
        return (0.5 * c * k) * torch.exp(-k * x.abs())

    return psi


def _normal_pdf(x: Tensor, sigma: float) -> Tensor:
    return torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


def double_gaussian(x: Tensor) -> Tensor:
    """psi(x) = 0.5·[1.15·N(x; 0, 0.5) − 0.30·N(x; 0, 3)]; peak ≈ 0.43884 (BRF default)."""
    return 0.5 * (1.15 * _normal_pdf(x, 0.5) - 0.30 * _normal_pdf(x, 3.0))


def straight_through(x: Tensor) -> Tensor:
    """psi(x) = 1."""
    return torch.ones_like(x)


SURROGATES: dict[str, Surrogate] = {
    "slayer": slayer(5.0, 0.4),
    "slayer_wide": slayer(1.0, 0.4),
    "double_gaussian": double_gaussian,
    "straight_through": straight_through,
}


def spike(x: Tensor, psi: Surrogate) -> Tensor:
    """H(x), whose derivative is psi(x) (forward gradient injection).

    Under ``torch.no_grad`` (HYPR's forward stage) psi is not evaluated at all.
    """
    fired = (x > 0).to(x.dtype)
    if not torch.is_grad_enabled():
        return fired
    return fired + (x - x.detach()) * psi(x.detach())
