"""Exporters (and importers) of trained runs for hardware formats (docs/export.md).

Each format is one module with a small typed record, a writer and a reader, and a check that
runs what it wrote. Every export is an HDF5 file with hwloop's header (format, version, source
run, weights, payload checksum; ``deploy.container``), written atomically. ``FORMATS`` maps
each format to its module, ``DESCRIPTIONS`` says what each holds and how it is verified.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from hwloop.errors import UserError
from hwloop.runs import RunRecord, read_run

FORMATS: dict[str, str] = {
    "netx": "deploy.netx",
    "nir": "deploy.nir",
    "pcm": "deploy.pcm",
    "spinnaker2": "deploy.spinnaker2",
}
"""Export format → its module (``export``, ``read``)."""

DESCRIPTIONS = {
    "netx": "Lava NetX HDF5 for Loihi 2: integer weights and LIF parameters as the loihi2 "
            "backend holds them; replayed through NetX's weight processing before writing, "
            "and run bit-exact in the emulator (and lava-dl's NetX where installed)",
    "nir": "NIR 1.0.8 graph (LIF/CubaLIF/LI nodes, recurrent edges, dt and the discretisation in "
           "its metadata; other models as named extension nodes); hwloop import reads it back "
           "with identical parameters and outputs",
    "pcm": "PCM conductance map: G+/G- targets (µS) per 256x256 tile, scale, bits; the pcm "
           "backend programs it and reproduces the run's device predictions",
    "spinnaker2": "SpiNNaker 2 image: per-PE SRAM (weights, neuron state), mapping, router "
                  "table; the spinnaker2 backend loads it in process or over the link",
}
"""One line per format for ``hwloop export --help``: what it holds and how it is verified."""

WEIGHTS = ("final", "best")


def format_module(name: str) -> Any:
    """The module of export format ``name`` (UserError for an unknown one)."""
    if name not in FORMATS:
        raise UserError(f"unknown export format {name!r} (choose from: {', '.join(FORMATS)})")
    return importlib.import_module(FORMATS[name])


def export_run(run: str | Path | RunRecord, format: str, out: str | Path, *,
               weights: str = "final", overwrite: bool = False, **options: Any) -> Path:
    """Export a run's ``weights`` (``final`` or ``best``) in ``format`` to ``out``; returns the
    file written. Raises UserError (nothing written) for a missing or damaged run, a run
    without those weights, a network the format or target cannot hold, or an existing ``out``
    without ``overwrite``."""
    module = format_module(format)
    if weights not in WEIGHTS:
        raise UserError(f"unknown weights {weights!r} (choose from: {', '.join(WEIGHTS)})")
    record = run if isinstance(run, RunRecord) else read_run(run)
    stored = record.final_weights if weights == "final" else record.best_weights
    if not stored or record.config is None:
        raise UserError(f"{record.path} holds no {weights} weights (a run that stopped before "
                        "its first epoch); train it further first")
    return module.export(record, out, weights=weights, overwrite=overwrite, **options)
