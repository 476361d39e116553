"""Run management: ``runs list``, ``runs show``, ``runs compare``, strict JSON, and the CLI's
manners (help, defaults, tables that fit the terminal)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from hwloop.cli import main
from hwloop.jsonout import dumps
from hwloop.runs import RUN_FILE

SMALL = ["task_options.num_samples=64", "hidden=[16]", "--quiet", "--epochs", "1"]


def invoke(*args: str, width: int | None = None) -> tuple[int, str, str]:
    env = None if width is None else {"COLUMNS": str(width)}
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two host runs (seeds 0 and 1) and a PCM run under one folder."""
    root = tmp_path_factory.mktemp("study")
    for name, extra in (("host-0", ["--seed", "0"]), ("host-1", ["--seed", "1", "lr=0.02"]),
                        ("pcm/a", ["--backend", "pcm", "--bits", "4", "--scheme", "mixed"])):
        code, _, stderr = invoke("train", "--out", str(root / name), *SMALL, *extra)
        assert code == 0, stderr
    return root


def test_a_run_file_without_the_newer_update_columns_reads_them_as_0(
        folder: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / RUN_FILE).write_bytes((folder / "pcm" / "a" / RUN_FILE).read_bytes())
    with h5py.File(old / RUN_FILE, "a") as file:
        for column in ("clipped", "device_runs", "spike_mismatches"):
            del file[f"metrics/updates/{column}"]
    code, stdout, stderr = invoke("runs", "show", str(old), "--json")
    writes = json.loads(stdout)["writes"]
    assert code == 0 and "damage" not in stderr
    assert (writes["clipped"], writes["device_runs"], writes["spike_mismatches"]) == (0, 0, 0)
    assert writes["cells_written"] > 0


def test_runs_list_has_one_line_per_run(folder: Path) -> None:
    code, stdout, _ = invoke("runs", "list", str(folder), "--json")
    rows = json.loads(stdout)
    assert code == 0 and [row["path"] for row in rows] == ["host-0", "host-1", "pcm/a"]
    pcm = rows[2]
    assert (pcm["device"], pcm["bits"], pcm["scheme"], pcm["epochs_done"]) == ("pcm", 4, "mixed", 1)
    assert rows[0]["device"] == "host" and rows[0]["scheme"] is None
    code, stdout, _ = invoke("runs", "list", str(folder), width=200)
    assert code == 0 and len([line for line in stdout.splitlines() if "hypr" in line]) == 3


def test_runs_show_has_config_device_and_write_statistics(folder: Path) -> None:
    for target in (folder / "pcm" / "a", folder / "pcm" / "a" / RUN_FILE):  # folder or file
        code, stdout, _ = invoke("runs", "show", str(target), "--json")
        shown = json.loads(stdout)
        assert code == 0
        assert shown["config"]["backend"] == "pcm" and shown["config"]["bits"] == 4
        device = shown["device"]
        assert (device["backend"], device["bits"], device["scheme"], device["forward"]) == (
            "pcm", 4, "mixed", "host")
        writes = shown["writes"]
        assert writes["updates"] == shown["steps_done"] + 1 and writes["cells_written"] > 0
        assert {"mean_write_error", "cells_per_update", "pulses_per_update"} <= set(writes)
    code, stdout, _ = invoke("runs", "show", str(folder / "pcm" / "a"), width=200)
    assert code == 0 and "device: pcm, 4 bits, scheme mixed" in stdout and "writes:" in stdout
    code, stdout, _ = invoke("runs", "show", str(folder / "host-0"), width=200)
    assert "device: none (trained on the host)" in stdout and "config:" in stdout


def test_runs_compare_shows_the_differences_side_by_side(folder: Path) -> None:
    code, stdout, _ = invoke("runs", "compare", str(folder / "host-0"), str(folder / "host-1"),
                             str(folder / "pcm" / "a"), "--json")
    comparison = json.loads(stdout)
    assert code == 0 and len(comparison["runs"]) == 3
    differences = comparison["config_differences"]
    assert differences["seed"] == [0, 1, 0] and differences["lr"] == [0.05, 0.02, 0.05]
    assert differences["backend"] == ["none", "none", "pcm"]
    assert "task" not in differences  # equal everywhere
    assert len(comparison["metrics"]["final_test_accuracy"]) == 3
    code, stdout, _ = invoke("runs", "compare", str(folder / "host-0"), str(folder / "host-1"),
                             width=200)
    assert code == 0 and "seed" in stdout and "final_test_accuracy" in stdout
    code, _, stderr = invoke("runs", "compare", str(folder / "host-0"))
    assert code == 2 and "two or more runs" in stderr


def test_json_is_strict_nan_becomes_null(tmp_path: Path) -> None:
    assert dumps({"a": math.nan, "b": [math.inf, 1.5], "c": -math.inf}) == (
        '{"a": null, "b": [null, 1.5], "c": null}')
    out = tmp_path / "run"
    code, _, stderr = invoke("train", "--out", str(out), *SMALL)
    assert code == 0, stderr
    with h5py.File(out / RUN_FILE, "r+") as file:
        file["metrics/epochs/train_loss"][0] = math.nan  # as a diverging epoch would leave
    code, stdout, _ = invoke("runs", "show", str(out), "--json")
    assert code == 0 and "NaN" not in stdout
    assert json.loads(stdout)["epochs"][0]["train_loss"] is None
    code, stdout, _ = invoke("runs", "list", str(tmp_path), "--json")
    assert code == 0 and "NaN" not in stdout


def test_help_manners() -> None:
    for args in ([], ["-h"], ["--help"]):
        code, stdout, _ = invoke(*args)
        assert code == 0 and "Usage: hwloop" in stdout and "Commands:" in stdout
        assert "\n  train" in stdout  # a real help page, not a squashed one-line usage
    code, stdout, _ = invoke("runs")
    assert code == 0 and "Usage: hwloop runs" in stdout and "compare" in stdout
    code, stdout, _ = invoke("train", "-h")
    text = " ".join(stdout.split())  # help wraps to the terminal
    assert code == 0 and "[default: cue]" in text and "[default: hypr]" in text
    code, stdout, _ = invoke("eval", "-h")
    assert code == 0 and "[default: final]" in " ".join(stdout.split())


def test_tables_wrap_instead_of_cutting_words(folder: Path) -> None:
    code, stdout, _ = invoke("runs", "compare", str(folder / "host-0"), str(folder / "pcm" / "a"),
                             width=60)
    assert code == 0
    assert all(len(line) <= 60 for line in stdout.splitlines())
    assert "…" not in stdout  # nothing cut off with an ellipsis


def test_devices_lists_backends_with_their_compensation() -> None:
    code, stdout, _ = invoke("devices", "--json")
    listing = {entry["name"]: entry for entry in json.loads(stdout)}
    assert code == 0 and listing["pcm"]["compensation"] and not listing["ideal"]["compensation"]
    code, stdout, _ = invoke("devices", width=200)
    assert code == 0 and "pcm" in stdout and "ideal" in stdout


def test_a_broken_plugin_is_listed_as_broken_and_the_others_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hwloop.backends]\nbroken = no_such_module:Chip\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, stdout, _ = invoke("devices", "--json")
    listing = {entry["name"]: entry for entry in json.loads(stdout)}
    assert code == 0 and "no_such_module" in listing["broken"]["broken"]
    assert listing["pcm"]["broken"] is None
    code, stdout, _ = invoke("devices", width=200)
    assert code == 0 and "broken" in stdout and "pcm" in stdout
