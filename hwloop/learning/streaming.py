"""Streaming HYPR: learn from an unbounded input stream without keeping any history.

The stream arrives in chunks of any length. Steps are buffered until a full subsequence of λ
steps is available (so the schedule does not depend on how the stream was chunked); each
subsequence runs HYPR's S- and P-stage, carrying state and eligibilities; every
``update_every`` subsequences the summed gradient, divided by the number of targeted steps,
is clipped and applied by the optimizer. Memory is that of one subsequence plus the traces.

Unlike batch HYPR, the result depends on the update schedule: the eligibilities mix old and new
weights (hypr.md §5), as in any online learner. A worked example is in docs/streaming.md.
"""

from __future__ import annotations

import math
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
        optimizer: a torch optimizer over ``network.parameters()`` (or some of them).
        lam: subsequence length λ ≥ 1.
        update_every: optimizer step every K subsequences (K·λ stream steps).
        grad_clip: global-norm clipping threshold (a finite number > 0), or None.
        after_update: called after each optimizer step, under ``torch.no_grad()`` (e.g.
            parameter constraints that write the parameters in place).
        recurrent_timing: ``fixed`` or ``official``.

    Raises:
        UserError: an argument of the wrong type or out of range (one line).
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
        if not isinstance(network, SpikingNetwork):
            raise UserError(f"network must be a SpikingNetwork, got {type(network).__name__}")
        check_optimizer(optimizer, network)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise UserError(f"update_every must be an integer >= 1, got {update_every!r}")
        if grad_clip is not None and not _is_positive_number(grad_clip):
            raise UserError(
                "grad_clip must be a finite number > 0 (a gradient norm) or None, "
                f"got {grad_clip!r}"
            )
        if after_update is not None and not callable(after_update):
            raise UserError(
                f"after_update must be a function of no arguments or None, got {after_update!r}"
            )
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
        self.batch_size: int | None = None

    def reset(self) -> None:
        """Forget state, eligibilities, buffered steps and unapplied gradients (a new stream,
        which may have another batch size)."""
        self.traces, self.pending, self.grads = None, None, {}
        self.loss_sum, self.targeted, self.windows = 0.0, 0, 0
        self.batch_size = None

    def feed(self, inputs: Tensor, targets: Tensor) -> list[StreamUpdate]:
        """Consume a chunk: inputs (B, t, M), targets (B, t) (IGNORE = no target).
        Returns the optimizer updates this chunk completed (possibly none).

        Inputs are floating tensors of the network's dtype; spikes or counts given as bool or
        integer tensors are converted to it (exactly). Targets are integer tensors (converted
        to int64). A chunk that is refused (UserError) leaves the learner unchanged.
        """
        inputs, targets = self._check_chunk(inputs, targets)
        self.batch_size = inputs.shape[0]
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

    def _check_chunk(self, inputs: object, targets: object) -> tuple[Tensor, Tensor]:
        """The chunk as (inputs of the network's dtype, int64 targets); UserError if it is bad."""
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise UserError(
                "inputs and targets must be torch tensors, got "
                f"{type(inputs).__name__} and {type(targets).__name__} (use torch.as_tensor)"
            )
        size = self.network.input_size
        if inputs.dim() != 3 or inputs.shape[2] != size:
            raise UserError(
                f"inputs must have shape (B, t, {size}) (batch, steps, network inputs), "
                f"got {tuple(inputs.shape)}"
            )
        if targets.shape != inputs.shape[:2]:
            raise UserError(
                f"targets must have shape {tuple(inputs.shape[:2])} (B, t), "
                f"got {tuple(targets.shape)}"
            )
        device = self.network.readout.w_in.device
        if inputs.device != device or targets.device != device:
            raise UserError(
                f"inputs and targets must be on the network's device {device}, got "
                f"{inputs.device} and {targets.device}; move them with .to({str(device)!r})"
            )
        if self.batch_size is not None and inputs.shape[0] != self.batch_size:
            raise UserError(
                f"this chunk has batch size {inputs.shape[0]} but the stream carries the state "
                f"of {self.batch_size}; call reset() to start a new stream"
            )
        return self._check_inputs(inputs), self._check_targets(targets)

    def _check_inputs(self, inputs: Tensor) -> Tensor:
        """Inputs in the network's dtype: bool or integer spikes and counts are converted,
        floating inputs must have that dtype already and be finite."""
        dtype = self.network.readout.w_in.dtype
        if inputs.dtype.is_complex:
            raise UserError(f"inputs must be real numbers, got dtype {inputs.dtype}")
        if not inputs.dtype.is_floating_point:
            return inputs.to(dtype)
        if inputs.dtype != dtype:
            raise UserError(
                f"inputs have dtype {inputs.dtype} but the network computes in {dtype}; "
                f"convert them with inputs.to({dtype})"
            )
        if not bool(torch.isfinite(inputs).all()):
            raise UserError("inputs contain NaN or inf; clean the stream before feeding it")
        return inputs

    def _check_targets(self, targets: Tensor) -> Tensor:
        """Targets as int64, each IGNORE or a class of the network."""
        kind = targets.dtype
        if kind.is_floating_point or kind.is_complex or kind is torch.bool:
            raise UserError(
                f"targets must be an integer tensor of class ids ({IGNORE} = no target), "
                f"got dtype {kind}; convert them with targets.long()"
            )
        targets = targets.to(torch.int64)
        classes = self.network.num_classes
        wrong = (targets != IGNORE) & ((targets < 0) | (targets >= classes))
        if bool(wrong.any()):
            raise UserError(
                f"targets must be {IGNORE} (no target) or a class in [0, {classes}), "
                f"got {int(targets[wrong][0])}"
            )
        return targets

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
            with torch.no_grad():  # constraints write the parameters in place
                self.after_update()
        update = StreamUpdate(self.loss_sum / count, self.targeted)
        self.grads, self.loss_sum, self.targeted = {}, 0.0, 0
        return update


def check_optimizer(optimizer: object, network: SpikingNetwork) -> None:
    """Refuse anything but a torch optimizer over (some of) the network's parameters."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UserError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__} "
            "(e.g. torch.optim.Adam(network.parameters(), lr=0.01))"
        )
    own = {id(parameter) for parameter in network.parameters()}
    held = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    if any(id(parameter) not in own for parameter in held):
        raise UserError(
            "the optimizer holds parameters that are not this network's (was it built for "
            "another network or a copy?); build it over network.parameters()"
        )


def _is_positive_number(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and value > 0
    )
