"""NIR export and import (the ``nir`` package, NIR 1.0.8; docs/export.md).

The file is NIR's own HDF5 layout at the root (``nir.read`` reads it as is) with hwloop's
header in the root's attributes (``deploy.container``, ``at_root``). The graph, one name per
node (layer l = 0, 1, ... bottom-up)::

    input ─► layer0.w_in ─► layer0.neuron ─► layer1.w_in ─► … ─► readout.w_in
                                ▲      │                           ─► readout.neuron ─► output
                                └ layer0.w_rec ◄┘     (layerL.w_skip from layer L−2)

``*.w_in`` is an Affine (a nonzero bias) or a Linear, ``*.w_rec`` a Linear (self recurrence
as its diagonal), ``*.neuron`` a LIF, LI, CubaLIF or CubaLI node, or an extension node for
models NIR has no node for.

Discretisation convention (graph metadata ``dt``, ``integration``, ``delays``): one hwloop
step is ``dt`` = 1e-4 s (snnTorch's and the Lava scripts' choice), integrated by forward Euler
with the node's input held over the step; a cycle (the recurrent Linear) carries one step of
delay, every other edge none. A LIF-family node gets, per neuron, with α its decay per step:

    tau = dt / (1 − α),   r = tau / dt,   v_leak = 0,   v_threshold = ϑ,   v_reset = 0

and every weight into it (and the bias) is multiplied by its input gain g = 1 − α (row-wise),
so that Euler's v ← (1 − dt/tau)·v + (dt/tau)·r·(g·I) is hwloop's v ← α·v + (1 − α)·I exactly.
Models with a unit input gain (Lava's CUBA LIF, e-prop's readout) keep g = 1. Each neuron node
also carries the model's name, options and raw trainable parameters in its metadata, from
which ``to_network`` rebuilds the network bit for bit.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np
import torch

import hwloop
from deploy.container import ExportHeader, new_header, read_export, write_export
from hwloop.config import TrainConfig, build_config
from hwloop.errors import UserError
from hwloop.learning.network import Layer, SpikingNetwork
from hwloop.neurons import HIDDEN_NEURONS, READOUTS, LI, NeuronModel
from hwloop.neurons.loihi import DECAY_UNIT, WEIGHT_UNIT
from hwloop.options import build_options
from hwloop.runs import RunRecord, now_iso, rebuild_network, write_run
from hwloop.trainer import DEVICE_KEYS

FORMAT = "nir"
FORMAT_VERSION = 1
DT = 1e-4
"""Seconds per hwloop step written into the graph (``dt`` metadata)."""
INTEGRATION = "forward_euler"
DELAYS = "one step on each recurrent Linear (cycle), none on feed-forward edges"
EXTENSION = "hwloop_extension"
"""Metadata key of an extension node: the model's name."""

_EXTENSION_REASONS = {
    "alif": "its adaptive threshold b_j0 + beta_a*a and soft reset -A*z are not NIR nodes",
    "adlif": "its adaptation current w (driven by the post-reset potential) is not a NIR node",
    "brf": "a resonator with a spike-driven damping q is not a NIR node",
    "eprop_alif": "its adaptive threshold and soft reset are not NIR nodes",
    "loihi_atrlif": "Lava's integer ATRLIF (adaptive threshold, refractory state) is not a "
                    "NIR node",
}
_APPROXIMATE_REASONS = {
    "loihi_lif": "Lava's integer truncation, 24-bit wrap and saturation are not NIR's float "
                 "CubaLIF",
    "loihi_li": "Lava's integer truncation, 24-bit wrap and saturation are not NIR's float "
                "CubaLI",
}


@dataclass(frozen=True)
class NirExport:
    """A verified NIR export: hwloop's header and the graph ``nir.read`` returns."""

    header: ExportHeader
    graph: nir.NIRGraph


def export(record: RunRecord, out: str | Path, *, weights: str = "final",
           overwrite: bool = False, standard_only: bool = False) -> Path:
    """Write the run's network as a NIR graph to ``out`` (module doc) and return the path.

    Args:
        weights: ``final`` (for a hardware-in-the-loop run: what the device held) or ``best``.
        standard_only: refuse models that need an extension node or that a standard node
            only approximates.

    Raises:
        UserError: before anything is written, for a run without weights, a model NIR cannot
            represent faithfully with ``standard_only``, or an ``out`` that cannot be written.
    """
    network = _network_of(record, weights)
    if standard_only:
        problems = [f"{model.name!r} ({reason})" for model in
                    {layer.model.name: layer.model for layer in network.layers}.values()
                    for reason in [_EXTENSION_REASONS.get(model.name,
                                                          _APPROXIMATE_REASONS.get(model.name))]
                    if reason]
        if problems:
            raise UserError(f"standard NIR nodes cannot represent {'; '.join(problems)} "
                            "faithfully; export without --standard-only to get hwloop "
                            "extension nodes")
    graph = to_graph(network, source_run=str(record.path), weights=weights,
                     config=record.config or {})
    buffer = _serialised(graph)

    def write_payload(root: h5py.Group) -> None:
        with h5py.File(buffer, "r") as source:
            for name in source:
                source.copy(source[name], root, name)

    header = new_header(FORMAT, FORMAT_VERSION, record.path, weights)
    return write_export(out, header, write_payload, overwrite=overwrite, at_root=True)


def read(path: str | Path) -> NirExport:
    """The export at ``path`` after checking hwloop's header and checksum, and that NIR reads it.

    Raises:
        UserError: one line naming the file and what is wrong (missing, truncated, not an
            hwloop NIR export, checksum mismatch, not a graph NIR can read).
    """
    header, _ = read_export(path, FORMAT, lambda root: None, at_root=True)
    try:
        graph = nir.read(path)
    except Exception as error:  # nir raises many kinds for a malformed graph
        raise UserError(f"{path} is not a graph NIR {nir.version} can read "
                        f"({type(error).__name__}: {' '.join(str(error).split())[:120]})") from None
    return NirExport(header, graph)


def to_graph(network: SpikingNetwork, *, source_run: str = "", weights: str = "final",
             config: dict[str, Any] | None = None) -> nir.NIRGraph:
    """The NIR graph of ``network`` (module doc); ``config`` (the run's) travels in the
    graph's metadata so that ``import_run`` can write a run with it."""
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array([network.input_size]))}
    edges: list[tuple[str, str]] = []
    outputs = ["input"]
    for index, layer in enumerate([*network.hidden, network.readout]):
        name = f"layer{index}" if index < len(network.hidden) else "readout"
        neuron, gain = _neuron_node(layer)
        nodes[f"{name}.neuron"] = neuron
        nodes[f"{name}.w_in"] = _affine(_array(layer.w_in), _array(layer.bias), gain)
        edges += [(outputs[-1], f"{name}.w_in"), (f"{name}.w_in", f"{name}.neuron")]
        if layer.w_rec is not None:
            w_rec = _array(layer.w_rec)
            matrix = w_rec if layer.recurrence == "full" else np.diag(w_rec)
            nodes[f"{name}.w_rec"] = nir.Linear(gain[:, None] * matrix)
            edges += [(f"{name}.neuron", f"{name}.w_rec"), (f"{name}.w_rec", f"{name}.neuron")]
        source = network.skip_source(index) if index < len(network.hidden) else None
        if layer.w_skip is not None and source is not None:
            nodes[f"{name}.w_skip"] = nir.Linear(gain[:, None] * _array(layer.w_skip))
            edges += [(outputs[source], f"{name}.w_skip"), (f"{name}.w_skip", f"{name}.neuron")]
        outputs.append(f"{name}.neuron")
    nodes["output"] = nir.Output(np.array([network.num_classes]))
    edges.append((outputs[-1], "output"))
    shape = {"input_size": network.input_size, "hidden": [layer.size for layer in network.hidden],
             "num_classes": network.num_classes, "recurrence": network.recurrence,
             "skip": network.skip, "dtype": str(network.readout.w_in.dtype).split(".")[-1]}
    metadata = {"dt": DT, "integration": INTEGRATION, "delays": DELAYS,
                "convention": "hwloop NIR v1 (docs/export.md)",
                "hwloop_version": hwloop.__version__, "source_run": source_run,
                "weights": weights, "hwloop_network": json.dumps(shape),
                "hwloop_config": json.dumps(config or {})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def to_network(graph: nir.NIRGraph) -> tuple[SpikingNetwork, dict[str, Any]]:
    """The network an hwloop NIR graph describes, parameters bit for bit, and the config keys
    that define it (``hidden``, ``recurrence``, ``skip``, ``dtype``, ``neuron``,
    ``neuron_options``, ``readout_options``).

    Raises:
        UserError: the graph was not written by hwloop's exporter (no hwloop metadata) or its
            NIR parameters disagree with the hwloop parameters it carries.
    """
    if "hwloop_network" not in graph.metadata:
        raise UserError("this NIR graph was not written by `hwloop export` (no hwloop_network "
                        "metadata); hwloop imports only its own NIR exports")
    shape = json.loads(str(graph.metadata["hwloop_network"]))
    count = len(shape["hidden"])
    names = [f"layer{i}" for i in range(count)] + ["readout"]
    models = [_model_of(graph.nodes[f"{name}.neuron"], name) for name in names]
    dtype = getattr(torch, shape["dtype"])
    network = SpikingNetwork(shape["input_size"], shape["hidden"], shape["num_classes"],
                             models[0], models[-1], recurrence=shape["recurrence"],
                             skip=shape["skip"], dtype=dtype)
    with torch.no_grad():
        for name, layer in zip(names, network.layers):
            _load_layer(graph, name, layer)
    overrides = {"hidden": shape["hidden"], "recurrence": shape["recurrence"],
                 "skip": shape["skip"], "dtype": shape["dtype"], "neuron": models[0].name,
                 "neuron_options": models[0].options(), "readout_options": models[-1].options()}
    return network, overrides


def import_run(path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a run directory from an hwloop NIR export: its source run's config (on the host:
    ``backend = none``), the imported weights as final and best weights, and a fresh trainer
    state, so that ``hwloop eval`` evaluates it and ``hwloop train --resume`` trains it on.
    Returns the run file.

    Raises:
        UserError: the file fails ``read`` or ``to_network``, or ``out_dir`` holds a run.
    """
    from hwloop.training import plan_training, task_description

    graph = read(path).graph
    network, overrides = to_network(graph)
    config = json.loads(str(graph.metadata.get("hwloop_config", "{}"))) or {}
    host_only = TrainConfig()  # on the host: every device setting back to its default
    config.update(overrides, backend="none",
                  **{key: getattr(host_only, key) for key in DEVICE_KEYS})
    config["neuron_options"] = {**config.get("neuron_options", {}), **overrides["neuron_options"]}
    config["readout_options"] = {**config.get("readout_options", {}),
                                 **overrides["readout_options"]}
    plan = plan_training(build_config(config), out_dir, overwrite=overwrite)
    trainer = plan.trainer
    try:
        if (trainer.task.input_size, trainer.task.num_classes) != (network.input_size,
                                                                   network.num_classes):
            raise UserError(f"the graph's {network.input_size} inputs and "
                            f"{network.num_classes} outputs do not fit task "
                            f"{plan.config.task!r} ({trainer.task.input_size} inputs, "
                            f"{trainer.task.num_classes} classes)")
        trainer.network.load_state_dict(network.state_dict())
        trainer.best_weights = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        plan.directory.acquire()
        written = False
        try:
            path = write_run(plan.directory.path, config=plan.config.to_dict(),
                             task=task_description(plan.task), created=now_iso(), epochs=[],
                             steps=[], checkpoint=trainer.state())
            written = True
            return path
        finally:
            plan.directory.release(keep=written)
    finally:
        trainer.close()


def _network_of(record: RunRecord, weights: str) -> SpikingNetwork:
    """The run's network with the weights to export: for the final weights of a
    hardware-in-the-loop run, those the device held (from its stored state)."""
    stored = record.final_weights if weights == "final" else record.best_weights
    if weights in ("final", "best") and not stored:
        raise UserError(f"{record.path} holds no {weights} weights; train the run first")
    network = rebuild_network(record, weights)
    device = (record.checkpoint or {}).get("device")
    if weights == "final" and record.is_hardware_in_the_loop and device is not None:
        from hwloop.session import device_layers, load_device_weights, open_session_backend

        backend = open_session_backend(build_config(record.config))
        try:
            backend.load_state_dict(device)
            load_device_weights(device_layers(network), backend)
        finally:
            backend.close()
    return network


def _serialised(graph: nir.NIRGraph) -> Any:
    """``graph`` written by ``nir.write`` into memory (a file-like object)."""
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    buffer.seek(0)
    return buffer


def _array(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().cpu().double().numpy()


def _affine(weight: np.ndarray, bias: np.ndarray, gain: np.ndarray) -> nir.NIRNode:
    """Affine (a nonzero bias) or Linear of the gain-scaled weights."""
    if np.any(bias != 0):
        return nir.Affine(gain[:, None] * weight, gain * bias)
    return nir.Linear(gain[:, None] * weight)


def _coefficients(layer: Layer) -> dict[str, np.ndarray]:
    """The model's step coefficients in float64 (N,) arrays (the same on export and import)."""
    params = {name: value.detach().cpu().double() for name, value in layer.params.items()}
    with torch.no_grad():
        coefficients = layer.model.coefficients(params)
    return {name: np.broadcast_to(value.double().numpy(), (layer.size,)).copy()
            for name, value in coefficients.items()}


def _neuron_node(layer: Layer) -> tuple[nir.NIRNode, np.ndarray]:
    """The node of ``layer``'s neurons and the input gain g (N,) of the weights into it."""
    model, size = layer.model, layer.size
    metadata = {"hwloop_model": model.name, "hwloop_options": json.dumps(model.options()),
                "hwloop_params": {name: value.detach().cpu().numpy()
                                  for name, value in layer.params.items()}}
    zeros, ones = np.zeros(size), np.ones(size)
    if model.name in ("lif", "li", "eprop_li"):
        coefficients = _coefficients(layer)
        alpha = coefficients["kappa" if model.name == "eprop_li" else "alpha"]
        gain = ones if model.name == "eprop_li" else 1.0 - alpha
        tau = DT / (1.0 - alpha)
        if model.name == "lif":
            node = nir.LIF(tau=tau, r=tau / DT, v_leak=zeros, v_threshold=model.thr * ones,
                           v_reset=zeros, metadata=metadata)
        else:
            node = nir.LI(tau=tau, r=tau / DT, v_leak=zeros, metadata=metadata)
        return node, gain
    if model.name in ("loihi_lif", "loihi_li"):
        alpha_u = (4095 - model.du) / DECAY_UNIT * ones
        alpha_v = (4096 - model.dv) / DECAY_UNIT * ones
        tau_syn, tau_mem = DT / (1.0 - alpha_u), DT / (1.0 - alpha_v)
        common = {"tau_syn": tau_syn, "tau_mem": tau_mem, "r": tau_mem / DT, "v_leak": zeros,
                  "w_in": tau_syn / DT, "metadata": metadata}
        if model.name == "loihi_lif":
            return nir.CubaLIF(v_threshold=model.vth / WEIGHT_UNIT * ones, v_reset=zeros,
                               **common), ones
        return nir.CubaLI(**common), ones
    metadata[EXTENSION] = model.name
    metadata["hwloop_state"] = json.dumps(list(model.state_names))
    body = nir.NIRGraph(nodes={"input": nir.Input(np.array([size])),
                               "output": nir.Output(np.array([size]))},
                        edges=[("input", "output")], metadata=metadata)
    return body, ones


def _model_of(node: nir.NIRNode, name: str) -> NeuronModel:
    """The hwloop model a neuron node carries in its metadata."""
    metadata = getattr(node, "metadata", None) or {}
    if "hwloop_model" not in metadata:
        raise UserError(f"NIR node {name}.neuron carries no hwloop_model metadata; hwloop "
                        "imports only its own NIR exports")
    model_name = str(metadata["hwloop_model"])
    classes = {**HIDDEN_NEURONS, **{cls.name: cls for cls in READOUTS.values()}, "li": LI}
    if model_name not in classes:
        raise UserError(f"NIR node {name}.neuron: unknown hwloop model {model_name!r}")
    options = json.loads(str(metadata["hwloop_options"]))
    return build_options(classes[model_name], options, f"NIR node {name}.neuron")


def _load_layer(graph: nir.NIRGraph, name: str, layer: Layer) -> None:
    """Set ``layer``'s parameters from the graph's nodes of ``name`` (in place)."""
    neuron = graph.nodes[f"{name}.neuron"]
    stored = neuron.metadata["hwloop_params"]
    for key, parameter in layer.params.items():
        parameter.copy_(torch.from_numpy(np.asarray(stored[key])).to(parameter.dtype))
    expected, gain = _neuron_node(layer)
    for field in ("tau", "tau_mem", "tau_syn", "r", "v_threshold", "w_in"):
        if hasattr(expected, field) and not np.allclose(getattr(neuron, field),
                                                        getattr(expected, field), rtol=1e-12):
            raise UserError(f"NIR node {name}.neuron: {field} disagrees with the hwloop "
                            "parameters it carries (the node was edited); export the run again")
    w_in = graph.nodes[f"{name}.w_in"]
    layer.w_in.copy_(_unscaled(w_in.weight, gain, layer.w_in.dtype))
    bias = w_in.bias if isinstance(w_in, nir.Affine) else np.zeros(layer.size)
    layer.bias.copy_(_unscaled(bias, gain, layer.bias.dtype))
    if layer.w_rec is not None:
        matrix = graph.nodes[f"{name}.w_rec"].weight
        matrix = matrix if layer.recurrence == "full" else np.diag(matrix)
        layer.w_rec.copy_(_unscaled(matrix, gain, layer.w_rec.dtype))
    if layer.w_skip is not None:
        layer.w_skip.copy_(_unscaled(graph.nodes[f"{name}.w_skip"].weight, gain,
                                     layer.w_skip.dtype))


def _unscaled(array: np.ndarray, gain: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """NIR weights back in hwloop's units: divided row-wise by the gain, in float64, then
    rounded to ``dtype`` (exact: the float64 error is far below half a float32 ulp)."""
    array = np.asarray(array, dtype=np.float64)
    divisor = gain if array.ndim == 1 else gain[:, None]
    return torch.from_numpy(array / divisor).to(dtype)
