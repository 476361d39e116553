"""How many CPU threads torch uses: the cores this process may run on, or ``--threads``.

``os.cpu_count()`` counts the machine's cores, but a process pinned to fewer (taskset, a
container's cpuset, a batch scheduler) that starts one thread per machine core oversubscribes
its cores and slows down many times over. hwloop counts the cores it may use
(``os.sched_getaffinity``).
"""

from __future__ import annotations

import os

import torch

from hwloop.errors import UserError

MAX_THREADS = 1024


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to ``threads`` (default: ``available_cores()``);
    returns the count set."""
    if threads is None:
        threads = available_cores()
    if isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise UserError(f"threads must lie in 1..{MAX_THREADS}, got {threads}")
    torch.set_num_threads(threads)
    return threads
