"""A multi-layer recurrent spiking network with an LI readout (hypr.md §1).

Weights use PyTorch's (out, in) layout (the HYPR code's Flax kernels are the transpose).
Hidden layer l (1-based) receives, at step t,

    I_t = W_in·x_t + b + R(z_{t-1}) + W_skip·x^{(l-2)}_t

where x is the spike vector of layer l−1 at the same step (the network input for l = 1),
R is the recurrence (``none``: 0; ``full``: W_rec·z_{t-1}; ``self``: w_self ⊙ z_{t-1}, each
neuron feeding back to itself, ScSr-SNN), and the optional skip connection brings layer l−2's
spikes (layer 0 = the network input) to layer l ≥ 2, as in ScSr-SNN (Zhang & Li 2020). The
readout is an LI layer driven by the top hidden layer; its potential u_t (B, K) is the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
from torch import Tensor, nn

from hwloop.neurons import LI, NeuronModel
from hwloop.neurons.base import Coefficients, State

RECURRENCE_MODES = ("none", "full", "self")


@dataclass
class LayerRun:
    """What one layer did over a window of λ steps.

    ``spikes`` (B, λ, N) holds z_τ (the output u_τ for the readout), batch-major like the
    layer's inputs. The recorded tensors are time-major (λ, B, N), the layout HYPR's P-stage
    works in: ``currents`` the input currents I_τ, ``states_before`` and ``spikes_before`` s_{τ-1}
    and z_{τ-1} for τ = 1..λ (the values each step started from). ``final_state`` and
    ``final_spike`` are s_λ, z_λ, shaped (B, N).
    """

    currents: Tensor
    states_before: State
    spikes_before: Tensor
    spikes: Tensor
    final_state: State
    final_spike: Tensor


class Crossbar(Protocol):
    """A device that computes a layer's weight products (a device-side forward)."""

    def product(self, weight_name: str, inputs: Tensor, weight: Tensor) -> Tensor:
        """inputs (..., in) · weightᵀ → (..., out), computed by the device that holds the
        layer's ``weight_name`` (``w_in``, ``w_rec`` or ``w_skip``); ``weight`` is what the host
        holds of it (the read-back weights, for gradients)."""
        ...


class Layer(nn.Module):
    """One layer of neurons of one model: weights, bias and the model's trainable parameters.

    Parameters (PyTorch layout): ``w_in`` (N, M), ``bias`` (N,), ``w_rec`` (N, N) for full or
    (N,) for self recurrence, ``w_skip`` (N, M_skip), and ``params`` (each (N,)). With a
    ``crossbar`` attached, the products with the weight matrices are computed by the device.
    """

    crossbar: Crossbar | None = None

    def __init__(
        self,
        model: NeuronModel,
        input_size: int,
        size: int,
        *,
        recurrence: str = "none",
        skip_size: int = 0,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if recurrence not in RECURRENCE_MODES:
            raise ValueError(f"recurrence must be one of {RECURRENCE_MODES}, got {recurrence!r}")
        self.model = model
        self.input_size, self.size, self.skip_size = input_size, size, skip_size
        self.recurrence = recurrence
        fan_in = input_size + skip_size + (size if recurrence == "full" else 0)
        bound = math.sqrt(6.0 / (fan_in + size))  # HYPR's xavier_uniform_custom

        def draw(*shape: int) -> nn.Parameter:
            sample = torch.rand(*shape, generator=generator, dtype=torch.float64)
            return nn.Parameter(((2.0 * sample - 1.0) * bound).to(dtype))

        self.w_in = draw(size, input_size)
        self.bias = nn.Parameter(torch.zeros(size, dtype=dtype))
        self.w_rec = {"none": None, "full": draw(size, size), "self": draw(size)}[recurrence]
        self.w_skip = draw(size, skip_size) if skip_size else None
        self.params = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in model.init_params(size, generator, dtype).items()}
        )

    def coefficients(self) -> Coefficients:
        return self.model.coefficients(dict(self.params.items()))

    def feedforward_current(self, inputs: Tensor, skip_inputs: Tensor | None) -> Tensor:
        """W_in·x + b (+ W_skip·x_skip) for all steps at once: (B, λ, M) -> (B, λ, N)."""
        if self.crossbar is None:
            current = torch.nn.functional.linear(inputs, self.w_in, self.bias)
        else:
            current = self.crossbar.product("w_in", inputs, self.w_in) + self.bias
        if self.w_skip is not None:
            assert skip_inputs is not None, "a layer with skip weights needs skip inputs"
            current = current + self._product("w_skip", skip_inputs, self.w_skip)
        return current

    def recurrent_current(self, spike: Tensor) -> Tensor | None:
        """R(z): the recurrent contribution of spikes (..., N), or None without recurrence."""
        if self.w_rec is None:
            return None
        if self.recurrence == "full":
            return self._product("w_rec", spike, self.w_rec)
        return spike * self.w_rec

    def _product(self, name: str, inputs: Tensor, weight: Tensor) -> Tensor:
        if self.crossbar is None:
            return inputs @ weight.T
        return self.crossbar.product(name, inputs, weight)

    def initial_state(self, batch_size: int, like: Tensor) -> tuple[State, Tensor]:
        return self.model.initial_state((batch_size, self.size), like)

    def run(
        self,
        inputs: Tensor,
        skip_inputs: Tensor | None,
        state: State,
        spike: Tensor,
        coeffs: Coefficients,
        *,
        record: bool,
    ) -> LayerRun:
        """Run λ steps from (state, spike). Without ``record`` only spikes and the final state
        are kept (the other LayerRun fields are then empty tensors)."""
        feedforward = self.feedforward_current(inputs, skip_inputs)
        spikes, currents, spikes_before = [], [], []
        states_before: list[list[Tensor]] = [[] for _ in state]
        # unbind once: indexing step by step would make autograd build a full-size gradient
        # per step (O(T²) work in BPTT)
        for current in feedforward.unbind(1):
            recurrent = self.recurrent_current(spike)
            if recurrent is not None:
                current = current + recurrent
            if record:
                currents.append(current)
                spikes_before.append(spike)
                for store, entry in zip(states_before, state):
                    store.append(entry)
            state, spike = self.model.step(current, state, spike, coeffs)
            spikes.append(spike)
        empty = feedforward.new_empty(0)
        return LayerRun(
            currents=torch.stack(currents) if record else empty,
            states_before=tuple(torch.stack(s) for s in states_before) if record else (),
            spikes_before=torch.stack(spikes_before) if record else empty,
            spikes=torch.stack(spikes, 1),
            final_state=state,
            final_spike=spike,
        )


class SpikingNetwork(nn.Module):
    """Hidden layers of one neuron model (``hidden_sizes``) and an LI readout of K outputs."""

    def __init__(
        self,
        input_size: int,
        hidden_sizes: list[int],
        num_classes: int,
        neuron: NeuronModel,
        readout: NeuronModel | None = None,
        *,
        recurrence: str = "full",
        skip: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("a network needs at least one hidden layer")
        generator = torch.Generator().manual_seed(seed)
        self.input_size, self.num_classes = input_size, num_classes
        self.recurrence, self.skip = recurrence, skip
        widths = [input_size, *hidden_sizes]
        self.hidden = nn.ModuleList(
            Layer(
                neuron,
                widths[i],
                widths[i + 1],
                recurrence=recurrence,
                skip_size=widths[i - 1] if skip and i >= 1 else 0,
                generator=generator,
                dtype=dtype,
            )
            for i in range(len(hidden_sizes))
        )
        self.readout = Layer(
            readout or LI(), hidden_sizes[-1], num_classes, generator=generator, dtype=dtype
        )

    @property
    def layers(self) -> list[Layer]:
        """Hidden layers bottom-up, then the readout."""
        return [*self.hidden, self.readout]

    def skip_source(self, index: int) -> int | None:
        """Index into [input, hidden 1, ...] of the skip input of hidden layer ``index`` (0-based)."""
        return index - 1 if self.skip and index >= 1 else None

    def forward(self, inputs: Tensor) -> Tensor:
        """Plain forward from the zero state: inputs (B, T, M) -> readout potentials (B, T, K)."""
        outputs, _ = self.run_window(inputs, self.initial_states(inputs))
        return outputs

    def initial_states(self, inputs: Tensor) -> list[tuple[State, Tensor]]:
        """Zero (state, spike) of every layer, readout last, for a batch like ``inputs``."""
        return [layer.initial_state(inputs.shape[0], inputs) for layer in self.layers]

    def trace(self, inputs: Tensor) -> list[Tensor]:
        """Forward from the zero state, keeping every layer's output: the spikes (B, T, N) of
        each hidden layer, then the readout potentials (B, T, K)."""
        return self._run_layers(inputs, self.initial_states(inputs))[0][1:]

    def run_window(
        self, inputs: Tensor, states: list[tuple[State, Tensor]]
    ) -> tuple[Tensor, list[tuple[State, Tensor]]]:
        """Run a window of steps layer by layer from ``states``; returns outputs (B, λ, K) and
        the states at the window's end (one (state, spike) per layer, readout last)."""
        signals, new_states = self._run_layers(inputs, states)
        return signals[-1], new_states

    def _run_layers(
        self, inputs: Tensor, states: list[tuple[State, Tensor]]
    ) -> tuple[list[Tensor], list[tuple[State, Tensor]]]:
        """[inputs, each layer's output] over a window, and the states at its end."""
        signals = [inputs]
        new_states = []
        for index, layer in enumerate(self.layers):
            source = self.skip_source(index) if index < len(self.hidden) else None
            state, spike = states[index]
            run = layer.run(
                signals[-1],
                signals[source] if source is not None else None,
                state,
                spike,
                layer.coefficients(),
                record=False,
            )
            signals.append(run.spikes)
            new_states.append((run.final_state, run.final_spike))
        return signals, new_states

    def windows(self, inputs: Tensor, length: int) -> Iterator[Tensor]:
        """Forward in windows of ``length`` steps carrying the state (bounded memory for long
        sequences); yields the readout potentials (B, ≤length, K) of each window."""
        states = self.initial_states(inputs)
        for start in range(0, inputs.shape[1], length):
            outputs, states = self.run_window(inputs[:, start : start + length], states)
            yield outputs
