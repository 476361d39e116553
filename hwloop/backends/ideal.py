"""The ideal backend: weights stored and read back exactly. The reference every test compares
against: without ``bits`` it holds float64 weights (a session with it reproduces plain training
bit for bit); with ``bits`` it holds exact symmetric levels, the noise-free picture of a
quantized device."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hwloop.backends.base import (
    Backend,
    Capabilities,
    MAX_RANGE_FACTOR,
    WriteReport,
    check_flag,
    check_level_bits,
    check_number,
)
from hwloop.quantize import DEFAULT_RANGE_FACTOR, level_scale, symmetric_levels, top_level


class IdealBackend(Backend):
    """Float64 copies of the weights, or exact levels × a per-layer scale; no noise, no time.

    Args:
        bits: None for float weights, or 2..8 for 2^(bits−1) − 1 levels per sign.
        range_factor: in (0, 100]; with bits, the first write of a layer sets
            scale = range_factor·max|W|/L (3 by default: trained weights grow a few times beyond
            their initial range), unless ``declare`` gave the layer a step.
        per_channel: with bits, one scale per output row.

    docs/backends.md lists the options with their ranges.
    """

    name = "ideal"

    def __init__(
        self,
        bits: int | None = None,
        range_factor: float = DEFAULT_RANGE_FACTOR,
        per_channel: bool = False,
    ) -> None:
        super().__init__()
        self.bits = None if bits is None else check_level_bits(bits)
        self.range_factor = check_number("range_factor", range_factor, 0, MAX_RANGE_FACTOR,
                                         open_low=True)
        self.per_channel = check_flag("per_channel", per_channel)
        self.weights: dict[str, np.ndarray] = {}
        self.scales: dict[str, np.ndarray] = {}

    def capabilities(self) -> Capabilities:
        if self.bits is None:
            return Capabilities(name=self.name, weight_format="float", mvm=True)
        top = top_level(self.bits)
        return Capabilities(name=self.name, weight_format="levels", bits=self.bits,
                            levels=2 * top + 1, pulses=True, mvm=True)

    def _fix_step(self, layer: str, step: np.ndarray) -> None:
        if self.bits is None:
            return
        if layer in self.weights:
            self._refuse_other_step(layer, self.scales[layer], step)
        else:
            self.scales[layer] = step

    def program(self, layer: str, weights: np.ndarray) -> WriteReport:
        start = time.perf_counter()
        array = self.check_weights(layer, weights)
        if self.bits is not None:
            if layer not in self.scales:
                self.scales[layer] = level_scale(array, self.bits, range_factor=self.range_factor,
                                                 per_channel=self.per_channel)
            levels, scale = symmetric_levels(array, self.bits, scale=self.scales[layer])
            array = levels * scale
        return self._store(layer, array, start)

    def pulse(self, layer: str, steps: np.ndarray) -> WriteReport:
        """Move each synapse by ``steps`` levels (clipped to the level range); needs bits."""
        if self.bits is None:
            raise NotImplementedError("the float ideal backend has no levels to pulse; give bits")
        start = time.perf_counter()
        steps = self.check_steps(layer, steps)
        scale = self.scales[layer]
        top = top_level(self.bits)
        levels = np.clip(np.rint(self.read(layer) / scale) + steps, -top, top)
        return self._store(layer, levels * scale, start)

    def weight_step(self, layer: str) -> np.ndarray | None:
        return None if self.bits is None else self.scales[layer].copy()

    def _store(self, layer: str, array: np.ndarray, start: float) -> WriteReport:
        previous = self.weights.get(layer)
        changed = array.size if previous is None else int((previous != array).sum())
        self.weights[layer] = array.copy()
        return WriteReport(
            layer=layer, cells_programmed=changed, wall_seconds=time.perf_counter() - start
        )

    def read(self, layer: str) -> np.ndarray:
        if layer not in self.weights:
            raise ValueError(f"layer {layer!r} has not been programmed on backend 'ideal'")
        return self.weights[layer].copy()

    def mvm(self, layer: str, inputs: np.ndarray) -> np.ndarray:
        """Exact float64 products inputs (B, in) · Wᵀ → (B, out)."""
        inputs = self.check_inputs(layer, inputs)
        if layer not in self.weights:
            raise ValueError(f"layer {layer!r} has not been programmed on backend 'ideal'")
        return inputs @ self.weights[layer].T

    def reset(self) -> None:
        super().reset()
        self.weights.clear()
        self.scales.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "weights": {k: v.copy() for k, v in self.weights.items()},
            "scales": {k: v.copy() for k, v in self.scales.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shapes = {k: (int(v[0]), int(v[1])) for k, v in state["shapes"].items()}
        self.weights = {k: np.array(v, dtype=np.float64) for k, v in state["weights"].items()}
        self.scales = {k: np.array(v, dtype=np.float64) for k, v in state["scales"].items()}
