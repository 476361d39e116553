"""Study files: a base training config, grid axes and evaluation settings, expanded to trials.

A study file is TOML with four tables (docs/studies.md)::

    [study]                  # name, description, seed, replicates, retries, threads, training
    [base]                   # a training config: the keys of ``hwloop train --config``
    [grid]                   # axes: key = [values]; the study runs their product
    [evaluate]               # settings of hwloop eval: drift, gdc, device_seeds, split, ...

Axes are config keys (``bits``, ``lr``), dotted options of its tables
(``backend_options.read_noise_scale``), ``training`` (``float``, ``qat``, ``in-the-loop``) or
evaluation settings (``evaluate.drift``, ``evaluate.device_seeds``).

A *point* is one combination of axis values and one replicate. A *trial* is one training with
every evaluation of it: points whose trainings are identical (a float training deployed at
2, 3 and 4 bits) share one trial, and drift times and drift compensation are measured within
one evaluation. Replicate r trains with seed ``derive_seed(study seed, "replicate", r)``, the
same for every point, so points that differ in one axis are paired (same data and initial
weights). A trial is identified by a digest of what it computes, so it gives the same result
wherever and whenever it runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hwloop.backends import parse_backend_spec
from hwloop.config import TABLES, TrainConfig, config_keys, load_config_file, parse_overrides
from hwloop.errors import UserError
from hwloop.evaluation import GDC_MODES, MAX_DEVICE_SEEDS, SPLITS, WEIGHTS, parse_duration
from hwloop.jsonout import dumps
from hwloop.seeds import SEED_LIMIT, derive_seed
from hwloop.session import FORWARDS
from hwloop.threads import MAX_THREADS
from hwloop.trainer import DEVICE_KEYS

SECTIONS = ("study", "base", "grid", "evaluate")
TRAINING_KINDS = ("float", "qat", "in-the-loop")
"""float / qat: train on the host (float, or quantization-aware through the ``ideal`` device
at the point's bits), then program fresh devices; in-the-loop: train through the device."""
QAT_OPTIONS = ("range_factor", "per_channel")
"""Options of the point's device that quantization-aware training copies to ``ideal``: the
same weight range and scale layout as the device it will be deployed to."""
MAX_REPLICATES = 1000
MAX_RETRIES = 10
MAX_TRIALS = 100_000


@dataclass(frozen=True)
class StudySettings:
    """The ``[study]`` table.

    Attributes:
        name: the study's name (default: the file's stem).
        description: free text for reports.
        seed: the study seed; replicate r trains with ``derive_seed(seed, "replicate", r)``.
        replicates: seeds per point.
        retries: attempts after the first for a trial that crashed or lost its worker.
        threads: torch threads of each trial (results are bit-identical for a given value).
        training: the training kind where ``training`` is not an axis.
    """

    name: str
    description: str = ""
    seed: int = 0
    replicates: int = 1
    retries: int = 2
    threads: int = 1
    training: str = "in-the-loop"


@dataclass(frozen=True)
class EvalSettings:
    """The ``[evaluate]`` table: what ``hwloop.evaluate`` measures after each training.

    drift: times after programming (durations); gdc: on, off or both; device_seeds: fresh
    devices per evaluation; split: test or validation; weights: final or best; forward: host
    or device (None: as trained).
    """

    drift: tuple[str, ...] = ("0",)
    gdc: str = "both"
    device_seeds: int = 3
    split: str = "test"
    weights: str = "final"
    forward: str | None = None


EVAL_KEYS = tuple(EvalSettings.__dataclass_fields__)
MEASURED_WITHIN = ("drift", "gdc")
"""Evaluation settings measured within one evaluation: as axes they add columns, not work."""


@dataclass
class Point:
    """One combination of axis values and a replicate.

    Attributes:
        id: a digest of ``axes``; axes: every axis value of the point (``replicate`` included,
            evaluate.* axes by their dotted names).
    """

    id: str
    axes: dict[str, Any]


@dataclass
class PlannedEvaluation:
    """One ``hwloop.evaluate`` call of a trial and the points it measures."""

    settings: dict[str, Any]
    points: list[Point] = field(default_factory=list)


@dataclass
class Trial:
    """One training and its evaluations: the unit of work a worker runs.

    Attributes:
        id: ``<readable name>-<digest>``; the digest covers the training config, the training
            kind and every evaluation's settings.
        training: float, qat or in-the-loop.
        config: the resolved TrainConfig of the training, as plain values.
        key: the axis values that decide the training (for people; the config is the truth).
        evaluations: the evaluations to run after training.
        device_lock: the name of the physical device the trial talks to (trials that name the
            same one run one at a time), or None for simulators.
    """

    id: str
    training: str
    config: dict[str, Any]
    key: dict[str, Any]
    evaluations: list[PlannedEvaluation]
    device_lock: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "training": self.training, "config": self.config, "key": self.key,
            "device_lock": self.device_lock,
            "evaluations": [{"settings": e.settings,
                             "points": [{"id": p.id, "axes": p.axes} for p in e.points]}
                            for e in self.evaluations],
        }


@dataclass
class Study:
    """A validated study: its document (after overrides) and its trials in grid order."""

    source: str
    document: dict[str, Any]
    settings: StudySettings
    axes: dict[str, list[Any]]
    evaluate: EvalSettings
    trials: list[Trial]

    @property
    def points(self) -> list[Point]:
        return [p for t in self.trials for e in t.evaluations for p in e.points]

    def plan(self) -> dict[str, Any]:
        """What the study store keeps to recognise the study on a re-run (plain values)."""
        return {"document": self.document, "settings": self.settings.__dict__,
                "axes": self.axes, "trials": [t.to_dict() for t in self.trials]}


def load_study(path: str | Path, overrides: list[str] = ()) -> Study:  # type: ignore[assignment]
    """Read, override, validate and expand a study file (UserError, naming the file)."""
    path = Path(path)
    document = load_config_file(path)
    try:
        return build_study(document, overrides, name=path.stem, source=str(path))
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def build_study(
    document: Mapping[str, Any],
    overrides: list[str] = (),  # type: ignore[assignment]
    *,
    name: str = "study",
    source: str = "",
) -> Study:
    """Validate ``document`` (the study file's tables) with ``key=value`` overrides applied
    and expand it into trials; nothing is trained or opened here except backend checks."""
    document = copy.deepcopy(dict(document))
    unknown = [key for key in document if key not in SECTIONS]
    if unknown:
        raise UserError(f"unknown table {unknown[0]!r} (a study file has the tables "
                        f"{', '.join(SECTIONS)})")
    for section in SECTIONS:
        document.setdefault(section, {})
        if not isinstance(document[section], dict):
            raise UserError(f"{section} must be a table ([{section}])")
    _apply_overrides(document, overrides)
    settings = _study_settings(document["study"], name)
    if "seed" in document["base"]:
        raise UserError("[base] seed: a study seeds its trainings from [study] seed and "
                        "replicates; remove it")
    axes = _axes(document["grid"])
    evaluate = _eval_settings(document["evaluate"], axes)
    trials = _expand(document["base"], axes, evaluate, settings)
    return Study(source=source, document=document, settings=settings, axes=axes,
                 evaluate=evaluate, trials=trials)


def _apply_overrides(document: dict[str, Any], overrides: list[str]) -> None:
    """``study.replicates=1``, ``grid.bits=[4]``, ``evaluate.drift=["0"]``,
    ``base.epochs=2`` or plain ``epochs=2`` (a [base] key)."""
    for key, value in parse_overrides(overrides):
        section, dot, rest = key.partition(".")
        if section not in SECTIONS or not dot:
            section, rest = "base", key
        if not rest:
            raise UserError(f"override {key}= names no key after {section}.")
        if section == "grid":
            document["grid"][rest] = value
            continue
        target = document[section]
        *tables, last = rest.split(".")
        for table in tables:
            target = target.setdefault(table, {})
            if not isinstance(target, dict):
                raise UserError(f"override {key}: {table} is not a table")
        target[last] = value


def _study_settings(table: Mapping[str, Any], default_name: str) -> StudySettings:
    allowed = tuple(StudySettings.__dataclass_fields__)
    for key in table:
        if key not in allowed:
            raise UserError(f"unknown [study] key {key!r} (valid: {', '.join(allowed)})")
    values = {"name": default_name, **table}
    name = values["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise UserError(f"[study] name {name!r} may hold only letters, digits, '.', '_' and '-'"
                        " (at most 64)")
    if not isinstance(values.get("description", ""), str):
        raise UserError("[study] description must be a string")
    for key, low, high in (("seed", 0, SEED_LIMIT - 1), ("replicates", 1, MAX_REPLICATES),
                           ("retries", 0, MAX_RETRIES), ("threads", 1, MAX_THREADS)):
        value = values.get(key, StudySettings.__dataclass_fields__[key].default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(f"[study] {key} must be an integer in {low}..{high}, got {value!r}")
    if values.get("training", "in-the-loop") not in TRAINING_KINDS:
        raise UserError(f"[study] training {values['training']!r} is not known (choose from: "
                        f"{', '.join(TRAINING_KINDS)})")
    return StudySettings(**values)


def _axes(grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    if not grid:
        raise UserError("[grid] names no axes; add at least one, e.g. bits = [2, 3, 4]")
    keys = config_keys()
    axes: dict[str, list[Any]] = {}
    for name, values in grid.items():
        table, dot, option = name.partition(".")
        valid = (name in keys and name not in TABLES and name != "seed") or name == "training" \
            or (dot and table in TABLES and option) or (table == "evaluate" and option in EVAL_KEYS)
        if not valid:
            raise UserError(f"grid axis {name!r} is not a config key, a table option (e.g. "
                            "backend_options.read_noise_scale), training or an evaluation "
                            f"setting (evaluate.{', evaluate.'.join(EVAL_KEYS)})")
        if not isinstance(values, list):
            raise UserError(f"grid axis {name!r} must be a list of values, e.g. {name} = "
                            f"[{dumps(values)}]")
        if not values:
            raise UserError(f"grid axis {name!r} is empty; give at least one value")
        texts = [dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) != len(texts):
            raise UserError(f"grid axis {name!r} lists a value twice")
        if name == "training":
            for value in values:
                if value not in TRAINING_KINDS:
                    raise UserError(f"grid axis training: {value!r} is not known (choose from:"
                                    f" {', '.join(TRAINING_KINDS)})")
        axes[name] = values
    return axes


def _eval_settings(table: Mapping[str, Any], axes: Mapping[str, list[Any]]) -> EvalSettings:
    for key in table:
        if key not in EVAL_KEYS:
            raise UserError(f"unknown [evaluate] key {key!r} (valid: {', '.join(EVAL_KEYS)})")
    values = dict(table)
    if "drift" in values:
        values["drift"] = tuple(_drift_list(values["drift"], "[evaluate] drift"))
    settings = EvalSettings(**values)
    for drift in axes.get("evaluate.drift", []):
        _drift_list(drift, "grid axis evaluate.drift")
    for value in [settings.gdc, *axes.get("evaluate.gdc", [])]:
        _check_choice("evaluate gdc", value, tuple(GDC_MODES))
    for value in [settings.split, *axes.get("evaluate.split", [])]:
        _check_choice("evaluate split", value, SPLITS)
    for value in [settings.weights, *axes.get("evaluate.weights", [])]:
        _check_choice("evaluate weights", value, WEIGHTS)
    for value in [settings.forward, *axes.get("evaluate.forward", [])]:
        if value is not None:
            _check_choice("evaluate forward", value, FORWARDS)
    for value in [settings.device_seeds, *axes.get("evaluate.device_seeds", [])]:
        if isinstance(value, bool) or not isinstance(value, int) or \
                not 1 <= value <= MAX_DEVICE_SEEDS:
            raise UserError(f"evaluate device_seeds must be an integer in 1..{MAX_DEVICE_SEEDS},"
                            f" got {value!r}")
    return settings


def _drift_list(value: Any, what: str) -> list[str]:
    """A duration, a comma-separated string or a list of durations → labels (checked)."""
    entries = value.split(",") if isinstance(value, str) else value
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{what} must be a list of durations, e.g. [\"0\", \"1h\", \"1d\"]")
    labels = []
    for entry in entries:
        if isinstance(entry, bool) or not isinstance(entry, (str, int, float)):
            raise UserError(f"{what}: {entry!r} is not a duration (e.g. \"1d\")")
        text = str(entry).strip()
        parse_duration(text)
        labels.append(text)
    return labels


def _check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{what} {value!r} is not known (choose from: {', '.join(allowed)})")


def _expand(
    base: Mapping[str, Any], axes: dict[str, list[Any]], evaluate: EvalSettings,
    settings: StudySettings,
) -> list[Trial]:
    """Every point of the grid, grouped into trials (identical trainings shared)."""
    from hwloop.config import build_config

    names = list(axes)
    combinations = list(itertools.product(*(axes[name] for name in names)))
    if len(combinations) * settings.replicates > MAX_TRIALS:
        raise UserError(f"the grid has {len(combinations) * settings.replicates} points, more "
                        f"than {MAX_TRIALS}; use fewer axis values or replicates")
    trials: dict[str, Trial] = {}
    checked: dict[str, TrainConfig] = {}
    for replicate in range(settings.replicates):
        for values in combinations:
            point_axes = dict(zip(names, values)) | {"replicate": replicate}
            training = point_axes.get("training", settings.training)
            merged = _merge_point(base, point_axes)
            merged["seed"] = derive_seed(settings.seed, "replicate", replicate)
            text = dumps(merged, sort_keys=True)
            if text not in checked:
                checked[text] = build_config(merged)
            config = checked[text]
            train_config, eval_settings = _split_device(config, training, point_axes, evaluate)
            train_dict = train_config.to_dict()
            within = {key: point_axes[f"evaluate.{key}"] for key in MEASURED_WITHIN
                      if f"evaluate.{key}" in point_axes}
            point = Point(id=_digest({"axes": point_axes}), axes=point_axes)
            trial_digest_source = {"training": training, "config": train_dict}
            trial_id = _digest(trial_digest_source)
            trial = trials.get(trial_id)
            if trial is None:
                key = {name: point_axes[name] for name in names
                       if not name.startswith("evaluate.") and _affects(name, training)}
                key["replicate"] = replicate
                trial = Trial(id=trial_id, training=training, config=train_dict, key=key,
                              evaluations=[], device_lock=_device_lock(train_config,
                                                                       eval_settings))
                trials[trial_id] = trial
            _add_point(trial, eval_settings, within, point)
    for trial in trials.values():
        for evaluation in trial.evaluations:
            evaluation.settings["drift"] = list(dict.fromkeys(evaluation.settings["drift"]))
        readable = "_".join(_slug(name, value) for name, value in trial.key.items())[:60]
        trial.id = f"{readable}-{_digest({'trial': trial.to_dict()})[:8]}"
    return list(trials.values())


def _merge_point(base: Mapping[str, Any], point_axes: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for name, value in point_axes.items():
        if name in ("training", "replicate") or name.startswith("evaluate."):
            continue
        table, dot, option = name.partition(".")
        if dot:
            merged.setdefault(table, {})
            if not isinstance(merged[table], dict):
                raise UserError(f"[base] {table} must be a table of options")
            merged[table][option] = value
        else:
            merged[name] = value
    return merged


def _affects(name: str, training: str) -> bool:
    """Whether axis ``name`` changes the training of a ``training``-kind point (the digest
    decides sharing; this only keeps a trial's readable key short)."""
    device_axis = name in ("backend", *DEVICE_KEYS) or name.startswith("backend_options.")
    return training == "in-the-loop" or not device_axis or (training == "qat" and name in (
        "bits", "scheme", "threshold"))


def _split_device(
    config: TrainConfig, training: str, point_axes: Mapping[str, Any], evaluate: EvalSettings,
) -> tuple[TrainConfig, dict[str, Any]]:
    """The training config of a ``training``-kind point and its evaluation settings."""
    settings = {key: getattr(evaluate, key) for key in EVAL_KEYS}
    settings["drift"] = list(settings["drift"])
    for key in EVAL_KEYS:
        if f"evaluate.{key}" in point_axes:
            value = point_axes[f"evaluate.{key}"]
            settings[key] = _drift_list(value, "evaluate.drift") if key == "drift" else value
    has_device = config.backend != "none"
    if training == "in-the-loop":
        if not has_device:
            raise UserError("training in-the-loop needs a device: set backend in [base] or as "
                            "a grid axis (e.g. backend = \"pcm\")")
        return config, {**settings, "backend": None, "bits": None, "backend_options": None}
    defaults = TrainConfig()
    host = {key: getattr(defaults, key) for key in ("backend", *DEVICE_KEYS)}
    if training == "qat":
        if config.bits is None:
            raise UserError("training qat needs bits (in [base] or as a grid axis)")
        quantizer = {key: config.backend_options[key] for key in QAT_OPTIONS
                     if key in config.backend_options}
        host |= {"backend": "ideal", "bits": config.bits, "scheme": config.scheme,
                 "threshold": config.threshold, "backend_options": quantizer}
    train_config = TrainConfig(**{**config.to_dict(), **host})
    if not has_device:
        if any(parse_duration(label) for label in settings["drift"]):
            raise UserError("drift times need a device: set backend in [base] or as a grid "
                            "axis, or evaluate at drift 0 only")
        return train_config, {**settings, "backend": "none", "bits": None,
                              "backend_options": None, "forward": None}
    forward = settings["forward"] or config.forward
    return train_config, {**settings, "backend": config.backend, "bits": config.bits,
                          "backend_options": dict(config.backend_options), "forward": forward}


def _add_point(trial: Trial, settings: dict[str, Any], within: dict[str, Any],
               point: Point) -> None:
    """File ``point`` under the evaluation of ``trial`` with the same settings (drift and gdc
    axes are merged into one evaluation)."""
    settings = dict(settings)
    if "gdc" in within:
        settings["gdc"] = "both"
    for evaluation in trial.evaluations:
        same = {k: v for k, v in evaluation.settings.items() if k != "drift"}
        if same == {k: v for k, v in settings.items() if k != "drift"}:
            evaluation.settings["drift"] += settings["drift"]
            evaluation.points.append(point)
            return
    trial.evaluations.append(PlannedEvaluation(settings=settings, points=[point]))


def _device_lock(config: TrainConfig, eval_settings: Mapping[str, Any]) -> str | None:
    """A physical device reached over a link (a ``port`` option) serialises its trials."""
    for spec, options in ((config.backend, config.backend_options),
                          (eval_settings.get("backend"), eval_settings.get("backend_options"))):
        if not spec or spec == "none":
            continue
        name, query = parse_backend_spec(spec)
        port = (options or {}).get("port", query.get("port"))
        if port:
            return f"hwloop-device-{name}-{port}"
    return None


def _digest(value: Any) -> str:
    return hashlib.sha1(dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _slug(name: str, value: Any) -> str:
    if name == "replicate":
        return f"r{value}"
    short = name.rsplit(".", 1)[-1]
    text = value if isinstance(value, str) else dumps(value)
    return re.sub(r"[^A-Za-z0-9.-]+", "-", f"{short}={text}" if name != "training" else text)


def check_trials(study: Study) -> None:
    """Build every distinct training (up to its seed) and open every deployment device once,
    writing nothing, so a config that cannot run is refused before the study starts."""
    import tempfile

    from hwloop.backends import open_backend
    from hwloop.training import plan_training

    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="hwloop-check-") as folder:
        for trial in study.trials:
            unseeded = dumps({**trial.config, "seed": 0}, sort_keys=True)
            if unseeded not in seen:
                seen.add(unseeded)
                try:
                    plan = plan_training(TrainConfig(**trial.config), Path(folder) / "run")
                except UserError as error:
                    raise UserError(f"trial {trial.id}: {error}") from None
                plan.trainer.close()
            for evaluation in trial.evaluations:
                settings = evaluation.settings
                if settings["backend"] in (None, "none"):
                    continue
                device = dumps([settings["backend"], settings["bits"],
                                settings["backend_options"]], sort_keys=True)
                if device in seen:
                    continue
                seen.add(device)
                options = dict(settings["backend_options"] or {})
                if settings["bits"] is not None:
                    options["bits"] = settings["bits"]
                try:
                    open_backend(settings["backend"], **options).close()
                except UserError as error:
                    raise UserError(f"trial {trial.id}: deployment device: {error}") from None
