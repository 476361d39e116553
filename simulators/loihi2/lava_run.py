"""Run a ``LifNetwork`` in real Lava 0.10.0 processes (``Loihi2SimCfg(select_tag="fixed_pt")``)
and record every state, for comparison with the emulator.

The network is built from Lava's own ``RingBuffer``, ``Dense``, ``LIF`` and ``Monitor``
processes, exactly as ``simulators.loihi2.network`` describes it. Lava is imported here only:
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
    network: LifNetwork, inputs: np.ndarray, initial_weights: dict[str, np.ndarray] | None = None
) -> Trajectory:
    """Run ``network`` on one sample's inputs (T, M) in Lava; returns a (1, T, ·) Trajectory.

    ``initial_weights`` (``in``, ``rec``, ``out``) replaces the connections' held weights as the
    matrices handed to Lava's Dense, so Lava's own first-step preprocessing can be compared
    with ``DenseWeights.prepare``.
    """
    import hwloop  # noqa: F401  (installs the import fix lava-nc 0.10.0 needs on Python 3.11)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    steps = inputs.shape[0]
    chosen = initial_weights or {}
    source = RingBuffer(data=np.asarray(inputs, dtype=np.int32).T)
    hidden, readout = _lif(network.hidden), _lif(network.readout)
    w_in = _dense(network.w_in, chosen.get("in"))
    source.s_out.connect(w_in.s_in)
    w_in.a_out.connect(hidden.a_in)
    if network.w_rec is not None:
        w_rec = _dense(network.w_rec, chosen.get("rec"))
        hidden.s_out.connect(w_rec.s_in)
        w_rec.a_out.connect(hidden.a_in)
    w_out = _dense(network.w_out, chosen.get("out"))
    hidden.s_out.connect(w_out.s_in)
    w_out.a_out.connect(readout.a_in)
    probes = {"hidden_u": (hidden, hidden.u), "hidden_v": (hidden, hidden.v),
              "hidden_spikes": (hidden, hidden.s_out), "readout_u": (readout, readout.u),
              "readout_v": (readout, readout.v), "readout_spikes": (readout, readout.s_out)}
    monitors = {}
    for name, (_, target) in probes.items():
        monitors[name] = Monitor()
        monitors[name].probe(target, steps)
    try:
        hidden.run(condition=RunSteps(num_steps=steps),
                   run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        recorded = {}
        for name, (process, target) in probes.items():
            data = monitors[name].get_data()[process.name][target.name]
            recorded[name] = np.rint(np.asarray(data, dtype=np.float64)).astype(np.int64)[None]
    finally:
        hidden.stop()
    return Trajectory(**recorded)


def _lif(parameters: LifParameters) -> Any:
    from lava.proc.lif.process import LIF

    return LIF(shape=(parameters.size,), du=int(parameters.du), dv=int(parameters.dv),
               vth=int(parameters.vth),
               bias_mant=np.asarray(parameters.bias_mant, dtype=np.int64),
               bias_exp=np.asarray(parameters.bias_exp, dtype=np.int64))


def _dense(connection: DenseWeights, initial: np.ndarray | None) -> Any:
    from lava.proc.dense.process import Dense
    from lava.utils.weightutils import SignMode

    weights = connection.weights if initial is None else initial
    return Dense(weights=np.asarray(weights), weight_exp=int(connection.weight_exp),
                 num_weight_bits=int(connection.num_weight_bits),
                 sign_mode=SignMode[SIGN_MODE_NAMES[connection.sign_mode]],
                 num_message_bits=8 if connection.graded else 0)
