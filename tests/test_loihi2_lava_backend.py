"""Training with real Lava processes in the loop (``loihi2-lava``): forward passes on Lava that
the host's replay matches spike for spike, test predictions equal to the emulator's, a Lava
process killed mid-run stopping the run cleanly and resuming to the same result, and a clear
error when Lava cannot be imported (docs/loihi2.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hwloop.config import build_config
from hwloop.errors import RunError
from hwloop.learning.losses import PredictionAccumulator
from hwloop.runs import read_run
from hwloop.session import HILSession, network_groups
from hwloop.tasks import make_task
from hwloop.training import TrainingCallbacks, plan_training, resume, run_plan, train
from hwloop.trainer import make_network
from simulators.loihi2.backend import Loihi2Backend

from simulators.loihi2.lava_backend import Loihi2LavaBackend

SETTINGS = dict(task="cue", neuron="loihi_lif", dtype="float64", hidden=[16], epochs=2,
                batch_size=16, task_options={"num_samples": 64}, seed=3)


def lava_config(**changes: object):
    return build_config(None, [], backend="loihi2-lava://?timeout=120", forward="device",
                        **{**SETTINGS, **changes})


def test_training_on_lava_matches_its_replay_and_the_emulator(tmp_path: Path) -> None:
    record = train(lava_config(), tmp_path / "run")
    training = record.updates[1:]
    assert training and all(update.device_runs == 1 for update in training)
    assert all(update.spike_mismatches == 0 for update in training)
    # the test set on Lava and on the emulator, with the weights the device held at the end
    task = make_task("cue", SETTINGS["task_options"], SETTINGS["seed"])
    config = lava_config()
    network = make_network(config, task.input_size, task.num_classes)
    inputs, labels = task.test.inputs.numpy(), task.test.labels
    outputs = []
    for device in (Loihi2LavaBackend(timeout=120.0), Loihi2Backend()):
        with device:
            device.load_state_dict(record.checkpoint["device"])
            device.declare_network(network_groups(network))
            outputs.append(device.run(inputs).outputs)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    predictions = PredictionAccumulator(config.prediction, task.ignore_first)
    predictions.add(torch.from_numpy(outputs[0]))
    accuracy = float((predictions.predictions() == labels).double().mean())
    assert accuracy == record.epochs[-1].test_accuracy


def test_a_lava_process_killed_mid_run_stops_it_and_resume_gives_the_same_result(
        tmp_path: Path) -> None:
    plan = plan_training(lava_config(), tmp_path / "killed", checkpoint_every=2)
    backend = plan.trainer.session.backend

    def kill_at_step_5(metrics) -> None:
        if metrics.step == 5:
            os.kill(backend.chip.model_pids()[0], signal.SIGKILL)

    with pytest.raises(RunError, match="Lava.*failed.*--resume"):
        run_plan(plan, TrainingCallbacks(on_step=kill_at_step_5))
    assert backend.chip is None  # stopped: nothing left running
    resumed = resume(tmp_path / "killed")
    whole = train(lava_config(), tmp_path / "whole")
    for name, value in whole.final_weights.items():
        np.testing.assert_array_equal(value, resumed.final_weights[name], name)
    assert [e.test_accuracy for e in resumed.epochs] == [e.test_accuracy for e in whole.epochs]
    assert sum(u.spike_mismatches for u in resumed.updates) == 0


def test_without_lava_the_lava_backend_is_refused_in_one_line_and_the_emulator_works(
        tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "lava"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('lava is broken here')\n")
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    common = ["--neuron", "loihi_lif", "--dtype", "float64", "--epochs", "1", "--quiet",
              "hidden=[8]", "task_options.num_samples=32"]

    def hwloop(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hwloop.cli", "train", *args, *common],
                              env=environment, capture_output=True, text=True, timeout=300)

    refused = hwloop("--backend", "loihi2-lava", "--out", str(tmp_path / "lava"))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "pip install --no-deps --ignore-requires-python lava-nc==0.10.0" in refused.stderr
    assert not (tmp_path / "lava").exists()
    emulated = hwloop("--backend", "loihi2", "--out", str(tmp_path / "emulator"))
    assert emulated.returncode == 0, emulated.stderr
    assert read_run(tmp_path / "emulator").epochs


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, session, state) of every process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found.append((int(entry.name), int(fields[1]), int(fields[3]), fields[0]))
    return found


def _live_in_session(session: int) -> list[int]:
    return [pid for pid, _, in_session, state in _processes()
            if in_session == session and state != "Z"]


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_lava_runs_stops_every_lava_process_in_one_line(
        tmp_path: Path, signum: int, status: int) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "hwloop.cli", "train", "--out", str(out), "--quiet",
         "--backend", "loihi2-lava", "--forward", "device", "--neuron", "loihi_lif",
         "--dtype", "float64", "--epochs", "50", "hidden=[16]", "task_options.num_samples=64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    chip = None  # the chip's child leads its own session, where Lava's processes run
    while chip is None or len(_live_in_session(chip)) < 4:
        assert process.poll() is None and time.monotonic() < deadline, "Lava did not start"
        chip = next((pid for pid, parent, session, _ in _processes()
                     if parent == process.pid and session == pid), None)
        time.sleep(0.1)
    time.sleep(1.0)  # inside a batch on Lava
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert stderr.count("\n") == 1 and signal.Signals(signum).name in stderr, stderr
    assert _live_in_session(chip) == []


def test_the_weights_live_on_the_lava_chip_from_the_first_write() -> None:
    config = lava_config()
    network = make_network(config, 12, 3)
    with Loihi2LavaBackend(timeout=120.0) as backend:
        session = HILSession(network, backend, "direct", 1.0, 0)  # forward=host: no runs
        session.begin()
        assert backend.chip is not None  # built once every matrix was written
        for name in ("hidden.0.w_in", "hidden.0.w_rec", "readout.w_in"):
            index, connection = backend._place(name)
            np.testing.assert_array_equal(backend.chip.read(index, connection),
                                          backend.dense(name).weights)
        before = backend.dense("hidden.0.w_rec").weights
        session.before_update()
        with torch.no_grad():  # as an optimizer step would
            network.hidden[0].w_rec.mul_(-1.0)
        session.after_update(1)  # written to Lava and read back from it
        assert not np.array_equal(backend.dense("hidden.0.w_rec").weights, before)
        np.testing.assert_array_equal(backend.chip.read(0, "w_rec"),
                                      backend.dense("hidden.0.w_rec").weights)
        np.testing.assert_array_equal(
            network.hidden[0].w_rec.detach().numpy(), backend.read("hidden.0.w_rec"))
    assert backend.chip is None
