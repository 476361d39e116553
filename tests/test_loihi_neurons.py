"""LoihiLIF and LoihiLI compute Lava 0.10.0's fixed-point LIF exactly (spec §2.2), checked
against a small independent int64 NumPy implementation over random activations that make the
current wrap and the voltage saturate; LoihiATRLIF computes Lava's fixed-point ATRLIF exactly
(spec §4.1), checked against ``simulators.loihi2.atrlif`` (itself bit-exact to real Lava)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwloop.errors import UserError
from hwloop.neurons import LoihiATRLIF, LoihiLI, LoihiLIF, make_neuron, readout_for
from hwloop.neurons.loihi import STATE_UNIT, WEIGHT_UNIT

STEPS, N = 300, 64
SETTINGS = [  # (du, dv, vth)
    (4095, 410, 64),
    (-1, 0, 131071),
    (0, 4096, 0),
    (-1, 4096, 5),
    (409, 4095, 1000),
    (2000, 0, 64),
    (0, 1, 20000),
]


def lava_lif(activations: np.ndarray, du: int, dv: int, vth: int) -> list[tuple[np.ndarray, ...]]:
    """Lava's integer LIF over activations (T, N) int64: per step (u, v after reset, spikes,
    where u wrapped)."""
    u = np.zeros(activations.shape[1], dtype=np.int64)
    v = np.zeros_like(u)
    out = []
    for a in activations:
        p = u * (4096 - (du + 1))
        u = np.sign(p) * (np.abs(p) >> 12) + (a << 6)
        wrapped = (u > 2**23) | (u <= -(2**23))
        u = np.where(u > 2**23, u - 2**24, np.where(u <= -(2**23), u + 2**24, u))
        q = v * (4096 - dv)
        v = np.clip(np.sign(q) * (np.abs(q) >> 12) + u, -(2**23 - 1), 2**23 - 1)
        s = v > (vth << 6)
        v = np.where(s, 0, v)
        out.append((u, v, s, wrapped))
    return out


def random_activations(seed: int, largest: int) -> np.ndarray:
    """(STEPS, N) integers, each step's magnitude drawn from 1 … ``largest`` so that currents
    both settle and wrap, and voltages saturate."""
    rng = np.random.default_rng(seed)
    scales = rng.choice([1, 2**6, 2**12, 2**15, largest], size=(STEPS, 1))
    activations = rng.integers(-scales, scales + 1, size=(STEPS, N))
    # the wrap edges for du = 4095 (u_int = 64·a): +2^23 kept, −2^23 → +2^23, 2^23 + 64 wraps
    activations[::50, :3] = [2**17, -(2**17), 2**17 + 1]
    return activations.astype(np.int64)


def integers(host: torch.Tensor) -> np.ndarray:
    """Host units → Lava integers, refusing anything that is not an exact integer."""
    scaled = host.detach().double() * STATE_UNIT
    assert bool((scaled == scaled.round()).all())
    return scaled.numpy().astype(np.int64)


# |a| ≤ 2^18 keeps every state within ±2^23 (exact in float32); float64 also takes 2^24, where
# one wrap can leave u_int beyond ±2^24
CASES = [(torch.float64, 2**18), (torch.float32, 2**18), (torch.float64, 2**24)]


@pytest.mark.parametrize("du,dv,vth", SETTINGS)
@pytest.mark.parametrize("dtype,largest", CASES)
def test_loihi_lif_is_lava_exactly(du: int, dv: int, vth: int, dtype: torch.dtype, largest: int):
    activations = random_activations(du + 7 * dv + vth, largest)
    reference = lava_lif(activations, du, dv, vth)
    model = LoihiLIF(du=du, dv=dv, vth=vth)
    currents = torch.tensor(activations / WEIGHT_UNIT, dtype=dtype)
    (u, v), z = model.initial_state((N,), currents)
    wrapped = saturated = spikes = 0
    for t in range(STEPS):
        (u, v), z = model.step(currents[t], (u, v), z, {})
        u_ref, v_ref, s_ref, wrapped_ref = reference[t]
        assert u.dtype == v.dtype == z.dtype == dtype
        np.testing.assert_array_equal(integers(u), u_ref, err_msg=f"u at step {t}")
        np.testing.assert_array_equal(integers(v * (1 - z)), v_ref, err_msg=f"v at step {t}")
        np.testing.assert_array_equal(z.numpy().astype(bool), s_ref, err_msg=f"z at step {t}")
        wrapped += int(wrapped_ref.sum())
        saturated += int((np.abs(integers(v)) == 2**23 - 1).sum())
        spikes += int(s_ref.sum())
    assert wrapped > 0 and saturated > 0 and spikes > 0, (wrapped, saturated, spikes)


@pytest.mark.parametrize("du,dv,vth", SETTINGS + [(409, 410, 131071)])
@pytest.mark.parametrize("dtype,largest", CASES)
def test_loihi_li_is_lava_exactly(du: int, dv: int, vth: int, dtype: torch.dtype, largest: int):
    activations = random_activations(1 + du + 3 * dv + vth, largest)
    reference = lava_lif(activations, du, dv, vth)
    model = LoihiLI(du=du, dv=dv, vth=vth)
    currents = torch.tensor(activations / WEIGHT_UNIT, dtype=dtype)
    (u, v), output = model.initial_state((N,), currents)
    resets = 0
    for t in range(STEPS):
        (u, v), output = model.step(currents[t], (u, v), output, {})
        u_ref, v_ref, s_ref, _ = reference[t]
        assert torch.equal(output, v) and output.dtype == dtype
        np.testing.assert_array_equal(integers(u), u_ref, err_msg=f"u at step {t}")
        np.testing.assert_array_equal(integers(v), v_ref, err_msg=f"v at step {t}")
        resets += int(s_ref.sum())
    assert resets > 0  # even at vth = 131071: saturated voltages spike


def test_wrap_edges() -> None:
    """With du = 4095, u_int = 64·a: exactly +2^23 is kept, −2^23 becomes +2^23, and 2^23 + 64
    wraps to −2^23 + 64 (spec §2.2, step 4)."""
    model = LoihiLIF(du=4095)
    current = torch.tensor([2**17, -(2**17), 2**17 + 1], dtype=torch.float64) / WEIGHT_UNIT
    (u, _), _ = model.step(current, model.initial_state((3,), current)[0], current * 0, {})
    assert integers(u).tolist() == [2**23, 2**23, -(2**23) + 64]


def test_reference_matches_the_lava_validated_emulator() -> None:
    """The NumPy reference above agrees with simulators.loihi2 (checked against real Lava)."""
    lif = pytest.importorskip("simulators.loihi2.lif")
    activations = random_activations(5, 2**20)
    for du, dv, vth in SETTINGS:
        parameters = lif.LifParameters(du, dv, vth, np.zeros(N, np.int64), np.zeros(N, np.int64))
        u = v = torch.zeros(N, dtype=torch.int64)
        for a, (u_ref, v_ref, s_ref, _) in zip(activations, lava_lif(activations, du, dv, vth)):
            u, v, s = lif.lif_step(u, v, torch.from_numpy(a), parameters)
            assert (u.numpy() == u_ref).all() and (v.numpy() == v_ref).all()
            assert (s.numpy() == s_ref).all()


def test_non_integer_current_is_floored() -> None:
    model = LoihiLIF(du=4095, dv=4096)
    current = torch.tensor([-0.5, 0.99, -1.0, 1.0, 0.0], dtype=torch.float64) / WEIGHT_UNIT
    (u, v), _ = model.step(current, model.initial_state((5,), current)[0], current * 0, {})
    assert integers(u).tolist() == [-64, 0, -64, 64, 0]  # a = [−1, 0, −1, 1, 0], u = 64·a
    assert integers(v).tolist() == [-64, 0, -64, 64, 0]


def test_spike_is_strict_and_reset_is_deferred() -> None:
    """v_int = 64·vth does not spike, one more does; the stored v keeps its value and the next
    step starts from 0 (Lava's reset)."""
    model = LoihiLIF(du=4095, dv=0, vth=64)  # v_int must exceed 64·64 = 4096
    current = torch.tensor([64.0, 64.25], dtype=torch.float64) / WEIGHT_UNIT  # a = 64 (floor)
    state, z = model.initial_state((2,), current)
    state, z = model.step(current, state, z, {})
    assert integers(state[1]).tolist() == [4096, 4096] and z.tolist() == [0.0, 0.0]
    state, z = model.step(torch.tensor([0.0, 1.0]).double() / WEIGHT_UNIT, state, z, {})
    assert integers(state[1]).tolist() == [4096, 4096 + 64] and z.tolist() == [0.0, 1.0]
    state, z = model.step(torch.zeros(2).double(), state, z, {})
    assert integers(state[1]).tolist() == [4096, 0] and z.tolist() == [0.0, 0.0]


def test_gradients_are_straight_through() -> None:
    """Floor, wrap and saturation pass gradients unchanged (∂u/∂I = ∂v/∂I = 1)."""
    model = LoihiLIF(du=4095, dv=0)
    current = torch.tensor([0.3, 3 * 2**16, 6400, -6400], dtype=torch.float64) / WEIGHT_UNIT
    current.requires_grad_(True)
    state = (torch.zeros(4).double(), torch.tensor([0.0, 0.0, 2047.0, -2047.0]).double())
    (u, v), _ = model.step(current, state, torch.zeros(4).double(), {})
    (u.sum() + v.sum()).backward()
    assert current.grad is not None and current.grad.tolist() == [2.0] * 4
    assert integers(u).tolist() == [0, 3 * 2**22 - 2**24, 409600, -409600]  # the second wrapped
    assert integers(v).tolist() == [0, 3 * 2**22 - 2**24, 2**23 - 1, -(2**23 - 1)]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"du": 4096}, "du=4096 must be an integer in [-1, 4095]"),
        ({"du": -2}, "du=-2 must be an integer in [-1, 4095]"),
        ({"du": True}, "du=True must be an integer in [-1, 4095]"),
        ({"dv": -1}, "dv=-1 must be an integer in [0, 4096]"),
        ({"dv": 4097}, "dv=4097 must be an integer in [0, 4096]"),
        ({"vth": -1}, "vth=-1 must be an integer in [0, 131071]"),
        ({"vth": 131072}, "vth=131072 must be an integer in [0, 131071]"),
        ({"vth": 1.5}, "vth=1.5 must be an integer in [0, 131071]"),
    ],
)
@pytest.mark.parametrize("model", [LoihiLIF, LoihiLI])
def test_bad_hyperparameters(model: type, options: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        model(**options)
    assert str(error.value) == message


def test_configured_by_name() -> None:
    assert make_neuron("loihi_lif", {"du": -1, "dv": 4096, "vth": 0}).options() == {
        "du": -1, "dv": 4096, "vth": 0,
    }
    with pytest.raises(UserError, match=r"^neuron 'loihi_lif': dv=5000 must be an integer in"):
        make_neuron("loihi_lif", {"dv": 5000})
    with pytest.raises(UserError, match=r"neuron 'loihi_lif': vth: expected an integer, got 1.5"):
        make_neuron("loihi_lif", {"vth": 1.5})
    assert LoihiLI().options() == {"du": 4095, "dv": 410, "vth": 131071}


# -- LoihiATRLIF -------------------------------------------------------------------------------

ATRLIF_SETTINGS = [  # (delta_i, delta_v, delta_theta, delta_r, theta_0, theta_step)
    (0.4, 0.4, 0.2, 0.2, 5.0, 3.75),  # Lava's defaults: small thresholds (θ0 = 320)
    (0.4, 0.4, 0.2, 0.2, 4096.0, 3072.0),  # the host defaults (ϑ0 = 1, ϑ_step = 0.75)
    (0.0, 0.0, 0.0, 0.0, 64.0, 16.0),  # nothing decays: θ and r only grow
    (1.0, 1.0, 1.0, 1.0, 0.0, 0.0),  # Fi = −1 (the current flips sign), θ = 0, spikes at v ≥ 0
    (1 / 4096, 1 / 4096, 1 / 4096, 1 / 4096, 4096.3, 0.9),  # θ0 = 262163, θ_step = 57
    (4095 / 4096, 4095 / 4096, 4095 / 4096, 4095 / 4096, 1 / 64, 1 / 64),  # θ0 = θ_step = 1
    (0.3333, 0.123, 0.01, 0.02, 1000.0, 500.0),  # fractional float factor Fi
    (0.1, 0.0, 1 / 4096, 0.0, 20000.0, 2.0**17),  # θ_step = 2^23: float32's limit
    (0.4, 4095 / 4096, 0.0, 1 / 4096, (2**23 - 1) / 64, 2.0**20),  # only saturated v = θ0 spikes
    (0.7, 0.3, 0.05, 0.5, 2.0**23, 100.0),  # θ0 = 2^29 > any v: never spikes
]
# float64 with |a| ≤ 2^18 and 2^22 (the current then reaches ~2^30 after its one-shot wrap);
# float32 with |a| ≤ 2^18 where θ_step ≤ 2^23, i.e. every state integer stays below 2^24
# (θ_step = 2^26 leaves θ̃ beyond float32's integers)
ATRLIF_CASES = [
    (setting, dtype, largest)
    for setting in ATRLIF_SETTINGS
    for dtype, largest in [(torch.float64, 2**18), (torch.float32, 2**18), (torch.float64, 2**22)]
    if dtype == torch.float64 or int(setting[5] * 64) <= 2**23
]


@pytest.mark.parametrize(
    "setting, dtype, largest",
    ATRLIF_CASES,
    ids=[f"{s}-{str(d)[6:]}-{a}" for s, d, a in ATRLIF_CASES],
)
def test_loihi_atrlif_is_lava_exactly(setting: tuple, dtype: torch.dtype, largest: int) -> None:
    """i, v, Lava's θ and r (from the stored θ̃, r and the spike) and the spikes equal the
    Lava-validated emulator's, every step; the current wraps, the voltage saturates."""
    atrlif = pytest.importorskip("simulators.loihi2.atrlif")
    model = LoihiATRLIF(*setting)
    parameters = atrlif.AtrlifParameters(
        *setting, bias_mant=np.zeros(N, np.int64), bias_exp=np.zeros(N, np.int64)
    )
    theta_0, theta_step = model.scaled_theta_0, model.scaled_theta_step
    assert (theta_0, theta_step) == (parameters.scaled_theta_0, parameters.scaled_theta_step)
    activations = random_activations(ATRLIF_SETTINGS.index(setting), largest)
    currents = torch.tensor(activations / WEIGHT_UNIT, dtype=dtype)
    state, z = model.initial_state((N,), currents)
    lava = atrlif.atrlif_initial_state(1, parameters)
    wrapped = saturated = spikes = 0
    for t in range(STEPS):
        a = torch.from_numpy(activations[t])[None]
        unwrapped = atrlif.float_decay(lava[0], parameters.current_factor) + (a << 6)
        *lava, s_ref = atrlif.atrlif_step(*lava, a, parameters)
        i_ref, v_ref, theta_ref, r_ref = (x[0].numpy() for x in lava)
        state, z = model.step(currents[t], state, z, {})
        assert z.dtype == dtype and all(x.dtype == dtype for x in state)
        i, v, offset, r = (integers(x) for x in state)
        s = z.numpy().astype(bool)
        np.testing.assert_array_equal(s, s_ref[0].numpy(), err_msg=f"z at step {t}")
        np.testing.assert_array_equal(i, i_ref, err_msg=f"i at step {t}")
        np.testing.assert_array_equal(v, v_ref, err_msg=f"v at step {t}")
        np.testing.assert_array_equal(
            offset + theta_0 + theta_step * s, theta_ref, err_msg=f"θ at step {t}"
        )
        np.testing.assert_array_equal(
            r + 2 * (offset + theta_0) * s, r_ref, err_msg=f"r at step {t}"
        )
        wrapped += int((unwrapped != lava[0]).sum())
        saturated += int((np.abs(v_ref) == 2**23 - 1).sum())
        spikes += int(s.sum())
    assert wrapped > 0 and saturated > 0, (wrapped, saturated)
    assert (spikes > 0) == (theta_0 < 2**23), spikes  # v − r ≤ 2^23 − 1 never reaches 2^23


def test_loihi_atrlif_spike_is_at_least_and_updates_are_deferred() -> None:
    """v − r = θ spikes (Lava's ≥); the stored θ̃ and r are the values before the spike's
    update, which the next step applies (r += 2θ, θ += θ_step), and v is not reset."""
    # Fi = −1, Fv = Fθ = Fr = 0: i = 64·a, v = i, θ̃ = r = 0 unless the previous step spiked
    model = LoihiATRLIF(1.0, 1.0, 0.0, 0.0, theta_0=1.0, theta_step=0.5)  # θ0 = 64, θ_step = 32
    current = torch.tensor([1.0, 0.999], dtype=torch.float64) / WEIGHT_UNIT  # a = 1, 0
    state, z = model.initial_state((2,), current)
    state, z = model.step(current, state, z, {})
    assert [integers(x).tolist() for x in state] == [[64, 0], [64, 0], [0, 0], [0, 0]]
    assert z.tolist() == [1.0, 0.0]  # v − r = 64 = θ0
    state, z = model.step(current * 0, state, z, {})
    # θ̃ = θ_step, r = 2·θ0 (Fθ = Fr = 4096 keep them); v = i = tz(−64/4096) = 0
    assert [integers(x).tolist() for x in state] == [[0, 0], [0, 0], [32, 0], [128, 0]]
    assert z.tolist() == [0.0, 0.0]


def test_loihi_atrlif_gradients_are_straight_through() -> None:
    """Floor, wraps, saturation and truncations pass gradients unchanged: ∂i/∂I = ∂v/∂I = 1,
    and the spike's surrogate is ψ(v − r − θ̃ − ϑ0) with ψ(0) = 0.5."""
    model = LoihiATRLIF(0.0, 1.0, 0.2, 0.2, theta_0=4096.0, theta_step=3072.0)
    current = torch.tensor([0.3, 3 * 2**16, 4095.0], dtype=torch.float64) / WEIGHT_UNIT
    current.requires_grad_(True)
    zero = torch.zeros(3, dtype=torch.float64)
    (i, v, _, _), z = model.step(current, (zero, zero, zero, zero), zero, {})
    (i.sum() + v.sum()).backward()
    assert current.grad is not None and current.grad.tolist() == [2.0] * 3
    assert integers(i).tolist() == [0, 3 * 2**22 - 2**24, 64 * 4095]  # the second wrapped
    current.grad = None
    (_, v, _, _), z = model.step(current, (zero, zero, zero, zero), zero, {})
    z.sum().backward()  # x = v − ϑ0 = 4095/4096 − 1 for the third: ψ = 0.5·exp(−5/4096)
    assert current.grad[2].item() == pytest.approx(0.5 * np.exp(-5 / 4096), rel=1e-12)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"delta_i": 1.5}, "delta_i=1.5 must lie in [0, 1]"),
        ({"delta_v": -0.25}, "delta_v=-0.25 must lie in [0, 1]"),
        ({"delta_theta": float("nan")}, "delta_theta=nan must be finite"),
        ({"delta_r": 2.0}, "delta_r=2.0 must lie in [0, 1]"),
        ({"theta_0": -1.0},
         "theta_0=-1.0 must keep trunc(theta_0*64) in [0, 2147483647] (Lava's int32)"),
        ({"theta_0": 2.0**25}, "theta_0=33554432.0 must keep trunc(theta_0*64) in"),
        ({"theta_step": -0.5}, "theta_step=-0.5 must keep trunc(theta_step*64) in"),
        ({"theta_step": float("inf")}, "theta_step=inf must be finite"),
    ],
)
def test_loihi_atrlif_bad_hyperparameters(options: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        LoihiATRLIF(**options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_loihi_atrlif_configured_by_name() -> None:
    model = make_neuron("loihi_atrlif", {"delta_i": 0, "theta_0": 5, "theta_step": 3.75})
    assert model.options() == {
        "delta_i": 0.0, "delta_v": 0.4, "delta_theta": 0.2, "delta_r": 0.2,
        "theta_0": 5.0, "theta_step": 3.75,
    }
    assert (model.scaled_theta_0, model.scaled_theta_step) == (320, 240)
    assert LoihiATRLIF().scaled_theta_0 == STATE_UNIT  # ϑ0 = 1 host unit
    assert readout_for("loihi_atrlif") is LoihiLI
    assert LoihiATRLIF.param_names == () and not LoihiATRLIF.current_bias
    with pytest.raises(UserError, match=r"^neuron 'loihi_atrlif': delta_r=5.0 must lie in"):
        make_neuron("loihi_atrlif", {"delta_r": 5})
