"""How torch uses the CPU: how many threads, and how they wait.

Threads. ``os.cpu_count()`` counts the machine's cores, but a process pinned to fewer (taskset,
a container's cpuset, a batch scheduler) that starts one thread per machine core oversubscribes
its cores and slows down many times over. hwloop counts the cores it may use
(``os.sched_getaffinity``), or takes ``--threads``.

Waiting. torch's CPU threads are GNU OpenMP's (libgomp). Between two parallel operations, and
at the end of each, a thread that has nothing to do spins for ``GOMP_SPINCOUNT`` iterations
(300,000 by default, a few milliseconds) before it sleeps. On an idle machine that saves
wake-ups. When another busy process shares the cores, the spinning threads take CPU time from
the thread that has work, and a step waits for a scheduler time slice again and again. On the
2-core development machine, one competing busy process slowed a HYPR training step 3.1-3.7×
with the default (0.70 s → 2.49 s) and 1.8-2.2× with ``GOMP_SPINCOUNT=1000`` (0.75 s →
1.62 s). Idle, 1,000 and the default were equally fast within that machine's noise (medians of
36 steps: 0.698 s and 0.705 s). Shorter spins (0-200, or ``OMP_WAIT_POLICY=PASSIVE``) made the
idle step 1.4-1.8× slower, because every short wait became a sleep and a wake-up. Spins of
2,000 and more brought the slowdown back (2.9-3.5×). Figures: ``python -m benchmarks.sharing``
and docs/benchmarks.md.

So hwloop sets ``GOMP_SPINCOUNT=1000`` when the package is imported, unless the environment
already sets ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` (the user's choice wins). OpenMP reads
its environment once, when torch is imported, so this takes effect for ``hwloop`` commands
and for Python sessions that import hwloop before torch, not for a session that imported
torch first (set the variable in its environment instead). Other OpenMP runtimes (Intel's, in
some builds of torch) ignore the variable.

``hwloop/__init__.py`` imports this module before anything imports torch, so torch is imported
only inside ``configure_threads``.
"""

from __future__ import annotations

import os

from hwloop.errors import UserError

MAX_THREADS = 1024
SPIN_COUNT = "1000"  # GOMP_SPINCOUNT hwloop sets: iterations an idle OpenMP thread spins


def set_openmp_defaults() -> None:
    """Set ``GOMP_SPINCOUNT`` to ``SPIN_COUNT`` unless the environment sets it or
    ``OMP_WAIT_POLICY``; takes effect only if torch has not been imported yet."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to ``threads`` (default: ``available_cores()``);
    returns the count set."""
    import torch

    if threads is None:
        threads = available_cores()
    if isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise UserError(f"threads must lie in 1..{MAX_THREADS}, got {threads}")
    torch.set_num_threads(threads)
    return threads
