"""A live Lava 0.10.0 chip: a ``LifNetwork`` (LIF and ATRLIF populations) kept running between
calls, with fast weight I/O.

The Lava runtime lives in a child process that leads its own process group (started as
``isolation`` starts its children), so a crashed or hung Lava model can never block the caller:
every reply the parent waits for has a timeout, and any failure kills the whole group. Weights
and samples move in one shared-memory message per array through ports Lava connects to the
host (``lava_processes``), instead of ``Var.set``/``get``'s one message per element: a
256×256 write + read-back takes milliseconds, not seconds (spec §5.2).

The device semantics are those of spec §5.3: every Dense keeps the sign mode, weight_exp and
num_weight_bits it was built with; a write must already lie on that legal grid (the host
quantizes, ``hwloop.quantize.lava_dense_weights``); the neurons' parameters are never
changed.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.util import Finalize
from typing import Any, Callable, NoReturn

import numpy as np

from hwloop.quantize import lava_dense_weights
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.isolation import kill_group, run_child
from simulators.loihi2.network import LifNetwork, Trajectory, records_of

CONNECTIONS = ("w_in", "w_rec")
STOP_GRACE = 10.0
"""Seconds ``stop`` lets Lava shut down cleanly (freeing its shared memory) before killing."""
STOPPED = "stopped"
"""The child's answer to "stop"."""
DEATH_CHECK = 0.1
"""Seconds between checks that the child still lives while a reply is awaited."""


class LavaChipError(RuntimeError):
    """The Lava chip failed (its process died, Lava raised, or a call timed out); it is stopped."""


class LavaChip:
    """A ``LifNetwork`` running in Lava's fixed_pt models in a child process.

    Args:
        network: the network; every connection's weights on its legal grid.
        steps: the longest sample (time steps) one ``run`` may feed.
        timeout: seconds any one reply may take (starting, one sample, one write or read);
            beyond it the chip is stopped and ``LavaChipError`` raised.
    """

    def __init__(self, network: LifNetwork, steps: int, timeout: float = 120.0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        for index, layer in enumerate(network.layers):
            for name in CONNECTIONS:
                held = getattr(layer, name)
                if held is not None:
                    _check_on_grid(index, name, held, held.weights)
        self._network = network
        self.steps = steps
        self.timeout = timeout
        self._process: Any = None
        self._connection: Connection = None  # type: ignore[assignment]  (set by start)
        self._finalizer: Finalize | None = None
        self._pids: list[int] = []
        self._lock = threading.Lock()

    @property
    def network(self) -> LifNetwork:
        """The network with the weights the chip holds now."""
        return self._network

    def start(self) -> "LavaChip":
        """Start the child process and build, compile and start the Lava network in it."""
        with self._lock:
            if self._finalizer is not None and self._finalizer.still_active():
                return self
            context = multiprocessing.get_context("spawn")
            self._connection, child_end = context.Pipe()
            self._process = context.Process(  # not a daemon: Lava starts processes in it
                target=run_child, args=(child_end, _serve, (child_end, self._network, self.steps)))
            self._process.start()
            child_end.close()
            self._finalizer = Finalize(self, _shutdown, args=(self._process, self._connection),
                                       exitpriority=10)  # before multiprocessing joins children
            self._pids = self._receive("starting the Lava network")
        return self

    def stop(self) -> None:
        """Stop Lava (cleanly if it answers within ``STOP_GRACE`` s) and kill the child's
        process group. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "LavaChip":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def model_pids(self) -> list[int]:
        """The pids of the processes running the Lava models."""
        return list(self._pids)

    def write(self, layer: int, connection: str, weights: np.ndarray) -> np.ndarray:
        """Replace the weights (out, in) of ``layers[layer].<connection>``; returns the int64
        weights the Dense now holds, read back from it.

        Raises:
            ValueError: wrong shape, or values off the connection's legal grid (nothing sent).
        """
        held = self._connection_of(layer, connection)
        weights = _check_on_grid(layer, connection, held, weights)
        now = self._request("write", layer, connection, weights)
        self._network = self._network.with_weights(layer, connection, replace(held, weights=now))
        return now

    def read(self, layer: int, connection: str) -> np.ndarray:
        """The int64 weights (out, in) ``layers[layer].<connection>`` holds."""
        self._connection_of(layer, connection)
        return self._request("read", layer, connection)

    def write_slow(self, layer: int, connection: str, weights: np.ndarray) -> None:
        """``write`` through Lava's ``Var.set`` (one message per element; ~30 µs each)."""
        held = self._connection_of(layer, connection)
        weights = _check_on_grid(layer, connection, held, weights)
        self._request("write_slow", layer, connection, weights)
        self._network = self._network.with_weights(layer, connection,
                                                   replace(held, weights=weights))

    def read_slow(self, layer: int, connection: str) -> np.ndarray:
        """``read`` through Lava's ``Var.get`` (one message per element)."""
        self._connection_of(layer, connection)
        return self._request("read_slow", layer, connection)

    def run(self, inputs: np.ndarray, reset: bool = True) -> Trajectory:
        """Run the samples of inputs (B, T, M) ints, T ≤ steps, one after another.

        With ``reset`` every sample starts from Lava's start state (``network.ChipState.initial``:
        zeros, ATRLIF's θ = θ0, no pending activation), so the result equals
        ``emulate(network, inputs)[0]``; without it, every sample continues where the previous
        one (or the last run) stopped. Returns every state (B, T, N) int64 per layer.
        """
        inputs = np.asarray(inputs)
        width = self._network.layers[0].w_in.weights.shape[1]
        if (inputs.ndim != 3 or inputs.shape[2] != width or not 1 <= inputs.shape[1] <= self.steps
                or not np.issubdtype(inputs.dtype, np.integer)):
            raise ValueError(f"inputs must be integers (B, T, {width}), 1 ≤ T ≤ {self.steps}; "
                             f"got {inputs.dtype} {inputs.shape}")
        batch, steps = inputs.shape[:2]
        record = [{name: np.zeros((batch, steps, layer.neurons.size), dtype=np.int64)
                   for name in records_of(layer.neurons)} for layer in self._network.layers]
        with self._lock:
            self._send("run", inputs, bool(reset))
            for sample in range(batch):
                layers = self._receive(f"running sample {sample}")
                for per_layer, traces in zip(record, layers):
                    for values, trace in zip(per_layer.values(), traces):
                        values[sample] = trace
        return Trajectory(record)

    def _connection_of(self, layer: int, connection: str) -> DenseWeights:
        if not 0 <= layer < len(self._network.layers) or connection not in CONNECTIONS:
            raise ValueError(f"no connection {connection!r} in layer {layer} (layers 0.."
                             f"{len(self._network.layers) - 1}, {' or '.join(CONNECTIONS)})")
        held = getattr(self._network.layers[layer], connection)
        if held is None:
            raise ValueError(f"layer {layer} has no recurrent connection")
        return held

    def _request(self, command: str, *args: Any) -> Any:
        with self._lock:
            self._send(command, *args)
            return self._receive(command)

    def _send(self, command: str, *args: Any) -> None:
        if self._finalizer is None or not self._finalizer.still_active():
            raise LavaChipError("the Lava chip is not running (call start())")
        try:
            self._connection.send((command, args))
        except OSError:
            self._fail(f"the Lava chip's process died before {command}")

    def _receive(self, action: str) -> Any:
        died = f"the Lava chip's process died while {action}"
        outcome = _await_reply(self._process, self._connection, self.timeout)
        if outcome == "late":
            self._fail(f"{action} took longer than {self.timeout:g} s; stopped the Lava chip")
        if outcome == "died":
            self._fail(died)
        try:
            succeeded, value = self._connection.recv()
        except (EOFError, OSError):
            self._fail(died)
        if not succeeded:
            self._fail(f"{action} failed in Lava: {value}")
        return value

    def _fail(self, message: str) -> NoReturn:
        kill_group(self._process.pid)  # no clean shutdown: the child may be stuck
        self.stop()
        raise LavaChipError(message)


def _check_on_grid(layer: int, connection: str, held: DenseWeights,
                   weights: np.ndarray) -> np.ndarray:
    """``weights`` as int64 if it has ``held``'s shape and lies on its legal grid."""
    weights = np.asarray(weights)
    name = f"layer {layer} {connection}"
    if weights.shape != held.weights.shape:
        raise ValueError(f"{name} weights must have shape {held.weights.shape}, got "
                         f"{weights.shape}")
    if not np.issubdtype(weights.dtype, np.integer) or not np.array_equal(
            lava_dense_weights(weights, held.num_weight_bits, held.sign_mode), weights):
        raise ValueError(f"{name} weights must be integers on the {held.sign_mode} "
                         f"{held.num_weight_bits}-bit grid (hwloop.quantize.lava_dense_weights)")
    return weights.astype(np.int64)


def _serve(connection: Connection, network: LifNetwork, steps: int) -> None:
    """The child: build the Lava network, send the model pids, then answer each command
    (name, args) with (True, result) or (False, error) until "stop"; if the parent is gone,
    kill this process group."""
    from simulators.loihi2.lava_processes import LavaNetwork  # imports Lava

    chip = LavaNetwork(network, steps)
    lock, stopping = threading.Lock(), threading.Event()

    def reply(succeeded: bool, value: Any) -> None:
        with lock:
            connection.send((succeeded, value))

    threading.Thread(target=_watch, args=(chip.actors(), stopping, reply), daemon=True).start()
    reply(True, chip.model_pids())
    while True:
        try:
            command, args = connection.recv()
        except EOFError:
            os.killpg(0, signal.SIGKILL)
        if command == "stop":
            stopping.set()
            chip.stop()
            reply(True, STOPPED)
            return
        try:
            if command == "run":
                inputs, reset = args
                for sample in inputs:
                    if connection.poll():  # a command mid-batch: the parent gave up on it
                        break
                    reply(True, chip.run_sample(sample, reset))
            else:
                reply(True, getattr(chip, command)(*args))
        except Exception as error:  # reported; the parent then kills this process group
            reply(False, f"{type(error).__name__}: {error}")


def _watch(actors: list[Any], stopping: threading.Event,
           reply: Callable[[bool, Any], None]) -> None:
    """Child thread: if a Lava process ends other than by "stop" (a Lava call would then wait
    forever), report it and kill this process group."""
    ended = multiprocessing.connection.wait([actor.sentinel for actor in actors])
    if not stopping.is_set():
        pid = next(actor.pid for actor in actors if actor.sentinel in ended)
        reply(False, f"Lava process {pid} died")
        os.killpg(0, signal.SIGKILL)


def _await_reply(process: Any, connection: Connection, timeout: float) -> str:
    """"reply" once one is ready, "died" if the child ends first, "late" after ``timeout`` s.
    (Lava's processes inherit the child's ends of its pipes: its death alone closes nothing.)"""
    deadline = time.monotonic() + timeout
    while not connection.poll(DEATH_CHECK):
        if not process.is_alive():
            return "died"
        if time.monotonic() > deadline:
            return "late"
    return "reply"


def _shutdown(process: Any, connection: Connection) -> None:
    """Ask the child to stop Lava, wait up to ``STOP_GRACE`` s for it (skipping the replies of
    a run the parent gave up on), then kill its process group."""
    deadline = time.monotonic() + STOP_GRACE
    try:
        connection.send(("stop", ()))
        while _await_reply(process, connection, deadline - time.monotonic()) == "reply":
            if connection.recv() == (True, STOPPED):
                break
    except (EOFError, OSError):
        pass
    finally:
        kill_group(process.pid)
        process.kill()  # also before it led its group (still importing, say)
        process.join(timeout=5)
        connection.close()
