"""Run a ``LifNetwork`` in real Lava 0.10.0 processes (``Loihi2SimCfg(select_tag="fixed_pt")``)
and record every state, for comparison with the emulator.

The network is built from Lava's own ``RingBuffer``, ``Dense``, ``LIF`` or ``ATRLIF``, and
``Monitor`` processes, layer by layer as ``simulators.loihi2.network`` describes it. Lava is
imported here only: hwloop works without it. Call ``run_in_lava`` through
``isolation.call_isolated`` (the tests do) so that a hung or crashed Lava process cannot block
the caller.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import LifNetwork, PopulationParameters, Trajectory, records_of

SIGN_MODE_NAMES = {"mixed": "MIXED", "excitatory": "EXCITATORY", "inhibitory": "INHIBITORY"}
LAVA_VARS: dict[type, tuple[str, ...]] = {
    LifParameters: ("u", "v"), AtrlifParameters: ("i", "v", "theta", "r")}
"""The Lava Vars that hold each neuron model's ``network.STATE_NAMES``, in that order."""


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
    from lava.proc.atrlif.process import ATRLIF
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    processes = {LifParameters: LIF, AtrlifParameters: ATRLIF}
    steps = inputs.shape[0]
    chosen = initial_weights or [{} for _ in network.layers]
    source = RingBuffer(data=np.asarray(inputs, dtype=np.int32).T)
    previous, populations, probed = source, [], []
    for layer, raw in zip(network.layers, chosen):
        population = processes[type(layer.neurons)](**lava_arguments(layer.neurons))
        w_in = lava_dense(layer.w_in, raw.get("w_in"))
        previous.s_out.connect(w_in.s_in)
        w_in.a_out.connect(population.a_in)
        if layer.w_rec is not None:
            w_rec = lava_dense(layer.w_rec, raw.get("w_rec"))
            population.s_out.connect(w_rec.s_in)
            w_rec.a_out.connect(population.a_in)
        targets = [getattr(population, name)
                   for name in (*LAVA_VARS[type(layer.neurons)], "s_out")]
        monitors = [Monitor() for _ in targets]  # a Monitor takes one probe only
        for monitor, target in zip(monitors, targets):
            monitor.probe(target, steps)
        populations.append(population)
        probed.append(dict(zip(records_of(layer.neurons), zip(targets, monitors))))
        previous = population
    first = populations[0]
    try:
        first.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        recorded = []
        for population, probes in zip(populations, probed):
            layer_record = {}
            for name, (target, monitor) in probes.items():
                data = np.asarray(monitor.get_data()[population.name][target.name], np.float64)
                layer_record[name] = np.rint(data).astype(np.int64)[None]
            recorded.append(layer_record)
    finally:
        first.stop()
    return Trajectory(recorded)


def lava_arguments(neurons: PopulationParameters) -> dict[str, Any]:
    """The keyword arguments of Lava's ``LIF`` or ``ATRLIF`` process for ``neurons``: the
    shape, int64 bias arrays, and every scalar as a plain Python int (LIF) or float (ATRLIF):
    numpy scalars make ``Var.get`` hang (spec §5.4)."""
    scalar = int if isinstance(neurons, LifParameters) else float
    arguments: dict[str, Any] = {"shape": (neurons.size,)}
    for field in fields(neurons):
        value = getattr(neurons, field.name)
        arguments[field.name] = (np.asarray(value, dtype=np.int64)
                                 if field.name.startswith("bias_") else scalar(value))
    return arguments


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
