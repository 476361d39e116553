"""The PCM crossbar model: device statistics against aihwkit's golden table, program-and-verify,
noise-free exactness, drift compensation, analog MVM and state."""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.backends import open_backend
from simulators.pcm.backend import PCMBackend
from simulators.pcm.noise import HermesFit, PCMLikeFit
from simulators.pcm.normals import TorchNormals
from simulators.pcm.pulse import PulseModel

# aihwkit PCMLikeNoiseModel(g_max=25), 400k samples per row (spec B6): g_T (µS) →
# (σ_prog formula, ν mean, ν std, mean g(1 h), std g(1 h)). Values are rounded as printed there.
GOLDEN = {
    0.0: (0.2635, 0.1004, 0.0440, 0.066, 0.122),
    1.0: (0.3402, 0.0746, 0.0335, 0.689, 0.354),
    2.5: (0.4482, 0.0601, 0.0227, 1.842, 0.528),
    5.0: (0.6096, 0.0494, 0.0142, 3.880, 0.723),
    10.0: (0.8618, 0.0490, 0.0080, 7.758, 0.951),
    12.5: (0.9527, 0.0490, 0.0080, 9.697, 1.057),
    20.0: (1.0847, 0.0490, 0.0080, 15.519, 1.302),
    25.0: (1.0554, 0.0490, 0.0080, 19.396, 1.410),
}
SAMPLES = 400_000
HOUR = 3600.0


@pytest.mark.parametrize("g_target", sorted(GOLDEN))
def test_pcm_like_statistics_match_the_golden_table(g_target: float) -> None:
    # fixed seeds: deterministic (tolerances ≥ 3.4 standard errors of each statistic)
    sigma_formula, nu_mean, nu_std, g_mean, g_std = GOLDEN[g_target]
    fit, rng = PCMLikeFit(), TorchNormals(int(g_target * 10))  # the backend's normal source
    targets = np.full(SAMPLES, g_target)
    assert fit.sigma_programming(np.array(g_target)) == pytest.approx(sigma_formula, abs=5e-5)
    programmed = fit.program(targets, rng)
    if g_target > 0:  # at 0 the clamp at 0 µS cuts the distribution (table: 0.1536 sampled)
        assert (programmed - targets).std() == pytest.approx(sigma_formula, rel=0.02)
    nu = fit.drift_exponents(targets, rng)
    assert nu.mean() == pytest.approx(nu_mean, rel=0.01)
    assert nu.std() == pytest.approx(nu_std, rel=0.03)
    after_hour = fit.conductance(programmed, nu, fit.flicker(programmed, rng), HOUR)
    # ±1 % of the mean, but no tighter than the table's printed rounding (half a unit: 5e-4)
    assert after_hour.mean() == pytest.approx(g_mean, rel=0.01, abs=5e-4)
    assert after_hour.std() == pytest.approx(g_std, rel=0.03)


def test_one_reading_time_for_all_devices_equals_per_device_times() -> None:
    fit, rng = PCMLikeFit(), np.random.default_rng(11)
    programmed = fit.program(np.full(1000, 10.0), rng)
    nu, flicker = fit.drift_exponents(programmed, rng), fit.flicker(programmed, rng)
    for seconds in (0.0, HOUR, 30 * 86400.0):
        np.testing.assert_allclose(fit.conductance(programmed, nu, flicker, seconds),
                                   fit.conductance(programmed, nu, flicker, np.full(1000, seconds)),
                                   rtol=1e-6)  # float32 drift factors


def test_torch_normals_are_standard_and_resume_from_their_state() -> None:
    # fixed seed: deterministic (tolerances ≥ 6 standard errors)
    source = TorchNormals(5)
    draws = source.standard_normal((400_000,))
    assert abs(draws.mean()) < 0.01 and draws.std() == pytest.approx(1.0, rel=0.01)
    saved = source.state()
    ahead = source.standard_normal((3, 7))
    resumed = TorchNormals(0)
    resumed.set_state(saved)
    np.testing.assert_array_equal(resumed.standard_normal((3, 7)), ahead)
    assert not np.array_equal(TorchNormals(6).standard_normal(8), TorchNormals(5).standard_normal(8))


def test_hermes_fit_uses_the_chip_constants() -> None:
    fit = HermesFit()
    assert fit.sigma_programming(np.array([0.0, 20.7])) == pytest.approx(
        [0.16603222, 0.16603222 + 4.71806468 - 8.48101252 + 4.68961419]
    )
    mean, std = fit.drift_statistics(np.array([1e-9, 20.7]))
    assert mean == pytest.approx([0.13, -0.0436 - 0.0126 + 0.0736])
    assert std == pytest.approx([0.04, -0.0118 + 0.0093 + 0.0073])
    with pytest.raises(ValueError, match="characterised up to"):
        HermesFit(g_max=30.0)


def test_gradual_set_rises_and_saturates_below_g_max() -> None:
    # fixed seed: deterministic (tolerances ≥ 2.9 standard errors)
    model, rng = PulseModel(), np.random.default_rng(0)
    # away from the clipping bounds one pulse adds N(μ, σ): μ = m1 G + c1 + A1 e^(−n/a), ...
    g, tenth = np.full(200_000, 5.0), np.full(200_000, 10)
    step = model.set_pulse(g, tenth, rng) - g
    decay = np.exp(-10 / 2.6)
    assert step.mean() == pytest.approx(-0.084 * 5 + 0.88 + 1.40 * decay, rel=0.01)
    assert step.std() == pytest.approx(0.091 * 5 + 0.26 + 2.15 * decay, rel=0.01)
    g = model.reset((20_000,), rng)
    means, counts = [], np.zeros(20_000)
    for _ in range(20):
        g = model.set_pulse(g, counts, rng)
        counts += 1
        means.append(g.mean())
    assert means[0] < means[2] < means[5] < means[19]
    assert means[19] - means[15] < means[3] - means[0]  # the response saturates
    assert means[19] < model.g_ceiling and g.std() > 0.3  # below G_max, with spread


def test_program_and_verify_converges_and_reports_failures() -> None:
    # fixed seeds: deterministic
    backend = open_backend("pcm://?mode=verify&seed=1")
    weights = np.random.default_rng(2).normal(size=(256, 256))
    backend.declare("layer", weights.shape)
    report = backend.program("layer", weights)
    assert report.cells_programmed == weights.size
    assert report.iterations <= 20
    assert report.failures <= 0.01 * weights.size  # ≥ 99 % converge at the default tolerance
    assert report.pulses > weights.size  # gradual SET: several pulses per written pair
    # a single verify iteration cannot converge most cells; they are reported, not hidden
    hurried = open_backend("pcm://?mode=verify&max_iterations=1&seed=1")
    hurried.declare("layer", weights.shape)
    assert hurried.program("layer", weights).failures > 0.3 * weights.size


def test_noise_off_reads_back_the_quantized_target_exactly() -> None:
    weights = np.random.default_rng(3).uniform(-2, 2, size=(40, 30))
    device = open_backend("pcm://?noise=false&bits=4")
    reference = open_backend("ideal://?bits=4")
    for backend in (device, reference):
        backend.declare("layer", weights.shape)
        backend.program("layer", weights)
    held = device.arrays["layer"]  # type: ignore[attr-defined]
    assert np.abs(held.levels).max() <= 7
    np.testing.assert_array_equal(device.read("layer"), held.levels * held.scale)
    np.testing.assert_array_equal(device.read("layer"), reference.read("layer"))
    device.advance_time(30 * 86_400.0)
    np.testing.assert_array_equal(device.read("layer"), reference.read("layer"))


def test_drift_lowers_weights_and_compensation_restores_their_scale() -> None:
    # fixed seeds: deterministic
    weights = np.random.default_rng(4).normal(size=(64, 64))
    plain, compensated = PCMBackend(gdc=False, seed=5), PCMBackend(gdc=True, seed=5)
    for backend in (plain, compensated):
        backend.declare("layer", weights.shape)
        backend.program("layer", weights)
    fresh = np.abs(plain.read("layer")).mean()
    for backend in (plain, compensated):
        backend.advance_time(86_400.0)
    drifted = np.abs(plain.read("layer")).mean()
    assert drifted < 0.8 * fresh  # ν ≈ 0.05–0.1 over a day
    assert np.abs(compensated.read("layer")).mean() == pytest.approx(fresh, rel=1e-9)


def test_a_write_that_changes_nothing_keeps_the_drift_compensation() -> None:
    weights = np.random.default_rng(9).normal(size=(32, 32))
    backend = PCMBackend(seed=1)
    backend.declare("layer", weights.shape)
    backend.program("layer", weights)
    backend.advance_time(30 * 86_400.0)
    drifted = backend.read("layer")
    report = backend.program("layer", weights)  # same levels: nothing is written
    assert report.cells_programmed == 0 and report.device_seconds == 0.0
    np.testing.assert_array_equal(backend.read("layer"), drifted)  # GDC reference kept
    assert backend.refresh("layer").cells_programmed == 0
    np.testing.assert_array_equal(backend.read("layer"), drifted)


def test_only_changed_levels_are_reprogrammed() -> None:
    backend = PCMBackend(seed=0)
    weights = np.random.default_rng(6).normal(size=(16, 16))
    backend.declare("layer", weights.shape)
    backend.program("layer", weights)
    assert backend.program("layer", weights).cells_programmed == 0
    step = backend.weight_step("layer")
    changed = weights.copy()
    changed[0, :4] += 2 * step[0, 0]
    assert backend.program("layer", changed).cells_programmed == 4
    assert backend.counters()["writes"] == 2 * (weights.size + 4)


def test_pulses_move_weights_and_refresh_frees_saturated_pairs() -> None:
    backend = PCMBackend(seed=0, fit="pcm", g_max=10.0)
    backend.declare("layer", (8, 8))
    backend.program("layer", np.zeros((8, 8)) + np.eye(8))
    before = backend.read("layer")
    up = np.zeros((8, 8), dtype=np.int64)
    up[0, 1] = 3
    report = backend.pulse("layer", up)
    assert backend.read("layer")[0, 1] > before[0, 1]
    held = backend.arrays["layer"]
    reached = np.rint(backend.read("layer")[0, 1] / held.scale[0, 0])
    assert held.levels[0, 1] == reached  # the level it now holds, not the one aimed at (3)
    assert report.cells_programmed == 1 and report.pulses == 3
    assert report.write_error == pytest.approx(abs(backend.read("layer")[0, 1] - 3 * held.scale[0, 0]))
    assert backend.pulse("layer", np.zeros((8, 8), dtype=np.int64)).cells_programmed == 0
    both = np.full((8, 8), 12, dtype=np.int64)
    backend.pulse("layer", both)
    backend.pulse("layer", -both)  # both devices of every pair are now high
    g = backend.arrays["layer"].conductances(backend.fit, backend.clock)
    stuck = (g.max(axis=0) > backend.refresh_threshold) & (
        np.abs(g[0] - g[1]) < backend.refresh_threshold / 4
    )
    report = backend.refresh("layer")
    assert report is not None and report.cells_programmed == stuck.sum() > 0
    g = backend.arrays["layer"].conductances(backend.fit, backend.clock)
    assert g.min(axis=0)[stuck].max() < 1.0  # one device of each refreshed pair is back low


def test_analog_mvm_matches_the_digital_product_without_noise() -> None:
    # fixed seeds: deterministic
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(300, 300))
    inputs = (rng.random((4, 300)) < 0.05).astype(np.float64)  # sparse spikes
    tiled = open_backend("pcm://?noise=false&dac_bits=8&adc_bits=12")
    tiled.declare("layer", weights.shape)
    tiled.program("layer", weights)
    exact = inputs @ tiled.read("layer").T
    analog = tiled.mvm("layer", inputs)  # type: ignore[attr-defined]
    assert analog.shape == (4, 300)
    assert np.abs(analog - exact).max() < 0.02 * np.abs(exact).max()
    noisy = open_backend("pcm://?dac_bits=8&adc_bits=8&seed=1")
    noisy.declare("layer", weights.shape)
    noisy.program("layer", weights)
    assert not np.array_equal(noisy.mvm("layer", inputs), noisy.mvm("layer", inputs))


def test_state_dict_continues_bit_identically() -> None:
    weights = np.random.default_rng(8).normal(size=(20, 10))
    first = PCMBackend(mode="verify", seed=3)
    first.declare("layer", weights.shape)
    first.program("layer", weights)
    copy = PCMBackend(mode="verify", seed=99)
    copy.load_state_dict(first.state_dict())
    for backend in (first, copy):
        backend.program("layer", -weights)
        backend.advance_time(100.0)
    np.testing.assert_array_equal(first.read("layer"), copy.read("layer"))


@pytest.mark.parametrize(
    "spec,message",
    [
        ("pcm://?bits=0", "bits must lie in 1..8"),
        ("pcm://?bits=9", "bits must lie in 1..8"),
        ("pcm://?bits=1", "bits >= 2"),
        ("pcm://?mode=fast", "unknown PCM mode"),
        ("pcm://?fit=rram", "unknown PCM fit"),
        ("pcm://?colour=red", "unexpected keyword"),
    ],
)
def test_bad_options_are_one_line_errors(spec: str, message: str) -> None:
    from hwloop.errors import UserError

    with pytest.raises(UserError, match=message):
        open_backend(spec)
