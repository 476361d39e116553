"""One trial, as a worker runs it: train into a temporary run directory, evaluate, return.

``run_trial`` is the function the Dask workers execute. It takes the trial as plain values
(``Trial.to_dict()`` plus ``threads``), trains with ``hwloop.train`` (the training kinds are
already folded into the config by ``hwloop.study.spec``), runs each evaluation with
``hwloop.evaluate``, and returns the figures together with the run directory's files as bytes.
Only the study's driver writes to the study directory, so a worker needs no shared file system
and a killed worker leaves nothing behind but its temporary folder.

A trial's figures depend only on its config and evaluation settings and on ``threads`` (torch's
reductions are bit-identical for a given thread count), not on the worker it ran on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import hwloop  # noqa: F401  (sets the OpenMP defaults before torch is imported)
from hwloop.config import build_config
from hwloop.evaluation import evaluate
from hwloop.threads import configure_threads
from hwloop.training import train

TrialRunner = Callable[[dict[str, Any]], dict[str, Any]]
"""What a worker runs for one trial: the trial's plain values in, its result out."""
RUN_KEYS = ("seconds", "train_seconds", "eval_seconds", "worker", "host", "pid", "started",
            "attempts", "status")
"""Result fields that say where, when and how fast a trial ran, not what it measured."""


def run_trial(trial: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate ``trial``; returns ``{"metrics": ..., "files": {path: bytes}}``.

    torch runs with ``trial["threads"]`` threads for the trial and gets its previous count
    back afterwards."""
    import torch

    previous = torch.get_num_threads()
    try:
        return _run(trial, configure_threads(trial["threads"]))
    finally:
        torch.set_num_threads(previous)


def _run(trial: dict[str, Any], threads: int) -> dict[str, Any]:
    started = time.time()
    with _device_lock(trial.get("device_lock")), \
            tempfile.TemporaryDirectory(prefix="hwloop-trial-") as folder:
        run_dir = Path(folder) / "run"
        record = train(build_config(trial["config"]), run_dir)
        trained = time.time()
        evaluations = [_evaluate(record, evaluation["settings"])
                       for evaluation in trial["evaluations"]]
        files = {str(path.relative_to(run_dir)): path.read_bytes()
                 for path in sorted(run_dir.rglob("*"))
                 if path.is_file() and not path.name.startswith(".")}
    last = record.epochs[-1]
    metrics = {
        "trial": trial["id"],
        "training": {
            "epochs": len(record.epochs),
            "final_test_accuracy": last.test_accuracy,
            "best_test_accuracy": max(epoch.test_accuracy for epoch in record.epochs),
            "final_train_loss": last.train_loss,
            "final_train_accuracy": last.train_accuracy,
        },
        "updates": {
            "count": len(record.updates),
            "write_error": [update.write_error for update in record.updates],
            "cells": [update.cells for update in record.updates],
            "pulses": sum(update.pulses for update in record.updates),
            "failures": sum(update.failures for update in record.updates),
        },
        "evaluations": evaluations,
        "torch_threads": threads,
        "seconds": time.time() - started,
        "train_seconds": trained - started,
        "eval_seconds": time.time() - trained,
        "started": started,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": _worker_address(),
    }
    return {"metrics": metrics, "files": files}


def figures_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored figures without ``RUN_KEYS`` (and evaluation times): what must be
    identical wherever, and however often, the trial ran."""
    kept = {key: value for key, value in metrics.items() if key not in RUN_KEYS}
    kept["evaluations"] = [{key: value for key, value in evaluation.items() if key != "seconds"}
                           for evaluation in metrics.get("evaluations", [])]
    return kept


def _evaluate(record: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """One evaluation of ``record`` with a trial's evaluation settings."""
    options = dict(settings)
    backend = options.pop("backend")
    if backend == "none":  # a study without a device: measured on the host
        backend = None
    result = evaluate(
        record, weights=options["weights"], backend=backend, bits=options["bits"],
        drift=options["drift"], device_seeds=options["device_seeds"], gdc=options["gdc"],
        forward=options["forward"], split=options["split"],
        backend_options=options["backend_options"] or None,
    )
    values = result.to_dict()
    values.pop("run")  # a temporary folder
    return values


@contextlib.contextmanager
def _device_lock(name: str | None) -> Iterator[None]:
    """Hold the cluster-wide lock ``name`` (a physical device) for the block, when on a worker."""
    if name is None:
        yield
        return
    from distributed import Lock, get_worker

    try:
        get_worker()
    except ValueError:  # not on a Dask worker: nothing else runs trials here
        yield
        return
    with Lock(name):
        yield


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None
