"""Evaluate a trained run on devices: accuracy and loss after drift, per device seed.

``evaluate(run, ...)`` (``hwloop eval RUN``) rebuilds the run's network and measures it on the
test split (or the validation split) in up to three kinds of places:

- ``host``: the weights as stored, on the host (a run trained without a device, and no
  ``backend`` given);
- ``trained``: the run's own device, restored from its checkpoint exactly as training left it
  (hardware-in-the-loop runs evaluated with their final weights on their own backend);
- ``fresh``: K new devices (``device_seeds``), each programmed with the weights. Device k
  is opened with seed ``derive_seed(k, "eval-device")`` (or s + k when the spec names a seed
  s), the same for every run, so two runs are compared on the same devices. A HIL run's fresh
  devices use its backend, options and bits, and its trained devices' weight per level, so
  the trained levels are written as they are; other fresh devices set their scale from the
  weights' largest magnitude (``range_factor=1``) unless the spec says otherwise.

For each device the clock is advanced to each drift time in turn (times after programming, or
after the last training update for the trained device), and the network is evaluated with
drift compensation on and/or off (``gdc``), where the device has it. Results are stored as
``RUN/eval/<name>.json`` plus a plot; the run file is never touched.
"""

from __future__ import annotations

import hashlib
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hwloop.atomic import atomic_write
from hwloop.backends import Backend, WriteReport, open_backend, parse_backend_spec
from hwloop.config import TrainConfig, build_config
from hwloop.errors import RunError, UserError
from hwloop.jsonout import dumps
from hwloop.learning.network import SpikingNetwork
from hwloop.plots import plot_evaluation
from hwloop.runs import EVAL_FOLDER, RunRecord, read_run, rebuild_network
from hwloop.seeds import derive_seed
from hwloop.session import (
    FORWARDS,
    attach_crossbars,
    device_layers,
    load_device_weights,
    open_session_backend,
    takes_option,
)
from hwloop.tasks import make_task
from hwloop.trainer import evaluate_network

WEIGHTS = ("final", "best")
GDC_MODES = {"on": (True,), "off": (False,), "both": (False, True)}
SPLITS = ("test", "validation")
DURATION_UNITS = {
    "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0,
    "mo": 30 * 86_400.0, "y": 365 * 86_400.0,
}
"""Units of drift times: seconds, minutes, hours, days, weeks, months (30 d), years (365 d)."""
MAX_DEVICE_SEEDS = 1000
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-z]*)\s*$")


def parse_duration(text: str) -> float:
    """``"0"``, ``"90"``, ``"90s"``, ``"1.5h"``, ``"1d"``, ``"1mo"`` → seconds (UserError)."""
    match = _DURATION.match(str(text))
    if match is None or match.group(2) not in ("", *DURATION_UNITS):
        raise UserError(f"drift time {text!r} is not a duration; use a number with a unit of "
                        f"{', '.join(DURATION_UNITS)} (e.g. 0, 1h, 1d, 1mo)")
    seconds = float(match.group(1)) * DURATION_UNITS.get(match.group(2), 1.0)
    if not math.isfinite(seconds):
        raise UserError(f"drift time {text!r} is too large")
    return seconds


@dataclass
class EvalRow:
    """One evaluation of one device at one drift time.

    Attributes:
        device: ``host``, ``trained`` (the run's own device) or ``fresh``.
        device_seed: k = 0..K−1 for fresh devices, None otherwise.
        backend_seed: the seed the backend was opened with (None: none, or the run's own).
        drift: the drift time as given (e.g. ``1h``); drift_seconds: the same in seconds.
        gdc: drift compensation on or off; None where the device has none.
        accuracy: fraction of correctly classified samples; loss: the run's training loss.
    """

    device: str
    device_seed: int | None
    backend_seed: int | None
    drift: str
    drift_seconds: float
    gdc: bool | None
    accuracy: float
    loss: float


@dataclass
class Evaluation:
    """What ``evaluate`` measured, with the settings that reproduce it."""

    run: str
    weights: str
    backend: str
    bits: int | None
    forward: str
    split: str
    device_seeds: int
    gdc: str
    drift: list[str]
    rows: list[EvalRow] = field(default_factory=list)
    seconds: float = 0.0
    chance: float | None = None
    writes: list[dict[str, Any]] = field(default_factory=list)
    """One entry per fresh device and layer: what programming it did (``WriteReport``
    fields ``write_error``, ``cells_programmed``, ``clipped``, ``failures``)."""

    def summary(self) -> list[dict[str, Any]]:
        """Per (device kind, drift time, gdc): the number of devices n and the mean and
        sample standard deviation (n − 1; None for n = 1) of accuracy and loss."""
        groups: dict[tuple[str, str, bool | None], list[EvalRow]] = {}
        for row in self.rows:
            groups.setdefault((row.device, row.drift, row.gdc), []).append(row)
        summary = []
        for (device, drift, gdc), rows in groups.items():
            entry: dict[str, Any] = {"device": device, "drift": drift,
                                     "drift_seconds": rows[0].drift_seconds, "gdc": gdc,
                                     "n": len(rows)}
            for metric in ("accuracy", "loss"):
                values = [getattr(row, metric) for row in rows]
                entry[f"{metric}_mean"] = statistics.fmean(values)
                entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
            summary.append(entry)
        return summary

    def to_dict(self) -> dict[str, Any]:
        """Settings, rows and summary as plain values (strict JSON with ``jsonout.dumps``)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("rows", "writes")}
        return {**settings, "rows": [asdict(row) for row in self.rows],
                "summary": self.summary(), "writes": self.writes}

    def name(self) -> str:
        """A file name that identifies these settings: backend, weights and a digest."""
        settings = dumps({k: v for k, v in self.to_dict().items()
                          if k in ("weights", "backend", "bits", "forward", "split",
                                   "device_seeds", "gdc", "drift")}, sort_keys=True)
        digest = hashlib.sha1(settings.encode()).hexdigest()[:8]
        backend = re.sub(r"[^A-Za-z0-9]+", "-", parse_backend_spec(self.backend)[0])
        return f"{backend}-{self.weights}-{digest}"


def evaluate(
    run: str | Path | RunRecord,
    *,
    weights: str = "final",
    backend: str | None = None,
    bits: int | None = None,
    drift: Iterable[str | float] = ("0",),
    device_seeds: int = 1,
    gdc: str = "on",
    forward: str | None = None,
    split: str = "test",
    backend_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Evaluate a run's weights on the host or on devices (see the module doc).

    Args:
        run: a run directory, its run.h5, or a RunRecord.
        weights: ``final`` or ``best`` (the weights of the best epoch).
        backend: a backend spec for fresh devices (None: the run's own backend, or the host
            for a run trained without a device).
        bits: weight bits of the fresh devices (None: the run's, or the backend's default).
        drift: drift times, as durations (``"1h"``) or seconds.
        device_seeds: number K of fresh devices (0: only the run's own device).
        gdc: ``on``, ``off`` or ``both``: evaluate with drift compensation on and/or off.
        forward: ``host`` or ``device`` (products on the device); None: as the run trained.
        split: ``test`` or ``validation``.
        backend_options: options of the fresh devices, over those of ``backend``'s spec
            (only with ``backend``).
    """
    start = time.perf_counter()
    record = run if isinstance(run, RunRecord) else read_run(run)
    assert record.config is not None and record.final_weights is not None
    config = build_config(record.config)
    drift_times = _drift_times(drift)
    _check_choice("weights", weights, WEIGHTS)
    _check_choice("gdc", gdc, tuple(GDC_MODES))
    _check_choice("split", split, SPLITS)
    forward = config.forward if forward is None else forward
    _check_choice("forward", forward, FORWARDS)
    if isinstance(device_seeds, bool) or not 0 <= device_seeds <= MAX_DEVICE_SEEDS:
        raise UserError(f"device seeds must be an integer in 0..{MAX_DEVICE_SEEDS}, got "
                        f"{device_seeds}")
    if bits is not None and not 1 <= bits <= 8:
        raise UserError(f"bits must lie in 1..8, got {bits}")
    if backend_options and backend is None:
        raise UserError("backend options need a backend for the fresh devices")
    hil = record.is_hardware_in_the_loop
    spec = backend if backend is not None else (config.backend if hil else "none")
    if spec == "none":
        if bits is not None or forward == "device" or any(t for _, t in drift_times):
            raise UserError("bits, forward=device and drift times need a device; give a "
                            "backend (e.g. --backend pcm)")
    same_device = hil and backend is None and bits in (None, config.bits)
    use_trained = same_device and weights == "final"
    if device_seeds == 0 and not use_trained:
        raise UserError("device seeds 0 evaluates only the run's own device, which exists only "
                        "for a hardware-in-the-loop run with --weights final and no --backend")
    task = make_task(config.task, config.task_options, config.seed)
    dataset = task.test if split == "test" else task.validation
    if dataset is None:
        raise UserError(f"task {task.name!r} has no validation split; use split=test")
    network = rebuild_network(record, weights)
    stored = record.final_weights if weights == "final" else record.best_weights
    assert stored is not None
    result = Evaluation(
        run=str(record.directory), weights=weights, backend=spec, bits=bits, forward=forward,
        split=split, device_seeds=device_seeds, gdc=gdc,
        drift=[label for label, _ in drift_times], chance=1.0 / task.num_classes,
    )

    def measure(device: Backend | None, kind: str, seed: int | None, backend_seed: int | None,
                ) -> None:
        for row in _measure(network, device, config, task.ignore_first, dataset, forward,
                            drift_times, gdc):
            result.rows.append(EvalRow(kind, seed, backend_seed, *row))

    if spec == "none":
        measure(None, "host", None, None)
    else:
        steps: dict[str, np.ndarray] = {}
        if same_device:
            trained = open_session_backend(config)
            trained.load_state_dict(record.checkpoint["device"])  # type: ignore[index]
            steps = {name: step for name in device_layers(network)
                     if (step := trained.weight_step(name)) is not None}
            if use_trained:
                measure(trained, "trained", None, None)
        for k in range(device_seeds):
            device, backend_seed = _fresh_device(spec, config if backend is None else None, bits,
                                                 k, backend_options or {})
            for report in _program(device, network, stored, steps):
                result.writes.append({
                    "device_seed": k, "layer": report.layer, "write_error": report.write_error,
                    "cells_programmed": report.cells_programmed, "clipped": report.clipped,
                    "failures": report.failures})
            measure(device, "fresh", k, backend_seed)
    result.seconds = time.perf_counter() - start
    return result


def save_evaluation(evaluation: Evaluation, name: str | None = None) -> list[Path]:
    """Store ``evaluation`` as RUN/eval/NAME.json (+ .png and .svg plots); returns the paths."""
    name = name or evaluation.name()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"evaluation name {name!r} may hold only letters, digits, '.', '_' "
                        "and '-'")
    folder = Path(evaluation.run) / EVAL_FOLDER
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create {folder} for the results ({error.strerror})") from None
    text = dumps(evaluation.to_dict(), indent=2) + "\n"
    json_path = atomic_write(folder / f"{name}.json", text.encode("utf-8"))
    return [json_path, *plot_evaluation(evaluation, folder / name)]


def _drift_times(drift: Iterable[str | float]) -> list[tuple[str, float]]:
    if isinstance(drift, str):
        drift = [part for part in drift.split(",")]
    times = []
    for entry in drift:
        if isinstance(entry, str):
            label, seconds = entry.strip(), parse_duration(entry)
        else:
            seconds = float(entry)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise UserError(f"drift time {entry!r} must be a finite number of seconds >= 0")
            label = f"{seconds:g}s"
        if seconds not in [t for _, t in times]:
            times.append((label, seconds))
    if not times:
        raise UserError("give at least one drift time (e.g. 0,1h,1d)")
    return sorted(times, key=lambda pair: pair[1])


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r} (choose from: {', '.join(allowed)})")


def _fresh_device(
    spec: str, run_config: TrainConfig | None, bits: int | None, index: int,
    extra_options: dict[str, Any],
) -> tuple[Backend, int | None]:
    """Fresh device ``index`` of ``spec`` with ``extra_options`` (the run's options when
    ``run_config`` is given)."""
    name, options = parse_backend_spec(spec)
    options |= extra_options
    if run_config is not None:
        options = {**options, **run_config.backend_options}
        options.pop("seed", None)  # the training device's: fresh devices get their own
        bits = run_config.bits if bits is None else bits
    if bits is not None:
        options["bits"] = bits
    if takes_option(name, "range_factor"):
        options.setdefault("range_factor", 1.0)
    seed = None
    if takes_option(name, "seed"):
        seed = options["seed"] + index if "seed" in options else derive_seed(index, "eval-device")
        options["seed"] = seed
    return open_backend(name, **options), seed


def _program(
    device: Backend, network: SpikingNetwork, weights: dict[str, Any], steps: dict[str, Any]
) -> list[WriteReport]:
    reports = []
    for name, parameter in device_layers(network).items():
        device.declare(name, tuple(parameter.shape), step=steps.get(name))
        reports.append(device.program(name, np.asarray(weights[name], dtype=np.float64)))
    return reports


def _measure(
    network: SpikingNetwork,
    device: Backend | None,
    config: TrainConfig,
    ignore_first: int,
    dataset: Any,
    forward: str,
    drift_times: list[tuple[str, float]],
    gdc: str,
) -> list[tuple[str, float, bool | None, float, float]]:
    """(drift, seconds, gdc, accuracy, loss) of ``network`` with ``device``'s weights."""
    if device is None:
        accuracy, loss = evaluate_network(network, dataset, config, ignore_first)
        return [(label, seconds, None, accuracy, loss) for label, seconds in drift_times]
    capabilities = device.capabilities()
    if forward == "device" and not capabilities.mvm:
        raise UserError(f"backend {capabilities.name!r} cannot compute products on the "
                        "device; use forward=host")
    modes: tuple[bool | None, ...] = GDC_MODES[gdc] if capabilities.compensation else (None,)
    layers = device_layers(network)
    for layer in network.layers:
        layer.crossbar = None
    if forward == "device":
        attach_crossbars(network, device)
    rows = []
    elapsed = 0.0
    for label, seconds in drift_times:
        device.advance_time(seconds - elapsed)
        elapsed = seconds
        for mode in modes:
            if mode is not None:
                device.set_compensation(mode)
            load_device_weights(layers, device)
            accuracy, loss = evaluate_network(network, dataset, config, ignore_first)
            rows.append((label, seconds, mode, accuracy, loss))
    return rows
