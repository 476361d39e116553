"""Weights as the PEs store them: a projection's (out, in) weights, flat in row-major order,
split into blocks of whole rows, one block per PE (spec A4.3, A4.6 LOAD_WEIGHTS).

A block's elements sit in its PE's memory in the projection's format (``formats.FORMATS``):
float32, s16.15 int32, int8 levels, or int4 levels two per byte (low nibble first). int8 and
int4 blocks keep the projection's scale (weight per level) as a float32 word next to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.spinnaker2.fixed import Fixed
from simulators.spinnaker2.formats import decode, payload_bytes
from simulators.spinnaker2.numerics import F32, S1615

_DTYPES = {"f32": np.dtype("<f4"), "s16.15": np.dtype("<i4"), "int8": np.dtype("<i1")}


@dataclass(frozen=True)
class Block:
    """The weights ``first .. first + count − 1`` (flat index) of a projection, held by PE
    ``pe`` at byte ``offset``; ``scale_offset`` is the address of its float32 scale word
    (int8, int4) or None."""

    pe: int
    offset: int
    first: int
    count: int
    scale_offset: int | None = None


@dataclass(frozen=True)
class Projection:
    """A projection's shape (rows = out, cols = in), storage format and blocks."""

    name: str
    rows: int
    cols: int
    fmt: str
    blocks: tuple[Block, ...]

    @property
    def size(self) -> int:
        return self.rows * self.cols


def elements(memory: bytearray, block: Block, fmt: str) -> np.ndarray:
    """The block's stored elements (count,): a view for f32 (float32), s16.15 (int32) and int8
    (int8); a copy of the levels (int8) for int4."""
    if fmt == "int4":
        packed = bytes(memory[block.offset:block.offset + payload_bytes(block.count, fmt)])
        return decode(packed, block.count, fmt).astype(np.int8)
    return np.frombuffer(memory, _DTYPES[fmt], block.count, block.offset)


def write_elements(memory: bytearray, block: Block, fmt: str, start: int,
                   values: np.ndarray) -> None:
    """Store elements (of ``elements``' kind) at the block's local index ``start``."""
    if fmt != "int4":
        elements(memory, block, fmt)[start:start + values.size] = values
        return
    levels = elements(memory, block, fmt)
    levels[start:start + values.size] = values
    memory[block.offset:block.offset + payload_bytes(block.count, fmt)] = pack_int4(levels)


def pack_int4(levels: np.ndarray) -> bytes:
    """Levels −7..7 → two's-complement nibbles, two per byte, low nibble first."""
    nibbles = (np.asarray(levels, np.int64) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def payload_elements(payload: bytes, count: int, fmt: str) -> np.ndarray:
    """The elements (of ``elements``' kind) that a LOAD_WEIGHTS payload carries."""
    if fmt == "int4":
        return decode(payload, count, fmt).astype(np.int8)
    return np.frombuffer(payload, _DTYPES[fmt], count)


def elements_payload(values: np.ndarray, fmt: str) -> bytes:
    """Elements → the payload bytes of READ_WEIGHTS."""
    return pack_int4(values) if fmt == "int4" else values.astype(_DTYPES[fmt]).tobytes()


def scale(memory: bytearray, block: Block) -> float:
    """The block's weight per level (1.0 for f32 and s16.15)."""
    if block.scale_offset is None:
        return 1.0
    return float(np.frombuffer(memory, "<f4", 1, block.scale_offset)[0])


def set_scale(memory: bytearray, block: Block, value: float) -> None:
    if block.scale_offset is not None:
        np.frombuffer(memory, "<f4", 1, block.scale_offset)[0] = value


def weights_f32(memory: bytearray, block: Block, fmt: str) -> np.ndarray:
    """The block's weights as float32 (count,): the stored view for f32, else converted."""
    stored = elements(memory, block, fmt)
    if fmt == "f32":
        return stored
    if fmt == "s16.15":
        return S1615.to_f32(stored)
    return stored.astype(np.float32) * np.float32(scale(memory, block))


def weights_for(numerics: F32 | S1615, memory: bytearray, block: Block, fmt: str
                ) -> np.ndarray:
    """The block's weights in the kernel's arithmetic: float32, or s16.15 raw (int64)."""
    if numerics.name == "f32":
        return weights_f32(memory, block, fmt)
    stored = elements(memory, block, fmt)
    if fmt == "s16.15":
        return stored.astype(np.int64)
    if fmt == "f32":
        return numerics.from_f32(stored)
    return numerics.from_host(stored.astype(np.float64) * scale(memory, block))


def store_f32(memory: bytearray, block: Block, fmt: str, values: np.ndarray,
              fixed: Fixed) -> None:
    """Store float32 weights (count,) in a trainable format: f32 as they are, s16.15 rounded
    to nearest (saturations counted by ``fixed``)."""
    stored = elements(memory, block, fmt)
    stored[:] = values if fmt == "f32" else fixed.from_float(np.asarray(values, np.float64))
