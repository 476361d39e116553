"""SpiNNaker 2 behind the backend contract: ``open_backend("spinnaker2://?bits=8")``, the
processing-element emulator in this process, or any device that speaks hwloop's serial protocol
(``port=socket://127.0.0.1:PORT``, a pseudo-terminal or a real serial device; docs/spinnaker2.md).

The host programs weight matrices; each becomes one projection of the chip, stored in the PE
SRAM in the backend's weight format (``f32``, ``s16.15``, ``int8``, ``int4``; ``bits=8`` and
``bits=4`` name the last two). The integer formats hold levels −L..L times a scale per
projection (a float32 word in SRAM), fixed at the layer's first write to range_factor·max|W|/L
(or by ``declare``; rounded to float32 either way), so trained levels keep their meaning; weights beyond the range are written at its end and counted
(``WriteReport.clipped``). Every write is encoded as the chip stores it, sent, and ``read``
decodes what the chip holds.

A network of ``eprop_alif`` hidden neurons (one layer, full recurrence) and an ``eprop_li``
readout is mapped as the e-prop network of spec A3 (input PE, worker PEs of 12 neurons, readout
PE): the chip then runs it (``run``, sample by sample, aligned with the host's steps) and learns
it on chip (``learn``: e-prop with Adam on the PEs, the host only streams samples and labels).
Any other network is held as weights only, for hardware in the loop with host-side neurons.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from hwloop.backends.base import (
    MAX_RANGE_FACTOR,
    Backend,
    Capabilities,
    DeviceRun,
    NeuronGroup,
    WriteReport,
    check_integer,
    check_number,
)
from hwloop.errors import RunError, UserError
from hwloop.quantize import DEFAULT_RANGE_FACTOR, top_level
from simulators.spinnaker2.chip import (
    NUMERIC_MODES,
    Chip,
    ChipError,
    EpropConfig,
    StorageConfig,
)
from simulators.spinnaker2.formats import FORMATS, decode, encode, payload_bytes
from simulators.spinnaker2.link import LinkError, RemoteChip, connect

BITS_FORMATS = {8: "int8", 4: "int4"}
"""``bits`` → the integer weight format that holds that many bits."""
LEVEL_BITS = {fmt: bits for bits, fmt in BITS_FORMATS.items()}
TRAINABLE_FORMATS = ("f32", "s16.15")
"""Formats the PEs can learn in (Adam's updates are far below one int8 level)."""
HIDDEN_MODEL, READOUT_MODEL = "eprop_alif", "eprop_li"
CHUNK_WEIGHTS = 8192
"""Weights per LOAD_WEIGHTS / READ_WEIGHTS request (the link splits them into frames)."""
FRAME_BYTES = 1024
FRAME_OVERHEAD = 19
"""Bytes on the wire per frame besides its payload: header 12, CRC 4, COBS ≤ 2, delimiter 1."""


class LinkedChip:
    """A chip over a serial link whose link failures raise RunError (a run stops with its
    last checkpoint kept, to resume from) instead of LinkError; every call as on ``Chip``."""

    def __init__(self, remote: RemoteChip, port: str) -> None:
        self.remote, self.port = remote, port

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.remote, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except LinkError as error:
                raise RunError(f"the SpiNNaker 2 link on {self.port} failed: {error}") from None

        return guarded


class SpiNNaker2Backend(Backend):
    """SpiNNaker 2 PEs holding (and possibly running and training) the network.

    Args:
        port: empty for the emulator in this process; else where a device listens, as
            pyserial opens it (``socket://127.0.0.1:PORT``, ``/dev/pts/N``, ``/dev/ttyUSB0``).
        numeric: ``f32`` or ``s16.15``, the arithmetic of the PEs (in-process emulator; a
            server has its own, ``hwloop device serve --numeric``).
        weight_format: ``f32``, ``s16.15``, ``int8`` or ``int4`` in SRAM and on the link.
        bits: 8 or 4 name ``int8`` / ``int4`` (what ``--bits`` gives a backend).
        range_factor: in (0, 100]; the scale of an integer format is fixed at the layer's first
            write so that range_factor·max|W| is the top level (unless ``declare`` gave one).
        timeout: seconds to wait for each reply on a link; retries: resends before giving up.
        n_pe: PEs of the in-process chip (1..152); clock_mhz: its PE clock (cycle model).
        baud: the link's symbol rate for the modelled device time of writes (10 bits a byte).
    """

    name = "spinnaker2"

    def __init__(self, port: str = "", numeric: str = "f32", weight_format: str = "f32",
                 bits: int | None = None, range_factor: float = DEFAULT_RANGE_FACTOR,
                 timeout: float = 0.5, retries: int = 3, n_pe: int = 152,
                 clock_mhz: float = 150.0, baud: int = 3_000_000) -> None:
        super().__init__()
        if numeric not in NUMERIC_MODES:
            raise ValueError(f"numeric must be one of {', '.join(NUMERIC_MODES)}, got {numeric!r}")
        if weight_format not in FORMATS:
            raise ValueError(f"weight_format must be one of {', '.join(FORMATS)}, "
                             f"got {weight_format!r}")
        if bits is not None:
            if bits not in BITS_FORMATS:
                raise ValueError(f"bits must be 8 (int8) or 4 (int4) on SpiNNaker 2, got {bits!r}")
            if weight_format not in ("f32", BITS_FORMATS[bits]):
                raise ValueError(f"bits={bits} contradicts weight_format={weight_format!r}; "
                                 "give one of them")
            weight_format = BITS_FORMATS[bits]
        self.port, self.numeric, self.weight_format = port, numeric, weight_format
        self.range_factor = check_number("range_factor", range_factor, 0, MAX_RANGE_FACTOR,
                                         open_low=True)
        self.timeout = check_number("timeout", timeout, 0, 3600, open_low=True, unit="s")
        self.retries = check_integer("retries", retries, 0, 100)
        self.n_pe = check_integer("n_pe", n_pe, 1, 152)
        self.clock_mhz = check_number("clock_mhz", clock_mhz, 0, 1000, open_low=True)
        self.baud = check_integer("baud", baud, 300, 100_000_000)
        self.chip: Any = None
        self.projections: list[str] = []
        self.scales: dict[str, float] = {}
        self.written: set[str] = set()
        self.sent: dict[str, bytes] = {}
        self.groups: list[NeuronGroup] = []

    # --- the device -------------------------------------------------------------------------

    def open(self) -> None:
        self._device()

    def close(self) -> None:
        if self.chip is not None and self.port:
            self.chip.close()
        self.chip = None

    def _device(self) -> Any:
        """The chip: connected (a port) or created (in process) at first use."""
        if self.chip is None:
            if self.port:
                try:
                    remote = connect(self.port, timeout=self.timeout, retries=self.retries)
                except LinkError as error:
                    raise UserError(f"no SpiNNaker 2 answers on {self.port!r} ({error}); start "
                                    "one with `hwloop device serve spinnaker2 --port ...` or "
                                    "fix the port") from None
                self.chip = LinkedChip(remote, self.port)
            else:
                self.chip = Chip(n_pe=self.n_pe, numeric=self.numeric,
                                 clock_hz=self.clock_mhz * 1e6)
        return self.chip

    def capabilities(self) -> Capabilities:
        bits = LEVEL_BITS.get(self.weight_format)
        trainable = self.weight_format in TRAINABLE_FORMATS
        return Capabilities(
            name=self.name, weight_format="levels" if bits else "float", bits=bits,
            levels=2 * top_level(bits) + 1 if bits else None,
            neurons=(HIDDEN_MODEL, READOUT_MODEL), learners=("eprop",) if trainable else (),
        )

    # --- layout -----------------------------------------------------------------------------

    def declare(self, layer: str, shape: tuple[int, int], step: np.ndarray | None = None) -> None:
        known = layer in self.shapes
        if known and tuple(shape) != self.shapes[layer]:
            raise ValueError(f"layer {layer!r} holds {self.shapes[layer]}; it cannot become "
                             f"{tuple(shape)} (reset the backend first)")
        if self.groups:
            self._check_network_layer(layer, tuple(shape))
        super().declare(layer, shape, step)
        if known:
            return
        try:
            if not self.groups:
                self._remap(self.projections + [layer])
            elif layer == self.projections[0]:  # the input width is known now: map the network
                self._device().load(self._eprop_config(shape[1]))
        except ChipError as error:
            del self.shapes[layer]
            self.scales.pop(layer, None)
            raise ValueError(f"SpiNNaker 2 cannot hold layer {layer!r}: {error}") from None

    def _check_network_layer(self, layer: str, shape: tuple[int, int]) -> None:
        """ValueError unless ``layer`` of ``shape`` belongs to the declared network, its input
        weights (which give the input width) declared first."""
        if layer not in self.projections:
            raise ValueError(f"layer {layer!r} is not part of the declared network "
                             f"({', '.join(self.projections)})")
        first = self.projections[0]
        if layer != first and first not in self.shapes:
            raise ValueError(f"declare {first!r} (it gives the input width) before {layer!r}")
        hidden, readout = self.groups
        width = shape[1] if layer == first else self.shapes[first][1]
        expected = [(hidden.size, width), (hidden.size, hidden.size),
                    (readout.size, hidden.size)][self.projections.index(layer)]
        if shape != expected:
            raise ValueError(f"layer {layer!r} of the declared network is {expected}, "
                             f"not {shape}")

    def _fix_step(self, layer: str, step: np.ndarray) -> None:
        if self.weight_format not in LEVEL_BITS:
            return
        if step.shape != (1, 1):
            raise ValueError(f"SpiNNaker 2 holds one scale per projection; the step for layer "
                             f"{layer!r} must be (1, 1), got {step.shape}")
        held = _float32(float(step[0, 0]))
        if layer in self.scales:
            self._refuse_other_step(layer, np.full((1, 1), self.scales[layer]),
                                    np.full((1, 1), held))
        self.scales[layer] = held

    def declare_network(self, groups: list[NeuronGroup]) -> None:
        if len(groups) != 2:
            raise ValueError("SpiNNaker 2 runs one hidden layer of eprop_alif neurons and an "
                             f"eprop_li readout; this network has {len(groups) - 1} hidden layers")
        hidden, readout = groups
        if hidden.model != HIDDEN_MODEL or readout.model != READOUT_MODEL:
            raise ValueError(f"SpiNNaker 2 runs {HIDDEN_MODEL} hidden neurons and an "
                             f"{READOUT_MODEL} readout, not {hidden.model!r} and "
                             f"{readout.model!r} (set neuron = \"{HIDDEN_MODEL}\")")
        if hidden.recurrence != "full" or hidden.skip:
            raise ValueError("SpiNNaker 2's e-prop network has full recurrence and no skip "
                             f"connections (layer {hidden.layer!r} has recurrence "
                             f"{hidden.recurrence!r}{', a skip' if hidden.skip else ''})")
        if self.shapes:
            raise ValueError("declare the network before its layers (or reset the backend)")
        self.groups = list(groups)
        self.projections = [f"{hidden.layer}.w_in", f"{hidden.layer}.w_rec",
                            f"{readout.layer}.w_in"]

    def _eprop_config(self, inputs: int) -> EpropConfig:
        """The declared network as the chip maps it, with ``inputs`` input channels."""
        hidden, readout = self.groups
        options = hidden.options
        return EpropConfig(
            inputs=inputs, hidden=hidden.size, outputs=readout.size,
            tau_m=float(options["tau_m"]), tau_a=float(options["tau_a"]),
            tau_out=float(readout.options["tau_out"]), v_th=float(options["v_th"]),
            beta=float(options["beta"]), gamma=float(options["gamma"]),
            width=float(options["width"]), side_width=6.0 * float(options["width"]),
            side_height=float(options["height"]), weight_format=self.weight_format,
            training=self.weight_format in TRAINABLE_FORMATS,
        )

    def _remap(self, projections: list[str]) -> None:
        """Hold ``projections`` as weights only: keep what is written, map anew, write back."""
        kept = {layer: self.read(layer) for layer in self.written}
        self._device().load(StorageConfig(tuple(self.shapes[name] for name in projections),
                                          self.weight_format))
        self.projections = projections
        for layer, weights in kept.items():
            self._write(layer, weights)

    # --- weights ----------------------------------------------------------------------------

    def program(self, layer: str, weights: np.ndarray) -> WriteReport:
        start = time.perf_counter()
        array = self.check_weights(layer, weights)
        if layer not in self.projections or (self.groups and not self._mapped()):
            raise ValueError(f"layer {layer!r} is not mapped on the chip yet; declare "
                             f"{self.projections[0] if self.groups else layer!r} first")
        if self.weight_format in LEVEL_BITS and layer not in self.scales:
            peak = self.range_factor * float(np.abs(array).max(initial=0.0))
            top = top_level(LEVEL_BITS[self.weight_format])
            self.scales[layer] = _float32(peak / top if peak > 0 else 1.0)
        previous = self.sent.get(layer)
        clipped, wire_bytes = self._write(layer, array)
        # what the chip now stores: the acknowledged payload (digital memory), so the write
        # costs no read-back over the link; the session's own read follows anyway
        held = self._sent_values(layer).reshape(array.shape)
        changed = held.size if previous is None else int(
            (held.ravel() != self._sent_values(layer, previous)).sum())
        return WriteReport(
            layer=layer, cells_programmed=changed, clipped=clipped,
            write_error=float(np.abs(held - array).mean()),
            device_seconds=10.0 * wire_bytes / self.baud,
            wall_seconds=time.perf_counter() - start,
            sram_bytes=payload_bytes(array.size, self.weight_format),
        )

    def _sent_values(self, layer: str, payload: bytes | None = None) -> np.ndarray:
        """The weights of the last payload written to ``layer`` (or of ``payload``)."""
        data = self.sent[layer] if payload is None else payload
        return decode(data, int(np.prod(self.shapes[layer])), self.weight_format,
                      self.scales.get(layer, 1.0))

    def _mapped(self) -> bool:
        return self.projections[0] in self.shapes

    def _write(self, layer: str, weights: np.ndarray) -> tuple[int, int]:
        """Encode ``weights`` as the chip stores them and write them in chunks; (weights
        clipped to the format's range, bytes on the wire)."""
        encoded = encode(weights, self.weight_format, self.scales.get(layer))
        projection = self.projections.index(layer)
        chip = self._device()
        wire = 0
        for first in range(0, weights.size, CHUNK_WEIGHTS):
            count = min(CHUNK_WEIGHTS, weights.size - first)
            low = payload_bytes(first, self.weight_format)
            chunk = encoded.payload[low:low + payload_bytes(count, self.weight_format)]
            try:
                chip.write_weights(projection, self.weight_format, encoded.scale, first, count,
                                   chunk)
            except ChipError as error:
                raise ValueError(f"SpiNNaker 2 refused the weights of layer {layer!r}: "
                                 f"{error}") from None
            wire += len(chunk) + FRAME_OVERHEAD * max(1, math.ceil(len(chunk) / FRAME_BYTES))
        self.written.add(layer)
        self.sent[layer] = encoded.payload
        return encoded.saturated, wire

    def read(self, layer: str) -> np.ndarray:
        if layer not in self.written:
            raise ValueError(f"layer {layer!r} has not been programmed on backend {self.name!r}")
        rows, cols = self.shapes[layer]
        projection = self.projections.index(layer)
        chip = self._device()
        parts, scale = [], 1.0
        for first in range(0, rows * cols, CHUNK_WEIGHTS):
            count = min(CHUNK_WEIGHTS, rows * cols - first)
            scale, payload = chip.read_weights(projection, self.weight_format, first, count)
            parts.append(decode(payload, count, self.weight_format, scale))
        return np.concatenate(parts).reshape(rows, cols)

    def weight_step(self, layer: str) -> np.ndarray | None:
        if self.weight_format not in LEVEL_BITS:
            return None
        if layer not in self.scales:
            raise ValueError(f"layer {layer!r} has not been programmed on backend {self.name!r}")
        return np.full((1, 1), self.scales[layer])

    # --- running and learning on the chip ---------------------------------------------------

    def _network_ready(self) -> None:
        if not self.groups:
            raise ValueError(f"no network was declared on backend {self.name!r}")
        missing = [layer for layer in self.projections if layer not in self.written]
        if missing:
            raise ValueError(f"layer {missing[0]!r} has not been programmed")

    def _inject(self, sample: np.ndarray) -> None:
        """Queue one sample (T, M) on the input PE: spikes where it is binary, else values."""
        chip = self._device()
        binary = bool(np.isin(sample, (0.0, 1.0)).all())
        for step, row in enumerate(sample):
            active = np.flatnonzero(row)
            if binary:
                chip.inject_spikes(step, [int(i) for i in active])
            else:
                chip.inject_values(step, [(int(i), float(row[i])) for i in active])

    def _checked_inputs(self, inputs: np.ndarray) -> np.ndarray:
        self._network_ready()
        array = np.asarray(inputs, dtype=np.float64)
        width = self.shapes[self.projections[0]][1]
        if array.ndim != 3 or array.shape[2] != width or array.shape[1] < 1:
            raise ValueError(f"inputs must be (batch, steps >= 1, {width}), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("inputs contain NaN or inf")
        return array

    def run(self, inputs: np.ndarray) -> DeviceRun:
        array = self._checked_inputs(inputs)
        spikes, outputs = [], []
        for sample in array:
            self._inject(sample)
            result = self._device().run(sample.shape[0], 0)
            spikes.append(result.spikes.astype(np.float64))
            outputs.append(result.outputs.astype(np.float64))
        return DeviceRun(spikes=[np.stack(spikes)], outputs=np.stack(outputs))

    def learn(self, inputs: np.ndarray, labels: np.ndarray, ignore_first: int,
              learning_rate: float) -> DeviceRun:
        if "eprop" not in self.capabilities().learners:
            raise ValueError(f"SpiNNaker 2 learns in {' or '.join(TRAINABLE_FORMATS)} weights, "
                             f"not {self.weight_format} (set weight_format)")
        array = self._checked_inputs(inputs)
        steps = array.shape[1]
        check_integer("ignore_first", ignore_first, 0, steps - 1)
        check_number("learning_rate", learning_rate, 0, 1e3, open_low=True)
        chip = self._device()
        chip.configure(learning_rate=float(learning_rate), ignore_first=int(ignore_first))
        outputs, spikes, losses = [], [], []
        for index, (sample, label) in enumerate(zip(array, np.asarray(labels))):
            self._inject(sample)
            chip.target(index, int(label))
            result = chip.run(steps, 1)
            outputs.append(result.outputs.astype(np.float64))
            spikes.append(result.spikes.astype(np.float64))
            losses.append(float(result.loss))
        return DeviceRun(spikes=[np.stack(spikes)], outputs=np.stack(outputs),
                         loss=float(np.mean(losses)))

    # --- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self.projections, self.groups = [], []
        self.scales.clear()
        self.written.clear()
        self.sent.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "projections": list(self.projections),
            "scales": dict(self.scales),
            "written": sorted(self.written),
            "groups": [dict(layer=g.layer, model=g.model, options=dict(g.options), size=g.size,
                            recurrence=g.recurrence, skip=g.skip) for g in self.groups],
            "chip": self._device().state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._device().load_state_dict(state["chip"])
        self.shapes = {k: (int(v[0]), int(v[1])) for k, v in state["shapes"].items()}
        self.projections = list(state["projections"])
        self.scales = {k: float(v) for k, v in state["scales"].items()}
        self.written = set(state["written"])
        self.sent = {layer: encode(self.read(layer), self.weight_format,
                                   self.scales.get(layer)).payload for layer in self.written}
        self.groups = [NeuronGroup(**group) for group in state["groups"]]


def _float32(value: float) -> float:
    """``value`` rounded to float32, as the chip stores a projection's scale."""
    return float(np.float32(value))
