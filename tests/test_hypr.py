"""HYPR's identities (hypr.md §5, §9): λ-invariance, the e-prop oracle, exact readout, the
autograd oracle for hidden layers, and the exact-BPTT special case. All in float64."""

from __future__ import annotations

import itertools

import pytest
import torch

from hwloop.errors import UserError
from hwloop.learning.bptt import BPTT
from hwloop.learning.eprop import EProp, eprop_reference_gradients
from hwloop.learning.hypr import HYPR, HYPREngine
from hwloop.learning.losses import per_step_ce_window, sequence_loss
from hwloop.learning.network import SpikingNetwork
from hwloop.neurons import ALIF, LI, LoihiLI
from networks import (
    IGNORE_FIRST,
    MODELS,
    T,
    active_network,
    batch,
    gradients,
    hidden_rates,
    max_abs_diff,
)

LAMBDAS = [1, 2, 3, 5, 7, T]


def hypr_gradients(network: SpikingNetwork, lam: int, timing: str = "fixed") -> dict:
    inputs, labels = batch()
    HYPR(lam, timing).compute_gradients(network, inputs, labels, IGNORE_FIRST)
    return gradients(network)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("timing", ["fixed", "official"])
def test_lambda_invariance_and_eprop_oracle(name: str, layers: int, timing: str) -> None:
    """Must-show 1 and 2: every gradient identical for every λ, and equal to the oracle."""
    network = active_network(name, layers, "full")
    inputs, labels = batch()
    rates = hidden_rates(network, inputs)
    assert all(0.02 < r < 0.7 for r in rates), f"test network must spike: {rates}"
    oracle = eprop_reference_gradients(network, inputs, labels, IGNORE_FIRST, timing)
    hidden_scale = max(float(g.abs().max()) for k, g in oracle.items() if k.startswith("hidden"))
    assert hidden_scale > 1e-4, "hidden gradients must be non-trivial for the test to mean much"
    reference = hypr_gradients(network, 1, timing)
    assert max_abs_diff(reference, oracle) <= 1e-10
    for lam in LAMBDAS[1:]:
        assert max_abs_diff(hypr_gradients(network, lam, timing), reference) <= 1e-10, lam


@pytest.mark.parametrize(
    "name,recurrence,skip",
    [
        (n, r, s)
        for n, r, s in itertools.product(["lif", "adlif", "brf"], ["self", "none"], [False, True])
    ],
)
def test_lambda_invariance_other_architectures(name: str, recurrence: str, skip: bool) -> None:
    """Self-recurrent (ScSr), feed-forward and skip-connected networks, 3 layers, λ ∤ T."""
    network = active_network(name, 3, recurrence, skip)
    inputs, labels = batch()
    oracle = eprop_reference_gradients(network, inputs, labels, IGNORE_FIRST)
    for lam in [1, 5, 11, T]:
        assert max_abs_diff(hypr_gradients(network, lam), oracle) <= 1e-10


@pytest.mark.parametrize("name", MODELS)
def test_official_timing_differs_from_fixed_in_recurrent_layers(name: str) -> None:
    network = active_network(name, 1, "full")
    fixed, official = hypr_gradients(network, 4, "fixed"), hypr_gradients(network, 4, "official")
    assert float((fixed["hidden.0.w_rec"] - official["hidden.0.w_rec"]).abs().max()) > 1e-6
    torch.testing.assert_close(fixed["readout.w_in"], official["readout.w_in"], rtol=0, atol=1e-14)
    feedforward = active_network(name, 1, "none")
    assert max_abs_diff(
        hypr_gradients(feedforward, 4, "fixed"), hypr_gradients(feedforward, 4, "official")
    ) == 0.0


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layers", [1, 2])
def test_readout_gradients_are_exact(name: str, layers: int) -> None:
    """§9.4: the readout's gradients equal autograd BPTT of the same loss."""
    network = active_network(name, layers, "full", skip=layers == 2)
    inputs, labels = batch()
    BPTT("per_step_ce").compute_gradients(network, inputs, labels, IGNORE_FIRST)
    bptt = gradients(network)
    hypr = hypr_gradients(network, 5)
    for key in ("readout.w_in", "readout.bias", "readout.params.tau_u"):
        assert float((hypr[key] - bptt[key]).abs().max()) <= 1e-12


def autograd_oracle_gradients(
    network: SpikingNetwork, target: int, inputs: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """§9.5: what HYPR computes for hidden layer ``target``, expressed as autograd of a forward
    pass with the same values and a modified graph (fixed timing)."""
    network.zero_grad(set_to_none=True)
    signals = [inputs]
    for index, layer in enumerate(network.hidden):
        coeffs = layer.coefficients()
        state, spike = layer.initial_state(inputs.shape[0], inputs)
        source = network.skip_source(index)
        feedforward = layer.feedforward_current(
            signals[-1], signals[source] if source is not None else None
        )
        upward = []
        for t in range(inputs.shape[1]):
            if index > target:
                state = tuple(s.detach() for s in state)
            spike_prev = spike.detach()
            recurrent = layer.recurrent_current(spike_prev)
            current = feedforward[:, t] + (recurrent if recurrent is not None else 0)
            constants = {k: v.detach() for k, v in coeffs.items()}
            dz_ds = layer.model.jacobians(
                current.detach(), tuple(s.detach() for s in state), spike_prev, constants
            ).dz_ds
            state, spike = layer.model.step(current, state, spike_prev, coeffs)
            upward.append(
                spike.detach()
                + sum(dz_ds[k] * (s - s.detach()) for k, s in enumerate(state))
            )
        signals.append(torch.stack(upward, 1))
    readout = network.readout
    coeffs = readout.coefficients()
    feedforward = readout.feedforward_current(signals[-1], None)
    state, output = readout.initial_state(inputs.shape[0], inputs)
    outputs = []
    for t in range(inputs.shape[1]):
        state = tuple(s.detach() for s in state)
        state, output = readout.model.step(feedforward[:, t], state, output.detach(), coeffs)
        outputs.append(output)
    loss = sequence_loss("per_step_ce", torch.stack(outputs, 1), labels, IGNORE_FIRST)
    loss.backward()
    prefix = f"hidden.{target}."
    return {k: p.grad for k, p in network.named_parameters() if k.startswith(prefix)}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("recurrence,skip", [("full", False), ("self", True), ("none", False)])
def test_hidden_gradients_equal_autograd_oracle(name: str, recurrence: str, skip: bool) -> None:
    network = active_network(name, 3, recurrence, skip)
    inputs, labels = batch()
    hypr = hypr_gradients(network, 7)
    for target in range(3):
        oracle = autograd_oracle_gradients(network, target, inputs, labels)
        for key, value in oracle.items():
            if value is None:  # AdLIF's threshold sits behind a stop-gradient
                assert float(hypr[key].abs().max()) == 0.0
                continue
            assert float((hypr[key] - value).abs().max()) <= 1e-12, key


@pytest.mark.parametrize("name", ["lif", "loihi_lif", "loihi_atrlif"])
def test_identities_with_a_loihi_readout(name: str) -> None:
    """Lava's LIF as the readout (two states, no parameters): λ-invariance, the e-prop oracle,
    exact readout gradients and the autograd oracle for every hidden layer."""
    network = active_network(name, 2, "full", skip=True, readout=LoihiLI(du=2048, dv=1024))
    inputs, labels = batch()
    assert all(0.02 < r < 0.7 for r in hidden_rates(network, inputs))
    oracle = eprop_reference_gradients(network, inputs, labels, IGNORE_FIRST)
    assert all(float(g.abs().max()) > 1e-5 for g in oracle.values())
    for lam in LAMBDAS:
        assert max_abs_diff(hypr_gradients(network, lam), oracle) <= 1e-10, lam
    BPTT("per_step_ce").compute_gradients(network, inputs, labels, IGNORE_FIRST)
    bptt = gradients(network)
    hypr = hypr_gradients(network, 5)
    for key in ("readout.w_in", "readout.bias"):
        assert float((hypr[key] - bptt[key]).abs().max()) <= 1e-12
    for target in range(2):
        oracle = autograd_oracle_gradients(network, target, inputs, labels)
        for key, value in oracle.items():
            assert float((hypr[key] - value).abs().max()) <= 1e-12, key


def exact_case_network(neuron: ALIF | None = None) -> SpikingNetwork:
    """§9.6: one non-recurrent ALIF layer without reset and adaptation coupling, and a readout
    whose α = exp(−1/1e-3) is exactly 0 in float64."""
    neuron = neuron or ALIF(beta_a=0.0, b_j0=0.0)
    network = active_network(
        "alif", 1, "none", readout=LI(tau_range=(1e-3, 1e-3)), neuron=neuron
    )
    return network


@pytest.mark.parametrize("lam", LAMBDAS)
def test_exact_special_case_equals_bptt(lam: int) -> None:
    """Must-show 3: in the spec's exact case HYPR equals autograd BPTT for every parameter."""
    network = exact_case_network()
    inputs, labels = batch()
    BPTT("per_step_ce").compute_gradients(network, inputs, labels, IGNORE_FIRST)
    bptt = gradients(network)
    hypr = hypr_gradients(network, lam)
    assert float(bptt["hidden.0.w_in"].abs().max()) > 1e-3
    assert max_abs_diff(hypr, bptt) <= 1e-10


def test_default_alif_is_an_approximation_of_bptt() -> None:
    """Counter-check of §9.6: with the default β_a, b_j0 the dropped z_{t-1} paths matter."""
    network = exact_case_network(ALIF())
    inputs, labels = batch()
    BPTT("per_step_ce").compute_gradients(network, inputs, labels, IGNORE_FIRST)
    bptt = gradients(network)
    hypr = hypr_gradients(network, 4)
    relative = (hypr["hidden.0.w_in"] - bptt["hidden.0.w_in"]).norm() / bptt["hidden.0.w_in"].norm()
    assert relative > 0.01


@pytest.mark.parametrize("name", ["adlif", "brf"])
@pytest.mark.parametrize("lam", [1, 4, 9, T])
def test_forward_pass_unchanged_by_chunking(name: str, lam: int) -> None:
    """§9.7: the S-stage reproduces the plain forward pass for every λ."""
    network = active_network(name, 2, "full", skip=True)
    inputs, labels = batch()
    with torch.no_grad():
        plain = network(inputs)
    engine = HYPREngine(network)
    traces = engine.start(inputs)
    windows = []
    for start in range(0, T, lam):
        _, outputs = engine.window(
            traces, inputs[:, start : start + lam], start,
            lambda u, s: per_step_ce_window(u, labels, s, IGNORE_FIRST), {},
        )
        windows.append(outputs)
    # equal up to re-association of the matrix products (different blocking per λ)
    torch.testing.assert_close(torch.cat(windows, 1), plain, rtol=0, atol=1e-12)
    chunked = torch.cat(list(network.windows(inputs, lam)), 1)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-12)


def test_eprop_is_hypr_at_lambda_one() -> None:
    network = active_network("alif", 2, "full")
    inputs, labels = batch()
    loss_eprop = EProp().compute_gradients(network, inputs, labels, IGNORE_FIRST)
    eprop = gradients(network)
    loss_hypr = HYPR(6).compute_gradients(network, inputs, labels, IGNORE_FIRST)
    assert max_abs_diff(eprop, gradients(network)) <= 1e-12
    assert loss_eprop == pytest.approx(loss_hypr, abs=1e-12)
    with torch.no_grad():
        expected = sequence_loss("per_step_ce", network(inputs), labels, IGNORE_FIRST)
    assert loss_hypr == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_lambda_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(UserError, match="lambda must be an integer >= 1"):
        HYPR(bad)  # type: ignore[arg-type]


def test_unknown_timing_is_rejected() -> None:
    with pytest.raises(UserError, match="unknown recurrent_timing"):
        HYPR(3, "late")


@pytest.mark.parametrize("name", ["alif", "eprop_alif"])
def test_mean_output_loss_is_lambda_invariant_and_exact_in_the_readout(name: str) -> None:
    """``mean_output_ce``: the same gradients for every λ, the readout's equal autograd BPTT's
    of the same loss, and the loss is the cross-entropy of the mean valid output."""
    network = active_network(name, 2, "full")
    inputs, labels = batch()
    BPTT("mean_output_ce").compute_gradients(network, inputs, labels, IGNORE_FIRST)
    bptt = gradients(network)
    losses, results = [], []
    for lam in (1, 5, T):
        losses.append(HYPR(lam, loss="mean_output_ce").compute_gradients(
            network, inputs, labels, IGNORE_FIRST))
        results.append(gradients(network))
    for other in results[1:]:
        assert max_abs_diff(other, results[0]) <= 1e-10
    assert float(results[0]["hidden.0.w_in"].abs().max()) > 1e-6
    assert float((results[0]["readout.w_in"] - bptt["readout.w_in"]).abs().max()) <= 1e-12
    with torch.no_grad():
        expected = float(sequence_loss("mean_output_ce", network(inputs), labels, IGNORE_FIRST))
    assert losses == pytest.approx([expected] * 3, abs=1e-12)
    per_step = HYPR(5).compute_gradients(network, inputs, labels, IGNORE_FIRST)
    assert per_step != pytest.approx(expected, abs=1e-6)  # a different loss, not a relabelling


def test_hypr_refuses_losses_it_cannot_stream() -> None:
    with pytest.raises(UserError, match="train with loss per_step_ce or mean_output_ce"):
        HYPR(3, loss="sum_of_softmax")
