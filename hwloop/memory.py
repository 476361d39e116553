"""Refuse work that cannot fit in this machine's memory, before allocating it.

An allocation far beyond the physical memory does not fail cleanly: the kernel's out-of-memory
killer ends the process (no message), or the machine swaps for hours. hwloop estimates the
large arrays of a run (the task's data, the network's training state) and refuses a
configuration whose estimate exceeds the physical memory, with a one-line UserError.
"""

from __future__ import annotations

import os

from hwloop.errors import UserError

GIB = 2**30


def physical_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(needed: int, what: str, fix: str) -> None:
    """UserError when ``needed`` bytes exceed the physical memory: "{what} needs about X GiB of
    memory, more than this machine's Y GiB; {fix}"."""
    available = physical_memory()
    if needed > available:
        amount = f"about {needed / GIB:.1f} GiB" if needed < 2**1000 else "beyond any count of GiB"
        raise UserError(f"{what} needs {amount} of memory, more than this machine's "
                        f"{available / GIB:.1f} GiB; {fix}")
