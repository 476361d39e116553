"""Neuron models: pure step functions with closed-form Jacobians (hypr.md §2)."""

from __future__ import annotations

from typing import Any, Mapping

from hwloop.errors import UserError
from hwloop.neurons.adlif import AdLIF
from hwloop.neurons.alif import ALIF
from hwloop.neurons.base import NeuronModel, StepJacobians
from hwloop.neurons.brf import BRF
from hwloop.neurons.li import LI
from hwloop.neurons.lif import LIF
from hwloop.options import build_options

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
    return build_options(HIDDEN_NEURONS[name], options, f"neuron {name!r}")
