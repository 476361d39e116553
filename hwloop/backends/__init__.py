"""Device backends, found by name through the ``hwloop.backends`` entry-point group.

A third party adds a backend by declaring, in its own package metadata::

    [options.entry_points]
    hwloop.backends =
        mychip = mypackage.backend:MyChipBackend

Backends are opened from a spec string: a name, optionally with options in URL-query form,
e.g. ``pcm``, ``pcm://?bits=4&seed=1`` or ``ideal://``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hwloop.backends.base import Backend, Capabilities, DeviceRun, WriteReport
from hwloop.backends.ideal import IdealBackend
from hwloop.errors import UserError

ENTRY_POINT_GROUP = "hwloop.backends"

__all__ = [
    "Backend",
    "Capabilities",
    "IdealBackend",
    "DeviceRun",
    "WriteReport",
    "available_backends",
    "open_backend",
    "parse_backend_spec",
]


def available_backends() -> dict[str, type[Backend]]:
    """Name → backend class for every installed backend (``ideal`` is always there)."""
    found: dict[str, type[Backend]] = {"ideal": IdealBackend}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found


def parse_backend_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name://?key=value&...`` → (name, options); values parsed as int, float,
    true/false, or kept as strings."""
    if "://" not in spec:
        return spec, {}
    parts = urlsplit(spec)
    if parts.netloc or parts.path:
        raise UserError(f"backend spec {spec!r} must look like name://?key=value&key=value")
    return parts.scheme, {key: _parse_value(value) for key, value in parse_qsl(parts.query)}


def open_backend(spec: str, **options: Any) -> Backend:
    """Instantiate the backend named in ``spec`` with its query options and ``options``."""
    name, query = parse_backend_spec(spec)
    backends = available_backends()
    if name not in backends:
        raise UserError(f"unknown backend {name!r} (installed: {', '.join(sorted(backends))})")
    try:
        return backends[name](**{**query, **options})
    except (TypeError, ValueError) as error:
        raise UserError(f"backend {name!r}: {error}") from None


def _parse_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
