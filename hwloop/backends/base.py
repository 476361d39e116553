"""The contract every device backend implements.

A backend holds the synaptic weight matrices of a network, layer by layer, in whatever form the
device stores them. The host programs a layer with float weights (the backend quantizes them
as its device would), reads back what the device holds now (with its noise), and may ask the
device to advance its clock (drift) or to run the network itself. A bit-accurate simulator and a
real board implement the same class; the session never knows which it talks to.

Weights use the (out, in) layout as numpy float64 arrays.

Backends check their own options with ``check_integer``, ``check_number``, ``check_flag`` and
``check_level_bits`` (one-line ValueErrors naming the option, its value and the allowed range);
``open_backend`` turns those into ``UserError``. docs/backends.md lists every option.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the largest range_factor a quantizing backend accepts: a scale this far beyond the initial
# weights leaves them all at level 0
MAX_RANGE_FACTOR = 100.0


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
        compensation: whether reads and products can apply drift compensation
            (``set_compensation``).
        learners: learning rules the device runs itself (``learn``; e.g. ``eprop`` on
            SpiNNaker 2's processing elements).
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
    compensation: bool = False
    learners: tuple[str, ...] = ()


@dataclass
class WriteReport:
    """What one ``program`` call did to one layer.

    Attributes:
        layer: the layer's name.
        cells_programmed: synapses whose stored value was (re)written.
        pulses: programming pulses applied (0 for backends without pulses).
        iterations: program-and-verify iterations (max over cells; 1 for one-shot writes).
        failures: cells that did not reach their target (reported, never hidden).
        clipped: cells whose target lay beyond the device's range and were written at the
            range's end (reported, never wrapped).
        write_error: mean |target − read-back| in weight units, right after programming.
        device_seconds: simulated device time the write took (s).
        wall_seconds: host wall-clock time of the call (s).
        sram_bytes: bytes of device memory the layer's weights take (0 where not modelled).
    """

    layer: str
    cells_programmed: int
    pulses: int = 0
    iterations: int = 1
    failures: int = 0
    clipped: int = 0
    write_error: float = 0.0
    device_seconds: float = 0.0
    wall_seconds: float = 0.0
    sram_bytes: int = 0


@dataclass(frozen=True)
class NeuronGroup:
    """One population of neurons a device runs (``Backend.declare_network``).

    Attributes:
        layer: the layer's name, the prefix of its weights (``hidden.0``, ..., ``readout``).
        model: the neuron model's registry name (``loihi_lif``, ``loihi_li``, ...).
        options: the model's hyperparameters (``NeuronModel.options()``).
        size: neurons in the population.
        recurrence: ``none``, ``full`` (a ``<layer>.w_rec`` matrix) or ``self``.
        skip: whether the layer also receives the spikes of the layer two below.
    """

    layer: str
    model: str
    options: dict[str, Any]
    size: int
    recurrence: str = "none"
    skip: bool = False


@dataclass
class DeviceRun:
    """A forward pass on the device, aligned step for step with the host's forward pass:
    hidden spikes per layer (B, T, N), readout potentials (B, T, K); ``loss`` is the mean
    loss of the batch where the device learned from it (``learn``)."""

    spikes: list[np.ndarray]
    outputs: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)
    loss: float | None = None


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
    def capabilities(self) -> Capabilities:
        """What this backend, with its options, can hold and do."""

    def declare(
        self, layer: str, shape: tuple[int, int], step: np.ndarray | None = None
    ) -> None:
        """Reserve storage for a layer of ``shape`` (out, in) before it is first programmed.

        ``step`` (weight per level, (1, 1) or (out, 1), positive and finite) tells a quantizing
        backend to use this scale for the layer instead of deriving one at the first write, so
        trained levels land on a fresh device exactly; float backends check it and ignore it.
        A step that differs from the one a programmed layer holds is refused. Bad shapes or
        steps raise ValueError and leave the backend unchanged.
        """
        out, width = _checked_shape(layer, shape)
        if step is not None:
            self._fix_step(layer, _checked_step(layer, (out, width), step))
        self.shapes[layer] = (out, width)

    def _fix_step(self, layer: str, step: np.ndarray) -> None:
        """Use ``step`` (checked, float64) as the weight per level of ``layer`` from its first
        write on; part of the state. A no-op for float backends."""

    def _refuse_other_step(self, layer: str, held: np.ndarray, step: np.ndarray) -> None:
        """ValueError if ``layer``, programmed at step ``held``, is declared with another."""
        if not np.array_equal(held, step):
            raise ValueError(f"layer {layer!r} already holds weights at another step; the step "
                             "is fixed at the first write (reset the backend to change it)")

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

    def set_compensation(self, on: bool) -> None:
        """Switch drift compensation of ``read`` and ``mvm`` on or off (only where
        ``capabilities().compensation``). A setting like the options: not part of the state."""
        raise NotImplementedError(f"backend {self.name!r} has no drift compensation")

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

    def declare_network(self, groups: list[NeuronGroup]) -> None:
        """Tell a device that runs networks (``capabilities().neurons``) its populations, in
        order: the hidden layers bottom-up, then the readout. Raises ValueError (device
        unchanged) for a model, recurrence or layout it cannot run."""
        raise NotImplementedError(f"backend {self.name!r} cannot run networks on the device")

    def run(self, inputs: np.ndarray) -> DeviceRun:
        """Forward pass on the device of the declared network with the weights it holds:
        inputs (B, T, M) → DeviceRun (only where ``capabilities().neurons`` is non-empty)."""
        raise NotImplementedError(f"backend {self.name!r} cannot run networks on the device")

    def learn(self, inputs: np.ndarray, labels: np.ndarray, ignore_first: int,
              learning_rate: float) -> DeviceRun:
        """Train the declared network on the device with its own learning rule (only where
        ``capabilities().learners``): inputs (B, T, M), labels (B,) class indices, the loss
        over steps from ``ignore_first`` on. Returns the device's forward pass of the batch
        with its mean loss; afterwards ``read`` gives the weights the device learned."""
        raise NotImplementedError(f"backend {self.name!r} cannot learn on the device")

    def reset(self) -> None:
        """Forget every layer."""
        self.shapes.clear()

    def advance_time(self, seconds: float) -> None:
        """Let ``seconds`` (finite, ≥ 0) pass on the device clock (drift); a no-op for timeless
        devices. NaN, inf and negative times raise ValueError."""
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be a finite number, got {seconds}")
        if seconds < 0:
            raise ValueError(f"time cannot run backwards (seconds={seconds})")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The device's full state, enough to continue bit-identically after load_state_dict."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state ``state_dict`` returned (same options; bit-identical afterwards)."""

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


def check_integer(name: str, value: int, low: int, high: int) -> int:
    """``value`` if it is an integer in low..high, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
        low <= value <= high
    ):
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def check_number(
    name: str, value: float, low: float, high: float, *, open_low: bool = False,
    open_high: bool = False, unit: str = "",
) -> float:
    """``value`` as a float if it lies in [low, high] (an end excluded with ``open_low`` or
    ``open_high``), else a ValueError naming ``name``, the value and the range (in ``unit``).
    The ends are finite, so NaN and inf never lie in the range."""
    inside = (
        isinstance(value, numbers.Real) and not isinstance(value, bool)
        and (low < value if open_low else low <= value)
        and (value < high if open_high else value <= high)
    )
    if not inside:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{name} must lie in {left}{low:g}, {high:g}{right}"
                         f"{' ' + unit if unit else ''}, got {value!r}")
    return float(value)


def check_flag(name: str, value: bool) -> bool:
    """``value`` if it is a bool, else a ValueError naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_level_bits(bits: int) -> int:
    """Weight bits of a device holding symmetric levels: 2..8 (1 bit holds only level 0)."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 2 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8, and a device needs bits >= 2 (1 bit holds "
                         f"only level 0): allowed 2..8, got {bits!r}")
    return int(bits)


def _checked_shape(layer: str, shape: tuple[int, int]) -> tuple[int, int]:
    """``shape`` as (out, in) ints ≥ 1, else ValueError."""
    if len(shape) != 2 or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in shape
    ):
        raise ValueError(f"layer {layer!r} needs a shape (out, in) of two integers >= 1, "
                         f"got {shape!r}")
    return int(shape[0]), int(shape[1])


def _checked_step(layer: str, shape: tuple[int, int], step: np.ndarray) -> np.ndarray:
    """``step`` as a float64 copy, (1, 1) or (out, 1), positive and finite, else ValueError."""
    array = np.array(step, dtype=np.float64)
    if array.shape not in ((1, 1), (shape[0], 1)):
        raise ValueError(f"step for layer {layer!r} must be (1, 1) or ({shape[0]}, 1), "
                         f"got {array.shape}")
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"step for layer {layer!r} must be positive and finite")
    return array


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or inf")
    return array
