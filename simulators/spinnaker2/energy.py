"""The energy model of the emulated chip (spec A4.5) — a model estimate, not a measurement.

    E = Σ over used PEs and ticks [P_idle·tick_s + cycles·e_cycle] + MACs·e_mac + packets·e_pkt

Defaults:
- ``p_idle_w`` = 250 mW / 152 PEs ≈ 1.64 mW per PE: the chip's quoted baseline power spread
  over its PEs, an upper bound (spec A1, secondary source).
- ``e_mac_j`` = 0.72 pJ per MAC of the ML accelerator at 0.5 V (2.7 TOPS/W, 2 ops per MAC;
  spec A4.5). The e-prop kernels run on the FPU and count no accelerator MACs.
- ``e_pkt_j`` = 10 pJ per packet sent: our assumption, no published figure; it is small next
  to the PE terms either way.
- ``e_cycle_j`` = 65 pJ per cycle: calibrated (spec A4.5) so that ``reference_sample_energy``
  — one training sample of the 80-120-12 reference network on 12 PEs, 100 steps at a 10 ms
  tick (the paper's real time, one 1-s utterance per second) and 2.4 hidden spikes per step —
  gives ≈26 mJ, the figure derived in spec A3 from 54.7 kJ over 586 h (≈26 mW for 12 PEs).
  (There: ≈20.3 mJ idle over 1.03 s, 87.9 M cycles.) That target itself rests on secondary
  numbers, so every energy here is a model estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.spinnaker2 import cycles
from simulators.spinnaker2.cycles import CycleModel, Ops

PAPER_SAMPLE_ENERGY_J = 26e-3
"""Energy per training sample derived in spec A3 (54.7 kJ / 2,079,198 samples ≈ 26 mJ)."""


@dataclass(frozen=True)
class EnergyModel:
    """Energy per PE-tick, cycle, accelerator MAC and packet (see the module doc)."""

    p_idle_w: float = 0.25 / 152
    e_cycle_j: float = 65e-12
    e_mac_j: float = 0.72e-12
    e_pkt_j: float = 10e-12

    def energy(self, pe_cycles: np.ndarray, packets: int, tick_s: float, macs: int = 0
               ) -> float:
        """Joules of a run: ``pe_cycles`` (ticks, PEs) cycles of each used PE in each tick,
        ``packets`` sent, ``macs`` accelerator MACs."""
        idle = pe_cycles.size * self.p_idle_w * tick_s
        return float(idle + pe_cycles.sum() * self.e_cycle_j + macs * self.e_mac_j
                     + packets * self.e_pkt_j)


def reference_sample_energy(model: EnergyModel | None = None,
                            cycle_model: CycleModel | None = None, tick_s: float = 10e-3,
                            steps: int = 100, spikes_per_step: float = 2.4) -> float:
    """Joules (model estimate) of one f32 training sample of the reference network (80-120-12
    on 12 PEs: source, 10 workers of 12 neurons, readout), from the kernels' operation counts:
    ``steps`` + 3 ticks of ``tick_s``, ``spikes_per_step`` hidden spikes per step."""
    model, cycle_model = model or EnergyModel(), cycle_model or CycleModel()
    inputs, hidden, outputs, per_worker, workers = 80, 120, 12, 12, 10
    spikes = round(spikes_per_step)
    ticks = steps + 3
    table = np.full((ticks, workers + 2), cycle_model.cycles(Ops()), np.int64)
    table[:steps, 0] = cycle_model.cycles(cycles.source_ops(inputs, inputs))
    worker = (cycles.receive_ops(inputs + spikes) + cycles.neuron_ops("f32", per_worker, "float")
              + cycles.dot_ops("f32", per_worker, inputs + hidden)
              + cycles.trace_ops("f32", per_worker, inputs + hidden) + Ops(send=1))
    table[1:steps + 1, 1:-1] = cycle_model.cycles(worker)
    table[steps + 2, 1:-1] = cycle_model.cycles(
        cycles.receive_ops(per_worker) + cycles.adam_ops(per_worker * (inputs + hidden)))
    readout = (cycles.receive_ops(spikes) + cycles.readout_ops("f32", outputs, hidden)
               + Ops(send=outputs))
    table[2:steps + 2, -1] = cycle_model.cycles(readout)
    table[steps + 1, -1] += cycle_model.cycles(
        cycles.learning_signal_ops(outputs, hidden) + cycles.adam_ops(outputs * hidden)
        + Ops(send=hidden)) - cycle_model.tick
    packets = steps * (inputs + spikes + outputs) + hidden
    return model.energy(table, packets, tick_s)
