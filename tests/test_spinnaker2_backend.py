"""The ``spinnaker2`` backend: weights in every format, the e-prop network run and learned on
the emulated chip, its state, and training through it (issue 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hwloop.backends import NeuronGroup, open_backend
from hwloop.cli import main
from hwloop.config import build_config
from hwloop.errors import UserError
from hwloop.learning.network import SpikingNetwork
from hwloop.neurons import EpropALIF, EpropLI
from hwloop.runs import read_run
from hwloop.session import network_groups
from hwloop.tasks import make_task
from hwloop.trainer import Trainer

FORMATS = ("f32", "s16.15", "int8", "int4")


@pytest.mark.parametrize("fmt", FORMATS)
def test_weights_round_trip_in_every_format(fmt: str) -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.3, (40, 33))
    with open_backend(f"spinnaker2://?weight_format={fmt}") as backend:
        backend.declare("hidden.0.w_in", weights.shape)
        report = backend.program("hidden.0.w_in", weights)
        held = backend.read("hidden.0.w_in")
        assert report.cells_programmed == weights.size and report.failures == 0
        assert report.sram_bytes == {"f32": 4, "s16.15": 4, "int8": 1}.get(fmt, 0.5) * 1320
        assert report.device_seconds > 0 and report.clipped == 0
        step = backend.weight_step("hidden.0.w_in")
        if fmt in ("int8", "int4"):
            top = 127 if fmt == "int8" else 7
            # the scale is fixed at the first write: range_factor·max|W| is the top level
            assert step[0, 0] == np.float32(3.0 * np.abs(weights).max() / top)
            levels = held / step[0, 0]
            np.testing.assert_array_equal(levels, np.rint(levels))
            assert np.abs(held - weights).max() <= step[0, 0] / 2 + 1e-12
        else:
            assert step is None
            assert np.abs(held - weights).max() <= (1e-7 if fmt == "f32" else 2.0**-16)
        again = backend.program("hidden.0.w_in", held)
        assert again.cells_programmed == 0  # nothing changed
        np.testing.assert_array_equal(backend.read("hidden.0.w_in"), held)


def test_weights_beyond_the_fixed_range_are_clipped_and_counted() -> None:
    with open_backend("spinnaker2://?bits=4") as backend:
        backend.declare("layer", (2, 3), step=np.full((1, 1), 0.1))
        report = backend.program("layer", np.array([[0.0, 0.3, 5.0], [-0.71, -9.0, 0.1]]))
        assert report.clipped == 2
        np.testing.assert_allclose(backend.read("layer"), [[0.0, 0.3, 0.7], [-0.7, -0.7, 0.1]])


def test_layers_declared_later_keep_the_weights_written_before() -> None:
    with open_backend("spinnaker2://?bits=8") as backend:
        backend.declare("a", (10, 20))
        backend.program("a", np.ones((10, 20)))
        first = backend.read("a")
        backend.declare("b", (5, 10))
        backend.program("b", -np.ones((5, 10)))
        np.testing.assert_array_equal(backend.read("a"), first)


def test_a_layer_that_does_not_fit_is_refused_and_the_device_keeps_its_layers() -> None:
    with open_backend("spinnaker2://?n_pe=2") as backend:  # one PE of 93,184 B for weights
        backend.declare("small", (10, 10))
        backend.program("small", np.eye(10))
        with pytest.raises(ValueError, match="cannot hold layer 'big'"):
            backend.declare("big", (200, 200))
        assert "big" not in backend.shapes
        np.testing.assert_array_equal(backend.read("small"), np.eye(10))


def eprop_network(inputs: int = 6, hidden: int = 20, outputs: int = 3) -> SpikingNetwork:
    network = SpikingNetwork(inputs, [hidden], outputs,
                             EpropALIF(tau_m=10.0, tau_a=40.0, v_th=0.5), EpropLI(),
                             recurrence="full", seed=3, dtype=torch.float64)
    with torch.no_grad():
        network.hidden[0].w_in.mul_(12.0)
        network.hidden[0].w_rec.fill_diagonal_(0.0)
        for parameter in network.parameters():  # float32 values: the chip holds them exactly
            parameter.copy_(parameter.float().double())
    return network


def program_network(backend, network: SpikingNetwork) -> None:  # type: ignore[no-untyped-def]
    backend.declare_network(network_groups(network))
    for name, parameter in network.named_parameters():
        if parameter.dim() == 2:
            backend.declare(name, tuple(parameter.shape))
            backend.program(name, parameter.detach().numpy())


def test_the_chip_runs_the_eprop_network_as_the_host_does() -> None:
    network = eprop_network()
    inputs = (np.random.default_rng(1).random((3, 40, 6)) < 0.3).astype(np.float64)
    with open_backend("spinnaker2") as backend:
        program_network(backend, network)
        run = backend.run(inputs)
    with torch.no_grad():
        spikes, outputs = network.trace(torch.from_numpy(inputs))
    assert 0.02 < float(spikes.mean()) < 0.5
    np.testing.assert_array_equal(run.spikes[0], spikes.numpy())
    np.testing.assert_allclose(run.outputs, outputs.numpy(), rtol=1e-5, atol=1e-5)


def test_real_valued_inputs_are_sent_as_values() -> None:
    network = eprop_network()
    inputs = np.random.default_rng(2).normal(0.5, 0.5, (2, 30, 6))
    with open_backend("spinnaker2") as backend:
        program_network(backend, network)
        run = backend.run(inputs)
    with torch.no_grad():
        spikes, _ = network.trace(torch.from_numpy(inputs))
    assert float(spikes.mean()) > 0.02
    np.testing.assert_array_equal(run.spikes[0], spikes.numpy())


def test_other_networks_are_refused_to_run_with_a_clear_message() -> None:
    groups = [NeuronGroup("hidden.0", "alif", {}, 8, "full"), NeuronGroup("readout", "li", {}, 2)]
    with open_backend("spinnaker2") as backend:
        with pytest.raises(ValueError, match="runs eprop_alif hidden neurons"):
            backend.declare_network(groups)


def test_learning_changes_the_weights_and_the_state_continues_exactly() -> None:
    network = eprop_network()
    rng = np.random.default_rng(4)
    inputs = (rng.random((4, 30, 6)) < 0.3).astype(np.float64)
    labels = np.array([0, 1, 2, 1])
    with open_backend("spinnaker2") as backend:
        program_network(backend, network)
        before = backend.read("hidden.0.w_in")
        first = backend.learn(inputs[:2], labels[:2], 0, 0.01)
        assert first.loss is not None and np.isfinite(first.loss)
        assert not np.array_equal(backend.read("hidden.0.w_in"), before)
        saved = backend.state_dict()
        backend.learn(inputs[2:], labels[2:], 5, 0.01)
        expected = {name: backend.read(name) for name in backend.projections}
    with open_backend("spinnaker2") as restored:
        restored.load_state_dict(saved)
        restored.learn(inputs[2:], labels[2:], 5, 0.01)
        for name, weights in expected.items():
            np.testing.assert_array_equal(restored.read(name), weights)


def test_integer_weights_cannot_learn_on_the_chip() -> None:
    config = build_config(overrides=[
        "neuron=eprop_alif", "learner=eprop-onchip", "backend=spinnaker2", "bits=8",
        "task_options.num_samples=32", "hidden=[8]"])
    with pytest.raises(UserError, match="cannot run eprop on the device"):
        Trainer(config, make_task(config.task, config.task_options, config.seed))


@pytest.mark.parametrize("override,message", [
    ("neuron=alif", "eprop_alif"),
    ("loss=per_step_ce", "mean_output_ce"),
    ("optimizer=sgd", "adam"),
    ("backend=none", "a device in the loop"),
])
def test_on_chip_learning_refuses_what_the_chip_cannot_do(override: str, message: str) -> None:
    settings = dict(item.split("=") for item in (
        "neuron=eprop_alif", "learner=eprop-onchip", "backend=spinnaker2", "hidden=[8]",
        "task_options.num_samples=32", override))
    config = build_config(overrides=[f"{key}={value}" for key, value in settings.items()])
    with pytest.raises(UserError, match=message):
        Trainer(config, make_task(config.task, config.task_options, config.seed))


ONCHIP = ["--neuron", "eprop_alif", "--learner", "eprop-onchip", "--backend", "spinnaker2",
          "--epochs", "2", "task_options.num_samples=128", "hidden=[32]", "batch_size=16",
          "lr=0.03", "--quiet"]


def test_on_chip_eprop_learns_the_cue_task_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    result = CliRunner().invoke(main, ["train", "--out", str(straight), *ONCHIP])
    assert result.exit_code == 0, result.stderr
    run = read_run(straight)
    assert run.epochs[-1].test_accuracy >= 0.9
    assert run.epochs[-1].train_loss < run.epochs[0].train_loss
    original = Trainer.train_epoch

    def stop_mid_epoch(self: Trainer, on_step=None, every=None, on_checkpoint=None):  # type: ignore[no-untyped-def]
        def step(metrics):  # type: ignore[no-untyped-def]
            on_step(metrics)
            if metrics.step == 8:  # 6 steps an epoch: stop in epoch 2, after step 7's checkpoint
                raise KeyboardInterrupt
        return original(self, step, every, on_checkpoint)

    monkeypatch.setattr(Trainer, "train_epoch", stop_mid_epoch)
    result = CliRunner().invoke(main, ["train", "--out", str(cut), "--checkpoint-every", "1",
                                       *ONCHIP])
    assert result.exit_code == 130
    monkeypatch.setattr(Trainer, "train_epoch", original)
    result = CliRunner().invoke(main, ["train", "--out", str(cut), "--resume", "--quiet"])
    assert result.exit_code == 0, result.stderr
    resumed = read_run(cut)
    for name, value in run.final_weights.items():  # type: ignore[union-attr]
        np.testing.assert_array_equal(value, resumed.final_weights[name])  # type: ignore[index]
