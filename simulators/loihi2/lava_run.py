"""Run a ``LifNetwork`` in real Lava 0.10.0 processes (``Loihi2SimCfg(select_tag="fixed_pt")``)
and record every state, for comparison with the emulator.

The network is built from Lava's own ``RingBuffer``, ``Dense``, ``LIF`` and ``Monitor``
processes, layer by layer as ``simulators.loihi2.network`` describes it. Lava is imported here only:
hwloop works without it. Call ``run_in_lava`` through ``isolation.call_isolated`` (the tests do)
so that a hung or crashed Lava process cannot block the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import LifNetwork, Trajectory

SIGN_MODE_NAMES = {"mixed": "MIXED", "excitatory": "EXCITATORY", "inhibitory": "INHIBITORY"}


def run_in_lava(
    network: LifNetwork, inputs: np.ndarray,
    initial_weights: list[dict[str, np.ndarray]] | None = None,
) -> Trajectory:
    """Run ``network`` on one sample's inputs (T, M) in Lava; returns a (1, T, ·) Trajectory.

    ``initial_weights`` (per layer, ``w_in`` and ``w_rec``) replaces the connections' held
    weights as the matrices handed to Lava's Dense, so Lava's own first-step preprocessing can
    be compared with ``DenseWeights.prepare``.
    """
    import hwloop  # noqa: F401  (installs the import fix lava-nc 0.10.0 needs on Python 3.11)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    steps = inputs.shape[0]
    chosen = initial_weights or [{} for _ in network.layers]
    source = RingBuffer(data=np.asarray(inputs, dtype=np.int32).T)
    previous, populations, monitors = source, [], []
    for layer, raw in zip(network.layers, chosen):
        population = _lif(layer.neurons)
        w_in = lava_dense(layer.w_in, raw.get("w_in"))
        previous.s_out.connect(w_in.s_in)
        w_in.a_out.connect(population.a_in)
        if layer.w_rec is not None:
            w_rec = lava_dense(layer.w_rec, raw.get("w_rec"))
            population.s_out.connect(w_rec.s_in)
            w_rec.a_out.connect(population.a_in)
        probes = {}
        for name, var in (("u", population.u), ("v", population.v), ("spikes", population.s_out)):
            probes[name] = Monitor()
            probes[name].probe(var, steps)
        populations.append(population)
        monitors.append(probes)
        previous = population
    first = populations[0]
    try:
        first.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        recorded: dict[str, list[np.ndarray]] = {"u": [], "v": [], "spikes": []}
        for population, probes in zip(populations, monitors):
            for name, monitor in probes.items():
                target = {"u": population.u, "v": population.v, "spikes": population.s_out}[name]
                data = monitor.get_data()[population.name][target.name]
                recorded[name].append(
                    np.rint(np.asarray(data, dtype=np.float64)).astype(np.int64)[None])
    finally:
        first.stop()
    return Trajectory(**recorded)


def _lif(parameters: LifParameters) -> Any:
    from lava.proc.lif.process import LIF

    return LIF(shape=(parameters.size,), du=int(parameters.du), dv=int(parameters.dv),
               vth=int(parameters.vth),
               bias_mant=np.asarray(parameters.bias_mant, dtype=np.int64),
               bias_exp=np.asarray(parameters.bias_exp, dtype=np.int64))


def lava_dense(connection: DenseWeights, initial: np.ndarray | None = None) -> Any:
    """Lava's ``Dense`` holding ``connection`` (or the raw ``initial`` weights, which Lava then
    preprocesses itself), with its exponent, weight bits and fixed sign mode."""
    from lava.proc.dense.process import Dense
    from lava.utils.weightutils import SignMode

    weights = connection.weights if initial is None else initial
    return Dense(weights=np.asarray(weights), weight_exp=int(connection.weight_exp),
                 num_weight_bits=int(connection.num_weight_bits),
                 sign_mode=SignMode[SIGN_MODE_NAMES[connection.sign_mode]],
                 num_message_bits=8 if connection.graded else 0)
