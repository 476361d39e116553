"""Neuron models: pure step functions with closed-form Jacobians (hypr.md §2)."""

from __future__ import annotations

from typing import Any, Mapping

from hwloop.errors import UserError
from hwloop.neurons.adlif import AdLIF
from hwloop.neurons.alif import ALIF
from hwloop.neurons.base import NeuronModel, StepJacobians
from hwloop.neurons.brf import BRF
from hwloop.neurons.eprop_alif import EpropALIF, EpropLI
from hwloop.neurons.li import LI
from hwloop.neurons.lif import LIF
from hwloop.neurons.loihi import LoihiLI, LoihiLIF
from hwloop.neurons.loihi_atrlif import LoihiATRLIF
from hwloop.options import build_options

HIDDEN_NEURONS: dict[str, type[NeuronModel]] = {
    "lif": LIF,
    "alif": ALIF,
    "adlif": AdLIF,
    "brf": BRF,
    "loihi_lif": LoihiLIF,
    "loihi_atrlif": LoihiATRLIF,
    "eprop_alif": EpropALIF,
}

READOUTS: dict[str, type[NeuronModel]] = {
    "loihi_lif": LoihiLI, "loihi_atrlif": LoihiLI, "eprop_alif": EpropLI,
}
"""The readout of networks whose hidden neurons are not float models (LI otherwise): a device
that runs the network needs a readout it can run too (and e-prop's ALIF has its own)."""

__all__ = [
    "ALIF", "BRF", "LI", "LIF", "AdLIF", "EpropALIF", "EpropLI", "LoihiATRLIF", "LoihiLI", "LoihiLIF", "HIDDEN_NEURONS",
    "NeuronModel", "StepJacobians", "make_neuron", "readout_for",
]


def make_neuron(name: str, options: Mapping[str, Any]) -> NeuronModel:
    """Build a hidden-neuron model by name with hyperparameter overrides (raises UserError)."""
    if name not in HIDDEN_NEURONS:
        raise UserError(f"unknown neuron {name!r} (choose from: {', '.join(HIDDEN_NEURONS)})")
    return build_options(HIDDEN_NEURONS[name], options, f"neuron {name!r}")


def readout_for(neuron: str) -> type[NeuronModel]:
    """The readout model of a network of ``neuron`` hidden neurons (``READOUTS``, else LI)."""
    return READOUTS.get(neuron, LI)
