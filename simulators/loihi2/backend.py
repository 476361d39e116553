"""Loihi 2 behind the backend contract: ``open_backend("loihi2://?bits=8")``, the bit-exact
emulator of Lava 0.10.0's fixed-point Dense, LIF and ATRLIF processes (docs/loihi2.md).

Every weight matrix the host programs becomes one Lava ``Dense`` in the mixed sign mode: an
integer weight W on the legal grid of ``bits`` (multiples of 2^(9 − bits) in
[−256, 256 − 2^(9 − bits)]) and a weight exponent e ∈ 0..7 chosen at the layer's first write
and fixed for the session (Lava's proc_params cannot change at runtime). In host units

    weight = W · 2^e / 4096

(one host weight unit is 4096 activation units; ``hwloop.neurons.loihi`` states the units of
the neurons). Non-negative exponents keep every Dense activation an exact integer, which the
host's single sum of currents reproduces. A write rounds to the nearest grid value; values
beyond the range are written at its end and counted (``WriteReport.clipped``), never wrapped.

``run`` runs the declared network on the device: hidden layers of Lava's ``LIF``
(``loihi_lif``) or ``ATRLIF`` (``loihi_atrlif``), a ``LIF`` readout (``loihi_li``), each with the
model's hyperparameters (``population_parameters``). Lava delays every Dense hop by one step, so
the device runs T + L + 1 steps for L hidden layers and ``run`` returns its records aligned with
the host's steps: hidden layer k at device step t + k + 1, the readout at t + L + 1.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hwloop.backends.base import (
    MAX_RANGE_FACTOR,
    Backend,
    Capabilities,
    DeviceRun,
    NeuronGroup,
    WriteReport,
    check_level_bits,
    check_number,
)
from hwloop.neurons.loihi import STATE_UNIT, WEIGHT_UNIT
from hwloop.quantize import DEFAULT_RANGE_FACTOR
from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import (
    LifLayer,
    LifNetwork,
    PopulationParameters,
    Trajectory,
    emulate,
)

HIDDEN_MODELS = ("loihi_lif", "loihi_atrlif")
READOUT_MODELS = ("loihi_li",)
ATRLIF_OPTIONS = ("delta_i", "delta_v", "delta_theta", "delta_r", "theta_0", "theta_step")
"""The ``loihi_atrlif`` hyperparameters, which Lava's ATRLIF takes as they are."""
EXPONENTS = range(0, 8)
"""Weight exponents hwloop uses: 0..7 (Lava's Dense takes negative ones too, but then floors
each connection's sum separately, which a host current cannot reproduce)."""


class Loihi2Backend(Backend):
    """The Loihi 2 emulator: weights as Lava's Dense holds them, networks run in int64 torch.

    Args:
        bits: weight mantissa bits, 2..8 (Dense ``num_weight_bits``; 8 holds the even values
            −256..254; 1 bit would hold only −256 and 0).
        range_factor: in (0, 100]; the first write of a layer picks the smallest exponent whose
            range holds range_factor·max|W| (3 by default: trained weights grow beyond their
            initial range), unless ``declare`` gave the layer a step.
    """

    name = "loihi2"

    def __init__(self, bits: int = 8, range_factor: float = DEFAULT_RANGE_FACTOR) -> None:
        super().__init__()
        self.bits = check_level_bits(bits)
        self.range_factor = check_number("range_factor", range_factor, 0, MAX_RANGE_FACTOR,
                                         open_low=True)
        self.held: dict[str, np.ndarray] = {}
        self.exponents: dict[str, int] = {}
        self.groups: list[NeuronGroup] = []

    def capabilities(self) -> Capabilities:
        return Capabilities(name=self.name, weight_format="mantissa_exponent", bits=self.bits,
                            levels=2**self.bits, neurons=HIDDEN_MODELS + READOUT_MODELS)

    # --- weights --------------------------------------------------------------------------

    @property
    def grid(self) -> int:
        """The spacing of the legal Dense weights: 2^(9 − bits)."""
        return 2 ** (9 - self.bits)

    def level_range(self) -> tuple[int, int]:
        """The lowest and highest weight level (weight = level · grid): −2^(bits−1) and
        2^(bits−1) − 1."""
        return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    def _unit(self, exponent: int) -> float:
        """The host weight of one level at ``exponent``: grid · 2^exponent / 4096."""
        return self.grid * 2.0**exponent / WEIGHT_UNIT

    def _fix_step(self, layer: str, step: np.ndarray) -> None:
        exponent = self._exponent_of_step(layer, step)
        if layer in self.exponents and self.exponents[layer] != exponent:
            self._refuse_other_step(layer, self.weight_step(layer), step)
        self.exponents[layer] = exponent

    def _exponent_of_step(self, layer: str, step: np.ndarray) -> int:
        for exponent in EXPONENTS:
            if step.shape == (1, 1) and float(step[0, 0]) == self._unit(exponent):
                return exponent
        raise ValueError(f"step for layer {layer!r} must be one value 2^(9 − bits + e)/4096 "
                         f"with e in 0..7 (bits={self.bits}), got {step.ravel()[:3]}")

    def _choose_exponent(self, weights: np.ndarray) -> int:
        peak = self.range_factor * float(np.abs(weights).max(initial=0.0))
        top = self.level_range()[1]
        return next((e for e in EXPONENTS if peak <= top * self._unit(e)), EXPONENTS[-1])

    def quantize(self, layer: str, weights: np.ndarray) -> tuple[np.ndarray, int]:
        """The integer Dense weights (out, in) int64 that hold ``weights`` (host units) at the
        layer's exponent, and how many were clipped to the range."""
        low, high = self.level_range()
        levels = np.rint(weights / self._unit(self.exponents[layer]))
        clipped = int(((levels < low) | (levels > high)).sum())
        return np.clip(levels, low, high).astype(np.int64) * self.grid, clipped

    def program(self, layer: str, weights: np.ndarray) -> WriteReport:
        start = time.perf_counter()
        array = self.check_weights(layer, weights)
        if layer not in self.exponents:
            self.exponents[layer] = self._choose_exponent(array)
        integers, clipped = self.quantize(layer, array)
        previous = self.held.get(layer)
        changed = integers.size if previous is None else int((previous != integers).sum())
        self._store(layer, integers)
        return WriteReport(
            layer=layer, cells_programmed=changed, clipped=clipped,
            write_error=float(np.abs(self.read(layer) - array).mean()),
            wall_seconds=time.perf_counter() - start,
        )

    def _store(self, layer: str, integers: np.ndarray) -> None:
        """Hold ``integers`` for ``layer`` (the Lava backend also writes them to its chip)."""
        self.held[layer] = integers

    def read(self, layer: str) -> np.ndarray:
        if layer not in self.held:
            raise ValueError(f"layer {layer!r} has not been programmed on backend {self.name!r}")
        return self.held[layer] * self._unit(self.exponents[layer]) / self.grid

    def weight_step(self, layer: str) -> np.ndarray | None:
        if layer not in self.exponents:
            raise ValueError(f"layer {layer!r} has not been programmed on backend {self.name!r}")
        return np.full((1, 1), self._unit(self.exponents[layer]))

    def dense(self, layer: str) -> DenseWeights:
        """What Lava's Dense holds for ``layer``."""
        return DenseWeights(self.held[layer].copy(), self.exponents[layer], self.bits, "mixed")

    # --- networks ---------------------------------------------------------------------------

    def declare_network(self, groups: list[NeuronGroup]) -> None:
        if not groups:
            raise ValueError("a network needs at least a readout")
        for index, group in enumerate(groups):
            allowed = READOUT_MODELS if index == len(groups) - 1 else HIDDEN_MODELS
            role = "readout" if index == len(groups) - 1 else "hidden layer"
            if group.model not in allowed:
                raise ValueError(f"Loihi 2 cannot run neuron model {group.model!r} as the "
                                 f"{role} {group.layer!r}; use {' or '.join(allowed)}")
            if group.recurrence not in ("none", "full"):
                raise ValueError(f"Loihi 2 runs recurrence none or full, not "
                                 f"{group.recurrence!r} (layer {group.layer!r})")
            if group.skip:
                raise ValueError(f"Loihi 2 networks here are chains; layer {group.layer!r} has "
                                 "a skip connection (set skip = false)")
        self.groups = list(groups)

    def network(self) -> LifNetwork:
        """The declared network with the weights the device holds."""
        if not self.groups:
            raise ValueError(f"no network was declared on backend {self.name!r}")
        layers = []
        for group in self.groups:
            missing = [name for name in self._weights_of(group) if name not in self.held]
            if missing:
                raise ValueError(f"layer {missing[0]!r} has not been programmed")
            w_rec = self.dense(f"{group.layer}.w_rec") if group.recurrence == "full" else None
            layers.append(LifLayer(self.dense(f"{group.layer}.w_in"),
                                   population_parameters(group), w_rec))
        return LifNetwork(tuple(layers))

    @staticmethod
    def _weights_of(group: NeuronGroup) -> list[str]:
        names = [f"{group.layer}.w_in"]
        return names + ([f"{group.layer}.w_rec"] if group.recurrence == "full" else [])

    def run(self, inputs: np.ndarray) -> DeviceRun:
        spikes = device_inputs(inputs)
        network = self.network()
        return aligned_run(self._run_device(network, padded(spikes, len(network.layers))),
                           spikes.shape[1])

    def _run_device(self, network: LifNetwork, inputs: np.ndarray) -> Trajectory:
        """The device's records of ``network`` on inputs (B, T', M) from the zero state."""
        return emulate(network, inputs)[0]

    # --- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self.held.clear()
        self.exponents.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "held": {k: v.copy() for k, v in self.held.items()},
            "exponents": dict(self.exponents),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shapes = {k: (int(v[0]), int(v[1])) for k, v in state["shapes"].items()}
        self.exponents = {k: int(v) for k, v in state["exponents"].items()}
        self.held = {}
        for layer, value in state["held"].items():
            self._store(layer, np.array(value, dtype=np.int64))


def population_parameters(group: NeuronGroup) -> PopulationParameters:
    """The Lava parameters of a population: ATRLIF for ``loihi_atrlif``, LIF otherwise."""
    if group.model == "loihi_atrlif":
        return atrlif_parameters(group)
    return lif_parameters(group)


def lif_parameters(group: NeuronGroup) -> LifParameters:
    """The Lava LIF parameters of a ``loihi_lif`` or ``loihi_li`` population (no bias)."""
    options = group.options
    zeros = np.zeros(group.size, dtype=np.int64)
    return LifParameters(du=int(options["du"]), dv=int(options["dv"]), vth=int(options["vth"]),
                         bias_mant=zeros, bias_exp=zeros)


def atrlif_parameters(group: NeuronGroup) -> AtrlifParameters:
    """The Lava ATRLIF parameters of a ``loihi_atrlif`` population (no bias): the decay
    fractions and the unscaled thresholds, as floats."""
    zeros = np.zeros(group.size, dtype=np.int64)
    return AtrlifParameters(**{name: float(group.options[name]) for name in ATRLIF_OPTIONS},
                            bias_mant=zeros, bias_exp=zeros)


def device_inputs(inputs: np.ndarray) -> np.ndarray:
    """Host inputs (B, T, M) as the 0/1 int64 spikes a binary Dense receives (ValueError for
    anything else)."""
    array = np.asarray(inputs)
    if array.ndim != 3:
        raise ValueError(f"inputs must be (batch, steps, inputs), got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("Loihi 2 inputs must be 0/1 spikes (its input Dense is binary); "
                         "encode analog inputs as spikes first")
    return array.astype(np.int64)


def padded(inputs: np.ndarray, layers: int) -> np.ndarray:
    """Inputs (B, T, M) followed by ``layers`` zero steps, so the readout, ``layers`` Dense hops
    from the input, sees the last input step."""
    batch, _, width = inputs.shape
    return np.concatenate([inputs, np.zeros((batch, layers, width), dtype=np.int64)], axis=1)


def aligned_run(trajectory: Trajectory, steps: int) -> DeviceRun:
    """The host-aligned view of a device run of T + L + 1 steps: hidden layer k's spikes from
    device step k + 1, the readout voltage (host units) from step L + 1, T steps each."""
    hidden = len(trajectory.spikes) - 1
    spikes = [trajectory.spikes[k][:, k + 1 : k + 1 + steps].astype(np.float64)
              for k in range(hidden)]
    readout = trajectory.v[-1][:, hidden + 1 : hidden + 1 + steps] / STATE_UNIT
    return DeviceRun(spikes=spikes, outputs=readout)
