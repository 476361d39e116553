"""Studies on real Dask clusters: local clusters and a scheduler with workers started here,
workers killed mid-study, Ctrl-C and resume, trials that raise, a second driver on the same
directory and an unreachable scheduler.

Every study here is the 12-trial grid of ``STUDY`` (in-the-loop PCM at 2-4 bits × 2 learning
rates × 2 replicates, one epoch of digits with 16 hidden neurons: 1-2 s a trial). Processes
that a test starts (CLI drivers with their workers, ``dask scheduler``, ``dask worker``) run
in their own process group and are killed in ``finally``; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from hwloop.study import StudyStore, load_study, open_cluster, read_study, run_study
from hwloop.study.runner import Progress
from hwloop.study.trial import figures_of, run_trial

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")
CHILD_ENVIRONMENT = {**os.environ, "PYTHONUNBUFFERED": "1"}
CHILD_ENVIRONMENT.pop("HWLOOP_TRACEBACK", None)
TRIALS = 12

STUDY = """\
[study]
name = "cluster"
seed = 0
replicates = 2
retries = 2
threads = 1

[base]
task = "digits"
neuron = "lif"
learner = "hypr"
lam = 5
epochs = 1
hidden = [16]
backend = "pcm"
scheme = "mixed"

[grid]
training = ["in-the-loop"]
bits = [2, 3, 4]
lr = [0.01, 0.02]

[evaluate]
drift = ["0", "1d"]
gdc = "both"
device_seeds = 1
"""


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(STUDY)
    assert len(load_study(path).trials) == TRIALS
    return path


def hwloop_command(study_file: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hwloop.cli", "study", "run", str(study_file), "--out",
            str(out), *args]


def start(command: list[str], logs: Path, name: str) -> subprocess.Popen:
    """``command`` in its own process group (its workers with it), output to logs/name.*."""
    logs.mkdir(exist_ok=True)
    with open(logs / f"{name}.out", "wb") as stdout, open(logs / f"{name}.err", "wb") as stderr:
        return subprocess.Popen(command, cwd=REPO, env=CHILD_ENVIRONMENT, stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)


def finish(process: subprocess.Popen, logs: Path, name: str, timeout: float
           ) -> tuple[int, str, str]:
    """Wait for ``process`` (started by ``start``); (exit status, stdout, stderr)."""
    code = process.wait(timeout=timeout)
    return (code, (logs / f"{name}.out").read_text(errors="replace"),
            (logs / f"{name}.err").read_text(errors="replace"))


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and whatever is left of its process group (its workers)."""
    for kill in (lambda: os.killpg(process.pid, signal.SIGKILL),
                 lambda: process.kill()):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_cli(command: list[str], logs: Path, name: str, timeout: float) -> tuple[int, str, str]:
    process = start(command, logs, name)
    try:
        return finish(process, logs, name, timeout)
    finally:
        kill_group(process)


def one_line_error(stderr: str) -> str:
    """The single line ``error: ...`` of ``stderr`` (asserting that it is all there is)."""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr.strip()


def stored(out: Path) -> list[str]:
    """Trial ids whose result.json is in place (temporary folders are hidden)."""
    trials = out / "trials"
    if not trials.is_dir():
        return []
    return sorted(p.parent.name for p in trials.glob("*/result.json")
                  if not p.parent.name.startswith("."))


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             process: subprocess.Popen | None = None) -> None:
    ends = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {what}")
        if time.monotonic() > ends:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``directory``: (bytes, mtime in ns), folders as (b"", 0)."""
    return {str(p.relative_to(directory)): ((p.read_bytes(), p.stat().st_mtime_ns)
                                            if p.is_file() else (b"", 0))
            for p in sorted(directory.rglob("*"))}


def results(out: Path) -> dict[str, tuple[bytes, int]]:
    return {trial_id: ((out / "trials" / trial_id / "result.json").read_bytes(),
                       (out / "trials" / trial_id / "result.json").stat().st_mtime_ns)
            for trial_id in stored(out)}


def figures(out: Path) -> dict[str, dict[str, Any]]:
    return {trial_id: figures_of(result) for trial_id, result in read_study(out).results.items()}


def running_trial(client: Any, worker: str, timeout: float = 10) -> str:
    """The id of the trial that ``worker`` is running (waits until it runs one)."""
    ends = time.monotonic() + timeout
    while True:
        keys = client.processing([worker]).get(worker, ())
        if keys:
            match = re.fullmatch(r"hwloop-trial-[0-9a-f]{8}-(.+)-\d+", str(keys[0]))
            assert match, keys
            return match.group(1)
        assert time.monotonic() < ends, f"{worker} runs no trial"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_local(study_file: Path, out: Path, workers: int, overrides: list[str] = (),
              **options: Any) -> Progress:
    """``run_study`` on a fresh local cluster of ``workers`` processes (closed afterwards)."""
    study = load_study(study_file, list(overrides))
    cluster = open_cluster(workers, None, study.settings.threads)
    try:
        store = StudyStore(out, study)
        store.check()
        store.open()
        try:
            return run_study(study, store, cluster, **options)
        finally:
            store.close()
    finally:
        cluster.close()


def failing_runner(payload: dict[str, Any], fail: str) -> dict[str, Any]:
    """A trial runner that raises for trial ``fail`` (a module-level function, so that the
    spawned workers unpickle it by reference) and runs every other trial for real."""
    if payload["id"] == fail:
        raise RuntimeError(f"injected failure of {fail}\n(second line)")
    return run_trial(payload)


# --- 1. a local cluster, one worker killed ----------------------------------------------------


@pytest.mark.deadline(150)
def test_local_cluster_survives_a_killed_worker_and_a_rerun_skips_everything(
        study_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    study = load_study(study_file)
    cluster = open_cluster(2, None, study.settings.threads)
    try:
        pids = cluster.client.run(os.getpid)
        assert len(pids) == 2 and cluster.layout.workers == 2
        killed: list[int] = []
        lost: list[str] = []
        seen: list[Progress] = []
        store = StudyStore(out, study)

        def kill_one(progress: Progress) -> None:
            seen.append(Progress(**progress.__dict__))
            if progress.done >= 2 and not killed:
                # the worker that delivered the latest result, once it runs its next trial
                assert store.state is not None and progress.last is not None
                worker = store.state.results[progress.last]["worker"]
                lost.append(running_trial(cluster.client, worker))
                os.kill(pids[worker], signal.SIGKILL)
                killed.append(pids[worker])

        store.check()
        store.open()
        try:
            progress = run_study(study, store, cluster, on_progress=kill_one)
        finally:
            store.close()
        assert killed, "no worker was killed"
        # the lost trial was rescheduled by Dask (not counted as a failure or a retry)
        assert (progress.total, progress.skipped, progress.done, progress.failed) == \
            (TRIALS, 0, TRIALS, 0)
        assert seen[0].done == 0 and seen[-1].done == TRIALS
        assert [p.done + p.failed for p in seen] == list(range(TRIALS + 1))
        cluster.client.wait_for_workers(2, timeout=30)  # the nanny restarted the killed one
        assert killed[0] not in cluster.client.run(os.getpid).values()
    finally:
        cluster.close()
    state = read_study(out)
    assert sorted(state.results) == sorted(t.id for t in study.trials)
    assert state.failed == {} and state.damaged == []
    assert {r["status"] for r in state.results.values()} == {"done"}
    assert killed[0] in {r["pid"] for r in state.results.values()}  # it had finished trials
    # the trial it was running ran again elsewhere, as the same first attempt
    assert state.results[lost[0]]["pid"] != killed[0]
    assert {r["attempts"] for r in state.results.values()} == {1}
    assert len({r["training"]["final_train_loss"] for r in state.results.values()}) == TRIALS
    assert not [p for p in (out / "trials").iterdir() if p.name.startswith(".")]
    before = results(out)

    code, stdout, stderr = run_cli(hwloop_command(study_file, out, "--workers", "2", "--json"),
                                   tmp_path / "logs", "rerun", 90)
    assert code == 0, stderr
    outcome = json.loads(stdout)
    assert (outcome["trials"], outcome["skipped"], outcome["done"], outcome["failed"],
            outcome["retried"]) == (TRIALS, TRIALS, 0, 0, 0)
    assert results(out) == before
    sessions = read_study(out).sessions
    assert len(sessions) == 2 and sessions[1]["skipped"] == TRIALS and sessions[1]["done"] == 0


# --- 2. an existing scheduler, one of its workers killed ---------------------------------------


@pytest.mark.deadline(180)
def test_external_scheduler_survives_a_killed_worker(study_file: Path, tmp_path: Path) -> None:
    from distributed import Client

    assert DASK.is_file(), f"{DASK}: the dask command comes with hwloop's dependencies"
    logs, out = tmp_path / "logs", tmp_path / "study"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []
    try:
        processes.append(start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port",
                                str(port), "--no-dashboard", "--dashboard-address",
                                "127.0.0.1:0"], logs, "scheduler"))
        workers = [start([str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard",
                          "--dashboard-address", "127.0.0.1:0", "--host", "127.0.0.1",
                          "--no-nanny"], logs, f"worker{index}") for index in range(2)]
        processes += workers
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=90)
            pids = client.run(os.getpid)
            assert sorted(pids.values()) == sorted(w.pid for w in workers)
            driver = start(hwloop_command(study_file, out, "--scheduler", address, "--json"),
                           logs, "run")
            processes.append(driver)
            wait_for(lambda: len(stored(out)) >= 1, 90, "first result", driver)
            victim = workers[0]
            lost = running_trial(client, next(a for a, p in pids.items() if p == victim.pid))
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            assert len(stored(out)) < TRIALS
        code, stdout, stderr = finish(driver, logs, "run", 120)
        assert code == 0, stderr
        outcome = json.loads(stdout)
        assert outcome["layout"]["scheduler"] == address and outcome["layout"]["workers"] == 2
        assert (outcome["skipped"], outcome["done"], outcome["failed"]) == (0, TRIALS, 0)
        state = read_study(out)
        assert len(state.results) == TRIALS and state.failed == {}
        assert {r["pid"] for r in state.results.values()} <= set(pids.values())
        assert state.results[lost]["pid"] == workers[1].pid
        assert {r["attempts"] for r in state.results.values()} == {1}
        assert workers[1].poll() is None
        before = results(out)

        code, stdout, stderr = run_cli(hwloop_command(study_file, out, "--scheduler", address,
                                                      "--json"), logs, "rerun", 60)
        assert code == 0, stderr
        outcome = json.loads(stdout)
        assert outcome["layout"]["workers"] == 1
        assert (outcome["skipped"], outcome["done"], outcome["failed"]) == (TRIALS, 0, 0)
        assert results(out) == before
    finally:
        for process in reversed(processes):
            kill_group(process)


# --- 3. the same figures wherever and however the study ran ------------------------------------


@pytest.mark.deadline(210)
def test_figures_are_bit_identical_across_workers_and_an_interrupted_resume(
        study_file: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    assert run_local(study_file, one, 1).done == TRIALS
    assert run_local(study_file, two, 2).done == TRIALS

    command = hwloop_command(study_file, resumed, "--workers", "2", "--json")
    driver = start(command, logs, "interrupted")
    try:
        wait_for(lambda: len(stored(resumed)) >= 2, 90, "two results", driver)
        driver.send_signal(signal.SIGINT)
        code, stdout, stderr = finish(driver, logs, "interrupted", 60)
        # the driver stops its workers before it exits
        wait_for(lambda: not group_alive(driver.pid), 15, "end of the driver's workers")
    finally:
        kill_group(driver)
    assert code == 130, stderr
    message = one_line_error(stderr)
    match = re.fullmatch(rf"error: interrupted by SIGINT; (\d+) of {TRIALS} trials are stored in "
                         rf"{re.escape(str(resumed))}; run the same command to continue", message)
    assert match, message
    kept = int(match.group(1))
    assert kept == len(stored(resumed)) and 2 <= kept < TRIALS
    assert not [p for p in (resumed / "trials").iterdir() if p.name.startswith(".")]
    assert stdout == ""

    code, stdout, stderr = run_cli(command, logs, "resume", 120)
    assert code == 0, stderr
    outcome = json.loads(stdout)
    assert (outcome["skipped"], outcome["done"], outcome["failed"]) == (kept, TRIALS - kept, 0)

    reference = figures(one)
    assert len(reference) == TRIALS
    assert len({json.dumps(f["evaluations"], sort_keys=True) for f in reference.values()}) == \
        TRIALS  # the trials differ, so equality below means something
    assert figures(two) == reference
    assert figures(resumed) == reference
    workers_used = {r["worker"] for r in read_study(two).results.values()}
    assert len(workers_used) == 2


# --- 4. a trial that raises --------------------------------------------------------------------


@pytest.mark.deadline(120)
def test_a_failing_trial_is_retried_then_recorded_while_the_rest_finish(
        study_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    overrides = ["study.replicates=1"]
    study = load_study(study_file, overrides)
    trials = [trial.id for trial in study.trials]
    assert len(trials) == 6 and study.settings.retries == 2
    fail = trials[2]
    runner = functools.partial(failing_runner, fail=fail)
    calls: list[tuple[int, int, int, int]] = []

    def session(cluster: Any, each: Callable[[dict[str, Any]], dict[str, Any]]) -> Progress:
        store = StudyStore(out, study)
        store.check()
        store.open()
        try:
            return run_study(study, store, cluster, runner=each, on_progress=lambda p: (
                calls.append((p.done, p.failed, p.retried, p.skipped))))
        finally:
            store.close()

    cluster = open_cluster(2, None, study.settings.threads)
    try:
        initial = session(cluster, runner)
        state, first = read_study(out), results(out)
        again = session(cluster, runner)
        fixed = session(cluster, run_trial)
    finally:
        cluster.close()

    assert (initial.total, initial.skipped, initial.done, initial.failed, initial.retried) == \
        (6, 0, 5, 1, 2)
    assert sorted(state.results) == sorted(t for t in trials if t != fail)
    assert state.failed[fail]["attempts"] == study.settings.retries + 1 == 3
    assert state.failed[fail]["error"] == \
        f"RuntimeError: injected failure of {fail} (second line)"
    assert {r["attempts"] for r in state.results.values()} == {1}
    assert state.status(fail) == "failed"

    # a re-run runs only the failed trial (and it fails again the same way)
    assert (again.total, again.skipped, again.done, again.failed, again.retried) == \
        (6, 5, 0, 1, 2)
    # with a runner that works, the failed trial is done and the rest untouched
    assert (fixed.total, fixed.skipped, fixed.done, fixed.failed, fixed.retried) == \
        (6, 5, 1, 0, 0)
    assert calls[:1] == [(0, 0, 0, 0)] and calls[-1] == (1, 0, 0, 5)
    final = read_study(out)
    assert len(final.results) == 6 and final.failed == {}
    assert final.results[fail]["attempts"] == 1
    assert {k: v for k, v in results(out).items() if k != fail} == first
    assert [s["failed"] for s in final.sessions] == [1, 1, 0]


# --- 5. a second driver on the same directory --------------------------------------------------


@pytest.mark.deadline(150)
def test_a_second_run_on_a_directory_in_use_is_refused(study_file: Path,
                                                       tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "study"
    command = hwloop_command(study_file, out, "epochs=2", "--workers", "1", "--json")
    first = start(command, logs, "first")
    try:
        # the first driver holds the lock from the moment it has written the plan; its 12
        # two-epoch trials on one worker take much longer than the second driver needs to be
        # refused (about 10 s: it starts its own local cluster before it opens --out)
        wait_for(lambda: (out / "index.json").is_file(), 90, "the first driver's index", first)
        started = time.monotonic()
        code, stdout, stderr = run_cli(command, logs, "second", 90)
        assert code == 2, stderr
        assert stdout == ""
        message = one_line_error(stderr)
        assert "in use" in message and str(out) in message
        assert first.poll() is None, "the first run ended before the second was refused"
        assert time.monotonic() - started < 60
        code, stdout, stderr = finish(first, logs, "first", 120)
    finally:
        kill_group(first)
    assert code == 0, stderr
    outcome = json.loads(stdout)
    assert (outcome["trials"], outcome["done"], outcome["failed"]) == (TRIALS, TRIALS, 0)
    state = read_study(out)
    assert len(state.results) == TRIALS and state.failed == {}
    assert len(state.sessions) == 1  # the refused run recorded nothing
    assert {r["attempts"] for r in state.results.values()} == {1}


# --- 6. an unreachable scheduler --------------------------------------------------------------


@pytest.mark.deadline(90)
def test_an_unreachable_scheduler_is_one_line_and_changes_nothing(
        study_file: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    study = load_study(study_file)
    store = StudyStore(existing, study)
    store.open()
    try:
        trial = study.trials[0].id
        store.save_done(trial, {"metrics": {"trial": trial, "evaluations": [], "training": {},
                                            "updates": {}},
                                "files": {"run.h5": b"not really hdf5"}}, 1)
    finally:
        store.close()
    before = snapshot(existing)
    assert "index.json" in before and f"trials/{trial}/result.json" in before
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    processes = []
    try:
        started = time.monotonic()
        for name, out in (("fresh", fresh), ("existing", existing)):
            processes.append(start(hwloop_command(study_file, out, "--scheduler", address,
                                                  "--json"), logs, name))
        outcomes = [finish(process, logs, name, 60)
                    for process, name in zip(processes, ("fresh", "existing"))]
        seconds = time.monotonic() - started
    finally:
        for process in processes:
            kill_group(process)
    for code, stdout, stderr in outcomes:
        assert code == 2, stderr
        assert stdout == ""
        message = one_line_error(stderr)
        assert message.startswith(f"error: cannot reach the Dask scheduler at {address}"), message
    assert seconds < 20, f"the refusal took {seconds:.1f} s"
    assert not fresh.exists()
    assert snapshot(existing) == before
