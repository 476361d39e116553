"""A chain of Lava fixed-point LIF populations, and its bit-exact emulator.

    input (B, T, M) → Dense → LIF layer 1 (⟲ Dense) → Dense → LIF layer 2 … → LIF readout

Every layer receives the previous layer's spikes (the first layer the input) through its
``w_in`` and, optionally, its own spikes through ``w_rec``. Timing is Lava's (spec §1): every
Dense hop delays by one step, so layer k integrates at step t what layer k − 1 (or the input)
emitted at step t − 1 and its own spikes of step t − 1. ``emulate`` runs a whole batch at once
in int64 and records every state; ``ChipState`` lets a run continue where another stopped (to
change weights mid-run, as a device in the loop does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from simulators.loihi2.dense import DenseWeights, dense_step
from simulators.loihi2.lif import LifParameters, lif_step


@dataclass(frozen=True)
class LifLayer:
    """One LIF population and the Dense connections into it: ``w_in`` from the layer before
    (or the input), ``w_rec`` from itself (None: no recurrence)."""

    w_in: DenseWeights
    neurons: LifParameters
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


@dataclass
class ChipState:
    """Where a run stopped: per layer the current u and voltage v (B, N) int64, and the
    activation its Dense connections deliver next step (B, N) int64."""

    u: list[Tensor]
    v: list[Tensor]
    pending: list[Tensor]

    @classmethod
    def zeros(cls, network: LifNetwork, batch: int) -> "ChipState":
        sizes = [layer.neurons.size for layer in network.layers]
        return cls(*([torch.zeros(batch, n, dtype=torch.int64) for n in sizes] for _ in range(3)))


@dataclass
class Trajectory:
    """Every state at every step: per layer u, v and spikes (0/1), each (B, T, N) int64."""

    u: list[np.ndarray]
    v: list[np.ndarray]
    spikes: list[np.ndarray]


def emulate(
    network: LifNetwork, inputs: np.ndarray | Tensor, state: ChipState | None = None
) -> tuple[Trajectory, ChipState]:
    """Run ``network`` on inputs (B, T, M) (0/1 spikes, or payloads for a graded first
    ``w_in``) from ``state`` (zeros by default); returns what Lava's fixed_pt models compute,
    step by step, and the state after the last step."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.int64)
    batch, steps, _ = x.shape
    state = ChipState.zeros(network, batch) if state is None else state
    u, v, pending = list(state.u), list(state.v), list(state.pending)
    weights = [(_ints(layer.w_in), _ints(layer.w_rec)) for layer in network.layers]
    record: dict[str, list[list[Tensor]]] = {
        name: [[] for _ in network.layers] for name in ("u", "v", "spikes")}
    for t in range(steps):
        spikes = []
        for k, layer in enumerate(network.layers):
            u[k], v[k], fired = lif_step(u[k], v[k], pending[k], layer.neurons)
            spikes.append(fired.to(torch.int64))
            for name, value in (("u", u[k]), ("v", v[k]), ("spikes", spikes[k])):
                record[name][k].append(value)
        for k, layer in enumerate(network.layers):
            source = x[:, t] if k == 0 else spikes[k - 1]
            pending[k] = dense_step(weights[k][0], layer.w_in.weight_exp, source,
                                    layer.w_in.graded)
            if layer.w_rec is not None:
                pending[k] = pending[k] + dense_step(weights[k][1], layer.w_rec.weight_exp,
                                                     spikes[k], layer.w_rec.graded)
    trajectory = Trajectory(**{
        name: [torch.stack(values, 1).numpy() if values else
               np.zeros((batch, 0, layer.neurons.size), dtype=np.int64)
               for values, layer in zip(per_layer, network.layers)]
        for name, per_layer in record.items()})
    return trajectory, ChipState(u, v, pending)


def _ints(connection: DenseWeights | None) -> Tensor | None:
    return None if connection is None else torch.as_tensor(connection.weights, dtype=torch.int64)
