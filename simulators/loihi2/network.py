"""A chain of Lava fixed-point LIF or ATRLIF populations, and its bit-exact emulator.

    input (B, T, M) → Dense → layer 1 (⟲ Dense) → Dense → layer 2 … → readout

Every layer is a population of Lava's ``LIF`` (``LifParameters``) or ``ATRLIF``
(``AtrlifParameters``) and receives the previous layer's spikes (the first layer the input)
through its ``w_in`` and, optionally, its own spikes through ``w_rec``. Timing is Lava's
(spec §1): every Dense hop delays by one step, so layer k integrates at step t what layer
k − 1 (or the input) emitted at step t − 1 and its own spikes of step t − 1. ``emulate`` runs a
whole batch at once in int64 and records every state; ``ChipState`` lets a run continue where
another stopped (to change weights mid-run, as a device in the loop does).

States are named as in ``STATE_NAMES``: ``u`` is the current (LIF's u, ATRLIF's i), ``v`` the
voltage, and ATRLIF adds its threshold ``theta`` and refractory state ``r``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from simulators.loihi2.atrlif import AtrlifParameters, atrlif_initial_state, atrlif_step
from simulators.loihi2.dense import DenseKernel, DenseWeights
from simulators.loihi2.lif import LifParameters, lif_step

PopulationParameters = LifParameters | AtrlifParameters
STATE_NAMES: dict[type, tuple[str, ...]] = {
    LifParameters: ("u", "v"), AtrlifParameters: ("u", "v", "theta", "r")}
"""The states of each neuron model, in the order its step function takes them."""
_STEPS = {LifParameters: lif_step, AtrlifParameters: atrlif_step}


@dataclass(frozen=True)
class LifLayer:
    """One LIF or ATRLIF population and the Dense connections into it: ``w_in`` from the layer
    before (or the input), ``w_rec`` from itself (None: no recurrence)."""

    w_in: DenseWeights
    neurons: PopulationParameters
    w_rec: DenseWeights | None = None


@dataclass(frozen=True)
class LifNetwork:
    """Layers in order; by hwloop's convention the last is the readout."""

    layers: tuple[LifLayer, ...]

    def with_weights(self, index: int, connection: str, weights: DenseWeights) -> "LifNetwork":
        """The same network with ``layers[index].<connection>`` (``w_in`` or ``w_rec``)
        replaced."""
        layers = list(self.layers)
        layers[index] = replace(layers[index], **{connection: weights})
        return LifNetwork(tuple(layers))


def records_of(neurons: PopulationParameters) -> tuple[str, ...]:
    """The names a ``Trajectory`` records for a population: its states, then ``spikes``."""
    return STATE_NAMES[type(neurons)] + ("spikes",)


def initial_state(neurons: PopulationParameters, batch: int) -> dict[str, Tensor]:
    """Lava's start state of a population, each state (B, N) int64: zeros, ATRLIF's θ = θ0."""
    if isinstance(neurons, AtrlifParameters):
        return dict(zip(STATE_NAMES[AtrlifParameters], atrlif_initial_state(batch, neurons)))
    return {name: torch.zeros(batch, neurons.size, dtype=torch.int64)
            for name in STATE_NAMES[LifParameters]}


def population_step(neurons: PopulationParameters, state: dict[str, Tensor],
                    activation: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """One step of a population's states (B, N) int64 with activation (B, N) int64 → the new
    states and the spikes (B, N) bool."""
    names = STATE_NAMES[type(neurons)]
    *values, spikes = _STEPS[type(neurons)](*(state[name] for name in names), activation,
                                            neurons)
    return dict(zip(names, values)), spikes


@dataclass
class ChipState:
    """Where a run stopped: per layer its states (``STATE_NAMES``, each (B, N) int64), and the
    activation its Dense connections deliver next step (B, N) int64."""

    neurons: list[dict[str, Tensor]]
    pending: list[Tensor]

    @classmethod
    def initial(cls, network: LifNetwork, batch: int) -> "ChipState":
        """Lava's start state: every population's ``initial_state``, no activation pending."""
        return cls([initial_state(layer.neurons, batch) for layer in network.layers],
                   [torch.zeros(batch, layer.neurons.size, dtype=torch.int64)
                    for layer in network.layers])


@dataclass
class Trajectory:
    """Every state at every step: ``layers[k]`` maps each name in ``records_of`` its neurons
    (u, v, [theta, r,] spikes) to a (B, T, N) int64 array (spikes 0/1)."""

    layers: list[dict[str, np.ndarray]]

    @property
    def u(self) -> list[np.ndarray]:
        """Every layer's current (ATRLIF's i)."""
        return [layer["u"] for layer in self.layers]

    @property
    def v(self) -> list[np.ndarray]:
        """Every layer's voltage."""
        return [layer["v"] for layer in self.layers]

    @property
    def spikes(self) -> list[np.ndarray]:
        """Every layer's spikes."""
        return [layer["spikes"] for layer in self.layers]


def emulate(
    network: LifNetwork, inputs: np.ndarray | Tensor, state: ChipState | None = None
) -> tuple[Trajectory, ChipState]:
    """Run ``network`` on inputs (B, T, M) (0/1 spikes, or payloads for a graded first
    ``w_in``) from ``state`` (Lava's start state by default); returns what Lava's fixed_pt
    models compute, step by step, and the state after the last step.

    Layers run one after another over all steps (a chain has no feedback between layers): the
    feed-forward Dense of a layer sums all steps of its source at once, only the recurrent
    Dense runs step by step."""
    source = torch.as_tensor(np.asarray(inputs), dtype=torch.int64)
    batch = source.shape[0]
    state = ChipState.initial(network, batch) if state is None else state
    layers, neurons, pending = [], list(state.neurons), list(state.pending)
    for k, layer in enumerate(network.layers):
        records, neurons[k], pending[k] = _run_layer(layer, source, neurons[k], pending[k])
        layers.append({name: values.numpy() for name, values in records.items()})
        source = records["spikes"]
    return Trajectory(layers), ChipState(neurons, pending)


def _run_layer(layer: LifLayer, source: Tensor, states: dict[str, Tensor], pending: Tensor,
               ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """One population over all steps of its source's outputs (B, T, M): its records (B, T, N)
    int64, its final states and the activation pending after the last step."""
    feedforward = DenseKernel.of(layer.w_in).activations(source)
    recurrent = None if layer.w_rec is None else DenseKernel.of(layer.w_rec)
    record: dict[str, list[Tensor]] = {name: [] for name in records_of(layer.neurons)}
    for t in range(source.shape[1]):
        states, fired = population_step(layer.neurons, states, pending)
        spikes = fired.to(torch.int64)
        for name, value in (*states.items(), ("spikes", spikes)):
            record[name].append(value)
        pending = feedforward[:, t]
        if recurrent is not None:
            pending = pending + recurrent.activations(spikes)
    size = layer.neurons.size
    stacked = {name: torch.stack(values, 1) if values else
               torch.zeros((source.shape[0], 0, size), dtype=torch.int64)
               for name, values in record.items()}
    return stacked, states, pending
