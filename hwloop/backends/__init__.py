"""Device backends, found by name through the ``hwloop.backends`` entry-point group.

A third party adds a backend by declaring, in its own package metadata::

    [options.entry_points]
    hwloop.backends =
        mychip = mypackage.backend:MyChipBackend

Backends are opened from a spec string: a name, optionally with options in URL-query form,
e.g. ``pcm``, ``pcm://?bits=4&seed=1`` or ``ideal://``. Every option is checked against the
type annotation of the backend class's ``__init__`` (docs/backends.md). An entry point that
fails to load is reported by ``broken_backends`` and does not hide the others.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import asdict
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl

from hwloop.backends.base import Backend, Capabilities, DeviceRun, NeuronGroup, WriteReport
from hwloop.backends.ideal import IdealBackend
from hwloop.errors import UserError
from hwloop.options import convert_value

ENTRY_POINT_GROUP = "hwloop.backends"

__all__ = [
    "Backend",
    "Capabilities",
    "IdealBackend",
    "DeviceRun",
    "NeuronGroup",
    "WriteReport",
    "available_backends",
    "backend_listing",
    "broken_backends",
    "open_backend",
    "parse_backend_spec",
]


def available_backends() -> dict[str, type[Backend]]:
    """Name → backend class for every installed backend that loads (``ideal`` is always
    there)."""
    return _load_backends()[0]


def broken_backends() -> dict[str, str]:
    """Name → one-line error for every installed backend whose entry point fails to load or
    does not name a Backend subclass."""
    return _load_backends()[1]


def backend_listing() -> list[dict[str, Any]]:
    """Every installed backend, sorted by name: its default capabilities as a dict
    (``dataclasses.asdict``) plus ``"broken": None``, or ``{"name": ..., "broken": error}``
    for one that fails to load or to open with its default options."""
    loaded, broken = _load_backends()
    listing: dict[str, dict[str, Any]] = {
        name: {"name": name, "broken": error} for name, error in broken.items()
    }
    for name in loaded:
        try:
            listing[name] = {**asdict(open_backend(name).capabilities()), "broken": None}
        except Exception as error:  # a plugin's failure is listed, not raised
            listing[name] = {"name": name, "broken": _one_line(error)}
    return [listing[name] for name in sorted(listing)]


def parse_backend_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name://?key=value&...`` → (name, options); values parsed as int, float,
    true/false, or kept as strings. A malformed spec, an empty name or a key given twice
    raises UserError."""
    if not isinstance(spec, str):
        raise UserError(f"a backend spec must be a string, got {spec!r}")
    name, separator, rest = spec.partition("://")
    if not name:
        raise UserError(f"backend spec {spec!r} names no backend (give name or "
                        "name://?key=value&key=value)")
    if not separator:
        return name, {}
    if rest and not rest.startswith("?"):
        raise UserError(f"backend spec {spec!r} must look like name://?key=value&key=value")
    try:
        pairs = parse_qsl(rest[1:], keep_blank_values=True, strict_parsing=True)
    except ValueError as error:
        raise UserError(f"backend spec {spec!r} must look like name://?key=value&key=value "
                        f"({error})") from None
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key in options:
            raise UserError(f"backend spec {spec!r} gives option {key!r} twice")
        options[key] = _parse_value(value)
    return name, options


def open_backend(spec: str, **options: Any) -> Backend:
    """Instantiate the backend named in ``spec`` with its query options and ``options``.

    Every option is converted against the annotation of the backend's ``__init__``
    (``hwloop.options.convert_value``); unknown options, an option given both in the spec and
    in ``options`` with different values, and the backend's own ValueErrors raise a one-line
    UserError that names the backend.
    """
    name, query = parse_backend_spec(spec)
    loaded, broken = _load_backends()
    if name in broken:
        raise UserError(f"backend {name!r} is installed but broken: {broken[name]}")
    if name not in loaded:
        raise UserError(f"unknown backend {name!r} (installed: {', '.join(sorted(loaded))})")
    backend = loaded[name]
    types, open_ended = _option_types(backend)
    converted = {
        key: _convert(name, types, open_ended, key, value) for key, value in query.items()
    }
    for key, value in options.items():
        value = _convert(name, types, open_ended, key, value)
        if key in converted and converted[key] != value:
            raise UserError(f"backend {name!r}: option {key!r} is {converted[key]!r} in the spec "
                            f"but {value!r} as an option")
        converted[key] = value
    try:
        return backend(**converted)
    except (TypeError, ValueError) as error:
        raise UserError(f"backend {name!r}: {_one_line(error, with_type=False)}") from None


def _load_backends() -> tuple[dict[str, type[Backend]], dict[str, str]]:
    """(name → class of every backend that loads, name → error of every one that does not).
    A name that loads from one of its entry points counts as loaded."""
    loaded: dict[str, type[Backend]] = {"ideal": IdealBackend}
    broken: dict[str, str] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = entry.load()
        except Exception as error:  # a broken plugin must not hide the others
            broken[entry.name] = _one_line(error)
            continue
        if isinstance(found, type) and issubclass(found, Backend):
            loaded[entry.name] = found
        else:
            broken[entry.name] = f"{entry.value} is not a Backend subclass"
    return loaded, {name: error for name, error in broken.items() if name not in loaded}


def _option_types(backend: type[Backend]) -> tuple[dict[str, Any], bool]:
    """(option name → annotation of the keyword parameters of ``backend``'s ``__init__``, Any
    where there is none; whether it also takes ``**options`` of any name)."""
    hints = typing.get_type_hints(backend.__init__)
    types: dict[str, Any] = {}
    open_ended = False
    for parameter in inspect.signature(backend).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            open_ended = True
        elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            types[parameter.name] = hints.get(parameter.name, Any)
    return types, open_ended


def _convert(name: str, types: dict[str, Any], open_ended: bool, key: str, value: Any) -> Any:
    """``value`` checked against the annotation of option ``key`` of backend ``name``."""
    if key in types:
        return convert_value(value, types[key], f"backend {name!r}: {key}")
    if open_ended:
        return value
    raise UserError(f"unknown option {key!r} for backend {name!r} (unexpected keyword; "
                    f"valid: {', '.join(types) or 'none'})")


def _one_line(error: BaseException, with_type: bool = True) -> str:
    """``error``'s message on one line, after its type name if ``with_type``."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if with_type else message


def _parse_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
