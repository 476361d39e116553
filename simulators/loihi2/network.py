"""A Loihi network of Lava fixed-point processes, and its bit-exact emulator.

    input (B, T, M) → Dense w_in → LIF hidden (N) ⟲ Dense w_rec → Dense w_out → LIF readout (K)

Timing is Lava's (spec §1): every Dense hop delays by one step, so the hidden layer integrates
the input of step t − 1 and its own spikes of step t − 1, and the readout the hidden spikes of
step t − 1. ``emulate`` runs a whole batch at once in int64 and records every state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from simulators.loihi2.dense import DenseWeights, dense_step
from simulators.loihi2.lif import LifParameters, lif_step


@dataclass(frozen=True)
class LifNetwork:
    """Input → Dense → (recurrent) LIF layer → Dense → LIF readout."""

    w_in: DenseWeights
    hidden: LifParameters
    w_rec: DenseWeights | None
    w_out: DenseWeights
    readout: LifParameters


@dataclass
class Trajectory:
    """Every state at every step, each (B, T, N) int64 (spikes 0/1)."""

    hidden_u: np.ndarray
    hidden_v: np.ndarray
    hidden_spikes: np.ndarray
    readout_u: np.ndarray
    readout_v: np.ndarray
    readout_spikes: np.ndarray


def emulate(network: LifNetwork, inputs: np.ndarray | Tensor) -> Trajectory:
    """Run ``network`` on inputs (B, T, M) (0/1 spikes, or payloads for a graded w_in) from the
    zero state; returns what Lava's fixed_pt models compute, step by step."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.int64)
    batch, steps, _ = x.shape
    weights = {name: torch.as_tensor(dense.weights, dtype=torch.int64)
               for name, dense in (("in", network.w_in), ("rec", network.w_rec),
                                   ("out", network.w_out)) if dense is not None}
    hidden_size, readout_size = network.hidden.size, network.readout.size
    u, v = x.new_zeros(batch, hidden_size), x.new_zeros(batch, hidden_size)
    u_out, v_out = x.new_zeros(batch, readout_size), x.new_zeros(batch, readout_size)
    into_hidden = x.new_zeros(batch, hidden_size)  # what the Dense hops deliver next step
    into_readout = x.new_zeros(batch, readout_size)
    record: dict[str, list[Tensor]] = {name: [] for name in Trajectory.__dataclass_fields__}
    for t in range(steps):
        activation, activation_out = into_hidden, into_readout
        into_hidden = dense_step(weights["in"], network.w_in.weight_exp, x[:, t],
                                 network.w_in.graded)
        u, v, spikes = lif_step(u, v, activation, network.hidden)
        if network.w_rec is not None:
            into_hidden = into_hidden + dense_step(weights["rec"], network.w_rec.weight_exp,
                                                   spikes, network.w_rec.graded)
        into_readout = dense_step(weights["out"], network.w_out.weight_exp, spikes,
                                  network.w_out.graded)
        u_out, v_out, spikes_out = lif_step(u_out, v_out, activation_out, network.readout)
        for name, value in (("hidden_u", u), ("hidden_v", v), ("hidden_spikes", spikes),
                            ("readout_u", u_out), ("readout_v", v_out),
                            ("readout_spikes", spikes_out)):
            record[name].append(value.to(torch.int64))
    return Trajectory(**{name: torch.stack(values, 1).numpy() for name, values in record.items()})
