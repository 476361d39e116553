"""The SpiNNaker 2 chip emulator: PEs with 128 KiB of memory each, the multicast router, and
the kernels that run an e-prop network on them or hold weights for the host (spec A4).

``Chip.load`` maps a network: an ``EpropConfig`` (an ALIF e-prop network, spec A3: PE 0 input
source, workers of ``per_worker`` neurons, a readout PE; ``mapping.map_network``) or a
``StorageConfig`` (weights only, rows spread over PEs 1.. in the storage format). Every region
is placed in its PE's ``Sram`` and all model state lives in numpy views into ``pe.memory``,
so ``write_memory``/``read_memory`` act on the real state. ``run`` steps the chip tick by tick
(``kernels``); each PE-tick's cycles (``cycles``) are checked against ``clock_hz × tick_s``
(an overrun) and priced by the energy model (``energy``, a model estimate).

Requests a user can get wrong raise ``ChipError`` whose ``code`` is the link's NAK code:
3 bad length, 4 address out of range, 5 SRAM overflow, 6 busy (overrun when
``overrun_fatal``), 7 bad format.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.spinnaker2 import storage
from simulators.spinnaker2.cycles import CycleModel
from simulators.spinnaker2.energy import EnergyModel
from simulators.spinnaker2.fixed import OVERFLOWS, ROUNDINGS, Fixed
from simulators.spinnaker2.formats import FORMATS, payload_bytes
from simulators.spinnaker2.kernels import (
    INPUT,
    KIND_MASK,
    LEARN,
    LEARN_MASK,
    OUTPUT,
    SPIKE,
    ReadoutKernel,
    SourceKernel,
    WorkerKernel,
    key,
)
from simulators.spinnaker2.mapping import EpropNetwork, map_network
from simulators.spinnaker2.numerics import (
    F32,
    NUMERIC_MODES,
    S1615,
    SURROGATES,
    Surrogate,
)
from simulators.spinnaker2.router import Packets, Router
from simulators.spinnaker2.sram import PE_SRAM_BYTES, Region, Sram, SramOverflowError
from simulators.spinnaker2.storage import Block, Projection

PROJECTION_NAMES = ("W_in", "W_rec", "W_out")
"""Projection ids 0, 1, 2 of an e-prop network."""
TRAINABLE_FORMATS = ("f32", "s16.15")
SCALE_WORD = 4
SAMPLE_REGIONS = ("neuron state", "receive x", "receive z", "trace eps_a", "trace e_bar",
                  "trace E", "presynaptic eps_v", "filtered spikes z_hat", "readout state",
                  "z_hat sum", "input values")
"""Regions zeroed at the start of every sample (weights, Adam state and step persist)."""
LEARNING_REGIONS = ("gradients", "Adam m", "Adam v", "adam step", "trace eps_a",
                    "trace e_bar", "trace E", "presynaptic eps_v", "gradients out",
                    "Adam m out", "Adam v out", "z_hat sum")
"""Regions zeroed by ``reset(2)``."""
CONFIGURABLE = ("tau_m", "tau_a", "tau_out", "v_th", "beta", "gamma", "width", "side_width",
                "side_height", "learning_rate", "beta1", "beta2", "epsilon", "l2",
                "ignore_first")
NO_LABEL = -1


class ChipError(Exception):
    """A refused request; ``code`` is the NAK error code (spec A4.6)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EpropConfig:
    """An ALIF e-prop network (spec A3); times in ticks. ``weight_format`` is the storage in
    SRAM; ``training=False`` keeps weights and neuron state only; the readout ignores the
    first ``ignore_first`` steps of a sample."""

    inputs: int = 80
    hidden: int = 120
    outputs: int = 12
    per_worker: int = 12
    tau_m: float = 5.0
    tau_a: float = 150.0
    tau_out: float = 10.0
    v_th: float = 1.6
    beta: float = 0.184
    gamma: float = 0.5
    width: float = 0.5
    side_width: float = 3.0
    side_height: float = 0.15
    learning_rate: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-5
    l2: float = 1e-5
    weight_format: str = "f32"
    training: bool = True
    ignore_first: int = 0


@dataclass(frozen=True)
class StorageConfig:
    """Weights only: projection id → (rows, cols) = (out, in), stored in ``weight_format``."""

    shapes: tuple[tuple[int, int], ...]
    weight_format: str = "f32"


@dataclass
class RunResult:
    """What a run returns; records are aligned to the sample's steps."""

    ticks: int  # ticks the chip ran (steps + pipeline depth)
    overruns: int  # PE-ticks whose cycles exceeded clock_hz × tick_s
    dropped: int  # packets no router entry matched
    outputs: np.ndarray  # (steps, outputs) float32 readout y
    spikes: np.ndarray  # (steps, hidden) uint8 hidden spikes
    loss: float | None  # training: the sample's cross-entropy
    cycles: np.ndarray  # (ticks, used PEs) int64 modelled cycles
    energy_j: float  # model estimate of the run (J)


@dataclass
class Pe:
    """A processing element: its 131,072 B of memory and the layout of its regions."""

    id: int
    sram: Sram
    memory: bytearray = field(default_factory=lambda: bytearray(PE_SRAM_BYTES))

    def region(self, name: str) -> Region:
        for region in self.sram.regions:
            if region.name == name:
                return region
        raise KeyError(f"PE {self.id} has no region {name!r}")

    def has(self, name: str) -> bool:
        return any(region.name == name for region in self.sram.regions)

    def array(self, name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A numpy view (``shape``, ``dtype``) onto the start of region ``name``."""
        region, dtype = self.region(name), np.dtype(dtype)
        count = math.prod(shape)
        if count * dtype.itemsize > region.size:
            raise ValueError(f"PE {self.id}: {shape} {dtype} exceeds region {name!r}")
        return np.frombuffer(self.memory, dtype, count, region.offset).reshape(shape)

    def zero(self, name: str | None = None) -> None:
        """Zero region ``name`` (if the PE has it), or the whole memory."""
        if name is None:
            self.memory[:] = bytes(len(self.memory))
        elif self.has(name):
            region = self.region(name)
            self.memory[region.offset:region.offset + region.size] = bytes(region.size)


@dataclass
class _Network:
    """What ``load`` builds, swapped in whole (a refused load leaves the chip as it was)."""

    config: EpropConfig | StorageConfig
    pes: list[Pe]
    used: list[int]
    projections: list[Projection]
    router: Router
    kernels: list[SourceKernel | WorkerKernel | ReadoutKernel]


class Chip:
    """A SpiNNaker 2 chip of ``n_pe`` PEs (spec A4.1).

    Args:
        n_pe: PEs on the chip (152).
        numeric: ``f32`` (float32 FPU) or ``s16.15`` (fixed point; ``numerics``).
        clock_hz: PE clock (150 MHz at 0.5 V, 300 MHz at 0.8 V).
        tick_s: the tick (s); a PE overruns when its cycles exceed ``clock_hz × tick_s``.
        rounding, overflow: s16.15 products and sums (``fixed.Fixed``). ``half_up`` is the
            default: floor biases a sum of 80 products by ≈40 steps (≈1.2e-3).
        surrogate: s16.15 pseudo-derivative: ``float`` or the 256-entry ``lut``.
        overrun_fatal: an overrun raises ChipError 6 instead of being counted.
        cycle_model, energy_model: the cost models (defaults: ``CycleModel()``,
            ``EnergyModel()``).
    """

    def __init__(self, n_pe: int = 152, numeric: str = "f32", clock_hz: float = 150e6,
                 tick_s: float = 1e-3, rounding: str = "half_up", overflow: str = "saturate",
                 surrogate: str = "float", overrun_fatal: bool = False,
                 cycle_model: CycleModel | None = None,
                 energy_model: EnergyModel | None = None) -> None:
        if numeric not in NUMERIC_MODES:
            raise ValueError(f"unknown numeric mode {numeric!r} (choose from: "
                             f"{', '.join(NUMERIC_MODES)})")
        if surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate!r} (choose from: "
                             f"{', '.join(SURROGATES)})")
        if n_pe < 1 or clock_hz <= 0 or tick_s <= 0:
            raise ValueError("n_pe, clock_hz and tick_s must be positive")
        self.n_pe, self.numeric, self.clock_hz, self.tick_s = n_pe, numeric, clock_hz, tick_s
        self.surrogate, self.overrun_fatal = surrogate, overrun_fatal
        self.fixed = Fixed(overflow=overflow, rounding=rounding)
        self.cycle_model = cycle_model or CycleModel()
        self.energy_model = energy_model or EnergyModel()
        self.tick = self.samples = self.overruns = 0
        self.pending: dict[int, dict[int, float]] = {}
        self._net = _Network(None, [Pe(i, Sram(i)) for i in range(n_pe)], [], [], Router(), [])

    # -- mapping -------------------------------------------------------------------------------

    @property
    def pes(self) -> list[Pe]:
        return self._net.pes

    @property
    def config(self) -> EpropConfig | StorageConfig | None:
        return self._net.config

    def load(self, config: EpropConfig | StorageConfig) -> None:
        """Map ``config`` and allocate its regions, replacing any previous network; weights and
        state start at zero. Refused (ChipError 5 with the SRAM table, 7 for a bad config)
        without changing the chip."""
        if isinstance(config, EpropConfig):
            net = self._build_eprop(config)
        elif isinstance(config, StorageConfig):
            net = self._build_storage(config)
        else:
            raise ChipError(7, f"load takes an EpropConfig or a StorageConfig, got "
                               f"{type(config).__name__}")
        self._net, self.pending = net, {}
        self._set_label(NO_LABEL)

    def _build_eprop(self, config: EpropConfig) -> _Network:
        _check_eprop(config)
        network = EpropNetwork(config.inputs, config.hidden, config.outputs)
        fmt, training = config.weight_format, config.training
        scaled = fmt in ("int8", "int4")
        try:
            placement = map_network(network, config.per_worker,
                                    optimizer="adam" if training else "none",
                                    training=training, chip_pes=self.n_pe, weight_format=fmt)
            for sram in placement.pes[1:-1]:
                sram.place([("receive x", 4 * config.inputs), ("receive z", config.hidden)]
                           + [("adam step", 4)] * training
                           + [("W_in scale", SCALE_WORD), ("W_rec scale", SCALE_WORD)] * scaled)
            placement.pes[-1].place([("receive z", config.hidden), ("control", 8)]
                                    + [("z_hat sum", 4 * config.hidden), ("adam step", 4)]
                                    * training + [("W_out scale", SCALE_WORD)] * scaled)
        except SramOverflowError as error:
            raise ChipError(5, str(error)) from None
        except ValueError as error:
            raise ChipError(5, str(error)) from None
        srams = {sram.pe: sram for sram in placement.pes}
        pes = [Pe(i, srams.get(i, Sram(i))) for i in range(self.n_pe)]
        workers = [(index, first, last)
                   for index, (first, last) in enumerate(placement.slices, start=1)]
        readout = len(workers) + 1
        projections = []
        for name, cols, holders in (("W_in", config.inputs, workers),
                                    ("W_rec", config.hidden, workers),
                                    ("W_out", config.hidden, [(readout, 0, config.outputs)])):
            blocks = tuple(
                Block(pe, pes[pe].region(name).offset, first * cols, (last - first) * cols,
                      pes[pe].region(f"{name} scale").offset if scaled else None)
                for pe, first, last in holders)
            rows = config.outputs if name == "W_out" else config.hidden
            projections.append(Projection(name, rows, cols, fmt, blocks))
        router = Router()
        worker_pes = {pe for pe, _, _ in workers}
        router.add(int(key(INPUT, 0)), KIND_MASK, worker_pes)
        router.add(int(key(SPIKE, 0)), KIND_MASK, worker_pes | {readout}, host=True)
        router.add(int(key(OUTPUT, 0)), KIND_MASK, set(), host=True)
        for pe, _, _ in workers:
            router.add(int(key(LEARN, 0, pe)), LEARN_MASK, {pe})
        net = _Network(config, pes, [0, *(pe for pe, _, _ in workers), readout], projections,
                       router, [])
        net.kernels = self._kernels(net)
        return net

    def _kernels(self, net: _Network) -> list[SourceKernel | WorkerKernel | ReadoutKernel]:
        config = net.config
        surrogate = Surrogate.of(config.gamma, config.width, config.side_width,
                                 config.side_height)
        numerics = (F32(surrogate) if self.numeric == "f32"
                    else S1615(surrogate, self.fixed, self.surrogate))
        kind = "float" if self.numeric == "f32" else self.surrogate
        workers = [(pe, first, last) for pe, (first, last) in
                   zip(net.used[1:-1], _slices(config))]
        made: list[SourceKernel | WorkerKernel | ReadoutKernel] = [
            SourceKernel(net.pes[0], config, numerics)]
        made += [WorkerKernel(net.pes[pe], first, last, config, numerics, self.fixed, kind,
                              (net.projections[0], net.projections[1]))
                 for pe, first, last in workers]
        made.append(ReadoutKernel(net.pes[net.used[-1]], config, numerics, self.fixed,
                                  net.projections[2], workers))
        return made

    def _build_storage(self, config: StorageConfig) -> _Network:
        fmt = config.weight_format
        if fmt not in FORMATS:
            raise ChipError(7, f"unknown weight format {fmt!r} (choose from: "
                               f"{', '.join(FORMATS)})")
        if not config.shapes or any(len(s) != 2 or min(s) < 1 for s in config.shapes):
            raise ChipError(7, f"StorageConfig shapes must be (rows, cols) pairs >= 1, got "
                               f"{config.shapes}")
        scaled = fmt in ("int8", "int4")
        srams = {1: Sram(1)} if self.n_pe > 1 else {}
        pe, projections = 1, []
        for index, (rows, cols) in enumerate(config.shapes):
            name = PROJECTION_NAMES[index] if index < len(PROJECTION_NAMES) else f"P{index}"
            blocks, row = [], 0
            while row < rows:
                if pe >= self.n_pe:
                    needed = sum(payload_bytes(r * c, fmt) for r, c in config.shapes)
                    raise ChipError(5, f"the weights ({needed:,} B in {fmt}) do not fit in "
                                       f"PEs 1..{self.n_pe - 1}; the last PE holds:\n"
                                       + srams[pe - 1].describe())
                sram = srams.setdefault(pe, Sram(pe))
                room = sram.free - 3 - (SCALE_WORD + 3) * scaled
                fit = (2 * room) // cols if fmt == "int4" else room // (
                    cols * payload_bytes(1, fmt))
                take = min(rows - row, max(fit, 0))
                if take == 0:
                    if sram.model_bytes == 0:
                        planned = [Region(f"{name} row", sram.used, payload_bytes(cols, fmt))]
                        raise ChipError(5, "one row does not fit in a PE:\n"
                                           + sram.describe(planned))
                    pe += 1
                    continue
                regions = [(f"{name} rows {row}..{row + take - 1}",
                            payload_bytes(take * cols, fmt))]
                regions += [(f"{name} scale {row}", SCALE_WORD)] * scaled
                offsets = sram.place(regions)
                blocks.append(Block(pe, offsets[0], row * cols, take * cols,
                                    offsets[1] if scaled else None))
                row += take
            projections.append(Projection(name, rows, cols, fmt, tuple(blocks)))
        pes = [Pe(i, srams.get(i, Sram(i))) for i in range(self.n_pe)]
        used = sorted({block.pe for p in projections for block in p.blocks})
        return _Network(config, pes, used, projections, Router(), [])

    # -- weights and memory ---------------------------------------------------------------------

    def write_weights(self, projection: int, fmt: str, scale: float, first: int, count: int,
                      payload: bytes) -> None:
        """Store ``count`` weights of ``projection`` from flat (out, in) index ``first``;
        ``fmt`` must be the storage format; int8/int4 set the projection's ``scale``."""
        target = self._projection(projection, fmt, first, count)
        if len(payload) != payload_bytes(count, fmt):
            raise ChipError(3, f"{count} weights in {fmt} take {payload_bytes(count, fmt)} B, "
                               f"got {len(payload)} B")
        if fmt in ("int8", "int4"):
            if not (math.isfinite(scale) and scale > 0):
                raise ChipError(7, f"the scale of {fmt} weights must be positive and finite, "
                                   f"got {scale}")
            for block in target.blocks:
                storage.set_scale(self.pes[block.pe].memory, block, scale)
        values = storage.payload_elements(bytes(payload), count, fmt)
        for block, lo, hi in _overlaps(target, first, count):
            storage.write_elements(self.pes[block.pe].memory, block, fmt, lo - block.first,
                                   values[lo - first:hi - first])

    def read_weights(self, projection: int, fmt: str, first: int, count: int
                     ) -> tuple[float, bytes]:
        """(scale, payload) of ``count`` weights from flat index ``first``, as stored."""
        target = self._projection(projection, fmt, first, count)
        parts = [storage.elements(self.pes[block.pe].memory, block, fmt)
                 [lo - block.first:hi - block.first] for block, lo, hi in
                 _overlaps(target, first, count)]
        values = np.concatenate(parts) if parts else np.zeros(0, np.int8)
        head = target.blocks[0]
        return storage.scale(self.pes[head.pe].memory, head), storage.elements_payload(values,
                                                                                       fmt)

    def _projection(self, projection: int, fmt: str, first: int, count: int) -> Projection:
        if self.config is None:
            raise ChipError(7, "no network is loaded: load an EpropConfig or StorageConfig")
        if not 0 <= projection < len(self._net.projections):
            raise ChipError(4, f"projection {projection} does not exist (0.."
                               f"{len(self._net.projections) - 1})")
        target = self._net.projections[projection]
        if fmt != target.fmt:
            raise ChipError(7, f"{target.name} is stored as {target.fmt}, not {fmt}: send "
                               f"{target.fmt} weights")
        if first < 0 or count < 0 or first + count > target.size:
            raise ChipError(4, f"weights {first}..{first + count - 1} lie outside "
                               f"{target.name}'s {target.size} ({target.rows}x{target.cols})")
        return target

    def write_memory(self, pe: int, address: int, data: bytes) -> None:
        """Write ``data`` at PE-local byte ``address`` (bounds-checked: ChipError 4)."""
        self._check_address(pe, address, len(data))
        self.pes[pe].memory[address:address + len(data)] = data

    def read_memory(self, pe: int, address: int, nbytes: int) -> bytes:
        """``nbytes`` from PE-local byte ``address`` (bounds-checked: ChipError 4)."""
        self._check_address(pe, address, nbytes)
        return bytes(self.pes[pe].memory[address:address + nbytes])

    def _check_address(self, pe: int, address: int, nbytes: int) -> None:
        if not 0 <= pe < self.n_pe:
            raise ChipError(4, f"PE {pe} does not exist (0..{self.n_pe - 1})")
        if address < 0 or nbytes < 0 or address + nbytes > PE_SRAM_BYTES:
            raise ChipError(4, f"bytes {address}..{address + nbytes - 1} lie outside PE {pe}'s "
                               f"{PE_SRAM_BYTES:,} B")

    # -- running --------------------------------------------------------------------------------

    def inject_values(self, step: int, pairs: list[tuple[int, float]]) -> None:
        """Input ``key`` takes ``value`` at ``step`` of the next run (others are 0)."""
        config = self._eprop()
        if step < 0:
            raise ChipError(4, f"step must be >= 0, got {step}")
        values = self.pending.setdefault(step, {})
        for index, value in pairs:
            if not 0 <= index < config.inputs:
                raise ChipError(4, f"input key {index} does not exist (0.."
                                   f"{config.inputs - 1})")
            values[int(index)] = float(value)

    def inject_spikes(self, step: int, keys: list[int]) -> None:
        """Inputs ``keys`` are 1.0 at ``step`` of the next run."""
        self.inject_values(step, [(index, 1.0) for index in keys])

    def target(self, sample_id: int, label: int) -> None:
        """The label of the next training sample (``sample_id`` is the host's, unused)."""
        config = self._eprop()
        if not 0 <= label < config.outputs:
            raise ChipError(4, f"label {label} does not exist (0..{config.outputs - 1})")
        self._set_label(label)

    def run(self, steps: int, mode: int) -> RunResult:
        """Run a sample of ``steps`` steps: mode 0 infer, 1 train (learning signal and Adam at
        its end), 2 step-and-report (infer, continuing the neuron state of the previous run
        instead of resetting it). Consumes the injected inputs of steps 0..steps − 1."""
        config = self._eprop()
        if mode not in (0, 1, 2):
            raise ChipError(7, f"unknown run mode {mode} (0 infer, 1 train, 2 step)")
        if steps < 1:
            raise ChipError(3, f"a run needs at least 1 step, got {steps}")
        train = mode == 1
        readout = self._net.kernels[-1]
        if train:
            if not config.training:
                raise ChipError(7, "this network was loaded with training=False; load it "
                                   "with training=True to train")
            if int(readout.label[0]) == NO_LABEL:
                raise ChipError(7, "a training run needs a label: call target() first")
            if steps <= config.ignore_first:
                raise ChipError(3, f"{steps} steps leave none after ignore_first="
                                   f"{config.ignore_first}")
        if mode != 2:
            for pe in self._net.used:
                for name in SAMPLE_REGIONS:
                    self.pes[pe].zero(name)
        injected = {step: self.pending.pop(step) for step in range(steps)
                    if step in self.pending}
        source, *workers, _ = self._net.kernels
        source.begin(steps, injected)
        for kernel in (*workers, readout):
            kernel.begin(steps, train)
        ticks = steps + 2 + train
        router, used = self._net.router, self._net.used
        dropped_before = router.dropped
        pe_cycles = np.zeros((ticks, len(used)), np.int64)
        outputs = np.zeros((steps, config.outputs), np.float32)
        spikes = np.zeros((steps, config.hidden), np.uint8)
        budget, sent = self.clock_hz * self.tick_s, 0
        for tick in range(ticks):
            inboxes, host = router.deliver(tick)
            self._record(host, tick, outputs, spikes)
            batches = []
            for column, (pe, kernel) in enumerate(zip(used, self._net.kernels)):
                packets, ops = kernel.tick(tick, inboxes.get(pe, Packets.empty()))
                pe_cycles[tick, column] = self.cycle_model.cycles(ops)
                batches.append(packets)
                if self.overrun_fatal and pe_cycles[tick, column] > budget:
                    raise ChipError(6, f"PE {pe} overran tick {tick}: "
                                       f"{pe_cycles[tick, column]:,} cycles > {budget:,.0f}")
            batch = Packets.concat(batches)
            sent += len(batch)
            router.send(tick, batch)
        _, host = router.deliver(ticks)
        self._record(host, ticks, outputs, spikes)
        overruns = int((pe_cycles > budget).sum())
        self.tick += ticks
        self.samples += mode != 2
        self.overruns += overruns
        loss = float(readout.loss[0]) if train else None
        if train:
            self._set_label(NO_LABEL)
        return RunResult(ticks, overruns, router.dropped - dropped_before, outputs, spikes, loss,
                         pe_cycles, self.energy_model.energy(pe_cycles, sent, self.tick_s))

    def _record(self, host: Packets, tick: int, outputs: np.ndarray,
                spikes: np.ndarray) -> None:
        """Host packets arriving at ``tick``: spikes of step tick − 2, outputs of tick − 3."""
        kinds = host.keys >> 24
        if 0 <= tick - 2 < len(spikes):
            spikes[tick - 2, host.keys[kinds == SPIKE] & 0xFFFF] = 1
        if 0 <= tick - 3 < len(outputs):
            values = host.select(kinds == OUTPUT)
            outputs[tick - 3, values.keys & 0xFFFF] = self._net.kernels[0].numerics.to_f32(
                self._net.kernels[0].numerics.decode(values.payloads))

    def _eprop(self) -> EpropConfig:
        if not isinstance(self.config, EpropConfig):
            raise ChipError(7, "no e-prop network is loaded: load an EpropConfig to run it")
        return self.config

    def _set_label(self, label: int) -> None:
        if isinstance(self.config, EpropConfig):
            self._net.kernels[-1].label[0] = label

    def gather(self, name: str) -> np.ndarray:
        """A worker state (``v``, ``a``, ``z``, ``psi``, ``A``, ``L``, ``eps_a``, ``e_bar``,
        ``E``, ...) of all hidden neurons, concatenated along the neuron axis (a copy)."""
        self._eprop()
        return np.concatenate([getattr(kernel, name) for kernel in self._net.kernels[1:-1]])

    @property
    def readout(self) -> ReadoutKernel:
        """The readout kernel (its ``z_hat``, ``y``, ``y_bar``, ``gradient`` views)."""
        self._eprop()
        return self._net.kernels[-1]

    # -- control --------------------------------------------------------------------------------

    def configure(self, **values: float) -> None:
        """Change e-prop constants (``CONFIGURABLE``), ``clock_hz`` or ``tick_s`` at runtime."""
        chip = {name: values.pop(name) for name in ("clock_hz", "tick_s") if name in values}
        unknown = sorted(set(values) - set(CONFIGURABLE))
        if unknown:
            raise ChipError(7, f"cannot configure {', '.join(unknown)} (choose from: "
                               f"{', '.join(CONFIGURABLE + ('clock_hz', 'tick_s'))})")
        if any(not value > 0 for value in chip.values()):
            raise ChipError(7, f"clock_hz and tick_s must be positive, got {chip}")
        if values:
            config = dataclasses.replace(self._eprop(), **values)
            _check_eprop(config)
            self._net.config = config
            self._net.kernels = self._kernels(self._net)
        for name, value in chip.items():
            setattr(self, name, float(value))

    def reset(self, scope: int, pe: int | None = None) -> None:
        """Scope 0: the whole chip (memories, counters, pending inputs; the mapping stays);
        1: PE ``pe``'s memory; 2: the learning state (gradients, Adam, traces; not weights)."""
        if scope == 0:
            for each in self.pes:
                each.zero()
            self.tick = self.samples = self.overruns = 0
            self.fixed.saturations = 0
            self._net.router.clear()
            self.pending = {}
            self._set_label(NO_LABEL)
        elif scope == 1:
            if pe is None or not 0 <= pe < self.n_pe:
                raise ChipError(4, f"reset of one PE needs a PE 0..{self.n_pe - 1}, got {pe}")
            self.pes[pe].zero()
            if self._net.used and pe == self._net.used[-1]:
                self._set_label(NO_LABEL)
        elif scope == 2:
            for each in self.pes:
                for name in LEARNING_REGIONS:
                    each.zero(name)
        else:
            raise ChipError(7, f"unknown reset scope {scope} (0 chip, 1 one PE, 2 learning)")

    def status(self) -> dict[str, Any]:
        """Counters and the SRAM use of every PE the network uses."""
        return {"tick": self.tick, "samples": self.samples, "overruns": self.overruns,
                "dropped": self._net.router.dropped, "saturations": self.fixed.saturations,
                "sram": [(pe, self.pes[pe].sram.used, self.pes[pe].sram.total)
                         for pe in self._net.used]}

    def state_dict(self) -> dict[str, Any]:
        """The full state: chip settings, the network's config, every non-zero PE memory (a
        uint8 array under the PE's id as a string), counters, pending inputs (string keys).
        Run files store it as it is; ``load_state_dict`` continues bit-identically."""
        config = self.config
        kind = ("eprop" if isinstance(config, EpropConfig)
                else "storage" if isinstance(config, StorageConfig) else None)
        return {
            "chip": {"n_pe": self.n_pe, "numeric": self.numeric, "clock_hz": self.clock_hz,
                     "tick_s": self.tick_s, "rounding": self.fixed.rounding,
                     "overflow": self.fixed.overflow, "surrogate": self.surrogate,
                     "overrun_fatal": self.overrun_fatal,
                     "cycle_model": dataclasses.asdict(self.cycle_model),
                     "energy_model": dataclasses.asdict(self.energy_model)},
            "config": None if config is None else {"kind": kind, **dataclasses.asdict(config)},
            "memories": {str(pe.id): np.frombuffer(pe.memory, np.uint8).copy()
                         for pe in self.pes if np.frombuffer(pe.memory, np.uint8).any()},
            "counters": {"tick": self.tick, "samples": self.samples,
                         "overruns": self.overruns, "dropped": self._net.router.dropped,
                         "saturations": self.fixed.saturations},
            "pending": {str(step): {str(key): value for key, value in values.items()}
                        for step, values in self.pending.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` (ChipError 7 if it is malformed)."""
        try:
            chip, config = state["chip"], state["config"]
            settings = {name: chip[name] for name in ("n_pe", "numeric", "clock_hz", "tick_s",
                                                      "rounding", "overflow", "surrogate",
                                                      "overrun_fatal")}
            if settings["rounding"] not in ROUNDINGS or settings["overflow"] not in OVERFLOWS:
                raise ValueError("unknown rounding or overflow")
            restored = Chip(**settings, cycle_model=CycleModel(**chip["cycle_model"]),
                            energy_model=EnergyModel(**chip["energy_model"]))
            if config is not None:
                fields = {name: value for name, value in config.items() if name != "kind"}
                if config["kind"] == "eprop":
                    restored.load(EpropConfig(**fields))
                else:
                    fields["shapes"] = tuple(tuple(shape) for shape in fields["shapes"])
                    restored.load(StorageConfig(**fields))
            for pe, memory in state["memories"].items():
                if len(memory) != PE_SRAM_BYTES:
                    raise ValueError(f"PE {pe}'s memory has {len(memory)} B")
                restored.pes[int(pe)].memory[:] = np.asarray(memory, np.uint8).tobytes()
            counters = state["counters"]
            restored.tick, restored.samples = counters["tick"], counters["samples"]
            restored.overruns = counters["overruns"]
            restored._net.router.dropped = counters["dropped"]
            restored.fixed.saturations = counters["saturations"]
            restored.pending = {int(step): {int(k): float(v) for k, v in values.items()}
                                for step, values in state["pending"].items()}
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ChipError(7, f"not a chip state_dict: {error}") from None
        self.__dict__.update(restored.__dict__)


def _check_eprop(config: EpropConfig) -> None:
    """ChipError 7 for an e-prop configuration the chip cannot run."""
    if config.weight_format not in FORMATS:
        raise ChipError(7, f"unknown weight format {config.weight_format!r} (choose from: "
                           f"{', '.join(FORMATS)})")
    if config.training and config.weight_format not in TRAINABLE_FORMATS:
        raise ChipError(7, f"on-chip training needs f32 or s16.15 weights, not "
                           f"{config.weight_format}: load with weight_format='f32' or "
                           f"'s16.15', or training=False for inference")
    if min(config.inputs, config.hidden, config.outputs, config.per_worker) < 1:
        raise ChipError(7, "inputs, hidden, outputs and per_worker must be >= 1")
    if config.hidden > 0xFFFF or config.inputs > 0xFFFF:
        raise ChipError(7, "inputs and hidden must be < 65,536 (16-bit routing keys)")
    if min(config.tau_m, config.tau_a, config.tau_out, config.width, config.side_width) <= 0:
        raise ChipError(7, "time constants and surrogate widths must be > 0")
    if config.ignore_first < 0:
        raise ChipError(7, f"ignore_first must be >= 0, got {config.ignore_first}")


def _slices(config: EpropConfig) -> list[tuple[int, int]]:
    return [(first, min(first + config.per_worker, config.hidden))
            for first in range(0, config.hidden, config.per_worker)]


def _overlaps(projection: Projection, first: int, count: int
              ) -> list[tuple[Block, int, int]]:
    """(block, lo, hi): the part [lo, hi) of the flat range [first, first + count) in each
    block that holds some of it."""
    spans = []
    for block in projection.blocks:
        lo, hi = max(first, block.first), min(first + count, block.first + block.count)
        if lo < hi:
            spans.append((block, lo, hi))
    return spans


__all__ = ["NUMERIC_MODES", "PROJECTION_NAMES", "Chip", "ChipError", "EpropConfig", "Pe",
           "RunResult", "StorageConfig"]
