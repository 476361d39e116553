"""Random Loihi 2 connections and populations over Lava's legal ranges, shared by the parity
tests (``test_loihi2``, ``test_loihi2_models``, ``test_lava_chip``)."""

from __future__ import annotations

import numpy as np

from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.dense import DenseWeights


def random_dense(rng: np.random.Generator, out: int, into: int, regime: str,
                 ) -> tuple[np.ndarray, DenseWeights]:
    """Raw initial weights (out, into), which Lava preprocesses itself, and what the emulator
    holds: over the legal range with exponents −8…7, all sign modes and 1–8 bits (``wide``),
    moderate (``busy``), or the extremes strongly amplified (``extreme``)."""
    if regime == "extreme":  # the legal extremes, strongly amplified
        raw = rng.choice([-300, -256, -255, 254, 255, 300], size=(out, into))
        return raw, DenseWeights.prepare(raw, 7, 8, "mixed")
    raw = rng.uniform(-300, 300, (out, into))  # floats, some beyond the clip range
    exponent = int(rng.integers(-8, 8)) if regime == "wide" else int(rng.integers(0, 4))
    bits = int(rng.integers(1, 9))
    modes = [None, "mixed", "excitatory"] + (["inhibitory"] if regime == "wide" else [])
    mode = rng.choice(np.array(modes, dtype=object))
    if mode == "excitatory":
        raw = np.abs(raw)
    elif mode == "inhibitory":
        raw = -np.abs(raw)
    return raw, DenseWeights.prepare(raw, exponent, bits, mode)


def fraction(rng: np.random.Generator, high: float = 1.0) -> float:
    """A decay fraction: mostly off the 1/4096 grid, sometimes an edge of the range."""
    if rng.random() < 0.2:
        return float(rng.choice([0.0, 1 / 4096, 4095 / 4096, 1.0]))
    return float(rng.uniform(0.0, high))


def random_atrlif(rng: np.random.Generator, size: int, regime: str) -> AtrlifParameters:
    if regime == "busy":
        deltas = [fraction(rng, 0.5) for _ in range(4)]
        theta_0, theta_step = rng.uniform(0, 100), rng.uniform(0, 30)
        bias_mant, bias_exp = rng.integers(-256, 1024, size), rng.integers(0, 4, size)
    else:
        deltas = [fraction(rng) for _ in range(4)]
        if regime == "extreme":
            deltas[1] = 0.0  # no voltage leak: v runs into saturation
        theta_0, theta_step = rng.uniform(0, 4096), rng.uniform(0, 4096)
        bias_mant, bias_exp = rng.integers(-4096, 4096, size), rng.integers(-7, 8, size)
    return AtrlifParameters(*deltas, float(theta_0), float(theta_step), bias_mant, bias_exp)
