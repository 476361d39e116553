"""One weight matrix held in a PCM crossbar: a differential pair of devices per synapse.

Every array below is numpy, shaped (2, out, in): index 0 is the device G+, index 1 is G−.
Conductances are in µS, times in seconds of the device clock. A synapse at integer level q
(−L..L) targets G+ = g_min + max(q, 0)·Δg and G− = g_min + max(−q, 0)·Δg, Δg = (g_max−g_min)/L,
and holds the weight (G+ − G−)/Δg · scale.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from hwloop.quantize import ConductanceMap
from simulators.pcm.noise import DeviceFit
from simulators.pcm.normals import NormalSource
from simulators.pcm.pulse import PulseModel


@dataclass
class VerifySettings:
    """Pulse-level program-and-verify on the pair difference.

    Attributes:
        tolerance: accepted |read − target| of the pair difference, in levels (Δg units).
        max_iterations: verify reads per cell before it is reported as a failure.
        max_pulses: SET pulses per iteration (planned from the mean pulse response).
        both_high: µS; when both devices of a pair exceed it, the pair is RESET and restarted.
    """

    tolerance: float = 0.5
    max_iterations: int = 20
    max_pulses: int = 8
    both_high: float = 5.0


@dataclass
class ProgramOutcome:
    """What programming a set of cells took: counts summed over cells, iterations the max."""

    cells: int
    set_pulses: int
    resets: int
    iterations: int
    failures: int


@dataclass
class PCMArray:
    """Device state of one layer (all arrays (2, out, in) unless stated).

    Attributes:
        levels: (out, in) int64, the level each synapse was last programmed to.
        scale: (1, 1) or (out, 1), weight per level (fixed at the first write).
        g_programmed: conductance right after the last write (µS).
        nu: drift exponent drawn at the last write (float32).
        flicker: accumulated 1/f noise drawn at the last write (``DeviceFit.flicker``, float32).
        t_programmed: device-clock time of the last write (s).
        since_reset: SET pulses since the last RESET (drives the pulse model).
        set_pulses, resets, writes: endurance counters since the array was created.
        gdc_reference: mean |weight| read right after the last write (drift compensation).
    """

    levels: np.ndarray
    scale: np.ndarray
    g_programmed: np.ndarray
    nu: np.ndarray
    flicker: np.ndarray
    t_programmed: np.ndarray
    since_reset: np.ndarray
    set_pulses: np.ndarray
    resets: np.ndarray
    writes: np.ndarray
    gdc_reference: float = 0.0

    @staticmethod
    def blank(shape: tuple[int, int], scale: np.ndarray, g_min: float) -> "PCMArray":
        """An array of never-written devices at g_min, level 0."""
        pair = (2, *shape)
        return PCMArray(
            levels=np.zeros(shape, dtype=np.int64), scale=scale,
            g_programmed=np.full(pair, g_min), nu=np.zeros(pair, dtype=np.float32),
            flicker=np.zeros(pair, dtype=np.float32),
            t_programmed=np.zeros(pair), since_reset=np.zeros(pair, dtype=np.int64),
            set_pulses=np.zeros(pair, dtype=np.int64), resets=np.zeros(pair, dtype=np.int64),
            writes=np.zeros(pair, dtype=np.int64),
        )

    def copy(self) -> "PCMArray":
        return PCMArray(**{f.name: _copy(getattr(self, f.name)) for f in fields(self)})

    def to_dict(self) -> dict[str, object]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    @staticmethod
    def from_dict(state: dict[str, object]) -> "PCMArray":
        values = {f.name: state[f.name] for f in fields(PCMArray)}
        values["gdc_reference"] = float(values["gdc_reference"])  # type: ignore[arg-type]
        return PCMArray(**{k: _copy(v) for k, v in values.items()})

    def conductances(self, fit: DeviceFit, now: float) -> np.ndarray:
        """(2, out, in) conductances at device time ``now``: drift and 1/f noise since writing."""
        written = self.t_programmed
        first = float(written.flat[0])
        if (written == first).all():  # all devices written at once: one time for all
            return fit.conductance(self.g_programmed, self.nu, self.flicker, now - first)
        return fit.conductance(self.g_programmed, self.nu, self.flicker, now - written)

    def weights(self, fit: DeviceFit, mapping: ConductanceMap, now: float) -> np.ndarray:
        """(out, in) weights the devices hold at ``now`` (no drift compensation)."""
        g = self.conductances(fit, now)
        return (g[0] - g[1]) / mapping.step * self.scale


def program_statistical(
    array: PCMArray, cells: np.ndarray, levels: np.ndarray, fit: DeviceFit,
    mapping: ConductanceMap, now: float, rng: NormalSource,
) -> ProgramOutcome:
    """One-shot programming of both devices of the ``cells`` mask to ``levels`` (out, in):
    g = max(0, g_T + σ_prog(g_T)·ξ), the result of a converged program-and-verify loop."""
    count = int(cells.sum())
    written = levels if count == cells.size else levels[cells]  # all cells: no masked copies
    magnitudes = np.stack([np.maximum(written, 0), np.maximum(-written, 0)])  # level per device
    programmed, nu = fit.program_levels(mapping.device_levels(), magnitudes, rng)
    _store_write(array, cells, programmed, fit, now, rng, nu=nu)
    np.copyto(array.levels, levels, where=cells)
    return ProgramOutcome(cells=count, set_pulses=0, resets=0, iterations=1 if count else 0,
                          failures=0)


def program_verify(
    array: PCMArray, cells: np.ndarray, levels: np.ndarray, fit: DeviceFit,
    mapping: ConductanceMap, pulses: PulseModel, settings: VerifySettings, now: float,
    rng: NormalSource,
) -> ProgramOutcome:
    """Pulse-level program-and-verify of the ``cells`` mask to ``levels`` (out, in).

    Both devices are RESET, then each iteration reads the pair (noisy reads), stops where the
    difference lies within ``tolerance`` levels of the target, and otherwise applies SET pulses
    to G+ (difference too low) or G− (too high), as many as the mean pulse response predicts
    (1..max_pulses). A pair whose devices both exceed ``both_high`` is RESET and restarted.
    Cells still outside the tolerance after ``max_iterations`` are counted as failures and keep
    the conductances they reached.
    """
    target = (levels[cells] * mapping.step).astype(np.float64)
    count = target.size
    g = pulses.reset((2, count), rng)
    since_reset = np.zeros((2, count), dtype=np.int64)
    set_count = np.zeros((2, count), dtype=np.int64)
    reset_count = np.ones((2, count), dtype=np.int64)
    done = np.zeros(count, dtype=bool)
    tolerance = settings.tolerance * mapping.step
    iterations = 0
    for iteration in range(1, settings.max_iterations + 1):
        if done.all():
            break
        iterations = iteration
        read = np.maximum(pulses.read(g, rng), 0.0)
        error = (read[0] - read[1]) - target
        done |= np.abs(error) <= tolerance
        restart = ~done & (read.min(axis=0) > settings.both_high)
        restart |= ~done & (read.max(axis=0) > pulses.g_ceiling - 1.5)
        plan = np.stack([~done & ~restart & (error < 0), ~done & ~restart & (error > 0)])
        # planned pulses: from the device's read conductance to that plus the missing difference
        goal = read + np.abs(error)
        wanted = np.rint(pulses.pulse_potential(goal) - pulses.pulse_potential(read))
        wanted = np.clip(wanted, 1, settings.max_pulses)
        for pulse in range(settings.max_pulses):
            fire = plan & (wanted > pulse)
            g[fire] = pulses.set_pulse(g[fire], since_reset[fire], rng)
            since_reset[fire] += 1
            set_count[fire] += 1
        restart_pair = np.stack([restart, restart])
        g[restart_pair] = pulses.reset((int(restart_pair.sum()),), rng)
        since_reset[restart_pair] = 0
        reset_count[restart_pair] += 1
    pair_cells = np.stack([cells, cells])
    _store_write(array, cells, g, fit, now, rng)
    array.since_reset[pair_cells] = since_reset.ravel()
    array.set_pulses[pair_cells] += set_count.ravel()
    array.resets[pair_cells] += reset_count.ravel()
    np.copyto(array.levels, levels, where=cells)
    return ProgramOutcome(
        cells=count, set_pulses=int(set_count.sum()), resets=int(reset_count.sum()),
        iterations=iterations, failures=int((~done).sum()),
    )


def apply_set_pulses(
    array: PCMArray, steps: np.ndarray, fit: DeviceFit, pulses: PulseModel, now: float,
    rng: NormalSource,
) -> int:
    """Gradual SET: |steps| pulses on G+ where steps > 0, on G− where steps < 0 (out, in).
    The pulses act on the devices' present conductance (drift included); returns pulses fired."""
    g = array.conductances(fit, now)
    remaining = np.stack([np.maximum(steps, 0), np.maximum(-steps, 0)]).astype(np.int64)
    touched = remaining > 0
    while (remaining > 0).any():
        fire = remaining > 0
        g[fire] = pulses.set_pulse(g[fire], array.since_reset[fire], rng)
        array.since_reset[fire] += 1
        array.set_pulses[fire] += 1
        remaining[fire] -= 1
    _store_devices(array, touched, g[touched], fit, now, rng)
    return int(np.abs(steps).sum())


def _store_write(
    array: PCMArray, cells: np.ndarray, programmed: np.ndarray, fit: DeviceFit, now: float,
    rng: NormalSource, nu: np.ndarray | None = None,
) -> None:
    """Record a write of both devices of ``cells``: programmed (2, ...) conductances, in the
    order of the pair mask (2, out, in)."""
    pair = np.stack([cells, cells])
    _store_devices(array, pair, programmed.ravel(), fit, now, rng,
                   nu=None if nu is None else nu.ravel())


def _store_devices(
    array: PCMArray, devices: np.ndarray, programmed: np.ndarray, fit: DeviceFit, now: float,
    rng: NormalSource, nu: np.ndarray | None = None,
) -> None:
    """New conductances for the ``devices`` mask (2, out, in): drift exponents ``nu`` (drawn
    for the conductance reached if None), a fresh 1/f draw, write time ``now``."""
    if nu is None:
        nu = fit.drift_exponents(programmed, rng)
    flicker = fit.flicker(programmed, rng)
    if devices.all():  # a whole-array write replaces the arrays instead of copying into them
        shape = devices.shape
        array.g_programmed = programmed.reshape(shape)
        array.nu, array.flicker = nu.reshape(shape), flicker.reshape(shape)
        array.t_programmed = np.full(shape, now)
        array.writes += 1
    else:
        array.g_programmed[devices] = programmed
        array.nu[devices], array.flicker[devices] = nu, flicker
        array.t_programmed[devices] = now
        array.writes[devices] += 1


def _copy(value: object) -> object:
    return value.copy() if isinstance(value, np.ndarray) else value
