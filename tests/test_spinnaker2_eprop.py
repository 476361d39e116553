"""E-prop trained on the emulated SpiNNaker 2 chip (spec A3, A4.4): the loss of a small
separable task falls; int8/int4 weights cannot be trained."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.spinnaker2.chip import Chip, ChipError, EpropConfig
from simulators.spinnaker2.formats import encode

CONFIG = EpropConfig(inputs=4, hidden=8, outputs=2, per_worker=4, learning_rate=0.02,
                     weight_format="f32")
STEPS = 30


def sample(rng: np.random.Generator, label: int) -> np.ndarray:
    """Class 0 fires inputs 0-1, class 1 inputs 2-3 (rate 0.5), the others rate 0.05."""
    rates = np.full(CONFIG.inputs, 0.05)
    rates[2 * label:2 * label + 2] = 0.5
    return rng.random((STEPS, CONFIG.inputs)) < rates


def epoch_losses(numeric: str, epochs: int = 4, per_epoch: int = 16) -> list[float]:
    config = EpropConfig(**{**CONFIG.__dict__, "weight_format": numeric})
    chip = Chip(numeric=numeric)
    chip.load(config)
    rng = np.random.default_rng(0)
    shapes = [(config.hidden, config.inputs), (config.hidden, config.hidden),
              (config.outputs, config.hidden)]
    for projection, (rows, cols) in enumerate(shapes):
        w = rng.normal(0.0, 2.0 if projection == 0 else 0.5, (rows, cols))
        chip.write_weights(projection, numeric, 1.0, 0, w.size, encode(w, numeric).payload)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for index in range(per_epoch):
            label = index % 2
            for step, row in enumerate(sample(rng, label)):
                chip.inject_spikes(step, np.flatnonzero(row).tolist())
            chip.target(index, label)
            total += chip.run(STEPS, mode=1).loss
        losses.append(total / per_epoch)
    return losses


@pytest.mark.parametrize("numeric", ["f32", "s16.15"])
def test_on_chip_training_reduces_the_loss_of_a_separable_task(numeric: str) -> None:
    losses = epoch_losses(numeric)
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_training_is_refused_for_integer_weights(fmt: str) -> None:
    chip = Chip()
    with pytest.raises(ChipError, match="on-chip training needs f32 or s16.15") as refused:
        chip.load(EpropConfig(weight_format=fmt))
    assert refused.value.code == 7 and chip.config is None
    chip.load(EpropConfig(weight_format=fmt, training=False))  # inference is fine
