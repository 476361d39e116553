"""The run file ``run.h5``: configuration, versions, metrics, weights and a checkpoint.

Layout (HDF5):

    /                      attrs: format="hwloop-run", format_version=1, config (JSON),
                                  seed, created (ISO 8601, UTC), versions (JSON),
                                  task (JSON: name, input_size, num_classes, num_steps,
                                  description; absent in files of hwloop < 0.2)
    /metrics/steps/{step, epoch, loss, accuracy, grad_norm, seconds}          (S,) each
    /metrics/epochs/{epoch, train_loss, train_accuracy, test_accuracy,
                     validation_accuracy (NaN without a validation split), seconds}   (E,) each
    /weights/final/<name>  /weights/best/<name>    parameter arrays, names as in state_dict()
    /metrics/updates/{step, cells, pulses, iterations, failures, write_error,
                      device_seconds, device_wall_seconds}   (U,) each, hardware-in-the-loop
                           runs only: one row per update written to the device (step 0: the
                           initial programming)
    /checkpoint/state      uint8 bytes of torch.save(Trainer.state()): network, optimizer,
                           scheduler, shuffling RNG, epoch, step, epoch in progress, best
                           weights, HIL session
    /checkpoint/device     the device's full state_dict() (HIL runs only): arrays as datasets,
                           nested dicts as groups, other values as JSON attributes

Every write goes to a temporary file in the same directory that then replaces run.h5
(``hwloop.atomic``), so a crash never leaves a half-written run file; SIGINT and SIGTERM wait
until the write has finished.
"""

from __future__ import annotations

import io
import json
import math
import platform
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from hwloop.atomic import atomic_write
from hwloop.config import build_config
from hwloop.errors import UserError
from hwloop.interrupts import critical
from hwloop.learning.network import SpikingNetwork
from hwloop.session import UpdateMetrics
from hwloop.trainer import EpochMetrics, StepMetrics, check_config, make_network

RUN_FILE = "run.h5"
EVAL_FOLDER = "eval"
"""Where ``hwloop eval`` stores its results, inside the run directory."""
FORMAT = "hwloop-run"
FORMAT_VERSION = 1


@dataclass
class RunRecord:
    """A run file read back.

    Parts that could not be read are None (or empty) and named in ``damage``; ``read_run``
    refuses a damaged run unless asked to be lenient (``runs show`` is).

    Attributes:
        path: the run file (``…/run.h5``); ``directory`` is its folder.
        config: the resolved TrainConfig as a dict.
        task: name, input_size, num_classes, num_steps, description of the task (None in run
            files of hwloop < 0.2).
        final_weights, best_weights: parameter arrays by name.
        checkpoint: the trainer state (``Trainer.state()``; ``device`` holds the device state).
        updates: the device update log of a hardware-in-the-loop run (empty otherwise).
    """

    path: Path
    config: dict[str, Any] | None
    versions: dict[str, str]
    created: str
    epochs: list[EpochMetrics]
    steps: list[StepMetrics]
    final_weights: dict[str, np.ndarray] | None
    best_weights: dict[str, np.ndarray] | None
    checkpoint: dict[str, Any] | None
    updates: list[UpdateMetrics] = field(default_factory=list)
    task: dict[str, Any] | None = None
    damage: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        """The run directory."""
        return self.path.parent

    @property
    def is_hardware_in_the_loop(self) -> bool:
        """Whether the run trained with a device in the loop."""
        return self.config is not None and self.config.get("backend", "none") != "none"


def versions() -> dict[str, str]:
    import hwloop

    return {
        "hwloop": hwloop.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
    }


def write_run(
    directory: Path,
    *,
    config: dict[str, Any],
    task: dict[str, Any],
    created: str,
    epochs: list[EpochMetrics],
    steps: list[StepMetrics],
    checkpoint: dict[str, Any],
    updates: list[UpdateMetrics] = (),  # type: ignore[assignment]
) -> Path:
    """Write ``directory/run.h5`` atomically (SIGINT/SIGTERM wait for it); returns its path.

    Raises:
        RunError: the disk is full; run.h5 keeps its previous content.
    """
    with critical():  # a checkpoint write, once started, finishes before a signal acts
        checkpoint = dict(checkpoint)
        device = checkpoint.pop("device", None)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)

        image = io.BytesIO()  # the whole file is built in memory, then written in one go
        with h5py.File(image, "w") as file:
            file.attrs.update(
                format=FORMAT, format_version=FORMAT_VERSION, config=json.dumps(config),
                seed=int(config["seed"]), created=created, versions=json.dumps(versions()),
                task=json.dumps(task),
            )
            _write_table(file.create_group("metrics/steps"), StepMetrics, steps)
            _write_table(file.create_group("metrics/epochs"), EpochMetrics, epochs)
            if updates:
                _write_table(file.create_group("metrics/updates"), UpdateMetrics, updates)
            if device is not None:
                write_tree(file.create_group("checkpoint/device"), device)
            for group, weights in (
                ("weights/final", checkpoint["network"]),
                ("weights/best", checkpoint["best_weights"]),
            ):
                target = file.create_group(group)
                for name, value in weights.items():
                    target[name] = value.detach().cpu().numpy()
            file["checkpoint/state"] = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        return atomic_write(directory / RUN_FILE, image.getvalue())


def run_file(path: str | Path) -> Path:
    """The run file of ``path``: a run directory or its ``run.h5`` (UserError if neither)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / RUN_FILE).is_file():
        return path / RUN_FILE
    raise UserError(f"{path} holds no run ({RUN_FILE} not found); give a run directory or "
                    f"its {RUN_FILE}")


def read_run(path: str | Path, *, lenient: bool = False) -> RunRecord:
    """Read a run from its directory or its ``run.h5``.

    Raises:
        UserError: missing, not an hwloop run file, or (unless ``lenient``) damaged: the
            message names the damaged parts.
    """
    file_path = run_file(path)
    try:
        file = h5py.File(file_path, "r")
    except OSError:
        raise UserError(f"{file_path} is not a readable HDF5 file (damaged or not a run "
                        "file)") from None
    with file:
        if file.attrs.get("format") != FORMAT:
            raise UserError(f"{file_path} is not an hwloop run file")
        reader = _Reader(file)
        record = RunRecord(
            path=file_path,
            config=reader.attribute("config", json.loads),
            versions=reader.attribute("versions", json.loads) or {},
            created=reader.attribute("created", str) or "",
            epochs=reader.table("metrics/epochs", EpochMetrics) or [],
            steps=reader.table("metrics/steps", StepMetrics) or [],
            final_weights=reader.group("weights/final", _arrays),
            best_weights=reader.group("weights/best", _arrays),
            checkpoint=reader.group("checkpoint/state", _load_checkpoint),
            updates=reader.table("metrics/updates", UpdateMetrics, optional=True) or [],
            task=reader.attribute("task", json.loads, optional=True),
        )
        if record.checkpoint is not None and "checkpoint/device" in file:
            record.checkpoint["device"] = reader.group("checkpoint/device", read_tree)
        record.damage = reader.damage
    if record.damage and not lenient:
        raise UserError(f"{file_path} is damaged: {'; '.join(record.damage)} (`hwloop runs "
                        "show` lists what it can still read)")
    return record


class _Reader:
    """Reads parts of a run file, noting each part that cannot be read instead of failing."""

    def __init__(self, file: h5py.File) -> None:
        self.file = file
        self.damage: list[str] = []

    def attribute(self, name: str, parse: Callable[[Any], Any], optional: bool = False) -> Any:
        if name not in self.file.attrs:
            if not optional:
                self.damage.append(f"attribute {name!r} is missing")
            return None
        try:
            return parse(self.file.attrs[name])
        except Exception as error:  # any parse failure means damage  # noqa: BLE001
            self.damage.append(f"attribute {name!r} is unreadable ({_brief(error)})")
            return None

    def group(self, name: str, read: Callable[[Any], Any]) -> Any:
        if name not in self.file:
            self.damage.append(f"{name} is missing")
            return None
        try:
            return read(self.file[name])
        except Exception as error:  # noqa: BLE001
            self.damage.append(f"{name} is unreadable ({_brief(error)})")
            return None

    def table(self, name: str, kind: type, optional: bool = False) -> list[Any] | None:
        if optional and name not in self.file:
            return None
        return self.group(name, lambda group: _read_table(group, kind))


def _brief(error: Exception) -> str:
    """The error's kind and the first line of its message (at most 80 characters)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:80]}" if lines else type(error).__name__


def _arrays(group: h5py.Group) -> dict[str, np.ndarray]:
    return {key: value[()] for key, value in group.items()}


def _load_checkpoint(dataset: h5py.Dataset) -> dict[str, Any]:
    """The trainer state; only plain tensors and containers are accepted (weights_only)."""
    try:
        return torch.load(io.BytesIO(bytes(dataset[()])), weights_only=True)
    except Exception:  # torch raises many kinds here; its messages suggest unsafe loading
        raise ValueError("torch.load cannot read the checkpoint") from None


def rebuild_network(run: str | Path | RunRecord, weights: str = "final") -> SpikingNetwork:
    """The network of a run with its ``final`` or ``best`` weights (on the CPU)."""
    record = run if isinstance(run, RunRecord) else read_run(run)
    if weights not in ("final", "best"):
        raise UserError(f"unknown weights {weights!r} (choose from: final, best)")
    stored = record.final_weights if weights == "final" else record.best_weights
    assert record.config is not None and stored is not None
    config = build_config(record.config)
    check_config(config)
    if record.task is not None:
        sizes = record.task["input_size"], record.task["num_classes"]
    else:  # run files of hwloop < 0.2: the weights tell the sizes
        sizes = stored["hidden.0.w_in"].shape[1], stored["readout.w_in"].shape[0]
    network = make_network(config, *sizes)
    network.load_state_dict({name: torch.from_numpy(np.asarray(value))
                             for name, value in stored.items()})
    return network


def write_tree(group: h5py.Group, tree: dict[str, Any]) -> None:
    """Store a nested dict: arrays as datasets, dicts holding arrays as subgroups, every other
    value as a JSON attribute (exact for Python ints of any size and for floats)."""
    for key, value in tree.items():
        if isinstance(value, np.ndarray):
            group[key] = value
        elif isinstance(value, dict) and _holds_arrays(value):
            write_tree(group.create_group(key), value)
        else:
            group.attrs[key] = json.dumps(value)


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """The nested dict ``write_tree`` stored."""
    tree: dict[str, Any] = {key: json.loads(value) for key, value in group.attrs.items()}
    for key, item in group.items():
        tree[key] = read_tree(item) if isinstance(item, h5py.Group) else item[()]
    return tree


def _holds_arrays(tree: dict[str, Any]) -> bool:
    return any(
        isinstance(v, np.ndarray) or (isinstance(v, dict) and _holds_arrays(v))
        for v in tree.values()
    )


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_table(group: h5py.Group, kind: type, rows: list[Any]) -> None:
    for column in fields(kind):
        values = [getattr(row, column.name) for row in rows]
        group[column.name] = np.array(
            [np.nan if v is None else v for v in values], dtype=np.float64
        )


def _read_table(group: h5py.Group, kind: type) -> list[Any]:
    """The rows of a table written by ``_write_table``; a column that a newer hwloop added
    (one with a default) may be missing from an older file and reads as its default."""
    columns = {column.name: group[column.name][()] for column in fields(kind)
               if column.name in group or column.default is MISSING}
    count = len(next(iter(columns.values())))
    rows = []
    for i in range(count):
        values = {}
        for column in fields(kind):
            if column.name not in columns:
                continue
            value = float(columns[column.name][i])
            if column.type in ("int", int):
                value = int(value)
            elif np.isnan(value) and "None" in str(column.type):
                value = None
            values[column.name] = value
        rows.append(kind(**values))
    return rows


def device_summary(updates: list[UpdateMetrics]) -> dict[str, Any]:
    """Totals and per-update statistics of a HIL run's update log (row 0, the initial
    programming, is counted in the totals; the per-update figures are over the training
    updates). The mean write error is over written cells, in weight units."""
    cells = sum(u.cells for u in updates)
    training = updates[1:]
    return {
        "updates": len(updates),
        "cells_written": cells,
        "pulses": sum(u.pulses for u in updates),
        "failures": sum(u.failures for u in updates),
        "clipped": sum(u.clipped for u in updates),
        "device_runs": sum(u.device_runs for u in updates),
        "spike_mismatches": sum(u.spike_mismatches for u in updates),
        "mean_write_error": sum(u.write_error * u.cells for u in updates) / cells if cells else 0.0,
        "max_write_error": max((u.write_error for u in updates), default=0.0),
        "cells_per_update": sum(u.cells for u in training) / len(training) if training else 0.0,
        "pulses_per_update": sum(u.pulses for u in training) / len(training) if training else 0.0,
        "max_iterations": max((u.iterations for u in updates), default=0),
        "device_seconds": sum(u.device_seconds for u in updates),
        "backend_seconds": sum(u.device_wall_seconds for u in updates),
    }


def device_description(config: dict[str, Any]) -> dict[str, Any] | None:
    """Backend spec, options, bits, scheme and forward of a HIL run's config (None: host)."""
    if config.get("backend", "none") == "none":
        return None
    return {key: config.get(key) for key in
            ("backend", "backend_options", "bits", "scheme", "threshold", "forward")}


def record_summary(record: RunRecord) -> dict[str, Any]:
    """The figures ``hwloop runs show`` prints, as plain values (None where unknown)."""
    config = record.config or {}
    last = record.epochs[-1] if record.epochs else None
    has_validation = any(e.validation_accuracy is not None for e in record.epochs)
    checkpoint = record.checkpoint or {}
    best = best_epoch(record.epochs)
    return {
        "path": str(record.directory),
        "task": config.get("task"),
        "neuron": config.get("neuron"),
        "learner": config.get("learner"),
        "lambda": config.get("lam") if config.get("learner") == "hypr" else None,
        "seed": config.get("seed"),
        "epochs_done": len(record.epochs),
        "epochs_planned": config.get("epochs"),
        "steps_done": len(record.steps),
        "final_test_accuracy": last.test_accuracy if last else None,
        "final_validation_accuracy": last.validation_accuracy if last else None,
        "selection_split": "validation" if has_validation else "test",
        "best_accuracy": selection_accuracy(best) if best else None,
        "best_epoch": best.epoch if best else None,
        "final_train_loss": last.train_loss if last else None,
        "seconds": sum(e.seconds for e in record.epochs),
        "created": record.created,
        "versions": record.versions,
        "checkpoint_epoch": checkpoint.get("epoch"),
        "checkpoint_step": checkpoint.get("step"),
        "epochs": [asdict(e) for e in record.epochs],
        "backend": config.get("backend", "none"),
        "device": device_description(config),
        "writes": device_summary(record.updates) if record.updates else None,
        "task_info": record.task,
        "config": record.config,
        "damage": record.damage,
    }


def selection_accuracy(epoch: EpochMetrics) -> float:
    """The accuracy that picks the best weights: validation if measured, else test."""
    validation = epoch.validation_accuracy
    return validation if validation is not None else epoch.test_accuracy


def best_epoch(epochs: list[EpochMetrics]) -> EpochMetrics | None:
    """The epoch the trainer kept as best: the first with the highest selection accuracy
    (NaN accuracies never win)."""
    best = None
    for epoch in epochs:
        accuracy = selection_accuracy(epoch)
        if math.isfinite(accuracy) and (best is None or accuracy > selection_accuracy(best)):
            best = epoch
    return best


def find_runs(directory: str | Path) -> list[dict[str, Any]]:
    """One summary row per run file under ``directory`` (recursively), sorted by path; a run
    that cannot be read gets a row naming its damage."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    rows = []
    for path in sorted(root.rglob(RUN_FILE)):
        try:
            summary = record_summary(read_run(path, lenient=True))
        except UserError as error:
            summary = record_summary(RunRecord(path, None, {}, "", [], [], None, None, None,
                                               damage=[str(error)]))
        config = summary["config"] or {}
        rows.append({
            "path": str(path.parent.relative_to(root)) if path.parent != root else ".",
            "task": summary["task"], "neuron": summary["neuron"],
            "learner": _learner_label(config),
            "device": None if not config else parse_device_name(config.get("backend", "none")),
            "bits": config.get("bits"), "scheme": config.get("scheme") if summary["device"]
            else None,
            "epochs_done": summary["epochs_done"], "epochs_planned": summary["epochs_planned"],
            "best_accuracy": summary["best_accuracy"],
            "selection_split": summary["selection_split"],
            "final_test_accuracy": summary["final_test_accuracy"],
            "damage": summary["damage"],
        })
    return rows


def compare_runs(records: list[RunRecord]) -> dict[str, Any]:
    """The config keys whose values differ between ``records`` (dotted for option tables) and
    their metrics side by side."""
    flat = [_flatten(record.config or {}) for record in records]
    keys = sorted({key for config in flat for key in config})
    missing = object()
    differences = {
        key: [config.get(key) for config in flat] for key in keys
        if len({repr(config.get(key, missing)) for config in flat}) > 1
    }
    summaries = [record_summary(record) for record in records]
    metrics = {}
    for key in ("epochs_done", "final_test_accuracy", "final_validation_accuracy",
                "best_accuracy", "best_epoch", "final_train_loss", "seconds"):
        metrics[key] = [summary[key] for summary in summaries]
    for key in ("mean_write_error", "cells_written", "pulses", "failures"):
        metrics[f"device {key}"] = [(summary["writes"] or {}).get(key) for summary in summaries]
    return {"runs": [str(record.directory) for record in records],
            "config_differences": differences, "metrics": metrics,
            "damage": [record.damage for record in records]}


def parse_device_name(spec: str) -> str:
    """``pcm://?seed=1`` → ``pcm``; ``none`` → ``host``."""
    name = spec.split("://", 1)[0]
    return "host" if name == "none" else name


def _learner_label(config: dict[str, Any]) -> str | None:
    learner = config.get("learner")
    return f"hypr λ={config.get('lam')}" if learner == "hypr" else learner


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
