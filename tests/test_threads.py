"""Threads and OpenMP waiting: hwloop.threads, ``train --threads`` and the import-time default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hwloop.cli import main
from hwloop.errors import UserError
from hwloop.threads import MAX_THREADS, SPIN_COUNT, configure_threads, set_openmp_defaults

# Run in a fresh interpreter: prints GOMP_SPINCOUNT as it was when torch began to be imported.
SPIN_COUNT_AT_TORCH_IMPORT = """
import os, sys

class Watch:
    seen = "not imported"

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and Watch.seen == "not imported":
            Watch.seen = os.environ.get("GOMP_SPINCOUNT", "unset")
        return None

sys.meta_path.insert(0, Watch())
import hwloop
print(Watch.seen)
"""


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_default_is_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert configure_threads() == 1
    assert torch.get_num_threads() == 1


def test_train_threads_sets_the_count(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--dry-run", "--threads", "1",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("threads", [0, -1, MAX_THREADS + 1, True])
def test_bad_counts_are_refused(threads: int) -> None:
    with pytest.raises(UserError, match="threads must lie in"):
        configure_threads(threads)


@pytest.mark.parametrize("threads", ["0", "-1", "100000"])
def test_train_refuses_bad_threads_in_one_line(tmp_path: Path, threads: str) -> None:
    result = CliRunner().invoke(main, ["train", "--dry-run", "--threads", threads,
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: threads must lie in 1..")
    assert result.stderr.count("\n") == 1


def test_openmp_default_is_set_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    set_openmp_defaults()
    assert os.environ["GOMP_SPINCOUNT"] == SPIN_COUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    set_openmp_defaults()
    assert os.environ["GOMP_SPINCOUNT"] == "5"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    set_openmp_defaults()
    assert "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.parametrize(("given", "seen"), [({}, SPIN_COUNT), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                             ({"OMP_WAIT_POLICY": "ACTIVE"}, "unset")])
def test_importing_hwloop_sets_the_default_before_torch(given: dict[str, str], seen: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", SPIN_COUNT_AT_TORCH_IMPORT], env={**env, **given},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == seen
