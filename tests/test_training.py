"""The configuration, the training loop and what it must reach on the built-in tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwloop.config import build_config, parse_override
from hwloop.errors import UserError
from hwloop.trainer import Trainer
from hwloop.tasks import make_task


def train(*overrides: str) -> Trainer:
    config = build_config(overrides=list(overrides))
    trainer = Trainer(config, make_task(config.task, config.task_options, config.seed))
    for _ in range(config.epochs):
        trainer.train_epoch()
    return trainer


@pytest.mark.parametrize("learner", ["hypr", "bptt"])
def test_cue_reaches_95_percent(learner: str) -> None:
    """Must-show 5 (library level): the default cue task, BRF preset, 15 epochs."""
    trainer = train(f"learner={learner}", "epochs=15", "lam=10")
    assert trainer.accuracy(trainer.task.test) >= 0.95


def test_same_seed_same_weights_float32_and_float64() -> None:
    for dtype in ("float32", "float64"):
        first = train("epochs=2", f"dtype={dtype}", "task_options.num_samples=64", "hidden=[16]")
        second = train("epochs=2", f"dtype={dtype}", "task_options.num_samples=64", "hidden=[16]")
        for (name, a), b in zip(first.network.state_dict().items(), second.network.state_dict().values()):
            assert torch.equal(a, b), name
    other = train("epochs=2", "seed=1", "task_options.num_samples=64", "hidden=[16]")
    assert not torch.equal(other.network.hidden[0].w_in, first.network.hidden[0].w_in)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_other_torch_optimizers(optimizer: str) -> None:
    trainer = train(f"optimizer={optimizer}", "epochs=1", "task_options.num_samples=64", "hidden=[8]")
    assert type(trainer.optimizer).__name__.lower() == optimizer


def test_constraints_hold_after_every_step() -> None:
    trainer = train(
        "neuron=alif", "learner=bptt", "lr=5.0", "epochs=1", "task_options.num_samples=64",
        "hidden=[16]",
    )
    params = trainer.network.hidden[0].params
    assert float(params["tau_u"].detach().min()) >= 10.0
    assert float(params["tau_a"].detach().min()) >= 100.0


def test_checkpoint_state_continues_exactly() -> None:
    overrides = ["epochs=3", "task_options.num_samples=64", "hidden=[16]"]
    straight = train(*overrides)
    config = build_config(overrides=overrides)
    task = make_task(config.task, config.task_options, config.seed)
    first = Trainer(config, task)
    first.train_epoch()
    resumed = Trainer(config, task)
    resumed.load_state(first.state())
    resumed.train_epoch()
    resumed.train_epoch()
    for a, b in zip(straight.network.parameters(), resumed.network.parameters()):
        assert torch.equal(a, b)


def test_config_precedence_and_presets() -> None:
    config = build_config()
    assert config.neuron_options["use_exponential"] is True  # cue x brf preset
    assert build_config(overrides=["presets=false"]).neuron_options == {}
    from_file = {"lr": 0.5, "epochs": 7, "neuron_options": {"dt": 0.02}}
    config = build_config(from_file, ["epochs=3"], lr=None, seed=4)
    assert (config.lr, config.epochs, config.seed) == (0.5, 3, 4)
    assert config.neuron_options["dt"] == 0.02 and config.neuron_options["surrogate"] == "slayer_wide"


def test_override_values_are_toml() -> None:
    assert parse_override("hidden=[32, 32]") == ("hidden", [32, 32])
    assert parse_override("neuron=alif") == ("neuron", "alif")
    assert parse_override("skip=true") == ("skip", True)
    assert parse_override("lr=1e-3") == ("lr", 0.001)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["foo=1"], "unknown config key 'foo'"),
        (["epochs"], "must look like key=value"),
        (["epochs=many"], "config: epochs: expected an integer, got 'many'"),
        (["task_options=3"], "must be a table"),
        (["learner=sgd"], "unknown learner 'sgd'"),
        (["lam=0"], "lambda must be an integer >= 1"),
        (["loss=sum_of_softmax"], "train with loss per_step_ce or mean_output_ce"),
        (["neuron=hh"], "unknown neuron 'hh'"),
        (["recurrence=sparse"], "unknown recurrence 'sparse'"),
        (["device=cuda"] if not torch.cuda.is_available() else ["device=tpu"], "device"),
        (["dtype=float16"], "unknown dtype 'float16'"),
        (["lr=-1"], "lr must be a positive number"),
        (["optimizer=lbfgs"], "unknown optimizer 'lbfgs'"),
        (["readout_options.tau=3"], "unknown option 'tau' for readout"),
    ],
)
def test_bad_configuration_is_one_line_user_error(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        config = build_config(overrides=overrides)
        Trainer(config, make_task("cue", {"num_samples": 16}, 0))
    assert "\n" not in str(error.value)


def test_the_run_seed_seeds_the_device_unless_the_spec_names_one() -> None:
    from hwloop.seeds import derive_seed
    from hwloop.session import open_session_backend

    def device(*overrides: str, backend: str = "pcm"):  # type: ignore[no-untyped-def]
        return open_session_backend(build_config(overrides=[f"backend={backend!r}",
                                                            *overrides]))

    assert device("seed=0").seed == derive_seed(0, "device")
    assert device("seed=1").seed == derive_seed(1, "device") != derive_seed(0, "device")
    assert device("seed=1", backend="pcm://?seed=7").seed == 7
    assert device("seed=1", "backend_options.seed=8").seed == 8
    weights = np.random.default_rng(0).normal(size=(8, 5))
    reads = []
    for seed in ("seed=0", "seed=1", "seed=0"):  # same weights, runs that differ in seed
        backend = device(seed)
        backend.declare("w", (8, 5))
        backend.program("w", weights)
        reads.append(backend.read("w"))
    assert not np.array_equal(reads[0], reads[1]) and np.array_equal(reads[0], reads[2])


@pytest.mark.parametrize("learner", ["hypr", "bptt"])
def test_neuron_parameters_not_listed_in_train_stay_frozen(learner: str) -> None:
    trainer = train(f"learner={learner}", "epochs=1", "task_options.num_samples=64",
                    "hidden=[16]", 'neuron_options.train=["omega"]', "readout_options.train=[]")
    fresh = Trainer(trainer.config, trainer.task)  # the initial parameters
    hidden, initial = trainer.network.hidden[0].params, fresh.network.hidden[0].params
    assert not torch.equal(hidden["omega"], initial["omega"])  # trained
    assert torch.equal(hidden["b_offset"], initial["b_offset"])  # frozen
    assert torch.equal(trainer.network.readout.params["tau_u"],
                       fresh.network.readout.params["tau_u"])
    assert not any(p is hidden["b_offset"] for p in trainer.trainable)
