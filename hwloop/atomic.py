"""Atomic file writes: a file appears whole or not at all, with the user's umask.

The content is written to a temporary file beside the target, which then replaces the target
(``os.replace``). The temporary file is created with mode 0o666 minus the umask, like any file
the user creates (``tempfile.mkstemp`` would make it 0600), and it is removed on every error,
Ctrl-C included. A process killed with SIGKILL can leave one behind; its name starts with
``.`` and contains ``.tmp-``, and ``remove_stale_temporaries`` clears them.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from hwloop.errors import RunError

TEMPORARY_MARK = ".tmp-"


def temporary_path(target: Path) -> Path:
    """A new, empty file beside ``target`` (created exclusively, mode 0o666 & ~umask)."""
    while True:
        candidate = target.with_name(f".{target.name}{TEMPORARY_MARK}{secrets.token_hex(4)}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue


def atomic_write(target: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``target``, flush it to the disk, then move
    it onto ``target``.

    The content is prepared in memory by the caller, so a write can only fail here, in plain
    file I/O (HDF5 writing straight to a full disk leaves its library in a state that crashes
    the interpreter). On any error the temporary file is removed and ``target`` is left as
    it was, and RunError says why (a full disk or a file-size limit, no permission, ...).
    """
    target = Path(target)
    temporary = temporary_path(target)
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        if _is_out_of_space(error):
            raise RunError(f"no space left to write {target} ({error.strerror}), which keeps "
                           "its previous content; free some space") from None
        raise RunError(f"cannot write {target} ({error.strerror or error}); it keeps its "
                       "previous content") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    return target


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directory``; returns them."""
    removed = []
    for path in Path(directory).glob(f".*{TEMPORARY_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _is_out_of_space(error: OSError) -> bool:
    """Whether ``error`` means the disk, a quota or a file-size limit is full."""
    return error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
