"""Training configuration: one dataclass, loadable from TOML, with ``key=value`` overrides.

A TOML file holds the top-level keys of ``TrainConfig`` and three tables for the options of the
chosen task, hidden neuron model and readout::

    task = "cue"
    neuron = "brf"
    epochs = 20
    [task_options]
    delay = 40
    [neuron_options]
    omega_range = [5.0, 10.0]

Overrides use the same names, dotted for the tables: ``epochs=3 task_options.delay=80``.
Values are parsed as TOML values (``3``, ``0.5``, ``true``, ``[64, 64]``, ``"text"``); a bare
word that is not valid TOML is taken as a string (``neuron=alif``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hwloop.errors import UserError
from hwloop.options import build_options
from hwloop.presets import preset_for

TABLES = ("task_options", "neuron_options", "readout_options", "backend_options")


@dataclass
class TrainConfig:
    """Everything that defines a training run (a run is reproducible from it and the seed).

    Attributes:
        task: task name (cue, digits, shd, ssc).
        neuron: hidden neuron model (lif, alif, adlif, brf).
        learner: hypr, eprop (HYPR with λ = 1) or bptt.
        lam: HYPR subsequence length λ ≥ 1 (steps); ignored by bptt and eprop.
        recurrent_timing: fixed (default) or official (the HYPR authors' code, hypr.md §3.5).
        epochs: passes over the training split.
        seed: seeds data generation, weight initialisation and shuffling.
        batch_size: samples per optimizer step.
        optimizer: adam (default; β = (0.9, 0.999), ε = 1e-8, as in the HYPR code), adamw, sgd
            or rmsprop (torch.optim, default arguments).
        lr: learning rate.
        lr_schedule: constant, linear (to lr·lr_end_factor over all steps) or cosine (to 0).
        lr_end_factor: final factor of the linear schedule.
        grad_clip: global-norm clipping threshold (g ← g / max(1, ‖g‖/grad_clip)).
        hidden: widths of the hidden layers, bottom-up.
        recurrence: none, full, or self (each neuron feeds back to itself, ScSr-SNN).
        skip: skip connections from layer l to layer l+2 (ScSr-SNN).
        init_gain: multiplies the initial hidden weights (xavier_uniform_custom bound).
        loss: per_step_ce, mean_output_ce, sum_of_softmax or last_step_ce (HYPR and e-prop:
            per_step_ce or mean_output_ce).
        prediction: mean_over_sequence, sum_of_softmax or last_step.
        dtype: float32 or float64.
        device: cpu, cuda, or cuda:N.
        eval_window: evaluation runs in windows of this many steps (bounded memory).
        presets: apply the recipe for (task, neuron) from ``hwloop.presets`` beneath these
            values (default true).
        backend: ``none`` trains on the host alone; otherwise a device backend spec (``ideal``,
            ``pcm``, ``pcm://?mode=verify``) that holds the weight matrices in the loop
            (docs/hil.md).
        bits: weight bits on the device (1..8; None: the backend's default, float for ideal).
        scheme: how updates reach the device: direct, mixed, sign or stochastic (docs/hil.md).
        threshold: sign scheme: accumulated update, in levels, that fires one pulse.
        forward: where the forward pass computes its weight products: ``host`` (with the
            read-back weights) or ``device`` (the backend's ``mvm``: a crossbar's analog
            products with DAC/ADC and output noise); neurons always run on the host.
        task_options, neuron_options, readout_options, backend_options: options of the task,
            the hidden neuron model, the LI readout and the backend (docs/tasks.md,
            docs/neurons.md, docs/pcm.md).
    """

    task: str = "cue"
    neuron: str = "brf"
    learner: str = "hypr"
    lam: int = 10
    recurrent_timing: str = "fixed"
    epochs: int = 30
    seed: int = 0
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 0.01
    lr_schedule: str = "constant"
    lr_end_factor: float = 0.0
    grad_clip: float = 10.0
    hidden: list[int] = field(default_factory=lambda: [64])
    recurrence: str = "full"
    skip: bool = False
    init_gain: float = 1.0
    loss: str = "per_step_ce"
    prediction: str = "mean_over_sequence"
    dtype: str = "float32"
    device: str = "cpu"
    eval_window: int = 1000
    presets: bool = True
    backend: str = "none"
    bits: int | None = None
    scheme: str = "direct"
    threshold: float = 1.0
    forward: str = "host"
    task_options: dict[str, Any] = field(default_factory=dict)
    neuron_options: dict[str, Any] = field(default_factory=dict)
    readout_options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every key as plain values (what the run file stores)."""
        return dataclasses.asdict(self)


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into plain values (raises UserError with the file name)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory; give a TOML file") from None
    except OSError as error:
        raise UserError(f"config file {path} cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"config file {path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib parses nested lists and tables recursively
        raise UserError(f"config file {path} nests lists or tables too deeply") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value) with the value parsed as TOML (bare words → strings)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override {text!r} must look like key=value (e.g. epochs=3)")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:  # tomllib parses nested lists and tables recursively
        raise UserError(f"override {key}: the value nests lists or tables too deeply") from None
    return key, value


def parse_overrides(texts: list[str]) -> list[tuple[str, Any]]:
    """``key=value`` texts → (key, value) pairs in order; a key given twice is a UserError."""
    pairs = [parse_override(text) for text in texts]
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise UserError(f"{key} is given twice among the KEY=VALUE overrides; give it once")
    return pairs


def build_config(
    file_values: Mapping[str, Any] | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
    **explicit: Any,
) -> TrainConfig:
    """Merge (lowest priority first) defaults, the preset of the chosen (task, neuron), a config
    file, ``explicit`` keyword values (CLI options), and ``key=value`` overrides into a
    validated TrainConfig."""
    user: dict[str, Any] = {table: {} for table in TABLES}
    for source in (file_values or {}, {k: v for k, v in explicit.items() if v is not None}):
        _merge(user, source)
    for key, value in parse_overrides(overrides):
        table, dot, option = key.partition(".")
        _merge(user, {table: {option: value}} if dot else {key: value})
    chosen = build_options(TrainConfig, user, "config")
    if not chosen.presets:
        return chosen
    values: dict[str, Any] = {table: {} for table in TABLES}
    _merge(values, preset_for(chosen.task, chosen.neuron))
    _merge(values, user)
    return build_options(TrainConfig, values, "config")


def _merge(values: dict[str, Any], source: Mapping[str, Any]) -> None:
    valid = config_keys()
    for key, value in source.items():
        if key not in valid:
            raise UserError(f"unknown config key {key!r} (valid keys: {', '.join(valid)})")
        if key in TABLES:
            if not isinstance(value, Mapping):
                raise UserError(f"config key {key!r} must be a table of options")
            values[key].update(value)
        else:
            values[key] = value
