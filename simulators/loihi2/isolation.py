"""Run a function in a child process that cannot hang its caller.

Lava runs every process model in a forked OS process, and a crashed model can leave its parent
blocked forever (spec §5.3). ``call_isolated`` runs a function in a fresh ("spawn") child that
leads its own process group; on a timeout, an error or Ctrl-C the whole group (the child and
every process Lava forked from it) is killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any, Callable


class IsolatedError(RuntimeError):
    """The function failed in its child process, timed out, or the child died."""


def call_isolated(function: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """``function(*args)`` computed in a child process; its result must be picklable.

    Raises:
        IsolatedError: the child raised (its error is named), died, or took longer than
            ``timeout`` seconds; the child's process group is killed in every case.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=run_child, args=(sender, function, args))  # not a daemon:
    # daemonic processes may not start children, and Lava starts several
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise IsolatedError(f"{function.__name__} took longer than {timeout:g} s (or its "
                                "process died); stopped it")
        succeeded, value = receiver.recv()
    except EOFError:
        raise IsolatedError(f"the process running {function.__name__} died") from None
    finally:
        kill_group(child.pid)
        child.kill()  # also before it led its group (still importing, say)
        child.join(timeout=5)
        receiver.close()
    if not succeeded:
        raise IsolatedError(f"{function.__name__} failed: {value}")
    return value


def run_child(sender: Connection, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.setsid()  # lead a process group: whatever this child forks can be killed with it
    multiprocessing.set_start_method("fork", force=True)  # Lava's runtime forks its models
    try:
        sender.send((True, function(*args)))
    except BaseException as error:  # reported to the parent, which raises IsolatedError
        sender.send((False, f"{type(error).__name__}: {error}"))
    finally:
        sender.close()


def kill_group(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
