"""Build option dataclasses from plain values (TOML, ``key=value`` overrides), with one-line
errors that name the bad key or value."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping, TypeVar

from hwloop.errors import UserError

OptionsT = TypeVar("OptionsT")

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def build_options(cls: type[OptionsT], values: Mapping[str, Any], what: str) -> OptionsT:
    """Instantiate the dataclass ``cls`` from ``values``; ``what`` names it in errors.

    Checks every value against the field's annotation (int, float, bool, str, ``X | None``,
    ``tuple[float, float]``, ``list[int]``); ints are accepted where floats are expected, and
    floats must be finite. Errors raised by the dataclass's own checks (ValueError, UserError)
    are prefixed by ``what``: ``task 'cue': seq_len: expected an integer, got 'abc'``.
    """
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise UserError(f"unknown option {key!r} for {what} (valid: {', '.join(names)})")
        converted[key] = convert_value(value, hints[key], f"{what}: {key}")
    try:
        return cls(**converted)
    except (ValueError, UserError) as error:
        raise UserError(f"{what}: {error}") from None


def convert_value(value: Any, annotation: Any, context: str) -> Any:
    """Check ``value`` against ``annotation``; ``context`` (``what: key``) starts the error."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (annotation,) = [arg for arg in args if arg is not type(None)]
        return convert_value(value, annotation, context)
    if annotation is Any:
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{context}: expected a table of key = value pairs, got {value!r}")
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{context}: expected a list, got {value!r}")
        if origin is tuple and args[-1] is not Ellipsis and len(value) != len(args):
            raise UserError(f"{context}: expected a list of {len(args)} values, got {value!r}")
        item_types = args if origin is tuple and args[-1] is not Ellipsis else [args[0]] * len(value)
        items = [convert_value(v, t, context) for v, t in zip(value, item_types)]
        return tuple(items) if origin is tuple else items
    accepted = (int, float) if annotation is float else (annotation,)
    if (isinstance(value, bool) and annotation is not bool) or not isinstance(value, accepted):
        expected = _TYPE_NAMES.get(annotation, annotation.__name__)
        raise UserError(f"{context}: expected {expected}, got {value!r}")
    if annotation is float:
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise UserError(f"{context}: expected a finite number, got {value!r}")
        return number
    return value
