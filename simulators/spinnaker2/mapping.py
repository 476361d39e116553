"""Memory of an e-prop network on SpiNNaker 2 and its neuron-sliced placement on PEs (spec A3,
A4.2, A4.4).

The reference network is the one of "E-prop on SpiNNaker 2" (Rostami et al. 2022): 80 inputs →
120 recurrent ALIF neurons → 12 leaky readouts. ``model_state_bytes`` counts its training state
as the paper does — float32 weights, gradients and Adam m and v for every parameter, three
traces (ε^a, ē, E) per input and recurrent synapse, ε^v per presynaptic input — which gives
695,840 B, the published "680 KB".

``map_network`` places a network on PEs: PE 0 is the input source, the worker PEs hold slices
of the hidden neurons (12 each by default, the spec's split) with every synapse into them
(weights, optimizer state, traces), the last PE is the readout. Every region is placed in
its PE's ``Sram``; a placement that does not fit raises ``SramOverflowError`` with the table
of the PE that overflowed, before any tick runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulators.spinnaker2.formats import payload_bytes
from simulators.spinnaker2.sram import Sram

WORD = 4
"""Bytes of one float32 or s16.15 value."""
NEURON_BYTES = 8 * WORD
"""Per neuron: v, a, z, ψ, the learning signal, ẑ, bias and the threshold A (spec A4.2)."""
OPTIMIZER_WORDS = {"adam": 3, "sgd": 1, "none": 0}
"""Per weight besides the weight: the gradient accumulator, and Adam's m and v."""
TRACE_WORDS = 3
"""Per input or recurrent synapse while training: ε^a, ē and E."""


@dataclass(frozen=True)
class EpropNetwork:
    """The shape of an e-prop network: ``inputs`` → ``hidden`` recurrent ALIF → ``outputs``."""

    inputs: int = 80
    hidden: int = 120
    outputs: int = 12

    @property
    def parameters(self) -> int:
        """Weights: input, recurrent and readout (25,440 for the reference network)."""
        return (self.inputs + self.hidden) * self.hidden + self.hidden * self.outputs

    @property
    def synapses(self) -> int:
        """Input and recurrent synapses, the ones with e-prop traces."""
        return (self.inputs + self.hidden) * self.hidden


def model_state_bytes(network: EpropNetwork, optimizer: str = "adam") -> int:
    """Bytes of training state as the paper counts it: every parameter with its optimizer
    words, the traces of every input and recurrent synapse, and ε^v per presynaptic input."""
    per_weight = WORD * (1 + OPTIMIZER_WORDS[optimizer])
    return (network.parameters * per_weight + network.synapses * TRACE_WORDS * WORD
            + (network.inputs + network.hidden) * WORD)


@dataclass
class Placement:
    """Where a network lives: the SRAM of each PE used (input PE, workers, readout PE) and
    the hidden neurons each worker holds (first, last + 1)."""

    pes: list[Sram]
    slices: list[tuple[int, int]]

    def table(self) -> str:
        """One line per PE: its role and the model bytes it holds."""
        lines = [f"{'PE':>4}  {'role':<24}{'model bytes':>12}{'free':>10}"]
        roles = (["input source"]
                 + [f"worker, neurons {a}..{b - 1}" for a, b in self.slices] + ["readout"])
        for sram, role in zip(self.pes, roles):
            lines.append(f"{sram.pe:>4}  {role:<24}{sram.model_bytes:>12,}{sram.free:>10,}")
        return "\n".join(lines)


DEFAULT_SLICE = 12
"""Hidden neurons per worker PE by default: the reference network's 120 on 10 workers, 12 PEs
with the input source and the readout (spec A4.4)."""


def map_network(network: EpropNetwork, per_worker: int = DEFAULT_SLICE,
                optimizer: str = "adam", training: bool = True, single_pe: bool = False,
                chip_pes: int = 152, weight_format: str = "f32") -> Placement:
    """Place ``network``: PE 0 feeds the inputs, worker PEs hold ``per_worker`` hidden neurons
    each with every synapse into them, the next PE is the readout. ``single_pe`` puts
    everything on PE 0. ``weight_format`` sets the bytes of the weight regions
    (``formats.payload_bytes``); optimizer state and traces stay 4 B words.

    Raises:
        SramOverflowError: a PE cannot hold its regions (the message is its table).
        ValueError: more PEs than the chip has, or a slice < 1.
    """
    if per_worker < 1:
        raise ValueError(f"per_worker must be >= 1 hidden neuron, got {per_worker}")
    if single_pe:
        sram = Sram(0)
        sram.place(_input_regions(network)
                   + _worker_regions(network, network.hidden, optimizer, training, weight_format)
                   + _readout_regions(network, optimizer, weight_format))
        return Placement([sram], [(0, network.hidden)])
    starts = list(range(0, network.hidden, per_worker))
    slices = [(first, min(first + per_worker, network.hidden)) for first in starts]
    if len(slices) + 2 > chip_pes:
        raise ValueError(f"the placement needs {len(slices) + 2} PEs; the chip has {chip_pes}")
    placed = [Sram(0)]
    placed[0].place(_input_regions(network))
    for index, (first, last) in enumerate(slices, start=1):
        placed.append(Sram(index))
        placed[-1].place(_worker_regions(network, last - first, optimizer, training,
                                         weight_format))
    placed.append(Sram(len(slices) + 1))
    placed[-1].place(_readout_regions(network, optimizer, weight_format))
    return Placement(placed, slices)


def _input_regions(network: EpropNetwork) -> list[tuple[str, int]]:
    return [("input values", network.inputs * WORD)]


def _worker_regions(network: EpropNetwork, neurons: int, optimizer: str, training: bool,
                    weight_format: str) -> list[tuple[str, int]]:
    synapses = (network.inputs + network.hidden) * neurons
    regions = [("W_in", payload_bytes(network.inputs * neurons, weight_format)),
               ("W_rec", payload_bytes(network.hidden * neurons, weight_format))]
    regions += [(name, synapses * WORD)
                for name in ("gradients", "Adam m", "Adam v")[:OPTIMIZER_WORDS[optimizer]]]
    if training:
        regions += [(name, synapses * WORD)
                    for name in ("trace eps_a", "trace e_bar", "trace E")]
        regions.append(("presynaptic eps_v", (network.inputs + network.hidden) * WORD))
    return regions + [("neuron state", neurons * NEURON_BYTES)]


def _readout_regions(network: EpropNetwork, optimizer: str,
                     weight_format: str) -> list[tuple[str, int]]:
    weights = network.hidden * network.outputs
    regions = [("W_out", payload_bytes(weights, weight_format))]
    regions += [(name, weights * WORD)
                for name in ("gradients out", "Adam m out", "Adam v out")
                [:OPTIMIZER_WORDS[optimizer]]]
    return regions + [("filtered spikes z_hat", network.hidden * WORD),
                      ("readout state", network.outputs * NEURON_BYTES)]
