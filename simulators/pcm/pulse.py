"""Pulse-level PCM model (Nandakumar et al., J. Appl. Phys. 124, 152135, 2018), as used for
on-chip training by Demirag et al. 2021: gradual SET, abrupt RESET, noisy reads.

Conductances in µS. Each SET pulse, the n-th since the last RESET (n = 0 for the first), adds

    ΔG ~ N(μ, σ),  μ = m1·G + c1 + A1·e^(−n/a),  σ = m2·G + c2 + A2·e^(−n/a)

and G is clipped to [g_floor, g_ceiling]; the negative m1 makes potentiation saturate (near
(c1)/(−m1) ≈ 10.5 µS for large n). RESET puts G at N(0.1, 0.01) µS. A read sees
G + N(0, m3·G + c3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.pcm.normals import NormalSource


@dataclass(frozen=True)
class PulseModel:
    """Constants of the gradual-SET / abrupt-RESET model (µS; ``a`` in pulses)."""

    a: float = 2.6
    m1: float = -0.084
    c1: float = 0.880
    A1: float = 1.40
    m2: float = 0.091
    c2: float = 0.260
    A2: float = 2.15
    m3: float = 0.03
    c3: float = 0.13
    reset_mean: float = 0.1
    reset_std: float = 0.01
    g_floor: float = 0.1
    g_ceiling: float = 12.0
    noise_scale: float = 1.0

    def set_pulse(
        self, g: np.ndarray, pulses_since_reset: np.ndarray, rng: NormalSource
    ) -> np.ndarray:
        """The conductance after one SET pulse on each device (same shape as ``g``)."""
        decay = np.exp(-pulses_since_reset / self.a)
        mean = self.m1 * g + self.c1 + self.A1 * decay
        std = self.noise_scale * (self.m2 * g + self.c2 + self.A2 * decay)
        step = mean + std * rng.standard_normal(g.shape)
        return np.clip(g + step, self.g_floor, self.g_ceiling)

    def reset(self, shape: tuple[int, ...], rng: NormalSource) -> np.ndarray:
        """Conductances right after a RESET pulse."""
        g = self.reset_mean + self.noise_scale * self.reset_std * rng.standard_normal(shape)
        return np.clip(g, 0.01, self.g_ceiling)

    def read(self, g: np.ndarray, rng: NormalSource) -> np.ndarray:
        """One noisy read of devices at conductance ``g``."""
        std = self.noise_scale * (self.m3 * g + self.c3)
        return g + std * rng.standard_normal(g.shape)

    @staticmethod
    def pulse_potential(g: np.ndarray) -> np.ndarray:
        """P(G) = 0.027 G³ − 0.15 G² + 0.81 G: mean pulses from the floor to G (planning)."""
        return 0.027 * g**3 - 0.15 * g**2 + 0.81 * g
