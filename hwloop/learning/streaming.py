"""Streaming HYPR: learn from an unbounded input stream without keeping any history.

The stream arrives in chunks of any length. Steps are buffered until a full subsequence of λ
steps is available (so the schedule does not depend on how the stream was chunked); each
subsequence runs HYPR's S- and P-stage, carrying state and eligibilities; every
``update_every`` subsequences the summed gradient, divided by the number of targeted steps,
is clipped and applied by the optimizer. Memory is that of one subsequence plus the traces.

Unlike batch HYPR, the result depends on the update schedule: the eligibilities mix old and new
weights (hypr.md §5), as in any online learner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from hwloop.errors import UserError
from hwloop.learning.hypr import Gradients, HYPREngine, Trace, assign_gradients, check_lambda
from hwloop.learning.network import SpikingNetwork

IGNORE = -1
"""Target value of steps that carry no target."""


def per_step_ce_targets(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy summed over the targeted steps of outputs (B, λ, K), targets (B, λ)
    (IGNORE for none), and its derivative w.r.t. the outputs; not normalised."""
    valid = targets != IGNORE
    log_probs = torch.log_softmax(outputs, -1)
    onehot = torch.nn.functional.one_hot(targets.clamp(min=0), outputs.shape[-1])
    onehot = onehot.to(outputs.dtype) * valid[..., None]
    loss = -(log_probs * onehot).sum()
    grad = (log_probs.exp() * valid[..., None] - onehot)
    return loss, grad


@dataclass
class StreamUpdate:
    """One optimizer update: its mean loss over the targeted steps and their count."""

    loss: float
    targeted_steps: int


class StreamingHYPR:
    """Online HYPR learner over a stream of (inputs (B, t, M), targets (B, t)) chunks.

    Args:
        network: the network to train (its state is carried across chunks).
        optimizer: a torch optimizer over ``network.parameters()``.
        lam: subsequence length λ ≥ 1.
        update_every: optimizer step every K subsequences (K·λ stream steps).
        grad_clip: global-norm clipping threshold, or None.
        after_update: called after each optimizer step (e.g. parameter constraints).
        recurrent_timing: ``fixed`` or ``official``.
    """

    def __init__(
        self,
        network: SpikingNetwork,
        optimizer: torch.optim.Optimizer,
        lam: int,
        update_every: int,
        *,
        grad_clip: float | None = None,
        after_update: Callable[[], None] | None = None,
        recurrent_timing: str = "fixed",
    ) -> None:
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise UserError(f"update_every must be an integer >= 1, got {update_every!r}")
        self.network, self.optimizer = network, optimizer
        self.lam, self.update_every = check_lambda(lam), update_every
        self.grad_clip, self.after_update = grad_clip, after_update
        self.engine = HYPREngine(network, recurrent_timing)
        self.traces: list[Trace] | None = None
        self.grads: Gradients = {}
        self.loss_sum = 0.0
        self.targeted = 0
        self.windows = 0
        self.steps = 0
        self.pending: tuple[Tensor, Tensor] | None = None

    def reset(self) -> None:
        """Forget state, eligibilities, buffered steps and unapplied gradients (a new stream)."""
        self.traces, self.pending, self.grads = None, None, {}
        self.loss_sum, self.targeted, self.windows = 0.0, 0, 0

    def feed(self, inputs: Tensor, targets: Tensor) -> list[StreamUpdate]:
        """Consume a chunk: inputs (B, t, M), targets (B, t) int64 (IGNORE = no target).
        Returns the optimizer updates this chunk completed (possibly none)."""
        if targets.shape != inputs.shape[:2]:
            raise UserError(
                f"targets must have shape {tuple(inputs.shape[:2])} (B, t), got {tuple(targets.shape)}"
            )
        if self.pending is not None:
            inputs = torch.cat([self.pending[0], inputs], 1)
            targets = torch.cat([self.pending[1], targets], 1)
        full = inputs.shape[1] - inputs.shape[1] % self.lam
        updates = []
        for start in range(0, full, self.lam):
            update = self._window(inputs[:, start : start + self.lam], targets[:, start : start + self.lam])
            if update is not None:
                updates.append(update)
        rest = inputs.shape[1] - full
        self.pending = (inputs[:, full:], targets[:, full:]) if rest else None
        return updates

    def _window(self, inputs: Tensor, targets: Tensor) -> StreamUpdate | None:
        if self.traces is None:
            self.traces = self.engine.start(inputs)
        loss, _ = self.engine.window(
            self.traces, inputs, self.steps,
            lambda outputs, _start: per_step_ce_targets(outputs, targets), self.grads,
        )
        self.steps += inputs.shape[1]
        self.loss_sum += float(loss)
        self.targeted += int((targets != IGNORE).sum())
        self.windows += 1
        if self.windows % self.update_every:
            return None
        return self._update()

    def _update(self) -> StreamUpdate:
        count = max(self.targeted, 1)
        assign_gradients(self.network, self.grads, scale=1.0 / count)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.after_update is not None:
            self.after_update()
        update = StreamUpdate(self.loss_sum / count, self.targeted)
        self.grads, self.loss_sum, self.targeted = {}, 0.0, 0
        return update
