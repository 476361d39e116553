"""The host ↔ device serial protocol of the SpiNNaker 2 emulator (spec A4.6): frames, COBS,
CRC-32 and the payload of every message.

Wire format: ``COBS(body) || 0x00``. Body, little-endian: u8 version (1), u8 message type,
u16 sequence number, u16 destination, u16 source, u16 payload length n (≤ 1024), u16 flags
(bit0 ack-requested, bit1 response, bit2 error, bit3 more-fragments), n bytes of payload, then
the CRC-32 (``zlib.crc32``) of everything before it.

Conventions and extensions this module defines where the spec is silent:

- Replies carry the sequence number of their request. A reply may take several frames; they
  use consecutive sequence numbers from the request's on (the host skips them for its next
  request). A message whose payload exceeds 1024 B goes as consecutive frames of the same
  type, all but the last with more-fragments set; the receiver joins their payloads. A
  fragmented *request* is answered fragment by fragment: ACK for each fragment that has
  more-fragments set, the real reply for the last one.
- A reply is zero or more RECORD / SPIKES_OUT messages or "working" ACKs, then one final
  message. ACK status 0 = done, 1 = working (request accepted, its real reply follows; the
  host waits longer). RUN is answered ACK(working), RECORD × 3, DONE.
- NAK = {u16 seq, u8 error} then an optional UTF-8 detail (why; an SRAM refusal carries the
  table, several lines), cut to fit one frame. A damaged frame (COBS, length, CRC) is NAKed
  with code 1 and the sequence number its header shows; codes 3-7 only answer frames that
  passed the CRC.
- RUN's u32 is the number of sample steps (``Chip.run``'s ``steps``); DONE's ``ticks_done``
  the ticks the chip ran. DONE may add {u8 has_loss, f64 loss, f64 energy_j} (29 B).
- RESET scope 1 resets the PE named by the frame's destination.
- INJECT_VALUES payloads are the IEEE float32 bits of the values.
- READ_WEIGHTS' reply 0x86 has LOAD_WEIGHTS' header (with the projection's scale).
- RECORD data = {u8 dtype (``ARRAY_DTYPES``), u32 rows, u32 cols, rows × cols values C order};
  RECORD vars: 0 readout outputs, 1 hidden spikes, 2 cycles per PE per tick.
- STATUS reply 0x8E = {u32 tick, u32 samples, u32 overruns, u32 dropped, u32 saturations,
  u16 n, n × (u16 pe, u32 used, u32 total)}.
- CONFIG TLVs {u8 key, u8 len, value}: with a NETWORK TLV (u8 kind: 1 e-prop, 2 storage) the
  CONFIG loads a network (``Chip.load``) from the field TLVs that follow; without one, its f64
  TLVs set runtime values (``Chip.configure``). Keys in ``CONFIG_KEYS``; ``SHAPE`` repeats
  once per projection in order.
- PING starts a session: the device forgets cached replies and half-received fragments.
- STATE_GET 0x10 → STATE 0x90, STATE_PUT 0x11 → ACK: ``Chip.state_dict`` as {u32 n, n bytes
  of UTF-8 JSON, blobs}: the JSON is the dict with every bytes / numpy value replaced by
  {"$blob": i, "dtype", "shape"} (blob i at its offset in the blob area), tuples by
  {"$tuple": [...]}, configs by {"$config": class name, "fields": {...}}. No pickle.

Decoders raise ``ProtocolError`` (with the NAK code) on any malformed input, never another
exception.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np

from simulators.spinnaker2.formats import FORMATS, payload_bytes

VERSION = 1
MAX_PAYLOAD = 1024
"""Bytes of payload one frame may carry."""
HEADER = struct.Struct("<BBHHHHH")
CRC = struct.Struct("<I")
OVERHEAD = HEADER.size + CRC.size
"""Bytes of a body besides its payload (16)."""
SEQ_MOD = 1 << 16

HOST = 0x8000
ALL_PES = 0xFFFE
CHIP = 0xFFFF

ACK_REQUESTED, RESPONSE, ERROR, MORE = 1, 2, 4, 8
"""Flag bits."""


class MsgType(IntEnum):
    PING = 0x01
    RESET = 0x02
    WRITE_MEM = 0x03
    READ_MEM = 0x04
    LOAD_WEIGHTS = 0x05
    READ_WEIGHTS = 0x06
    CONFIG = 0x07
    RUN = 0x08
    INJECT_SPIKES = 0x09
    INJECT_VALUES = 0x0A
    TARGET = 0x0B
    STATUS = 0x0E
    STATE_GET = 0x10
    STATE_PUT = 0x11
    PONG = 0x81
    MEMORY = 0x84
    WEIGHTS = 0x86
    DONE = 0x88
    SPIKES_OUT = 0x8C
    RECORD = 0x8D
    STATUS_REPLY = 0x8E
    STATE = 0x90
    ACK = 0xF0
    NAK = 0xF1


class NakCode(IntEnum):
    CRC = 1
    UNKNOWN_TYPE = 2
    BAD_LENGTH = 3
    ADDRESS = 4
    SRAM_OVERFLOW = 5
    BUSY = 6
    BAD_FORMAT = 7


class ProtocolError(ValueError):
    """Bytes that are not a valid frame or message; ``code`` is the NAK code that answers
    them, ``seq`` the sequence number the header shows (None if unreadable)."""

    def __init__(self, code: int, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.seq = seq


# --- COBS -------------------------------------------------------------------------------

def cobs_encode(data: bytes) -> bytes:
    """Consistent overhead byte stuffing: ``data`` without zero bytes (≤ 1 + ⌈n/254⌉ B more)."""
    out = bytearray()
    pieces = data.split(b"\x00")
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        start, size = 0, len(piece)
        while size - start >= 254:
            out.append(0xFF)
            out += piece[start:start + 254]
            start += 254
        if index == last and size and start == size:
            break  # a full block ends the data: no implied zero to code
        out.append(size - start + 1)
        out += piece[start:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of ``cobs_encode``; ProtocolError(CRC) for bytes no encoder produces."""
    if b"\x00" in data:
        raise ProtocolError(NakCode.CRC, "damaged frame: a zero byte inside a COBS frame")
    out = bytearray()
    index, size = 0, len(data)
    while index < size:
        code = data[index]
        end = index + code
        if end > size:
            raise ProtocolError(NakCode.CRC, "damaged frame: COBS block runs past the end")
        out += data[index + 1:end]
        index = end
        if code != 0xFF and index < size:
            out.append(0)
    return bytes(out)


# --- frames ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One frame: header fields and a payload of ≤ 1024 B."""

    type: int
    seq: int
    dest: int = CHIP
    src: int = HOST
    flags: int = 0
    payload: bytes = b""

    @property
    def more(self) -> bool:
        return bool(self.flags & MORE)

    def encode(self) -> bytes:
        """The bytes on the wire, the 0x00 delimiter included."""
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} B exceeds {MAX_PAYLOAD} B; "
                             "split it with fragments()")
        body = HEADER.pack(VERSION, self.type, self.seq, self.dest, self.src,
                           len(self.payload), self.flags) + self.payload
        return cobs_encode(body + CRC.pack(zlib.crc32(body))) + b"\x00"


def decode_frame(wire: bytes) -> Frame:
    """The frame in ``wire`` (COBS bytes, the trailing 0x00 optional). Raises ProtocolError:
    code 1 for damage (COBS, too short, CRC), 7 for another version, 3 for a length field
    that disagrees or exceeds 1024."""
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    body = cobs_decode(wire)
    seq = int.from_bytes(body[2:4], "little") if len(body) >= 4 else None
    if len(body) < OVERHEAD:
        raise ProtocolError(NakCode.CRC, f"damaged frame: {len(body)} B is shorter than a "
                            f"header and CRC ({OVERHEAD} B)", seq)
    if zlib.crc32(body[:-4]) != CRC.unpack_from(body, len(body) - 4)[0]:
        raise ProtocolError(NakCode.CRC, "damaged frame: CRC mismatch", seq)
    version, kind, seq, dest, src, length, flags = HEADER.unpack_from(body)
    if version != VERSION:
        raise ProtocolError(NakCode.BAD_FORMAT, f"protocol version {version}, expected "
                            f"{VERSION}", seq)
    if length > MAX_PAYLOAD:
        raise ProtocolError(NakCode.BAD_LENGTH, f"payload of {length} B exceeds "
                            f"{MAX_PAYLOAD} B", seq)
    if length != len(body) - OVERHEAD:
        raise ProtocolError(NakCode.BAD_LENGTH, f"length field says {length} B, frame holds "
                            f"{len(body) - OVERHEAD} B", seq)
    return Frame(kind, seq, dest, src, flags, body[HEADER.size:-4])


def fragments(kind: int, seq: int, payload: bytes, dest: int = CHIP, src: int = HOST,
              flags: int = 0) -> list[Frame]:
    """``payload`` as frames of ≤ 1024 B with consecutive sequence numbers from ``seq``, all
    but the last with more-fragments set (one frame for an empty payload)."""
    pieces = [payload[at:at + MAX_PAYLOAD] for at in range(0, len(payload), MAX_PAYLOAD)]
    pieces = pieces or [b""]
    return [Frame(kind, (seq + index) % SEQ_MOD, dest, src,
                  flags | (MORE if index < len(pieces) - 1 else 0), piece)
            for index, piece in enumerate(pieces)]


def join(frames: list[Frame]) -> list[tuple[int, bytes]]:
    """Frames in sequence order → (type, payload) messages, fragments joined. ProtocolError
    (7) when a fragment's type differs from its message's or the last frame has
    more-fragments set."""
    messages: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    kind = -1
    for frame in frames:
        if parts and frame.type != kind:
            raise ProtocolError(NakCode.BAD_FORMAT, f"fragment of type {frame.type:#04x} "
                                f"inside a message of type {kind:#04x}", frame.seq)
        kind = frame.type
        parts.append(frame.payload)
        if not frame.more:
            messages.append((kind, b"".join(parts)))
            parts = []
    if parts:
        raise ProtocolError(NakCode.BAD_FORMAT, "message ends inside a fragment")
    return messages


# --- payload codecs ----------------------------------------------------------------------

def _unpack(layout: struct.Struct, payload: bytes, what: str, exact: bool = True) -> tuple:
    if len(payload) < layout.size or (exact and len(payload) != layout.size):
        raise ProtocolError(NakCode.BAD_LENGTH, f"{what} takes {layout.size} B"
                            f"{'' if exact else ' or more'}, got {len(payload)} B")
    return layout.unpack_from(payload)


class Message:
    """A payload codec: ``encode() -> bytes``, ``decode(payload) -> message``."""

    TYPE: ClassVar[int]

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes) -> Message:
        raise NotImplementedError


@dataclass(frozen=True)
class Empty(Message):
    """A message without payload: STATUS, STATE_GET."""

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> Empty:
        if payload:
            raise ProtocolError(NakCode.BAD_LENGTH, f"expected no payload, got {len(payload)} B")
        return cls()


@dataclass(frozen=True)
class Ping(Message):
    nonce: int
    TYPE: ClassVar[int] = MsgType.PING
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<I")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.nonce)

    @classmethod
    def decode(cls, payload: bytes) -> Ping:
        return cls(*_unpack(cls.LAYOUT, payload, "PING"))


@dataclass(frozen=True)
class Pong(Message):
    """Answer to PING: the nonce, PEs, protocol version, SRAM bytes per PE."""

    nonce: int
    n_pe: int
    proto: int
    sram_bytes: int
    TYPE: ClassVar[int] = MsgType.PONG
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IHHI")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.nonce, self.n_pe, self.proto, self.sram_bytes)

    @classmethod
    def decode(cls, payload: bytes) -> Pong:
        return cls(*_unpack(cls.LAYOUT, payload, "PONG"))


@dataclass(frozen=True)
class Reset(Message):
    """scope 0 chip, 1 the PE of the frame's destination, 2 learning state only."""

    scope: int
    TYPE: ClassVar[int] = MsgType.RESET
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.scope)

    @classmethod
    def decode(cls, payload: bytes) -> Reset:
        return cls(*_unpack(cls.LAYOUT, payload, "RESET"))


@dataclass(frozen=True)
class Memory(Message):
    """WRITE_MEM (0x03) and READ_MEM's reply (0x84): PE-local byte address and the data."""

    address: int
    data: bytes
    TYPE: ClassVar[int] = MsgType.WRITE_MEM
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<I")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.address) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Memory:
        (address,) = _unpack(cls.LAYOUT, payload, "memory header", exact=False)
        return cls(address, payload[cls.LAYOUT.size:])


@dataclass(frozen=True)
class ReadMem(Message):
    address: int
    nbytes: int
    TYPE: ClassVar[int] = MsgType.READ_MEM
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IH")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.address, self.nbytes)

    @classmethod
    def decode(cls, payload: bytes) -> ReadMem:
        return cls(*_unpack(cls.LAYOUT, payload, "READ_MEM"))


@dataclass(frozen=True)
class Weights(Message):
    """LOAD_WEIGHTS (0x05) and READ_WEIGHTS' reply (0x86): ``count`` weights of projection
    ``projection`` from flat index ``first`` in ``fmt``, with the projection's scale (f32)."""

    projection: int
    fmt: str
    scale: float
    first: int
    count: int
    values: bytes
    TYPE: ClassVar[int] = MsgType.LOAD_WEIGHTS
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HBBfIH")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.projection, FORMATS.index(self.fmt), 0, self.scale,
                                self.first, self.count) + self.values

    @classmethod
    def decode(cls, payload: bytes) -> Weights:
        projection, code, _, scale, first, count = _unpack(cls.LAYOUT, payload,
                                                           "weights header", exact=False)
        fmt = _format(code)
        values = payload[cls.LAYOUT.size:]
        if len(values) != payload_bytes(count, fmt):
            raise ProtocolError(NakCode.BAD_LENGTH, f"{count} weights in {fmt} take "
                                f"{payload_bytes(count, fmt)} B, got {len(values)} B")
        return cls(projection, fmt, scale, first, count, values)


@dataclass(frozen=True)
class ReadWeights(Message):
    projection: int
    fmt: str
    first: int
    count: int
    TYPE: ClassVar[int] = MsgType.READ_WEIGHTS
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HBIH")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.projection, FORMATS.index(self.fmt), self.first,
                                self.count)

    @classmethod
    def decode(cls, payload: bytes) -> ReadWeights:
        projection, code, first, count = _unpack(cls.LAYOUT, payload, "READ_WEIGHTS")
        return cls(projection, _format(code), first, count)


def _format(code: int) -> str:
    if code >= len(FORMATS):
        raise ProtocolError(NakCode.BAD_FORMAT, f"weight format code {code} (known: 0..3)")
    return FORMATS[code]


NETWORK, SHAPE = 0x01, 0x31
"""CONFIG keys: the network kind (u8: 1 e-prop, 2 storage); one (u32 rows, u32 cols) per
storage projection, in order."""
NETWORK_KINDS = {1: "eprop", 2: "storage"}
CONFIG_KEYS: dict[int, tuple[str, str]] = {
    0x10: ("inputs", "u32"), 0x11: ("hidden", "u32"), 0x12: ("outputs", "u32"),
    0x13: ("per_worker", "u32"), 0x14: ("tau_m", "f64"), 0x15: ("tau_a", "f64"),
    0x16: ("tau_out", "f64"), 0x17: ("v_th", "f64"), 0x18: ("beta", "f64"),
    0x19: ("gamma", "f64"), 0x1A: ("width", "f64"), 0x1B: ("side_width", "f64"),
    0x1C: ("side_height", "f64"), 0x1D: ("learning_rate", "f64"), 0x1E: ("beta1", "f64"),
    0x1F: ("beta2", "f64"), 0x20: ("epsilon", "f64"), 0x21: ("l2", "f64"),
    0x22: ("weight_format", "str"), 0x23: ("training", "bool"), 0x24: ("ignore_first", "u32"),
    0x25: ("clock_hz", "f64"), 0x26: ("tick_s", "f64"),
}
"""CONFIG key → (field of EpropConfig / StorageConfig / Chip.configure, value type); f64 as
IEEE double, u32 little-endian, bool one byte, str UTF-8."""
_KEY_OF = {name: key for key, (name, _) in CONFIG_KEYS.items()}
_VALUE = {"u32": struct.Struct("<I"), "f64": struct.Struct("<d"), "bool": struct.Struct("<?")}
_SHAPE = struct.Struct("<II")


@dataclass(frozen=True)
class Config(Message):
    """CONFIG: ``network`` None (runtime values) or "eprop" / "storage" (load that network);
    ``fields`` its values by name; ``shapes`` the storage projections' (rows, cols)."""

    network: str | None
    fields: dict[str, Any]
    shapes: tuple[tuple[int, int], ...] = ()
    TYPE: ClassVar[int] = MsgType.CONFIG

    def encode(self) -> bytes:
        out = bytearray()
        if self.network is not None:
            kind = {name: key for key, name in NETWORK_KINDS.items()}[self.network]
            out += bytes([NETWORK, 1, kind])
        for name, value in self.fields.items():
            if name not in _KEY_OF:
                raise ValueError(f"CONFIG has no key for {name!r} (known: "
                                 f"{', '.join(_KEY_OF)})")
            key = _KEY_OF[name]
            kind = CONFIG_KEYS[key][1]
            cast = {"str": str, "f64": float, "u32": int, "bool": bool}[kind]
            data = (cast(value).encode() if kind == "str" else _VALUE[kind].pack(cast(value)))
            if len(data) > 255:
                raise ValueError(f"CONFIG value of {name!r} exceeds 255 B")
            out += bytes([key, len(data)]) + data
        for shape in self.shapes:
            out += bytes([SHAPE, _SHAPE.size]) + _SHAPE.pack(*shape)
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> Config:
        network, fields, shapes = None, {}, []
        index = 0
        while index < len(payload):
            if index + 2 > len(payload) or index + 2 + payload[index + 1] > len(payload):
                raise ProtocolError(NakCode.BAD_LENGTH, f"CONFIG TLV at byte {index} runs "
                                    "past the payload")
            key, size = payload[index], payload[index + 1]
            value = payload[index + 2:index + 2 + size]
            index += 2 + size
            if key == NETWORK:
                if size != 1 or value[0] not in NETWORK_KINDS:
                    raise ProtocolError(NakCode.BAD_FORMAT, "CONFIG network kind must be "
                                        "one byte, 1 (e-prop) or 2 (storage)")
                network = NETWORK_KINDS[value[0]]
            elif key == SHAPE:
                shapes.append(_unpack(_SHAPE, value, "CONFIG shape"))
            elif key in CONFIG_KEYS:
                name, kind = CONFIG_KEYS[key]
                if kind == "str":
                    try:
                        fields[name] = value.decode()
                    except UnicodeDecodeError:
                        raise ProtocolError(NakCode.BAD_FORMAT,
                                            f"CONFIG {name} is not UTF-8") from None
                else:
                    fields[name] = _unpack(_VALUE[kind], value, f"CONFIG {name}")[0]
            else:
                raise ProtocolError(NakCode.BAD_FORMAT, f"unknown CONFIG key {key:#04x}")
        return cls(network, fields, tuple(shapes))


@dataclass(frozen=True)
class Run(Message):
    """RUN: ``steps`` sample steps in ``mode`` (0 infer, 1 train, 2 step-and-report)."""

    steps: int
    mode: int
    TYPE: ClassVar[int] = MsgType.RUN
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IB")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.steps, self.mode)

    @classmethod
    def decode(cls, payload: bytes) -> Run:
        return cls(*_unpack(cls.LAYOUT, payload, "RUN"))


@dataclass(frozen=True)
class Done(Message):
    """DONE: ticks run, overrun PE-ticks, dropped packets; the sample's loss (train mode) and
    the energy estimate (J)."""

    ticks: int
    overruns: int
    dropped: int
    loss: float | None = None
    energy_j: float = 0.0
    TYPE: ClassVar[int] = MsgType.DONE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<III")
    EXTRA: ClassVar[struct.Struct] = struct.Struct("<Bdd")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.ticks, self.overruns, self.dropped) + self.EXTRA.pack(
            self.loss is not None, 0.0 if self.loss is None else self.loss, self.energy_j)

    @classmethod
    def decode(cls, payload: bytes) -> Done:
        if len(payload) == cls.LAYOUT.size:
            return cls(*cls.LAYOUT.unpack(payload))
        fixed = _unpack(cls.LAYOUT, payload, "DONE", exact=False)
        has_loss, loss, energy = _unpack(cls.EXTRA, payload[cls.LAYOUT.size:], "DONE extension")
        return cls(*fixed, loss if has_loss else None, energy)


_TICK_N = struct.Struct("<IH")


@dataclass(frozen=True)
class Spikes(Message):
    """INJECT_SPIKES (0x09) and SPIKES_OUT (0x8C): a tick (step) and spike keys (u32)."""

    tick: int
    keys: tuple[int, ...]
    TYPE: ClassVar[int] = MsgType.INJECT_SPIKES

    def encode(self) -> bytes:
        return _TICK_N.pack(self.tick, len(self.keys)) + np.asarray(self.keys, "<u4").tobytes()

    @classmethod
    def decode(cls, payload: bytes) -> Spikes:
        tick, count = _unpack(_TICK_N, payload, "spikes header", exact=False)
        if len(payload) != _TICK_N.size + 4 * count:
            raise ProtocolError(NakCode.BAD_LENGTH, f"{count} keys take {4 * count} B, got "
                                f"{len(payload) - _TICK_N.size} B")
        keys = np.frombuffer(payload, "<u4", offset=_TICK_N.size)
        return cls(tick, tuple(int(key) for key in keys))


@dataclass(frozen=True)
class Values(Message):
    """INJECT_VALUES: a step and (input key, value) pairs, values sent as float32."""

    tick: int
    pairs: tuple[tuple[int, float], ...]
    TYPE: ClassVar[int] = MsgType.INJECT_VALUES

    def encode(self) -> bytes:
        table = np.zeros(len(self.pairs), dtype=[("key", "<u4"), ("value", "<f4")])
        if self.pairs:
            keys, values = zip(*self.pairs)
            table["key"], table["value"] = keys, values
        return _TICK_N.pack(self.tick, len(self.pairs)) + table.tobytes()

    @classmethod
    def decode(cls, payload: bytes) -> Values:
        tick, count = _unpack(_TICK_N, payload, "values header", exact=False)
        if len(payload) != _TICK_N.size + 8 * count:
            raise ProtocolError(NakCode.BAD_LENGTH, f"{count} pairs take {8 * count} B, got "
                                f"{len(payload) - _TICK_N.size} B")
        table = np.frombuffer(payload, [("key", "<u4"), ("value", "<f4")], offset=_TICK_N.size)
        return cls(tick, tuple(zip(table["key"].tolist(), table["value"].tolist())))


@dataclass(frozen=True)
class Target(Message):
    sample_id: int
    label: int
    TYPE: ClassVar[int] = MsgType.TARGET
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IH")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.sample_id, self.label)

    @classmethod
    def decode(cls, payload: bytes) -> Target:
        return cls(*_unpack(cls.LAYOUT, payload, "TARGET"))


ARRAY_DTYPES = ("u1", "i4", "u4", "f4", "f8", "i8", "u8")
"""RECORD dtype codes 0..6 (kind and bytes; values little-endian on the wire)."""
RECORD_OUTPUTS, RECORD_SPIKES, RECORD_CYCLES = 0, 1, 2
_RECORD = struct.Struct("<HHIBII")


@dataclass(frozen=True, eq=False)
class Record(Message):
    """RECORD: variable ``var`` of PE ``pe`` from tick ``tick`` on, a 2-D array."""

    var: int
    pe: int
    tick: int
    array: np.ndarray
    TYPE: ClassVar[int] = MsgType.RECORD

    def encode(self) -> bytes:
        array = np.asarray(self.array)
        kind = f"{array.dtype.kind}{array.dtype.itemsize}"
        if kind not in ARRAY_DTYPES or array.ndim != 2:
            raise ValueError(f"RECORD carries 2-D arrays of {ARRAY_DTYPES}, got "
                             f"{array.ndim}-D {array.dtype}")
        return _RECORD.pack(self.var, self.pe, self.tick, ARRAY_DTYPES.index(kind),
                            *array.shape) + np.ascontiguousarray(array, "<" + kind).tobytes()

    @classmethod
    def decode(cls, payload: bytes) -> Record:
        var, pe, tick, code, rows, cols = _unpack(_RECORD, payload, "RECORD header",
                                                  exact=False)
        if code >= len(ARRAY_DTYPES):
            raise ProtocolError(NakCode.BAD_FORMAT, f"RECORD dtype code {code} (known: 0..6)")
        dtype = np.dtype("<" + ARRAY_DTYPES[code])
        if len(payload) - _RECORD.size != rows * cols * dtype.itemsize:
            raise ProtocolError(NakCode.BAD_LENGTH, f"RECORD of {rows}x{cols} {dtype} takes "
                                f"{rows * cols * dtype.itemsize} B, got "
                                f"{len(payload) - _RECORD.size} B")
        array = np.frombuffer(payload, dtype, offset=_RECORD.size).reshape(rows, cols)
        return cls(var, pe, tick, array.astype(ARRAY_DTYPES[code]))


_STATUS = struct.Struct("<IIIIIH")
_SRAM_ROW = struct.Struct("<HII")


@dataclass(frozen=True)
class Status(Message):
    """STATUS reply: counters and each PE's (pe, used, total) SRAM bytes."""

    tick: int
    samples: int
    overruns: int
    dropped: int
    saturations: int
    sram: tuple[tuple[int, int, int], ...]
    TYPE: ClassVar[int] = MsgType.STATUS_REPLY

    def encode(self) -> bytes:
        return _STATUS.pack(self.tick, self.samples, self.overruns, self.dropped,
                            self.saturations, len(self.sram)) + b"".join(
            _SRAM_ROW.pack(*row) for row in self.sram)

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        *counters, count = _unpack(_STATUS, payload, "STATUS reply", exact=False)
        if len(payload) != _STATUS.size + count * _SRAM_ROW.size:
            raise ProtocolError(NakCode.BAD_LENGTH, f"STATUS with {count} PEs takes "
                                f"{_STATUS.size + count * _SRAM_ROW.size} B, got "
                                f"{len(payload)} B")
        rows = tuple(_SRAM_ROW.unpack_from(payload, _STATUS.size + index * _SRAM_ROW.size)
                     for index in range(count))
        return cls(*counters, rows)


@dataclass(frozen=True)
class Ack(Message):
    """ACK of request ``seq``; status 0 done, 1 working (its real reply follows)."""

    seq: int
    status: int = 0
    TYPE: ClassVar[int] = MsgType.ACK
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HB")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.seq, self.status)

    @classmethod
    def decode(cls, payload: bytes) -> Ack:
        return cls(*_unpack(cls.LAYOUT, payload, "ACK"))


DONE_STATUS, WORKING = 0, 1


@dataclass(frozen=True)
class Nak(Message):
    """NAK of request ``seq`` with an error code and a UTF-8 detail (cut to fit a frame)."""

    seq: int
    error: int
    detail: str = ""
    TYPE: ClassVar[int] = MsgType.NAK
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HB")

    def encode(self) -> bytes:
        text = self.detail.encode()[:MAX_PAYLOAD - self.LAYOUT.size]
        return self.LAYOUT.pack(self.seq, self.error) + text.decode(errors="ignore").encode()

    @classmethod
    def decode(cls, payload: bytes) -> Nak:
        seq, error = _unpack(cls.LAYOUT, payload, "NAK", exact=False)
        return cls(seq, error, payload[cls.LAYOUT.size:].decode(errors="replace"))


# --- state dicts -------------------------------------------------------------------------

_LENGTH = struct.Struct("<I")


def encode_state(state: dict[str, Any]) -> bytes:
    """A state dict (str keys; values: None, bool, int, float, str, bytes, numpy arrays and
    scalars, lists, tuples, dicts, dataclass configs) as {u32 n, JSON, blobs}."""
    blobs: list[bytes] = []
    offset = 0

    def blob(data: bytes, dtype: str | None, shape: list[int] | None) -> dict[str, Any]:
        nonlocal offset
        blobs.append(data)
        entry = {"$blob": offset, "size": len(data), "dtype": dtype, "shape": shape}
        offset += len(data)
        return entry

    def tree(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return blob(bytes(value), None, None)
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            return blob(array.tobytes(), array.dtype.str, list(array.shape)) | (
                {"scalar": True} if isinstance(value, np.generic) else {})
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"$config": type(value).__name__,
                    "fields": {field.name: tree(getattr(value, field.name))
                               for field in dataclasses.fields(value)}}
        if isinstance(value, tuple):
            return {"$tuple": [tree(item) for item in value]}
        if isinstance(value, list):
            return [tree(item) for item in value]
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                return {"$dict": [[tree(key), tree(item)] for key, item in value.items()]}
            return {key: tree(item) for key, item in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ValueError(f"state value of type {type(value).__name__} has no wire form")

    text = json.dumps(tree(state), allow_nan=True).encode()
    return _LENGTH.pack(len(text)) + text + b"".join(blobs)


def decode_state(payload: bytes, configs: dict[str, type]) -> dict[str, Any]:
    """Inverse of ``encode_state``; ``configs`` names the dataclasses a "$config" may be."""
    (size,) = _unpack(_LENGTH, payload, "state header", exact=False)
    if len(payload) < _LENGTH.size + size:
        raise ProtocolError(NakCode.BAD_LENGTH, f"state JSON of {size} B runs past the payload")
    try:
        document = json.loads(payload[_LENGTH.size:_LENGTH.size + size])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ProtocolError(NakCode.BAD_FORMAT, f"state JSON unreadable: {error}") from None
    area = payload[_LENGTH.size + size:]

    def value(node: Any) -> Any:
        if isinstance(node, list):
            return [value(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$blob" in node:
            return blob(node)
        if "$tuple" in node:
            return tuple(value(item) for item in _list(node["$tuple"]))
        if "$dict" in node:
            return {_hashable(value(pair[0])): value(pair[1]) for pair in _pairs(node["$dict"])}
        if "$config" in node:
            kind = configs.get(node["$config"]) if isinstance(node["$config"], str) else None
            if kind is None or not isinstance(node.get("fields"), dict):
                raise ProtocolError(NakCode.BAD_FORMAT, f"unknown state config "
                                    f"{node['$config']!r}")
            try:
                return kind(**{key: value(item) for key, item in node["fields"].items()})
            except (TypeError, ValueError) as error:
                raise ProtocolError(NakCode.BAD_FORMAT, f"state config: {error}") from None
        return {key: value(item) for key, item in node.items()}

    def blob(node: dict[str, Any]) -> Any:
        start, size = node.get("$blob"), node.get("size")
        if not (isinstance(start, int) and isinstance(size, int) and 0 <= start
                and 0 <= size and start + size <= len(area)):
            raise ProtocolError(NakCode.BAD_LENGTH, "state blob outside the payload")
        data = area[start:start + size]
        if node.get("dtype") is None:
            return data
        try:
            dtype = np.dtype(node["dtype"])
            if dtype.hasobject:
                raise TypeError("object arrays are not state")
            array = np.frombuffer(data, dtype).reshape(node["shape"]).copy()
        except (TypeError, ValueError) as error:
            raise ProtocolError(NakCode.BAD_FORMAT, f"state array: {error}") from None
        return array[()] if node.get("scalar") else array

    return value(document)


def _list(node: Any) -> list:
    if not isinstance(node, list):
        raise ProtocolError(NakCode.BAD_FORMAT, "state JSON: expected a list")
    return node


def _pairs(node: Any) -> list:
    pairs = _list(node)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise ProtocolError(NakCode.BAD_FORMAT, "state JSON: expected [key, value] pairs")
    return pairs


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise ProtocolError(NakCode.BAD_FORMAT, "state JSON: unhashable dict key") from None
    return key


REQUESTS: dict[int, type[Message]] = {
    MsgType.PING: Ping, MsgType.RESET: Reset, MsgType.WRITE_MEM: Memory,
    MsgType.READ_MEM: ReadMem, MsgType.LOAD_WEIGHTS: Weights,
    MsgType.READ_WEIGHTS: ReadWeights, MsgType.CONFIG: Config, MsgType.RUN: Run,
    MsgType.INJECT_SPIKES: Spikes, MsgType.INJECT_VALUES: Values, MsgType.TARGET: Target,
    MsgType.STATUS: Empty, MsgType.STATE_GET: Empty,
}
"""Request type → payload codec (STATE_PUT's payload is an ``encode_state`` blob)."""
REPLIES: dict[int, type[Message]] = {
    MsgType.PONG: Pong, MsgType.MEMORY: Memory, MsgType.WEIGHTS: Weights,
    MsgType.DONE: Done, MsgType.SPIKES_OUT: Spikes, MsgType.RECORD: Record,
    MsgType.STATUS_REPLY: Status, MsgType.ACK: Ack, MsgType.NAK: Nak,
}
"""Reply type → payload codec (STATE's payload is an ``encode_state`` blob)."""
