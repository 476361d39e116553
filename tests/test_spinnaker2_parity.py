"""On-chip e-prop equals hwloop's host e-prop (issue 10, must-show 2).

The chip learns one sample in f32 (op by op, spec A3 steps 1–9); the host computes e-prop's
gradients of the same ALIF network in float64 (``EProp`` with ``mean_output_ce`` on
``eprop_alif`` / ``eprop_li``) and takes the same Adam step (TensorFlow's form, which the chip
uses). The readout has no memory here (τ_out → 0, κ = 0): hwloop's e-prop passes the learning
signal through the readout at the step it is made, while the chip's filtered eligibility ē
carries the readout's memory (docs/spinnaker2.md); with κ = 0 both are the same algorithm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hwloop.learning.eprop import EProp
from hwloop.learning.network import SpikingNetwork
from hwloop.neurons import EpropALIF, EpropLI
from simulators.spinnaker2.chip import Chip, EpropConfig
from simulators.spinnaker2.formats import decode, encode

M, N, K, T = 10, 24, 3, 50
NEURON = EpropALIF(tau_m=10.0, tau_a=30.0, v_th=0.6, beta=0.5)
TAU_OUT = 1e-3
LR, BETA1, BETA2, EPSILON, L2 = 0.01, 0.9, 0.999, 1e-5, 1e-5
NAMES = ("hidden.0.w_in", "hidden.0.w_rec", "readout.w_in")


def random_problem(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Float32-representable weights (W_rec without self-connections), inputs (T, M), label."""
    rng = np.random.default_rng(seed)
    weights = {
        NAMES[0]: rng.normal(0, 1.5, (N, M)),
        NAMES[1]: rng.normal(0, 0.25, (N, N)),
        NAMES[2]: rng.normal(0, 0.5, (K, N)),
    }
    np.fill_diagonal(weights[NAMES[1]], 0.0)
    weights = {k: v.astype(np.float32).astype(np.float64) for k, v in weights.items()}
    inputs = (rng.random((T, M)) < 0.3).astype(np.float64)
    return weights, inputs, int(rng.integers(K))


def host_step(weights: dict[str, np.ndarray], inputs: np.ndarray, label: int,
              ignore_first: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Host e-prop (float64) + one TensorFlow-form Adam step: (new weights, hidden spikes)."""
    network = SpikingNetwork(M, [N], K, NEURON, EpropLI(tau_out=TAU_OUT), recurrence="full",
                             seed=0, dtype=torch.float64)
    parameters = dict(network.named_parameters())
    with torch.no_grad():
        for name in NAMES:
            parameters[name].copy_(torch.from_numpy(weights[name]))
    x = torch.from_numpy(inputs)[None]
    EProp(loss="mean_output_ce").compute_gradients(network, x, torch.tensor([label]),
                                                   ignore_first)
    rate = LR * math.sqrt(1 - BETA2) / (1 - BETA1)
    updated = {}
    for name in NAMES:
        grad = parameters[name].grad.numpy() + 2 * L2 * weights[name]
        m, v = (1 - BETA1) * grad, (1 - BETA2) * grad**2
        updated[name] = weights[name] - rate * m / (np.sqrt(v) + EPSILON)
    with torch.no_grad():
        spikes = network.trace(x)[0][0].numpy()
    return updated, spikes


def chip_step(weights: dict[str, np.ndarray], inputs: np.ndarray, label: int,
              ignore_first: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The same sample learned on the emulated chip in f32: (weights read back, spikes)."""
    chip = Chip(numeric="f32")
    chip.load(EpropConfig(
        inputs=M, hidden=N, outputs=K, per_worker=8, tau_m=NEURON.tau_m, tau_a=NEURON.tau_a,
        tau_out=TAU_OUT, v_th=NEURON.v_th, beta=NEURON.beta, gamma=NEURON.gamma,
        width=NEURON.width, side_width=6 * NEURON.width, side_height=NEURON.height,
        learning_rate=LR, beta1=BETA1, beta2=BETA2, epsilon=EPSILON, l2=L2,
        ignore_first=ignore_first,
    ))
    for projection, name in enumerate(NAMES):
        encoded = encode(weights[name], "f32")
        chip.write_weights(projection, "f32", 1.0, 0, weights[name].size, encoded.payload)
    for step, row in enumerate(inputs):
        chip.inject_spikes(step, [int(i) for i in np.flatnonzero(row)])
    chip.target(0, label)
    result = chip.run(T, 1)
    learned = {}
    for projection, name in enumerate(NAMES):
        scale, payload = chip.read_weights(projection, "f32", 0, weights[name].size)
        learned[name] = decode(payload, weights[name].size, "f32", scale).reshape(
            weights[name].shape)
    return learned, result.spikes


@pytest.mark.parametrize("seed,ignore_first", [(0, 0), (1, 0), (2, 20)])
def test_on_chip_eprop_update_equals_host_eprop(seed: int, ignore_first: int) -> None:
    weights, inputs, label = random_problem(seed)
    host, host_spikes = host_step(weights, inputs, label, ignore_first)
    chip, chip_spikes = chip_step(weights, inputs, label, ignore_first)
    assert 0.02 < host_spikes.mean() < 0.5, "the network must spike for the test to mean much"
    np.testing.assert_array_equal(chip_spikes, host_spikes)
    off_diagonal = ~np.eye(N, dtype=bool)
    for name in NAMES:
        host_delta, chip_delta = host[name] - weights[name], chip[name] - weights[name]
        # float32 rounding: the stored new weight (2 ulp of it) and the f32 traces (1e-5)
        ulp = np.spacing(np.abs(host[name]).astype(np.float32)).astype(np.float64)
        if name == NAMES[1]:  # the chip has no self-connections: they stay 0
            assert (chip[name][~off_diagonal] == 0).all()
            host_delta, chip_delta = host_delta[off_diagonal], chip_delta[off_diagonal]
            ulp = ulp[off_diagonal]
        assert np.abs(host_delta).max() > 0.5 * LR, f"{name}: the update must be non-trivial"
        assert (np.abs(chip_delta - host_delta) <= 2 * ulp + 1e-5 * np.abs(host_delta)).all(), (
            f"{name}: max difference {np.abs(chip_delta - host_delta).max():.3g}")
