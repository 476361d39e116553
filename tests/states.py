"""Deep equality of device states whose leaves may be numpy arrays."""

from __future__ import annotations

import numpy as np


def same_state(left: object, right: object) -> bool:
    """Deep equality of state dicts whose leaves may be numpy arrays (dtype included)."""
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        return (isinstance(left, np.ndarray) and isinstance(right, np.ndarray)
                and left.dtype == right.dtype and np.array_equal(left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_state(left[key], right[key])
                                                   for key in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return type(left) is type(right) and len(left) == len(right) and all(
            map(same_state, left, right))
    return type(left) is type(right) and left == right
