"""Failure handling of training runs: full disks, signals, NaN losses, locks, stale files,
damaged run files, file modes and every bad input, each ending in one line and a clean state."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hwloop.cli import main
from hwloop.runs import RUN_FILE, read_run
from test_tasks import write_shd

# Modules that came with these features are imported inside the tests that need them, so
# that this file also runs against older versions of hwloop (each test then fails alone).

SMALL = ["task_options.num_samples=64", "hidden=[16]", "--quiet"]
TIMEOUT = 240  # seconds for any child process


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(stderr: str) -> str:
    """The single line ``error: ...`` of ``stderr`` (asserting that it is all there is)."""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr


def train_small(out: Path, *args: str) -> None:
    code, _, stderr = invoke("train", "--out", str(out), *SMALL, *args)
    assert code == 0, stderr


def temporaries(directory: Path) -> list[Path]:
    """Hidden files a writer left behind (the lock file is not one)."""
    return [p for p in directory.iterdir() if p.name.startswith(".") and p.name != ".hwloop.lock"]


def hwloop_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hwloop.cli", *args]


CHILD_ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


# --- the disk fills up -------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_run_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_small(out, "--epochs", "1")
    before = (out / RUN_FILE).read_bytes()
    limit = len(before) // 2  # the next run file cannot be written whole

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(hwloop_command("train", "--out", str(out), "--resume", "--epochs", "2",
                                         "--quiet"),
                          preexec_fn=limited, capture_output=True, text=True, timeout=TIMEOUT,
                          env=CHILD_ENVIRONMENT)
    assert done.returncode == 1, done.stderr
    message = one_line_error(done.stderr)
    assert "no space left" in message and "keeps its previous content" in message
    assert "--resume" in message
    assert (out / RUN_FILE).read_bytes() == before
    assert temporaries(out) == []


# --- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_with_its_last_checkpoint_intact(
    tmp_path: Path, signum: int, status: int
) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        hwloop_command("train", "--out", str(out), "--epochs", "200", "--checkpoint-every", "1",
                       *SMALL),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=CHILD_ENVIRONMENT,
    )
    deadline = time.monotonic() + TIMEOUT
    while not (out / RUN_FILE).exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # checkpoints every step: the signal often lands inside a write
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == status
    message = one_line_error(stderr)
    assert signal.Signals(signum).name in message and "--resume" in message
    assert read_run(out).checkpoint is not None  # a whole run file, not a damaged one
    assert temporaries(out) == []


def test_a_signal_inside_the_run_file_write_waits_for_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwloop.interrupts import Interrupted, stop_on_signals

    out = tmp_path / "run"
    train_small(out, "--epochs", "1")
    record = read_run(out)
    import hwloop.runs as runs

    original = runs._write_table

    def signalled(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the write
        original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runs, "_write_table", signalled)
    checkpoint = {**record.checkpoint, "step": 999}  # type: ignore[dict-item]
    with stop_on_signals(), pytest.raises(Interrupted) as stopped:
        runs.write_run(out, config=record.config, task=record.task, created=record.created,
                       epochs=record.epochs, steps=record.steps, checkpoint=checkpoint)
    assert stopped.value.exit_status == 143
    assert read_run(out).checkpoint["step"] == 999  # type: ignore[index]  # written whole
    assert temporaries(out) == []


def test_an_interruption_before_the_first_checkpoint_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwloop.trainer import Trainer

    original = Trainer.train_epoch

    def interrupted(self: Trainer, *args: object) -> object:
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    out = tmp_path / "new" / "run"
    code, _, stderr = invoke("train", "--out", str(out), "--epochs", "2", *SMALL)
    assert code == 130
    assert "no checkpoint was written yet" in one_line_error(stderr)
    assert not (tmp_path / "new").exists()


def test_a_resumed_run_interrupted_again_keeps_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwloop.trainer import Trainer

    out = tmp_path / "run"
    train_small(out, "--epochs", "1")
    before = (out / RUN_FILE).read_bytes()

    def interrupted(self: Trainer, *args: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    code, _, stderr = invoke("train", "--out", str(out), "--resume", "--epochs", "3", "--quiet")
    assert code == 130 and "checkpoint of step 1" in one_line_error(stderr)
    assert (out / RUN_FILE).read_bytes() == before


# --- NaN losses and checkpoints inside epochs ----------------------------------------------


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwloop.learning.hypr import HYPR

    original = HYPR.compute_gradients
    calls = []

    def nan_at_the_third_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        loss = original(self, *args, **kwargs)
        return math.nan if len(calls) == 3 else loss

    monkeypatch.setattr(HYPR, "compute_gradients", nan_at_the_third_batch)
    out = tmp_path / "run"
    code, _, stderr = invoke("train", "--out", str(out), "--epochs", "3", *SMALL)  # 1 step/epoch
    assert code == 1
    message = one_line_error(stderr)
    assert "loss became nan at step 3" in message and "checkpoint of step 2" in message
    assert "--resume" not in message  # resuming would diverge again
    record = read_run(out)  # the last good checkpoint, a whole run file
    assert len(record.epochs) == 2 and record.checkpoint["step"] == 2
    assert all(np.isfinite(value).all() for value in record.final_weights.values())


def test_inputs_that_overflow_stop_the_run_before_its_first_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, stderr = invoke("train", "--out", str(out), "--task", "digits", "--epochs", "1",
                             "task_options.gain=3e38", "hidden=[16]", "--quiet")
    assert code == 1
    message = one_line_error(stderr)
    assert "became nan" in message and "nothing was kept" in message
    assert not out.exists()


def test_checkpoints_inside_epochs_resume_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwloop.trainer import Trainer

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    settings = ["task_options.num_samples=160", "hidden=[16]", "--quiet"]
    code, _, stderr = invoke("train", "--out", str(straight), "--epochs", "2", *settings)
    assert code == 0, stderr
    original = Trainer.train_epoch

    def stop_mid_epoch(self: Trainer, on_step=None, every=None, on_checkpoint=None):  # type: ignore[no-untyped-def]
        def step(metrics):  # type: ignore[no-untyped-def]
            on_step(metrics)
            if metrics.step == 3:  # epoch 1 has 4 steps: stop after the checkpoint of step 3
                raise KeyboardInterrupt
        return original(self, step, every, on_checkpoint)

    monkeypatch.setattr(Trainer, "train_epoch", stop_mid_epoch)
    code, _, stderr = invoke("train", "--out", str(cut), "--epochs", "2", "--checkpoint-every",
                             "1", *settings)
    assert code == 130 and "checkpoint of step 2" in stderr
    assert read_run(cut).checkpoint["progress"]["steps_done"] == 2  # type: ignore[index]
    monkeypatch.setattr(Trainer, "train_epoch", original)
    code, _, stderr = invoke("train", "--out", str(cut), "--resume", "--quiet")
    assert code == 0, stderr
    first, second = read_run(straight), read_run(cut)
    for name, value in first.final_weights.items():  # type: ignore[union-attr]
        np.testing.assert_array_equal(value, second.final_weights[name])  # type: ignore[index]
    assert [e.train_loss for e in first.epochs] == [e.train_loss for e in second.epochs]


# --- the run directory -------------------------------------------------------------------


def test_a_second_process_cannot_train_into_a_locked_directory(tmp_path: Path) -> None:
    from hwloop.rundir import RunDirectory

    out = tmp_path / "run"
    holder = RunDirectory(out)
    holder.acquire()  # another process holds it (flock conflicts across open files)
    try:
        code, _, stderr = invoke("train", "--out", str(out), "--epochs", "1", *SMALL)
        assert code == 2 and "in use by another hwloop process" in one_line_error(stderr)
        assert not (out / RUN_FILE).exists()
    finally:
        holder.release()
    train_small(out, "--epochs", "1")  # released: usable again


def test_a_second_real_process_is_refused_while_the_first_trains(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = subprocess.Popen(hwloop_command("train", "--out", str(out), "--epochs", "100", *SMALL),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=CHILD_ENVIRONMENT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / RUN_FILE).exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        second = subprocess.run(hwloop_command("train", "--out", str(out), "--resume"),
                                capture_output=True, text=True, timeout=TIMEOUT,
                                env=CHILD_ENVIRONMENT)
        assert second.returncode == 2 and "in use" in one_line_error(second.stderr)
    finally:
        first.kill()
        first.wait(timeout=TIMEOUT)


def test_stale_temporary_files_are_removed_on_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_small(out, "--epochs", "1")
    stale = out / f".{RUN_FILE}.tmp-0badc0de"  # what a writer killed by SIGKILL leaves
    stale.write_bytes(b"half a run file")
    code, _, stderr = invoke("train", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert code == 0, stderr
    assert not stale.exists()


def test_run_files_and_plots_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        train_small(tmp_path / "run", "--epochs", "1")
    finally:
        os.umask(previous)
    for name in (RUN_FILE, "curves.png", "curves.svg"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


# --- damaged run files ---------------------------------------------------------------------


@pytest.mark.parametrize("part", ["checkpoint", "config"])
def test_runs_show_reads_what_it_can_of_a_damaged_run(tmp_path: Path, part: str) -> None:
    out = tmp_path / "run"
    train_small(out, "--epochs", "2")
    with h5py.File(out / RUN_FILE, "r+") as file:
        if part == "checkpoint":
            del file["checkpoint/state"]
            file["checkpoint/state"] = np.frombuffer(b"not a checkpoint" * 8, dtype=np.uint8)
        else:
            file.attrs["config"] = "{not json"
    code, stdout, stderr = invoke("runs", "show", str(out))
    assert code == 0, stderr
    assert "damaged" in stdout and "weights_only" not in stdout + stderr
    assert "epoch" in stdout and "train loss" in stdout  # the metrics are still shown
    code, stdout, _ = invoke("runs", "show", str(out), "--json")
    shown = json.loads(stdout)
    assert code == 0 and shown["epochs_done"] == 2 and shown["damage"]
    code, _, stderr = invoke("train", "--out", str(out), "--resume", "--epochs", "3")
    assert code == 2 and "damaged" in one_line_error(stderr)
    assert "weights_only" not in stderr


# --- bad input: one line, exit 2, nothing written ------------------------------------------


BAD_INPUT = [
    (["init_gain=nan"], "init_gain: expected a finite number"),
    (["init_gain=-1"], "init_gain must be > 0"),
    (["lr_end_factor=-0.5"], "lr_end_factor must lie in [0, 1]"),
    (["lr_end_factor=inf"], "lr_end_factor: expected a finite number"),
    (["grad_clip=inf"], "grad_clip: expected a finite number"),
    (["lr=nan"], "lr: expected a finite number"),
    (["neuron_options.dt=0"], "dt"),
    (["--seed", "-1"], "seed must lie in 0..2**63-1"),
    (["seed=18446744073709551616"], "seed must lie in 0..2**63-1"),
    (["--bits", "4"], "bits is a device option but no device is in the loop"),
    (["--scheme", "mixed"], "scheme is a device option"),
    (["threshold=0.5"], "threshold is a device option"),
    (["backend_options.seed=3"], "backend_options is a device option"),
    (["--backend", "ideal", "--bits", "1"], "bits"),
    (["--backend", "pcm://?colour=red"], "valid: bits"),
    (["--backend", "pcm://?seed=1&seed=2"], "seed"),
    (["--backend", "pcm", "backend_options.seed=abc"], "seed: expected an integer, got 'abc'"),
    (["--backend", "pcm", "threshold=-1", "--scheme", "sign"], "threshold must be > 0"),
    (["--resume", "--overwrite"], "give one of them"),
    (["skip=true"], "needs two or more hidden layers"),
    (["epochs=3", "epochs=4"], "given twice"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
    (["--threads", "0"], "threads must lie in 1.."),
    (["--config", "LATIN1"], "not UTF-8"),
    (["--config", "FOLDER"], "is a directory"),
    (["neuron_options.train=[\"nope\"]"], "unknown parameter 'nope'"),
    (["task_options.num_samples=100000000000"], "memory"),
    (["hidden=[100000000]"], "memory"),
    # Loihi 2: a neuron model it cannot run, bits above 8, float32 integer dynamics
    (["--backend", "loihi2", "--neuron", "lif", "forward=device"], "cannot run neuron model 'lif'"),
    (["--backend", "loihi2", "--neuron", "loihi_lif", "--dtype", "float64", "--bits", "9"],
     "bits must lie in 1..8"),
    (["--backend", "loihi2://?bits=9", "--neuron", "loihi_lif", "--dtype", "float64"],
     "backend 'loihi2': bits must lie in 1..8"),
    (["--backend", "loihi2", "--neuron", "loihi_lif"], "only in float64"),
    (["--backend", "loihi2", "--neuron", "loihi_lif", "--dtype", "float64", "--recurrence",
      "self"], "recurrence none or full"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "latin1.toml").write_bytes("epochs = 3 # \xe9\n".encode("latin-1"))
    (tmp_path / "folder.toml").mkdir()
    args = [a.replace("LATIN1", str(tmp_path / "latin1.toml"))
            .replace("FOLDER", str(tmp_path / "folder.toml")) for a in args]
    for dry_run in ([], ["--dry-run"]):
        code, stdout, stderr = invoke("train", "--out", str(tmp_path / "out"), "--quiet",
                                      *dry_run, *args)
        assert code == 2, stdout + stderr
        assert message in one_line_error(stderr)
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["/proc/hwloop-test-out", "FILE/inside"])
def test_unusable_output_paths_are_refused_before_training(tmp_path: Path, out: str) -> None:
    (tmp_path / "file").write_text("a file")
    out = out.replace("FILE", str(tmp_path / "file"))
    code, _, stderr = invoke("train", "--out", out, "--epochs", "1", *SMALL)
    assert code == 2 and "--out" in one_line_error(stderr)


def test_validation_split_that_would_be_empty_is_refused(tmp_path: Path) -> None:
    write_shd(tmp_path, num_train=20)
    for fraction in ("1e-17", "0.99"):  # no validation sample, no training sample
        code, _, stderr = invoke("train", "--out", str(tmp_path / "out"), "--task", "shd",
                                 f"task_options.data_dir={str(tmp_path)!r}",
                                 f"task_options.validation_fraction={fraction}", "--dry-run")
        assert code == 2 and "leaves the" in one_line_error(stderr)


def test_the_summary_names_the_split_that_picked_the_best_weights(tmp_path: Path) -> None:
    write_shd(tmp_path, num_train=20)
    code, stdout, stderr = invoke(
        "train", "--out", str(tmp_path / "shd"), "--task", "shd", "--epochs", "1",
        f"task_options.data_dir={str(tmp_path)!r}", "task_options.validation_fraction=0.5",
        "task_options.max_time_ms=40", "task_options.ignore_first=0", "hidden=[8]", "--quiet")
    assert code == 0, stderr
    assert "best validation accuracy" in stdout and "best test" not in stdout
    code, stdout, _ = invoke("train", "--out", str(tmp_path / "cue"), "--epochs", "1", *SMALL)
    assert "best test accuracy" in stdout


def test_dry_run_validates_prints_the_resolved_config_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke("train", "--out", str(out), "--dry-run", "--backend", "pcm",
                                  "--bits", "4", "--scheme", "mixed", "epochs=3")
    assert code == 0, stderr
    assert "presets applied" in stdout and "lr = 0.05" in stdout and "epochs = 3" in stdout
    assert not out.exists()
    code, stdout, _ = invoke("train", "--out", str(out), "--dry-run", "--json")
    plan = json.loads(stdout)
    assert code == 0 and plan["config"]["init_gain"] == 5.0 and plan["presets_applied"]
    assert not out.exists()
