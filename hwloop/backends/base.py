"""The contract every device backend implements.

A backend holds the synaptic weight matrices of a network, layer by layer, in whatever form the
device stores them. The host programs a layer with float weights (the backend quantizes them
as its device would), reads back what the device holds now (with its noise), and may ask the
device to advance its clock (drift) or to run the network itself. A bit-accurate simulator and a
real board implement the same class; the session never knows which it talks to.

Weights use the (out, in) layout as numpy float64 arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Capabilities:
    """What a backend can hold and do.

    Attributes:
        name: registry name (``ideal``, ``pcm``, ...).
        weight_format: ``float``, ``levels`` (symmetric integer levels × a scale),
            ``conductance_pair`` (a differential pair of analog devices) or ``mantissa_exponent``.
        bits: weight bits (None for float).
        levels: distinct weight values per synapse (None for float).
        tile_size: (rows, cols) of one physical array, or None if unbounded.
        neurons: neuron models ``run`` supports on the device (empty: host-side forward only).
        time: whether ``advance_time`` changes what the device holds (drift).
        pulses: whether ``pulse`` (incremental updates) is supported.
        mvm: whether ``mvm`` computes products with the held weights on the device (a crossbar).
    """

    name: str
    weight_format: str
    bits: int | None = None
    levels: int | None = None
    tile_size: tuple[int, int] | None = None
    neurons: tuple[str, ...] = ()
    time: bool = False
    pulses: bool = False
    mvm: bool = False


@dataclass
class WriteReport:
    """What one ``program`` call did to one layer.

    Attributes:
        layer: the layer's name.
        cells_programmed: synapses whose stored value was (re)written.
        pulses: programming pulses applied (0 for backends without pulses).
        iterations: program-and-verify iterations (max over cells; 1 for one-shot writes).
        failures: cells that did not reach their target (reported, never hidden).
        write_error: mean |target − read-back| in weight units, right after programming.
        device_seconds: simulated device time the write took (s).
        wall_seconds: host wall-clock time of the call (s).
    """

    layer: str
    cells_programmed: int
    pulses: int = 0
    iterations: int = 1
    failures: int = 0
    write_error: float = 0.0
    device_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass
class DeviceRun:
    """A forward pass on the device: hidden spikes per layer (B, T, N), readout (B, T, K)."""

    spikes: list[np.ndarray]
    outputs: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)


class Backend(ABC):
    """One device (or simulator) holding named weight matrices."""

    name: str = ""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> "Backend":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect to the device (a no-op for in-process simulators)."""

    def close(self) -> None:
        """Release the device."""

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    def declare(self, layer: str, shape: tuple[int, int]) -> None:
        """Reserve storage for a layer of ``shape`` (out, in) before it is first programmed."""
        self.shapes[layer] = shape

    @abstractmethod
    def program(self, layer: str, weights: np.ndarray) -> WriteReport:
        """Write float weights (out, in) to ``layer``; the device state is unchanged on error."""

    @abstractmethod
    def read(self, layer: str) -> np.ndarray:
        """What the device holds for ``layer`` now, in weight units, with its noise."""

    def weight_step(self, layer: str) -> np.ndarray | None:
        """Weight per level of ``layer``, (1, 1) or (out, 1); None for a float device."""
        return None

    def pulse(self, layer: str, steps: np.ndarray) -> WriteReport:
        """Incremental update: move each synapse by ``steps`` (out, in) device increments."""
        raise NotImplementedError(f"backend {self.name!r} does not support pulse updates")

    def refresh(self, layer: str) -> WriteReport | None:
        """Re-write synapses whose devices ran out of range (None: nothing to do on this device)."""
        return None

    def mvm(self, layer: str, inputs: np.ndarray) -> np.ndarray:
        """Products with what the device holds: inputs (B, in) → outputs (B, out) = inputs·Wᵀ as
        the device computes them (only where ``capabilities().mvm``)."""
        raise NotImplementedError(f"backend {self.name!r} cannot compute products on the device")

    def check_inputs(self, layer: str, inputs: np.ndarray) -> np.ndarray:
        """Validate ``mvm`` inputs for ``layer``: declared, (batch, in), finite (ValueError)."""
        array = np.asarray(inputs, dtype=np.float64)
        width = self._declared(layer)[1]
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(f"inputs for layer {layer!r} must be (batch, {width}), "
                             f"got {array.shape}")
        return _finite(array, f"inputs for layer {layer!r}")

    def run(self, inputs: np.ndarray) -> DeviceRun:
        """Forward pass on the device (only where ``capabilities().neurons`` is non-empty)."""
        raise NotImplementedError(f"backend {self.name!r} cannot run networks on the device")

    def reset(self) -> None:
        """Forget every layer."""
        self.shapes.clear()

    def advance_time(self, seconds: float) -> None:
        """Let ``seconds`` pass on the device clock (drift); a no-op for timeless devices."""
        if seconds < 0:
            raise ValueError(f"time cannot run backwards (seconds={seconds})")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The device's full state, enough to continue bit-identically after load_state_dict."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def check_weights(self, layer: str, weights: np.ndarray) -> np.ndarray:
        """Validate weights for ``layer``: declared, matching shape, finite (ValueError)."""
        array = self._matching(layer, np.asarray(weights, dtype=np.float64), "weights")
        return _finite(array, f"weights for layer {layer!r}")

    def check_steps(self, layer: str, steps: np.ndarray) -> np.ndarray:
        """Validate integer pulse steps for ``layer``: declared, matching shape (ValueError)."""
        array = self._matching(layer, np.asarray(steps), "steps")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"steps for layer {layer!r} must be integers, got {array.dtype}")
        return array.astype(np.int64)

    def _declared(self, layer: str) -> tuple[int, int]:
        if layer not in self.shapes:
            raise ValueError(f"layer {layer!r} was not declared on backend {self.name!r}")
        return self.shapes[layer]

    def _matching(self, layer: str, array: np.ndarray, what: str) -> np.ndarray:
        shape = self._declared(layer)
        if array.shape != shape:
            raise ValueError(f"{what} for layer {layer!r} have shape {array.shape}, "
                             f"the layer holds {shape}")
        return array


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or inf")
    return array
