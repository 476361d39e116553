"""Lava 0.10.0 processes for a chip that stays up between calls, with host pipes for fast I/O.

Imported only inside the child process of ``lava_chip.LavaChip`` (it imports Lava). The neuron
and synapse arithmetic is Lava's own: ``PyLifModelBitAcc``, ``PyATRLIFModelFixed`` and
``PyDenseModelBitAcc`` compute every step; the subclasses here only add ports that Lava connects
to the host ("external pipes": one shared-memory message per array, where ``Var.set``/``get``
send one per element).

Protocol: before each ``RunSteps(n)`` the host sends every model one command (mode, n) on its
``command`` port; a model receives it, blocking, on the first step of the call, so host and
models never race. Modes:

- ``RUN`` / ``RESET_RUN``: compute n steps (``RESET_RUN`` first restores Lava's start state:
  zeroes every a_buff, LIF's u, v and ATRLIF's i, v, r, and sets ATRLIF's θ to θ0); the source
  sends one sample it received in one message, each population sends its (S + 1, steps, N)
  record of its S states (``network.STATE_NAMES``) and spikes after the last step;
- ``IDLE`` / ``READ`` / ``WRITE``: a one-step host I/O call in which no model computes or
  exchanges spikes, so the network's state is untouched; the addressed Dense replaces its
  weights with a matrix received in one message (``WRITE``) and sends back what it holds.
"""

from __future__ import annotations

import multiprocessing

import hwloop  # noqa: F401  (before lava: installs the import fix lava-nc 0.10.0 needs on 3.11)
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.atrlif.models import PyATRLIFModelFixed
from lava.proc.atrlif.process import ATRLIF
from lava.proc.dense.models import PyDenseModelBitAcc
from lava.proc.dense.process import Dense
from lava.proc.lif.models import PyLifModelBitAcc
from lava.proc.lif.process import LIF
from lava.utils.weightutils import SignMode

from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lava_run import LAVA_VARS, SIGN_MODE_NAMES, lava_arguments
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import LifNetwork

RUN, RESET_RUN, IDLE, READ, WRITE = range(5)
COMPUTING = (RUN, RESET_RUN)


def _from_host(shape: tuple[int, ...]) -> InPort:
    port = InPort(shape=shape)
    port.flag_external_pipe(buffer_size=1)
    return port


def _to_host(shape: tuple[int, ...]) -> OutPort:
    port = OutPort(shape=shape)
    port.flag_external_pipe(buffer_size=1)
    return port


class SampleSource(AbstractProcess):
    """Sends a sample (steps, width) received from the host in one message, one row per step,
    on ``s_out`` (width,)."""

    def __init__(self, *, steps: int, width: int) -> None:
        super().__init__(steps=steps, width=width)
        self.s_out = OutPort(shape=(width,))
        self.samples = _from_host((steps, width))
        self.command = _from_host((2,))


def _add_recording_ports(population: LIF | ATRLIF, steps: int, states: int) -> None:
    """Give a neuron process a host ``command`` port and a ``record`` port (states + 1, steps,
    N) to the host; its model reads ``steps`` from the process parameters."""
    population.proc_params["steps"] = steps
    population.command = _from_host((2,))
    population.record = _to_host((states + 1, steps, population.proc_params["shape"][0]))


class RecordedLIF(LIF):
    """Lava's ``LIF`` plus a host command port and a ``record`` port (3, steps, N) to the host:
    u, v, spikes."""

    def __init__(self, *, steps: int, **lif: object) -> None:
        super().__init__(**lif)
        _add_recording_ports(self, steps, len(LAVA_VARS[LifParameters]))


class RecordedATRLIF(ATRLIF):
    """Lava's ``ATRLIF`` plus a host command port and a ``record`` port (5, steps, N) to the
    host: i, v, θ, r, spikes."""

    def __init__(self, *, steps: int, **atrlif: object) -> None:
        super().__init__(**atrlif)
        _add_recording_ports(self, steps, len(LAVA_VARS[AtrlifParameters]))


class WritableDense(Dense):
    """Lava's ``Dense`` plus host ports to replace (``weights_in``) and read back
    (``weights_out``) its whole (out, in) weight matrix in one message each."""

    def __init__(self, *, weights: np.ndarray, **dense: object) -> None:
        super().__init__(weights=weights, **dense)
        self.command = _from_host((2,))
        self.weights_in = _from_host(weights.shape)
        self.weights_out = _to_host(weights.shape)


class _HostCommanded:
    """Model mixin: follows the host's per-call commands (module docstring)."""

    command: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)  # type: ignore[call-arg]
        self._mode, self._left, self._index = IDLE, 0, -1

    def _next_step(self) -> int:
        """This step's mode; the first step of a call receives the call's command."""
        if self._left == 0:
            self._mode, self._left = (int(value) for value in self.command.recv())
            self._index = -1
        self._left -= 1
        self._index += 1
        return self._mode


@implements(proc=SampleSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySampleSourceModel(_HostCommanded, PyLoihiProcessModel):
    """Receives a sample on a call's first step and sends one row of it per step."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    samples: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def run_spk(self) -> None:
        if self._next_step() not in COMPUTING:
            return
        if self._index == 0:
            self._sample = self.samples.recv()
        self.s_out.send(self._sample[self._index])


class _Recorded(_HostCommanded):
    """Neuron model mixin: restores Lava's start state on a reset (``_restart``), records the
    Vars ``states`` and the spike buffer ``spikes`` every step, and sends the record to the host
    after the call's last step. The parent model computes each step."""

    states: tuple[str, ...]
    spikes: str
    record: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)

    def _restart(self) -> None:
        raise NotImplementedError

    def run_spk(self) -> None:
        mode = self._next_step()
        if mode not in COMPUTING:
            return
        if self._index == 0:
            size = self.v.shape[0]
            self._trace = np.zeros((len(self.states) + 1, self.proc_params["steps"], size),
                                   np.int32)
            if mode == RESET_RUN:
                self._restart()
        super().run_spk()
        rows = (*self.states, self.spikes)
        self._trace[:, self._index] = [getattr(self, name) for name in rows]
        if self._left == 0:
            self.record.send(self._trace)


class PyRecordedLifModel(_Recorded, PyLifModelBitAcc):
    """``PyLifModelBitAcc`` recorded; a reset zeroes u and v."""

    # Lava's @implements refuses to re-target a subclass of a model, so the process is named
    # here; protocol, resources and tags are inherited from the parent model
    implements_process = RecordedLIF
    states, spikes = LAVA_VARS[LifParameters], "s_out_buff"

    def _restart(self) -> None:
        self.u[:] = 0
        self.v[:] = 0


class PyRecordedAtrlifModel(_Recorded, PyATRLIFModelFixed):
    """``PyATRLIFModelFixed`` recorded; a reset zeroes i, v, r and sets θ to θ0, so the model
    continues exactly as a fresh one (whose first step overwrites θ with θ0, scaling θ0 and
    θ_step by 64 once: they stay scaled)."""

    implements_process = RecordedATRLIF  # see PyRecordedLifModel
    states, spikes = LAVA_VARS[AtrlifParameters], "s"

    def _restart(self) -> None:
        self.i[:] = 0
        self.v[:] = 0
        self.r[:] = 0
        if self.isthrscaled:  # else the coming first step sets θ = θ0 itself
            self.theta[:] = self.theta_0


class PyWritableDenseModel(_HostCommanded, PyDenseModelBitAcc):
    """``PyDenseModelBitAcc`` computes each step; this subclass zeroes a_buff on a reset and
    replaces or sends back the whole weight matrix in a host I/O call."""

    implements_process = WritableDense  # see PyRecordedLifModel
    weights_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    weights_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)

    def run_spk(self) -> None:
        mode = self._next_step()
        if mode == WRITE:
            self.weights[:] = self.weights_in.recv()
        if mode in (READ, WRITE):
            self.weights_out.send(self.weights)
        if mode in COMPUTING:
            if mode == RESET_RUN and self._index == 0:
                self.a_buff[:] = 0
            super().run_spk()


MODELS = {SampleSource: PySampleSourceModel, RecordedLIF: PyRecordedLifModel,
          RecordedATRLIF: PyRecordedAtrlifModel, WritableDense: PyWritableDenseModel}
RECORDED = {LifParameters: RecordedLIF, AtrlifParameters: RecordedATRLIF}


class LavaNetwork:
    """A ``LifNetwork`` (LIF and ATRLIF populations) as running Lava processes (fixed_pt),
    driven through host pipes.

    The network's weights must already be on their legal grids: Lava's first-step
    preprocessing then leaves them unchanged, also after a write that precedes the first step.
    """

    def __init__(self, network: LifNetwork, steps: int) -> None:
        self.steps = steps
        self.source = SampleSource(steps=steps, width=network.layers[0].w_in.weights.shape[1])
        self.populations: list[RecordedLIF | RecordedATRLIF] = []
        self.connections: list[dict[str, WritableDense]] = []
        previous: SampleSource | RecordedLIF | RecordedATRLIF = self.source
        for layer in network.layers:
            population = RECORDED[type(layer.neurons)](steps=steps,
                                                       **lava_arguments(layer.neurons))
            dense = {"w_in": _dense(layer.w_in)}
            previous.s_out.connect(dense["w_in"].s_in)
            if layer.w_rec is not None:
                dense["w_rec"] = _dense(layer.w_rec)
                population.s_out.connect(dense["w_rec"].s_in)
            for connection in dense.values():
                connection.a_out.connect(population.a_in)
            self.populations.append(population)
            self.connections.append(dense)
            previous = population
        self.commanded = [self.source, *self.populations,
                          *(dense for layer in self.connections for dense in layer.values())]
        models = {process: MODELS[type(process)] for process in self.commanded}
        # keyed by process (what Lava's compiler looks up), so Lava does not search this
        # package's other modules for models
        self.source.create_runtime(run_cfg=Loihi2SimCfg(select_tag="fixed_pt",
                                                        exception_proc_model_map=models))
        self._call(IDLE)  # starts the runtime: Var.get/set refuse a runtime that never ran

    def run_sample(self, inputs: np.ndarray, reset: bool) -> list[np.ndarray]:
        """Run one sample's inputs (T, M), T ≤ steps; per layer its (S + 1, T, N) int32 record
        of its S states (``network.STATE_NAMES``) and spikes."""
        sample = np.zeros((self.steps, inputs.shape[1]), dtype=np.int32)
        sample[: len(inputs)] = inputs
        self.source.samples.external_pipe_csp_send_port.send(sample)
        self._call(RESET_RUN if reset else RUN, len(inputs))
        return [population.record.external_pipe_csp_recv_port.recv()[:, : len(inputs)]
                for population in self.populations]

    def write(self, layer: int, connection: str, weights: np.ndarray) -> np.ndarray:
        """Replace one Dense's weights (legal-grid ints); returns what it now holds (int64)."""
        dense = self.connections[layer][connection]
        dense.weights_in.external_pipe_csp_send_port.send(weights.astype(np.int32))
        self._call(WRITE, target=dense)
        return dense.weights_out.external_pipe_csp_recv_port.recv().astype(np.int64)

    def read(self, layer: int, connection: str) -> np.ndarray:
        """The weights one Dense holds (int64)."""
        dense = self.connections[layer][connection]
        self._call(READ, target=dense)
        return dense.weights_out.external_pipe_csp_recv_port.recv().astype(np.int64)

    def write_slow(self, layer: int, connection: str, weights: np.ndarray) -> None:
        """``write`` through ``Var.set`` (one message per element)."""
        self.connections[layer][connection].weights.set(weights.astype(np.float64))

    def read_slow(self, layer: int, connection: str) -> np.ndarray:
        """``read`` through ``Var.get`` (one message per element)."""
        var = self.connections[layer][connection].weights
        return np.rint(np.asarray(var.get(), dtype=np.float64)).astype(np.int64).reshape(var.shape)

    def model_pids(self) -> list[int]:
        """The pids of the processes that run the models (Lava starts them first, then its
        runtime service)."""
        return [actor.pid for actor in self.actors()[: len(self.commanded)]]

    def actors(self) -> list[multiprocessing.Process]:
        """Every process Lava started: the models, then the runtime service."""
        return self.source.runtime._messaging_infrastructure.actors  # no public accessor

    def stop(self) -> None:
        self.source.stop()

    def _call(self, mode: int, steps: int = 1, target: WritableDense | None = None) -> None:
        for process in self.commanded:
            chosen = mode if target is None or process is target else IDLE
            process.command.external_pipe_csp_send_port.send(np.array([chosen, steps]))
        self.source.run(condition=RunSteps(num_steps=steps))


def _dense(connection: DenseWeights) -> WritableDense:
    return WritableDense(weights=np.asarray(connection.weights, dtype=np.int64),
                         weight_exp=int(connection.weight_exp),
                         num_weight_bits=int(connection.num_weight_bits),
                         sign_mode=SignMode[SIGN_MODE_NAMES[connection.sign_mode]],
                         num_message_bits=8 if connection.graded else 0)
