"""A training run whose SpiNNaker 2 server dies: a clear one-line error within the link's
timeout, and ``hwloop train --resume`` against a new server ends with the weights of a run
that was never interrupted (issue 10, must-show 4)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hwloop.cli import main
from hwloop.runs import read_run
from hwloop.trainer import Trainer
from simulators.spinnaker2.server import start_server

TIMEOUT, RETRIES = 0.5, 2
pytestmark = pytest.mark.deadline(300)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def arguments(out: Path, port: int) -> list[str]:
    return ["train", "--out", str(out), "--epochs", "2", "--checkpoint-every", "1",
            "--backend", f"spinnaker2://?port=socket://127.0.0.1:{port}&bits=8"
            f"&timeout={TIMEOUT}&retries={RETRIES}",
            "task_options.num_samples=96", "hidden=[16]", "batch_size=16", "--quiet"]


def test_a_killed_server_stops_the_run_clearly_and_resume_finishes_it_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    with start_server(f"socket://127.0.0.1:{port}", n_pe=32):
        result = CliRunner().invoke(main, arguments(straight, port))
    assert result.exit_code == 0, result.stderr

    original = Trainer.train_epoch
    killed: list[float] = []
    server = start_server(f"socket://127.0.0.1:{port}", n_pe=32)

    def kill_at_step_7(self: Trainer, on_step=None, every=None, on_checkpoint=None):  # type: ignore[no-untyped-def]
        def step(metrics):  # type: ignore[no-untyped-def]
            on_step(metrics)
            # epoch 2, before step 7's checkpoint (which reads the chip's state: it fails,
            # and the run keeps step 6's)
            if metrics.step == 7 and not killed:
                os.killpg(server.process.pid, signal.SIGKILL)
                killed.append(time.monotonic())
        return original(self, step, every, on_checkpoint)

    monkeypatch.setattr(Trainer, "train_epoch", kill_at_step_7)
    try:
        result = CliRunner().invoke(main, arguments(cut, port))
    finally:
        server.stop()
    stopped = time.monotonic()
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "SpiNNaker 2 link" in result.stderr and "checkpoint of step 6" in result.stderr
    assert "--resume" in result.stderr
    assert stopped - killed[0] < TIMEOUT * (RETRIES + 1) + 5.0  # the retries, then one write

    monkeypatch.setattr(Trainer, "train_epoch", original)
    with start_server(f"socket://127.0.0.1:{port}", n_pe=32):
        result = CliRunner().invoke(main, ["train", "--out", str(cut), "--resume", "--quiet"])
    assert result.exit_code == 0, result.stderr
    first, second = read_run(straight), read_run(cut)
    for name, value in first.final_weights.items():  # type: ignore[union-attr]
        np.testing.assert_array_equal(value, second.final_weights[name])  # type: ignore[index]
    assert [e.train_loss for e in first.epochs] == [e.train_loss for e in second.epochs]
