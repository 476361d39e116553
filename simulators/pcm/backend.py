"""The PCM crossbar behind the backend contract: ``open_backend("pcm://?bits=4&mode=verify")``.

Weights are quantized to 2L+1 symmetric levels (15 at 4 bits) with a per-layer scale fixed at
the layer's first write, mapped onto differential pairs of PCM devices, programmed one-shot
(``statistical``) or pulse by pulse (``verify``), and read back with drift, accumulated 1/f noise
and optional global drift compensation at the device clock. ``mvm`` runs the analog
matrix-vector product with DAC/ADC quantization and output noise on 256×256 tiles.
docs/pcm.md describes the model, its sources and the choices made here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hwloop.backends.base import (
    MAX_RANGE_FACTOR,
    Backend,
    Capabilities,
    WriteReport,
    check_flag,
    check_integer,
    check_level_bits,
    check_number,
)
from hwloop.quantize import (
    DEFAULT_RANGE_FACTOR,
    ConductanceMap,
    level_scale,
    symmetric_levels,
    top_level,
)
from simulators.pcm.array import (
    PCMArray,
    ProgramOutcome,
    VerifySettings,
    apply_set_pulses,
    program_statistical,
    program_verify,
)
from simulators.pcm.mvm import AnalogPeriphery, analog_mvm
from simulators.pcm.noise import FITS, make_fit
from simulators.pcm.normals import TorchNormals
from simulators.pcm.pulse import PulseModel

MODES = ("statistical", "verify")
MIN_G_MAX, MAX_G_MAX = 0.1, 1000.0  # µS; measured PCM devices reach tens of µS
MAX_NOISE_SCALE = 100.0  # for the noise multipliers and output_noise
MAX_WRITE_CYCLE_SECONDS = 1.0
MAX_CLOCK_SECONDS = 1e12  # about 30,000 years; far beyond it the drift formulas overflow


class PCMBackend(Backend):
    """A simulated PCM crossbar holding each layer on differential device pairs.

    docs/backends.md lists every option with its unit, default and allowed range.

    Args:
        bits: weight bits, 2..8 (2^(bits−1) − 1 levels per sign).
        mode: ``statistical`` (one-shot programming noise from the fit) or ``verify``
            (pulse-level program-and-verify with the gradual-SET model).
        fit: device statistics for programming noise, drift and 1/f noise: ``pcm`` or ``hermes``.
        g_max: conductance of the top level (µS); default 25 (pcm), 20.7 (hermes) or 10 in
            verify mode (the gradual-SET model saturates near 10.5 µS).
        g_min: conductance of level 0 (µS).
        noise: False switches every noise source off (programming, drift, 1/f, pulses, MVM).
        prog_noise_scale, drift_scale, read_noise_scale: multipliers of the fit's programming
            noise, drift exponents and 1/f noise (0 switches one off).
        tolerance: verify tolerance in levels (at most 2L); max_iterations: verify reads per
            cell.
        gdc: global drift compensation on reads and MVMs (``set_compensation`` switches it).
        range_factor: the first write of a layer sets scale = range_factor · max|W| / L (3 by
            default: trained weights grow a few times beyond their initial range), unless
            ``declare`` gave the layer a step.
        per_channel: one scale per output row instead of per layer.
        tile, dac_bits, adc_bits, output_noise: the MVM periphery (``AnalogPeriphery``).
        refresh_threshold: µS for ``refresh`` (default 0.6 · g_max).
        write_cycle_seconds: device time of one write cycle (a row of pulses plus a verify read).
        seed: seed of the device's random generator (part of the device state).
    """

    name = "pcm"

    def __init__(
        self,
        bits: int = 4,
        mode: str = "statistical",
        fit: str = "pcm",
        g_max: float | None = None,
        g_min: float = 0.0,
        noise: bool = True,
        prog_noise_scale: float = 1.0,
        drift_scale: float = 1.0,
        read_noise_scale: float = 1.0,
        tolerance: float = 0.5,
        max_iterations: int = 20,
        gdc: bool = True,
        range_factor: float = DEFAULT_RANGE_FACTOR,
        per_channel: bool = False,
        tile: int = 256,
        dac_bits: int = 8,
        adc_bits: int = 8,
        output_noise: float = 0.06,
        refresh_threshold: float | None = None,
        write_cycle_seconds: float = 1e-6,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.bits = check_level_bits(bits)
        if mode not in MODES:
            raise ValueError(f"unknown PCM mode {mode!r} (choose from: {', '.join(MODES)})")
        if fit not in FITS:
            raise ValueError(f"unknown PCM fit {fit!r} (choose from: {', '.join(FITS)})")
        self.mode, self.fit_name = mode, fit
        self.noise, self.gdc = check_flag("noise", noise), check_flag("gdc", gdc)
        self.per_channel = check_flag("per_channel", per_channel)
        self.range_factor = check_number("range_factor", range_factor, 0, MAX_RANGE_FACTOR,
                                         open_low=True)
        self.write_cycle_seconds = check_number(
            "write_cycle_seconds", write_cycle_seconds, 0, MAX_WRITE_CYCLE_SECONDS,
            open_low=True, unit="s",
        )
        if g_max is None and mode == "verify":
            g_max = 10.0
        if g_max is not None:
            g_max = check_number("g_max", g_max, MIN_G_MAX, MAX_G_MAX, unit="µS")
        on = 1.0 if self.noise else 0.0
        scales = {
            name: on * check_number(name, value, 0, MAX_NOISE_SCALE)
            for name, value in (("prog_noise_scale", prog_noise_scale),
                                ("drift_scale", drift_scale),
                                ("read_noise_scale", read_noise_scale))
        }
        self.fit = make_fit(fit, g_max, **scales)
        g_min = check_number("g_min", g_min, 0, self.fit.g_max, open_high=True, unit="µS")
        self.mapping = ConductanceMap(bits=self.bits, g_min=g_min, g_max=self.fit.g_max)
        self.pulses = PulseModel(noise_scale=on, g_ceiling=max(12.0, self.fit.g_max))
        self.refresh_threshold = 0.6 * self.fit.g_max if refresh_threshold is None else (
            check_number("refresh_threshold", refresh_threshold, 0, self.fit.g_max,
                         open_low=True, unit="µS")
        )
        self.verify = VerifySettings(
            # a pair's difference spans 2L levels: a wider tolerance accepts any read
            tolerance=check_number("tolerance", tolerance, 0, 2 * top_level(self.bits),
                                   open_low=True, unit="levels"),
            max_iterations=check_integer("max_iterations", max_iterations, 1, 10_000),
        )
        self.periphery = AnalogPeriphery(
            tile=check_integer("tile", tile, 1, 4096),
            dac_bits=check_integer("dac_bits", dac_bits, 2, 16),
            adc_bits=check_integer("adc_bits", adc_bits, 2, 16),
            output_noise=on * check_number("output_noise", output_noise, 0, MAX_NOISE_SCALE),
        )
        self.seed = check_integer("seed", seed, 0, 2**63 - 1)
        self.rng = TorchNormals(self.seed)
        self.clock = 0.0
        self.arrays: dict[str, PCMArray] = {}
        # weight per level given by ``declare`` for layers not yet written (part of the state)
        self.steps: dict[str, np.ndarray] = {}
        # derived from the device state at one clock time; dropped on every write or reset
        self._read_cache: dict[str, tuple[float, np.ndarray]] = {}  # layer → (clock, weights)
        self._mvm_cache: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}

    def capabilities(self) -> Capabilities:
        top = top_level(self.bits)
        return Capabilities(
            name=self.name, weight_format="conductance_pair", bits=self.bits, levels=2 * top + 1,
            tile_size=(self.periphery.tile, self.periphery.tile), time=True, pulses=True,
            mvm=True, compensation=True,
        )

    # --- writing -------------------------------------------------------------------------

    def _fix_step(self, layer: str, step: np.ndarray) -> None:
        if layer in self.arrays:
            self._refuse_other_step(layer, self.arrays[layer].scale, step)
        else:
            self.steps[layer] = step

    def program(self, layer: str, weights: np.ndarray) -> WriteReport:
        """Quantize ``weights`` and (re)program the synapses whose level changed (all on the
        first write, which also fixes the layer's scale: the declared step, if any)."""
        start = time.perf_counter()
        array = self.check_weights(layer, weights)
        first = layer not in self.arrays
        if first:
            scale = self.steps.pop(layer, None)
            if scale is None:
                scale = level_scale(array, self.bits, range_factor=self.range_factor,
                                    per_channel=self.per_channel)
            self.arrays[layer] = PCMArray.blank(array.shape, scale, self.mapping.g_min)
        held = self.arrays[layer]
        levels, _ = symmetric_levels(array, self.bits, scale=held.scale)
        cells = np.ones(levels.shape, dtype=bool) if first else levels != held.levels
        outcome = self._write(held, cells, levels)
        return self._report(layer, outcome, cells, start)

    def pulse(self, layer: str, steps: np.ndarray) -> WriteReport:
        """Gradual SET pulses: steps[i, j] > 0 fires that many on G+, < 0 on G− (depression by
        potentiating the partner device). The write error is measured against the levels the
        pulses aim at (held level + steps); afterwards each pulsed synapse holds the nearest
        level of what it reads."""
        start = time.perf_counter()
        held = self._array(layer)
        steps = self.check_steps(layer, steps)
        top = top_level(self.bits)
        touched = steps != 0
        if not touched.any():
            return _nothing_written(layer, start)
        # the report's target: the levels the pulses aim at
        np.copyto(held.levels, np.clip(held.levels + steps, -top, top), where=touched)
        fired = apply_set_pulses(held, steps, self.fit, self.pulses, self.clock, self.rng)
        outcome = ProgramOutcome(cells=int(touched.sum()), set_pulses=fired, resets=0,
                                 iterations=1, failures=0)
        report = self._report(layer, outcome, touched, start)
        # afterwards the synapses hold the nearest level of what they read (the read is cached)
        reached = np.clip(np.rint(self._raw(layer) / held.scale), -top, top).astype(np.int64)
        np.copyto(held.levels, reached, where=touched)
        return report

    def refresh(self, layer: str) -> WriteReport:
        """Re-program pairs whose larger device exceeds ``refresh_threshold`` µS while their
        difference is below a quarter of it: both devices are RESET and the weight re-written
        at its level, freeing the pair's range for further SET pulses."""
        start = time.perf_counter()
        held = self._array(layer)
        threshold = self.refresh_threshold
        g = held.conductances(self.fit, self.clock)
        cells = (g.max(axis=0) > threshold) & (np.abs(g[0] - g[1]) < threshold / 4)
        outcome = self._write(held, cells, held.levels)
        return self._report(layer, outcome, cells, start)

    def _write(self, held: PCMArray, cells: np.ndarray, levels: np.ndarray) -> ProgramOutcome:
        if not cells.any():
            return ProgramOutcome(cells=0, set_pulses=0, resets=0, iterations=0, failures=0)
        if self.mode == "statistical":
            return program_statistical(held, cells, levels, self.fit, self.mapping, self.clock,
                                       self.rng)
        return program_verify(held, cells, levels, self.fit, self.mapping, self.pulses,
                              self.verify, self.clock, self.rng)

    def _report(
        self, layer: str, outcome: ProgramOutcome, cells: np.ndarray, start: float
    ) -> WriteReport:
        if outcome.cells == 0:  # nothing written: the device, its clock and GDC are unchanged
            return _nothing_written(layer, start)
        held = self.arrays[layer]
        rows = int(cells.any(axis=1).sum())
        device_seconds = rows * max(outcome.iterations, 1) * self.write_cycle_seconds
        self.clock += device_seconds
        self._forget(layer)
        read = self._raw(layer)
        held.gdc_reference = float(np.abs(read).mean())
        target = held.levels * held.scale
        return WriteReport(
            layer=layer, cells_programmed=outcome.cells, pulses=outcome.set_pulses,
            iterations=outcome.iterations, failures=outcome.failures,
            write_error=_mean_over(np.abs(read - target), cells, outcome.cells),
            device_seconds=device_seconds, wall_seconds=time.perf_counter() - start,
        )

    # --- reading -------------------------------------------------------------------------

    def read(self, layer: str) -> np.ndarray:
        """Weights (out, in) the devices hold at the device clock, drift-compensated if ``gdc``."""
        raw = self._raw(layer)
        return raw * self._gdc_factor(layer, raw)

    def mvm(self, layer: str, inputs: np.ndarray) -> np.ndarray:
        """Analog product inputs (B, in) → outputs (B, out) in weight units, through DAC, the
        devices' conductances on 256×256 tiles, output noise and ADC (drift-compensated if
        ``gdc``, like ``read``)."""
        inputs = self.check_inputs(layer, inputs)
        cached = self._mvm_cache.get(layer)
        if cached is None or cached[0] != self.clock:
            held, raw = self._array(layer), self._raw(layer)
            to_weights = self.fit.g_max / self.mapping.step * held.scale  # (1, 1) or (out, 1)
            normalised = raw / to_weights  # (G+ − G−) / g_max, |·| ≤ ~1
            factor = to_weights.reshape(1, -1) * self._gdc_factor(layer, raw)
            cached = (self.clock, normalised, factor)
            self._mvm_cache[layer] = cached
        return analog_mvm(inputs, cached[1], self.periphery, self.rng) * cached[2]

    def set_compensation(self, on: bool) -> None:
        """Switch global drift compensation (the ``gdc`` option) of reads and MVMs."""
        self.gdc = check_flag("compensation", on)
        self._mvm_cache.clear()  # its factors include the GDC factor

    def weight_step(self, layer: str) -> np.ndarray:
        return self._array(layer).scale.copy()

    def _raw(self, layer: str) -> np.ndarray:
        """Uncompensated weights at the clock; reading is deterministic (the 1/f noise is drawn
        at writing), so the result is kept until the layer is written or the clock moves."""
        cached = self._read_cache.get(layer)
        if cached is None or cached[0] != self.clock:
            cached = (self.clock, self._array(layer).weights(self.fit, self.mapping, self.clock))
            self._read_cache[layer] = cached
        return cached[1]

    def _forget(self, layer: str | None = None) -> None:
        """Drop what was derived from the device state (one layer, or all)."""
        for cache in (self._read_cache, self._mvm_cache):
            if layer is None:
                cache.clear()
            else:
                cache.pop(layer, None)

    def _gdc_factor(self, layer: str, raw: np.ndarray) -> float:
        if not self.gdc:
            return 1.0
        return self.arrays[layer].gdc_reference / max(float(np.abs(raw).mean()), 1e-12)

    def _array(self, layer: str) -> PCMArray:
        if layer not in self.arrays:
            raise ValueError(f"layer {layer!r} has not been programmed on backend 'pcm'")
        return self.arrays[layer]

    # --- time and state ------------------------------------------------------------------

    def advance_time(self, seconds: float) -> None:
        """Let ``seconds`` pass; the clock may not pass MAX_CLOCK_SECONDS (ValueError)."""
        super().advance_time(seconds)
        if self.clock + seconds > MAX_CLOCK_SECONDS:
            raise ValueError(f"the device clock would pass {MAX_CLOCK_SECONDS:g} s "
                             f"(it is at {self.clock:g} s, seconds={seconds})")
        self.clock += float(seconds)

    def reset(self) -> None:
        super().reset()
        self.arrays.clear()
        self.steps.clear()
        self._forget()

    def counters(self) -> dict[str, int]:
        """Endurance bookkeeping summed over all layers: device writes, SET pulses, RESETs."""
        return {
            key: int(sum(getattr(a, key).sum() for a in self.arrays.values()))
            for key in ("writes", "set_pulses", "resets")
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "clock": self.clock,
            "rng": self.rng.state(),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "steps": {k: v.copy() for k, v in self.steps.items()},
            "arrays": {k: v.to_dict() for k, v in self.arrays.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock = float(state["clock"])
        self.rng.set_state(state["rng"])
        self.shapes = {k: (int(v[0]), int(v[1])) for k, v in state["shapes"].items()}
        # states saved before declare took a step have no "steps"
        self.steps = {k: np.array(v, dtype=np.float64) for k, v in state.get("steps", {}).items()}
        self.arrays = {k: PCMArray.from_dict(v) for k, v in state["arrays"].items()}
        self._forget()


def _mean_over(values: np.ndarray, cells: np.ndarray, count: int) -> float:
    """Mean of ``values`` over the ``cells`` mask, which holds ``count`` > 0 cells."""
    return float(values.mean() if count == cells.size else values[cells].mean())


def _nothing_written(layer: str, start: float) -> WriteReport:
    return WriteReport(layer=layer, cells_programmed=0, iterations=0,
                       wall_seconds=time.perf_counter() - start)
