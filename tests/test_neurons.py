"""Each neuron model's closed-form Jacobians equal autograd's (hypr.md §2.7, §9.1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jvp

from hwloop.errors import UserError
from hwloop.neurons import (
    ALIF, BRF, LI, LIF, AdLIF, EpropALIF, EpropLI, LoihiATRLIF, LoihiLI, LoihiLIF, NeuronModel, make_neuron,
)
from hwloop.neurons.surrogates import SURROGATES, double_gaussian, spike
from hwloop.options import build_options

MODELS: dict[str, NeuronModel] = {
    "lif": LIF(),
    "alif": ALIF(),
    "adlif": AdLIF(),
    "brf_euler": BRF(),
    "brf_exponential": BRF(
        use_exponential=True, exponential_omega=True, exponential_b=True, surrogate="slayer_wide",
        omega_range=(0.01, 10.0), b_range=(1e-9, 1e-4),
    ),
    "brf_abs_slayer": BRF(surrogate="slayer", omega_range=(-10.0, 10.0), b_range=(-3.0, 3.0)),
    "li": LI(),
    "li_interpolated": LI(interpolation=True, tau_range=(5.0, 25.0)),
    "loihi_lif": LoihiLIF(),
    "loihi_lif_slow": LoihiLIF(du=409, dv=205, vth=4500),  # both states carry over
    "loihi_li": LoihiLI(),
    "loihi_li_resetting": LoihiLI(du=409, dv=205, vth=64),
    "loihi_atrlif": LoihiATRLIF(),
    "loihi_atrlif_edges": LoihiATRLIF(  # the current flips sign; v, θ, r forget / keep all
        delta_i=1.0, delta_v=0.0, delta_theta=1.0, delta_r=0.0, theta_0=2000.0, theta_step=100.0,
    ),
    "loihi_atrlif_slow": LoihiATRLIF(
        delta_i=0.1, delta_v=0.05, delta_theta=0.01, delta_r=0.03, theta_0=5000.0, theta_step=0.5,
    ),
    "eprop_alif": EpropALIF(),
    "eprop_alif_slow": EpropALIF(tau_m=20.0, tau_a=50.0, v_th=0.5, beta=1.8, width=0.3),
    "eprop_li": EpropLI(),
}

B, N = 5, 11


def random_point(model: NeuronModel, seed: int):
    gen = torch.Generator().manual_seed(seed)
    params = model.init_params(N, gen, torch.float64)
    state = tuple(torch.randn(B, N, generator=gen, dtype=torch.float64) for _ in model.state_names)
    # potentials near the threshold so that surrogates and spikes are exercised
    state = (1.0 + 0.5 * state[0],) + state[1:]
    spike_prev = (torch.rand(B, N, generator=gen, dtype=torch.float64) < 0.4).double()
    current = 3.0 * torch.randn(B, N, generator=gen, dtype=torch.float64)
    return params, state, spike_prev, current


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jacobians_equal_autograd(name: str, seed: int) -> None:
    model = MODELS[name]
    params, state, spike_prev, current = random_point(model, seed)
    jac = model.jacobians(current, state, spike_prev, model.coefficients(params))
    d = model.state_size

    def new_state(current_, state_, params_):
        return model.step(current_, state_, spike_prev, model.coefficients(params_))[0]

    zeros_state = tuple(torch.zeros_like(s) for s in state)
    zeros_params = {k: torch.zeros_like(v) for k, v in params.items()}
    for j in range(d):
        tangent = tuple(torch.ones_like(s) if i == j else s * 0 for i, s in enumerate(state))
        _, column = jvp(new_state, (current, state, params), (current * 0, tangent, zeros_params))
        for i in range(d):
            torch.testing.assert_close(jac.A[i, j], column[i], rtol=1e-12, atol=1e-12)
    _, column = jvp(
        new_state, (current, state, params), (torch.ones_like(current), zeros_state, zeros_params)
    )
    for i in range(d):
        torch.testing.assert_close(jac.c[i], column[i], rtol=1e-12, atol=1e-12)
    for p, pname in enumerate(model.param_names):
        tangent_params = {k: torch.ones_like(v) if k == pname else v * 0 for k, v in params.items()}
        _, column = jvp(
            new_state, (current, state, params), (current * 0, zeros_state, tangent_params)
        )
        for i in range(d):
            torch.testing.assert_close(jac.K[p, i], column[i], rtol=1e-12, atol=1e-12)
    assert jac.A.shape == (d, d, B, N)
    assert jac.K.shape == (len(model.param_names), d, B, N)


@pytest.mark.parametrize(
    "name",
    [
        "lif", "alif", "adlif", "brf_euler", "brf_exponential", "loihi_lif", "loihi_lif_slow",
        "loihi_atrlif", "loihi_atrlif_edges", "loihi_atrlif_slow",
    ],
)
def test_spike_derivative_is_dz_ds_where_it_is_exact(name: str) -> None:
    """For models whose spike reads only the new state, dz/ds is the true derivative of z_t."""
    model = MODELS[name]
    params, state, spike_prev, current = random_point(model, 3)
    coeffs = model.coefficients(params)
    jac = model.jacobians(current, state, spike_prev, coeffs)
    # d z_t / d I_t by autograd equals dz_ds · c for every model except BRF, whose hand-written
    # dz_ds puts -psi on the new q although z_t reads q_{t-1} (hypr.md §2.2).
    _, dz = jvp(
        lambda i: model.step(i, state, spike_prev, coeffs)[1], (current,), (torch.ones_like(current),)
    )
    via_state = (jac.dz_ds * jac.c).sum(0)
    if name.startswith("brf"):
        torch.testing.assert_close(dz, jac.dz_ds[0] * jac.c[0])
    else:
        torch.testing.assert_close(dz, via_state)


def test_steps_match_spec_equations_by_hand() -> None:
    """A few hand-computed values pin the equations (signs, which spike is used where)."""
    one = torch.ones(1, 1, dtype=torch.float64)
    lif = LIF(tau_u_range=(10.0, 10.0))
    alpha = torch.exp(torch.tensor(-0.1, dtype=torch.float64))
    (u,), z = lif.step(2.0 * one, (0.5 * one,), one, lif.coefficients({"tau_u": 0.3 * one[0]}))
    torch.testing.assert_close(u, (1 - alpha) * 2.0 * one)  # reset by the previous spike
    assert z.item() == 0.0  # u = 0.19 < ϑ
    alif = ALIF(beta_a=1.0, b_j0=0.5)
    coeffs = {"alpha": 0.5 * one, "rho": 0.5 * one, "dalpha": one, "drho": one}
    (u, a), z = alif.step(1.0 * one, (0.2 * one, 0.4 * one), one, coeffs)
    # a = 0.5·0.4 + 0.5·1 = 0.7; A = 0.5 + 0.7 = 1.2; u = 0.1 + 0.5 − 1.2 = −0.6
    torch.testing.assert_close(a, 0.7 * one)
    torch.testing.assert_close(u, -0.6 * one)
    assert z.item() == 0.0
    brf = BRF(dt=0.1, omega_range=(2.0, 2.0))  # δω < 1 (Euler mode); ω = 2 below
    params = {"omega": torch.tensor([2.0], dtype=torch.float64), "b_offset": torch.tensor([1.0])}
    (u, v, q), z = brf.step(10.0 * one, (one, 0 * one, 0 * one), 0 * one, brf.coefficients(params))
    p = (-1 + (1 - 0.04) ** 0.5) / 0.1
    torch.testing.assert_close(u, one + 0.1 * ((p - 1.0) * 1.0 + 10.0))
    torch.testing.assert_close(v, 0.1 * 2.0 * one)
    torch.testing.assert_close(q, z)


def test_surrogate_peaks() -> None:
    zero = torch.zeros(1, dtype=torch.float64)
    assert SURROGATES["slayer"](zero).item() == pytest.approx(1.0)
    assert SURROGATES["slayer_wide"](zero).item() == pytest.approx(0.2)
    assert double_gaussian(zero).item() == pytest.approx(0.43884, abs=1e-5)
    x = torch.tensor([0.0, 1e-9, -1e-9], requires_grad=True)
    assert spike(x, double_gaussian).tolist() == [0.0, 1.0, 0.0]  # H(0) = 0


def test_constraints() -> None:
    adlif = AdLIF()
    params = {k: torch.tensor([-1.0, 0.5, 2.0]) for k in adlif.param_names}
    adlif.constrain_(params)
    assert params["tau_u"].tolist() == [0.0, 0.5, 1.0]
    assert params["b"].tolist() == [0.0, 0.5, 1.0]
    alif = ALIF()
    params = {"tau_u": torch.tensor([5.0, 50.0]), "tau_a": torch.tensor([50.0, 500.0])}
    alif.constrain_(params)
    assert params["tau_u"].tolist() == [10.0, 50.0]
    assert params["tau_a"].tolist() == [100.0, 500.0]


def test_make_neuron_errors() -> None:
    assert isinstance(make_neuron("brf", {"dt": 0.02, "omega_range": [1, 2]}), BRF)
    with pytest.raises(UserError, match="unknown neuron 'foo'"):
        make_neuron("foo", {})
    with pytest.raises(UserError, match="unknown option 'nope'"):
        make_neuron("lif", {"nope": 1})
    with pytest.raises(UserError, match=": thr: expected a number, got 'high'"):
        make_neuron("lif", {"thr": "high"})
    with pytest.raises(UserError, match="unknown surrogate"):
        make_neuron("brf", {"surrogate": "magic"})


BAD_OPTIONS = [
    # (model, options, text the one-line error must contain)
    ("lif", {"tau_u_range": [25.0, 5.0]}, "tau_u_range=(25.0, 5.0) must be ordered: low <= high"),
    ("lif", {"tau_u_range": [0.0, 5.0]},
     "tau_u_range=(0.0, 5.0): both ends must lie in [0.001, 1e+06]"),
    ("lif", {"tau_u_range": [-5.0, 5.0]}, "tau_u_range=(-5.0, 5.0): both ends must lie in"),
    ("lif", {"tau_u_range": [1e-30, 1e-30]}, "tau_u_range=(1e-30, 1e-30): both ends must lie in"),
    ("lif", {"tau_u_range": [5.0, 1e7]}, "tau_u_range=(5.0, 10000000.0): both ends must lie in"),
    ("lif", {"thr": 0.0}, "thr=0.0 must be > 0"),
    ("lif", {"thr": -1.0}, "thr=-1.0 must be > 0"),
    ("lif", {"thr": 1e39}, "thr=1e+39 must be finite and at most 3.4e+38 in magnitude (float32)"),
    ("alif", {"beta_a": -1.0}, "beta_a=-1.0 must be >= 0"),
    ("alif", {"b_j0": -0.1}, "b_j0=-0.1 must be >= 0"),
    ("alif", {"tau_u_mean": 0.0}, "tau_u_mean=0.0 must lie in [0.001, 1e+06]"),
    ("alif", {"tau_a_mean": -150.0}, "tau_a_mean=-150.0 must lie in [0.001, 1e+06]"),
    ("alif", {"tau_u_std": -1.0}, "tau_u_std=-1.0 must lie in [0, 1e+06]"),
    ("alif", {"tau_u_std": 10.0},
     "tau_u_std=10.0 with tau_u_mean=20.0 must keep tau_u_mean >= 4*tau_u_std"),
    ("alif", {"tau_a_mean": 20.0}, "tau_a_std=10.0 with tau_a_mean=20.0 must keep"),
    ("alif", {"tau_u_min": 0.0}, "tau_u_min=0.0 must lie in [0.001, 1e+06]"),
    ("alif", {"tau_a_min": -100.0}, "tau_a_min=-100.0 must lie in"),
    ("adlif", {"tau_u_range": [25.0, 5.0]}, "tau_u_range=(25.0, 5.0) must be ordered"),
    ("adlif", {"tau_w_range": [0.0, 300.0]}, "tau_w_range=(0.0, 300.0): both ends must lie in"),
    ("adlif", {"a_range": [1.0, 0.0]}, "a_range=(1.0, 0.0) must be ordered"),
    ("adlif", {"a_range": [0.0, 1e39]}, "a_range=(0.0, 1e+39): both ends must be finite"),
    ("adlif", {"b_range": [-1.0, 1.0]}, "b_range=(-1.0, 1.0): both ends must be >= 0"),
    ("adlif", {"thr": 0.0}, "thr=0.0 must be > 0"),
    ("adlif", {"adapt_coeff": -120.0}, "adapt_coeff=-120.0 must be >= 0"),
    ("brf", {"thr": 0.0}, "thr=0.0 must be > 0"),
    ("brf", {"dt": 0.0}, "dt=0.0 must be > 0"),
    ("brf", {"dt": -0.01}, "dt=-0.01 must be > 0"),
    ("brf", {"surrogate": "magic"}, "unknown surrogate 'magic'"),
    ("brf", {"omega_range": [10.0, 5.0]}, "omega_range=(10.0, 5.0) must be ordered"),
    ("brf", {"b_range": [3.0, 2.0]}, "b_range=(3.0, 2.0) must be ordered"),
    ("brf", {"omega_range": [5.0, 100.0]},
     "omega_range=(5.0, 100.0) with dt=0.01 must keep abs(omega)*dt < 1"),
    ("brf", {"omega_range": [-120.0, 5.0]}, "omega_range=(-120.0, 5.0) with dt=0.01 must keep"),
    ("brf", {"dt": 0.5}, "omega_range=(5.0, 10.0) with dt=0.5 must keep abs(omega)*dt < 1"),
    ("brf", {"b_range": [2.0, 300.0]},
     "b_range=(2.0, 300.0) with dt=0.01 and omega_range=(5.0, 10.0)"),
    ("brf", {"exponential_omega": True, "omega_range": [-1.0, 5.0]},
     "omega_range=(-1.0, 5.0): both ends must be >= 0"),
    ("brf", {"exponential_b": True, "b_range": [-1.0, 1.0]},
     "b_range=(-1.0, 1.0): both ends must be >= 0"),
    ("brf", {"use_exponential": True, "omega_range": [0.0, 400.0]},
     "omega_range=(0.0, 400.0) with dt=0.01 must keep abs(omega)*dt <= pi"),
    ("li", {"tau_range": [25.0, 15.0]}, "tau_range=(25.0, 15.0) must be ordered"),
    ("li", {"tau_range": [0.0, 15.0]},
     "tau_range=(0.0, 15.0): both ends must lie in [0.001, 1e+06]"),
    ("li", {"tau_range": [15.0, 1e9]}, "tau_range=(15.0, 1000000000.0): both ends must lie in"),
    ("loihi_lif", {"du": 4096}, "du=4096 must be an integer in [-1, 4095]"),
    ("loihi_lif", {"dv": -1}, "dv=-1 must be an integer in [0, 4096]"),
    ("loihi_lif", {"vth": 131072}, "vth=131072 must be an integer in [0, 131071]"),
    ("loihi_lif", {"vth": 1.5}, "vth: expected an integer, got 1.5"),
    ("loihi_atrlif", {"delta_i": 1.5}, "delta_i=1.5 must lie in [0, 1]"),
    ("loihi_atrlif", {"delta_v": -0.1}, "delta_v=-0.1 must lie in [0, 1]"),
    ("loihi_atrlif", {"delta_theta": 2}, "delta_theta=2.0 must lie in [0, 1]"),
    ("loihi_atrlif", {"delta_r": 1.0001}, "delta_r=1.0001 must lie in [0, 1]"),
    ("loihi_atrlif", {"delta_r": "high"}, "delta_r: expected a number, got 'high'"),
    ("loihi_atrlif", {"theta_0": -1.0},
     "theta_0=-1.0 must keep trunc(theta_0*64) in [0, 2147483647] (Lava's int32)"),
    ("loihi_atrlif", {"theta_step": 2.0**25},
     "theta_step=33554432.0 must keep trunc(theta_step*64) in [0, 2147483647] (Lava's int32)"),
    ("loihi_atrlif", {"theta_0": 1e39}, "theta_0=1e+39 must be finite and at most 3.4e+38"),
]


def build_model(name: str, options: dict) -> NeuronModel:
    if name == "li":
        return build_options(LI, options, "readout")
    return make_neuron(name, options)


@pytest.mark.parametrize(
    "name, options, message",
    BAD_OPTIONS,
    ids=[f"{name}-{'-'.join(options)}" for name, options, _ in BAD_OPTIONS],
)
def test_bad_options_give_one_line_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(UserError) as error:
        build_model(name, options)
    text = str(error.value)
    prefix = "readout: " if name == "li" else f"neuron {name!r}: "
    assert text.startswith(prefix) and message in text and "\n" not in text


@pytest.mark.parametrize(
    "name, options",
    [
        ("li", {"tau_range": [1e-3, 1e-3]}),  # α = 0 exactly (test_hypr's exact case)
        ("lif", {"tau_u_range": [10.0, 10.0], "thr": 1e-6}),
        ("alif", {"beta_a": 0.0, "b_j0": 0.0, "tau_u_std": 0.0, "tau_a_mean": 40.0}),
        ("adlif", {"a_range": [-1.0, 1.0], "b_range": [0.0, 2.0], "adapt_coeff": 0.0}),
        # Euler limit: abs(b)·dt <= 2·sqrt(1 − 0.999²) ≈ 0.0894
        ("brf", {"omega_range": [-99.9, 99.9], "b_range": [-8.9, 8.9]}),
        ("brf", {"use_exponential": True, "omega_range": [0.0, 314.0], "b_range": [-1e6, 1e6]}),
        ("loihi_lif", {"du": -1, "dv": 4096, "vth": 131071}),
        ("loihi_lif", {"du": 4095, "dv": 0, "vth": 0}),
        ("loihi_atrlif", {"delta_i": 0, "delta_v": 1, "delta_theta": 0.0, "delta_r": 1.0,
                          "theta_0": 0, "theta_step": 33554431.99}),  # trunc(·64) = 2^31 − 1
        # trunc(-0.015·64) = 0 and trunc((2^25 − 2^-6)·64) = 2^31 − 1
        ("loihi_atrlif", {"theta_0": -0.015, "theta_step": 2**25 - 2**-6}),
    ],
)
def test_options_at_the_edges_are_accepted(name: str, options: dict) -> None:
    build_model(name, options)


def test_direct_construction_is_checked_too() -> None:
    """Models built in Python (without build_options) refuse NaN, inf and bad ranges alike."""
    with pytest.raises(ValueError, match="thr=nan must be finite"):
        LIF(thr=math.nan)
    with pytest.raises(ValueError, match="tau_range=.*inf.*both ends must be finite"):
        LI(tau_range=(1.0, math.inf))
    with pytest.raises(ValueError, match="omega_range=.* must keep abs"):
        BRF(dt=0.1)
