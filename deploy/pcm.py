"""PCM conductance maps: per layer and 256×256 tile, the G+/G− conductance targets (µS) of
the differential pairs, with the layer's scale, the bits and the programming options the
``pcm`` backend takes (docs/export.md).

A run trained with the PCM crossbar in the loop exports the levels its device was last
programmed to (the checkpoint's device state), not the host's copy; any other run is quantized
as a fresh device would be (scale max|W|/L per layer). ``load_into`` programs a ``pcm`` backend
with the map: each layer declared at its scale, its levels written, so the device's targets are
the map's.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deploy.container import new_header, read_export, write_export
from hwloop.backends import Backend, available_backends, open_backend, parse_backend_spec
from hwloop.errors import UserError
from hwloop.quantize import ConductanceMap, symmetric_levels, top_level
from hwloop.runs import RunRecord, rebuild_network
from hwloop.session import device_layers

FORMAT = "pcm"
FORMAT_VERSION = 1
DEFAULT_BITS = 4
PROGRAMMING_OPTIONS = ("bits", "mode", "fit", "g_max", "g_min", "tolerance", "max_iterations",
                       "tile", "per_channel")
"""The ``pcm`` backend options a map carries (how the targets are to be programmed)."""


@dataclass(frozen=True)
class PcmLayer:
    """One weight matrix: ``levels`` (out, in) int64 in −L..L and ``scale`` (1, 1) or (out, 1),
    the weight per level; weight = levels · scale."""

    name: str
    levels: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True)
class PcmMap:
    """A network's weights as PCM differential pairs.

    Attributes:
        options: the ``pcm`` backend options to program with (``PROGRAMMING_OPTIONS``).
        g_min, g_max: the conductance range of one device (µS).
        layers: the layers in the network's order.
    """

    options: dict[str, Any]
    g_min: float
    g_max: float
    layers: tuple[PcmLayer, ...] = field(default_factory=tuple)

    @property
    def mapping(self) -> ConductanceMap:
        return ConductanceMap(bits=int(self.options["bits"]), g_min=self.g_min, g_max=self.g_max)

    @property
    def tile(self) -> int:
        return int(self.options.get("tile", 256))

    def targets(self, layer: PcmLayer) -> tuple[np.ndarray, np.ndarray]:
        """(G+, G−) targets (out, in) in µS of ``layer``."""
        return self.mapping.to_conductances(layer.levels)


def pcm_map(record: RunRecord, weights: str = "final") -> PcmMap:
    """The conductance map of a run's ``weights`` (the device's own levels for a run trained
    with ``pcm`` in the loop and its final weights)."""
    config = record.config or {}
    options = _programming_options(config)
    backend = open_backend(FORMAT, **options)
    network = rebuild_network(record, weights)
    names = list(device_layers(network))
    trained = config.get("backend", "none").split(":")[0] == FORMAT and weights == "final"
    layers = []
    if trained:
        state = (record.checkpoint or {}).get("device", {})
        arrays = state.get("arrays", {})
        missing = [name for name in names if name not in arrays]
        if missing:
            raise UserError(f"the run's device state lacks layer {missing[0]!r}; the run file "
                            "is incomplete (train it again)")
        for name in names:
            layers.append(PcmLayer(name, np.asarray(arrays[name]["levels"], np.int64),
                                   np.asarray(arrays[name]["scale"], np.float64)))
    else:
        stored = record.final_weights if weights == "final" else record.best_weights
        assert stored is not None
        bits = int(options["bits"])
        for name in names:
            levels, scale = symmetric_levels(np.asarray(stored[name], np.float64), bits,
                                             per_channel=bool(options.get("per_channel")))
            layers.append(PcmLayer(name, levels.astype(np.int64), scale))
    mapping = backend.mapping
    options = {**options, "g_max": float(mapping.g_max)}  # the fit's default made explicit
    return PcmMap(options, float(mapping.g_min), float(mapping.g_max), tuple(layers))


def _programming_options(config: dict[str, Any]) -> dict[str, Any]:
    """The PCM options of a run: its own for a pcm run, else the defaults at its bits (4)."""
    name = config.get("backend", "none").split(":")[0]
    options: dict[str, Any] = {}
    if name == FORMAT:
        options.update(config.get("backend_options") or {})
        options.update(parse_backend_spec(config["backend"])[1])
    bits = config.get("bits") or options.get("bits") or DEFAULT_BITS
    if not 2 <= int(bits) <= 8:
        raise UserError(f"a PCM map holds 2..8 bits per synapse; the run has bits={bits}")
    options["bits"] = int(bits)
    defaults = {name: parameter.default for name, parameter in
                inspect.signature(available_backends()[FORMAT]).parameters.items()}
    return {key: options.get(key, defaults[key]) for key in PROGRAMMING_OPTIONS}


def export(record: RunRecord, out: str | Path, *, weights: str = "final",
           overwrite: bool = False) -> Path:
    """Write the run's conductance map to ``out`` (HDF5, hwloop's header)."""
    conductance_map = pcm_map(record, weights)
    header = new_header(FORMAT, FORMAT_VERSION, record.path, weights)
    return write_export(out, header, lambda group: _write(group, conductance_map),
                        overwrite=overwrite)


def _write(group: h5py.Group, conductance_map: PcmMap) -> None:
    group.attrs["options"] = json.dumps(conductance_map.options, sort_keys=True)
    group.attrs["g_min_uS"] = conductance_map.g_min
    group.attrs["g_max_uS"] = conductance_map.g_max
    group.attrs["bits"] = int(conductance_map.options["bits"])
    group.attrs["layers"] = json.dumps([layer.name for layer in conductance_map.layers])
    tile = conductance_map.tile
    for layer in conductance_map.layers:
        node = group.create_group(f"layers/{layer.name}")
        node["levels"] = layer.levels.astype(np.int8)
        node["scale"] = layer.scale
        g_plus, g_minus = conductance_map.targets(layer)
        rows, cols = layer.levels.shape
        for row in range(0, rows, tile):
            for col in range(0, cols, tile):
                part = node.create_group(f"tiles/{row // tile}_{col // tile}")
                part.attrs["origin"] = (row, col)
                part["g_plus_uS"] = g_plus[row:row + tile, col:col + tile].astype(np.float32)
                part["g_minus_uS"] = g_minus[row:row + tile, col:col + tile].astype(np.float32)


def read(path: str | Path) -> PcmMap:
    """The conductance map in ``path`` (verified: header, checksum, targets against levels)."""
    return read_export(path, FORMAT, _read)[1]


def _read(group: h5py.Group) -> PcmMap:
    options = json.loads(group.attrs["options"])
    layers = []
    for name in json.loads(group.attrs["layers"]):
        node = group[f"layers/{name}"]
        layers.append(PcmLayer(name, node["levels"][()].astype(np.int64),
                               node["scale"][()].astype(np.float64)))
    conductance_map = PcmMap(options, float(group.attrs["g_min_uS"]),
                             float(group.attrs["g_max_uS"]), tuple(layers))
    top = top_level(int(options["bits"]))
    for layer in layers:
        if np.abs(layer.levels).max(initial=0) > top:
            raise ValueError(f"layer {layer.name!r} has levels beyond ±{top}")
    return conductance_map


def load_into(conductance_map: PcmMap, **overrides: Any) -> Backend:
    """A ``pcm`` backend with the map's options (and ``overrides``, e.g. ``noise=False`` or a
    ``seed``) programmed with every layer: declared at its scale, written at its levels."""
    backend = open_backend(FORMAT, **{**conductance_map.options, **overrides})
    for layer in conductance_map.layers:
        backend.declare(layer.name, layer.levels.shape, step=layer.scale)
        backend.program(layer.name, layer.levels * layer.scale)
    return backend
