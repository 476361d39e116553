"""Task registry: build a task by name from plain option values (e.g. parsed from the CLI).

>>> task = make_task("cue", {"seq_len": 10, "delay": 5}, seed=0)
>>> task.num_steps
25
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from hwloop.errors import UserError
from hwloop.options import build_options
from hwloop.tasks.base import SequenceDataset, Task, batches
from hwloop.tasks.cue import CueOptions, build_cue_task, generate_cue
from hwloop.tasks.digits import DigitsOptions, build_digits_task
from hwloop.tasks.heidelberg import HeidelbergOptions, build_shd_task, build_ssc_task

__all__ = [
    "TASKS",
    "CueOptions",
    "DigitsOptions",
    "HeidelbergOptions",
    "SequenceDataset",
    "Task",
    "batches",
    "generate_cue",
    "make_task",
    "task_option_names",
]

TASKS: dict[str, type] = {
    "cue": CueOptions,
    "digits": DigitsOptions,
    "shd": HeidelbergOptions,
    "ssc": HeidelbergOptions,
}

_BUILDERS: dict[str, Callable[[Any, int], Task]] = {
    "cue": build_cue_task,
    "digits": build_digits_task,
    "shd": build_shd_task,
    "ssc": build_ssc_task,
}

def _options_class(name: str) -> type:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r} (choose from: {', '.join(TASKS)})")
    return TASKS[name]


def task_option_names(name: str) -> list[str]:
    """The option names of task ``name``, in declaration order."""
    return [field.name for field in dataclasses.fields(_options_class(name))]


def make_task(name: str, options: Mapping[str, object], seed: int) -> Task:
    """Build task ``name`` with ``options`` (missing ones take their defaults).

    Everything random (generated data, splits, spike encodings) derives from ``seed``, so the
    same name, options and seed give identical data.

    Raises:
        UserError: unknown task or option, a value of the wrong type or out of range, or
            (shd/ssc) missing or malformed data files.
    """
    options_class = _options_class(name)
    return _BUILDERS[name](build_options(options_class, options, f"task {name!r}"), seed)
