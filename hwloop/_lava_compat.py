"""Make lava-nc 0.10.0 importable on Python 3.11 without editing its installed files.

lava-nc 0.10.0 is pure Python but two of its modules fail on 3.11 or in multi-process hosts:

* ``lava.magma.compiler.var_model`` declares dataclass fields whose default is a mutable
  instance (``x: ByteEncoder = ByteEncoder()``), which Python 3.11 rejects at import time.
  We rewrite each such default to ``dataclasses.field(default_factory=ByteEncoder)``.
* ``lava.magma.runtime.message_infrastructure.multiprocessing`` calls
  ``multiprocessing.set_start_method('fork')``, which raises when a start method was already
  chosen (e.g. inside a Dask worker). We make the call set ``fork`` only when none is set.

The rewrite happens in an import hook, as the module's source is loaded. If the expected
pattern is missing (another lava version), the import fails loudly instead of running
unpatched code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import re
import sys
from types import ModuleType
from typing import Callable, Sequence

_MUTABLE_DEFAULT = re.compile(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)$", re.MULTILINE)
_FORK_CALL = "    mp.set_start_method('fork')"
_TOLERANT_FORK_CALL = (
    "    if mp.get_start_method(allow_none=True) is None:\n"
    "        mp.set_start_method('fork')"
)


def _patch_var_model(source: str) -> str:
    patched, count = _MUTABLE_DEFAULT.subn(
        r"\1 = __import__('dataclasses').field(default_factory=ByteEncoder)", source
    )
    if count != 8:
        raise ImportError(
            f"hwloop's lava-nc fix expected 8 mutable ByteEncoder defaults in "
            f"lava.magma.compiler.var_model, found {count}: install lava-nc==0.10.0"
        )
    return patched


def _patch_multiprocessing(source: str) -> str:
    if _FORK_CALL not in source:
        raise ImportError(
            "hwloop's lava-nc fix did not find set_start_method('fork') in "
            "lava.magma.runtime.message_infrastructure.multiprocessing: install lava-nc==0.10.0"
        )
    return source.replace(_FORK_CALL, _TOLERANT_FORK_CALL, 1)


PATCHES: dict[str, Callable[[str], str]] = {
    "lava.magma.compiler.var_model": _patch_var_model,
    "lava.magma.runtime.message_infrastructure.multiprocessing": _patch_multiprocessing,
}


class _PatchingLoader(importlib.machinery.SourceFileLoader):
    """Loads a module's source, applies its patch, and compiles the result (no bytecode cache)."""

    def get_code(self, fullname: str):  # type: ignore[override]
        source = self.get_data(self.path).decode("utf-8")
        return compile(PATCHES[fullname](source), self.path, "exec", dont_inherit=True)


class _LavaPatchFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchingLoader(fullname, spec.origin)
        return spec


def install() -> None:
    """Install the import hook once; call before anything imports lava."""
    if not any(isinstance(finder, _LavaPatchFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LavaPatchFinder())
