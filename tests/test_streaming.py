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
from networks import IGNORE_FIRST, T, active_network, batch


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
