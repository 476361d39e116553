"""The host side of the SpiNNaker 2 serial link (spec A4.6): a reliable frame exchange over
any port pyserial opens, and ``RemoteChip``, the chip's API over that link.

``serial.serial_for_url`` opens the port, so a device path (``/dev/ttyUSB0``), a
pseudo-terminal (``/dev/pts/N``) and ``socket://127.0.0.1:PORT`` work alike.

Reliability (``Link``):
- Control messages are stop-and-wait: one request, its whole reply, then the next; a reply
  that does not come within ``timeout`` (0.5 s) is asked for again, ``retries`` (3) times.
- Bulk transfers (weights, memory, injected inputs) keep up to ``window`` (8) frames in
  flight. A frame is sent again when its reply times out, when the device NAKs it with code 1
  (damaged), or when a frame sent after it is answered first (the byte stream keeps order,
  so its request or reply was lost).
- The device executes a sequence number once and answers a repeat with the reply it cached;
  replies to no outstanding request (duplicates, late copies) are ignored.
- A request the device refuses (NAK 2..7) raises ``ChipError`` with that code and the
  device's detail, like the in-process chip. ``LinkError`` (one line: what failed, where, what
  to do) when retries are spent or the device process is gone.
"""

from __future__ import annotations

import dataclasses
import random
import select
import time
from dataclasses import dataclass, field
from typing import Any, Self

import serial

from simulators.spinnaker2.chip import ChipError, EpropConfig, RunResult, StorageConfig
from simulators.spinnaker2.formats import payload_bytes
from simulators.spinnaker2.protocol import (
    ACK_REQUESTED,
    CHIP,
    HOST,
    MAX_PAYLOAD,
    RECORD_CYCLES,
    RECORD_OUTPUTS,
    RECORD_SPIKES,
    RESPONSE,
    SEQ_MOD,
    WORKING,
    Config,
    Done,
    Frame,
    Memory,
    MsgType,
    Nak,
    NakCode,
    Ping,
    Pong,
    ProtocolError,
    ReadMem,
    ReadWeights,
    Record,
    Reset,
    Run,
    Spikes,
    Status,
    Target,
    Values,
    Weights,
    decode_frame,
    decode_state,
    encode_state,
    fragments,
    join,
)

MAX_REPLY_FRAMES = 1 << 15
"""Frames one reply may take (32 MiB of payload)."""
_STREAMED = (MsgType.RECORD, MsgType.SPIKES_OUT)


class LinkError(ConnectionError):
    """The link failed: no reply after the retries, or the device process is gone."""


@dataclass
class LinkStats:
    """Counters of a link since it opened."""

    frames_sent: int = 0
    retransmits: int = 0
    timeouts: int = 0
    crc_naks: int = 0
    """NAKs with code 1 (the device received a damaged frame)."""
    damaged: int = 0
    """Received frames that failed COBS, length or CRC checks (ignored)."""
    duplicates: int = 0
    """Replies to no outstanding request (ignored)."""


@dataclass
class _Pending:
    index: int
    frame: Frame
    wire: bytes
    order: int = 0
    deadline: float = 0.0
    sends: int = 0


@dataclass
class Link:
    """Frames to and from a device on ``url`` (see the module docstring).

    Args:
        url: what ``serial.serial_for_url`` opens.
        timeout: seconds to wait for a reply before sending again.
        retries: resends of one frame before ``LinkError``.
        window: frames in flight in bulk transfers (1..8 by the spec).
        busy_timeout: seconds to wait after the device said it is working (RUN, CONFIG).
        baudrate: for real serial ports (pty and socket ignore it).
    """

    url: str
    timeout: float = 0.5
    retries: int = 3
    window: int = 8
    busy_timeout: float = 600.0
    baudrate: int = 3_000_000
    stats: LinkStats = field(default_factory=LinkStats)

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 8:
            raise ValueError(f"window must be 1..8 frames, got {self.window}")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError(f"timeout must be > 0 s and retries >= 0, got {self.timeout}, "
                             f"{self.retries}")
        try:
            self.port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0)
        except (serial.SerialException, ValueError, OSError) as error:
            raise LinkError(f"cannot open the device link {self.url!r} ({error}); check the "
                            "path or URL and that the device server runs") from None
        try:
            self._fileno: int | None = self.port.fileno()
        except (AttributeError, OSError, serial.SerialException):
            self._fileno = None  # loop:// has none: poll
        self._buffer = bytearray()
        self._seq = random.randrange(SEQ_MOD)  # unlike any stale reply of an earlier session
        self._order = 0
        try:
            self.port.reset_input_buffer()
        except (serial.SerialException, OSError, AttributeError):
            pass  # ports without an input buffer to drop
        self._write(b"\x00")  # ends any partial frame an earlier session left

    def close(self) -> None:
        self.port.close()

    # --- bytes -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as error:
            raise self._gone(error) from None

    def _receive(self, deadline: float) -> list[bytes]:
        """Complete frames (COBS bytes) received by ``deadline`` (monotonic s); [] if none."""
        while True:
            if 0 in self._buffer:
                *frames, rest = self._buffer.split(b"\x00")
                self._buffer = rest
                return [bytes(frame) for frame in frames if frame]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                if self._fileno is None:
                    time.sleep(min(remaining, 0.001))
                else:
                    select.select([self._fileno], [], [], remaining)
                self._buffer += self.port.read(1 << 16)
            except (serial.SerialException, OSError) as error:
                raise self._gone(error) from None

    def _gone(self, error: Exception) -> LinkError:
        return LinkError(f"the device on {self.url} is gone ({error}); restart the device "
                         "server and reconnect")

    def _decode(self, wire: bytes) -> Frame | None:
        try:
            frame = decode_frame(wire)
        except ProtocolError:
            self.stats.damaged += 1
            return None
        return frame if frame.flags & RESPONSE else None

    def _take(self, count: int) -> int:
        seq = self._seq
        self._seq = (self._seq + count) % SEQ_MOD
        return seq

    def _send(self, pending: _Pending, batch: bytearray | None = None) -> None:
        """Send a frame (again), or add it to ``batch`` for one write later."""
        if pending.sends > self.retries:
            raise LinkError(f"no valid reply from the device on {self.url} to "
                            f"{_name(pending.frame.type)} (seq {pending.frame.seq}) after "
                            f"{pending.sends} tries of {self.timeout:g} s; check that the "
                            "server runs and the line is sound, or raise timeout/retries")
        if batch is None:
            self._write(pending.wire)
        else:
            batch += pending.wire
        self.stats.frames_sent += 1
        self.stats.retransmits += pending.sends > 0
        pending.sends += 1
        pending.order = self._order
        self._order += 1
        pending.deadline = time.monotonic() + self.timeout

    # --- exchanges -------------------------------------------------------------------------

    def call(self, kind: int, payload: bytes = b"", dest: int = CHIP) -> list[tuple[int, bytes]]:
        """A control request (fragmented if over 1024 B) → its reply's messages (type,
        payload), "working" ACKs left out. Raises ChipError on a NAK, LinkError."""
        frames = fragments(kind, self._seq, payload, dest, HOST, ACK_REQUESTED)
        self._take(len(frames))
        if len(frames) > 1:
            self._await(frames[0])
            self.transfer(frames[1:-1])
        return self._await(frames[-1])

    def request(self, requests: list[tuple[int, bytes, int]]) -> list[Frame]:
        """Bulk: (type, payload ≤ 1024 B, dest) requests with one-frame replies, up to
        ``window`` in flight → the reply frames in request order."""
        seq = self._take(len(requests))
        return self.transfer([Frame(kind, (seq + index) % SEQ_MOD, dest, HOST, ACK_REQUESTED,
                                    payload)
                              for index, (kind, payload, dest) in enumerate(requests)])

    def transfer(self, frames: list[Frame]) -> list[Frame]:
        """Send frames (sequence numbers taken) with up to ``window`` in flight → their
        one-frame replies in order."""
        replies: list[Frame | None] = [None] * len(frames)
        pending: dict[int, _Pending] = {}
        sent = 0
        while sent < len(frames) or pending:
            batch = bytearray()
            while sent < len(frames) and len(pending) < self.window:
                frame = frames[sent]
                pending[frame.seq] = _Pending(sent, frame, frame.encode())
                self._send(pending[frame.seq], batch)
                sent += 1
            if batch:
                self._write(bytes(batch))
            for wire in self._receive(min(item.deadline for item in pending.values())):
                reply = self._decode(wire)
                if reply is None:
                    continue
                item = pending.get(reply.seq)
                if item is None:
                    self.stats.duplicates += 1
                    continue
                self._resend_older(pending, item)
                if reply.type == MsgType.NAK and self._nak(reply).error == NakCode.CRC:
                    self.stats.crc_naks += 1
                    self._send(item)
                    continue
                if reply.type == MsgType.NAK:
                    raise _refusal(self._nak(reply))
                replies[item.index] = reply
                del pending[reply.seq]
            now = time.monotonic()
            for item in pending.values():
                if item.deadline <= now:
                    self.stats.timeouts += 1
                    self._send(item)
        return replies  # type: ignore[return-value]  # every slot filled

    def _resend_older(self, pending: dict[int, _Pending], answered: _Pending) -> None:
        """Frames sent before the one answered got no reply: their request or reply was lost."""
        for item in sorted(pending.values(), key=lambda item: item.order):
            if item.order < answered.order:
                self._send(item)

    def _nak(self, frame: Frame) -> Nak:
        try:
            return Nak.decode(frame.payload)
        except ProtocolError:
            return Nak(frame.seq, NakCode.CRC)

    def _await(self, frame: Frame) -> list[tuple[int, bytes]]:
        """Stop-and-wait: send ``frame``, collect its reply (consecutive sequence numbers)."""
        item = _Pending(0, frame, frame.encode())
        self._send(item)
        received: dict[int, Frame] = {}
        while True:
            wires = self._receive(item.deadline)
            if not wires:
                self.stats.timeouts += 1
                self._send(item)
                continue
            for wire in wires:
                reply = self._decode(wire)
                if reply is None:
                    continue
                offset = (reply.seq - frame.seq) % SEQ_MOD
                if offset >= MAX_REPLY_FRAMES:
                    self.stats.duplicates += 1
                    continue
                if offset == 0 and reply.type == MsgType.NAK and \
                        self._nak(reply).error == NakCode.CRC:
                    self.stats.crc_naks += 1
                    self._send(item)
                    continue
                received[offset] = reply
                working = reply.type == MsgType.ACK and reply.payload[2:3] == bytes([WORKING])
                item.deadline = time.monotonic() + (self.busy_timeout if working
                                                    else self.timeout)
            reply_frames = _complete(received)
            if reply_frames is not None:
                self._seq = (frame.seq + len(reply_frames)) % SEQ_MOD  # replies take seqs
                messages = [(kind, payload) for kind, payload in join(reply_frames)
                            if not _is_working(kind, payload)]
                if messages[-1][0] == MsgType.NAK:
                    raise _refusal(Nak.decode(messages[-1][1]))
                return messages


def _complete(received: dict[int, Frame]) -> list[Frame] | None:
    """The reply's frames from offset 0 up to its final message, or None if incomplete."""
    frames: list[Frame] = []
    start = 0
    while len(frames) in received:
        frame = received[len(frames)]
        frames.append(frame)
        if frame.more:
            continue
        message = b"".join(part.payload for part in frames[start:])
        if frame.type not in _STREAMED and not _is_working(frame.type, message):
            return frames
        start = len(frames)
    return None


def _is_working(kind: int, payload: bytes) -> bool:
    return kind == MsgType.ACK and len(payload) == 3 and payload[2] == WORKING


def _name(kind: int) -> str:
    try:
        return MsgType(kind).name
    except ValueError:
        return f"type {kind:#04x}"


def _refusal(nak: Nak) -> ChipError:
    """The device's NAK as the ChipError the in-process chip raises (its message the
    device's detail)."""
    try:
        reason = NakCode(nak.error).name.lower().replace("_", " ")
    except ValueError:
        reason = f"error {nak.error}"
    return ChipError(nak.error, nak.detail or f"the device refused the request ({reason})")

_KEYS_PER_FRAME = (MAX_PAYLOAD - 6) // 4
_PAIRS_PER_FRAME = (MAX_PAYLOAD - 6) // 8
CONFIGS: dict[str, type] = {"EpropConfig": EpropConfig, "StorageConfig": StorageConfig}
"""Config classes a state dict may hold."""


class RemoteChip:
    """A chip behind a serial link, with ``Chip``'s methods (spec A4.6 messages).

    Injected inputs and targets are queued and sent, pipelined, before the next other call,
    so a refusal of one of them raises there. Errors: ``ChipError`` (the device refused; same
    codes as the in-process chip), ``LinkError``.

    Args:
        url: where the device listens (``socket://127.0.0.1:PORT``, ``/dev/pts/N``, ...).
        timeout, retries, window, busy_timeout: see ``Link``.
        max_payload: payload bytes per bulk frame (32..1024; small frames suit noisy lines).
    """

    def __init__(self, url: str, timeout: float = 0.5, retries: int = 3, window: int = 8,
                 busy_timeout: float = 600.0, max_payload: int = MAX_PAYLOAD) -> None:
        if not 32 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be 32..{MAX_PAYLOAD} B, got {max_payload}")
        self.link = Link(url, timeout, retries, window, busy_timeout)
        self.max_payload = max_payload
        self._queued: list[tuple[int, bytes, int]] = []
        try:
            pong = self.ping()
        except BaseException:
            self.link.close()
            raise
        self.n_pe, self.sram_bytes = pong.n_pe, pong.sram_bytes

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> LinkStats:
        return self.link.stats

    def _call(self, kind: int, payload: bytes = b"", dest: int = CHIP
              ) -> list[tuple[int, bytes]]:
        self.flush()
        return self.link.call(kind, payload, dest)

    def _bulk(self, requests: list[tuple[int, bytes, int]]) -> list[Frame]:
        self.flush()
        return self.link.request(requests)

    def flush(self) -> None:
        """Send the queued inputs and targets."""
        queued, self._queued = self._queued, []
        if queued:
            self.link.request(queued)

    def ping(self) -> Pong:
        """Start a session (the device forgets cached replies) and check it answers."""
        nonce = random.getrandbits(32)
        pong = _only(self._call(MsgType.PING, Ping(nonce).encode()), MsgType.PONG, Pong)
        if pong.nonce != nonce:
            raise LinkError(f"the device on {self.link.url} answered PING {nonce} with PONG "
                            f"{pong.nonce}; is another program using the port?")
        return pong

    def load(self, config: EpropConfig | StorageConfig) -> None:
        """Map and allocate a network (``Chip.load``)."""
        if isinstance(config, StorageConfig):
            message = Config("storage", {"weight_format": config.weight_format},
                             tuple(config.shapes))
        else:
            message = Config("eprop", {item.name: getattr(config, item.name)
                                       for item in dataclasses.fields(config)})
        self._call(MsgType.CONFIG, message.encode())

    def configure(self, **values: float) -> None:
        """Set runtime values (``Chip.configure``)."""
        self._call(MsgType.CONFIG, Config(None, values).encode())

    def write_weights(self, projection: int, fmt: str, scale: float, first: int, count: int,
                      payload: bytes) -> None:
        """Weights ``first .. first + count − 1`` of a projection, as stored (``fmt``)."""
        if len(payload) != payload_bytes(count, fmt):
            raise ValueError(f"{count} weights in {fmt} take {payload_bytes(count, fmt)} B, "
                             f"got {len(payload)} B")
        requests = []
        for start, size in self._weight_chunks(count, fmt):
            values = payload[payload_bytes(start, fmt):payload_bytes(start + size, fmt)]
            requests.append((MsgType.LOAD_WEIGHTS, Weights(projection, fmt, scale, first + start,
                                                           size, values).encode(), CHIP))
        self._bulk(requests)

    def read_weights(self, projection: int, fmt: str, first: int, count: int
                     ) -> tuple[float, bytes]:
        """(scale, stored bytes) of weights ``first .. first + count − 1``."""
        chunks = self._weight_chunks(count, fmt)
        replies = self._bulk([(MsgType.READ_WEIGHTS, ReadWeights(projection, fmt, first + start,
                                                                 size).encode(), CHIP)
                              for start, size in chunks])
        parts = [_expect(reply, MsgType.WEIGHTS, Weights) for reply in replies]
        return parts[0].scale, b"".join(part.values for part in parts)

    def _weight_chunks(self, count: int, fmt: str) -> list[tuple[int, int]]:
        room = self.max_payload - Weights.LAYOUT.size
        per = room * 2 if fmt == "int4" else room // (1 if fmt == "int8" else 4)
        return [(start, min(per, count - start)) for start in range(0, count, per)] or [(0, 0)]

    def write_memory(self, pe: int, address: int, data: bytes) -> None:
        """Bytes at a PE-local address."""
        room = self.max_payload - Memory.LAYOUT.size
        self._bulk([(MsgType.WRITE_MEM, Memory(address + at, data[at:at + room]).encode(), pe)
                    for at in range(0, len(data), room)] or
                   [(MsgType.WRITE_MEM, Memory(address, b"").encode(), pe)])

    def read_memory(self, pe: int, address: int, nbytes: int) -> bytes:
        """``nbytes`` bytes from a PE-local address."""
        room = self.max_payload - Memory.LAYOUT.size
        replies = self._bulk([(MsgType.READ_MEM, ReadMem(address + at, min(room, nbytes - at)
                                                         ).encode(), pe)
                              for at in range(0, nbytes, room)] or
                             [(MsgType.READ_MEM, ReadMem(address, 0).encode(), pe)])
        return b"".join(_expect(reply, MsgType.MEMORY, Memory).data for reply in replies)

    def inject_values(self, step: int, pairs: list[tuple[int, float]]) -> None:
        """Queue input values for a sample step (sent as float32)."""
        pairs = [(int(key), float(value)) for key, value in pairs]
        for at in range(0, max(len(pairs), 1), _PAIRS_PER_FRAME):
            self._queued.append((MsgType.INJECT_VALUES,
                                 Values(step, tuple(pairs[at:at + _PAIRS_PER_FRAME])).encode(),
                                 CHIP))

    def inject_spikes(self, step: int, keys: list[int]) -> None:
        """Queue the inputs that spike at a sample step."""
        keys = [int(key) for key in keys]
        for at in range(0, max(len(keys), 1), _KEYS_PER_FRAME):
            self._queued.append((MsgType.INJECT_SPIKES,
                                 Spikes(step, tuple(keys[at:at + _KEYS_PER_FRAME])).encode(),
                                 CHIP))

    def target(self, sample_id: int, label: int) -> None:
        """Queue the label of the next training sample."""
        self._queued.append((MsgType.TARGET, Target(sample_id, label).encode(), CHIP))

    def run(self, steps: int, mode: int) -> RunResult:
        """Run a sample of ``steps`` steps (mode 0 infer, 1 train, 2 step-and-report)."""
        messages = self._call(MsgType.RUN, Run(steps, mode).encode())
        records = {}
        for kind, payload in messages[:-1]:
            if kind == MsgType.RECORD:
                record = Record.decode(payload)
                records[record.var] = record.array
        kind, payload = messages[-1]
        if kind != MsgType.DONE or set(records) != {RECORD_OUTPUTS, RECORD_SPIKES,
                                                    RECORD_CYCLES}:
            raise LinkError(f"the device on {self.link.url} answered RUN without DONE and "
                            "its three records; check the device's protocol version")
        done = Done.decode(payload)
        return RunResult(ticks=done.ticks, overruns=done.overruns, dropped=done.dropped,
                         outputs=records[RECORD_OUTPUTS], spikes=records[RECORD_SPIKES],
                         loss=done.loss, cycles=records[RECORD_CYCLES],
                         energy_j=done.energy_j)

    def reset(self, scope: int, pe: int | None = None) -> None:
        """0 chip, 1 one PE (``pe``), 2 learning state."""
        self._call(MsgType.RESET, Reset(scope).encode(), CHIP if pe is None else pe)

    def status(self) -> dict[str, Any]:
        """``Chip.status``: tick, samples, overruns, dropped, saturations, sram rows."""
        status = _only(self._call(MsgType.STATUS), MsgType.STATUS_REPLY, Status)
        return {"tick": status.tick, "samples": status.samples, "overruns": status.overruns,
                "dropped": status.dropped, "saturations": status.saturations,
                "sram": [tuple(row) for row in status.sram]}

    def state_dict(self) -> dict[str, Any]:
        """The chip's full state (``Chip.state_dict``)."""
        return decode_state(_only(self._call(MsgType.STATE_GET), MsgType.STATE, None), CONFIGS)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from ``state_dict`` (``Chip.load_state_dict``)."""
        self._call(MsgType.STATE_PUT, encode_state(state))


def connect(url: str, timeout: float = 0.5, retries: int = 3, **options: Any) -> RemoteChip:
    """A ``RemoteChip`` on ``url`` (options: see ``RemoteChip``)."""
    return RemoteChip(url, timeout=timeout, retries=retries, **options)


def _expect(frame: Frame, kind: int, codec: type) -> Any:
    return _only([(frame.type, frame.payload)], kind, codec)


def _only(messages: list[tuple[int, bytes]], kind: int, codec: type | None) -> Any:
    """The one reply message, of type ``kind``, decoded (``codec`` None: its payload)."""
    if len(messages) != 1 or messages[0][0] != kind:
        names = ", ".join(_name(each) for each, _ in messages)
        raise LinkError(f"the device answered with {names} where {_name(kind)} was due; "
                        "check that it speaks this protocol version")
    payload = messages[0][1]
    try:
        return payload if codec is None else codec.decode(payload)
    except ProtocolError as error:
        raise LinkError(f"the device's {_name(kind)} is malformed ({error}); check that it "
                        "speaks this protocol version") from None
