"""The ``loihi2`` backend: weights as Lava's Dense holds them, and the network the host trains
running on the emulator step for step like the host's own forward pass (docs/loihi2.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hwloop.backends import NeuronGroup, open_backend
from hwloop.config import TrainConfig
from hwloop.errors import UserError
from hwloop.neurons.loihi import WEIGHT_UNIT
from hwloop.quantize import lava_dense_weights
from hwloop.session import HILSession, network_groups
from hwloop.trainer import make_network
from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.backend import Loihi2Backend, population_parameters
from simulators.loihi2.lif import LifParameters

finite = st.floats(-20.0, 20.0, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(weights=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                      elements=finite),
       bits=st.integers(2, 8), range_factor=st.floats(0.1, 10.0))
def test_read_is_exactly_what_lavas_dense_uses(weights: np.ndarray, bits: int,
                                               range_factor: float) -> None:
    backend = Loihi2Backend(bits=bits, range_factor=range_factor)
    backend.declare("layer", weights.shape)
    report = backend.program("layer", weights)
    dense = backend.dense("layer")
    # the held integers pass Lava's first-step preprocessing unchanged: they are on the grid
    np.testing.assert_array_equal(lava_dense_weights(dense.weights, bits, "mixed"), dense.weights)
    assert 0 <= dense.weight_exp <= 7
    # read × 4096 is the activation one spike through the synapse delivers: W · 2^e
    held = backend.read("layer")
    np.testing.assert_array_equal(held * WEIGHT_UNIT, dense.weights * 2.0**dense.weight_exp)
    # rounding to the nearest level: the error is at most half a level, except where clipped
    step = float(backend.weight_step("layer")[0, 0])
    beyond = np.abs(weights - held) > step / 2 + 1e-12
    assert int(beyond.sum()) == report.clipped
    low, high = backend.level_range()
    assert np.all((held[beyond] == low * step) | (held[beyond] == high * step))
    # programming what is held changes nothing
    again = backend.program("layer", held)
    assert again.cells_programmed == 0 and again.clipped == 0 and again.write_error == 0.0


def test_out_of_range_weights_are_clipped_counted_and_never_wrapped() -> None:
    backend = Loihi2Backend(bits=8)
    backend.declare("layer", (1, 4), step=np.array([[2.0**-11]]))  # exponent 0: range ±254
    report = backend.program("layer", np.array([[1.0, -1.0, 0.01, 0.0]]))
    assert report.clipped == 2
    assert backend.dense("layer").weights.tolist() == [[254, -256, 40, 0]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_weights_are_refused_and_the_device_is_unchanged(bad: float) -> None:
    backend = Loihi2Backend()
    backend.declare("layer", (2, 2))
    backend.program("layer", np.array([[0.1, -0.2], [0.3, 0.0]]))
    before = backend.dense("layer").weights.copy()
    with pytest.raises(ValueError, match="NaN or inf"):
        backend.program("layer", np.array([[0.1, bad], [0.3, 0.0]]))
    np.testing.assert_array_equal(backend.dense("layer").weights, before)


def test_bits_above_8_and_steps_off_the_exponent_grid_are_refused() -> None:
    with pytest.raises(UserError, match="bits"):
        open_backend("loihi2://?bits=9")
    backend = Loihi2Backend()
    with pytest.raises(ValueError, match="2\\^\\(9 − bits \\+ e\\)/4096"):
        backend.declare("layer", (2, 2), step=np.array([[0.25]]))


def make_loihi_network(hidden: list[int], recurrence: str = "full", seed: int = 0,
                       gain: float = 1.0):
    config = TrainConfig(neuron="loihi_lif", hidden=hidden, recurrence=recurrence,
                         dtype="float64", seed=seed, init_gain=gain)
    return make_network(config, 12, 3)


def assert_the_device_runs_as_the_host(session: HILSession) -> None:
    """The device's run of random spikes equals the host's forward pass with the read-back
    weights, spike for spike and readout value for value; the replay counts no mismatch."""
    inputs = (torch.rand(5, 120, 12, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    device = session.backend.run(inputs.numpy())
    with torch.no_grad():
        host = session.network.trace(inputs)
    for layer, (device_spikes, host_spikes) in enumerate(zip(device.spikes, host)):
        assert device_spikes.shape == tuple(host_spikes.shape)
        np.testing.assert_array_equal(device_spikes, host_spikes.numpy(), f"layer {layer}")
        assert device_spikes.sum() > 0, f"layer {layer} must spike for the test to mean much"
    np.testing.assert_array_equal(device.outputs, host[-1].numpy())
    session.replay(inputs)
    assert session.device_runs == 1 and session.spike_mismatches == 0


@pytest.mark.parametrize("hidden,recurrence", [([24], "full"), ([16, 8], "full"),
                                               ([10], "none")])
def test_the_device_runs_the_network_exactly_as_the_host_computes_it(
        hidden: list[int], recurrence: str) -> None:
    network = make_loihi_network(hidden, recurrence, gain=2.0)
    session = HILSession(network, Loihi2Backend(), "direct", 1.0, 0, forward="device")
    session.begin()  # the network now holds the read-back weights
    assert_the_device_runs_as_the_host(session)


def test_the_replay_counts_spikes_where_device_and_host_differ() -> None:
    network = make_loihi_network([16], gain=2.0)
    session = HILSession(network, Loihi2Backend(), "direct", 1.0, 0, forward="device")
    session.begin()
    with torch.no_grad():  # the host drifts away from what the device holds
        network.hidden[0].w_in.mul_(3.0)
    inputs = (torch.rand(3, 80, 12, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    session.replay(inputs)
    assert session.spike_mismatches > 0
    assert session.after_update(1).spike_mismatches == session.updates[-1].spike_mismatches > 0


@pytest.mark.parametrize("change,message", [
    ({"model": "lif"}, "cannot run neuron model 'lif'"),
    ({"recurrence": "self"}, "recurrence none or full"),
    ({"skip": True}, "skip connection"),
])
def test_networks_the_device_cannot_run_are_refused(change: dict, message: str) -> None:
    groups = [NeuronGroup("hidden.0", "loihi_lif", {"du": 4095, "dv": 410, "vth": 4096}, 4),
              NeuronGroup("readout", "loihi_li", {"du": 4095, "dv": 410, "vth": 131071}, 2)]
    groups[0] = NeuronGroup(**{**groups[0].__dict__, **change})
    with pytest.raises(ValueError, match=message):
        Loihi2Backend().declare_network(groups)


def test_inputs_must_be_spikes() -> None:
    network = make_loihi_network([4])
    backend = Loihi2Backend()
    session = HILSession(network, backend, "direct", 1.0, 0)
    session.begin()
    with pytest.raises(ValueError, match="0/1 spikes"):
        backend.run(np.full((1, 5, 12), 0.5))
    assert [group.model for group in network_groups(network)] == ["loihi_lif", "loihi_li"]


# --- ATRLIF hidden layers (loihi_atrlif) ------------------------------------------------------

ATRLIF_OPTIONS = {"delta_i": 0.3, "delta_v": 0.05, "delta_theta": 0.1, "delta_r": 0.35,
                  "theta_0": 3000.7, "theta_step": 1500.3}


def test_loihi_atrlif_groups_become_lava_atrlif_populations() -> None:
    groups = [NeuronGroup("hidden.0", "loihi_atrlif", ATRLIF_OPTIONS, 4),
              NeuronGroup("readout", "loihi_li", {"du": 4095, "dv": 410, "vth": 131071}, 2)]
    hidden, readout = (population_parameters(group) for group in groups)
    assert isinstance(hidden, AtrlifParameters) and isinstance(readout, LifParameters)
    assert {name: getattr(hidden, name) for name in ATRLIF_OPTIONS} == ATRLIF_OPTIONS
    assert (hidden.scaled_theta_0, hidden.scaled_theta_step) == (192_044, 96_019)  # trunc(·64)
    assert hidden.integer_factors == (3891, 3686, 2662)  # trunc(4096 − δ·4096) of v, θ, r
    assert hidden.bias_mant.tolist() == hidden.bias_exp.tolist() == [0, 0, 0, 0]
    backend = Loihi2Backend()
    backend.declare_network(groups)
    assert "loihi_atrlif" in backend.capabilities().neurons
    with pytest.raises(ValueError, match="cannot run neuron model 'loihi_atrlif' as the readout"):
        backend.declare_network([groups[0], NeuronGroup("readout", "loihi_atrlif",
                                                        ATRLIF_OPTIONS, 2)])


@pytest.mark.parametrize("hidden,recurrence,options", [([24], "full", {}),
                                                        ([16, 8], "full", ATRLIF_OPTIONS),
                                                        ([10], "none", ATRLIF_OPTIONS)])
def test_the_device_runs_an_atrlif_network_exactly_as_the_host_computes_it(
        hidden: list[int], recurrence: str, options: dict[str, float]) -> None:
    config = TrainConfig(neuron="loihi_atrlif", hidden=hidden, recurrence=recurrence,
                         dtype="float64", seed=0, init_gain=2.0, neuron_options=options)
    network = make_network(config, 12, 3)
    session = HILSession(network, Loihi2Backend(), "direct", 1.0, 0, forward="device")
    session.begin()
    assert all(isinstance(layer.neurons, AtrlifParameters)
               for layer in session.backend.network().layers[:-1])
    assert_the_device_runs_as_the_host(session)
