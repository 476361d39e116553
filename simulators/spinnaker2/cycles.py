"""The cycle model of the PE kernels (spec A1, A4.4).

A kernel counts the abstract operations it performs in a tick (``Ops``); ``CycleModel`` turns
them into Cortex-M4F cycles with the instruction table of spec A1, adds 2 cycles per loop
iteration and a fixed cost per tick (timer interrupt, packet handling set-up). A PE whose
cycles in a tick exceed ``clock_hz × tick_s`` overruns its tick (the chip counts it).

The f32 kernels compute unfused (VMUL then VADD, 2 cycles, cheaper than VMLA's 3), so no
multiply-accumulate appears here. In s16.15 a product is SMULL plus a shift (2 cycles) and a
saturating sum QADD (1 cycle). Costs marked [X] are our assumptions (spec A4.4: parameters).

The ``*_ops`` functions give the operations of each kernel phase for given sizes; the kernels
and ``energy.reference_sample_energy`` use the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

ARITHMETIC = ("f32", "s16.15")


@dataclass
class Ops:
    """Counts of abstract operations (one tick of one PE)."""

    fadd: int = 0  # VADD/VSUB/VCMP/conversions
    fmul: int = 0  # VMUL
    fdiv: int = 0  # VDIV
    fsqrt: int = 0  # VSQRT
    fexp: int = 0  # a software expf
    iadd: int = 0  # ADD/QADD/compare/logic
    imul: int = 0  # SMULL + shift (a fixed-point product)
    load: int = 0  # LDR/VLDR
    store: int = 0  # STR/VSTR
    send: int = 0  # a multicast packet sent
    recv: int = 0  # a packet received (interrupt)
    loops: int = 0  # loop iterations

    def __add__(self, other: Ops) -> Ops:
        return Ops(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                      for f in fields(self)})

    def __mul__(self, times: int) -> Ops:
        return Ops(**{f.name: getattr(self, f.name) * times for f in fields(self)})


@dataclass(frozen=True)
class CycleModel:
    """Cycles per operation (Cortex-M4F, zero-wait-state SRAM; spec A1) and per tick.

    Attributes: one per ``Ops`` field (cycles each), ``loop`` (cycles per loop iteration) and
    ``tick`` (fixed cycles per PE and tick).
    """

    fadd: int = 1
    fmul: int = 1
    fdiv: int = 14
    fsqrt: int = 14
    fexp: int = 40  # [X] a software expf on the FPU
    iadd: int = 1
    imul: int = 2
    load: int = 2
    store: int = 2
    send: int = 6  # [X] write key and payload to the communication unit
    recv: int = 12  # [X] interrupt entry, read key and payload, exit
    loop: int = 2
    tick: int = 300  # [X] timer interrupt and scheduling

    def cycles(self, ops: Ops) -> int:
        """Cycles of ``ops`` plus the fixed cost of one tick."""
        total = self.tick + ops.loops * self.loop
        for f in fields(ops):
            if f.name != "loops":
                total += getattr(ops, f.name) * getattr(self, f.name)
        return total


def arith(kind: str, add: int = 0, mul: int = 0) -> Ops:
    """``add`` sums and ``mul`` products in the arithmetic ``kind`` (f32 or s16.15)."""
    return Ops(fadd=add, fmul=mul) if kind == "f32" else Ops(iadd=add, imul=mul)


def source_ops(inputs: int, injected: int) -> Ops:
    """The input source: store the injected values, multicast every input."""
    return Ops(store=injected + inputs, load=inputs, send=inputs, loops=inputs)


def receive_ops(packets: int) -> Ops:
    """Packets taken from the inbox into a buffer."""
    return Ops(recv=packets, store=packets)


def dot_ops(kind: str, rows: int, cols: int) -> Ops:
    """``rows`` sequential weighted sums of ``cols`` terms (two loads per term)."""
    terms = rows * cols
    return arith(kind, add=terms, mul=terms) + Ops(load=2 * terms, store=rows, loops=terms)


def neuron_ops(kind: str, neurons: int, surrogate: str) -> Ops:
    """ALIF steps 1, 3 and 4 for ``neurons`` (the current I excluded): 6 products and 6 sums,
    6 loads and 5 stores each, and the pseudo-derivative (three Gaussians, or a table)."""
    per = arith(kind, add=6, mul=6) + Ops(load=6, store=5, loops=1)
    if surrogate == "lut":
        per += Ops(iadd=4, imul=2, load=2)
    else:
        per += Ops(fexp=3, fmul=9, fadd=4) + arith(kind, add=2)  # conversions in s16.15
    return per * neurons


def trace_ops(kind: str, neurons: int, presynaptic: int) -> Ops:
    """E-prop steps 5-7: ε^v per presynaptic input, per neuron the two coefficients, per
    synapse 5 products, 4 sums, 4 loads, 3 stores (≈25 cycles in f32, spec A4.4)."""
    synapses = neurons * presynaptic
    return (arith(kind, add=presynaptic + neurons + 4 * synapses,
                  mul=2 * presynaptic + 3 * neurons + 5 * synapses)
            + Ops(load=2 * presynaptic + 4 * synapses, store=presynaptic + 3 * synapses,
                  loops=presynaptic + neurons + synapses))


def adam_ops(weights: int) -> Ops:
    """Gradient and Adam step (float32) per weight: 8 products, 5 sums, a square root and a
    division, 4 loads, 3 stores (≈57 cycles)."""
    return Ops(fmul=8, fadd=5, fsqrt=1, fdiv=1, load=4, store=3, loops=1) * weights


def readout_ops(kind: str, outputs: int, hidden: int) -> Ops:
    """Readout step 8: ẑ update for ``hidden`` neurons, ``outputs`` weighted sums, ȳ."""
    return (arith(kind, add=hidden + outputs, mul=hidden)
            + Ops(load=hidden + outputs, store=hidden + outputs, loops=hidden)
            + dot_ops(kind, outputs, hidden))


def learning_signal_ops(outputs: int, hidden: int) -> Ops:
    """Readout step 9 (float32): softmax of ``outputs``, δ, L_j for ``hidden`` neurons and the
    readout gradient's filtered-spike means."""
    return (Ops(fexp=outputs, fdiv=outputs + 2 * hidden, fadd=3 * outputs, loops=outputs)
            + dot_ops("f32", hidden, outputs))
