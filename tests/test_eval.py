"""``hwloop eval`` and ``hwloop.evaluate``: devices, drift, seeds, compensation, storage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hwloop
from hwloop.cli import main
from hwloop.evaluation import parse_duration
from hwloop.runs import RUN_FILE

SMALL = ["--neuron", "lif", "task_options.num_samples=64", "hidden=[16]", "--quiet", "--epochs",
         "2"]  # LIF (cue preset): its hidden layer spikes from the start, so weights matter


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A host run and a 4-bit PCM hardware-in-the-loop run, trained once for this module."""
    root = tmp_path_factory.mktemp("runs")
    made = {"host": root / "host", "pcm": root / "pcm"}
    for name, extra in (("host", []), ("pcm", ["--backend", "pcm", "--bits", "4",
                                               "--scheme", "mixed"])):
        code, _, stderr = invoke("train", "--out", str(made[name]), *SMALL, *extra)
        assert code == 0, stderr
    return made


def test_durations() -> None:
    assert [parse_duration(t) for t in ("0", "90", "90s", "2min", "1.5h", "1d", "1w", "1mo",
                                        "1y", "1e3s")] == [
        0, 90, 90, 120, 5400, 86_400, 604_800, 2_592_000, 31_536_000, 1000]
    for bad in ("-1h", "1 parsec", "h", "", "nan", "inf", "1e400s"):
        with pytest.raises(hwloop.UserError):
            parse_duration(bad)


def test_a_hil_run_is_evaluated_on_its_own_device_and_on_fresh_devices(runs: dict[str, Path]
                                                                      ) -> None:
    result = hwloop.evaluate(runs["pcm"], drift="0,1h,1mo", device_seeds=3, gdc="both")
    kinds = {(row.device, row.device_seed) for row in result.rows}
    assert kinds == {("trained", None), ("fresh", 0), ("fresh", 1), ("fresh", 2)}
    assert len(result.rows) == 4 * 3 * 2  # devices × drift times × gdc settings
    seeds = {row.backend_seed for row in result.rows if row.device == "fresh"}
    assert seeds == {hwloop.derive_seed(k, "eval-device") for k in range(3)}
    # the run's own device at drift 0 reproduces the accuracy the run recorded
    trained = [r for r in result.rows if r.device == "trained" and r.drift_seconds == 0]
    assert trained[0].accuracy == hwloop.read_run(runs["pcm"]).epochs[-1].test_accuracy
    summary = {(e["device"], e["drift"], e["gdc"]): e for e in result.summary()}
    fresh = summary[("fresh", "1mo", False)]
    assert fresh["n"] == 3 and fresh["accuracy_std"] is not None
    assert summary[("trained", "0", True)]["accuracy_std"] is None  # one device: no spread
    # drift changes what the devices hold, and compensation changes how it is read
    assert fresh["loss_mean"] != summary[("fresh", "0", False)]["loss_mean"]
    assert summary[("fresh", "1mo", True)]["loss_mean"] != fresh["loss_mean"]


def test_evaluation_is_reproducible_and_device_seeds_differ(runs: dict[str, Path]) -> None:
    first = hwloop.evaluate(runs["pcm"], drift="1d", device_seeds=2, gdc="off")
    again = hwloop.evaluate(runs["pcm"], drift="1d", device_seeds=2, gdc="off")
    assert [r.loss for r in first.rows] == [r.loss for r in again.rows]
    fresh = [r.loss for r in first.rows if r.device == "fresh"]
    assert fresh[0] != fresh[1]  # two devices, two noise realisations


def test_fresh_devices_of_a_hil_run_hold_its_trained_levels(runs: dict[str, Path]) -> None:
    exact = hwloop.evaluate(runs["pcm"], backend="pcm://?noise=false", device_seeds=1)
    trained = hwloop.evaluate(runs["pcm"], device_seeds=0)
    assert exact.rows[0].device == "fresh"
    # noise-free device with the run's own weight per level: the trained weights exactly
    assert exact.rows[0].accuracy == trained.rows[0].accuracy


def test_a_host_run_is_evaluated_on_the_host_or_on_fresh_devices(runs: dict[str, Path]) -> None:
    host = hwloop.evaluate(runs["host"])
    assert [(r.device, r.gdc) for r in host.rows] == [("host", None)]
    assert host.rows[0].accuracy == hwloop.read_run(runs["host"]).epochs[-1].test_accuracy
    ideal = hwloop.evaluate(runs["host"], backend="ideal", drift="0,1d")
    assert [r.accuracy for r in ideal.rows] == [host.rows[0].accuracy] * 2  # exact, timeless
    assert all(r.gdc is None for r in ideal.rows)  # no drift compensation on this device
    quantized = hwloop.evaluate(runs["host"], backend="pcm", bits=2, device_seeds=2)
    assert {r.device for r in quantized.rows} == {"fresh"}
    assert math.isfinite(quantized.rows[0].loss)


def test_eval_command_prints_stores_and_leaves_the_run_alone(runs: dict[str, Path]) -> None:
    run_file = runs["pcm"] / RUN_FILE
    before = run_file.read_bytes()
    code, stdout, stderr = invoke("eval", str(runs["pcm"]), "--drift", "0,1h,1d,1mo",
                                  "--gdc", "both", "--device-seeds", "2")
    assert code == 0, stderr
    assert "±" in stdout and "1mo" in stdout and "trained" in stdout and "fresh" in stdout
    assert run_file.read_bytes() == before  # the training record is untouched
    stored = sorted((runs["pcm"] / "eval").iterdir())
    assert [p.suffix for p in stored] == [".json", ".png", ".svg"]
    data = json.loads(stored[0].read_text())
    assert data["device_seeds"] == 2 and len(data["rows"]) == 3 * 4 * 2
    code, stdout, _ = invoke("eval", str(run_file), "--json", "--name", "mine", "--weights",
                             "best", "--drift", "1d")
    shown = json.loads(stdout)
    assert code == 0 and shown["weights"] == "best" and (runs["pcm"] / "eval" / "mine.json").exists()
    assert {row["device"] for row in shown["rows"]} == {"fresh"}  # best weights: not on the device


@pytest.mark.parametrize(
    "args,message",
    [
        (["--drift", "1h"], "need a device"),
        (["--bits", "4"], "need a device"),
        (["--backend", "pcm", "--drift", "soon"], "is not a duration"),
        (["--backend", "pcm", "--device-seeds", "-1"], "device seeds"),
        (["--backend", "pcm", "--device-seeds", "0"], "only the run's own device"),
        (["--backend", "pcm", "--gdc", "maybe"], "unknown gdc"),
        (["--weights", "worst"], "unknown weights"),
        (["--split", "validation"], "no validation split"),
        (["--backend", "ideal", "--forward", "sideways"], "unknown forward"),
        (["--backend", "nope"], "unknown backend"),
        (["--name", "../escape"], "may hold only"),
    ],
)
def test_bad_eval_input_is_one_line_exit_2(runs: dict[str, Path], args: list[str], message: str
                                           ) -> None:
    eval_folder = runs["host"] / "eval"
    before = sorted(eval_folder.iterdir()) if eval_folder.exists() else []
    code, _, stderr = invoke("eval", str(runs["host"]), *args)
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert (sorted(eval_folder.iterdir()) if eval_folder.exists() else []) == before


def test_eval_of_a_missing_run_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = invoke("eval", str(tmp_path / "nothing"))
    assert code == 2 and "holds no run" in stderr


def test_rebuild_network_gives_the_stored_weights(runs: dict[str, Path]) -> None:
    record = hwloop.read_run(runs["pcm"])
    network = hwloop.rebuild_network(record, "best")
    for name, value in network.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), record.best_weights[name])
