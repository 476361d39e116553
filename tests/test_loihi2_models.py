"""Lava 0.10.0's fixed-point ATRLIF and RF neurons: the integer emulators on hand-computed cases,
and their bit-exact parity with real Lava ``fixed_pt`` processes (spec loihi2_lava_nir.md §4.1,
§4.2, §10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulators.loihi2.atrlif import (
    AtrlifParameters,
    atrlif_initial_state,
    atrlif_start,
    atrlif_step,
    float_decay,
)
from simulators.loihi2.dense import DenseWeights, dense_step
from simulators.loihi2.fixed_point import STATE_LIMIT
from simulators.loihi2.isolation import call_isolated
from simulators.loihi2.lava_models_run import run_atrlif_in_lava, run_rf_in_lava
from simulators.loihi2.lif import LifParameters, lif_step
from simulators.loihi2.rf import RfParameters, rf_decays, rf_step
from loihi_random import random_atrlif, random_dense

LAVA_TIMEOUT = 120.0  # seconds for one isolated Lava run (one takes about 4 s here)
STEPS = 400
INPUTS = 12
MAX = STATE_LIMIT - 1  # the saturation limit ±(2^23 − 1)


def ints(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def rows(*values: int) -> torch.Tensor:
    return ints(*values)[None]


def atrlif(size: int = 1, **values: float) -> AtrlifParameters:
    defaults = dict(delta_i=0.0, delta_v=0.0, delta_theta=0.0, delta_r=0.0, theta_0=1.0,
                    theta_step=0.0)
    defaults.update(values)
    return AtrlifParameters(**defaults, bias_mant=np.zeros(size, dtype=np.int64),
                            bias_exp=np.zeros(size, dtype=np.int64))


# --- ATRLIF on hand-computed cases (spec §4.1) ---------------------------------------------


def test_atrlif_current_truncates_the_float64_product_and_v_the_factor() -> None:
    # δ = 0.9: the current's float factor 4096 − (0.9·4096 + 1) is 408.5999999999999 (not
    # 408.6), so 20480·factor = 8368127.99… truncates to 8368127 → tz(/4096) = 2042 (exact
    # arithmetic would give 2043); v's factor is truncated first: int(409.59…) = 409, and
    # 20480·409/4096 = 2045.
    parameters = atrlif(2, delta_i=0.9, delta_v=0.9, theta_0=1e4)
    assert parameters.current_factor == 408.5999999999999
    assert parameters.integer_factors == (409, 4096, 4096)  # δθ = δr = 0: no decay
    assert float_decay(ints(20480, -20480), parameters.current_factor).tolist() == [2042, -2042]
    state = rows(20480, -20480)
    i, v, _, _, _ = atrlif_step(state, state, rows(640_000, 640_000), rows(0, 0), rows(0, 0),
                                parameters)
    assert i.tolist() == [[2042, -2042]]
    assert v.tolist() == [[2045 + 2042, -2045 - 2042]]
    # truncation toward zero, not floor: −1·4095/4096 → 0 (δi = 0 still decays by 1/4096)
    assert float_decay(ints(-1, 1, 128, -4095), atrlif().current_factor).tolist() == [
        0, 0, 127, -4094]


def test_atrlif_scales_thresholds_by_truncation_and_overwrites_theta() -> None:
    parameters = atrlif(3, theta_0=3.7, theta_step=3.75)
    assert (parameters.scaled_theta_0, parameters.scaled_theta_step) == (236, 240)
    assert atrlif(theta_0=-1.3).scaled_theta_0 == -83  # toward zero, not −84
    state = rows(5, -6, 7)
    i, v, theta, r = atrlif_start(state, state, rows(1, 99_999, -5), state, parameters)
    assert theta.tolist() == [[236, 236, 236]] and i.tolist() == [[5, -6, 7]]
    assert [t.tolist() for t in atrlif_initial_state(2, parameters)] == [
        [[0] * 3] * 2, [[0] * 3] * 2, [[236] * 3] * 2, [[0] * 3] * 2]


def test_atrlif_spikes_at_equality_and_adapts_without_resetting_v() -> None:
    parameters = atrlif(delta_theta=0.5, delta_r=0.5, theta_0=1.0, theta_step=0.5)  # θ0 64
    i, v, theta, r = atrlif_initial_state(1, parameters)
    i, v, theta, r, s = atrlif_step(i, v, theta, r, rows(1), parameters)
    assert (i.item(), v.item(), s.item()) == (64, 64, True)  # v − r = 64 = θ: spikes (≥)
    assert (r.item(), theta.item()) == (128, 96)  # r += 2θ, θ += θ_step; v not reset
    i, v, theta, r, s = atrlif_step(i, v, theta, r, rows(0), parameters)
    # i: 64·4095/4096 → 63; v: 64 + 63; θ: tz(32·2048/4096) + 64; r: 128·2048/4096
    assert (i.item(), v.item(), theta.item(), r.item(), s.item()) == (63, 127, 80, 64, False)
    lif = LifParameters(du=-1, dv=0, vth=1, bias_mant=np.zeros(1), bias_exp=np.zeros(1))
    assert not lif_step(rows(0), rows(0), rows(1), lif)[2].item()  # LIF needs v > θ


def test_atrlif_bias_wrap_and_saturation() -> None:
    parameters = AtrlifParameters(0.0, 0.0, 0.0, 0.0, 1e4, 0.0, bias_mant=np.array([-7, 3, 0, 0]),
                                  bias_exp=np.array([-2, 2, 0, 0]))
    zero = rows(0, 0, 0, 0)
    theta = torch.full_like(zero, parameters.scaled_theta_0)
    i, v, _, _, s = atrlif_step(zero, zero, theta, zero, rows(0, 0, 2**17, 2**17 + 1),
                                parameters)
    assert i.tolist() == [[0, 0, STATE_LIMIT, -STATE_LIMIT + 64]]  # +2^23 kept, then wraps
    assert v.tolist() == [[-2, 12, MAX, -STATE_LIMIT + 64]]  # floor bias −7>>2; v saturates
    i, v, _, _, s = atrlif_step(zero, rows(0, 0, -MAX, MAX), theta, zero,
                                rows(0, 0, -2**16, 2**16), parameters)
    assert v.tolist() == [[-2, 12, -MAX, MAX]]


def test_atrlif_refuses_what_would_overflow_lavas_int32() -> None:
    parameters = atrlif(theta_0=1.0)
    i, v, theta, r = atrlif_initial_state(1, parameters)
    with pytest.raises(ValueError, match="2\\^25"):
        atrlif_step(i, v, theta, r, rows(2**25), parameters)
    with pytest.raises(ValueError, match="int32"):
        atrlif_step(i, rows(-100), theta, rows(2**31 - 1), rows(0), parameters)
    with pytest.raises(ValueError, match="fraction"):
        atrlif(delta_v=1.5)


# --- RF on hand-computed cases (spec §4.2) -------------------------------------------------


def test_rf_decays_and_threshold_as_the_process_computes_them() -> None:
    assert rf_decays(12, 0.07, 12) == (1904, 3298)  # the spec's measured pair
    assert rf_decays(4, 0.0, 12) == (4096, 0)  # cos(π/2)·4096 ≈ 2.5e−13 truncates to 0
    assert rf_decays(4, 0.5, 12) == (2048, 0)
    assert rf_decays(8, 0.0, 1) == (1, 1)  # 1.414… → 1
    assert RfParameters(12, 0.07, 6, 12, 100).scaled_vth == 6400
    assert RfParameters(12, 0.07, 1, 12, 1.9).scaled_vth == 3
    assert RfParameters(12, 0.07, 0, 12, 1.9).scaled_vth == 1
    with pytest.raises(ValueError, match="decay_bits"):
        RfParameters(12, 0.07, 6, 0, 100)


def test_rf_spikes_on_an_upward_zero_crossing_above_threshold() -> None:
    quarter = RfParameters(period=4, alpha=0.0, state_exp=0, decay_bits=12, vth=3)  # rotate 90°
    real, imag = rows(5, 5, 0, -2, 3, 4), rows(-3, 0, -5, -4, -2, 3)
    zero = torch.zeros_like(real)
    new_real, new_imag, spikes = rf_step(real, imag, zero, zero, quarter)
    assert new_real.tolist() == [[3, 0, 5, 4, 2, -3]]  # re' = −im
    assert new_imag.tolist() == [[5, 5, 0, -2, 3, 4]]  # im' = re
    # re' = vth counts (≥), im' = 0 counts as crossed; im must have been < 0 before; a neuron
    # still below zero or under threshold stays silent
    assert spikes.tolist() == [[True, False, True, False, False, False]]
    _, _, spikes = rf_step(real, imag, rows(0, 0, 0, 0, 1, 0), zero, quarter)
    assert spikes.tolist() == [[True, False, True, False, True, False]]  # input counts first
    new_real, new_imag, spikes = rf_step(new_real, new_imag, zero, zero, quarter)
    assert spikes.tolist() == [[False] * 6]  # no reset, and no second crossing right after


def test_rf_scales_toward_zero_shifts_inputs_and_clips() -> None:
    half = RfParameters(period=4, alpha=0.5, state_exp=6, decay_bits=12, vth=0)  # sin 2048
    new_real, new_imag, _ = rf_step(rows(5, -5), rows(-3, 3), rows(0, 0), rows(1, -1), half)
    assert new_real.tolist() == [[1, -1]]  # −tz(2048·∓3/4096) = ±1 (floor would give ±2)
    assert new_imag.tolist() == [[2 + 64, -2 - 64]]  # tz(±5/2) + (±1 << 6)
    big = 2**17 + 1  # << 6 passes 2^23
    new_real, new_imag, _ = rf_step(rows(0, 0), rows(0, 0), rows(big, -big), rows(-big, big),
                                    half)
    assert new_real.tolist() == [[MAX, -MAX]] and new_imag.tolist() == [[-MAX, MAX]]
    with pytest.raises(ValueError, match="2\\^31"):
        rf_step(rows(0), rows(0), rows(2**25), rows(0), half)


# --- parity with real Lava ------------------------------------------------------------------


def random_rf(rng: np.random.Generator, regime: str) -> RfParameters:
    if regime == "busy":
        return RfParameters(float(rng.uniform(3, 20)), float(rng.uniform(0, 0.1)), 6, 12,
                            float(rng.uniform(0, 200)))
    state_exp = 6 if regime == "extreme" else int(rng.integers(0, 8))
    return RfParameters(float(rng.uniform(2, 64)), float(rng.uniform(0, 0.5)), state_exp,
                        int(rng.integers(1, 16)), float(rng.uniform(0, 5000)))


def emulate_atrlif(connection: DenseWeights, parameters: AtrlifParameters, inputs: np.ndarray,
                   initial: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Dense → ATRLIF in the emulator, one step at a time: each step integrates what the Dense
    computed from the previous step's input (spec §1.3)."""
    size = parameters.size
    start = {name: torch.as_tensor(initial[name])[None] if initial else
             torch.zeros(1, size, dtype=torch.int64) for name in ("i", "v", "theta", "r")}
    i, v, theta, r = atrlif_start(start["i"], start["v"], start["theta"], start["r"], parameters)
    weights, x = torch.as_tensor(connection.weights), torch.as_tensor(inputs)
    pending = torch.zeros(1, size, dtype=torch.int64)
    recorded: dict[str, list[torch.Tensor]] = {"i": [], "v": [], "theta": [], "r": [],
                                               "spikes": []}
    for step in range(len(inputs)):
        activation = pending
        pending = dense_step(weights, connection.weight_exp, x[step : step + 1])
        i, v, theta, r, spikes = atrlif_step(i, v, theta, r, activation, parameters)
        for name, value in zip(recorded, (i, v, theta, r, spikes)):
            recorded[name].append(value[0].to(torch.int64))
    return {name: torch.stack(values).numpy() for name, values in recorded.items()}


def emulate_rf(real_connection: DenseWeights, imag_connection: DenseWeights | None,
               parameters: RfParameters, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Dense → RF (real and, if given, imaginary InPort) in the emulator, step by step."""
    size = real_connection.weights.shape[0]
    real = torch.zeros(1, size, dtype=torch.int64)
    imag, pending_real, pending_imag = real.clone(), real.clone(), real.clone()
    x = torch.as_tensor(inputs)
    recorded: dict[str, list[torch.Tensor]] = {"real": [], "imag": [], "spikes": []}
    for step in range(len(inputs)):
        a_real, a_imag = pending_real, pending_imag
        pending_real = dense_step(torch.as_tensor(real_connection.weights),
                                  real_connection.weight_exp, x[step : step + 1])
        if imag_connection is not None:
            pending_imag = dense_step(torch.as_tensor(imag_connection.weights),
                                      imag_connection.weight_exp, x[step : step + 1])
        real, imag, spikes = rf_step(real, imag, a_real, a_imag, parameters)
        for name, value in zip(recorded, (real, imag, spikes)):
            recorded[name].append(value[0].to(torch.int64))
    return {name: torch.stack(values).numpy() for name, values in recorded.items()}


def assert_states_equal(lava: dict[str, np.ndarray], emulator: dict[str, np.ndarray]) -> None:
    assert lava.keys() == emulator.keys()
    for name, expected in lava.items():
        assert expected.shape == emulator[name].shape, name
        mismatch = np.argwhere(expected != emulator[name])
        assert mismatch.size == 0, (
            f"{name} differs first at (step, neuron) {mismatch[0]}: Lava "
            f"{expected[tuple(mismatch[0])]}, emulator {emulator[name][tuple(mismatch[0])]}")


RATES = {"wide": 0.2, "busy": 0.3, "extreme": 0.5}
ATRLIF_CASES = [(1, "wide", False), (7, "busy", True), (64, "wide", True), (64, "busy", False),
                (7, "extreme", False)]


@pytest.mark.parametrize("size,regime,initial_state", ATRLIF_CASES)
def test_atrlif_equals_lava_fixed_pt_at_every_step(size: int, regime: str,
                                                   initial_state: bool) -> None:
    rng = np.random.default_rng(1000 + size * 31 + len(regime))  # fixed seeds: deterministic
    raw, connection = random_dense(rng, size, INPUTS, regime)
    parameters = random_atrlif(rng, size, regime)
    inputs = (rng.random((STEPS, INPUTS)) < RATES[regime]).astype(np.int64)
    initial = None
    if initial_state:  # Lava keeps the initial i, v and r, and discards θ (θ ← θ0)
        initial = {"i": rng.integers(-2**20, 2**20, size), "v": rng.integers(-2**20, 2**20, size),
                   "theta": rng.integers(-999, 999, size), "r": rng.integers(0, 2**16, size)}
    lava = call_isolated(run_atrlif_in_lava, connection, parameters, inputs, raw, initial,
                         timeout=LAVA_TIMEOUT)
    emulator = emulate_atrlif(connection, parameters, inputs, initial)
    assert_states_equal(lava, emulator)
    spikes = int(emulator["spikes"].sum())
    if regime == "busy":
        assert spikes > STEPS * size // 20, f"the busy regime must spike often ({spikes})"
    if regime == "extreme":  # the edges were reached: wrapped currents, saturated voltages
        assert spikes > 0
        assert (np.abs(np.diff(emulator["i"], axis=0)) > STATE_LIMIT).any()
        assert (np.abs(emulator["v"]) == MAX).any()


RF_CASES = [(1, "wide", True), (7, "busy", True), (7, "busy", False), (64, "wide", True),
            (64, "busy", True), (16, "extreme", True)]


@pytest.mark.parametrize("size,regime,imaginary_input", RF_CASES)
def test_rf_equals_lava_fixed_pt_at_every_step(size: int, regime: str,
                                               imaginary_input: bool) -> None:
    rng = np.random.default_rng(2000 + size * 31 + len(regime) + imaginary_input)
    raw_real, real_connection = random_dense(rng, size, INPUTS, regime)
    raw_imag, imag_connection = random_dense(rng, size, INPUTS, regime)
    if not imaginary_input:  # a_imag_in left unconnected: Lava delivers zeros there
        imag_connection = None
    parameters = random_rf(rng, regime)
    inputs = (rng.random((STEPS, INPUTS)) < RATES[regime]).astype(np.int64)
    lava = call_isolated(run_rf_in_lava, real_connection, imag_connection, parameters, inputs,
                         {"real": raw_real, "imag": raw_imag}, timeout=LAVA_TIMEOUT)
    emulator = emulate_rf(real_connection, imag_connection, parameters, inputs)
    assert_states_equal(lava, emulator)
    spikes = int(emulator["spikes"].sum())
    if regime == "busy":
        assert spikes > STEPS * size // 50, f"the busy regime must spike ({spikes})"
    if regime == "extreme":
        assert spikes > 0
        assert (np.abs(emulator["real"]) == MAX).any() and (np.abs(emulator["imag"]) == MAX).any()
