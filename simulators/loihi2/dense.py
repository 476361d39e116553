"""Lava 0.10.0's fixed-point ``Dense`` connection (spec §3.2): preprocessing and one step.

``DenseWeights.prepare`` does what Lava does to the initial weights on the first step: the sign
mode is taken from the weights unless given, then ``hwloop.quantize.lava_dense_weights`` clips
and truncates them to the legal grid. ``DenseKernel`` (and ``dense_step`` for one step) turns
presynaptic outputs into the activations delivered one step later: the column sum (binary
inputs) or the matrix-vector product (graded payloads) as an exact float matrix product, then
the weight exponent applied to the sum with a floor shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hwloop.quantize import SIGN_MODES, lava_dense_weights
from simulators.loihi2.fixed_point import shift

EXACT_FLOAT32 = 2**24
"""float32 adds integers exactly while every partial sum stays below 2^24 (spec B9)."""
INT32_LIMIT = 2**31
"""Lava accumulates in int32; sums beyond it would wrap there, so they are refused here."""


def sign_mode_of(weights: np.ndarray) -> str:
    """Lava's choice when no sign mode is given: excitatory if no weight is negative (an
    all-zero matrix too), inhibitory if none is positive, else mixed."""
    if weights.min(initial=0) >= 0:
        return "excitatory"
    if weights.max(initial=0) <= 0:
        return "inhibitory"
    return "mixed"


@dataclass(frozen=True)
class DenseWeights:
    """A Dense connection as the device holds it.

    Attributes:
        weights: (out, in) int64 weights on the legal grid of ``sign_mode`` and
            ``num_weight_bits`` (what Lava's Dense uses after its first step).
        weight_exp: the shared exponent; the activation is (Σ w·x)·2^weight_exp.
        num_weight_bits: 1..8 mantissa bits.
        sign_mode: ``mixed``, ``excitatory`` or ``inhibitory``.
        graded: inputs carry integer payloads (Lava's num_message_bits > 0) instead of 0/1.
    """

    weights: np.ndarray
    weight_exp: int = 0
    num_weight_bits: int = 8
    sign_mode: str = "mixed"
    graded: bool = False

    @classmethod
    def prepare(
        cls,
        weights: np.ndarray,
        weight_exp: int = 0,
        num_weight_bits: int = 8,
        sign_mode: str | None = None,
        graded: bool = False,
    ) -> "DenseWeights":
        """Preprocess initial weights (any numbers) as Lava's Dense does on its first step."""
        raw = np.trunc(np.asarray(weights, dtype=np.float64))
        mode = sign_mode_of(raw) if sign_mode is None else sign_mode
        if mode not in SIGN_MODES:
            raise ValueError(f"unknown sign mode {mode!r} (choose from: {', '.join(SIGN_MODES)})")
        return cls(lava_dense_weights(raw, num_weight_bits, mode), int(weight_exp),
                   int(num_weight_bits), mode, bool(graded))


class DenseKernel:
    """A Dense connection ready to run: int64 weights (out, in) held in the float type where
    their synaptic sums are exact, its exponent, and whether its sums need Lava's int32
    check (float32 sums are provably below 2^24; float64 ones are checked)."""

    def __init__(self, weights: Tensor, weight_exp: int, graded: bool = False) -> None:
        dtype = _sum_dtype(weights, graded)
        self.weights, self.exponent, self.graded = weights.to(dtype), weight_exp, graded
        self.checked = dtype == torch.float64

    @classmethod
    def of(cls, dense: DenseWeights) -> "DenseKernel":
        """The kernel of what a Dense holds."""
        return cls(torch.as_tensor(dense.weights, dtype=torch.int64), dense.weight_exp,
                   dense.graded)

    def activations(self, outputs: Tensor) -> Tensor:
        """The activations (..., out) int64 presynaptic ``outputs`` (..., in) produce (0/1
        spikes, or integer payloads when graded): the sum, then the exponent's shift."""
        payload = outputs if self.graded else (outputs != 0)
        total = payload.to(self.weights.dtype) @ self.weights.T
        if self.checked and total.numel() and float(total.abs().max()) >= INT32_LIMIT:
            raise ValueError("a synaptic sum reached 2^31, where Lava's int32 accumulator wraps")
        return shift(total.to(torch.int64), self.exponent)


def dense_step(weights: Tensor, weight_exp: int, inputs: Tensor, graded: bool = False) -> Tensor:
    """The activation (B, out) int64 that presynaptic outputs ``inputs`` (B, in) produce
    through int64 ``weights`` (out, in); delivered one step later."""
    return DenseKernel(weights, weight_exp, graded).activations(inputs)


def _sum_dtype(weights: Tensor, graded: bool) -> torch.dtype:
    """float32 where every partial sum of 0/1 inputs is provably below 2^24 (the largest row
    sum of |w|), float64 otherwise (graded payloads are unbounded; their sums are checked)."""
    if graded or weights.numel() == 0:
        return torch.float64
    bound = int(weights.abs().sum(1).max())
    return torch.float32 if bound < EXACT_FLOAT32 else torch.float64
