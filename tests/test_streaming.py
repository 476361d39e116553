"""Streaming HYPR: chunking-independent, equal to batch HYPR for one update per sequence, and
able to learn online."""

from __future__ import annotations

import copy

import pytest
import torch

from hwloop.errors import UserError
from hwloop.learning.hypr import HYPR
from hwloop.learning.network import SpikingNetwork
from hwloop.learning.streaming import IGNORE, StreamingHYPR
from hwloop.neurons import LI, LIF
from networks import IGNORE_FIRST, B, K, M, T, active_network, batch


def stream_targets(labels: torch.Tensor, steps: int, ignore_first: int) -> torch.Tensor:
    targets = labels[:, None].repeat(1, steps)
    targets[:, :ignore_first] = IGNORE
    return targets


def test_one_update_per_sequence_equals_batch_hypr() -> None:
    inputs, labels = batch()
    streamed = active_network("adlif", 2, "full", skip=True)
    batched = copy.deepcopy(streamed)
    lam = 4
    learner = StreamingHYPR(
        streamed, torch.optim.SGD(streamed.parameters(), lr=0.5), lam, update_every=T // lam
    )
    updates = learner.feed(inputs, stream_targets(labels, T, IGNORE_FIRST))
    loss = HYPR(lam).compute_gradients(batched, inputs, labels, IGNORE_FIRST)
    torch.optim.SGD(batched.parameters(), lr=0.5).step()
    assert len(updates) == 1 and updates[0].loss == pytest.approx(loss, abs=1e-12)
    for (name, a), b in zip(streamed.named_parameters(), batched.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


def test_result_does_not_depend_on_how_the_stream_is_chunked() -> None:
    inputs, labels = batch()
    inputs = torch.cat([inputs, inputs.flip(1)], 1)  # 48 steps
    targets = stream_targets(labels, 48, 3)
    results = []
    for cuts in ([48], [7, 13, 4, 24], [1] * 48):
        network = active_network("brf", 1, "full")
        learner = StreamingHYPR(
            network, torch.optim.Adam(network.parameters(), lr=0.01), lam=5, update_every=3,
            grad_clip=1.0,
        )
        start, losses = 0, []
        for cut in cuts:
            losses += [u.loss for u in learner.feed(inputs[:, start : start + cut], targets[:, start : start + cut])]
            start += cut
        assert learner.pending is not None and learner.pending[0].shape[1] == 48 % 5
        results.append((losses, [p.detach().clone() for p in network.parameters()]))
    assert len(results[0][0]) == 48 // 5 // 3
    for losses, params in results[1:]:
        assert losses == pytest.approx(results[0][0], abs=1e-12)
        for a, b in zip(params, results[0][1]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_streaming_learns_online() -> None:
    """Target = which of two input groups is active; the loss falls along the stream."""
    torch.manual_seed(0)
    network = SpikingNetwork(4, [16], 2, LIF(), LI(tau_range=(2.0, 4.0)), seed=0, dtype=torch.float64)
    learner = StreamingHYPR(
        network, torch.optim.Adam(network.parameters(), lr=0.05), lam=10, update_every=2
    )
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        label = torch.randint(0, 2, (8, 1), generator=gen)
        active = torch.cat([label == 0, label == 0, label == 1, label == 1], 1).double()
        inputs = (torch.rand(8, 20, 4, generator=gen, dtype=torch.float64) < 0.6) * active[:, None]
        losses += [u.loss for u in learner.feed(inputs.double() * 10, label.repeat(1, 20))]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_bad_arguments() -> None:
    network = active_network("lif", 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    with pytest.raises(UserError, match="update_every must be an integer >= 1"):
        StreamingHYPR(network, optimizer, 3, 0)
    with pytest.raises(UserError, match="lambda must be an integer >= 1"):
        StreamingHYPR(network, optimizer, 0, 1)
    learner = StreamingHYPR(network, optimizer, 3, 1)
    inputs, labels = batch()
    with pytest.raises(UserError, match="targets must have shape"):
        learner.feed(inputs, labels)


def chunk_learner(update_every: int = 1) -> StreamingHYPR:
    network = active_network("lif", 1)
    return StreamingHYPR(network, torch.optim.SGD(network.parameters(), lr=0.1), 4, update_every)


def chunk(steps: int = 8, batch_size: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(steps)
    inputs = (torch.rand(batch_size, steps, M, generator=gen, dtype=torch.float64) < 0.5).double()
    targets = torch.randint(0, K, (batch_size, steps), generator=gen)
    targets[:, :2] = IGNORE
    return inputs, targets


def changed(tensor: torch.Tensor, index: tuple[int, ...], value: float) -> torch.Tensor:
    """A copy of ``tensor`` with ``tensor[index] = value``."""
    copy = tensor.clone()
    copy[index] = value
    return copy


X, Y = chunk()


@pytest.mark.parametrize(
    "inputs, targets, message",
    [
        (X.tolist(), Y, "inputs and targets must be torch tensors, got list and Tensor"),
        (X, Y.numpy(), "inputs and targets must be torch tensors, got Tensor and ndarray"),
        (X[0], Y[0], r"inputs must have shape \(B, t, 7\) .* got \(8, 7\)"),
        (X[..., :5], Y, r"inputs must have shape \(B, t, 7\) .* got \(2, 8, 5\)"),
        (X, Y[:, :5], r"targets must have shape \(2, 8\) \(B, t\), got \(2, 5\)"),
        (X.to("meta"), Y, "must be on the network's device cpu, got meta and cpu"),
        (X.float(), Y, "inputs have dtype torch.float32 but the network computes in torch.float64"),
        (X.cfloat(), Y, "inputs must be real numbers, got dtype torch.complex64"),
        (changed(X, (0, 3, 1), float("nan")), Y, "inputs contain NaN or inf"),
        (changed(X, (1, 5, 0), float("inf")), Y, "inputs contain NaN or inf"),
        (X, Y.double(), "targets must be an integer tensor .* got dtype torch.float64"),
        (X, Y > 0, "targets must be an integer tensor .* got dtype torch.bool"),
        (X, changed(Y, (0, 4), K), r"targets must be -1 \(no target\) or a class in \[0, 3\), got 3"),
        (X, changed(Y, (1, 6), -2), r"or a class in \[0, 3\), got -2"),
        (X, Y.to(torch.uint8), r"or a class in \[0, 3\), got 255"),  # -1 wrapped around
    ],
)
def test_feed_refuses_bad_chunks_in_one_line(inputs: object, targets: object, message: str) -> None:
    learner = chunk_learner()
    with pytest.raises(UserError, match=message) as error:
        learner.feed(inputs, targets)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)
    assert learner.pending is None and learner.traces is None and learner.batch_size is None


def test_spike_inputs_and_integer_targets_are_converted() -> None:
    """bool/uint8 spikes become the network's dtype and int32 targets int64, exactly."""
    inputs, targets = chunk(12)
    reference = chunk_learner()
    expected = [u.loss for u in reference.feed(inputs, targets)]
    converted = [(inputs.bool(), targets.int()), (inputs.to(torch.uint8), targets.short())]
    for spikes, classes in converted:
        learner = chunk_learner()
        assert [u.loss for u in learner.feed(spikes, classes)] == expected
        for a, b in zip(learner.network.parameters(), reference.network.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batch_size_change_needs_reset() -> None:
    learner = chunk_learner(update_every=3)
    learner.feed(*chunk(6))  # one window done, 2 steps pending
    with pytest.raises(UserError, match="batch size 3 but the stream carries the state of 2; call"):
        learner.feed(*chunk(6, batch_size=3))
    # the refused chunk changed nothing: the stream goes on as if it had not been fed
    fresh = chunk_learner(update_every=3)
    fresh.feed(*chunk(6))
    assert [u.loss for u in learner.feed(*chunk(8))] == [u.loss for u in fresh.feed(*chunk(8))]
    learner.reset()
    assert len(learner.feed(*chunk(12, batch_size=3))) == 1


def test_after_update_runs_without_autograd() -> None:
    """A constraint that writes parameters in place needs no torch.no_grad() from the user."""
    network = active_network("adlif", 1)
    seen: list[bool] = []

    def constrain() -> None:
        seen.append(torch.is_grad_enabled())
        for layer in network.hidden:
            layer.model.constrain_(dict(layer.params.items()))

    learner = StreamingHYPR(
        network, torch.optim.SGD(network.parameters(), lr=100.0), 4, 1, after_update=constrain
    )
    updates = learner.feed(*chunk(8))
    assert len(updates) == 2 and seen == [False, False]
    for name in ("tau_u", "tau_w"):
        value = network.hidden[0].params[name].detach()
        assert 0.0 <= float(value.min()) <= float(value.max()) <= 1.0


def test_constructor_refuses_bad_arguments() -> None:
    network = active_network("lif", 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    for grad_clip in (0.0, -1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(UserError, match="grad_clip must be a finite number > 0"):
            StreamingHYPR(network, optimizer, 3, 1, grad_clip=grad_clip)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="optimizer must be a torch.optim.Optimizer, got generator"):
        StreamingHYPR(network, network.parameters(), 3, 1)  # type: ignore[arg-type]
    copy_optimizer = torch.optim.SGD(copy.deepcopy(network).parameters(), lr=0.1)
    with pytest.raises(UserError, match="holds parameters that are not this network's"):
        StreamingHYPR(network, copy_optimizer, 3, 1)
    with pytest.raises(UserError, match="after_update must be a function"):
        StreamingHYPR(network, optimizer, 3, 1, after_update=0)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="network must be a SpikingNetwork, got Linear"):
        StreamingHYPR(torch.nn.Linear(2, 2), optimizer, 3, 1)  # type: ignore[arg-type]
    readout_only = torch.optim.SGD(network.readout.parameters(), lr=0.1)
    StreamingHYPR(network, readout_only, 3, 1, grad_clip=2)  # a subset of the parameters is fine
