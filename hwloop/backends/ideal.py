"""The ideal backend: float weights, stored and read back exactly. The reference every test
compares against (a session with it reproduces plain training bit for bit)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hwloop.backends.base import Backend, Capabilities, WriteReport


class IdealBackend(Backend):
    """Holds float64 copies of the weights; no quantization, no noise, no time."""

    name = "ideal"

    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[str, np.ndarray] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(name=self.name, weight_format="float")

    def program(self, layer: str, weights: np.ndarray) -> WriteReport:
        start = time.perf_counter()
        array = self.check_weights(layer, weights)
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

    def reset(self) -> None:
        super().reset()
        self.weights.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "weights": {k: v.copy() for k, v in self.weights.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shapes = {k: (int(v[0]), int(v[1])) for k, v in state["shapes"].items()}
        self.weights = {k: np.array(v, dtype=np.float64) for k, v in state["weights"].items()}
