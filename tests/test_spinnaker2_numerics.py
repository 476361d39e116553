"""Numerics of the SpiNNaker 2 emulator (spec A4.7 tests 1-2): the f32 chip against a plain
NumPy transcription of the e-prop equations (/tmp interface, spec A3), bit for bit in float32
and within 1e-5 of float64; the s16.15 chip against float64."""

from __future__ import annotations

import math

import numpy as np

from simulators.spinnaker2.chip import Chip, EpropConfig
from simulators.spinnaker2.fixed import Fixed
from simulators.spinnaker2.formats import decode, encode
from simulators.spinnaker2.numerics import S1615, Surrogate

CONFIG = EpropConfig()  # the reference network, 80-120-12
STEPS, LABEL = 100, 5


def network(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Random weights (W_in, W_rec with a zero diagonal, W_out) and real-valued inputs."""
    rng = np.random.default_rng(seed)
    w_in = rng.normal(0.0, 3.0 / math.sqrt(CONFIG.inputs), (CONFIG.hidden, CONFIG.inputs))
    w_rec = rng.normal(0.0, 1.0 / math.sqrt(CONFIG.hidden), (CONFIG.hidden, CONFIG.hidden))
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.normal(0.0, 1.0 / math.sqrt(CONFIG.hidden), (CONFIG.outputs, CONFIG.hidden))
    x = np.clip(rng.normal(0.3, 1.0, (STEPS, CONFIG.inputs)), -2.0, 4.0)
    return [w_in, w_rec, w_out], x


def seq(products: np.ndarray) -> np.ndarray:
    """Sum over the last axis, one term after another."""
    total = products[..., 0]
    for i in range(1, products.shape[-1]):
        total = total + products[..., i]
    return total


def transcription(dtype: type, weights: list[np.ndarray], x: np.ndarray, label: int,
                  spikes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The e-prop equations for the whole network on one array, every operation in ``dtype``.
    ``spikes`` (steps, hidden), if given, replaces the spikes the model emits (teacher
    forcing, to compare membranes without threshold flips)."""
    c, cfg = dtype, CONFIG
    alpha, rho = math.exp(-1 / cfg.tau_m), math.exp(-1 / cfg.tau_a)
    kappa = math.exp(-1 / cfg.tau_out)
    w_in, w_rec, w_out = (w.astype(dtype) for w in weights)
    x = x.astype(dtype)
    hidden, p = cfg.hidden, cfg.inputs + cfg.hidden
    root = math.sqrt(2 * math.pi)
    c0, c1 = c(1 / (2 * cfg.width**2)), c(1 / (2 * cfg.side_width**2))
    g0 = c(cfg.gamma * (1 + cfg.side_height) / (cfg.width * root))
    g1 = c(cfg.gamma * cfg.side_height / (cfg.side_width * root))
    v, a, z = (np.zeros(hidden, dtype) for _ in range(3))
    eps_v = np.zeros(p, dtype)
    eps_a, e_bar, E = (np.zeros((hidden, p), dtype) for _ in range(3))
    z_hat, z_sum = np.zeros(hidden, dtype), np.zeros(hidden, dtype)
    y_bar = np.zeros(cfg.outputs, dtype)
    vs, zs, ys = [], [], []
    j = np.arange(hidden)
    for s in range(len(x)):
        z_prev = z
        a = c(rho) * a + c(1 - rho) * z_prev
        A = c(cfg.v_th) + c(cfg.beta) * a
        current = seq(w_in * x[s]) + seq(w_rec * z_prev)
        v = (c(alpha) * v + c(1 - alpha) * current) - A * z_prev
        u = v - A
        z = (u > 0).astype(dtype) if spikes is None else spikes[s].astype(dtype)
        d1, d2 = u - c(cfg.width), u + c(cfg.width)
        psi = ((g0 * np.exp(-((u * u) * c0)) - g1 * np.exp(-((d1 * d1) * c1)))
               - g1 * np.exp(-((d2 * d2) * c1)))
        eps_v = c(alpha) * eps_v + np.concatenate([x[s], z_prev])
        e = psi[:, None] * ((c(1 - alpha) * eps_v)[None, :] - c(cfg.beta) * eps_a)
        e[j, cfg.inputs + j] = 0
        eps_a = ((c(rho) - c((1 - rho) * cfg.beta) * psi)[:, None] * eps_a
                 + (c((1 - alpha) * (1 - rho)) * psi)[:, None] * eps_v[None, :])
        e_bar = c(kappa) * e_bar + e
        E = E + e_bar
        z_hat = c(kappa) * z_hat + z
        y = seq(w_out * z_hat)
        y_bar, z_sum = y_bar + y, z_sum + z_hat
        vs.append(v), zs.append(z), ys.append(y)
    n = c(len(x))
    mean = y_bar / n
    shifted = mean - mean.max()
    exp = np.exp(shifted)
    delta = exp / seq(exp)
    delta[label] = delta[label] - c(1)
    signal = seq(w_out.T * delta) / n
    grads = [signal[:, None] * E[:, :cfg.inputs] + c(2 * cfg.l2) * w_in,
             signal[:, None] * E[:, cfg.inputs:] + c(2 * cfg.l2) * w_rec,
             delta[:, None] * (z_sum / n)[None, :] + c(2 * cfg.l2) * w_out]
    lr_t = c(cfg.learning_rate * math.sqrt(1 - cfg.beta2) / (1 - cfg.beta1))
    new = []
    for w, g in zip((w_in, w_rec, w_out), grads):  # Adam's first step, t = 1
        m = c(cfg.beta1) * np.zeros_like(g) + c(1 - cfg.beta1) * g
        m2 = c(cfg.beta2) * np.zeros_like(g) + c(1 - cfg.beta2) * (g * g)
        new.append(w - (lr_t * m) / (np.sqrt(m2) + c(cfg.epsilon)))
    return {"v": np.array(vs), "z": np.array(zs), "y": np.array(ys), "a": a, "eps_a": eps_a,
            "e_bar": e_bar, "E": E, "eps_v": eps_v, "weights": new}


def loaded(numeric: str, weights: list[np.ndarray], x: np.ndarray,
           config: EpropConfig = CONFIG) -> Chip:
    chip = Chip(numeric=numeric)
    chip.load(config)
    for projection, w in enumerate(weights):
        chip.write_weights(projection, config.weight_format, 1.0, 0, w.size,
                           encode(w, config.weight_format).payload)
    for step, row in enumerate(x):
        chip.inject_values(step, list(enumerate(row.astype(np.float32).tolist())))
    return chip


def stored(chip: Chip, projection: int, shape: tuple[int, int], fmt: str = "f32"
           ) -> np.ndarray:
    scale, payload = chip.read_weights(projection, fmt, 0, shape[0] * shape[1])
    return decode(payload, shape[0] * shape[1], fmt, scale).reshape(shape)


def test_f32_mode_reproduces_the_float32_transcription_bit_for_bit() -> None:
    weights, x = network(1)
    weights32 = [w.astype(np.float32) for w in weights]
    chip = loaded("f32", weights32, x)
    chip.target(0, LABEL)
    result = chip.run(STEPS, mode=1)
    ref = transcription(np.float32, weights32, x.astype(np.float32), LABEL)
    assert 0 < result.spikes.sum() < result.spikes.size  # the network is alive
    np.testing.assert_array_equal(result.spikes, ref["z"])
    np.testing.assert_array_equal(result.outputs, ref["y"])
    np.testing.assert_array_equal(chip.gather("v"), ref["v"][-1])
    for name in ("a", "eps_a", "e_bar", "E"):
        np.testing.assert_array_equal(chip.gather(name), ref[name], err_msg=name)
    np.testing.assert_array_equal(chip._net.kernels[1].eps_v, ref["eps_v"])
    for projection, w in enumerate(ref["weights"]):
        after = stored(chip, projection, w.shape)
        assert not np.array_equal(after, weights32[projection])  # the sample trained
        np.testing.assert_array_equal(after, w, err_msg=f"projection {projection}")


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def test_f32_mode_agrees_with_float64_within_1e_5() -> None:
    weights, x = network(2)
    weights32 = [w.astype(np.float32).astype(np.float64) for w in weights]
    x32 = x.astype(np.float32).astype(np.float64)
    chip = loaded("f32", weights32, x32)
    chip.target(0, LABEL)
    result = chip.run(STEPS, mode=1)
    ref = transcription(np.float64, weights32, x32, LABEL)
    np.testing.assert_array_equal(result.spikes, ref["z"])
    assert relative(result.outputs, ref["y"]) < 1e-5
    assert relative(chip.gather("v"), ref["v"][-1]) < 1e-5
    for name in ("a", "eps_a", "e_bar", "E"):
        assert relative(chip.gather(name), ref[name]) < 1e-5, name
    for projection, w in enumerate(ref["weights"]):
        update = stored(chip, projection, w.shape) - weights32[projection]
        assert relative(update, w - weights32[projection]) < 1e-4


def test_s1615_membranes_stay_within_1e_3_of_float64() -> None:
    weights, x = network(3)
    config = EpropConfig(weight_format="s16.15", training=False)
    chip = loaded("s16.15", weights, x[:0], config)
    vs, spikes = [], []
    for row in x:  # mode 2 continues the state: one step at a time
        chip.inject_values(0, list(enumerate(row.tolist())))
        result = chip.run(1, mode=2)
        spikes.append(result.spikes[0])
        vs.append(Fixed.to_float(chip.gather("v")))
    vs, spikes = np.array(vs), np.array(spikes)
    exact = [decode(encode(w, "s16.15").payload, w.size, "s16.15").reshape(w.shape)
             for w in weights]
    ref = transcription(np.float64, exact, x, LABEL, spikes=spikes)
    assert 0 < spikes.sum() and np.abs(ref["v"]).max() < 8
    assert np.abs(vs - ref["v"]).max() < 1e-3
    assert chip.status()["saturations"] == 0


def test_s1615_training_on_the_reference_task_does_not_saturate() -> None:
    rng = np.random.default_rng(4)
    weights, _ = network(4)
    config = EpropConfig(weight_format="s16.15")
    chip = loaded("s16.15", weights, np.zeros((0, CONFIG.inputs)), config)
    for sample in range(2):  # log-Mel-like features: smooth, normalised, 80 bands
        bands = np.cumsum(rng.normal(0, 0.3, (STEPS, CONFIG.inputs)), axis=0)
        features = (bands - bands.mean()) / bands.std()
        for step, row in enumerate(features):
            chip.inject_values(step, list(enumerate(row.tolist())))
        chip.target(sample, sample % CONFIG.outputs)
        result = chip.run(STEPS, mode=1)
        assert result.spikes.sum() > 0 and np.isfinite(result.loss)
    assert chip.status()["saturations"] == 0


def test_the_surrogate_table_follows_the_float_pseudo_derivative() -> None:
    u = np.linspace(-6, 6, 2001)
    surrogate = Surrogate.of(0.5, 0.5, 3.0, 0.15)
    table = S1615(surrogate, Fixed(), "lut")
    raw = Fixed().from_float(u)
    exact = surrogate(u.astype(np.float32)).astype(np.float64)
    inside = np.abs(u) <= 4
    error = np.abs(Fixed.to_float(table.psi(raw)) - exact)
    assert error[inside].max() < 5e-3  # linear interpolation on a 8/255 grid
    assert np.all(Fixed.to_float(table.psi(raw[u > 4])) == Fixed.to_float(table.lut[-1]))
