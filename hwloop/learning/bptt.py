"""BPTT through autograd: the reference learner."""

from __future__ import annotations

import torch
from torch import Tensor

from hwloop.errors import UserError
from hwloop.learning.losses import LOSSES, PredictionAccumulator, sequence_loss
from hwloop.learning.network import SpikingNetwork


class BPTT:
    """Back-propagation through time of the configured loss (any of ``LOSSES``)."""

    name = "bptt"

    def __init__(self, loss: str = "per_step_ce") -> None:
        if loss not in LOSSES:
            raise UserError(f"unknown loss {loss!r} (choose from: {', '.join(LOSSES)})")
        self.loss = loss

    def compute_gradients(
        self,
        network: SpikingNetwork,
        inputs: Tensor,
        labels: Tensor,
        ignore_first: int,
        accumulator: PredictionAccumulator | None = None,
    ) -> float:
        """Set ``.grad`` of every parameter for inputs (B, T, M), labels (B,); return the loss."""
        network.zero_grad(set_to_none=True)
        outputs = network(inputs)
        loss = sequence_loss(self.loss, outputs, labels, ignore_first)
        loss.backward()
        for parameter in network.parameters():
            if parameter.grad is None:  # behind a stop-gradient (AdLIF's threshold)
                parameter.grad = torch.zeros_like(parameter)
        if accumulator is not None:
            accumulator.add(outputs)
        return float(loss.detach())
