"""Strict JSON for everything hwloop prints or stores: NaN and ±inf become ``null``.

Python's ``json`` writes NaN as the bare word ``NaN``, which is not JSON and which most other
tools (jq, JavaScript, Go) refuse. ``dumps`` turns every non-finite float into None first,
and converts numpy scalars and arrays and paths to plain values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """``value`` with non-finite floats as None, numpy values as Python ones, paths as text."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any, **options: Any) -> str:
    """Strict JSON text of ``value`` (options as for ``json.dumps``)."""
    return json.dumps(plain(value), allow_nan=False, **options)
