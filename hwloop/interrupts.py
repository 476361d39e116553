"""Stop a run cleanly on Ctrl-C (SIGINT) and SIGTERM.

Inside ``stop_on_signals()`` either signal raises ``Interrupted`` in the main thread, at
whatever the run is doing, except inside ``critical()`` sections (writing the run file): there
the signal is remembered and raised when the section ends, so a checkpoint is either written
whole or not started. The exit status of an interrupted command is 128 + the signal number
(130 for SIGINT, 143 for SIGTERM), as shells report it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run was stopped by a signal; ``exit_status`` is 128 + its number, ``message`` says
    what was kept (set by the code that knows it). A KeyboardInterrupt, so that no
    ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)
        self.exit_status = 128 + signum
        self.message = f"interrupted by {self.signal_name}; nothing was written"


class _State:
    depth = 0  # nesting of critical sections
    pending: int | None = None  # a signal that arrived inside one


def _handler(signum: int, frame: Any) -> None:
    if _State.depth:
        _State.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` for the duration (main thread only; a
    no-op elsewhere, where Python cannot install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handler) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _State.pending = None


@contextmanager
def critical() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until the block has finished (then raise ``Interrupted``)."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)
