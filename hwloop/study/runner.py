"""Running a study on Dask distributed: a local cluster, or an existing scheduler.

``open_cluster`` starts a ``LocalCluster`` on 127.0.0.1 (``workers`` processes with one Dask
thread each, dashboard off unless asked) or connects to a scheduler address, and checks the
thread layout: on every host, the Dask threads of its workers times the torch threads of a
trial (``[study] threads``) must not exceed the cores there, because torch slows several-fold
when its threads outnumber the cores (hwloop.threads). ``run_study`` then submits every
unfinished trial as one task, stores each result as it arrives, resubmits a trial that
raised (up to ``[study] retries`` times) and records it as failed after that, while the
rest go on. A task whose worker died is rescheduled by Dask itself; after Dask's own limit
(``distributed.scheduler.allowed-failures``) it fails like any other error.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from hwloop.errors import RunError, UserError
from hwloop.runs import now_iso
from hwloop.study.spec import Study
from hwloop.study.store import StudyStore
from hwloop.study.trial import TrialRunner, run_trial
from hwloop.threads import available_cores

CONNECT_TIMEOUT = 5.0
"""Seconds to reach a scheduler before the study is refused."""
WORKER_WAIT = 30.0
"""Seconds to wait for a scheduler's first worker."""
_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://\S+$|^[A-Za-z0-9.\-\[\]:]+:\d+$")


@dataclass
class ThreadLayout:
    """How a study session used the CPUs.

    Attributes:
        scheduler: ``local`` or the scheduler's address.
        workers: worker processes; dask_threads: trials each worker runs at once (summed over
            workers); torch_threads: torch threads of each trial.
        hosts: per host: ``cores``, ``workers`` and ``dask_threads``.
        dashboard: the dashboard's address, or None.
    """

    scheduler: str
    workers: int
    dask_threads: int
    torch_threads: int
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    dashboard: str | None = None


@dataclass
class Cluster:
    """A Dask client and, for a local cluster, the cluster it started (closed by ``close``)."""

    client: Any
    local: Any
    layout: ThreadLayout

    def close(self) -> None:
        """Stop the client and any local cluster with its worker processes."""
        try:
            self.client.close(timeout=10)
        finally:
            if self.local is not None:
                self.local.close(timeout=10)


def check_cluster_options(workers: int | None, scheduler: str | None, threads: int,
                          dashboard: bool) -> None:
    """Refuse contradictory or impossible options before anything starts (UserError)."""
    if workers is not None and scheduler is not None:
        raise UserError("--workers starts a local cluster and --scheduler uses an existing one;"
                        " give one of them")
    if scheduler is not None and not _ADDRESS.match(scheduler):
        raise UserError(f"--scheduler {scheduler!r} is not an address; give "
                        "tcp://HOST:PORT (what `dask scheduler` prints)")
    if workers is not None:
        cores = available_cores()
        if isinstance(workers, bool) or workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        if workers * threads > cores:
            raise UserError(f"--workers {workers} × {threads} torch thread(s) per trial exceeds "
                            f"the {cores} cores this process may use; use --workers "
                            f"{max(1, cores // threads)} or fewer")
    if dashboard:
        try:
            import bokeh  # noqa: F401
        except ImportError:
            raise UserError("--dashboard needs bokeh: pip install 'bokeh>=3.1'") from None


def open_cluster(workers: int | None, scheduler: str | None, threads: int,
                 dashboard: bool = False) -> Cluster:
    """Start a local cluster (default: cores // threads workers) or connect to ``scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    check_cluster_options(workers, scheduler, threads, dashboard)
    if scheduler is None:
        count = workers or max(1, available_cores() // threads)
        with dask.config.set({"distributed.worker.daemon": False,
                              "distributed.admin.tick.limit": "30s"}), _workers_ignore_ctrl_c():
            local = LocalCluster(
                n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                # the scheduler always serves HTTP (health, metrics): on a free loopback port
                dashboard_address="127.0.0.1:0", silence_logs=50,
                protocol="tcp",
            )
        try:
            client = Client(local, set_as_default=False)
        except BaseException:
            local.close()
            raise
        layout = ThreadLayout(scheduler="local", workers=count, dask_threads=count,
                              torch_threads=threads,
                              hosts={socket.gethostname(): {"cores": available_cores(),
                                                            "workers": count,
                                                            "dask_threads": count}},
                              dashboard=local.dashboard_link if dashboard else None)
        return Cluster(client=client, local=local, layout=layout)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({_one_line(error)}); "
                        "start one with `dask scheduler` or check the address") from None
    cluster = Cluster(client=client, local=None, layout=ThreadLayout(scheduler, 0, 0, threads))
    try:
        cluster.layout = _remote_layout(client, scheduler, threads)
    except BaseException:
        cluster.close()
        raise
    return cluster


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (they inherit it), so Ctrl-C in a terminal
    reaches only the driver, which then stops them in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _remote_layout(client: Any, scheduler: str, threads: int) -> ThreadLayout:
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except TimeoutError:
        raise UserError(f"the Dask scheduler at {scheduler} has no workers; start some with "
                        f"`dask worker {scheduler} --nthreads 1`") from None
    cores = client.run(available_cores)  # by worker address
    info = {address: worker for address, worker
            in client.scheduler_info(n_workers=-1)["workers"].items() if address in cores}
    hosts: dict[str, dict[str, int]] = {}
    for address, worker in info.items():
        host = hosts.setdefault(worker["host"], {"cores": cores[address], "workers": 0,
                                                 "dask_threads": 0})
        host["cores"] = min(host["cores"], cores[address])  # the most constrained worker
        host["workers"] += 1
        host["dask_threads"] += worker["nthreads"]
    for name, host in hosts.items():
        if host["dask_threads"] * threads > host["cores"]:
            raise UserError(
                f"host {name} runs {host['dask_threads']} Dask threads × {threads} torch "
                f"thread(s) per trial on {host['cores']} cores; start its workers with fewer "
                "--nthreads (e.g. `dask worker ADDRESS --nthreads 1 --nworkers "
                f"{max(1, host['cores'] // threads)}`) or lower [study] threads")
    return ThreadLayout(scheduler=scheduler, workers=len(info),
                        dask_threads=sum(h["dask_threads"] for h in hosts.values()),
                        torch_threads=threads, hosts=hosts,
                        dashboard=_dashboard(client))


def _dashboard(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):
        return None


@dataclass
class Progress:
    """What a study session has done so far (passed to ``on_progress``)."""

    total: int
    skipped: int
    done: int = 0
    failed: int = 0
    retried: int = 0
    last: str | None = None


def run_study(
    study: Study,
    store: StudyStore,
    cluster: Cluster,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    runner: TrialRunner = run_trial,
) -> Progress:
    """Run every trial of ``study`` not yet finished in ``store`` (opened) on ``cluster``.

    Returns the session's counts. Ctrl-C (KeyboardInterrupt) cancels what is still queued;
    finished trials stay stored, and running the study again continues from them.
    """
    from distributed import as_completed

    assert store.state is not None
    pending = [trial for trial in study.trials if trial.id not in store.state.results]
    progress = Progress(total=len(study.trials), skipped=len(study.trials) - len(pending))
    session = store.add_session({"started": now_iso(), "layout": asdict(cluster.layout),
                                 "trials": len(study.trials), "skipped": progress.skipped})
    if on_progress is not None:
        on_progress(progress)
    token = secrets.token_hex(4)
    attempts: dict[str, int] = {}
    trials = {trial.id: trial for trial in pending}

    def submit(trial_id: str) -> Any:
        attempts[trial_id] = attempts.get(trial_id, 0) + 1
        payload = {**trials[trial_id].to_dict(), "threads": study.settings.threads}
        return cluster.client.submit(runner, payload, pure=False,
                                     key=f"hwloop-trial-{token}-{trial_id}-{attempts[trial_id]}")

    futures = {submit(trial_id): trial_id for trial_id in trials}
    queue = as_completed(list(futures), loop=cluster.client.loop)
    started = time.monotonic()

    def close_session() -> None:
        for future in futures:
            future.cancel()
        store.update_session(session, finished=now_iso(), done=progress.done,
                             failed=progress.failed, retried=progress.retried,
                             seconds=time.monotonic() - started)

    try:
        for future in queue:
            trial_id = futures.pop(future)
            if future.status == "finished":
                result = future.result()
                future.release()
                store.save_done(trial_id, result, attempts[trial_id])
                progress.done += 1
            else:
                error = _one_line(future.exception())
                future.release()
                if attempts[trial_id] <= study.settings.retries:
                    retry = submit(trial_id)
                    futures[retry] = trial_id
                    queue.add(retry)
                    progress.retried += 1
                else:
                    store.save_failed(trial_id, error, attempts[trial_id])
                    progress.failed += 1
            progress.last = trial_id
            if on_progress is not None:
                on_progress(progress)
    except BaseException:
        with contextlib.suppress(RunError):  # a full disk: the first error says it
            close_session()
        raise
    close_session()
    return progress


def _one_line(error: BaseException | None) -> str:
    """``Type: message`` on one line (at most 300 characters)."""
    if error is None:
        return "unknown error"
    name = type(error).__name__
    if name == "KilledWorker":
        return ("KilledWorker: the worker running it died too often (killed, or out of "
                "memory)")
    text = " ".join(str(error).split()) or "(no message)"
    return f"{name}: {text}"[:300]
