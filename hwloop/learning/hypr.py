"""HYPR: exact within-subsequence reverse scans plus forward-carried eligibilities (hypr.md §3).

The sequence is cut into subsequences of λ steps (the last may be shorter). For each one:

* S-stage (no autograd): every layer runs its λ steps, bottom-up, recording currents, states
  and spikes.
* P-stage, top-down: per-step Jacobians (A, c, K) for all λ steps at once; the learning signal
  l_τ = (dL/dz_τ)_inst·dz/ds_τ; a reverse scan q_τ = l_τ + A_{τ+1}ᵀ·q_{τ+1} inside the window;
  gradients Σ_τ (q_τ·c_τ)·pre_τ + q_0·E_0 as one matrix product; the new eligibility
  E_λ = Φ_0·E_0 + Σ_τ Φ_τ·c_τ·pre_τ (Φ_τ = A_λ···A_{τ+1}) as one batched product; and the
  instantaneous signal (l_τ·c_τ)·W for the layer below.

Only states and eligibilities cross a window boundary, so memory does not grow with T, and the
result does not depend on λ (§5). λ = 1 is e-prop (with HYPR's exact neuron Jacobians).

Eligibility layout per layer: ``e_syn`` (B, N, d, P) for the presynaptic vector
pre = [x | x_skip | z_rec | 1] (W_in, W_skip, full W_rec, bias), ``e_self`` (B, N, d) for
self-recurrent weights, ``e_par`` (B, N, d, n_p) for the neuron parameters.

Recurrent timing (§3.5): ``fixed`` (default) evaluates the Jacobians at the current the step
really used and takes z_{τ-1} as the recurrent presynaptic signal; ``official`` reproduces the
authors' published code, which uses Ĩ_τ = I_ff,τ + R(z_τ) and z_τ instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from hwloop.errors import UserError
from hwloop.learning.losses import (
    STREAMING_LOSSES,
    PredictionAccumulator,
    mean_output_delta,
    mean_output_window,
    per_step_ce_window,
)
from hwloop.learning.network import Layer, LayerRun, SpikingNetwork
from hwloop.neurons.base import State

RECURRENT_TIMINGS = ("fixed", "official")

WindowLoss = Callable[[Tensor, int], tuple[Tensor, Tensor]]
"""(outputs (B, λ, K), start step) -> (summed loss, dL/du (B, λ, K))."""


@dataclass
class Trace:
    """What HYPR carries for one layer from one subsequence to the next.

    Eligibilities are None while they are all zero (at the start of a sequence).
    """

    state: State
    spike: Tensor
    e_syn: Tensor | None = None
    e_self: Tensor | None = None
    e_par: Tensor | None = None


Gradients = dict[str, Tensor]
"""Accumulated gradients, keyed by the network's parameter names."""


def check_lambda(lam: int) -> int:
    if isinstance(lam, bool) or not isinstance(lam, int) or lam < 1:
        raise UserError(f"lambda must be an integer >= 1 (the subsequence length), got {lam!r}")
    return lam


def check_timing(timing: str) -> str:
    if timing not in RECURRENT_TIMINGS:
        raise UserError(
            f"unknown recurrent_timing {timing!r} (choose from: {', '.join(RECURRENT_TIMINGS)})"
        )
    return timing


class HYPREngine:
    """Runs HYPR window by window on one network, carrying traces and summing gradients."""

    def __init__(self, network: SpikingNetwork, recurrent_timing: str = "fixed") -> None:
        self.network = network
        self.timing = check_timing(recurrent_timing)

    def start(self, inputs: Tensor) -> list[Trace]:
        """Zero traces for a batch like ``inputs`` (B, ·, M)."""
        return [Trace(*state) for state in self.network.initial_states(inputs)]

    @torch.no_grad()
    def window(
        self,
        traces: list[Trace],
        inputs: Tensor,
        start: int,
        loss: WindowLoss,
        grads: Gradients,
        *,
        keep_eligibility: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Process one subsequence inputs (B, λ, M) starting at step ``start``.

        Updates ``traces`` in place and adds this window's gradients to ``grads``. Without
        ``keep_eligibility`` (the last window of a sequence) the new eligibilities are not
        computed. Returns (summed loss, outputs (B, λ, K)).
        """
        layers = self.network.layers
        hidden_count = len(self.network.hidden)
        signals = [inputs]
        runs: list[LayerRun] = []
        coeffs = [layer.coefficients() for layer in layers]
        for index, layer in enumerate(layers):  # S-stage, bottom-up
            trace = traces[index]
            source = self.network.skip_source(index) if index < hidden_count else None
            run = layer.run(
                signals[-1],
                signals[source] if source is not None else None,
                trace.state,
                trace.spike,
                coeffs[index],
                record=True,
            )
            runs.append(run)
            signals.append(run.spikes)
        outputs = signals[-1]
        loss_sum, output_grad = loss(outputs, start)
        # P-stage, top-down, time-major (λ, B, ·): each layer adds its instantaneous signal to
        # its sources' buffers.
        downward: list[Tensor | None] = [None] * (len(layers) + 1)
        downward[-1] = output_grad.transpose(0, 1)
        for index in range(len(layers) - 1, -1, -1):
            layer, run = layers[index], runs[index]
            source = self.network.skip_source(index) if index < hidden_count else None
            signal = downward[index + 1]
            assert signal is not None
            adjoint = self._layer_backward(
                layer,
                run,
                signals[index],
                signals[source] if source is not None else None,
                signal,
                coeffs[index],
                traces[index],
                grads,
                _prefix(self.network, index),
                keep_eligibility,
            )
            traces[index].state, traces[index].spike = run.final_state, run.final_spike
            if index > 0:
                _add(downward, index, adjoint @ layer.w_in)
            if source is not None and source > 0:
                assert layer.w_skip is not None
                _add(downward, source, adjoint @ layer.w_skip)
        return loss_sum, outputs

    def _layer_backward(
        self,
        layer: Layer,
        run: LayerRun,
        inputs: Tensor,
        skip_inputs: Tensor | None,
        signal: Tensor,
        coeffs: dict[str, Tensor],
        trace: Trace,
        grads: Gradients,
        prefix: str,
        keep_eligibility: bool,
    ) -> Tensor:
        """P-stage of one layer for the signal dL/dz (λ, B, N); returns the instantaneous
        current adjoint l_τ·c_τ (λ, B, N) for the layers below.

        Layouts: Jacobians A (d, d, λ, B, N), c (d, λ, B, N), K (n_p, d, λ, B, N); q-values
        (d, λ, B, N); reverse products Φ (d, d, λ, B, N). Per step of the scans every slice is
        a (B, N) block, so the sequential loops run on few, dense operations.
        """
        model = layer.model
        official = self.timing == "official" and layer.w_rec is not None
        rec_pre = run.spikes.transpose(0, 1) if official else run.spikes_before  # (λ, B, N)
        jac = model.jacobians(run.currents, run.states_before, run.spikes_before, coeffs)
        dz_ds = jac.dz_ds
        if official:
            recurrent = layer.recurrent_current(rec_pre)
            assert recurrent is not None
            feedforward = layer.feedforward_current(inputs, skip_inputs).transpose(0, 1)
            jac = model.jacobians(feedforward + recurrent, run.states_before, run.spikes_before, coeffs)
        steps, batch, size = signal.shape
        d = model.state_size
        learning = signal * dz_ds  # l_τ (d, λ, B, N)
        A = jac.A

        # One reverse sweep over the window: the q-values q_τ = l_τ + A_{τ+1}ᵀ·q_{τ+1} and, when the
        # eligibility is kept, the products with Φ_τ = A_λ···A_{τ+1} (never stored whole).
        q = torch.empty_like(learning)
        q[:, -1] = learning[:, -1]
        if keep_eligibility:
            v = torch.empty_like(jac.c)  # Φ_τ·c_τ (d, λ, B, N)
            v[:, -1] = jac.c[:, -1]
            e_par = jac.K[:, :, -1].clone()  # Σ_τ Φ_τ·K_τ (n_p, d, B, N)
            phi = A[:, :, -1]  # Φ_{λ-1}; Φ_0 once the sweep is done
        for i in range(steps - 2, -1, -1):  # array index i is step τ = i + 1
            torch.add(learning[:, i], _transpose_times(A[:, :, i + 1], q[:, i + 1]), out=q[:, i])
            if keep_eligibility:
                v[:, i] = _matrix_times(phi, jac.c[:, i])
                e_par += _matrix_times(phi, jac.K[:, :, i])
                phi = _matrix_product(phi, A[:, :, i])
        q0 = _transpose_times(A[:, :, 0], q[:, 0])  # (d, B, N)
        adjoint = (q * jac.c).sum(0)  # dL/dI_τ (λ, B, N)

        pre = _presynaptic(layer, inputs, skip_inputs, rec_pre.transpose(0, 1))  # (B, λ, P)
        flat_pre = pre.reshape(batch * steps, -1)
        g_syn = adjoint.transpose(0, 1).reshape(batch * steps, size).T @ flat_pre
        g_par = (jac.K * q).sum((1, 2, 3))  # (n_p, N)
        if trace.e_syn is not None:
            # contiguous operands keep bmm on its fast path (a permuted view makes it copy per matrix)
            q0_rows = q0.permute(1, 2, 0).contiguous()[:, :, None, :]  # (B, N, 1, d)
            g_syn += (q0_rows @ trace.e_syn).sum(0).squeeze(1)
        if trace.e_par is not None:
            g_par += (trace.e_par * q0).sum((1, 2))
        self_pre = rec_pre if layer.recurrence == "self" else None
        if self_pre is not None:
            g_self = (adjoint * self_pre).sum((0, 1))
            if trace.e_self is not None:
                g_self += (q0 * trace.e_self).sum((0, 1))
            _add_grad(grads, prefix + "w_rec", g_self)
        _split_syn_grad(layer, g_syn, grads, prefix)
        for k, name in enumerate(model.param_names):
            _add_grad(grads, f"{prefix}params.{name}", g_par[k])

        if keep_eligibility:
            flat_v = v.permute(2, 3, 0, 1).reshape(batch, size * d, steps)
            if trace.e_syn is None:
                trace.e_syn = (flat_v @ pre).view(batch, size, d, -1)  # (B, N, d, P)
            else:
                # updated in place: the largest tensor is not reallocated every window, which
                # keeps the heap from fragmenting (and the process from growing) on long inputs
                trace.e_syn.copy_(phi.permute(2, 3, 0, 1).contiguous() @ trace.e_syn)
                trace.e_syn.view(batch, size * d, -1).baddbmm_(flat_v, pre)
            e_self = (v * self_pre).sum(1) if self_pre is not None else None  # (d, B, N)
            if trace.e_par is not None:
                e_par += _matrix_times(phi, trace.e_par)
            if e_self is not None and trace.e_self is not None:
                e_self += _matrix_times(phi, trace.e_self)
            trace.e_par, trace.e_self = e_par, e_self
        return (learning * jac.c).sum(0)


def _transpose_times(matrix: Tensor, vector: Tensor) -> Tensor:
    """Aᵀ·q for A (d, d, ...) and q (d, ...): (Aᵀq)_k = Σ_j A[j, k]·q[j]."""
    return (matrix * vector.unsqueeze(1)).sum(0)


def _matrix_times(matrix: Tensor, other: Tensor) -> Tensor:
    """M·x for M (d, d, ...) and x (d, ...) or (·, d, ...) (a leading batch of vectors)."""
    return (matrix * other.unsqueeze(-matrix.dim())).sum(-matrix.dim() + 1)


def _matrix_product(left: Tensor, right: Tensor) -> Tensor:
    """L·R for L, R (d, d, ...): (LR)[i, k] = Σ_j L[i, j]·R[j, k]."""
    return (left.unsqueeze(2) * right.unsqueeze(0)).sum(1)


def _presynaptic(
    layer: Layer, inputs: Tensor, skip_inputs: Tensor | None, rec_pre: Tensor
) -> Tensor:
    """pre = [x | x_skip | z_rec (full recurrence) | 1]: (B, λ, P)."""
    parts = [inputs]
    if layer.w_skip is not None:
        assert skip_inputs is not None
        parts.append(skip_inputs)
    if layer.recurrence == "full":
        parts.append(rec_pre)
    parts.append(torch.ones_like(inputs[..., :1]))
    return torch.cat(parts, -1)


def _split_syn_grad(layer: Layer, g_syn: Tensor, grads: Gradients, prefix: str) -> None:
    """Split the (N, P) gradient of pre = [x | x_skip | z_rec | 1] into the layer's weights."""
    widths = [("w_in", layer.input_size)]
    if layer.w_skip is not None:
        widths.append(("w_skip", layer.skip_size))
    if layer.recurrence == "full":
        widths.append(("w_rec", layer.size))
    widths.append(("bias", 1))
    start = 0
    for name, width in widths:
        part = g_syn[:, start : start + width]
        _add_grad(grads, prefix + name, part[:, 0] if name == "bias" else part)
        start += width


def _add_grad(grads: Gradients, name: str, value: Tensor) -> None:
    grads[name] = grads[name] + value if name in grads else value.clone()


def _add(buffers: list[Tensor | None], index: int, value: Tensor) -> None:
    current = buffers[index]
    buffers[index] = value if current is None else current + value


def _prefix(network: SpikingNetwork, index: int) -> str:
    return f"hidden.{index}." if index < len(network.hidden) else "readout."


class HYPR:
    """The HYPR learner: one optimizer step per batch.

    Args:
        lam: subsequence length λ ≥ 1; it changes memory and time, not the result.
        recurrent_timing: ``fixed`` (default) or ``official`` (§3.5).
        loss: ``per_step_ce`` (default) or ``mean_output_ce``, whose constant dL/du a forward
            pass finds first (window by window: memory still does not grow with T).
    """

    name = "hypr"

    def __init__(self, lam: int, recurrent_timing: str = "fixed",
                 loss: str = "per_step_ce") -> None:
        self.lam = check_lambda(lam)
        self.recurrent_timing = check_timing(recurrent_timing)
        if loss not in STREAMING_LOSSES:
            raise UserError(f"HYPR and e-prop train with loss {' or '.join(STREAMING_LOSSES)} "
                            f"(got {loss!r}); use learner=bptt for other losses")
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
        engine = HYPREngine(network, self.recurrent_timing)
        traces = engine.start(inputs)
        grads: Gradients = {}
        steps = inputs.shape[1]

        if self.loss == "mean_output_ce":
            delta, mean_loss = mean_output_delta(
                self._mean_valid_output(network, inputs, ignore_first), labels)

            def window_loss(outputs: Tensor, start: int) -> tuple[Tensor, Tensor]:
                return mean_output_window(outputs, delta, mean_loss, start, ignore_first)
        else:
            def window_loss(outputs: Tensor, start: int) -> tuple[Tensor, Tensor]:
                return per_step_ce_window(outputs, labels, start, ignore_first)

        total = inputs.new_zeros(())
        for start in range(0, steps, self.lam):
            window = inputs[:, start : start + self.lam]
            last = start + self.lam >= steps
            loss, outputs = engine.window(
                traces, window, start, window_loss, grads, keep_eligibility=not last
            )
            total += loss
            if accumulator is not None:
                accumulator.add(outputs)
        valid = steps - ignore_first
        assign_gradients(network, grads, scale=1.0 / valid)
        return float(total) / valid

    @torch.no_grad()
    def _mean_valid_output(
        self, network: SpikingNetwork, inputs: Tensor, ignore_first: int
    ) -> Tensor:
        """ū (B, K): the readout's mean over the steps from ``ignore_first`` on, window by
        window."""
        states = network.initial_states(inputs)
        total = inputs.new_zeros(())
        for start in range(0, inputs.shape[1], self.lam):
            outputs, states = network.run_window(inputs[:, start : start + self.lam], states)
            total = total + outputs[:, max(ignore_first - start, 0):].sum(1)
        return total / (inputs.shape[1] - ignore_first)


def assign_gradients(network: SpikingNetwork, grads: Gradients, scale: float) -> None:
    """Write ``scale``·grads into ``.grad`` of every parameter (zeros where none was computed)."""
    for name, parameter in network.named_parameters():
        grad = grads.get(name)
        parameter.grad = (grad * scale).to(parameter.dtype) if grad is not None else (
            torch.zeros_like(parameter)
        )
