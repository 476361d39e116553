"""Analog matrix-vector multiplication on crossbar tiles (spec B4).

y = ADC( DAC(x) · Gᵀ + N(0, σ_out) ) per tile, partial sums of tiles added digitally. Inputs
are scaled per sample by their largest magnitude before the DAC ("abs-max" input management) and
the scale is restored after the ADC, so the DAC always uses its full range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwloop.quantize import top_level
from simulators.pcm.normals import NormalSource


@dataclass(frozen=True)
class AnalogPeriphery:
    """Tile size and converters.

    Attributes:
        tile: rows and columns of one crossbar (256 on IBM HERMES).
        dac_bits: input DAC resolution (signed, inputs in [−1, 1]).
        adc_bits: output ADC resolution (signed, outputs in [−output_bound, output_bound]).
        output_bound: ADC range in units of one fully-on device times a full input.
        output_noise: σ of additive output noise in the same units (aihwkit default 0.06).
    """

    tile: int = 256
    dac_bits: int = 8
    adc_bits: int = 8
    output_bound: float = 12.0
    output_noise: float = 0.06


def quantize_signed(values: np.ndarray, bound: float, bits: int) -> np.ndarray:
    """Clip to ±bound and round to the 2^(bits−1) − 1 steps per sign of a signed converter."""
    steps = top_level(bits)
    resolution = bound / steps
    return np.rint(np.clip(values, -bound, bound) / resolution) * resolution


def analog_mvm(
    inputs: np.ndarray, conductances: np.ndarray, periphery: AnalogPeriphery,
    rng: NormalSource,
) -> np.ndarray:
    """inputs (B, in) times normalised conductance differences (out, in), |g| ≤ ~1 → (B, out).

    The product is formed tile by tile (``tile`` inputs × ``tile`` outputs); each tile's
    output gets its own noise and ADC, and the tiles' results are summed digitally.
    """
    peak = np.abs(inputs).max(axis=1, keepdims=True)
    peak = np.where(peak > 0, peak, 1.0)
    scaled = quantize_signed(inputs / peak, 1.0, periphery.dac_bits)
    outputs = np.zeros((inputs.shape[0], conductances.shape[0]))
    size = periphery.tile
    for row in range(0, conductances.shape[0], size):
        for col in range(0, conductances.shape[1], size):
            block = conductances[row:row + size, col:col + size]
            partial = scaled[:, col:col + size] @ block.T
            if periphery.output_noise > 0:
                partial = partial + periphery.output_noise * rng.standard_normal(partial.shape)
            outputs[:, row:row + size] += quantize_signed(
                partial, periphery.output_bound, periphery.adc_bits
            )
    return outputs * peak
