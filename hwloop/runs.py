"""The run file ``run.h5``: configuration, versions, metrics, weights and a checkpoint.

Layout (HDF5):

    /                      attrs: format="hwloop-run", format_version=1, config (JSON),
                                  seed, created (ISO 8601, UTC), versions (JSON)
    /metrics/steps/{step, epoch, loss, accuracy, grad_norm, seconds}          (S,) each
    /metrics/epochs/{epoch, train_loss, train_accuracy, test_accuracy,
                     validation_accuracy (NaN without a validation split), seconds}   (E,) each
    /weights/final/<name>  /weights/best/<name>    parameter arrays, names as in state_dict()
    /metrics/updates/{step, cells, pulses, iterations, failures, write_error,
                      device_seconds, device_wall_seconds}   (U,) each, hardware-in-the-loop
                           runs only: one row per update written to the device (step 0: the
                           initial programming)
    /checkpoint/state      uint8 bytes of torch.save(Trainer.state()): network, optimizer,
                           scheduler, shuffling RNG, epoch, step, best weights, HIL session
    /checkpoint/device     the device's full state_dict() (HIL runs only): arrays as datasets,
                           nested dicts as groups, other values as JSON attributes

Every write goes to a temporary file in the same directory that then replaces run.h5
(``os.replace``), so a crash never leaves a half-written run file.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from hwloop.errors import UserError
from hwloop.trainer import EpochMetrics, StepMetrics
from hwloop.session import UpdateMetrics

RUN_FILE = "run.h5"
FORMAT = "hwloop-run"
FORMAT_VERSION = 1


@dataclass
class RunRecord:
    """A run file read back."""

    path: Path
    config: dict[str, Any]
    versions: dict[str, str]
    created: str
    epochs: list[EpochMetrics]
    steps: list[StepMetrics]
    final_weights: dict[str, np.ndarray]
    best_weights: dict[str, np.ndarray]
    checkpoint: dict[str, Any]
    updates: list[UpdateMetrics] = field(default_factory=list)


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
    created: str,
    epochs: list[EpochMetrics],
    steps: list[StepMetrics],
    checkpoint: dict[str, Any],
    updates: list[UpdateMetrics] = (),  # type: ignore[assignment]
) -> Path:
    """Write ``directory/run.h5`` atomically; returns its path."""
    path = directory / RUN_FILE
    handle, temporary = tempfile.mkstemp(prefix=".run-", suffix=".h5", dir=directory)
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as file:
            file.attrs.update(
                format=FORMAT, format_version=FORMAT_VERSION, config=json.dumps(config),
                seed=int(config["seed"]), created=created, versions=json.dumps(versions()),
            )
            _write_table(file.create_group("metrics/steps"), StepMetrics, steps)
            _write_table(file.create_group("metrics/epochs"), EpochMetrics, epochs)
            if updates:
                _write_table(file.create_group("metrics/updates"), UpdateMetrics, updates)
            checkpoint = dict(checkpoint)
            device = checkpoint.pop("device", None)
            if device is not None:
                write_tree(file.create_group("checkpoint/device"), device)
            for group, weights in (
                ("weights/final", checkpoint["network"]),
                ("weights/best", checkpoint["best_weights"]),
            ):
                target = file.create_group(group)
                for name, value in weights.items():
                    target[name] = value.detach().cpu().numpy()
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            file["checkpoint/state"] = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def read_run(directory: str | Path) -> RunRecord:
    """Read ``directory/run.h5`` (UserError if missing or not an hwloop run)."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise UserError(f"{directory} holds no run ({RUN_FILE} not found)")
    try:
        with h5py.File(path, "r") as file:
            if file.attrs.get("format") != FORMAT:
                raise UserError(f"{path} is not an hwloop run file")
            state = bytes(file["checkpoint/state"][()])
            checkpoint = torch.load(io.BytesIO(state), weights_only=True)
            if "checkpoint/device" in file:
                checkpoint["device"] = read_tree(file["checkpoint/device"])
            updates = (
                _read_table(file["metrics/updates"], UpdateMetrics)
                if "metrics/updates" in file else []
            )
            return RunRecord(
                path=path,
                config=json.loads(file.attrs["config"]),
                versions=json.loads(file.attrs["versions"]),
                created=str(file.attrs["created"]),
                epochs=_read_table(file["metrics/epochs"], EpochMetrics),
                steps=_read_table(file["metrics/steps"], StepMetrics),
                final_weights={k: v[()] for k, v in file["weights/final"].items()},
                best_weights={k: v[()] for k, v in file["weights/best"].items()},
                checkpoint=checkpoint,
                updates=updates,
            )
    except (OSError, KeyError) as error:
        raise UserError(f"{path} is not a readable hwloop run file ({error})") from None


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
    for field in fields(kind):
        values = [getattr(row, field.name) for row in rows]
        group[field.name] = np.array(
            [np.nan if v is None else v for v in values], dtype=np.float64
        )


def _read_table(group: h5py.Group, kind: type) -> list[Any]:
    columns = {field.name: group[field.name][()] for field in fields(kind)}
    count = len(next(iter(columns.values())))
    rows = []
    for i in range(count):
        values = {}
        for field in fields(kind):
            value = float(columns[field.name][i])
            if field.type in ("int", int):
                value = int(value)
            elif np.isnan(value) and "None" in str(field.type):
                value = None
            values[field.name] = value
        rows.append(kind(**values))
    return rows


def device_summary(updates: list[UpdateMetrics]) -> dict[str, Any]:
    """Totals of a HIL run's update log; the mean write error is over written cells."""
    cells = sum(u.cells for u in updates)
    return {
        "updates": len(updates),
        "cells_written": cells,
        "pulses": sum(u.pulses for u in updates),
        "failures": sum(u.failures for u in updates),
        "mean_write_error": sum(u.write_error * u.cells for u in updates) / cells if cells else 0.0,
        "device_seconds": sum(u.device_seconds for u in updates),
    }


def record_summary(record: RunRecord) -> dict[str, Any]:
    """The figures ``hwloop runs show`` prints, as plain values."""
    config = record.config
    last = record.epochs[-1] if record.epochs else None
    return {
        "path": str(record.path.parent),
        "task": config["task"],
        "neuron": config["neuron"],
        "learner": config["learner"],
        "lambda": config["lam"] if config["learner"] == "hypr" else None,
        "seed": config["seed"],
        "epochs_done": len(record.epochs),
        "epochs_planned": config["epochs"],
        "final_test_accuracy": last.test_accuracy if last else None,
        "best_accuracy": float(record.checkpoint["best_accuracy"]) if record.epochs else None,
        "final_train_loss": last.train_loss if last else None,
        "seconds": sum(e.seconds for e in record.epochs),
        "created": record.created,
        "versions": record.versions,
        "epochs": [asdict(e) for e in record.epochs],
        "backend": config.get("backend", "none"),
        "device": device_summary(record.updates) if record.updates else None,
    }
