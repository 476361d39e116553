"""Slowdown of a HYPR training step when one other busy process shares the machine.

    python -m benchmarks.sharing      # about 3 minutes on 2 cores

One training step of HYPR (λ = 10) on the cue task with T = 400 steps, one recurrent BRF layer
of 256 neurons, batch 32, on the CPU. Each setting runs in its own fresh worker process
(``python -m benchmarks.sharing --worker KIND``), because OpenMP reads its environment
(GOMP_SPINCOUNT, OMP_WAIT_POLICY) once, when torch is imported:

- ``torch defaults``: torch imported before hwloop, so that hwloop's OpenMP default comes too
  late, and torch's own thread count (one per core), as in a session that imported torch first.
- ``hwloop``: hwloop imported first and ``configure_threads()`` called, as ``hwloop train``
  does; ``hwloop --threads 1`` the same with ``configure_threads(1)``.

The workers run without the caller's thread variables (THREAD_VARIABLES). They build their
trainers, train one warm-up epoch, then wait for orders. In each of ROUNDS rounds every setting
trains one epoch idle and one epoch while a competing process (a pure-Python busy loop, one
core) runs, so that a slow spell of the machine hits all settings and both loads alike. Step
times are medians over all rounds; loaded/idle is the slowdown. Fair would be a share of one
core of two, about the step time of one thread; the target for hwloop is at most 2.5×. The
competing process and the workers are stopped on exit, error, Ctrl-C and SIGTERM, and stop by
themselves if this process dies. Writes benchmarks/results/sharing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from statistics import median
from typing import Any

RESULTS = Path(__file__).parent / "results"
SETTINGS: dict[str, list[str]] = {  # name → worker arguments
    "torch defaults": ["torch"],
    "hwloop": ["hwloop"],
    "hwloop --threads 1": ["hwloop", "--threads", "1"],
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
ROUNDS = 6
STEPS_PER_EPOCH = 4
TARGET = 2.5  # hwloop's loaded/idle step time, at most
BUSY_LOOP = (  # spins on one core until it is killed or its parent is gone
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(1_000_000):\n"
    "        pass\n"
)


def worker(kind: str, threads: int | None) -> None:
    """Build a trainer (``kind``: torch or hwloop, see the module docstring), train a warm-up
    epoch and report the thread count and GOMP_SPINCOUNT (a JSON object); then train one epoch
    per line read from stdin, answering each with a JSON list of its step times (s). Stops at
    the end of stdin."""
    if kind == "hwloop":
        import hwloop  # noqa: F401  (first, so that it sets its OpenMP defaults)
    spin_count = os.environ.get("GOMP_SPINCOUNT", "default")  # as OpenMP reads it, next line
    import torch

    from hwloop import Trainer, build_config, make_task
    from hwloop.threads import configure_threads

    if kind == "hwloop":
        configure_threads(threads)
    # 40 samples per step: 32 (a batch) to train on, 8 to test on
    overrides = ["task_options.steps=400", f"task_options.num_samples={40 * STEPS_PER_EPOCH}",
                 "task_options.test_fraction=0.2", "hidden=[256]"]
    config = build_config(None, overrides, task="cue", neuron="brf", learner="hypr", lam=10,
                          batch_size=32, seed=0)
    trainer = Trainer(config, make_task(config.task, config.task_options, config.seed))
    trainer.train_epoch()  # warm-up
    print(json.dumps({"threads": torch.get_num_threads(), "GOMP_SPINCOUNT": spin_count}),
          flush=True)
    for _ in sys.stdin:
        seconds: list[float] = []
        trainer.train_epoch(lambda metrics: seconds.append(metrics.seconds))
        print(json.dumps(seconds), flush=True)


@contextmanager
def child_process(command: list[str], env: dict[str, str] | None = None
                  ) -> Iterator[subprocess.Popen]:
    """``command`` running as a child process (pipes to its stdin and stdout) for the block;
    killed afterwards, however the block ends."""
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def answer(child: subprocess.Popen) -> Any:
    """The next JSON line a worker prints."""
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"a worker stopped with exit status {child.wait()}")
    return json.loads(line)


def epoch_seconds(child: subprocess.Popen) -> list[float]:
    """Step times (s) of one epoch trained by a ready worker."""
    assert child.stdin is not None
    child.stdin.write("epoch\n")
    child.stdin.flush()
    return answer(child)


def measure(settings: dict[str, list[str]], rounds: int) -> dict[str, dict[str, Any]]:
    """Per setting: the worker's report (threads, GOMP_SPINCOUNT) and the median step times
    (s) ``idle`` and ``loaded`` (one competing busy process), measured in alternation over
    ``rounds`` rounds. The workers run without the user's THREAD_VARIABLES: torch and hwloop
    as installed."""
    env = {name: value for name, value in os.environ.items() if name not in THREAD_VARIABLES}
    with ExitStack() as stack:
        workers = {
            name: stack.enter_context(child_process(
                [sys.executable, "-m", "benchmarks.sharing", "--worker", *arguments], env))
            for name, arguments in settings.items()
        }
        reports = {name: answer(child) for name, child in workers.items()}
        seconds: dict[str, dict[str, list[float]]] = {
            name: {"idle": [], "loaded": []} for name in settings}
        for _ in range(rounds):
            for name, child in workers.items():
                seconds[name]["idle"] += epoch_seconds(child)
                with child_process([sys.executable, "-c", BUSY_LOOP]):
                    time.sleep(0.5)  # the busy loop is running
                    seconds[name]["loaded"] += epoch_seconds(child)
    return {name: {**reports[name], **{load: median(values) for load, values in loads.items()}}
            for name, loads in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["torch", "hwloop"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the children on SIGTERM too
    load = os.getloadavg()[0]
    results = measure(SETTINGS, ROUNDS)
    for row in results.values():
        row["ratio"] = row["loaded"] / row["idle"]
    met = results["hwloop"]["ratio"] <= TARGET
    print(f"HYPR training step (cue, T = 400, 256 BRF, batch 32, λ = 10), "
          f"{len(os.sched_getaffinity(0))} cores, 1-minute load average before the run {load:.2f}")
    print(f"{'setting':<20}{'threads':>8}{'GOMP_SPINCOUNT':>16}{'idle s':>9}{'loaded s':>10}"
          f"{'× idle':>8}")
    for name, row in results.items():
        print(f"{name:<20}{row['threads']:>8}{row['GOMP_SPINCOUNT']:>16}{row['idle']:>9.3f}"
              f"{row['loaded']:>10.3f}{row['ratio']:>8.2f}")
    print(f"target: hwloop loaded ≤ {TARGET}× idle: {'met' if met else 'NOT MET'}")
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1min": load,
        "rounds": ROUNDS,
        "steps_per_epoch": STEPS_PER_EPOCH,
        "step_s": results,
        "target_ratio": TARGET,
        "target_met": met,
    }
    (RESULTS / "sharing.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
