"""Lava NetX HDF5 export of Loihi 2 networks (``hwloop export RUN --format netx``;
docs/export.md, spec loihi2_lava_nir.md §7).

The file is what lava-dl's ``netx.hdf5.Network`` reads, at the file's root, holding the network
exactly as the ``loihi2`` backend holds it: a run trained in the loop on ``loihi2`` (or
``loihi2-lava``) exports the device's own integers and exponents from its checkpoint; any other
run is quantized as that backend would program it (the run's bits, each layer at the smallest
exponent that holds its weights unclipped).

    /layer/0/{type="input", shape=[M]}                     spike input, no neuron
    /layer/k/{type="dense"|"dense_rec", shape=[N], inFeatures, outFeatures,
              weight (N, M_k) int32, [weight_rec (N, N) int32],
              neuron/{type="CUBA", iDecay, vDecay, vThMant, refDelay, gradedSpike}}
    /hwloop/bits, /hwloop/layer/k/{model, weight_exp, [weight_exp_rec]}
    root attributes: hwloop's export header (``deploy.container``)

Units (§7.2): ``weight`` is the activation one presynaptic spike delivers, W·2^e for the
device's Dense weight W and exponent e; ``iDecay = du + 1``, ``vDecay = dv``, ``vThMant = vth``
of Lava's LIF. Hidden layers k = 1..L are ``loihi_lif``, layer L + 1 the ``loihi_li`` readout
(a LIF with vth = 131071 whose voltage is the output). A recurrent layer is ``dense_rec``: NetX
builds a second Dense from the population's own spikes back into it (one step of delay, as the
device), quantizing ``[weight | weight_rec]`` together.

NetX re-derives each Dense's weight bits and exponent from the integers (§7.3); it loads
exactly only integers within what one Dense holds at exponent ≤ 0. ``export`` replays that
arithmetic and Lava's first-step Dense preprocessing for every layer and refuses, before
writing, a network that would not load bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deploy.container import ExportHeader, new_header, read_export, write_export
from hwloop.backends import NeuronGroup, parse_backend_spec
from hwloop.errors import UserError
from hwloop.learning.network import SpikingNetwork
from hwloop.quantize import lava_dense_weights
from hwloop.runs import RunRecord, rebuild_network
from hwloop.session import device_layers, network_groups
from simulators.loihi2.backend import Loihi2Backend
from simulators.loihi2.dense import DenseWeights, sign_mode_of
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import LifLayer, LifNetwork

FORMAT = "netx"
FORMAT_VERSION = 1
LOIHI2_BACKENDS = ("loihi2", "loihi2-lava")
"""Backends whose checkpoint holds the Loihi 2 device state exported as it is."""
HIDDEN_MODEL, READOUT_MODEL = "loihi_lif", "loihi_li"
NEURON_TYPE = "CUBA"
NETX_BIAS_EXP = 6
"""NetX gives every CUBA neuron bias_exp = 6 (its bias mantissa stays 0 here)."""
REF_DELAY = 1
"""slayer's CUBA ``refDelay`` (NetX ignores it)."""
DEFAULT_BITS = 8


@dataclass(frozen=True)
class NetxLayer:
    """One population of Lava LIF neurons and the Dense connections into it.

    Attributes:
        model: ``loihi_lif`` (hidden) or ``loihi_li`` (readout).
        weight: (N, M) int64 activation one input spike delivers (NetX ``weight``) = W·2^e.
        weight_rec: (N, N) int64 recurrent ``weight_rec``, or None.
        weight_exp, weight_exp_rec: the device's Dense exponents e (W = weight >> e).
        du, dv, vth: Lava LIF integers (the file holds iDecay = du + 1, vDecay = dv,
            vThMant = vth).
    """

    model: str
    weight: np.ndarray
    weight_rec: np.ndarray | None
    weight_exp: int
    weight_exp_rec: int | None
    du: int
    dv: int
    vth: int

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class NetxExport:
    """A NetX export read back (checksum verified).

    Attributes:
        header: hwloop's export header.
        input_size: M, the width of ``/layer/0``.
        bits: the device's weight bits (Dense ``num_weight_bits``).
        layers: hidden layers bottom-up, then the readout.
    """

    header: ExportHeader
    input_size: int
    bits: int
    layers: tuple[NetxLayer, ...]

    def device_network(self) -> LifNetwork:
        """The network as the ``loihi2`` backend held it (weights W = weight >> e, mixed)."""
        def dense(weight: np.ndarray, exponent: int) -> DenseWeights:
            return DenseWeights(weight >> exponent, exponent, self.bits, "mixed")

        return LifNetwork(tuple(
            LifLayer(dense(layer.weight, layer.weight_exp), _lif(layer),
                     None if layer.weight_rec is None else
                     dense(layer.weight_rec, int(layer.weight_exp_rec)))  # type: ignore[arg-type]
            for layer in self.layers))


# --- export ----------------------------------------------------------------------------------

def export(record: RunRecord, out: str | Path, *, weights: str = "final",
           overwrite: bool = False, bits: int | None = None) -> Path:
    """Write the run's network as a NetX HDF5 file at ``out``; returns its path.

    Args:
        weights: ``final`` or ``best``.
        bits: weight bits for a run not trained on Loihi 2 (2..8; default: the run's ``bits``,
            else 8); a Loihi 2 run keeps its device's.

    Raises:
        UserError: before anything is written: no such weights, a network NetX or Loihi 2
            cannot run (neuron, recurrence, skip), bits out of range, weights NetX would not
            load exactly, or ``out`` exists without ``overwrite``.
    """
    layers, device_bits = netx_layers(record, weights, bits)
    header = new_header(FORMAT, FORMAT_VERSION, record.path, weights)
    input_size = int(layers[0].weight.shape[1])
    return write_export(out, header,
                        lambda root: _write(root, input_size, device_bits, layers),
                        overwrite=overwrite, at_root=True)


def netx_layers(record: RunRecord, weights: str = "final", bits: int | None = None
                ) -> tuple[tuple[NetxLayer, ...], int]:
    """The layers a NetX export of ``record`` holds and the device's weight bits, checked to
    load in NetX exactly (UserError otherwise)."""
    if weights not in ("final", "best"):
        raise UserError(f"unknown weights {weights!r} (choose from: final, best)")
    stored = record.final_weights if weights == "final" else record.best_weights
    if record.config is None or not stored:
        raise UserError(f"{record.path} holds no {weights} weights; export a run that "
                        "finished at least one epoch")
    network = rebuild_network(record, weights)
    groups = network_groups(network)
    _check_groups(groups)
    backend = _device(record, network, groups, weights, bits)
    layers = tuple(_layer(group, layer) for group, layer in zip(groups, backend.network().layers))
    for group, layer in zip(groups, layers):
        _check_loads_exactly(group.layer, layer)
    return layers, backend.bits


def _check_groups(groups: list[NeuronGroup]) -> None:
    """UserError unless Loihi 2 runs the network (its own checks) with LIF hidden neurons, the
    only ones NetX's CUBA blocks hold."""
    try:
        Loihi2Backend().declare_network(groups)
    except ValueError as error:
        raise UserError(f"NetX export needs a network Loihi 2 runs: {error}") from None
    for group in groups[:-1]:
        if group.model != HIDDEN_MODEL:
            raise UserError(f"NetX export holds {HIDDEN_MODEL} hidden neurons (CUBA blocks), "
                            f"not {group.model!r} (layer {group.layer!r}); train with "
                            f"--neuron {HIDDEN_MODEL}")


def _run_bits(config: dict[str, Any]) -> int:
    """The weight bits the run's backend used (or would use): config ``bits``, else the
    backend's options, else 8."""
    if config.get("bits") is not None:
        return int(config["bits"])
    _, query = parse_backend_spec(config.get("backend", "none"))
    return int({**query, **config.get("backend_options", {})}.get("bits", DEFAULT_BITS))


def _device(record: RunRecord, network: SpikingNetwork, groups: list[NeuronGroup], weights: str,
            bits: int | None) -> Loihi2Backend:
    """A ``loihi2`` backend holding the run's network: the checkpoint's device state for a run
    trained on Loihi 2, otherwise the weights programmed at the smallest unclipped exponent."""
    config = record.config or {}
    name, _ = parse_backend_spec(config.get("backend", "none"))
    device_state = (record.checkpoint or {}).get("device")
    on_loihi2 = name in LOIHI2_BACKENDS and device_state is not None
    run_bits = _run_bits(config)
    if on_loihi2 and bits is not None and bits != run_bits:
        raise UserError(f"{record.path} was trained on {name} with {run_bits} bits; its export "
                        "keeps the device's weights (drop bits)")
    chosen = run_bits if bits is None else bits
    try:
        backend = Loihi2Backend(bits=chosen, range_factor=1.0)
    except ValueError as error:
        raise UserError(f"NetX export: {error}") from None
    backend.declare_network(groups)
    parameters = {key: value.detach().numpy() for key, value in device_layers(network).items()}
    if on_loihi2:
        backend.load_state_dict(device_state)  # type: ignore[arg-type]
        missing = sorted(set(parameters) - set(backend.held))
        if missing:
            raise UserError(f"{record.path}: the device checkpoint lacks {missing[0]!r}; "
                            "resume or retrain the run")
        if weights == "best":  # read back from the device: they lie on its grid
            for key, value in parameters.items():
                report = backend.program(key, value)
                if report.clipped or report.write_error:
                    raise UserError(f"{record.path}: the best weights of {key!r} are not on "
                                    "the device's grid; export --weights final")
        return backend
    for key, value in parameters.items():
        backend.declare(key, value.shape)
        if backend.program(key, value).clipped:
            raise UserError(f"the weights of {key!r} exceed what a Loihi 2 Dense holds at "
                            "exponent 7; NetX cannot represent this run")
    return backend


def _layer(group: NeuronGroup, layer: LifLayer) -> NetxLayer:
    neurons = layer.neurons
    assert isinstance(neurons, LifParameters)
    rec = layer.w_rec
    return NetxLayer(group.model, _activation(layer.w_in),
                     None if rec is None else _activation(rec), layer.w_in.weight_exp,
                     None if rec is None else rec.weight_exp,
                     int(neurons.du), int(neurons.dv), int(neurons.vth))


def _activation(dense: DenseWeights) -> np.ndarray:
    """W·2^e (int64): the activation one spike delivers through each synapse (e ≥ 0)."""
    return np.asarray(dense.weights, dtype=np.int64) << dense.weight_exp


def _check_loads_exactly(name: str, layer: NetxLayer) -> None:
    """UserError unless NetX + Lava's Dense deliver exactly ``weight`` (and ``weight_rec``)."""
    try:
        connections = netx_connections(layer.weight, layer.weight_rec)
    except ValueError as error:
        raise UserError(f"NetX cannot load layer {name!r}: {error}") from None
    originals = [layer.weight] + ([] if layer.weight_rec is None else [layer.weight_rec])
    for original, dense in zip(originals, connections):
        if not np.array_equal(effective_weights(dense), original):
            low, high = int(original.min()), int(original.max())
            raise UserError(
                f"NetX cannot hold layer {name!r} exactly: its weights span {low}..{high} "
                f"activation units per spike (device exponent {layer.weight_exp}), but NetX "
                "loads only mixed-sign integers in -256..254 or excitatory ones in 0..255 "
                "without loss; train with weights that fit exponent 0 (e.g. "
                "backend_options.range_factor=0.05 with a lower neuron_options.vth)")


# --- NetX's arithmetic (spec §7.3, §3.2) ---------------------------------------------------

def netx_weight_bits(weights: np.ndarray) -> tuple[np.ndarray, int, int]:
    """What NetX's ``optimize_weight_bits`` makes of an integer matrix: (stored weights int64,
    num_weight_bits, weight_exp). ValueError for an all-zero matrix (NetX fails on it)."""
    matrix = np.asarray(weights, dtype=np.int64)
    high, low = int(matrix.max()), int(matrix.min())
    if (high > 254 and low < 0) or (low < -256 and high > 0):
        matrix = np.clip(matrix, -256, 254)  # NetX warns and clips
        high, low = int(matrix.max()), int(matrix.min())
    if high == 0 and low == 0:
        raise ValueError("all its weights are 0, which NetX cannot load")
    if high < 0:
        signed, scale = 0, -256 / low
    elif low >= 0:
        signed, scale = 0, 255 / high
    else:
        signed = 1
        scale = min(127 / high if high > 0 else np.inf, -128 / low)
    scale_bits = int(np.floor(np.log2(scale))) + signed
    common = next(k for k in range(8, -1, -1) if not np.any(matrix % (1 << k)))
    num_weight_bits = 8 - scale_bits - (common - signed)
    # numpy's left shift by a negative count gives 0 (spec §7.3: the weights vanish)
    stored = matrix << scale_bits if scale_bits >= 0 else np.zeros_like(matrix)
    return stored, num_weight_bits, -scale_bits


def netx_connections(weight: np.ndarray, weight_rec: np.ndarray | None = None
                     ) -> list[DenseWeights]:
    """The Dense connections NetX builds for a layer's ``weight`` (and ``weight_rec``, quantized
    together with it), as Lava's Dense holds them after its first step (sign mode taken from
    each matrix, then clip and truncation)."""
    inputs = weight.shape[1]
    matrix = weight if weight_rec is None else np.hstack([weight, weight_rec])
    stored, bits, exponent = netx_weight_bits(matrix)
    parts = [stored] if weight_rec is None else [stored[:, :inputs], stored[:, inputs:]]
    return [_lava_dense(part, bits, exponent) for part in parts]


def _lava_dense(stored: np.ndarray, bits: int, exponent: int) -> DenseWeights:
    mode = sign_mode_of(stored)
    if bits == 9 and mode == "mixed":  # Lava truncates 8 − 9 + 1 = 0 bits: only the clip
        held = np.clip(stored, -256, 255)
    else:
        held = lava_dense_weights(stored, bits, mode)
    return DenseWeights(held, exponent, bits, mode)


def effective_weights(dense: DenseWeights) -> np.ndarray | None:
    """The whole activation each synapse delivers (weights·2^weight_exp, int64), or None where
    a negative exponent leaves a fraction (Lava then floors the sum, not each synapse)."""
    weights = np.asarray(dense.weights, dtype=np.int64)
    if dense.weight_exp >= 0:
        return weights << dense.weight_exp
    if np.any(weights % (1 << -dense.weight_exp)):
        return None
    return weights >> -dense.weight_exp


# --- file ------------------------------------------------------------------------------------

def _text(group: h5py.Group, name: str, value: str) -> None:
    """A string as slayer writes it: an S10 array of shape (1,)."""
    group.create_dataset(name, (1,), "S10", [value.encode("ascii")])


def _write(root: h5py.Group, input_size: int, bits: int, layers: tuple[NetxLayer, ...]) -> None:
    first = root.create_group("layer/0")
    _text(first, "type", "input")
    first["shape"] = np.array([input_size], dtype=np.int64)
    root["hwloop/bits"] = np.int64(bits)
    for index, layer in enumerate(layers, start=1):
        group = root.create_group(f"layer/{index}")
        _text(group, "type", "dense" if layer.weight_rec is None else "dense_rec")
        group["shape"] = np.array([layer.size], dtype=np.int64)
        group["inFeatures"] = np.int64(layer.weight.shape[1])
        group["outFeatures"] = np.int64(layer.size)
        group["weight"] = layer.weight.astype(np.int32)
        neuron = group.create_group("neuron")
        _text(neuron, "type", NEURON_TYPE)
        neuron["iDecay"] = np.int64(layer.du + 1)
        neuron["vDecay"] = np.int64(layer.dv)
        neuron["vThMant"] = np.int64(layer.vth)
        neuron["refDelay"] = np.int64(REF_DELAY)
        neuron["gradedSpike"] = np.bool_(False)
        own = root.create_group(f"hwloop/layer/{index}")
        _text(own, "model", layer.model)
        own["weight_exp"] = np.int64(layer.weight_exp)
        if layer.weight_rec is not None:
            group["weight_rec"] = layer.weight_rec.astype(np.int32)
            own["weight_exp_rec"] = np.int64(layer.weight_exp_rec)


def _string(dataset: h5py.Dataset) -> str:
    value = dataset[()]
    return (value[0] if np.ndim(value) else value).decode("ascii")


def _integer(dataset: h5py.Dataset) -> int:
    value = dataset[()]
    if np.ndim(value) or not float(value).is_integer():
        raise ValueError(f"{dataset.name} must be one integer")
    return int(value)


def _read(root: h5py.Group) -> tuple[int, int, tuple[NetxLayer, ...]]:
    count = len(root["layer"])
    first = root["layer/0"]
    if _string(first["type"]) != "input" or "neuron" in first:
        raise ValueError("/layer/0 must be a shape-only input layer")
    width = input_size = int(np.prod(first["shape"][()]))
    bits = _integer(root["hwloop/bits"])
    layers = []
    for index in range(1, count):
        group, own = root[f"layer/{index}"], root[f"hwloop/layer/{index}"]
        kind = _string(group["type"])
        if kind not in ("dense", "dense_rec"):
            raise ValueError(f"/layer/{index} has type {kind!r}, not dense or dense_rec")
        weight = group["weight"][()].astype(np.int64)
        size = int(np.prod(group["shape"][()]))
        recurrent = kind == "dense_rec"
        weight_rec = group["weight_rec"][()].astype(np.int64) if recurrent else None
        if weight.shape != (size, width) or (recurrent and weight_rec.shape != (size, size)):
            raise ValueError(f"/layer/{index} has weights of the wrong shape")
        neuron = group["neuron"]
        if _string(neuron["type"]) != NEURON_TYPE:
            raise ValueError(f"/layer/{index}/neuron is not {NEURON_TYPE}")
        layer = NetxLayer(_string(own["model"]), weight, weight_rec, _integer(own["weight_exp"]),
                          _integer(own["weight_exp_rec"]) if recurrent else None,
                          _integer(neuron["iDecay"]) - 1, _integer(neuron["vDecay"]),
                          _integer(neuron["vThMant"]))
        _check_on_grid(index, layer, bits)
        layers.append(layer)
        width = size
    if not layers or layers[-1].model != READOUT_MODEL:
        raise ValueError(f"the last layer must be the {READOUT_MODEL} readout")
    return input_size, bits, tuple(layers)


def _check_on_grid(index: int, layer: NetxLayer, bits: int) -> None:
    """ValueError unless every matrix is W·2^e with W on the device's mixed grid."""
    pairs = [(layer.weight, layer.weight_exp)]
    if layer.weight_rec is not None:
        pairs.append((layer.weight_rec, int(layer.weight_exp_rec)))  # type: ignore[arg-type]
    for weight, exponent in pairs:
        held = weight >> exponent
        if exponent < 0 or not np.array_equal(held << exponent, weight) or \
                not np.array_equal(lava_dense_weights(held, bits, "mixed"), held):
            raise ValueError(f"/layer/{index} holds weights off the {bits}-bit device grid")


def read(path: str | Path) -> NetxExport:
    """The NetX export at ``path``, after checking its header and checksum.

    Raises:
        UserError: missing, truncated, damaged, another format, or a checksum mismatch.
    """
    header, (input_size, bits, layers) = read_export(path, FORMAT, _read, at_root=True)
    return NetxExport(header, input_size, bits, layers)


def load_network(path: str | Path) -> LifNetwork:
    """The network NetX builds from the export at ``path``, read as NetX reads it: each layer's
    integers through NetX's weight-bit optimisation and Lava's Dense preprocessing, CUBA LIF
    neurons with du = iDecay − 1, dv = vDecay, vth = vThMant, bias 0 at exponent 6. Runs in
    ``simulators.loihi2.network.emulate``."""
    layers = []
    for layer in read(path).layers:
        connections = netx_connections(layer.weight, layer.weight_rec)
        rec = connections[1] if len(connections) > 1 else None
        layers.append(LifLayer(connections[0], _lif(layer, NETX_BIAS_EXP), rec))
    return LifNetwork(tuple(layers))


def _lif(layer: NetxLayer, bias_exp: int = 0) -> LifParameters:
    """The layer's LIF parameters with bias 0 (``bias_exp`` as given)."""
    return LifParameters(du=layer.du, dv=layer.dv, vth=layer.vth,
                         bias_mant=np.zeros(layer.size, dtype=np.int64),
                         bias_exp=np.full(layer.size, bias_exp, dtype=np.int64))
