"""Training runs into run directories: validated first, locked, checkpointed, interruptible.

``plan_training`` validates everything a run needs (configuration, task, backend, output
directory) and builds its Trainer without writing anything; it is ``hwloop train --dry-run``.
``train`` and ``resume`` then run the plan:

- the run directory is locked (a second process is refused) and stale temporary files are
  removed;
- ``run.h5`` is written atomically after every epoch (and every ``checkpoint_every`` steps);
- SIGINT/SIGTERM stop the run with the last checkpoint intact (``Interrupted``, exit status
  130/143); before the first checkpoint of a new run nothing is kept, not even the directory;
- a NaN/inf loss or a full disk stop it with ``RunError`` (the last good checkpoint is kept);
- ``curves.png`` / ``curves.svg`` are redrawn during training (at most every
  ``PLOT_INTERVAL`` seconds) and at the end.
"""

from __future__ import annotations

import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwloop.config import TrainConfig, build_config
from hwloop.errors import Diverged, RunError, UserError
from hwloop.interrupts import Interrupted, stop_on_signals
from hwloop.plots import plot_curves
from hwloop.presets import preset_for
from hwloop.rundir import RunDirectory
from hwloop.runs import EVAL_FOLDER, RUN_FILE, RunRecord, now_iso, read_run, write_run
from hwloop.session import UpdateMetrics
from hwloop.tasks import Task, make_task
from hwloop.trainer import EpochMetrics, StepMetrics, Trainer, check_config

PLOT_INTERVAL = 10.0
"""Seconds between redraws of the learning curves during training."""


@dataclass
class TrainingCallbacks:
    """Callbacks a caller (the CLI's progress bar) gets during training; all optional."""

    on_start: Callable[[Trainer], None] | None = None
    on_step: Callable[[StepMetrics], None] | None = None
    on_epoch: Callable[[EpochMetrics], None] | None = None


@dataclass
class TrainingPlan:
    """A validated run, ready to train: nothing has been written yet.

    Attributes:
        config: the resolved configuration (presets applied).
        presets: the preset values applied beneath the user's (empty if none).
        task, trainer: built from ``config`` (a resumed trainer holds its checkpoint).
        directory: the run directory (checked, not yet created or locked).
        resumed: the run read back, when continuing one.
    """

    config: TrainConfig
    presets: dict[str, Any]
    task: Task
    trainer: Trainer
    directory: RunDirectory
    overwrite: bool = False
    checkpoint_every: int | None = None
    resumed: RunRecord | None = None
    epochs: list[EpochMetrics] = field(default_factory=list)
    steps: list[StepMetrics] = field(default_factory=list)
    created: str = field(default_factory=now_iso)


def task_description(task: Task) -> dict[str, Any]:
    """What the run file stores about the task (``/`` attribute ``task``)."""
    return {
        "name": task.name, "input_size": task.input_size, "num_classes": task.num_classes,
        "num_steps": task.num_steps, "ignore_first": task.ignore_first,
        "description": task.description, "train_samples": len(task.train),
        "test_samples": len(task.test),
        "validation_samples": None if task.validation is None else len(task.validation),
    }


def plan_training(
    config: TrainConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    checkpoint_every: int | None = None,
) -> TrainingPlan:
    """Validate a run and build its trainer without writing anything (UserError if invalid).

    Args:
        config: the configuration of a new run (None when resuming: the stored one is used).
        out: the run directory.
        resume: continue the run in ``out`` from its checkpoint.
        overwrite: replace a run already in ``out`` (its run.h5 is replaced at the first
            checkpoint; its ``eval`` results are removed then).
        epochs: with ``resume``, a new total number of epochs (to extend a finished run).
        checkpoint_every: also write a checkpoint every this many optimizer steps.
    """
    directory = RunDirectory(out)
    directory.check()
    if checkpoint_every is not None and checkpoint_every < 1:
        raise UserError(f"--checkpoint-every must be >= 1 (optimizer steps), got "
                        f"{checkpoint_every}")
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; "
                        "give one of them")
    resumed = None
    if resume:
        if config is not None:
            raise UserError("--resume continues a run with its stored config; only --epochs "
                            "may be given (to extend it)")
        resumed = read_run(directory.path)
        assert resumed.config is not None and resumed.checkpoint is not None
        config = build_config(resumed.config, epochs=epochs)
        if config.epochs < len(resumed.epochs):
            raise UserError(f"--epochs {config.epochs} is below the {len(resumed.epochs)} "
                            "epochs the run has done")
    else:
        if config is None:
            raise UserError("a new run needs a configuration")
        if (directory.path / RUN_FILE).exists() and not overwrite:
            raise UserError(f"{directory.path} already holds a run ({RUN_FILE}); pass "
                            "--overwrite to replace it or --resume to continue it")
    check_config(config)  # before the task: it draws its data from the seed
    task = make_task(config.task, config.task_options, config.seed)
    trainer = Trainer(config, task)
    try:
        return _plan(config, task, trainer, directory, overwrite, checkpoint_every, resumed)
    except BaseException:
        trainer.close()
        raise


def _plan(config: TrainConfig, task: Task, trainer: Trainer, directory: RunDirectory,
          overwrite: bool, checkpoint_every: int | None, resumed: RunRecord | None,
          ) -> TrainingPlan:
    plan = TrainingPlan(
        config=config, presets=preset_for(config.task, config.neuron) if config.presets else {},
        task=task, trainer=trainer, directory=directory, overwrite=overwrite,
        checkpoint_every=checkpoint_every, resumed=resumed,
    )
    if resumed is not None:
        trainer.load_state(resumed.checkpoint)  # type: ignore[arg-type]
        plan.epochs, plan.steps, plan.created = resumed.epochs, resumed.steps, resumed.created
        if trainer.session is not None:
            trainer.session.updates = list(resumed.updates)
    return plan


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    checkpoint_every: int | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> RunRecord:
    """Train a new run into ``out`` and return its record (see the module doc)."""
    plan = plan_training(config, out, overwrite=overwrite, checkpoint_every=checkpoint_every)
    return run_plan(plan, callbacks)


def resume(
    out: str | Path,
    *,
    epochs: int | None = None,
    checkpoint_every: int | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> RunRecord:
    """Continue the run in ``out`` from its checkpoint (optionally to ``epochs`` epochs)."""
    plan = plan_training(None, out, resume=True, epochs=epochs,
                         checkpoint_every=checkpoint_every)
    return run_plan(plan, callbacks)


def run_plan(plan: TrainingPlan, callbacks: TrainingCallbacks | None = None) -> RunRecord:
    """Train ``plan`` to its last epoch, checkpointing into its directory."""
    callbacks = callbacks or TrainingCallbacks()
    trainer, directory = plan.trainer, plan.directory
    saved = {"step": None if plan.resumed is None else trainer.step}

    def checkpoint() -> None:
        write_run(directory.path, config=plan.config.to_dict(),
                  task=task_description(plan.task), created=plan.created, epochs=plan.epochs,
                  steps=plan.steps, checkpoint=trainer.state(), updates=_updates(trainer))
        if saved["step"] is None and plan.overwrite:
            shutil.rmtree(directory.path / EVAL_FOLDER, ignore_errors=True)  # the old run's
        saved["step"] = trainer.step

    def on_step(metrics: StepMetrics) -> None:
        plan.steps.append(metrics)
        if callbacks.on_step is not None:
            callbacks.on_step(metrics)

    directory.acquire()
    try:
        with stop_on_signals():
            if callbacks.on_start is not None:
                callbacks.on_start(trainer)
            last_plot = time.monotonic()
            while trainer.epoch < plan.config.epochs:
                result = trainer.train_epoch(on_step, plan.checkpoint_every, checkpoint)
                plan.epochs.append(result)
                checkpoint()
                if callbacks.on_epoch is not None:
                    callbacks.on_epoch(result)
                if time.monotonic() - last_plot >= PLOT_INTERVAL:
                    _plot(plan)
                    last_plot = time.monotonic()
            if saved["step"] is None:  # resumed a finished run without new epochs
                checkpoint()
            _plot(plan)
    except KeyboardInterrupt as stop:  # Interrupted, or Ctrl-C where no handler was set
        interrupted = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT)
        interrupted.message = (f"interrupted by {interrupted.signal_name}; "
                               f"{_what_was_kept(plan, saved['step'])}")
        raise interrupted from None
    except RunError as error:
        kept = _what_was_kept(plan, saved["step"], resumable=not isinstance(error, Diverged))
        raise type(error)(f"{error}; {kept}") from None
    finally:
        trainer.close()
        directory.release(keep=saved["step"] is not None or plan.resumed is not None)
    return read_run(directory.path)


def _what_was_kept(plan: TrainingPlan, saved_step: int | None, resumable: bool = True) -> str:
    """What the run directory holds after a run stopped early (one sentence)."""
    run_path = plan.directory.path / RUN_FILE
    if saved_step is None and plan.resumed is None:
        if plan.overwrite and run_path.exists():
            return f"no checkpoint was written; {run_path} still holds the previous run"
        return "no checkpoint was written yet, so nothing was kept"
    record = read_run(run_path, lenient=True)
    checkpoint = record.checkpoint or {}
    kept = (f"{run_path} holds the checkpoint of step {checkpoint.get('step')} (epoch "
            f"{len(record.epochs)} done)")
    if not resumable:
        return kept
    return f"{kept}; continue with: hwloop train --out {plan.directory.path} --resume"


def _updates(trainer: Trainer) -> list[UpdateMetrics]:
    return [] if trainer.session is None else trainer.session.updates


def _plot(plan: TrainingPlan) -> None:
    """Redraw the learning curves from the metrics in memory."""
    record = RunRecord(
        path=plan.directory.path / RUN_FILE, config=plan.config.to_dict(), versions={},
        created=plan.created, epochs=plan.epochs, steps=plan.steps, final_weights=None,
        best_weights=None, checkpoint=None, updates=_updates(plan.trainer),
        task=task_description(plan.task),
    )
    plot_curves(record, plan.directory.path, chance=1.0 / plan.task.num_classes)
