"""The file every hwloop export shares: an HDF5 file with a ``payload`` group (the format's
own layout) and a header in the root's attributes that names the format, hwloop's version, the
source run and which of its weights, and a SHA-256 checksum of the payload (docs/export.md).

``write_export`` writes to a temporary file beside the target and renames it at the end, so a
failed or interrupted export leaves no partial file; it never replaces an existing file
unless asked. ``read_export`` refuses, with one line each, a missing, truncated or non-HDF5
file, another format, and a payload whose checksum does not match its header.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

import hwloop
from hwloop.atomic import temporary_path
from hwloop.errors import UserError

MAGIC = "hwloop-export"
"""Value of the root attribute ``magic`` of every export."""


@dataclass(frozen=True)
class ExportHeader:
    """What an export says about itself.

    Attributes:
        format: ``pcm``, ``spinnaker2``, ... (``deploy.FORMATS``).
        format_version: the layout version of that format.
        hwloop_version: the hwloop that wrote it.
        source_run: the run file the weights come from.
        weights: ``final`` or ``best``.
        checksum: SHA-256 (hex) of the payload (``payload_checksum``).
    """

    format: str
    format_version: int
    hwloop_version: str
    source_run: str
    weights: str
    checksum: str = ""


HEADER_ATTRIBUTES = ("magic", "format", "format_version", "hwloop_version", "source_run",
                     "weights", "checksum")
"""Root attributes of the header; never part of the payload's checksum."""


def payload_checksum(group: h5py.Group) -> str:
    """SHA-256 over every dataset (path, dtype, shape, bytes) and attribute (path, name, JSON
    value) below ``group``, in sorted order, the header's own attributes excepted: any change
    to the payload changes it. Formats whose readers want their own layout at the file's root
    (NIR, NetX) checksum the root group."""
    digest = hashlib.sha256()

    def visit(item: h5py.Group | h5py.Dataset, path: str) -> None:
        for name in sorted(item.attrs):
            if path == "" and item.name == "/" and name in HEADER_ATTRIBUTES:
                continue
            value = item.attrs[name]
            text = json.dumps(value.tolist() if isinstance(value, np.ndarray) else
                              value.item() if isinstance(value, np.generic) else value)
            digest.update(f"attr {path}:{name}={text}\n".encode())
        if isinstance(item, h5py.Dataset):
            array = np.asarray(item[()])
            digest.update(f"data {path} {array.dtype.str} {array.shape}\n".encode())
            if array.dtype == object:  # variable-length strings: their text, not pointers
                for value in array.ravel():
                    text = value if isinstance(value, bytes) else str(value).encode()
                    digest.update(len(text).to_bytes(8, "little") + text)
            else:
                digest.update(np.ascontiguousarray(array).tobytes())
            return
        for name in sorted(item):
            visit(item[name], f"{path}/{name}")

    visit(group, "")
    return digest.hexdigest()


def write_export(out: str | Path, header: ExportHeader,
                 write_payload: Callable[[h5py.Group], None], *, overwrite: bool = False,
                 at_root: bool = False) -> Path:
    """Write an export to ``out``: ``write_payload`` fills the ``payload`` group (the file's
    root with ``at_root``, for formats whose readers expect their layout there), then the
    header (with the payload's checksum) goes in; the file appears whole or not at all.

    Raises:
        UserError: ``out`` exists (without ``overwrite``) or its folder does not.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it or choose "
                        "another --out")
    if not target.parent.is_dir():
        raise UserError(f"the folder {target.parent} does not exist; create it or choose "
                        "another --out")
    temporary = temporary_path(target)
    try:
        with h5py.File(temporary, "w") as file:
            payload = file if at_root else file.create_group("payload")
            write_payload(payload)
            checksum = payload_checksum(payload)
            file.attrs["magic"] = MAGIC
            for key, value in asdict(header).items():
                file.attrs[key] = checksum if key == "checksum" else value
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def new_header(format: str, format_version: int, source_run: str | Path,
               weights: str) -> ExportHeader:
    """The header of an export written now by this hwloop (checksum filled in on writing)."""
    return ExportHeader(format, format_version, hwloop.__version__, str(source_run), weights)


def read_export(path: str | Path, expected_format: str,
                read_payload: Callable[[h5py.Group], Any], *, at_root: bool = False
                ) -> tuple[ExportHeader, Any]:
    """(header, ``read_payload(payload group)``) of the export at ``path`` (the root group
    with ``at_root``), after checking that it is an hwloop export of ``expected_format`` whose
    checksum matches.

    Raises:
        UserError: one line naming the file and what is wrong with it.
    """
    source = Path(path)
    if not source.is_file():
        raise UserError(f"{source} does not exist (give the file `hwloop export` wrote)")
    try:
        with h5py.File(source, "r") as file:
            if file.attrs.get("magic") != MAGIC or not (at_root or "payload" in file):
                raise UserError(f"{source} is not an hwloop export (no hwloop header); "
                                "export the run again")
            header = ExportHeader(**{key: _plain(file.attrs[key])
                                     for key in ExportHeader.__dataclass_fields__})
            if header.format != expected_format:
                raise UserError(f"{source} holds a {header.format!r} export, not "
                                f"{expected_format!r}")
            payload = file if at_root else file["payload"]
            if payload_checksum(payload) != header.checksum:
                raise UserError(f"{source}: the payload does not match its checksum (the file "
                                "was changed or damaged); export the run again")
            return header, read_payload(payload)
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise UserError(f"{source} cannot be read as an hwloop export (damaged or truncated: "
                        f"{' '.join(str(error).split())}); export the run again") from None


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value
