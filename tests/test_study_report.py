"""Study reports (hwloop.study.report): the tidy table, the summary over replicates, trial rows,
headlines, plots and the HTML page, from small studies trained for real (one epoch each)."""

from __future__ import annotations

import csv
import html
import statistics
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest
import torch

from hwloop.study import Study, StudyState, StudyStore, build_study, read_study
from hwloop.study.report import (
    headlines,
    measurements,
    point_rows,
    summary,
    trial_rows,
    write_report,
)
from hwloop.study.trial import run_trial

pytestmark = pytest.mark.deadline(120)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BASE = {"task": "digits", "neuron": "lif", "learner": "hypr", "lam": 5, "epochs": 1,
        "hidden": [32], "backend": "pcm", "scheme": "mixed"}
TABLE_FILES = ["trials.csv", "measurements.csv", "summary.csv"]
PLOTS = ["accuracy_vs_bits", "accuracy_vs_drift", "loop_vs_deploy", "write_error"]


def make_study(grid: dict[str, list[Any]], replicates: int, evaluate: dict[str, Any],
               base: dict[str, Any] | None = None) -> Study:
    return build_study({"study": {"name": "report-test", "description": "a tiny study",
                                  "replicates": replicates},
                        "base": {**BASE, **(base or {})}, "grid": grid, "evaluate": evaluate},
                       source="tests/report-test.toml")


def run_in_place(directory: Path, study: Study) -> StudyState:
    """Every trial of ``study`` trained and evaluated here (no cluster), stored in
    ``directory``."""
    threads = torch.get_num_threads()
    store = StudyStore(directory, study)
    store.open()
    try:
        for trial in study.trials:
            store.save_done(trial.id, run_trial({**trial.to_dict(), "threads": 1}), 1)
    finally:
        store.close()
        torch.set_num_threads(threads)
    return read_study(directory)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> StudyState:
    """float / qat / in-the-loop at 2 and 4 bits, 2 replicates, 2 fresh devices, drift 0 and
    1d with GDC on and off: 10 trials, all finished."""
    study = make_study({"training": ["float", "qat", "in-the-loop"], "bits": [2, 4]}, 2,
                       {"drift": ["0", "1d"], "gdc": "both", "device_seeds": 2})
    return run_in_place(tmp_path_factory.mktemp("study") / "finished", study)


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyState, str]:
    """The same kind of study with nothing finished and one trial failed; returns its state
    and the failed trial's id."""
    study = make_study({"training": ["float", "in-the-loop"], "bits": [2, 4]}, 1,
                       {"drift": ["0"], "device_seeds": 1})
    store = StudyStore(tmp_path_factory.mktemp("study") / "unfinished", study)
    store.open()
    failed = study.trials[1].id
    store.save_failed(failed, "RuntimeError: the device stopped answering", 3)
    store.close()
    return read_study(store.directory), failed


def expected_rows(state: StudyState) -> int:
    """Points × their evaluation's rows (this study has no evaluate.* axes, so a point gets
    every row of its evaluation)."""
    return sum(len(planned["points"]) * len(measured["rows"])
               for trial in state.plan["trials"]
               for planned, measured in zip(trial["evaluations"],
                                            state.results[trial["id"]]["evaluations"]))


def test_measurements_have_one_row_per_point_and_measurement(finished: StudyState) -> None:
    table = measurements(finished)
    # float and qat: 2 devices × 2 drift times × GDC on/off per bits value; in-the-loop adds
    # its own device (2 drift times × GDC on/off)
    assert len(table) == expected_rows(finished) == 2 * 2 * 8 + 4 * 8 + 4 * 12
    assert list(table[0]) == ["training", "bits", "replicate", "trial", "point", "device",
                              "device_seed", "drift", "drift_seconds", "gdc", "accuracy", "loss"]
    points = {point["id"]: (trial["id"], point["axes"]) for trial in finished.plan["trials"]
              for evaluation in trial["evaluations"] for point in evaluation["points"]}
    for row in table:
        trial_id, axes = points[row["point"]]
        assert row["trial"] == trial_id
        assert (row["training"], row["bits"], row["replicate"]) == \
            (axes["training"], axes["bits"], axes["replicate"])
        assert 0.0 <= row["accuracy"] <= 1.0
    devices = {(row["training"], row["device"]) for row in table}
    assert devices == {("float", "fresh"), ("qat", "fresh"), ("in-the-loop", "fresh"),
                       ("in-the-loop", "trained")}
    assert {row["drift_seconds"] for row in table} == {0.0, 86_400.0}


def test_point_rows_keep_the_points_drift_times_and_gdc() -> None:
    rows = [{"drift": drift, "gdc": gdc} for drift in ("0", "1h", "1d") for gdc in (False, True)]
    rows.append({"drift": "1d", "gdc": None})  # a device without drift compensation
    assert point_rows(rows, {"bits": 4}) == rows
    assert [row["drift"] for row in point_rows(rows, {"evaluate.drift": "1h"})] == ["1h", "1h"]
    assert {row["drift"] for row in point_rows(rows, {"evaluate.drift": "0, 1d"})} == {"0", "1d"}
    assert {row["drift"] for row in point_rows(rows, {"evaluate.drift": ["1h", "1d"]})} == \
        {"1h", "1d"}
    assert [row["gdc"] for row in point_rows(rows, {"evaluate.gdc": "on"})] == \
        [True, True, True, None]
    assert [row["gdc"] for row in point_rows(rows, {"evaluate.gdc": "off"})] == \
        [False, False, False, None]
    assert len(point_rows(rows, {"evaluate.gdc": "both"})) == len(rows)
    assert point_rows(rows, {"evaluate.drift": ["1d"], "evaluate.gdc": "off"}) == \
        [{"drift": "1d", "gdc": False}, {"drift": "1d", "gdc": None}]


def test_summary_averages_devices_then_replicates(finished: StudyState) -> None:
    table = measurements(finished)
    entries = summary(finished)
    # 2 float + 2 qat conditions on fresh devices, 2 in-the-loop on fresh and own devices,
    # each at 2 drift times × GDC on/off
    assert len(entries) == (2 + 2 + 2 * 2) * 4
    assert {entry["n"] for entry in entries} == {2}
    for entry in entries:
        by_replicate: dict[int, list[float]] = {}
        for row in table:
            if all(row[key] == entry[key] for key in ("training", "bits", "device", "drift",
                                                      "gdc")):
                by_replicate.setdefault(row["replicate"], []).append(row["accuracy"])
        per_replicate = [statistics.fmean(values) for values in by_replicate.values()]
        assert sorted(by_replicate) == [0, 1]
        assert entry["accuracy_mean"] == pytest.approx(statistics.fmean(per_replicate))
        assert entry["accuracy_std"] == pytest.approx(statistics.stdev(per_replicate))
        assert entry["loss_mean"] > 0 and entry["loss_std"] is not None
    assert list(entries[0]) == ["training", "bits", "device", "drift", "drift_seconds", "gdc",
                                "n", "accuracy_mean", "accuracy_std", "loss_mean", "loss_std"]
    # grid order: float before qat before in-the-loop, 2 before 4 bits, drift 0 before 1d
    order = [(entry["training"], entry["bits"]) for entry in entries]
    assert order == sorted(order, key=lambda key: (["float", "qat", "in-the-loop"].index(key[0]),
                                                   key[1]))


def test_trial_rows_describe_finished_trials(finished: StudyState) -> None:
    rows = trial_rows(finished)
    assert [row["trial"] for row in rows] == finished.trial_ids
    assert list(rows[0])[:7] == ["trial", "training", "status", "attempts", "error", "bits",
                                 "replicate"]
    for row in rows:
        assert row["status"] == "done" and row["attempts"] == 1 and row["error"] is None
        assert row["training.epochs"] == 1 and row["seconds"] >= row["train_seconds"] > 0
        assert row["programming_write_error_mean"] > 0
        if row["training"] == "float":  # bits does not change a float training
            assert row["bits"] is None and row["updates"] == 0
            assert row["update_write_error_mean"] is None
        else:
            assert row["bits"] in (2, 4) and row["updates"] > 0
            updates = finished.results[row["trial"]]["updates"]
            per_cell = sum(e * c for e, c in zip(updates["write_error"], updates["cells"]))
            assert row["update_write_error_mean"] == pytest.approx(per_cell / sum(updates["cells"]))


def test_trial_rows_carry_the_error_of_a_failed_trial(unfinished: tuple[StudyState, str]
                                                      ) -> None:
    state, failed = unfinished
    rows = {row["trial"]: row for row in trial_rows(state)}
    assert len(rows) == len(state.trial_ids) == 3
    assert rows[failed]["status"] == "failed" and rows[failed]["attempts"] == 3
    assert rows[failed]["error"] == "RuntimeError: the device stopped answering"
    pending = [row for trial_id, row in rows.items() if trial_id != failed]
    assert {row["status"] for row in pending} == {"pending"}
    assert all(row["seconds"] is None and row["attempts"] is None for row in pending)


def test_headlines_compare_the_training_kinds_with_the_summarys_figures(
        finished: StudyState) -> None:
    sentences = headlines(finished)
    entries = summary(finished)

    def accuracy(training: str, bits: int, device: str, drift: str, gdc: bool) -> str:
        entry = next(e for e in entries if (e["training"], e["bits"], e["device"], e["drift"],
                                            e["gdc"]) == (training, bits, device, drift, gdc))
        return f"{100 * entry['accuracy_mean']:.1f} ± {100 * entry['accuracy_std']:.1f} %"

    for bits in (2, 4):
        sentence = next(s for s in sentences if s.startswith(f"At {bits} bits, in-the-loop"))
        assert accuracy("in-the-loop", bits, "trained", "0", True) in sentence
        assert accuracy("float", bits, "fresh", "0", True) in sentence
        assert accuracy("qat", bits, "fresh", "0", True) in sentence
        assert "at drift 0 with GDC" in sentence and "2 replicates each" in sentence
    assert any(s.startswith("From drift 0 to 1d without GDC, float train-then-deploy on fresh "
                            "devices changes by") and "at 1d, GDC is worth" in s for s in sentences)
    assert any(s.startswith("Accuracy at 2 / 4 bits, drift 0 with GDC:") for s in sentences)


def test_write_report_writes_tables_plots_and_one_page(finished: StudyState,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "new" / "report"
    written = write_report(finished, out)
    names = sorted(path.name for path in written)
    assert names == sorted([*TABLE_FILES, "report.html",
                            *(f"{plot}.{kind}" for plot in PLOTS for kind in ("png", "svg"))])
    assert all(path.parent == out and path.is_file() for path in written)
    for plot in PLOTS:
        assert (out / f"{plot}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert ElementTree.parse(out / f"{plot}.svg").getroot().tag.endswith("svg")
    assert not list(out.glob(".*"))  # no temporary file left behind

    tables = {name: list(csv.reader((out / name).open(encoding="utf-8"))) for name in TABLE_FILES}
    assert len(tables["measurements.csv"]) == 1 + len(measurements(finished))
    assert len(tables["summary.csv"]) == 1 + len(summary(finished))
    assert len(tables["trials.csv"]) == 1 + len(finished.trial_ids)
    trials = [dict(zip(tables["trials.csv"][0], row)) for row in tables["trials.csv"][1:]]
    assert {row["bits"] for row in trials if row["training"] == "float"} == {""}  # None
    gdc = {row[tables["measurements.csv"][0].index("gdc")]
           for row in tables["measurements.csv"][1:]}
    assert gdc == {"true", "false"}

    page = (out / "report.html").read_text(encoding="utf-8")
    for sentence in headlines(finished):
        assert html.escape(sentence) in page
    assert page.count("<svg") == len(PLOTS)
    assert "<?xml" not in page and "<script" not in page and "<link" not in page
    assert "src=" not in page  # nothing to fetch: the plots are inline
    for name in TABLE_FILES:
        assert f'href="{name}"' in page
    assert "report-test" in page and "a tiny study" in page and "tests/report-test.toml" in page
    assert "10 trials" in page and "10 done" in page and "0 failed" in page


def test_a_study_without_finished_trials_still_gets_a_report(
        unfinished: tuple[StudyState, str], tmp_path: Path) -> None:
    state, failed = unfinished
    assert measurements(state) == [] and summary(state) == []
    assert headlines(state) == ["No trial has finished yet (0 of 3), so there is nothing to "
                                "report."]
    written = write_report(state, tmp_path)
    assert sorted(path.name for path in written) == sorted([*TABLE_FILES, "report.html"])
    header, *rows = list(csv.reader((tmp_path / "measurements.csv").open(encoding="utf-8")))
    assert header[:3] == ["training", "bits", "replicate"] and rows == []
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No trial has finished yet" in page and "<svg" not in page
    assert failed in page and "RuntimeError: the device stopped answering" in page
    assert "1 failed" in page and "2 pending" in page


def test_a_grid_without_bits_skips_the_bits_plot(tmp_path: Path) -> None:
    study = make_study({"training": ["float", "in-the-loop"]}, 1,
                       {"drift": ["0", "1h"], "gdc": "both", "device_seeds": 1},
                       base={"bits": 3})
    state = run_in_place(tmp_path / "study", study)
    entries = summary(state)
    assert entries and {entry["n"] for entry in entries} == {1}
    assert {entry["accuracy_std"] for entry in entries} == {None}  # one replicate: no spread
    written = {path.name for path in write_report(state, tmp_path / "report")}
    assert "accuracy_vs_bits.png" not in written and "accuracy_vs_bits.svg" not in written
    assert {"accuracy_vs_drift.svg", "loop_vs_deploy.svg", "write_error.svg"} <= written
    sentences = headlines(state)
    assert any(s.startswith("In-the-loop training reaches") and "1 replicate each" in s
               for s in sentences)
    assert not any("bits" in s for s in sentences)
    header, *rows = list(csv.reader((tmp_path / "report" / "summary.csv").open()))
    assert {row[header.index("accuracy_std")] for row in rows} == {""}


def test_a_study_without_devices_reports_the_range_of_its_conditions(tmp_path: Path) -> None:
    study = build_study({"study": {"name": "host-only", "training": "float"},
                         "base": {**BASE, "backend": "none", "scheme": "direct"},
                         "grid": {"lr": [0.01, 0.03]}, "evaluate": {"device_seeds": 1}})
    state = run_in_place(tmp_path / "study", study)
    entries = summary(state)
    assert [(entry["lr"], entry["device"], entry["gdc"]) for entry in entries] == \
        [(0.01, "host", None), (0.03, "host", None)]
    low, high = sorted(entries, key=lambda entry: entry["accuracy_mean"])
    assert headlines(state) == [
        f"At drift 0, accuracy ranges from {100 * low['accuracy_mean']:.1f} % (lr "
        f"{low['lr']}) to {100 * high['accuracy_mean']:.1f} % (lr {high['lr']}) over 2 "
        "conditions."]
    written = sorted(path.name for path in write_report(state, tmp_path / "report"))
    assert written == sorted([*TABLE_FILES, "report.html"])  # no plot fits this grid
