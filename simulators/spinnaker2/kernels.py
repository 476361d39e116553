"""The programs of the PEs that run an e-prop network (spec A3, A4.4): the input source, the
ALIF workers and the readout.

Every kernel keeps its state in numpy views into its PE's memory, so the host's WRITE_MEM and
READ_MEM act on the real state. Each tick a kernel takes the packets delivered to it, updates
its state and returns the packets it sends and the operations it performed (``cycles.Ops``).
The schedule of a sample of T steps (packets arrive one tick after they are sent):

| tick | source | workers | readout |
|---|---|---|---|
| s (0 ≤ s < T) | sends x(s) | | |
| s + 1 | | step s (e-prop steps 1-7), sends z(s) | |
| s + 2 | | | step 8 for step s, sends y(s) to the host |
| T + 1 | | | after step T − 1 (training): step 9, sends L_j |
| T + 2 (training) | | Adam on W_in, W_rec | |

Routing keys: bits 31-24 the kind (``INPUT``, ``SPIKE``, ``OUTPUT``, ``LEARN``), bits 23-16
the destination worker's PE (``LEARN`` only), bits 15-0 the index (input i, neuron j,
output k, or the worker's local neuron).

The end-of-sample learning step (softmax, δ, L_j, gradients, Adam) runs in float32 in both
numeric modes: in s16.15 the values are converted from s16.15 and the weights rounded back
(a documented mixed mode; the M4F has VDIV/VSQRT, and Adam's v ≈ g² lies below s16.15's
resolution). Adam's m and v are float32 words in both modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simulators.spinnaker2 import cycles
from simulators.spinnaker2.cycles import Ops
from simulators.spinnaker2.fixed import Fixed
from simulators.spinnaker2.numerics import F32, S1615, sequential_sum
from simulators.spinnaker2.router import Packets
from simulators.spinnaker2.storage import (
    Projection,
    store_f32,
    weights_f32,
    weights_for,
)

if TYPE_CHECKING:
    from simulators.spinnaker2.chip import EpropConfig, Pe

INPUT, SPIKE, OUTPUT, LEARN = 0, 1, 2, 3
KIND_MASK, LEARN_MASK = 0xFF00_0000, 0xFFFF_0000
NEURON_ROWS = ("v", "a", "z", "psi", "L", "z_hat", "bias", "A")
"""The 8 words per neuron of a worker's "neuron state" region (rows of a (8, n) array);
z_hat and bias are unused by the ALIF worker."""
READOUT_ROWS = ("y", "y_bar")
"""The rows of the readout's (8, outputs) "readout state" region that it uses."""


def key(kind: int, index: np.ndarray | int, pe: int = 0) -> np.ndarray:
    """Routing keys (uint32) of ``kind`` for ``index``."""
    return (np.uint32(kind << 24) | np.uint32(pe << 16) | np.asarray(index, np.uint32))


@dataclass(frozen=True)
class Constants:
    """The configuration's constants in the kernel's arithmetic (float64, rounded once)."""

    alpha: object
    one_minus_alpha: object
    rho: object
    one_minus_rho: object
    kappa: object
    beta: object
    adapt_psi: object  # (1 − ρ)β
    trace_psi: object  # (1 − α)(1 − ρ)
    rho_value: object
    v_th: object

    @staticmethod
    def of(config: EpropConfig, numerics: F32 | S1615) -> Constants:
        alpha, rho = math.exp(-1.0 / config.tau_m), math.exp(-1.0 / config.tau_a)
        by = numerics.scale_by
        return Constants(by(alpha), by(1.0 - alpha), by(rho), by(1.0 - rho),
                         by(math.exp(-1.0 / config.tau_out)), by(config.beta),
                         by((1.0 - rho) * config.beta), by((1.0 - alpha) * (1.0 - rho)),
                         numerics.const(rho), numerics.const(config.v_th))


def adam(weights: np.ndarray, gradient: np.ndarray, m: np.ndarray, v: np.ndarray, step: int,
         config: EpropConfig) -> np.ndarray:
    """One Adam step in float32, TensorFlow/Keras form (spec A3): updates m and v in place and
    returns the new weights; ``step`` is t after its increment."""
    f32 = np.float32
    lr_t = f32(config.learning_rate * math.sqrt(1.0 - config.beta2**step)
               / (1.0 - config.beta1**step))
    m[...] = f32(config.beta1) * m + f32(1.0 - config.beta1) * gradient
    v[...] = f32(config.beta2) * v + f32(1.0 - config.beta2) * (gradient * gradient)
    return weights - (lr_t * m) / (np.sqrt(v) + f32(config.epsilon))


class SourceKernel:
    """PE 0: multicasts the input values of step s at tick s (payload float32 bits or s16.15)."""

    def __init__(self, pe: Pe, config: EpropConfig, numerics: F32 | S1615) -> None:
        self.numerics, self.inputs = numerics, config.inputs
        self.values = pe.array("input values", numerics.dtype, (config.inputs,))
        self.keys = key(INPUT, np.arange(config.inputs))
        self.steps, self.injected = 0, {}

    def begin(self, steps: int, injected: dict[int, dict[int, float]]) -> None:
        self.steps, self.injected = steps, injected

    def tick(self, tick: int, inbox: Packets) -> tuple[Packets, Ops]:
        if tick >= self.steps:
            return Packets.empty(), Ops()
        pairs = self.injected.get(tick, {})
        self.values[...] = 0
        if pairs:
            index = np.fromiter(pairs.keys(), np.int64, len(pairs))
            self.values[index] = self.numerics.from_host(
                np.fromiter(pairs.values(), np.float64, len(pairs)))
        packets = Packets(self.keys, self.numerics.encode(self.values).copy())
        return packets, cycles.source_ops(self.inputs, len(pairs))


class WorkerKernel:
    """A worker PE: hidden neurons ``first .. last − 1`` with every synapse into them
    (W_in[first:last], W_rec[first:last]), their e-prop traces and Adam state."""

    def __init__(self, pe: Pe, first: int, last: int, config: EpropConfig,
                 numerics: F32 | S1615, fixed: Fixed, surrogate: str,
                 projections: tuple[Projection, Projection]) -> None:
        self.pe, self.first, self.last, self.config = pe, first, last, config
        self.numerics, self.fixed, self.surrogate = numerics, fixed, surrogate
        self.blocks = tuple(next(b for b in p.blocks if b.pe == pe.id) for p in projections)
        self.fmt = projections[0].fmt
        n, inputs, hidden = last - first, config.inputs, config.hidden
        dtype = numerics.dtype
        state = pe.array("neuron state", dtype, (len(NEURON_ROWS), n))
        self.v, self.a, self.z, self.psi, self.L = state[0], state[1], state[2], state[3], state[4]
        self.A = state[7]
        self.x = pe.array("receive x", dtype, (inputs,))
        self.z_in = pe.array("receive z", np.uint8, (hidden,))
        self.constants = Constants.of(config, numerics)
        self.keys = key(SPIKE, np.arange(first, last))
        if config.training:
            synapses = (n, inputs + hidden)
            self.eps_a = pe.array("trace eps_a", dtype, synapses)
            self.e_bar = pe.array("trace e_bar", dtype, synapses)
            self.E = pe.array("trace E", dtype, synapses)
            self.eps_v = pe.array("presynaptic eps_v", dtype, (inputs + hidden,))
            self.gradient = pe.array("gradients", np.float32, synapses)
            self.m = pe.array("Adam m", np.float32, synapses)
            self.m2 = pe.array("Adam v", np.float32, synapses)
            self.adam_step = pe.array("adam step", np.int32, (1,))
        self.steps, self.train = 0, False

    def begin(self, steps: int, train: bool) -> None:
        self.steps, self.train = steps, train

    def tick(self, tick: int, inbox: Packets) -> tuple[Packets, Ops]:
        kinds = inbox.keys >> 24
        ops = cycles.receive_ops(len(inbox))
        if 1 <= tick <= self.steps:
            inputs = inbox.select(kinds == INPUT)
            self.x[...] = 0
            self.x[inputs.keys & 0xFFFF] = self.numerics.decode(inputs.payloads)
        if 2 <= tick <= self.steps + 1:
            self.z_in[...] = 0
            self.z_in[inbox.keys[kinds == SPIKE] & 0xFFFF] = 1
        learning = inbox.select(kinds == LEARN)
        if len(learning):
            ops += self.learn(learning)
        if 0 <= tick - 1 < self.steps:
            ops += self.step(valid=tick - 1 >= self.config.ignore_first)
            spikes = self.keys[self.z != 0]
            return Packets(spikes, np.zeros(spikes.size, np.uint32)), ops + Ops(send=spikes.size)
        return Packets.empty(), ops

    def step(self, valid: bool) -> Ops:
        """E-prop steps 1-4 (and 5-7 when training) for this worker's neurons; ``valid``: the
        step counts for the loss (from ``ignore_first`` on), so E accumulates ē."""
        num, c, inputs = self.numerics, self.constants, self.config.inputs
        weights = [weights_for(num, self.pe.memory, block, self.fmt).reshape(
            self.last - self.first, -1) for block in self.blocks]
        z_prev = self.z.copy()
        z_in = self.z_in.astype(num.dtype) * num.one
        a = num.add(num.scale(self.a, c.rho), num.scale(z_prev, c.one_minus_rho))
        threshold = num.add(c.v_th, num.scale(a, c.beta))
        current = num.add(num.dot(weights[0], self.x), num.dot(weights[1], z_in))
        v = num.sub(num.add(num.scale(self.v, c.alpha), num.scale(current, c.one_minus_alpha)),
                    num.mul(threshold, z_prev))
        u = num.sub(v, threshold)
        psi = num.psi(u)
        self.a[...], self.A[...], self.v[...], self.psi[...] = a, threshold, v, psi
        self.z[...] = (u > 0) * num.one
        n, presynaptic = self.last - self.first, inputs + self.config.hidden
        ops = (cycles.neuron_ops(num.name, n, self.surrogate)
               + cycles.dot_ops(num.name, n, presynaptic))
        if self.train:
            self.traces(np.concatenate([self.x, z_in]).astype(num.dtype), psi, valid)
            ops += cycles.trace_ops(num.name, n, presynaptic)
        return ops

    def traces(self, pre: np.ndarray, psi: np.ndarray, valid: bool) -> None:
        """E-prop steps 5-7: ε^v, e (with ε^a before its update, e_jj = 0), ε^a, ē, and E
        where the step is ``valid`` (the loss ignores the steps before ``ignore_first``, so
        their eligibilities get no learning signal)."""
        num, c = self.numerics, self.constants
        eps_v = num.add(num.scale(self.eps_v, c.alpha), pre)
        self.eps_v[...] = eps_v
        psi_col = psi[:, None]
        e = num.mul(psi_col, num.sub(num.scale(eps_v, c.one_minus_alpha)[None, :],
                                     num.scale(self.eps_a, c.beta)))
        local = np.arange(self.last - self.first)
        e[local, self.config.inputs + self.first + local] = 0
        keep = num.sub(c.rho_value, num.scale(psi, c.adapt_psi))[:, None]
        gain = num.scale(psi, c.trace_psi)[:, None]
        self.eps_a[...] = num.add(num.mul(keep, self.eps_a), num.mul(gain, eps_v[None, :]))
        e_bar = num.add(num.scale(self.e_bar, c.kappa), e)
        self.e_bar[...] = e_bar
        if valid:
            self.E[...] = num.add(self.E, e_bar)

    def learn(self, packets: Packets) -> Ops:
        """The learning signals L_j arrived: g = L_j E_ji + 2 l2 W, one Adam step (float32)."""
        num, inputs = self.numerics, self.config.inputs
        self.L[packets.keys & 0xFFFF] = num.decode(packets.payloads)
        signal = num.to_f32(self.L)[:, None]
        step = int(self.adam_step[0]) + 1
        self.adam_step[0] = step
        columns = (slice(0, inputs), slice(inputs, None))
        for block, cols in zip(self.blocks, columns):
            w = weights_f32(self.pe.memory, block, self.fmt).reshape(self.last - self.first, -1)
            g = signal * num.to_f32(self.E[:, cols]) + np.float32(2.0 * self.config.l2) * w
            self.gradient[:, cols] = g
            m, v = self.m[:, cols], self.m2[:, cols]
            store_f32(self.pe.memory, block, self.fmt,
                      adam(w, g, m, v, step, self.config).ravel(), self.fixed)
        return cycles.adam_ops(self.E.size)


class ReadoutKernel:
    """The readout PE: ẑ, y = W_out ẑ, ȳ; at the end of a training sample δ, the learning
    signals (sent to the workers) and Adam on W_out."""

    def __init__(self, pe: Pe, config: EpropConfig, numerics: F32 | S1615, fixed: Fixed,
                 projection: Projection, workers: list[tuple[int, int, int]]) -> None:
        self.pe, self.config, self.numerics, self.fixed = pe, config, numerics, fixed
        self.block, self.fmt = projection.blocks[0], projection.fmt
        self.workers = workers  # (pe, first, last) per worker
        dtype, hidden, outputs = numerics.dtype, config.hidden, config.outputs
        self.z_hat = pe.array("filtered spikes z_hat", dtype, (hidden,))
        state = pe.array("readout state", dtype, (8, outputs))
        self.y, self.y_bar = state[0], state[1]
        self.z_in = pe.array("receive z", np.uint8, (hidden,))
        control = pe.array("control", np.int32, (2,))
        self.label, self.loss = control[0:1], control[1:2].view(np.float32)
        self.kappa = numerics.scale_by(math.exp(-1.0 / config.tau_out))
        self.keys = key(OUTPUT, np.arange(outputs))
        if config.training:
            self.z_sum = pe.array("z_hat sum", dtype, (hidden,))
            self.gradient = pe.array("gradients out", np.float32, (outputs, hidden))
            self.m = pe.array("Adam m out", np.float32, (outputs, hidden))
            self.m2 = pe.array("Adam v out", np.float32, (outputs, hidden))
            self.adam_step = pe.array("adam step", np.int32, (1,))
        self.steps, self.train = 0, False

    def begin(self, steps: int, train: bool) -> None:
        self.steps, self.train = steps, train

    def tick(self, tick: int, inbox: Packets) -> tuple[Packets, Ops]:
        num, step = self.numerics, tick - 2
        ops = cycles.receive_ops(len(inbox))
        if not 0 <= step < self.steps:
            return Packets.empty(), ops
        self.z_in[...] = 0
        self.z_in[inbox.keys[(inbox.keys >> 24) == SPIKE] & 0xFFFF] = 1
        z_hat = num.add(num.scale(self.z_hat, self.kappa), self.z_in.astype(num.dtype) * num.one)
        weights = weights_for(num, self.pe.memory, self.block, self.fmt).reshape(
            self.config.outputs, -1)
        y = num.dot(weights, z_hat)
        self.z_hat[...], self.y[...] = z_hat, y
        if step >= self.config.ignore_first:
            self.y_bar[...] = num.add(self.y_bar, y)
            if self.train:
                self.z_sum[...] = num.add(self.z_sum, z_hat)
        ops += cycles.readout_ops(num.name, self.config.outputs, self.config.hidden)
        sent = [Packets(self.keys, num.encode(y).copy())]
        if self.train and step == self.steps - 1:
            sent.append(self.learn())
            ops += (cycles.learning_signal_ops(self.config.outputs, self.config.hidden)
                    + cycles.adam_ops(self.gradient.size))
        packets = Packets.concat(sent)
        return packets, ops + Ops(send=len(packets))

    def learn(self) -> Packets:
        """Step 9: δ = softmax(ȳ/n) − onehot, the loss, L_j = Σ_k W_out[k, j] δ_k / n (sent
        to the workers), g_out = δ_k Σ ẑ_j / n + 2 l2 W_out and Adam (float32)."""
        f32, num = np.float32, self.numerics
        n = f32(self.steps - self.config.ignore_first)
        label = int(self.label[0])
        y_mean = num.to_f32(self.y_bar) / n
        shifted = y_mean - y_mean.max()
        exp = np.exp(shifted)
        total = sequential_sum(exp)
        delta = exp / total
        self.loss[0] = math.log(float(total)) - float(shifted[label])
        delta[label] = delta[label] - f32(1.0)
        w = weights_f32(self.pe.memory, self.block, self.fmt).reshape(self.config.outputs, -1)
        signal = sequential_sum(w.T * delta) / n
        g = delta[:, None] * (num.to_f32(self.z_sum) / n)[None, :] \
            + f32(2.0 * self.config.l2) * w
        self.gradient[...] = g
        step = int(self.adam_step[0]) + 1
        self.adam_step[0] = step
        store_f32(self.pe.memory, self.block, self.fmt,
                  adam(w, g, self.m, self.m2, step, self.config).ravel(), self.fixed)
        payloads = num.encode(num.from_f32(signal))
        return Packets.concat([Packets(key(LEARN, np.arange(last - first), pe),
                                       payloads[first:last].copy())
                               for pe, first, last in self.workers])
