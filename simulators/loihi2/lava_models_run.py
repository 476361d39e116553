"""Run one ATRLIF or RF population in real Lava 0.10.0 processes and record every state.

Each network is Lava's own ``RingBuffer`` → ``Dense`` → ``ATRLIF`` (resp. → ``RF``, with a
second Dense into its imaginary InPort when given), run with
``Loihi2SimCfg(select_tag="fixed_pt")``; one ``Monitor`` per state and one for the spikes
record every step (a Lava Monitor takes a single probe: with a second one the network fails
to compile). Lava is imported inside these functions only: hwloop works without it. Call them
through ``isolation.call_isolated`` (the tests do) so that a hung or crashed Lava process cannot
block the caller. Scalar parameters go to Lava as plain Python ints and floats (numpy scalars
make ``Var.get`` hang, spec §5.4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lava_run import lava_dense
from simulators.loihi2.rf import RfParameters



def run_atrlif_in_lava(
    connection: DenseWeights,
    parameters: AtrlifParameters,
    inputs: np.ndarray,
    raw_weights: np.ndarray | None = None,
    initial_state: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Run inputs (T, M) through Dense → ATRLIF in Lava; returns ``i``, ``v``, ``theta``,
    ``r`` and ``spikes`` (0/1), each a (T, N) int64 array of the values after each step.

    ``raw_weights`` replaces ``connection.weights`` as the matrix handed to Lava's Dense (Lava
    preprocesses it itself); ``initial_state`` may give initial ``i``, ``v``, ``theta``, ``r``
    (N,) (Lava discards ``theta`` on its first step).
    """
    import hwloop  # noqa: F401  (installs the import fix lava-nc 0.10.0 needs on Python 3.11)
    from lava.proc.atrlif.process import ATRLIF

    initial = {name: np.asarray(value, dtype=np.int64)
               for name, value in (initial_state or {}).items()}
    neurons = ATRLIF(
        shape=(parameters.size,),
        delta_i=float(parameters.delta_i), delta_v=float(parameters.delta_v),
        delta_theta=float(parameters.delta_theta), delta_r=float(parameters.delta_r),
        theta_0=float(parameters.theta_0), theta_step=float(parameters.theta_step),
        bias_mant=np.asarray(parameters.bias_mant, dtype=np.int64),
        bias_exp=np.asarray(parameters.bias_exp, dtype=np.int64), **initial)
    targets = {"i": neurons.i, "v": neurons.v, "theta": neurons.theta, "r": neurons.r,
               "spikes": neurons.s_out}
    return _run(inputs, [(connection, raw_weights, neurons.a_in)], neurons, targets)


def run_rf_in_lava(
    real_connection: DenseWeights,
    imag_connection: DenseWeights | None,
    parameters: RfParameters,
    inputs: np.ndarray,
    raw_weights: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Run inputs (T, M) through Dense → ``a_real_in`` (and, unless ``imag_connection`` is
    None, a second Dense → ``a_imag_in``) of an RF population in Lava; returns ``real``,
    ``imag`` and ``spikes`` (0/1), each a (T, N) int64 array.

    ``raw_weights`` (``real``, ``imag``) replaces the connections' weights as the matrices
    handed to Lava's Dense processes.
    """
    import hwloop  # noqa: F401
    from lava.proc.rf.process import RF

    raw = raw_weights or {}
    neurons = RF(shape=(real_connection.weights.shape[0],), period=float(parameters.period),
                 alpha=float(parameters.alpha), state_exp=int(parameters.state_exp),
                 decay_bits=int(parameters.decay_bits), vth=float(parameters.vth))
    inbound = [(real_connection, raw.get("real"), neurons.a_real_in)]
    if imag_connection is not None:
        inbound.append((imag_connection, raw.get("imag"), neurons.a_imag_in))
    targets = {"real": neurons.real, "imag": neurons.imag, "spikes": neurons.s_out}
    return _run(inputs, inbound, neurons, targets)


def _run(
    inputs: np.ndarray,
    inbound: list[tuple[DenseWeights, np.ndarray | None, Any]],
    neurons: Any,
    targets: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Connect a RingBuffer through one Dense per (connection, raw weights, InPort) into
    ``neurons``, probe ``targets`` with Monitors, run len(inputs) steps, always stop."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    steps = int(inputs.shape[0])
    source = RingBuffer(data=np.asarray(inputs, dtype=np.int32).T)
    for connection, raw, port in inbound:
        dense = lava_dense(connection, raw)
        source.s_out.connect(dense.s_in)
        dense.a_out.connect(port)
    monitors = {name: Monitor() for name in targets}  # a Monitor takes one probe only
    for name, target in targets.items():
        monitors[name].probe(target, steps)
    try:
        neurons.run(condition=RunSteps(num_steps=steps),
                    run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        recorded = {}
        for name, target in targets.items():
            data = monitors[name].get_data()[neurons.name][target.name]
            recorded[name] = np.rint(np.asarray(data, dtype=np.float64)).astype(np.int64)
        return recorded
    finally:
        neurons.stop()
