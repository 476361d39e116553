"""Neuron models: pure step functions with closed-form Jacobians (hypr.md §2)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from hwloop.errors import UserError
from hwloop.neurons.adlif import AdLIF
from hwloop.neurons.alif import ALIF
from hwloop.neurons.base import NeuronModel, StepJacobians
from hwloop.neurons.brf import BRF
from hwloop.neurons.li import LI
from hwloop.neurons.lif import LIF

HIDDEN_NEURONS: dict[str, type[NeuronModel]] = {
    "lif": LIF,
    "alif": ALIF,
    "adlif": AdLIF,
    "brf": BRF,
}

__all__ = ["ALIF", "BRF", "LI", "LIF", "AdLIF", "HIDDEN_NEURONS", "NeuronModel", "StepJacobians"]


def make_neuron(name: str, options: Mapping[str, Any]) -> NeuronModel:
    """Build a hidden-neuron model by name with hyperparameter overrides (raises UserError)."""
    if name not in HIDDEN_NEURONS:
        raise UserError(f"unknown neuron {name!r} (choose from: {', '.join(HIDDEN_NEURONS)})")
    return build_model(HIDDEN_NEURONS[name], options, f"neuron {name!r}")


def build_model(cls: type[NeuronModel], options: Mapping[str, Any], what: str) -> NeuronModel:
    """Instantiate ``cls`` from ``options``, turning bad keys or values into UserError."""
    valid = {f.name: f for f in fields(cls)}
    converted: dict[str, Any] = {}
    for key, value in options.items():
        if key not in valid:
            raise UserError(f"unknown option {key!r} for {what} (valid: {', '.join(valid)})")
        default = valid[key].default
        converted[key] = _coerce(key, value, default, what)
    try:
        return cls(**converted)
    except ValueError as error:
        raise UserError(f"{what}: {error}") from None


def _coerce(key: str, value: Any, default: Any, what: str) -> Any:
    """Check ``value`` against the type of the field's default (ints are accepted as floats)."""
    expected = type(default)
    if isinstance(default, tuple):
        if not (isinstance(value, (list, tuple)) and len(value) == len(default)):
            raise UserError(f"{what}: option {key!r} must be a list of {len(default)} numbers")
        return tuple(_coerce(key, v, d, what) for v, d in zip(value, default))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise UserError(
            f"{what}: option {key!r} must be {expected.__name__}, got {value!r}"
        )
    return value
