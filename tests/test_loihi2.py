"""The Loihi 2 models: integer primitives, Dense and LIF, and the emulator's bit-exact parity
with real Lava 0.10.0 fixed_pt processes, for chains of LIF and ATRLIF populations (spec
loihi2_lava_nir.md §10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulators.loihi2.dense import DenseWeights, dense_step, sign_mode_of
from simulators.loihi2.fixed_point import STATE_LIMIT, decay, saturate24, shift, wrap24
from simulators.loihi2.isolation import IsolatedError, call_isolated
from simulators.loihi2.atrlif import AtrlifParameters
from simulators.loihi2.lava_run import lava_arguments, run_in_lava
from simulators.loihi2.lif import LifParameters, lif_step
from simulators.loihi2.network import LifLayer, LifNetwork, Trajectory, emulate
from loihi_random import random_atrlif, random_dense

LAVA_TIMEOUT = 300.0  # seconds for one isolated Lava run
STEPS = 500


def ints(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


# --- integer primitives (spec §2.2, §10.2) --------------------------------------------------


def test_decay_truncates_toward_zero() -> None:
    assert decay(ints(128, 127, 126), 4095).tolist() == [127, 126, 125]  # du = 0 still decays
    assert decay(ints(-1, 1, -4095), 4095).tolist() == [0, 0, -4094]  # not floor: −1 → 0
    assert decay(ints(-(2**23 - 1), 2**23), 2048).tolist() == [-(2**22 - 1), 2**22]
    assert decay(ints(5, -5), 4096).tolist() == [5, -5]  # factor 1: no decay
    assert decay(ints(5, -5), 0).tolist() == [0, 0]


def test_exponent_shifts_floor_and_bias_examples() -> None:
    assert shift(ints(-7, -1, 7, -7), ints(-2, -3, -2, 2)).tolist() == [-2, -1, 1, -28]
    assert shift(ints(-1, -1), -1).tolist() == [-1, -1]  # floor of the SUM, not per synapse


def test_current_wraps_once_and_voltage_saturates() -> None:
    limit = STATE_LIMIT
    wrapped = wrap24(ints(limit - 1, limit, limit + 1, -limit + 1, -limit, -limit - 1,
                          10_444_800, 3 * limit))
    assert wrapped.tolist() == [limit - 1, limit, -limit + 1, -limit + 1, limit, limit - 1,
                                -6_332_416, limit]  # beyond ±2^24: corrected once only
    assert saturate24(ints(limit, -limit, 5)).tolist() == [limit - 1, -(limit - 1), 5]


def one_lif(**values: int) -> LifParameters:
    return LifParameters(du=values.get("du", -1), dv=values.get("dv", 0), vth=values.get("vth", 10),
                         bias_mant=np.array([values.get("bias", 0)]), bias_exp=np.array([0]))


def test_lif_threshold_is_strict_and_resets_v_only() -> None:
    parameters = one_lif(vth=10)  # θ = 640
    u, v, s = lif_step(ints(0)[None], ints(0)[None], ints(10)[None], parameters)
    assert (u.item(), v.item(), s.item()) == (640, 640, False)  # v = θ does not spike
    u, v, s = lif_step(ints(0)[None], ints(1)[None], ints(10)[None], parameters)
    assert (u.item(), v.item(), s.item()) == (640, 0, True)  # v = θ + 1 spikes, u kept
    with pytest.raises(ValueError, match="2\\^25"):
        lif_step(ints(0)[None], ints(0)[None], ints(2**25)[None], parameters)


def test_dense_sign_modes_sums_and_timing() -> None:
    assert [sign_mode_of(np.array(w)) for w in ([[0, 0]], [[0, 3]], [[0, -3]], [[-1, 1]])] == [
        "excitatory", "excitatory", "inhibitory", "mixed"]
    held = DenseWeights.prepare([[3, 1, -1], [255, -3.7, 1000]])
    assert held.sign_mode == "mixed" and held.weights.tolist() == [[2, 0, -2], [254, -4, 254]]
    weights = torch.as_tensor([[-1, -1]])
    assert dense_step(weights, -1, ints(1, 1)[None]).tolist() == [[-1]]  # floor(−2/2)
    assert dense_step(torch.full((1, 300), 255), 0, torch.ones(1, 300)).item() == 76_500
    assert dense_step(torch.as_tensor([[2, 3]]), 0, ints(5, 2)[None], graded=True).item() == 16


def test_lava_processes_get_plain_python_scalars() -> None:
    # numpy scalars make Lava's Var.get hang (spec §5.4)
    lif = lava_arguments(LifParameters(np.int64(5), np.int64(410), np.int64(10),
                                       np.zeros(3, np.int32), np.zeros(3, np.int32)))
    atrlif = lava_arguments(AtrlifParameters(*np.full(4, 0.25), np.float64(5.5), np.float64(1),
                                             np.zeros(3, np.int32), np.zeros(3, np.int32)))
    assert {name: type(value) for name, value in lif.items()} == {
        "shape": tuple, "du": int, "dv": int, "vth": int, "bias_mant": np.ndarray,
        "bias_exp": np.ndarray}
    assert {type(atrlif[name]) for name in ("delta_i", "delta_v", "delta_theta", "delta_r",
                                            "theta_0", "theta_step")} == {float}
    assert atrlif["shape"] == (3,) and atrlif["bias_mant"].dtype == np.int64


# --- parity with real Lava ------------------------------------------------------------------


def random_network(rng: np.random.Generator, inputs: int, sizes: list[int], regime: str,
                   hidden: str = "lif") -> tuple[LifNetwork, list[dict[str, np.ndarray]]]:
    """A random chain of layers of ``sizes`` (each but the last recurrent; ``hidden`` ones of
    ``lif`` or ``atrlif`` neurons, the readout LIF) over the whole legal parameter range
    (``wide``), driven hard enough to spike often (``busy``), or to wrap currents and saturate
    voltages (``extreme``); returns it and the raw initial weights Lava gets (Lava
    preprocesses them itself)."""

    def lif(size: int) -> LifParameters:
        vth = {"wide": (0, 131_072), "busy": (0, 300), "extreme": (50_000, 131_072)}[regime]
        return LifParameters(
            du=int(rng.integers(-1, 4096)) if regime != "extreme" else -1,
            dv=int(rng.integers(0, 4097)) if regime != "extreme" else 0,
            vth=int(rng.integers(*vth)),
            bias_mant=rng.integers(-1024 if regime == "busy" else -4096, 4096, size),
            bias_exp=rng.integers(0 if regime == "busy" else -7, 8, size))

    def dense(out: int, into: int) -> tuple[np.ndarray, DenseWeights]:
        return random_dense(rng, out, into, regime)

    layers, raws, width = [], [], inputs
    for index, size in enumerate(sizes):
        raw_in, w_in = dense(size, width)
        raw = {"w_in": raw_in}
        w_rec = None
        if index < len(sizes) - 1:
            raw["w_rec"], w_rec = dense(size, size)
        atrlif = hidden == "atrlif" and w_rec is not None
        layers.append(LifLayer(w_in, random_atrlif(rng, size, regime) if atrlif else lif(size),
                               w_rec))
        raws.append(raw)
        width = size
    return LifNetwork(tuple(layers)), raws


def assert_trajectories_equal(lava: Trajectory, emulator: Trajectory) -> None:
    assert len(lava.layers) == len(emulator.layers)
    for layer, (expected, got) in enumerate(zip(lava.layers, emulator.layers)):
        assert expected.keys() == got.keys(), f"layer {layer} records differ"
        for name, values in expected.items():
            assert values.shape == got[name].shape, f"layer {layer} {name}"
            mismatch = np.argwhere(values != got[name])
            assert mismatch.size == 0, (f"layer {layer} {name} differs first at "
                                        f"(sample, step, neuron) {mismatch[0]}")


def sample(trajectory: Trajectory, index: int) -> Trajectory:
    """The (1, T, N) records of one sample of a batch."""
    return Trajectory([{name: values[index : index + 1] for name, values in layer.items()}
                       for layer in trajectory.layers])


PARITY_CASES = [([1, 5], "wide", "lif"), ([7, 5], "busy", "lif"), ([64, 5], "wide", "lif"),
                ([64, 5], "busy", "lif"), ([256, 5], "busy", "lif"), ([32, 5], "extreme", "lif"),
                ([24, 16, 5], "busy", "lif"), ([16, 5], "wide", "atrlif"),
                ([64, 5], "busy", "atrlif"), ([32, 5], "extreme", "atrlif"),
                ([24, 16, 5], "busy", "atrlif")]


@pytest.mark.parametrize("sizes,regime,hidden", PARITY_CASES)
def test_emulator_equals_lava_fixed_pt_at_every_step(sizes: list[int], regime: str,
                                                     hidden: str) -> None:
    rng = np.random.default_rng(sum(sizes) * 31 + len(regime))  # fixed seeds: deterministic
    network, raw = random_network(rng, 12, sizes, regime, hidden)
    rate = {"wide": 0.2, "busy": 0.3, "extreme": 0.5}[regime]
    inputs = (rng.random((STEPS, 12)) < rate).astype(np.int64)
    lava = call_isolated(run_in_lava, network, inputs, raw, timeout=LAVA_TIMEOUT)
    emulator, _ = emulate(network, inputs[None])
    assert_trajectories_equal(lava, emulator)
    spikes = int(emulator.spikes[0].sum())
    if regime == "busy":
        assert spikes > STEPS * sizes[0] // 20, "the busy regime must spike often"
        assert all(int(s.sum()) > 0 for s in emulator.spikes[:-1]), "every hidden layer spikes"
    if regime == "extreme":  # the edges were reached: wrapped currents, saturated voltages
        jumps = np.abs(np.diff(emulator.u[0], axis=1))
        assert (jumps > STATE_LIMIT).any()
        assert (np.abs(emulator.v[0]) == STATE_LIMIT - 1).any()
    if hidden == "atrlif":  # every hidden layer's thresholds adapted (r > 0 after a spike)
        assert all(layer["r"].any() for layer in emulator.layers[:-1])


@pytest.mark.parametrize("hidden", ["lif", "atrlif"])
def test_a_batch_equals_its_samples_one_by_one_and_a_run_continues_from_its_state(
        hidden: str) -> None:
    rng = np.random.default_rng(5)
    network, _ = random_network(rng, 12, [16, 3], "busy", hidden)
    inputs = (rng.random((6, 80, 12)) < 0.3).astype(np.int64)
    batch, _ = emulate(network, inputs)
    for index in range(len(inputs)):
        alone, _ = emulate(network, inputs[index : index + 1])
        assert_trajectories_equal(alone, sample(batch, index))
    first, state = emulate(network, inputs[:, :30])
    rest, _ = emulate(network, inputs[:, 30:], state)
    assert_trajectories_equal(batch, Trajectory(
        [{name: np.concatenate([values, tail[name]], axis=1) for name, values in head.items()}
         for head, tail in zip(first.layers, rest.layers)]))


def test_an_isolated_call_that_hangs_or_fails_is_stopped() -> None:
    with pytest.raises(IsolatedError, match="longer than"):
        call_isolated(_sleep_forever, timeout=2.0)
    with pytest.raises(IsolatedError, match="ValueError: broken"):
        call_isolated(_fail, timeout=60.0)


def _sleep_forever() -> None:
    import time

    while True:
        time.sleep(1)


def _fail() -> None:
    raise ValueError("broken")
