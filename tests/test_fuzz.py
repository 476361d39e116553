"""A fuzz of ``hwloop train`` (issue 8): random options and KEY=VALUE overrides, of every type
and value, never end in a traceback.

``train_commands`` builds command lines from the CLI options and from overrides of every config
key and every option of every task, neuron model, readout and backend. The options are found by
introspection (dataclass fields, ``__init__`` signatures), so new options are fuzzed as soon as
they exist. Half of the cases draw only plausible values (most of them validate and get deep
into the run's construction); the others give some options extreme or wrong values: NaN, inf,
negative, zero, huge, tiny, wrong types, empty strings, unicode, malformed TOML. A sweep tries
every option at every extreme value too, which random draws rarely hit.

``pytest tests/test_fuzz.py --hypothesis-show-statistics`` shows the share of each exit status.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
import shutil
import tempfile
import traceback
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from hwloop.backends import available_backends
from hwloop.cli import main
from hwloop.config import TABLES, TrainConfig
from hwloop.learning.hypr import RECURRENT_TIMINGS
from hwloop.learning.losses import LOSSES, PREDICTIONS
from hwloop.learning.network import RECURRENCE_MODES
from hwloop.neurons import HIDDEN_NEURONS, LI, NeuronModel
from hwloop.neurons.surrogates import SURROGATES
from hwloop.runs import read_run
from hwloop.session import FORWARDS, SCHEMES
from hwloop.tasks import TASKS
from hwloop.tasks.digits import ENCODINGS, PRESENTATIONS
from hwloop.trainer import DEVICE_KEYS, DTYPES, LEARNERS, LR_SCHEDULES, OPTIMIZERS, TRAIN_OPTION
from simulators.pcm.backend import MODES
from simulators.pcm.noise import FITS
from test_tasks import write_shd, write_spike_file

DATA_DIR = "@data_dir@"
"""Stands for the directory of the small SHD and SSC files in a drawn command line."""


@dataclass(frozen=True)
class Option:
    """A config key or an option of a table: its name, type annotation and default."""

    name: str
    annotation: Any
    default: Any


def dataclass_options(cls: type) -> list[Option]:
    """The fields of the dataclass ``cls`` as Options."""
    hints = typing.get_type_hints(cls)
    options = []
    for field in dataclasses.fields(cls):
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        options.append(Option(field.name, hints[field.name], default))
    return options


def model_options(cls: type[NeuronModel]) -> list[Option]:
    """A neuron model's hyperparameters plus ``train`` (the parameters to train)."""
    return [*dataclass_options(cls), Option(TRAIN_OPTION, list[str], list(cls.param_names))]


def init_options(cls: type) -> list[Option]:
    """The keyword parameters of ``cls.__init__`` (a backend's options) as Options."""
    hints = typing.get_type_hints(cls.__init__)
    return [
        Option(p.name, hints.get(p.name, Any), p.default)
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


CONFIG_OPTIONS = [o for o in dataclass_options(TrainConfig) if o.name not in TABLES]
TASK_OPTIONS = {name: dataclass_options(cls) for name, cls in TASKS.items()}
NEURON_OPTIONS = {name: model_options(cls) for name, cls in HIDDEN_NEURONS.items()}
READOUT_OPTIONS = model_options(LI)
BACKEND_OPTIONS = {name: init_options(cls) for name, cls in available_backends().items()}
DEFAULTS = TrainConfig()
CLI_OPTIONS = {
    "task": "--task", "neuron": "--neuron", "learner": "--learner", "lam": "--lambda",
    "epochs": "--epochs", "seed": "--seed", "batch_size": "--batch-size", "lr": "--lr",
    "hidden": "--hidden", "recurrence": "--recurrence", "dtype": "--dtype",
    "device": "--device", "backend": "--backend", "bits": "--bits", "scheme": "--scheme",
    "forward": "--forward",
}
"""Config keys that also have a CLI option of ``hwloop train``."""

HINTS: dict[str, st.SearchStrategy[Any]] = {
    # choices and ranges the type annotation does not tell
    "learner": st.sampled_from(LEARNERS),
    "lam": st.integers(1, 30),
    "recurrent_timing": st.sampled_from(RECURRENT_TIMINGS),
    "epochs": st.integers(1, 50),
    "seed": st.one_of(st.integers(0, 1000), st.just(2**63 - 1)),
    "batch_size": st.integers(1, 64),
    "optimizer": st.sampled_from(list(OPTIMIZERS)),
    "lr": st.floats(1e-4, 0.1),
    "lr_schedule": st.sampled_from(LR_SCHEDULES),
    "lr_end_factor": st.floats(0.0, 1.0),
    "grad_clip": st.floats(0.1, 100.0),
    "hidden": st.lists(st.integers(1, 64), min_size=1, max_size=3),
    "recurrence": st.sampled_from(RECURRENCE_MODES),
    "init_gain": st.floats(0.1, 5.0),
    "loss": st.sampled_from(LOSSES),
    "prediction": st.sampled_from(PREDICTIONS),
    "dtype": st.sampled_from(list(DTYPES)),
    "device": st.just("cpu"),
    "eval_window": st.integers(1, 1000),
    "bits": st.integers(2, 8),
    "scheme": st.sampled_from(SCHEMES),
    "threshold": st.floats(0.1, 3.0),
    "forward": st.sampled_from(FORWARDS),
    "surrogate": st.sampled_from(list(SURROGATES)),
    "presentation": st.sampled_from(PRESENTATIONS),
    "encoding": st.sampled_from(ENCODINGS),
    "mode": st.sampled_from(MODES),
    "fit": st.sampled_from(FITS),
    "steps": st.integers(2, 120),
    "ignore_first": st.integers(0, 30),
    "data_dir": st.just(DATA_DIR),
    "validation_fraction": st.floats(0.0, 0.5),
    "g_max": st.floats(1.0, 100.0),
    "refresh_threshold": st.floats(0.1, 5.0),
}
"""Plausible values of options whose type and default say too little; the rest are drawn
around their defaults (``plausible``)."""

SMALL_HINTS: dict[str, st.SearchStrategy[Any]] = {
    **HINTS,
    "hidden": st.lists(st.integers(1, 16), min_size=1, max_size=2),
    "batch_size": st.integers(32, 64),
    "eval_window": st.integers(10, 1000),
    "num_samples": st.integers(8, 64),
    "seq_len": st.integers(1, 10),
    "delay": st.integers(0, 10),
    "steps": st.integers(2, 30),
    "image_steps": st.integers(1, 10),
    "steps_per_row": st.integers(1, 2),
    "max_time_ms": st.floats(220.0, 300.0),  # T >= 55 > ignore_first = 50 (the default)
    "bin_ms": st.floats(3.0, 4.0),
    "tile": st.integers(16, 256),
    "max_iterations": st.integers(1, 20),
}
"""``HINTS`` with the sizes of the training fuzz, where every case trains for an epoch."""
SMALL_ALWAYS = ("hidden", "num_samples", "max_time_ms")
"""Options the training fuzz always sets (to small values): the defaults take seconds."""


INT_EXTREMES = [-1, 0, -(2**63), 2**31, 2**63, 10**30, 10**400]
FLOAT_EXTREMES = [0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-38, 1e38, 1e39, 1e300,
                  1.7976931348623157e308, math.nan, math.inf, -math.inf]
STRING_EXTREMES = ["", " ", "é🙂", "\u202e", "\u0000", "NONE", "cue ", "/", "/dev/null", ".."]
"""Values of the right type (a float accepts ints too) at or beyond the ends of every range."""

WRONG_TEXTS = [
    "nan", "-inf", "1e400", "9" * 400, "true", '""', '"\\u0000"', '"é🙂"', "[]", "[0]",
    "[1.5, nan]", "[[1]]", '["a", 1]', "{}", "{a = 1}", "{tau_u = 1}", "1979-05-27", "07:32:00",
    "1979-05-27T07:32:00Z", "[1,", "{a =", '"open', "1e", "0x", "0x10", "1__0", "0b102", "1.",
    ".5", "+", "=", "==", "\\", "é", "🙂", "", " ", "x y", "\u202e", "[" * 1000 + "]" * 1000,
]
"""Wrong values as TOML (or CLI) text: wrong types, specials, malformed TOML, deep nesting."""

WRONG_SPECS = [
    "", " ", "://", "pcm://", "pcm://x", "pcm://?", "pcm://?bits", "pcm://?bits=4&bits=5",
    "pcm://?=4", "pcm?bits=4", "PCM", "nope", "nope://?a=1", "ideal://?bits=1",
    "ideal://?bits=9", "pcm://?bits=nan", "pcm://?seed=-1", "pcm://?nope=1", "pcm://?tile=0",
    "é://?é=é", "none://",
]
"""Wrong backend specs: malformed, unknown names and keys, values out of range."""

JUNK_OVERRIDES = [
    "nope=1", "task_options.nope=1", "nope.x=1", "=1", "epochs", "task_options.=1", ".x=1",
    "task_options.seq_len.x=1", "é=1", "EPOCHS=3", "epochs=1", "task_options=1",
    "task_options={seq_len = [1]}", "neuron_options={}", "backend_options={}", "--nope",
]
"""Overrides that are wrong as a whole: unknown keys, bad structure, a key given twice."""


class Raw(str):
    """Text given as it is (a wrong value: malformed TOML, a wrong type, ...)."""


WRONG = st.one_of(
    st.sampled_from(WRONG_TEXTS),
    st.integers().map(str),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
).map(Raw)


def toml(value: Any) -> str:
    """``value`` (bool, int, float, str, list, tuple or dict) as a TOML value; Raw as it is."""
    if isinstance(value, Raw):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{key} = {toml(item)}" for key, item in value.items()) + "}"


def cli_text(value: Any) -> str:
    """``value`` as the text of a CLI option (``--hidden 64,64``, ``--lr 0.01``)."""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return value if isinstance(value, str) else toml(value)


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None``, else ``annotation``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return annotation


def plausible(option: Option, hints: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Values of ``option`` that are likely valid: ``hints``, else drawn around the default."""
    if option.name in hints:
        return hints[option.name]
    annotation, default = _without_none(option.annotation), option.default
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        top = min(max(2 * default, 8), 256) if isinstance(default, int) else 64
        return st.integers(1, top)
    if annotation is float:
        if isinstance(default, (int, float)) and default > 0:
            return st.floats(default / 2, default * 2)
        return st.floats(0.0, 1.0)
    if annotation is str:
        return st.just(default) if isinstance(default, str) else st.text("abc", min_size=1)
    if origin is tuple and isinstance(default, tuple):  # a range: both ends scaled alike
        return st.floats(0.5, 2.0).map(lambda factor: tuple(end * factor for end in default))
    if origin is list and args == (str,) and default:  # ``train``: some parameter names
        return st.lists(st.sampled_from(default), unique=True)
    if origin is list:
        item = Option(option.name, args[0], default[0] if default else None)
        return st.lists(plausible(item, hints), min_size=1, max_size=3)
    if origin is dict:
        return st.just({})
    return st.integers(1, 8)


def extremes(option: Option) -> list[Any]:
    """Values of ``option`` at or beyond the ends of any range (NaN, inf, negative, zero, huge,
    tiny, empty), mostly of the right type, so that they reach the range checks."""
    annotation, default = _without_none(option.annotation), option.default
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return [0, 1, 0.5, "true"]
    if annotation is int:
        return INT_EXTREMES
    if annotation is float:
        return FLOAT_EXTREMES + INT_EXTREMES
    if annotation is str:
        return STRING_EXTREMES
    if origin is tuple:
        ranges: list[Any] = [(end, end) for end in FLOAT_EXTREMES] + [(1.0,), (1.0, 2.0, 3.0)]
        if isinstance(default, tuple):
            low, high = default
            ranges += [(low, end) for end in FLOAT_EXTREMES]
            ranges += [(end, high) for end in FLOAT_EXTREMES]
            ranges.append((high, low) if high != low else (high, low - 1))
        return ranges
    if origin is list:
        return [[]] + [[value] for value in extremes(Option(option.name, args[0], None))]
    if origin is dict:
        return [{"a": 1}, {"": 1}, {"a": {"b": math.nan}}]
    return INT_EXTREMES + FLOAT_EXTREMES + STRING_EXTREMES


@dataclass(frozen=True)
class Case:
    """A ``hwloop train`` command line without ``--out``, ``--quiet`` and ``--dry-run``.

    Attributes:
        args: options and KEY=VALUE overrides (``DATA_DIR`` stands for the SHD/SSC files).
        config_file: TOML text given with ``--config``, or None.
        existing_run: whether ``--out`` already holds a (finished, one-epoch) run.
    """

    args: tuple[str, ...]
    config_file: str | None = None
    existing_run: bool = False


@st.composite
def train_commands(draw: st.DrawFn, small: bool = False) -> Case:
    """A random ``hwloop train`` command line.

    Half of the cases draw only plausible values; "extreme" cases give one to three options an
    extreme value (``extremes``); "chaos" cases give any option a wrong value at random. With
    ``small`` (the training fuzz) the sizes are small, there is no chaos, and ``--epochs 1`` is
    given.
    """
    hints = SMALL_HINTS if small else HINTS
    mode = draw(st.sampled_from(["valid"] * 6 + ["extreme"] * 4 if small
                                else ["valid"] * 5 + ["extreme"] * 3 + ["chaos"] * 2))

    def chance(percent: int) -> bool:
        return draw(st.integers(0, 99)) < percent

    chosen = {
        "task": draw(st.sampled_from(list(TASKS))),
        "neuron": draw(st.sampled_from(list(HIDDEN_NEURONS))),
        "backend": draw(st.sampled_from(["none", *BACKEND_OPTIONS])),
    }
    action = "new" if small else draw(st.sampled_from(["new"] * 6 + ["overwrite", "resume"]))
    if mode != "chaos" and action == "resume":  # a resumed run takes only --epochs
        epochs = draw(st.sampled_from([(), ("--epochs", "1"), ("--epochs", "3")]
                                      + ([("--epochs", "0")] if mode == "extreme" else [])))
        return Case(("--resume", *epochs), existing_run=True)

    # every option this case may set: ("", config key) or (table, option)
    if mode == "chaos":
        tables = {
            "task_options": draw(st.sampled_from(list(TASK_OPTIONS.values()))),
            "neuron_options": draw(st.sampled_from(list(NEURON_OPTIONS.values()))),
            "readout_options": READOUT_OPTIONS,
            "backend_options": draw(st.sampled_from(list(BACKEND_OPTIONS.values()))),
        }
    else:
        tables = {
            "task_options": TASK_OPTIONS[chosen["task"]],
            "neuron_options": NEURON_OPTIONS[chosen["neuron"]],
            "readout_options": READOUT_OPTIONS,
            "backend_options": BACKEND_OPTIONS.get(chosen["backend"], []),
        }
    without_device = mode != "chaos" and chosen["backend"] == "none"
    slots = [("", option) for option in CONFIG_OPTIONS
             if not (small and option.name == "epochs")
             and not (without_device and option.name in DEVICE_KEYS)]
    slots += [(table, option) for table, options in tables.items() for option in options
              if not (without_device and table == "backend_options")]
    targets = set(draw(st.lists(st.integers(0, len(slots) - 1), min_size=1, max_size=3))
                  if mode == "extreme" else [])

    drawn = set(draw(st.lists(st.integers(0, len(slots) - 1), max_size=8)))
    always = {"data_dir"} if chosen["task"] in ("shd", "ssc") else set()
    if small:
        always |= set(SMALL_ALWAYS)
    cli: list[str] = []
    overrides: list[str] = []
    table_values: dict[str, dict[str, Any]] = {table: {} for table in tables}
    for index, (table, option) in enumerate(slots):
        key = option.name
        if index in targets:
            value = (backend_spec(draw, chosen["backend"], "extreme") if key == "backend"
                     else draw(st.sampled_from(extremes(option))))
        elif not table and key in chosen:
            if chosen[key] == getattr(DEFAULTS, key) and not chance(30):
                continue
            value = backend_spec(draw, chosen[key], mode) if key == "backend" else chosen[key]
        elif index in drawn or key in always:
            value = draw(plausible(option, hints))
        else:
            continue
        if mode == "chaos" and key != "backend" and chance(30):
            value = draw(st.one_of(WRONG, st.sampled_from(extremes(option))))
        if table:
            table_values[table][key] = value
        elif key in CLI_OPTIONS and "\x00" not in cli_text(value) and chance(50):
            cli.extend([CLI_OPTIONS[key], cli_text(value)])
        else:
            overrides.append(f"{key}={toml(value)}")
    for table, values in table_values.items():
        if values and chance(20):  # the whole table as one inline table
            overrides.append(f"{table}={toml(values)}")
        else:
            overrides.extend(f"{table}.{key}={toml(value)}" for key, value in values.items())

    if mode == "chaos" and chance(30):
        overrides.append(draw(st.sampled_from(JUNK_OVERRIDES)))
    for flag, top in (("--checkpoint-every", 100), ("--threads", 2)):
        if chance(10):
            value = draw(st.one_of(WRONG, st.sampled_from(INT_EXTREMES).map(str)) if mode == "chaos"
                         else st.integers(1, top).map(str))
            cli.extend([flag, value])
    if action == "overwrite" or (mode == "chaos" and chance(20)):
        cli.append("--overwrite")
    if mode == "chaos" and chance(10):
        cli.append("--resume")
    if small:
        cli.extend(["--epochs", "1"])
    config_file = None
    if chance(15):  # the overrides as a config file, dotted keys and all
        config_file = "".join(f"{text.partition('=')[0]} = {text.partition('=')[2]}\n"
                              for text in overrides)
        overrides = []
    existing_run = action != "new" or (mode == "chaos" and chance(30))
    return Case(tuple(cli + overrides), config_file, existing_run)


def backend_spec(draw: st.DrawFn, name: str, mode: str) -> str:
    """A spec of backend ``name`` (``none``, ``pcm``, ``pcm://?bits=4&seed=1``) with random
    query options: plausible ones, one extreme (mode "extreme") or wrong ones (mode "chaos")."""
    if mode != "valid" and draw(st.integers(0, 99)) < 30:
        return draw(st.sampled_from(WRONG_SPECS))
    if name == "none" or (mode == "valid" and draw(st.booleans())):
        return name
    options = BACKEND_OPTIONS[name]
    chosen = draw(st.lists(st.sampled_from(options), unique_by=lambda o: o.name,
                           min_size=1 if mode == "extreme" else 0, max_size=3))
    pairs = []
    for index, option in enumerate(chosen):
        if mode == "extreme" and index == 0:
            value = draw(st.sampled_from(extremes(option)))
        elif mode == "chaos" and draw(st.booleans()):
            value = draw(WRONG)
        else:
            value = draw(plausible(option, HINTS))
        text = value if isinstance(value, str) else toml(value)
        pairs.append(f"{option.name}={quote(text, safe='')}")
    return f"{name}://?{'&'.join(pairs)}" if pairs else f"{name}://"


@dataclass(frozen=True)
class Workspace:
    """What the cases need on disk: SHD and SSC files, and a finished run to copy."""

    data_dir: Path
    run: Path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("fuzz")
    data_dir = root / "data"
    data_dir.mkdir()
    write_shd(data_dir)
    for name, count in (("ssc_train.h5", 8), ("ssc_valid.h5", 3), ("ssc_test.h5", 3)):
        write_spike_file(data_dir / name, [[0.125, 0.5]] * count, [[index, 699 - index]
                         for index in range(count)], list(range(count)))
    run = root / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(run), "--epochs", "1", "--quiet",
                                       "task_options.num_samples=64", "hidden=[8]"])
    assert result.exit_code == 0, result.stderr
    return Workspace(data_dir, run)


def invoke(
    case: Case, workspace: Workspace, root: Path, *, dry_run: bool
) -> tuple[Result, list[warnings.WarningMessage]]:
    """Run ``case`` in-process with ``--out root/out``; the result and the RuntimeWarnings."""
    out = root / "out"
    if case.existing_run:
        shutil.copytree(workspace.run, out)
    args = ["train", "--out", str(out), "--quiet", *(["--dry-run"] if dry_run else [])]
    args += [arg.replace(DATA_DIR, str(workspace.data_dir)) for arg in case.args]
    if case.config_file is not None:
        config = root / "config.toml"
        config.write_text(case.config_file.replace(DATA_DIR, str(workspace.data_dir)))
        args += ["--config", str(config)]
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            result = CliRunner().invoke(main, args)
    finally:
        torch.set_num_threads(threads)  # --threads must not slow down the next cases
    return result, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def check_clean_exit(result: Result, allowed: tuple[int, ...]) -> None:
    """No traceback, an exit status in ``allowed``, and a failure told in one line."""
    exception = result.exception
    assert exception is None or isinstance(exception, SystemExit), "".join(
        traceback.format_exception(exception))
    assert result.exit_code in allowed, result.stderr
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "internal error" not in result.stderr, result.stderr


def snapshot(path: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file under ``path`` (empty if it does not exist)."""
    return {str(file.relative_to(path)): hashlib.sha256(file.read_bytes()).hexdigest()
            for file in sorted(path.rglob("*")) if file.is_file()}


def check_dry_run(case: Case, workspace: Workspace) -> int:
    """Dry-run ``case``: it validates, writing nothing and computing no overflow or NaN
    (RuntimeWarning), or it is refused in one line (exit status 2). Returns the status."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        before = snapshot(workspace.run) if case.existing_run else {}
        result, runtime_warnings = invoke(case, workspace, root, dry_run=True)
        check_clean_exit(result, (0, 2))
        if result.exit_code == 0:
            out = root / "out"
            assert snapshot(out) == before and out.exists() == case.existing_run
            assert not runtime_warnings, [str(w.message) for w in runtime_warnings]
        return result.exit_code


def extreme_cases() -> list[Case]:
    """A command line per option of every task, neuron model, readout and backend (in the
    backend spec too) and per config key (without and with each backend), and per value of
    ``extremes``; the option's model is chosen."""
    cases = []
    for name, options in TASK_OPTIONS.items():
        for option in options:
            data = () if name in ("cue", "digits") or option.name == "data_dir" else (
                f'task_options.data_dir="{DATA_DIR}"',)
            cases += [Case(("--task", name, *data, f"task_options.{option.name}={toml(value)}"))
                      for value in extremes(option)]
    for name, options in NEURON_OPTIONS.items():
        cases += [Case(("--neuron", name, f"neuron_options.{option.name}={toml(value)}"))
                  for option in options for value in extremes(option)]
    cases += [Case((f"readout_options.{option.name}={toml(value)}",))
              for option in READOUT_OPTIONS for value in extremes(option)]
    for name, options in BACKEND_OPTIONS.items():
        for option in options:
            for value in extremes(option):
                text = value if isinstance(value, str) else toml(value)
                cases += [
                    Case(("--backend", name, f"backend_options.{option.name}={toml(value)}")),
                    Case(("--backend", f"{name}://?{option.name}={quote(text, safe='')}")),
                ]
    for backend in ("none", *BACKEND_OPTIONS):
        for option in CONFIG_OPTIONS:
            if backend == "none" and option.name not in DEVICE_KEYS:
                cases += [Case((f"{option.name}={toml(value)}",)) for value in extremes(option)]
            elif backend != "none" and option.name != "backend":
                cases += [Case(("--backend", backend, f"{option.name}={toml(value)}"))
                          for value in extremes(option)]
    return cases


DEEP = "[" * 1000 + "]" * 1000
"""A list nested too deeply for tomllib's recursive parser."""
TINY_RUN = ("task_options.num_samples=64", "hidden=[8]", "--epochs", "1")


# every explicit example reproduces a bug that the fuzz or the sweep found
@settings(max_examples=500, deadline=None)
@given(case=train_commands())
@example(case=Case((f"hidden={DEEP}",)))
@example(case=Case((), config_file=f"hidden = {DEEP}\n"))
@example(case=Case(("task_options.num_samples=" + "9" * 400,)))
@example(case=Case(("--task", "shd", f'task_options.data_dir="{DATA_DIR}"',
                    "task_options.bin_ms=5e-324")))
@example(case=Case(("--task", "digits", "task_options.gain=1e39")))
@example(case=Case((f"hidden=[{10**400}]",)))
@example(case=Case((f"task_options.seq_len={10**400}",)))
@example(case=Case(("--backend", "ideal", "init_gain=1e39")))
@example(case=Case(("--backend", "pcm://?g_max=1e-300",)))
def test_dry_run_validates_or_refuses_in_one_line(case: Case, workspace: Workspace) -> None:
    event(f"exit {check_dry_run(case, workspace)}")


def test_every_option_at_every_extreme_validates_or_refuses(workspace: Workspace) -> None:
    """The fuzz rarely draws one given option at one given extreme value: try every pair."""
    failures = []
    for case in extreme_cases():
        try:
            check_dry_run(case, workspace)
        except AssertionError as error:
            failures.append(f"{' '.join(case.args)}: {str(error).splitlines()[0]}")
    assert not failures, "\n".join(failures)


@settings(max_examples=25, deadline=None)
@given(case=train_commands(small=True))
@example(case=Case(("lr=1e38", *TINY_RUN)))
@example(case=Case(("lr=1.7976931348623157e308", *TINY_RUN)))
@example(case=Case(("--backend", "ideal", "lr=1.7976931348623157e308", *TINY_RUN)))
def test_one_epoch_never_ends_well_with_nan(case: Case, workspace: Workspace) -> None:
    assume(check_dry_run(case, workspace) == 0)  # a sample of the cases that validate
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        result, _ = invoke(case, workspace, root, dry_run=False)
        event(f"exit {result.exit_code}")
        check_clean_exit(result, (0, 1))
        if result.exit_code == 1:  # only a diverged run, or a full disk
            assert re.search(r"became (nan|-?inf)|no space left", result.stderr), result.stderr
        if result.exit_code == 0:
            record = read_run(root / "out")
            assert all(math.isfinite(epoch.train_loss) for epoch in record.epochs)
            for weights in (record.final_weights, record.best_weights):
                assert weights is not None
                assert all(np.isfinite(array).all() for array in weights.values()), [
                    name for name, array in weights.items() if not np.isfinite(array).all()]
