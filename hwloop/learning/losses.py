"""Losses and prediction modes over readout potentials u (B, T, K) (hypr.md §4).

The mask m_t is 0 for steps t < ignore_first and 1 after; n_valid = T − ignore_first.

* ``per_step_ce``: L = (1/n_valid)·Σ_t m_t·(1/B)·Σ_b CE(u_bt, y_b).
* ``mean_output_ce``: L = (1/B)·Σ_b CE(ū_b, y_b), ū_b = (1/n_valid)·Σ_t m_t·u_bt (the loss of
  Bellec et al.'s e-prop and of "E-prop on SpiNNaker 2"). Its derivative dL/du_t = m_t·(p − y)/
  (B·n_valid) is the same at every step, so HYPR and e-prop take it from a forward pass first.
* ``sum_of_softmax``: L = (1/B)·Σ_b CE(Σ_t m_t·softmax(u_bt), y_b) (softmax applied again).
* ``last_step_ce``: L = (1/B)·Σ_b CE(u_bT, y_b) (mask not used).

Predictions: ``mean_over_sequence`` argmax Σ_t m_t·u_t; ``sum_of_softmax`` argmax Σ_t m_t·softmax(u_t);
``last_step`` argmax u_T. All are accumulated window by window, so long sequences never need
all T outputs at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("per_step_ce", "mean_output_ce", "sum_of_softmax", "last_step_ce")
STREAMING_LOSSES = ("per_step_ce", "mean_output_ce")
"""The losses HYPR and e-prop train with (the others need every output before any gradient)."""
PREDICTIONS = ("mean_over_sequence", "sum_of_softmax", "last_step")


def sequence_loss(name: str, outputs: Tensor, labels: Tensor, ignore_first: int) -> Tensor:
    """The loss ``name`` of outputs (B, T, K) for labels (B,); differentiable."""
    valid = outputs[:, ignore_first:]
    if name == "per_step_ce":
        steps = valid.shape[1]
        return F.cross_entropy(valid.reshape(-1, valid.shape[-1]), labels.repeat_interleave(steps))
    if name == "mean_output_ce":
        return F.cross_entropy(valid.mean(1), labels)
    if name == "sum_of_softmax":
        return F.cross_entropy(torch.softmax(valid, -1).sum(1), labels)
    if name == "last_step_ce":
        return F.cross_entropy(outputs[:, -1], labels)
    raise ValueError(f"unknown loss {name!r} (choose from: {', '.join(LOSSES)})")


def per_step_ce_window(
    outputs: Tensor, labels: Tensor, start: int, ignore_first: int
) -> tuple[Tensor, Tensor]:
    """Per-step cross-entropy of one window of outputs (B, λ, K) starting at step ``start``.

    Returns (Σ_τ m_τ·mean_b CE, its derivative w.r.t. outputs (B, λ, K)); both still to be
    divided by n_valid by the caller, once, after all windows.
    """
    skip = min(max(ignore_first - start, 0), outputs.shape[1])
    valid = outputs[:, skip:]
    batch = outputs.shape[0]
    log_probs = torch.log_softmax(valid, -1)
    target = F.one_hot(labels, outputs.shape[-1]).to(outputs.dtype)[:, None, :]
    loss = -(log_probs * target).sum() / batch
    grad = torch.zeros_like(outputs)
    grad[:, skip:] = (log_probs.exp() - target) / batch
    return loss, grad


def mean_output_window(
    outputs: Tensor, delta: Tensor, loss: Tensor, start: int, ignore_first: int
) -> tuple[Tensor, Tensor]:
    """One window of outputs (B, λ, K) under ``mean_output_ce`` whose δ = (p − y)/B (B, K) and
    loss (a scalar) a forward pass found: (the loss times the window's valid steps, δ at every
    valid step); both still to be divided by n_valid by the caller, as ``per_step_ce_window``."""
    skip = min(max(ignore_first - start, 0), outputs.shape[1])
    grad = torch.zeros_like(outputs)
    grad[:, skip:] = delta[:, None, :]
    return loss * (outputs.shape[1] - skip), grad


def mean_output_delta(outputs_mean: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(δ = (softmax(ū) − onehot(y))/B (B, K), the loss mean_b CE(ū_b, y_b)) for the mean
    valid outputs ū (B, K)."""
    batch = outputs_mean.shape[0]
    target = F.one_hot(labels, outputs_mean.shape[-1]).to(outputs_mean.dtype)
    delta = (torch.softmax(outputs_mean, -1) - target) / batch
    return delta, F.cross_entropy(outputs_mean, labels)


class PredictionAccumulator:
    """Collects the statistic a prediction mode needs, window by window."""

    def __init__(self, mode: str, ignore_first: int) -> None:
        if mode not in PREDICTIONS:
            raise ValueError(f"unknown prediction {mode!r} (choose from: {', '.join(PREDICTIONS)})")
        self.mode, self.ignore_first = mode, ignore_first
        self.total: Tensor | None = None
        self.steps = 0

    def add(self, outputs: Tensor) -> None:
        """Add a window of outputs (B, λ, K) following the previous ones."""
        start = self.steps
        self.steps += outputs.shape[1]
        if self.mode == "last_step":
            self.total = outputs[:, -1].detach()
            return
        valid = outputs[:, max(self.ignore_first - start, 0) :].detach()
        if self.mode == "sum_of_softmax":
            valid = torch.softmax(valid, -1)
        part = valid.sum(1)
        self.total = part if self.total is None else self.total + part

    def predictions(self) -> Tensor:
        """Predicted classes (B,)."""
        if self.total is None:
            raise ValueError("no outputs were added")
        return self.total.argmax(-1)


class LossAccumulator:
    """The loss ``name`` of outputs against labels (B,), accumulated window by window (no
    gradient): equal to ``sequence_loss`` of the whole output sequence."""

    def __init__(self, name: str, labels: Tensor, ignore_first: int) -> None:
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r} (choose from: {', '.join(LOSSES)})")
        self.name, self.labels, self.ignore_first = name, labels, ignore_first
        # per_step_ce: summed CE / B; sum_of_softmax: summed softmax; mean_output_ce: outputs
        self.total: Tensor | None = None
        self.last: Tensor | None = None
        self.steps = 0

    def add(self, outputs: Tensor) -> None:
        """Add a window of outputs (B, λ, K) following the previous ones."""
        start = self.steps
        self.steps += outputs.shape[1]
        self.last = outputs[:, -1].detach()
        valid = outputs[:, max(self.ignore_first - start, 0) :].detach()
        if self.name == "per_step_ce":
            labels = self.labels.repeat_interleave(valid.shape[1])
            part = F.cross_entropy(valid.reshape(-1, valid.shape[-1]), labels, reduction="sum")
            part = part / outputs.shape[0]
        elif self.name == "sum_of_softmax":
            part = torch.softmax(valid, -1).sum(1)
        elif self.name == "mean_output_ce":
            part = valid.sum(1)
        else:
            return
        self.total = part if self.total is None else self.total + part

    def loss(self) -> float:
        """The loss of all windows added."""
        if self.last is None:
            raise ValueError("no outputs were added")
        if self.name == "last_step_ce":
            return float(F.cross_entropy(self.last, self.labels))
        assert self.total is not None
        if self.name == "sum_of_softmax":
            return float(F.cross_entropy(self.total, self.labels))
        if self.name == "mean_output_ce":
            return float(F.cross_entropy(self.total / (self.steps - self.ignore_first),
                                         self.labels))
        return float(self.total) / (self.steps - self.ignore_first)
