"""The command line, in-process with click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hwloop.cli import main
from hwloop.runs import read_run

SMALL = ["task_options.num_samples=64", "hidden=[16]", "--quiet"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def train(out: Path, *args: str) -> dict:
    code, stdout, stderr = invoke("train", "--out", str(out), "--json", *SMALL, *args)
    assert code == 0, stderr
    return json.loads(stdout)


def test_train_writes_a_run_that_runs_show_reports(tmp_path: Path) -> None:
    summary = train(tmp_path / "run", "--epochs", "2", "--learner", "hypr", "--lambda", "7")
    assert (tmp_path / "run" / "run.h5").is_file() and (tmp_path / "run" / "curves.png").is_file()
    assert summary["epochs_done"] == 2 and summary["config"]["lam"] == 7
    code, stdout, _ = invoke("runs", "show", str(tmp_path / "run"), "--json")
    shown = json.loads(stdout)
    assert code == 0 and shown["epochs_done"] == 2 and shown["learner"] == "hypr"
    assert shown["final_test_accuracy"] == summary["final_test_accuracy"]
    record = read_run(tmp_path / "run")
    assert len(record.steps) == 2 * 1 and record.epochs[-1].test_accuracy == shown["final_test_accuracy"]
    with h5py.File(tmp_path / "run" / "run.h5") as file:
        assert file.attrs["format"] == "hwloop-run"
        assert set(file["weights/final"]) == set(file["weights/best"])
    code, stdout, _ = invoke("runs", "show", str(tmp_path / "run"))
    assert code == 0 and "epoch" in stdout and "hypr λ=7" in stdout


def test_config_file_and_override_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('epochs = 3\nlr = 0.02\nneuron = "alif"\n[task_options]\ndelay = 10\n')
    summary = train(tmp_path / "run", "--config", str(config), "--epochs", "1", "lr=0.03")
    stored = read_run(tmp_path / "run").config
    assert stored == summary["config"]
    assert (stored["epochs"], stored["lr"], stored["neuron"]) == (1, 0.03, "alif")
    assert stored["task_options"] == {"delay": 10, "num_samples": 64}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_identical_weights(tmp_path: Path, dtype: str) -> None:
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        train(tmp_path / name, "--epochs", "2", "--seed", seed, f"dtype={dtype}")
    a, b, c = (read_run(tmp_path / n).final_weights for n in "abc")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["hidden.0.w_in"], c["hidden.0.w_in"])


def test_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(tmp_path / "straight", "--epochs", "3")
    from hwloop.trainer import Trainer

    original = Trainer.train_epoch

    def interrupted(self: Trainer, *args):  # type: ignore[no-untyped-def]
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    code, _, stderr = invoke("train", "--out", str(tmp_path / "cut"), "--epochs", "3", *SMALL)
    assert code == 130 and "error: interrupted" in stderr
    assert len(read_run(tmp_path / "cut").epochs) == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    code, _, stderr = invoke("train", "--out", str(tmp_path / "cut"), "--resume", "--quiet")
    assert code == 0, stderr
    straight, resumed = read_run(tmp_path / "straight"), read_run(tmp_path / "cut")
    assert len(resumed.epochs) == 3
    for key, value in straight.final_weights.items():
        assert np.array_equal(value, resumed.final_weights[key]), key


def shd_text_file(tmp_path: Path) -> Path:
    (tmp_path / "shd").mkdir()
    (tmp_path / "shd" / "shd_train.h5").write_text("not hdf5")
    (tmp_path / "shd" / "shd_test.h5").write_text("not hdf5")
    return tmp_path / "shd"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "foo"], "unknown task 'foo'"),
        (["--neuron", "hh"], "unknown neuron 'hh'"),
        (["--learner", "sgd"], "unknown learner 'sgd'"),
        (["--lambda", "0"], "lambda must be an integer >= 1"),
        (["--lambda", "-1"], "lambda must be an integer >= 1"),
        (["--lambda", "x"], "'x' is not a valid integer"),
        (["--task", "shd"], "needs data_dir"),
        (["--task", "shd", "task_options.data_dir=MISSING"], "is not a directory"),
        (["--task", "shd", "task_options.data_dir=SHDTEXT"], "shd_train.h5"),
        (["foo=1"], "unknown config key 'foo'"),
        (["task_options.nope=1"], "unknown option 'nope' for task 'cue'"),
        (["--config", "MISSING.toml"], "does not exist"),
        (["--config", "BAD.toml"], "not valid TOML"),
        (["--device", "cuda"], "CPU-only build" if torch.version.cuda is None else "no CUDA GPU"),
        (["--hidden", "a,b"], "--hidden must list layer widths"),
        (["--resume"], "holds no run"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "BAD.toml").write_text("epochs = = 3")
    shd = shd_text_file(tmp_path)
    args = [
        a.replace("MISSING", str(tmp_path / "missing")).replace("SHDTEXT", str(shd))
        .replace("BAD.toml", str(tmp_path / "BAD.toml"))
        for a in args
    ]
    code, stdout, stderr = invoke("train", "--out", str(tmp_path / "out"), *args)
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr
    assert "Traceback" not in stderr + stdout
    assert not (tmp_path / "out").exists()


def test_an_existing_run_is_never_overwritten_by_accident(tmp_path: Path) -> None:
    train(tmp_path / "run", "--epochs", "1")
    before = (tmp_path / "run" / "run.h5").read_bytes()
    code, _, stderr = invoke("train", "--out", str(tmp_path / "run"), *SMALL)
    assert code == 2 and "already holds a run" in stderr
    assert (tmp_path / "run" / "run.h5").read_bytes() == before
    train(tmp_path / "run", "--epochs", "1", "--overwrite", "--seed", "3")
    assert read_run(tmp_path / "run").config["seed"] == 3


def test_runs_show_and_devices_errors_and_listing(tmp_path: Path) -> None:
    code, _, stderr = invoke("runs", "show", str(tmp_path / "nothing"))
    assert code == 2 and stderr.startswith("error: ") and "holds no run" in stderr
    code, stdout, _ = invoke("devices", "--json")
    assert code == 0 and "ideal" in [d["name"] for d in json.loads(stdout)]
