"""Study reports: tidy tables, mean ± std over replicates, headlines, plots and one HTML page.

The tables are lists of plain dicts, one per row, with the same columns in every row:

- ``measurements``: one row per point and measured device state: every grid axis (by its
  dotted name, e.g. ``backend_options.read_noise_scale``), then ``replicate``, ``trial``,
  ``point``, ``device`` (host, trained or fresh), ``device_seed``, ``drift`` (the label, e.g.
  ``1d``), ``drift_seconds`` (s), ``gdc`` (True, False, or None where the device has no drift
  compensation), ``accuracy`` (fraction correct, 0..1) and ``loss`` (the run's training loss,
  nats). Only finished trials have rows.
- ``trial_rows``: one row per trial, whatever its status: what it trained, how it ran (s),
  its training figures and the mean write errors (weight units) of its device writes.
- ``summary``: one row per condition: the grid axes but ``replicate``, the device kind, the
  drift time and gdc. A replicate's fresh devices are averaged first; ``n`` is the number of
  replicates, and the mean and sample standard deviation (n − 1; None for n = 1) are taken
  over the replicates' values.

An axis whose name is also a measured column (``device``, the torch device) is written as
``grid.<name>``. ``write_report`` writes the tables as CSV (an empty cell for None), the
plots the grid allows (PNG and SVG) and one self-contained ``report.html``. Accuracies are
fractions in the tables and percentages in the headlines, the plots and the page.
"""

from __future__ import annotations

import csv
import html
import io
import statistics
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from hwloop.atomic import atomic_write
from hwloop.evaluation import GDC_MODES
from hwloop.jsonout import dumps
from hwloop.plots import DPI, PANEL_SIZE, save_figure  # selects matplotlib's Agg backend
from hwloop.runs import now_iso
from hwloop.study.spec import MEASURED_WITHIN, TRAINING_KINDS
from hwloop.study.store import StudyState

ROW_KEYS = ("device", "device_seed", "drift", "drift_seconds", "gdc", "accuracy", "loss")
"""The columns a measurement takes from its evaluation row."""
MEASUREMENT_COLUMNS = ("replicate", "trial", "point", *ROW_KEYS)
CONDITION_COLUMNS = ("device", "drift", "drift_seconds", "gdc")
STATISTIC_COLUMNS = ("n", "accuracy_mean", "accuracy_std", "loss_mean", "loss_std")
TRAINING_METRICS = ("epochs", "final_test_accuracy", "best_test_accuracy", "final_train_loss",
                    "final_train_accuracy")
TRIAL_FIGURES = ("replicate", "seconds", "train_seconds",
                 *(f"training.{name}" for name in TRAINING_METRICS), "updates",
                 "update_write_error_mean", "programming_write_error_mean", "host", "worker")
REPORT_FILE = "report.html"
TRAINING_NAMES = {"float": "float train-then-deploy", "qat": "QAT train-then-deploy",
                  "in-the-loop": "in-the-loop"}
DEVICE_NAMES = {"trained": "its own device", "fresh": "fresh devices", "host": "the host"}
DEVICE_ORDER = {"host": 0, "trained": 1, "fresh": 2}
GDC_ORDER = {None: 0, False: 1, True: 2}
GDC_ON = (True, None, False)
"""Drift compensation on where the device has it (gdc None: it has none; False: only off)."""
GDC_OFF = (False, None, True)
GDC_LABELS = {True: ", GDC on", False: ", GDC off", None: ""}
WITHIN_AXES = tuple(f"evaluate.{key}" for key in MEASURED_WITHIN)
"""Axes that select rows of one evaluation (drift times, drift compensation)."""
CHANCE_MARGIN = 0.02
"""An accuracy within this of chance (fraction) is reported as chance level."""


def measurements(state: StudyState) -> list[dict[str, Any]]:
    """The tidy table: one row per (point, measurement) of the finished trials (module doc)."""
    columns = axis_columns(state)
    table = []
    for trial in state.plan["trials"]:
        result = state.results.get(trial["id"])
        if result is None:
            continue
        for planned, measured in zip(trial["evaluations"], result["evaluations"]):
            for point in planned["points"]:
                axes = point["axes"]
                for row in point_rows(measured["rows"], axes):
                    table.append({**{column: axes.get(name) for name, column in columns.items()},
                                  "replicate": axes["replicate"], "trial": trial["id"],
                                  "point": point["id"], **{key: row[key] for key in ROW_KEYS}})
    return table


def axis_columns(state: StudyState) -> dict[str, str]:
    """Grid axis name → its column name in the tables (``grid.<name>`` where the name is a
    measured column)."""
    taken = set(MEASUREMENT_COLUMNS) | set(STATISTIC_COLUMNS)
    return {name: f"grid.{name}" if name in taken else name for name in state.plan["axes"]}


def point_rows(rows: list[dict[str, Any]], axes: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an evaluation that belong to a point: those at the point's drift times
    (axis ``evaluate.drift``) and drift-compensation settings (axis ``evaluate.gdc``); rows of
    a device without drift compensation (gdc None) are always kept."""
    drifts = drift_labels(axes["evaluate.drift"]) if "evaluate.drift" in axes else None
    modes = GDC_MODES[axes["evaluate.gdc"]] if "evaluate.gdc" in axes else None
    return [row for row in rows
            if (drifts is None or row["drift"] in drifts)
            and (modes is None or row["gdc"] is None or row["gdc"] in modes)]


def drift_labels(value: str | list[Any]) -> list[str]:
    """The drift labels of an ``evaluate.drift`` value: one label, a comma-separated string or
    a list (as ``hwloop.study.spec`` reads them)."""
    entries = value.split(",") if isinstance(value, str) else value
    return [str(entry).strip() for entry in entries]


def trial_rows(state: StudyState) -> list[dict[str, Any]]:
    """One row per trial, any status: ``trial``, ``training``, ``status``, ``attempts``,
    ``error``, the axes that make up trial keys (None where not in this trial's key),
    ``replicate``, ``seconds`` and ``train_seconds`` (wall clock, s), ``training.*`` (epochs,
    accuracies as fractions, loss in nats), ``updates`` (device updates during training),
    ``update_write_error_mean`` (the mean write error per written cell over all updates),
    ``programming_write_error_mean`` (mean over the evaluations' fresh-device writes,
    per layer), both in weight units, and ``host`` and ``worker`` where it ran."""
    columns = axis_columns(state)
    in_keys = {name for trial in state.plan["trials"] for name in trial["key"]}
    key_axes = [name for name in columns if name in in_keys and name != "training"]
    rows = []
    for trial in state.plan["trials"]:
        result = state.results.get(trial["id"])
        failure = state.failed.get(trial["id"], {})
        attempts = result["attempts"] if result is not None else failure.get("attempts")
        row = {"trial": trial["id"], "training": trial["training"],
               "status": state.status(trial["id"]), "attempts": attempts,
               "error": failure.get("error"),
               **{columns[name]: trial["key"].get(name) for name in key_axes}}
        row |= _trial_figures(trial, result)
        rows.append(row)
    return rows


def _trial_figures(trial: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    """The ``TRIAL_FIGURES`` columns of one trial (None where it has not finished)."""
    figures: dict[str, Any] = dict.fromkeys(TRIAL_FIGURES)
    figures["replicate"] = trial["key"]["replicate"]
    if result is None:
        return figures
    updates = result["updates"]
    programming = [write["write_error"] for evaluation in result["evaluations"]
                   for write in evaluation.get("writes", [])]
    figures |= {
        "seconds": result["seconds"], "train_seconds": result["train_seconds"],
        **{f"training.{name}": result["training"][name] for name in TRAINING_METRICS},
        "updates": updates["count"],
        "update_write_error_mean": _per_cell(updates["write_error"], updates["cells"]),
        "programming_write_error_mean": _mean_or_none(programming),
        "host": result.get("host"), "worker": result.get("worker"),
    }
    return figures


def _per_cell(errors: list[float], cells: list[int]) -> float | None:
    """The mean write error per written cell, from per-update means over ``cells`` cells."""
    total = sum(cells)
    return None if total == 0 else sum(e * c for e, c in zip(errors, cells)) / total


def _mean_or_none(values: list[float | None]) -> float | None:
    """The mean of ``values``; None when there are none or one is None (not finite)."""
    if not values or any(value is None for value in values):
        return None
    return statistics.fmean(values)  # type: ignore[arg-type]


def _std_or_none(values: list[float | None]) -> float | None:
    """The sample standard deviation (n − 1) of ``values``; None for fewer than two or a
    None among them."""
    if len(values) < 2 or any(value is None for value in values):
        return None
    return statistics.stdev(values)  # type: ignore[arg-type]


def summary(state: StudyState) -> list[dict[str, Any]]:
    """Mean ± sample std over replicates per condition (module doc): the axis columns but
    ``replicate``, then device, drift, drift_seconds (s), gdc, n (replicates),
    accuracy_mean and accuracy_std (fractions), loss_mean and loss_std (nats)."""
    return summarize(measurements(state), state)


def summarize(table: list[dict[str, Any]], state: StudyState) -> list[dict[str, Any]]:
    """``summary`` of the measurement rows ``table`` of ``state``, sorted by the axes' value
    order in the grid, device kind, drift time and gdc."""
    columns = axis_columns(state)
    groups: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for row in table:
        key = dumps([[row[column] for column in columns.values()], row["device"], row["drift"],
                     row["gdc"]], sort_keys=True)
        groups.setdefault(key, {}).setdefault(row["replicate"], []).append(row)
    entries = []
    for replicates in groups.values():
        first = next(iter(replicates.values()))[0]
        entry = {column: first[column] for column in (*columns.values(), *CONDITION_COLUMNS)}
        entry["n"] = len(replicates)
        for metric in ("accuracy", "loss"):
            values = [_mean_or_none([row[metric] for row in rows]) for rows in replicates.values()]
            entry[f"{metric}_mean"] = _mean_or_none(values)
            entry[f"{metric}_std"] = _std_or_none(values)
        entries.append(entry)
    return sorted(entries, key=lambda entry: _sort_key(entry, state))


def _sort_key(entry: dict[str, Any], state: StudyState) -> tuple[Any, ...]:
    """Where a summary entry goes: its axis values in grid order, then device, drift, gdc."""
    positions = []
    for name, column in axis_columns(state).items():
        texts = [dumps(value, sort_keys=True) for value in state.plan["axes"][name]]
        positions.append(texts.index(dumps(entry[column], sort_keys=True)))
    return (*positions, DEVICE_ORDER.get(entry["device"], 3), entry["drift_seconds"],
            GDC_ORDER[entry["gdc"]])


# --- headlines ---------------------------------------------------------------------------------


def headlines(state: StudyState) -> list[str]:
    """Short sentences on what the study found, computed from the summary (accuracies in %,
    differences in percentage points, pp); statements whose axes are absent are left out."""
    return _headlines_of(_view(state, summary(state)), state)


def _headlines_of(entries: list[dict[str, Any]], state: StudyState) -> list[str]:
    """``headlines`` from the summary entries of ``_view``."""
    done = len(state.results)
    total = len(state.plan["trials"])
    if done == 0:
        return [f"No trial has finished yet (0 of {total}), so there is nothing to report."]
    sentences = []
    if done < total:
        failed = len(state.failed)
        sentences.append(f"Only {done} of {total} trials have finished ({failed} failed, "
                         f"{total - done - failed} pending); the figures cover those.")
    findings = [*_loop_headlines(entries, state), *_drift_headlines(entries, state),
                *_bits_headlines(entries, state), *_chance_headlines(entries, state)]
    return sentences + (findings or _extremes_headlines(entries, state))


def _view(state: StudyState, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary entries headlines and plots work from: ``training`` and ``backend`` filled
    in where they are not axes (the study's training kind, the base config's backend), and
    the ``evaluate.drift`` and ``evaluate.gdc`` axes dropped, since they only select rows of
    one evaluation (entries that then coincide are the same measurements: kept once)."""
    defaults = {"training": state.plan["settings"]["training"],
                "backend": state.plan["document"]["base"].get("backend", "none")}
    kept: dict[str, dict[str, Any]] = {}
    for entry in entries:
        values = {**defaults, **{column: value for column, value in entry.items()
                                 if column not in WITHIN_AXES}}
        kept.setdefault(dumps(values, sort_keys=True), values)
    return list(kept.values())


def _loop_headlines(entries: list[dict[str, Any]], state: StudyState) -> list[str]:
    """In-the-loop on its own device against float and QAT on fresh devices, per bits value
    (and other axes), at the first drift time with GDC where present."""
    deployed = [kind for kind in ("float", "qat") if _matching(entries, {"training": kind})]
    if not _matching(entries, {"training": "in-the-loop"}) or not deployed:
        return []
    first = min(entry["drift_seconds"] for entry in entries)
    sentences = []
    for situation in _distinct(entries, _other_columns(state, ("training",))):
        loop = _pick(entries, {**situation, "training": "in-the-loop", "device": "trained"},
                     first, GDC_ON)
        if loop is None:
            continue
        comparisons, counts = [], [loop["n"]]
        for kind in deployed:
            other = _pick(entries, {**situation, "training": kind,
                                    "device": _headline_device(kind, entries)}, first, GDC_ON)
            if other is None:
                continue
            counts.append(other["n"])
            comparisons.append(f"{_percent(other)} for {TRAINING_NAMES[kind]} "
                               f"({_difference(loop, other)})")
        if comparisons:
            where = _situation_text(situation)
            subject = f"At {where}, in-the-loop" if where else "In-the-loop"
            sentences.append(
                f"{subject} training reaches {_percent(loop)} on its own device against "
                f"{' and '.join(comparisons)} at drift {loop['drift']}"
                f"{_gdc_text(loop['gdc'])}; {_replicates_text(counts)}.")
    return sentences


def _drift_headlines(entries: list[dict[str, Any]], state: StudyState) -> list[str]:
    """Per training kind: the accuracy change from the first to the last drift time without
    GDC, and what GDC adds (or takes) at the last drift time."""
    times = sorted({entry["drift_seconds"] for entry in entries})
    if len(times) < 2:
        return []
    sentences = []
    for kind in _kinds(entries):
        device = _headline_device(kind, entries)
        changes: dict[bool | None, list[tuple[str, str, str | None]]] = {}
        for situation in _distinct(entries, _other_columns(state, ("training",))):
            where = {**situation, "training": kind, "device": device}
            start = _pick(entries, where, times[0], GDC_OFF)
            end = None if start is None else _pick(entries, where, times[-1], (start["gdc"],))
            if start is None or end is None:
                continue
            on = _pick(entries, where, times[-1], (True,)) if end["gdc"] is False else None
            changes.setdefault(end["gdc"], []).append(
                (_situation_text(situation), _points(end, start),
                 None if on is None else _points(on, end)))
        for gdc, items in changes.items():
            start_label = _label_at(entries, times[0])
            end_label = _label_at(entries, times[-1])
            text = (f"From drift {start_label} to {end_label}{_gdc_text(gdc)}, "
                    f"{TRAINING_NAMES[kind]} on {DEVICE_NAMES[device]} changes by "
                    f"{_joined([item[1] for item in items], [item[0] for item in items])}")
            if all(item[2] is not None for item in items):
                recovered = " / ".join(str(item[2]) for item in items)
                text += f"; at {end_label}, GDC is worth {recovered} pp"
            sentences.append(text + ".")
    return sentences


def _bits_headlines(entries: list[dict[str, Any]], state: StudyState) -> list[str]:
    """Accuracy against bits per training kind, at the first drift time with GDC where
    present (one sentence per combination of the other axes)."""
    bits = _sorted_bits(state)
    if len(bits) < 2:
        return []
    first = min(entry["drift_seconds"] for entry in entries)
    sentences = []
    for situation in _distinct(entries, _other_columns(state, ("training", "bits"))):
        parts, reference = [], None
        for kind in _kinds(entries):
            where = {**situation, "training": kind, "device": _headline_device(kind, entries)}
            found = [_pick(entries, {**where, "bits": value}, first, GDC_ON) for value in bits]
            if any(entry is not None for entry in found):
                reference = reference or next(entry for entry in found if entry is not None)
                values = " / ".join("–" if entry is None
                                    else f"{100 * entry['accuracy_mean']:.1f}" for entry in found)
                parts.append(f"{TRAINING_NAMES[kind]} {values} %")
        if reference is not None:
            where = _situation_text(situation)
            sentences.append(
                f"Accuracy at {' / '.join(str(value) for value in bits)} bits"
                f"{' (' + where + ')' if where else ''}, drift {reference['drift']}"
                f"{_gdc_text(reference['gdc'])}: {'; '.join(parts)}.")
    return sentences


def _chance_headlines(entries: list[dict[str, Any]], state: StudyState) -> list[str]:
    """Conditions whose headline device stays at chance level at the first drift time."""
    chance = _chance_level(state)
    if chance is None:
        return []
    first = min(entry["drift_seconds"] for entry in entries)
    sentences = []
    for kind in _kinds(entries):
        for situation in _distinct(entries, _other_columns(state, ("training",))):
            entry = _pick(entries, {**situation, "training": kind,
                                    "device": _headline_device(kind, entries)}, first, GDC_ON)
            if entry is not None and entry["accuracy_mean"] <= chance + CHANCE_MARGIN:
                where = _situation_text(situation)
                name = TRAINING_NAMES[kind]
                sentences.append(
                    f"{name[:1].upper()}{name[1:]}{' at ' + where if where else ''} is at "
                    f"chance level: {_percent(entry)} at drift {entry['drift']} (chance "
                    f"{100 * chance:.1f} %).")
    return sentences


def _extremes_headlines(entries: list[dict[str, Any]], state: StudyState) -> list[str]:
    """The lowest and highest accuracy among the conditions at the first drift time (GDC on
    where present), for grids that allow no other headline."""
    first = min(entry["drift_seconds"] for entry in entries)
    columns = _other_columns(state, ())
    candidates = []
    for situation in _distinct(entries, columns):
        kind = situation.get("training", entries[0]["training"])
        entry = _pick(entries, {**situation, "device": _headline_device(kind, entries)}, first,
                      GDC_ON)
        if entry is not None:
            candidates.append(entry)
    if not candidates:
        return []
    low = min(candidates, key=lambda entry: entry["accuracy_mean"])
    high = max(candidates, key=lambda entry: entry["accuracy_mean"])
    at = f"At drift {high['drift']}{_gdc_text(high['gdc'])}"
    if len(candidates) == 1:
        return [f"{at}, the study reaches {_percent(high)}."]
    return [f"{at}, accuracy ranges from {_percent(low)} "
            f"({_situation_text({column: low[column] for column in columns})}) to "
            f"{_percent(high)} ({_situation_text({column: high[column] for column in columns})})"
            f" over {len(candidates)} conditions."]


def _matching(entries: list[dict[str, Any]], where: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries whose columns hold the values of ``where``."""
    return [entry for entry in entries
            if all(entry.get(column) == value for column, value in where.items())]


def _pick(entries: list[dict[str, Any]], where: dict[str, Any], drift_seconds: float,
          gdc_order: tuple[bool | None, ...]) -> dict[str, Any] | None:
    """The entry matching ``where`` at ``drift_seconds`` (s) with the first gdc value of
    ``gdc_order`` present, or None."""
    found = [entry for entry in _matching(entries, where)
             if entry["drift_seconds"] == drift_seconds]
    for gdc in gdc_order:
        for entry in found:
            if entry["gdc"] is gdc:
                return entry
    return None


def _distinct(entries: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """The distinct combinations of ``columns`` among ``entries``, in their order."""
    combinations: dict[str, dict[str, Any]] = {}
    for entry in entries:
        combination = {column: entry[column] for column in columns}
        combinations.setdefault(dumps(combination, sort_keys=True), combination)
    return list(combinations.values())


def _other_columns(state: StudyState, leave_out: tuple[str, ...]) -> list[str]:
    """The axis columns of ``_view`` entries but ``leave_out``."""
    return [column for column in axis_columns(state).values()
            if column not in leave_out and column not in WITHIN_AXES]


def _kinds(entries: list[dict[str, Any]]) -> list[str]:
    """The training kinds present, in the order float, qat, in-the-loop."""
    present = {entry["training"] for entry in entries}
    return [kind for kind in TRAINING_KINDS if kind in present]


def _headline_device(kind: str, entries: list[dict[str, Any]]) -> str:
    """The device a training kind is judged on: in-the-loop on its own (trained) device, the
    others on fresh devices (on the host where the study deploys to none)."""
    if kind == "in-the-loop":
        return "trained"
    return "fresh" if _matching(entries, {"training": kind, "device": "fresh"}) else "host"


def _chance_level(state: StudyState) -> float | None:
    """The task's chance accuracy (fraction) as the evaluations report it, or None."""
    for result in state.results.values():
        for evaluation in result["evaluations"]:
            if evaluation.get("chance") is not None:
                return float(evaluation["chance"])
    return None


def _sorted_bits(state: StudyState) -> list[Any]:
    """The ``bits`` axis values in increasing order ([] when bits is not an axis)."""
    return sorted(state.plan["axes"].get("bits", []), key=lambda value: (value is None, value))


def _label_at(entries: list[dict[str, Any]], drift_seconds: float) -> str:
    """The drift label of ``drift_seconds``."""
    return next(entry["drift"] for entry in entries if entry["drift_seconds"] == drift_seconds)


def _percent(entry: dict[str, Any]) -> str:
    """``91.2 ± 0.8 %`` (mean ± std over replicates), or ``91.2 %`` for one replicate."""
    std = entry["accuracy_std"]
    spread = "" if std is None else f" ± {100 * std:.1f}"
    return f"{100 * entry['accuracy_mean']:.1f}{spread} %"


def _points(entry: dict[str, Any], reference: dict[str, Any]) -> str:
    """The accuracy difference ``entry`` − ``reference`` in percentage points, signed."""
    return f"{100 * (entry['accuracy_mean'] - reference['accuracy_mean']):+.1f}".replace("-", "−")


def _difference(loop: dict[str, Any], other: dict[str, Any]) -> str:
    """``+0.7 pp`` or ``−0.7 pp, below``, noting when it is within the replicates' spread."""
    text = f"{_points(loop, other)} pp"
    gap = loop["accuracy_mean"] - other["accuracy_mean"]
    if gap < 0:
        text += ", below"
    spreads = [std for std in (loop["accuracy_std"], other["accuracy_std"]) if std is not None]
    if spreads and abs(gap) <= max(spreads):
        text += ", within the spread over replicates"
    return text


def _joined(figures: list[str], labels: list[str]) -> str:
    """Differences in pp per situation: ``−12.3 pp`` for one without a label, ``−12.3 / −8.1
    pp at 2 / 4 bits`` for several."""
    values = " / ".join(figures)
    if not any(labels):
        return f"{values} pp"
    if all(label.endswith(" bits") and "," not in label for label in labels):
        labels = [" / ".join(label.removesuffix(" bits") for label in labels) + " bits"]
    return f"{values} pp at {' / '.join(labels)}"


def _situation_text(situation: dict[str, Any]) -> str:
    """``4 bits, read_noise_scale 0.5`` for a combination of axis values ('' for none)."""
    parts = []
    for column, value in situation.items():
        text = value if isinstance(value, str) else dumps(value)
        parts.append(f"{text} bits" if column == "bits" else f"{column.rsplit('.', 1)[-1]} {text}")
    return ", ".join(parts)


def _gdc_text(gdc: bool | None) -> str:
    """`` with GDC``, `` without GDC``, or '' for a device without drift compensation."""
    return {True: " with GDC", False: " without GDC", None: ""}[gdc]


def _replicates_text(counts: list[int]) -> str:
    """``3 replicates each`` or ``2–3 replicates``."""
    low, high = min(counts), max(counts)
    if low == high:
        return f"{low} replicate{'s' if low != 1 else ''} each"
    return f"{low}–{high} replicates"


# --- plots -------------------------------------------------------------------------------------

Drawing = Callable[[list[dict[str, Any]], StudyState], "Figure | None"]
"""Draws one plot from the summary entries of ``_view`` (None: the grid does not
allow it); the caller saves and closes the figure."""
DODGE = 0.05
"""Horizontal offset between lines at the same drift time (in category widths)."""
LEGEND_COLUMN = 3.7
"""Inches a legend column takes at least."""
LEGEND_HANDLE = 0.6
"""Inches a legend entry takes besides its text (the line marker and the gaps)."""
LEGEND_CHARACTER = 0.065
"""Inches per character of a legend label at the "small" font size (a generous average)."""


def _series(entries: list[dict[str, Any]], state: StudyState
            ) -> list[tuple[str, str, list[dict[str, Any]], str]]:
    """The lines of a plot: one per training kind and combination of the axes other than
    training and bits, each as its kind, label, entries (on the kind's headline device) and
    colour (the same line has the same colour in every plot)."""
    others = _other_columns(state, ("training", "bits"))
    lines = []
    for kind in _kinds(entries):
        device = _headline_device(kind, entries)
        for combination in _distinct(_matching(entries, {"training": kind}), others):
            where = _situation_text(combination)
            label = f"{TRAINING_NAMES[kind]} ({DEVICE_NAMES[device]})" + (
                f", {where}" if where else "")
            lines.append((kind, label, _matching(entries, {**combination, "training": kind,
                                                           "device": device})))
    return [(kind, label, line, f"C{index % 10}")
            for index, (kind, label, line) in enumerate(lines)]


def _kind_colours(entries: list[dict[str, Any]], state: StudyState) -> dict[str, str]:
    """Training kind → the colour of its first line (for plots drawn per kind)."""
    colours: dict[str, str] = {}
    for kind, _, _, colour in _series(entries, state):
        colours.setdefault(kind, colour)
    return colours


def _accuracy_vs_bits(entries: list[dict[str, Any]], state: StudyState) -> Figure | None:
    """Test accuracy (mean ± std over replicates) against bits at the first drift time, GDC
    on where present; one line per training kind (and other axes), a chance line."""
    bits = _sorted_bits(state)
    if len(bits) < 2:
        return None
    first = min(entry["drift_seconds"] for entry in entries)
    figure, axis = plt.subplots(figsize=(PANEL_SIZE[0] * 1.5, PANEL_SIZE[1] * 1.25), dpi=DPI,
                                layout="constrained")
    used: set[bool | None] = set()
    for _, label, line, colour in _series(entries, state):
        found = [(value, _pick(line, {"bits": value}, first, GDC_ON)) for value in bits]
        drawn = [(value, entry) for value, entry in found if entry is not None]
        if not drawn:
            continue
        used |= {entry["gdc"] for _, entry in drawn}
        axis.errorbar([value for value, _ in drawn],
                      [entry["accuracy_mean"] for _, entry in drawn],
                      yerr=_error_bars([entry for _, entry in drawn]),
                      marker="o", capsize=4, color=colour, label=label)
    _draw_chance(axis, state)
    axis.set_xticks(bits)
    axis.set_xlabel("weight resolution (bits)")
    _accuracy_axis(axis)
    _titles(figure, f"Test accuracy against bits at drift {_label_at(entries, first)}"
                    f"{_gdc_set_text(used)}", entries, state)
    _legend_below(figure, axis.get_legend_handles_labels())
    return figure


def _accuracy_vs_drift(entries: list[dict[str, Any]], state: StudyState) -> Figure | None:
    """Test accuracy (mean ± std over replicates) against drift time, one panel per bits value,
    one colour per training kind (and other axes); solid: GDC on, dashed: off."""
    times = sorted({entry["drift_seconds"] for entry in entries})
    if len(times) < 2:
        return None
    labels = [_label_at(entries, seconds) for seconds in times]
    panels = _sorted_bits(state) or [None]
    figure, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False, dpi=DPI,
                                figsize=(PANEL_SIZE[0] * 0.85 * max(len(panels), 1.75),
                                         PANEL_SIZE[1] * 1.3), layout="constrained")
    lines = _series(entries, state)
    for axis, bits in zip(axes[0], panels):
        for index, (_, label, line, colour) in enumerate(lines):
            panel = line if bits is None else _matching(line, {"bits": bits})
            shift = DODGE * (index - (len(lines) - 1) / 2)
            for gdc in sorted({entry["gdc"] for entry in panel}, key=GDC_ORDER.__getitem__,
                              reverse=True):
                drawn = sorted((entry for entry in panel if entry["gdc"] is gdc),
                               key=lambda entry: entry["drift_seconds"])
                axis.errorbar([times.index(entry["drift_seconds"]) + shift for entry in drawn],
                              [entry["accuracy_mean"] for entry in drawn],
                              yerr=_error_bars(drawn),
                              marker="o", ms=4, capsize=3, color=colour,
                              linestyle="--" if gdc is False else "-",
                              label=label + GDC_LABELS[gdc])
        _draw_chance(axis, state)
        axis.set_xticks(range(len(labels)), labels)
        axis.set_xlabel("time since programming (drift)")
        axis.set_title("" if bits is None else f"{bits} bits")
        _accuracy_axis(axis)
    for axis in axes[0][1:]:
        axis.set_ylabel("")
    _titles(figure, "Test accuracy after drift (solid: GDC on, dashed: GDC off)", entries,
            state)
    _legend_below(figure, axes[0][0].get_legend_handles_labels())
    return figure


def _loop_vs_deploy(entries: list[dict[str, Any]], state: StudyState) -> Figure | None:
    """Grouped bars per bits value (and other axes): the training kinds side by side at the
    first and the last drift time, GDC on where present, error bars the std over replicates."""
    present = _kinds(entries)
    if "in-the-loop" not in present or len(present) < 2:
        return None
    times = sorted({entry["drift_seconds"] for entry in entries})
    moments = times[:1] if len(times) == 1 else [times[0], times[-1]]
    columns = _other_columns(state, ("training",))
    groups = _distinct(entries, columns)
    bars = [(kind, seconds) for kind in present for seconds in moments]
    width = 0.8 / len(bars)
    figure, axis = plt.subplots(figsize=(max(PANEL_SIZE[0] * 1.5, 1.2 * len(groups) + 2),
                                         PANEL_SIZE[1] * 1.25), dpi=DPI, layout="constrained")
    colours = _kind_colours(entries, state)
    used: set[bool | None] = set()
    for index, (kind, seconds) in enumerate(bars):
        device = _headline_device(kind, entries)
        found = [(position, _pick(entries, {**group, "training": kind, "device": device},
                                  seconds, GDC_ON)) for position, group in enumerate(groups)]
        drawn = [(position - 0.4 + width * (index + 0.5), entry) for position, entry in found
                 if entry is not None]
        used |= {entry["gdc"] for _, entry in drawn}
        later = seconds != moments[0]
        colour = colours[kind]
        axis.bar([x for x, _ in drawn], [entry["accuracy_mean"] for _, entry in drawn],
                 width * 0.92, yerr=_error_bars([entry for _, entry in drawn]),
                 capsize=3, color=colour, alpha=0.6 if later else 1.0,
                 hatch="//" if later else None, edgecolor="white" if later else colour,
                 linewidth=0.8)  # the hatch takes the edge colour
        for x, entry in drawn:
            top = entry["accuracy_mean"] + (entry["accuracy_std"] or 0.0)
            axis.annotate(f"{100 * entry['accuracy_mean']:.0f}", (x, top), xytext=(0, 2),
                          textcoords="offset points", ha="center", va="bottom", fontsize=7)
    _draw_chance(axis, state)
    axis.set_xticks(range(len(groups)), [_situation_text(group) for group in groups])
    axis.set_xlabel("weight resolution" if columns == ["bits"] else
                    "condition" if columns else "")
    _accuracy_axis(axis)
    axis.set_ylim(0, 1.1)
    handles: list[Any] = [
        Patch(color=colours[kind], label=f"{TRAINING_NAMES[kind]} "
              f"({DEVICE_NAMES[_headline_device(kind, entries)]})") for kind in present]
    handles += [Patch(facecolor="0.45", alpha=0.6 if seconds != times[0] else 1.0,
                      edgecolor="white" if seconds != times[0] else "0.45",
                      hatch="//" if seconds != times[0] else None,
                      label=f"drift {_label_at(entries, seconds)}") for seconds in moments]
    handles += [line for line in axis.get_lines() if line.get_label() == "chance"]
    _titles(figure, f"Train in the loop or train then deploy, at drift "
                    f"{' and '.join(_label_at(entries, seconds) for seconds in moments)}"
                    f"{_gdc_set_text(used)}", entries, state)
    _legend_below(figure, (handles, [handle.get_label() for handle in handles]))
    return figure


def _write_error(entries: list[dict[str, Any]], state: StudyState) -> Figure | None:
    """Histograms of the programming write error (per fresh device and layer, weight units),
    one panel per bits value coloured by training kind; below them one of the in-the-loop
    trainings' write error per update, coloured by bits."""
    programmed = _programming_errors(state)
    if not programmed:
        return None
    updates = _update_errors(state)
    panels = sorted(programmed, key=lambda value: (value is None, value))
    rows = 2 if updates else 1
    figure = plt.figure(figsize=(PANEL_SIZE[0] * max(len(panels), 2) * 0.85,
                                 PANEL_SIZE[1] * 0.95 * rows + 0.6), dpi=DPI,
                        layout="constrained")
    grid = figure.add_gridspec(rows, len(panels))
    colours = _kind_colours(entries, state)
    first: Axes | None = None
    for column, bits in enumerate(panels):
        axis = figure.add_subplot(grid[0, column], sharex=first)
        first = first or axis
        by_kind = programmed[bits]
        shown = [kind for kind in TRAINING_KINDS if kind in by_kind]
        _histogram(axis, {TRAINING_NAMES[kind]: by_kind[kind] for kind in shown},
                   [colours.get(kind, "0.5") for kind in shown])
        axis.set_title("programming fresh devices" + ("" if bits is None else f", {bits} bits"))
        axis.set_xlabel("write error per device and layer (weight units)")
        axis.set_ylabel("device layers (count)" if column == 0 else "")
        if column == len(panels) - 1:
            axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
                        fontsize="small")
    if updates:
        axis = figure.add_subplot(grid[1, :])
        ordered = sorted(updates, key=lambda value: (value is None, value))
        _histogram(axis, {("updates" if bits is None else f"{bits} bits"): updates[bits]
                          for bits in ordered}, [f"C{index + 4}" for index in range(len(ordered))])
        axis.set_title("in-the-loop training: each update that wrote cells")
        axis.set_xlabel("write error per update (weight units)")
        axis.set_ylabel("updates (count)")
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize="small")
    _titles(figure, "Device write errors: mean |target − read-back| right after writing, "
                    "all replicates and device seeds", entries, state, averaged=False)
    return figure


def _programming_errors(state: StudyState) -> dict[Any, dict[str, list[float]]]:
    """Write errors (weight units) of the evaluations' fresh-device programming, by the bits
    value of the evaluation's points (None when bits is not an axis), then training kind."""
    errors: dict[Any, dict[str, list[float]]] = {}
    for trial in state.plan["trials"]:
        result = state.results.get(trial["id"])
        if result is None:
            continue
        for planned, measured in zip(trial["evaluations"], result["evaluations"]):
            values = [write["write_error"] for write in measured.get("writes", [])
                      if write["write_error"] is not None]
            if values:
                bits = planned["points"][0]["axes"].get("bits")
                errors.setdefault(bits, {}).setdefault(trial["training"], []).extend(values)
    return errors


def _update_errors(state: StudyState) -> dict[Any, list[float]]:
    """Write errors (weight units) of the in-the-loop trainings' updates that wrote cells
    (error above 0), by the trial's bits axis value (None when bits is not an axis)."""
    errors: dict[Any, list[float]] = {}
    for trial in state.plan["trials"]:
        result = state.results.get(trial["id"])
        if result is None or trial["training"] != "in-the-loop":
            continue
        values = [value for value in result["updates"]["write_error"]
                  if value is not None and value > 0]
        if values:
            errors.setdefault(trial["key"].get("bits"), []).extend(values)
    return errors


def _histogram(axis: Axes, groups: dict[str, list[float]], colours: list[str]) -> None:
    """Overlaid histograms of ``groups`` on shared bins, each filled lightly and outlined,
    labelled with the group's count."""
    bins = np.histogram_bin_edges(np.concatenate(list(groups.values())), bins=30)
    for (name, values), colour in zip(groups.items(), colours):
        axis.hist(values, bins=bins, color=colour, alpha=0.3)
        axis.hist(values, bins=bins, color=colour, histtype="step", linewidth=1.4,
                  label=f"{name} (n={len(values)})")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)


def _error_bars(entries: list[dict[str, Any]]) -> list[float] | None:
    """The accuracy std of each entry as error bars (0 where unknown); None, drawing none,
    when no entry has one (a single replicate)."""
    if all(entry["accuracy_std"] is None for entry in entries):
        return None
    return [entry["accuracy_std"] or 0.0 for entry in entries]


def _accuracy_axis(axis: Axes) -> None:
    """A 0–100 % test-accuracy y axis with a grid."""
    axis.set_ylim(0, 1.02)
    axis.set_ylabel("test accuracy (% correct)")
    axis.yaxis.set_major_formatter(PercentFormatter(1.0))
    axis.grid(alpha=0.3)


def _draw_chance(axis: Axes, state: StudyState) -> None:
    """A dotted line at the task's chance accuracy, where it is known."""
    chance = _chance_level(state)
    if chance is not None:
        axis.axhline(chance, color="0.35", linestyle=":", linewidth=1.2, label="chance")


def _legend_below(figure: Figure, handles_labels: tuple[list[Any], list[str]]) -> None:
    """One legend for the figure, under the panels (it never covers data), with as many
    columns as fit the figure's width (a column is as wide as the longest label, at least
    ``LEGEND_COLUMN`` inches; at most 3 columns)."""
    handles, labels = handles_labels
    longest = max((len(label) for label in labels), default=0)
    width = max(LEGEND_COLUMN, LEGEND_HANDLE + LEGEND_CHARACTER * longest)
    columns = max(1, min(3, int(figure.get_figwidth() // width)))
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, frameon=False,
                  fontsize="small")


def _titles(figure: Figure, title: str, entries: list[dict[str, Any]], state: StudyState,
            averaged: bool = True) -> None:
    """``title`` above the figure and, smaller, the study, its device (when not an axis) and,
    for ``averaged`` plots, how many replicates the means and error bars (sample std) are
    over."""
    line = state.plan["settings"]["name"]
    if "backend" not in state.plan["axes"]:
        line += f" · device {entries[0]['backend']}"
    counts = sorted({entry["n"] for entry in entries})
    if averaged and counts == [1]:
        line += " · one replicate (no error bars)"
    elif averaged:
        replicates = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        line += f" · mean ± std over {replicates} replicates"
    figure.suptitle(f"{title}\n{line}", fontsize="medium")


def _gdc_set_text(used: set[bool | None]) -> str:
    """How drift compensation was set in a plot: `` with GDC`` where all points had it on."""
    return _gdc_text(next(iter(used))) if len(used) == 1 else " (GDC on where available)"


PLOTS: dict[str, Drawing] = {
    "accuracy_vs_bits": _accuracy_vs_bits, "accuracy_vs_drift": _accuracy_vs_drift,
    "loop_vs_deploy": _loop_vs_deploy, "write_error": _write_error,
}
"""The plots by file name, in the order the page shows them."""


# --- files -------------------------------------------------------------------------------------


def write_report(state: StudyState, out_dir: str | Path) -> list[Path]:
    """Write ``trials.csv``, ``measurements.csv``, ``summary.csv``, the plots the grid allows
    (``<name>.png`` and ``.svg``) and ``report.html`` into ``out_dir`` (created if missing),
    each atomically; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = measurements(state)
    entries = summarize(table, state)
    columns = axis_columns(state)
    trials = trial_rows(state)
    trial_columns = list(trials[0])  # a study has at least one trial
    written = [
        _write_csv(out / "trials.csv", trials, trial_columns),
        _write_csv(out / "measurements.csv", table, [*columns.values(), *MEASUREMENT_COLUMNS]),
        _write_csv(out / "summary.csv", entries,
                   [*columns.values(), *CONDITION_COLUMNS, *STATISTIC_COLUMNS]),
    ]
    completed = _view(state, entries)
    plots: dict[str, str] = {}
    for name, draw in PLOTS.items():
        figure = draw(completed, state) if completed else None
        if figure is None:
            continue
        png, svg = save_figure(figure, out / name)
        written += [png, svg]
        plots[name] = svg.read_text(encoding="utf-8")
    page = _report_page(state, entries, _headlines_of(completed, state), plots)
    written.append(atomic_write(out / REPORT_FILE, page.encode("utf-8")))
    return written


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    """``rows`` as CSV with a header row (module csv), atomically; returns ``path``."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in columns])
    return atomic_write(path, text.getvalue().encode("utf-8"))


def _csv_cell(value: Any) -> str:
    """A table value as a CSV cell: '' for None, true/false, JSON for lists and tables."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return dumps(value, sort_keys=True)
    return str(value)


# --- the HTML page -----------------------------------------------------------------------------

CAPTIONS = {
    "accuracy_vs_bits": "Test accuracy against the weight resolution at the first drift time. "
                        "In-the-loop runs are measured on their own device, the others on "
                        "fresh devices they were deployed to.",
    "accuracy_vs_drift": "Test accuracy against the time since programming, with (solid) and "
                         "without (dashed) global drift compensation.",
    "loop_vs_deploy": "Each training kind right after programming (solid) and at the last "
                      "drift time (hatched), GDC on where the device has it; the numbers "
                      "are the mean accuracy in %.",
    "write_error": "What programming the fresh devices left as write error, per device and "
                   "layer, and the write error of each in-the-loop training update that "
                   "wrote cells.",
}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.description { font-size: 1.1em; color: #444; margin-top: 0; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.status span { display: inline-block; padding: 0.15em 0.7em; border-radius: 1em;
               margin-right: 0.5em; background: #eee; }
.status .done { background: #d8f0d8; } .status .failed { background: #f6d4d4; }
.status .pending { background: #f3ecd0; }
ul.headlines li { margin-bottom: 0.5em; }
figure { margin: 1.5em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.95em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
.scroll { max-height: 40em; overflow: auto; }
footer { margin-top: 3em; color: #777; font-size: 0.85em; }
"""


def _report_page(state: StudyState, entries: list[dict[str, Any]], sentences: list[str],
                 plots: dict[str, str]) -> str:
    """The self-contained HTML page: study, status, headlines, plots (inline SVG), summary,
    failed trials, sessions and links to the CSV files."""
    settings = state.plan["settings"]
    name = html.escape(settings["name"])
    parts = [
        f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{name} · hwloop study report</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        f"<h1>Study {name}</h1>",
        f"<p class=\"description\">{html.escape(settings['description'])}</p>"
        if settings["description"] else "",
        _study_facts(state),
        _status_counts(state),
        "<h2>Headlines</h2>",
        "<ul class=\"headlines\">" + "".join(f"<li>{html.escape(sentence)}</li>"
                                             for sentence in sentences) + "</ul>",
    ]
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f"<figure id=\"{plot}\">{_inline_svg(svg)}<figcaption>"
                  f"{html.escape(CAPTIONS[plot])} Files: <a href=\"{plot}.png\">{plot}.png</a>, "
                  f"<a href=\"{plot}.svg\">{plot}.svg</a>.</figcaption></figure>"
                  for plot, svg in plots.items()]
    parts += [
        "<h2>Summary</h2>",
        _summary_table(state, entries),
        "<h2>Failed trials</h2>",
        _failed_table(state),
        "<h2>Sessions</h2>",
        _sessions_table(state),
        "<h2>Data</h2>",
        "<ul>" + "".join(f"<li><a href=\"{table}.csv\">{table}.csv</a>: {text}</li>"
                         for table, text in (
                             ("trials", "one row per trial, with its status and timing"),
                             ("measurements", "one row per point and measurement (tidy)"),
                             ("summary", "mean ± std over replicates per condition"))) + "</ul>",
        f"<footer>Written by hwloop study report at {html.escape(now_iso())} from "
        f"{html.escape(str(state.directory))}.</footer>",
        "</body>\n</html>\n",
    ]
    return "\n".join(part for part in parts if part)


def _study_facts(state: StudyState) -> str:
    """The study's source file, seed, replicates, grid axes and evaluation settings."""
    settings = state.plan["settings"]
    evaluate = state.plan["document"].get("evaluate", {})
    facts = {
        "source": state.source or "(not recorded)",
        "directory": str(state.directory),
        "seed": str(settings["seed"]),
        "replicates": str(settings["replicates"]),
        "grid": "; ".join(f"{name} = {dumps(values)}"
                          for name, values in state.plan["axes"].items()),
        "evaluation": ", ".join(f"{key} = {dumps(value)}" for key, value in evaluate.items())
                      or "defaults",
    }
    return "<dl class=\"facts\">" + "".join(
        f"<dt>{key}</dt><dd>{html.escape(value)}</dd>" for key, value in facts.items()) + "</dl>"


def _status_counts(state: StudyState) -> str:
    """``21 trials: 19 done, 1 failed, 1 pending``, as coloured badges."""
    counts = {status: 0 for status in ("done", "failed", "pending")}
    for trial_id in state.trial_ids:
        counts[state.status(trial_id)] += 1
    badges = "".join(f"<span class=\"{status}\">{count} {status}</span>"
                     for status, count in counts.items())
    return f"<p class=\"status\">{len(state.trial_ids)} trials: {badges}</p>"


def _inline_svg(svg: str) -> str:
    """A matplotlib SVG file as an inline ``<svg>`` element (the XML prologue dropped)."""
    return svg[svg.index("<svg"):]


def _html_table(header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """A table of escaped cells; columns in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"number\">{html.escape(cell)}</td>" if index in numeric
                         else f"<td>{html.escape(cell)}</td>"
                         for index, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>" \
           f"<tbody>{body}</tbody></table></div>"


def _summary_table(state: StudyState, entries: list[dict[str, Any]]) -> str:
    """The summary as a table: axes, device, drift, GDC, n, accuracy and loss mean ± std."""
    if not entries:
        return "<p>No trial has finished yet, so there is nothing to summarise.</p>"
    columns = list(axis_columns(state).values())
    header = [*columns, "device", "drift", "GDC", "n", "test accuracy (%)", "loss (nats)"]
    rows = []
    for entry in entries:
        loss = "–" if entry["loss_mean"] is None else f"{entry['loss_mean']:.3f}" + (
            "" if entry["loss_std"] is None else f" ± {entry['loss_std']:.3f}")
        rows.append([*(_csv_cell(entry[column]) for column in columns), entry["device"],
                     entry["drift"], {True: "on", False: "off", None: "–"}[entry["gdc"]],
                     str(entry["n"]), _percent(entry), loss])
    first = len(columns) + 3
    return _html_table(header, rows, {first, first + 1, first + 2})


def _failed_table(state: StudyState) -> str:
    """The trials that failed for good, with their attempts and errors."""
    if not state.failed:
        return "<p>None.</p>"
    rows = [[trial_id, str(failure.get("attempts", "")), str(failure.get("when", "")),
             str(failure.get("error", ""))] for trial_id, failure in state.failed.items()]
    return _html_table(["trial", "attempts", "when", "error"], rows, {1})


def _sessions_table(state: StudyState) -> str:
    """Each ``study run`` session: when, its thread layout and what it did."""
    if not state.sessions:
        return "<p>No session recorded.</p>"
    rows = []
    for session in state.sessions:
        layout = session.get("layout", {})
        hosts = "; ".join(f"{host}: {used['workers']} worker(s), "
                          f"{used['dask_threads']} Dask thread(s), {used['cores']} cores"
                          for host, used in layout.get("hosts", {}).items())
        seconds = session.get("seconds")
        rows.append([str(session.get("started", "")), str(session.get("finished", "(unfinished)")),
                     str(layout.get("scheduler", "")), str(layout.get("workers", "")),
                     str(layout.get("dask_threads", "")), str(layout.get("torch_threads", "")),
                     hosts, str(session.get("done", "")), str(session.get("failed", "")),
                     str(session.get("retried", "")), str(session.get("skipped", "")),
                     "" if seconds is None else f"{seconds:.0f}"])
    header = ["started", "finished", "scheduler", "workers", "Dask threads",
              "torch threads per trial", "hosts", "done", "failed", "retried",
              "skipped (already done)", "seconds"]
    return _html_table(header, rows, {3, 4, 5, 7, 8, 9, 10, 11})
