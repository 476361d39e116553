"""A run directory in use: checked before anything is written, locked, and cleaned up.

``RunDirectory.check`` refuses unusable ``--out`` paths (a file, a place it cannot write: it
creates and removes an empty directory to find out) before any training starts. ``acquire``
creates the directory if needed, takes an exclusive lock (``fcntl.flock`` on ``.hwloop.lock``;
the kernel releases it when the process dies, even by SIGKILL) so a second process cannot
train into the same directory, and removes temporary
files that a killed writer left behind. ``release(keep=False)`` removes a directory this
process created when the run never wrote anything into it (interrupted before its first
checkpoint).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from hwloop.atomic import remove_stale_temporaries
from hwloop.errors import UserError

LOCK_FILE = ".hwloop.lock"


class RunDirectory:
    """The output directory of one training run."""

    def __init__(self, path: str | Path) -> None:
        text = str(path)
        if not text.strip() or "\0" in text:
            raise UserError(f"--out {text!r} is not a usable directory name")
        self.path = Path(path)
        self.created: Path | None = None  # the topmost directory this process created
        self._lock: int | None = None

    def check(self) -> None:
        """Refuse a path that cannot become a writable directory (UserError); writes nothing."""
        existing = self.path
        while not existing.exists():
            if existing.is_symlink():
                raise UserError(f"--out {self.path}: {existing} is a broken symbolic link")
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            where = "is" if existing == self.path else f"lies inside {existing}, which is"
            raise UserError(f"--out {self.path} {where} a file, not a directory; choose a "
                            "directory path")
        try:  # a probe that works for every user, root and read-only file systems included
            os.rmdir(tempfile.mkdtemp(prefix=".hwloop-probe-", dir=existing))
        except OSError as error:
            raise UserError(f"--out {self.path}: cannot write in {existing} ({error.strerror});"
                            " choose a directory you can write to") from None

    def acquire(self) -> None:
        """Create the directory (and parents), lock it, remove stale temporary files."""
        self.check()
        self.created = None
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        for path in reversed(missing):  # top-down; another process may create some first
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                raise UserError(f"--out {self.path}: cannot create it ({error.strerror})") \
                    from None
            self.created = self.created or path  # only what this process really created
        handle = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            self._forget_created()
            raise self._in_use() from None
        self._lock = handle
        remove_stale_temporaries(self.path)

    def check_free(self) -> None:
        """Refuse (UserError) if another process holds the directory's lock; changes nothing."""
        if self._lock is not None:  # this process holds it
            return
        try:
            handle = os.open(self.path / LOCK_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use() from None
        finally:
            os.close(handle)  # closing releases a lock taken here

    def _in_use(self) -> UserError:
        return UserError(f"{self.path} is in use by another hwloop process; wait for it to "
                         "finish or choose another --out")

    def release(self, keep: bool = True) -> None:
        """Unlock; with ``keep=False`` also remove the directory if this process created it."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if not keep:
            self._forget_created()

    def _forget_created(self) -> None:
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            self.created = None
