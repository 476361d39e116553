"""SpiNNaker 2 images: the SRAM image of every PE a network uses (weights in the chosen
format, neuron state and parameters as the chip lays them out), the mapping, the router table
and the layer names, which the ``spinnaker2`` backend loads in one go, in process or over the
serial link (docs/export.md).

A run trained with ``spinnaker2`` in the loop exports its device's own memories (the
checkpoint's device state); any other run is programmed into a fresh emulated chip in the
chosen weight format first (an ``eprop_alif`` network as the e-prop mapping, any other as
weights-only projections). A network that does not fit is refused before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deploy.container import new_header, read_export, write_export
from hwloop.backends import open_backend, parse_backend_spec
from hwloop.errors import UserError
from hwloop.runs import RunRecord, rebuild_network
from hwloop.session import device_layers, network_groups
from simulators.spinnaker2.backend import SpiNNaker2Backend
from simulators.spinnaker2.chip import Chip
from simulators.spinnaker2.sram import PE_SRAM_BYTES

FORMAT = "spinnaker2"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Route:
    """One router entry: packets whose key matches ``key`` under ``mask`` go to
    ``destinations`` (PE ids) and, with ``host``, to the host."""

    key: int
    mask: int
    destinations: tuple[int, ...]
    host: bool


@dataclass(frozen=True)
class Image:
    """What a chip holds for a network.

    Attributes:
        backend: the backend's layout (layer names and shapes, scales, populations).
        chip: the chip's settings and mapping (``Chip.state_dict``'s ``chip`` and ``config``).
        memories: PE id → its 131,072-byte SRAM image (uint8).
        routes: the router table the mapping implies.
    """

    backend: dict[str, Any]
    chip: dict[str, Any]
    memories: dict[int, np.ndarray]
    routes: tuple[Route, ...]

    def backend_state(self) -> dict[str, Any]:
        """The ``SpiNNaker2Backend.state_dict`` that holds this image (fresh counters)."""
        return {**self.backend, "chip": {
            **self.chip, "memories": {str(pe): memory for pe, memory in self.memories.items()},
            "counters": {"tick": 0, "samples": 0, "overruns": 0, "dropped": 0,
                         "saturations": 0},
            "pending": {},
        }}


def image_of(record: RunRecord, weights: str = "final", weight_format: str | None = None
             ) -> Image:
    """The image of a run's ``weights``: its device's own for a run trained with spinnaker2
    in the loop (final weights), else a fresh chip programmed in ``weight_format`` (the run's
    spinnaker2 format, or f32)."""
    config = record.config or {}
    trained = config.get("backend", "none").split(":")[0] == FORMAT
    options = ({**parse_backend_spec(config["backend"])[1], **config.get("backend_options", {})}
               if trained else {})
    if trained and config.get("bits"):
        options["bits"] = config["bits"]
    if weight_format is not None:
        options.pop("bits", None)
        options["weight_format"] = weight_format
    options.pop("port", None)
    backend = open_backend(FORMAT, **options)
    assert isinstance(backend, SpiNNaker2Backend)
    if trained and weights == "final" and weight_format is None:
        backend.load_state_dict((record.checkpoint or {})["device"])
    else:
        _program(backend, record, weights)
    return _image(backend)


def _program(backend: SpiNNaker2Backend, record: RunRecord, weights: str) -> None:
    """Program a run's network into a fresh backend (as the e-prop network where it is one)."""
    network = rebuild_network(record, weights)
    groups = network_groups(network)
    if all(group.model in backend.capabilities().neurons for group in groups):
        backend.declare_network(groups)
    for name, parameter in device_layers(network).items():
        try:
            backend.declare(name, tuple(parameter.shape))
        except ValueError as error:
            raise UserError(f"the network does not fit SpiNNaker 2: {error}") from None
        backend.program(name, parameter.detach().double().numpy())


def _image(backend: SpiNNaker2Backend) -> Image:
    state = backend.state_dict()
    chip_state = state.pop("chip")
    chip: Chip = backend._device()
    routes = tuple(Route(int(route.key), int(route.mask), tuple(sorted(route.destinations)),
                         bool(route.host)) for route in chip._net.router.routes)
    used = [int(pe) for pe, _, _ in chip.status()["sram"]]  # every PE the mapping uses
    memories = {pe: np.frombuffer(chip.pes[pe].memory, np.uint8).copy() for pe in used}
    return Image(state, {"chip": chip_state["chip"], "config": chip_state["config"]},
                 memories, routes)


def export(record: RunRecord, out: str | Path, *, weights: str = "final",
           overwrite: bool = False, weight_format: str | None = None) -> Path:
    """Write the run's SpiNNaker 2 image to ``out`` (HDF5, hwloop's header)."""
    image = image_of(record, weights, weight_format)
    header = new_header(FORMAT, FORMAT_VERSION, record.path, weights)
    return write_export(out, header, lambda group: _write(group, image), overwrite=overwrite)


def _write(group: h5py.Group, image: Image) -> None:
    group.attrs["backend"] = json.dumps(image.backend, sort_keys=True)
    group.attrs["chip"] = json.dumps(image.chip, sort_keys=True)
    for pe, memory in sorted(image.memories.items()):
        group.create_dataset(f"pes/{pe}/sram", data=memory, compression="gzip")
    table = group.create_group("router")
    table["key"] = np.array([route.key for route in image.routes], np.uint32)
    table["mask"] = np.array([route.mask for route in image.routes], np.uint32)
    table["host"] = np.array([route.host for route in image.routes], bool)
    n_pe = int(image.chip["chip"]["n_pe"])
    destinations = np.zeros((len(image.routes), n_pe), bool)
    for row, route in enumerate(image.routes):
        destinations[row, list(route.destinations)] = True
    table["destinations"] = destinations


def read(path: str | Path) -> Image:
    """The image in ``path`` (verified: header, checksum, SRAM sizes)."""
    return read_export(path, FORMAT, _read)[1]


def _read(group: h5py.Group) -> Image:
    memories = {int(pe): group[f"pes/{pe}/sram"][()] for pe in group.get("pes", {})}
    for pe, memory in memories.items():
        if memory.shape != (PE_SRAM_BYTES,) or memory.dtype != np.uint8:
            raise ValueError(f"PE {pe}'s SRAM image is not {PE_SRAM_BYTES} bytes")
    table = group["router"]
    routes = tuple(
        Route(int(key), int(mask), tuple(int(pe) for pe in np.flatnonzero(row)), bool(host))
        for key, mask, host, row in zip(table["key"][()], table["mask"][()], table["host"][()],
                                        table["destinations"][()]))
    return Image(json.loads(group.attrs["backend"]), json.loads(group.attrs["chip"]), memories,
                 routes)


def load_into(image: Image, port: str = "") -> SpiNNaker2Backend:
    """A ``spinnaker2`` backend (in process, or on the device at ``port``) holding the image;
    UserError if the chip's own router table for the image's mapping is not the image's."""
    backend = open_backend(FORMAT, port=port,
                           weight_format=_weight_format(image))
    assert isinstance(backend, SpiNNaker2Backend)
    backend.load_state_dict(image.backend_state())
    if not port:
        rebuilt = _image(backend).routes
        if rebuilt != image.routes:
            raise UserError("the image's router table is not the one its mapping gives; "
                            "export the run again")
    return backend


def _weight_format(image: Image) -> str:
    config = image.chip.get("config") or {}
    return str(config.get("weight_format", "f32"))
