"""The backend contract, checked for every installed backend, plus registry and spec parsing."""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.backends import (
    Backend,
    IdealBackend,
    available_backends,
    open_backend,
    parse_backend_spec,
)
from hwloop.errors import UserError

BACKENDS = sorted(available_backends())


def random_weights(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape)


def state_equal(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return a == b


@pytest.mark.parametrize("name", BACKENDS)
def test_program_then_read_returns_what_was_written(name: str) -> None:
    # fixed seeds (weights and the device's default seed): deterministic
    backend = open_backend(name)
    with backend:
        backend.declare("hidden.0.w_in", (8, 5))
        weights = random_weights((8, 5))
        report = backend.program("hidden.0.w_in", weights)
        assert report.layer == "hidden.0.w_in" and report.cells_programmed >= 1
        assert report.failures == 0
        held = backend.read("hidden.0.w_in")
        assert held.shape == (8, 5)
        # quantized and noisy, a device still holds (nearly) the weights it was given
        assert np.corrcoef(held.ravel(), weights.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(
    "bad,message",
    [
        (np.full((8, 5), np.nan), "NaN or inf"),
        (np.full((8, 5), np.inf), "NaN or inf"),
        (np.zeros((5, 8)), "have shape"),
    ],
)
def test_bad_weights_leave_the_device_unchanged(name: str, bad: np.ndarray, message: str) -> None:
    backend = open_backend(name)
    backend.declare("layer", (8, 5))
    backend.program("layer", random_weights((8, 5)))
    before = backend.state_dict()
    with pytest.raises(ValueError, match=message):
        backend.program("layer", bad)
    assert state_equal(before, backend.state_dict())


@pytest.mark.parametrize("name", BACKENDS)
def test_state_dict_round_trip(name: str) -> None:
    backend = open_backend(name)
    backend.declare("layer", (6, 4))
    backend.program("layer", random_weights((6, 4)))
    copy = open_backend(name)
    copy.load_state_dict(backend.state_dict())
    backend.advance_time(3600.0)
    copy.advance_time(3600.0)
    np.testing.assert_array_equal(backend.read("layer"), copy.read("layer"))


def test_ideal_backend_is_exact() -> None:
    backend = IdealBackend()
    backend.declare("w", (3, 2))
    weights = random_weights((3, 2))
    assert backend.program("w", weights).cells_programmed == 6
    assert np.array_equal(backend.read("w"), weights)
    assert backend.program("w", weights).cells_programmed == 0  # nothing changed
    with pytest.raises(ValueError, match="was not declared"):
        backend.program("other", weights)
    with pytest.raises(ValueError, match="backwards"):
        backend.advance_time(-1.0)


def test_registry_and_specs() -> None:
    assert "ideal" in available_backends()
    assert issubclass(available_backends()["ideal"], Backend)
    assert parse_backend_spec("pcm") == ("pcm", {})
    assert parse_backend_spec("pcm://?bits=4&seed=1&noise=off&scale=0.5&drift=false") == (
        "pcm", {"bits": 4, "seed": 1, "noise": "off", "scale": 0.5, "drift": False}
    )
    with pytest.raises(UserError, match="unknown backend 'nope'"):
        open_backend("nope")
    with pytest.raises(UserError, match="must look like"):
        parse_backend_spec("pcm://host/path")
    with pytest.raises(UserError, match="backend 'ideal'"):
        open_backend("ideal://?colour=red")
    with pytest.raises(UserError, match="noise: expected true or false, got 'off'"):
        open_backend("pcm://?noise=off")


@pytest.mark.parametrize("name", BACKENDS)
def test_declare_with_a_step(name: str) -> None:
    # fixed seeds (weights and the device's default seed): deterministic
    # (a mantissa-exponent device holds powers of two only: 2^-4 is Loihi 2's largest step)
    fine = open_backend(name).capabilities().weight_format == "mantissa_exponent"
    step = np.array([[2.0**-4 if fine else 0.25]])
    weights = random_weights((8, 5))
    backend = open_backend(name)
    backend.declare("layer", (8, 5), step=step)
    copy = open_backend(name)
    copy.load_state_dict(backend.state_dict())  # the declared step is part of the state
    for device in (backend, copy):
        device.program("layer", weights)
        held = device.weight_step("layer")
        assert held is None or np.array_equal(held, step)  # float devices ignore the step
    np.testing.assert_array_equal(backend.read("layer"), copy.read("layer"))
    assert np.corrcoef(backend.read("layer").ravel(), weights.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(
    "step",
    [np.array([[0.0]]), np.array([[-0.1]]), np.array([[np.nan]]), np.array([[np.inf]]),
     np.full((1, 5), 0.1), np.full((8,), 0.1), np.full((7, 1), 0.1)],
)
def test_declare_refuses_bad_steps(name: str, step: np.ndarray) -> None:
    backend = open_backend(name)
    backend.declare("layer", (8, 5))
    backend.program("layer", random_weights((8, 5)))
    before = backend.state_dict()
    with pytest.raises(ValueError, match="step for layer 'layer'"):
        backend.declare("layer", (8, 5), step=step)
    with pytest.raises(ValueError, match="step for layer 'other'"):
        backend.declare("other", (8, 5), step=step)
    assert state_equal(before, backend.state_dict())


@pytest.mark.parametrize("name", BACKENDS)
def test_set_compensation_where_the_capabilities_say_so(name: str) -> None:
    backend = open_backend(name)
    if not backend.capabilities().compensation:
        with pytest.raises(NotImplementedError, match=repr(name)):
            backend.set_compensation(False)
        return
    backend.declare("layer", (8, 5))
    backend.program("layer", random_weights((8, 5)))
    backend.advance_time(3600.0)
    compensated = backend.read("layer")
    backend.set_compensation(False)
    backend.set_compensation(True)
    np.testing.assert_array_equal(backend.read("layer"), compensated)
    with pytest.raises(ValueError, match="true or false"):
        backend.set_compensation("off")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("seconds", [np.nan, np.inf, -np.inf, -1.0])
def test_advance_time_refuses_nan_inf_and_negative_times(name: str, seconds: float) -> None:
    backend = open_backend(name)
    backend.declare("layer", (6, 4))
    backend.program("layer", random_weights((6, 4)))
    before = backend.state_dict()
    with pytest.raises(ValueError, match="finite|backwards") as caught:
        backend.advance_time(seconds)
    assert "\n" not in str(caught.value)
    assert state_equal(before, backend.state_dict())
