"""The device side of the SpiNNaker 2 serial link: request frames in, ``Chip`` calls, reply
frames out (spec A4.6; conventions in ``protocol``).

``DevicePort.replies`` never raises: every damaged frame (COBS, length, CRC) gets NAK 1, a
frame that passed the CRC but is wrong gets NAK 2 (unknown type), 3 (bad length), 4 (address
out of range: a PE that does not exist, or bytes beyond a PE's 131,072 B, checked here before
the chip sees them), 7 (bad format), and a request the chip refuses the NAK of its
``ChipError.code``. A sequence number is executed once: a repeat of the same frame gets the
reply cached for it (the last ``cache_size`` requests). Fragmented requests are taken in
order; a fragment ahead of the one expected is NAKed with code 1 so the host resends from the
missing one. PING starts a session: the cache and any half-received request are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from simulators.spinnaker2.chip import Chip, ChipError, EpropConfig, StorageConfig
from simulators.spinnaker2.protocol import (
    CHIP,
    ERROR,
    HOST,
    MORE,
    RECORD_CYCLES,
    RECORD_OUTPUTS,
    RECORD_SPIKES,
    RESPONSE,
    SEQ_MOD,
    VERSION,
    WORKING,
    Ack,
    Config,
    Done,
    Empty,
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
)

Reply = tuple[int, bytes]
"""A reply message: (type, payload)."""
MAX_REQUEST = 64 << 20
"""Bytes a fragmented request may total."""
_CONFIGS: dict[str, type] = {"EpropConfig": EpropConfig, "StorageConfig": StorageConfig}


@dataclass
class _Partial:
    """A fragmented request being received: its type, the next sequence number, the parts."""

    type: int
    next: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class DevicePort:
    """Serves a ``Chip`` frame by frame.

    Args:
        chip: the emulator.
        cache_size: requests whose replies are kept for repeats (≥ 8, the host's window).
    """

    def __init__(self, chip: Chip, cache_size: int = 64) -> None:
        self.chip = chip
        self.cache_size = max(8, cache_size)
        self._cache: OrderedDict[int, tuple[bytes, list[bytes]]] = OrderedDict()
        self._partial: _Partial | None = None
        self.working = False
        """Whether the frame ``replies`` yielded last says "working": send it at once."""

    def handle(self, wire: bytes) -> list[bytes]:
        """One frame's bytes (COBS, trailing 0x00 optional) → its reply frames (wire bytes)."""
        return list(self.replies(wire))

    def replies(self, wire: bytes) -> Iterator[bytes]:
        """Like ``handle``, but yields each reply frame as soon as it exists (a "working" ACK
        before a long RUN). Empty input (a bare delimiter) has no reply."""
        wire = wire[:-1] if wire.endswith(b"\x00") else wire
        if not wire:
            return
        try:
            frame = decode_frame(wire)
        except ProtocolError as error:
            yield from self._frames(error.seq or 0, [(MsgType.NAK, Nak(error.seq or 0,
                                                                       error.code, str(error)
                                                                       ).encode())])
            return
        cached = self._cache.get(frame.seq)
        if cached is not None and cached[0] == wire:
            yield from cached[1]
            return
        if frame.type == MsgType.PING:
            self._cache.clear()
            self._partial = None
        sent: list[bytes] = []
        payload = self._assemble(frame.type, frame.seq, frame.flags, frame.payload)
        if isinstance(payload, Nak):
            yield from self._frames(frame.seq, [(MsgType.NAK, payload.encode())])
            return
        messages = (self._execute(frame.type, frame.seq, frame.dest, frame.flags, payload)
                    if payload is not None else iter([(MsgType.ACK, Ack(frame.seq).encode())]))
        offset = 0
        for message in messages:
            for out in self._frames((frame.seq + offset) % SEQ_MOD, [message]):
                sent.append(out)
                offset += 1
                self.working = message[0] == MsgType.ACK and message[1][2] == WORKING
                yield out
        self.working = False
        self._cache[frame.seq] = (wire, sent)
        self._cache.move_to_end(frame.seq)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _assemble(self, kind: int, seq: int, flags: int, payload: bytes
                  ) -> bytes | Nak | None:
        """The whole request payload, None while fragments are still due (ACK the one
        received, or a repeat of one taken before), or a NAK (not cached): code 1 for a
        fragment ahead of the one expected, 3 for a request beyond ``MAX_REQUEST``."""
        partial = self._partial
        if partial is not None:
            if kind == partial.type and seq == partial.next:
                partial.parts.append(payload)
                partial.size += len(payload)
                partial.next = (seq + 1) % SEQ_MOD
                if partial.size > MAX_REQUEST:
                    self._partial = None
                    return Nak(seq, NakCode.BAD_LENGTH, f"fragmented request of "
                               f"{partial.size:,} B exceeds {MAX_REQUEST:,} B")
                if flags & MORE:
                    return None
                self._partial = None
                return b"".join(partial.parts)
            if kind == partial.type and (partial.next - 1 - seq) % SEQ_MOD < len(partial.parts):
                return None  # a late repeat of a fragment already taken: ACK it again
            if kind == partial.type and 0 < (seq - partial.next) % SEQ_MOD <= 8:
                return Nak(seq, NakCode.CRC, f"fragment {seq} ahead of {partial.next}; resend "
                           f"from {partial.next}")
            self._partial = None  # abandoned by the host
        if flags & MORE:
            self._partial = _Partial(kind, (seq + 1) % SEQ_MOD, [payload], len(payload))
            return None
        return payload

    def _frames(self, seq: int, messages: list[Reply]) -> list[bytes]:
        """Reply messages as wire frames with consecutive sequence numbers from ``seq``."""
        out: list[bytes] = []
        for kind, payload in messages:
            flags = RESPONSE | (ERROR if kind == MsgType.NAK else 0)
            for frame in fragments(kind, (seq + len(out)) % SEQ_MOD, payload, HOST, CHIP,
                                   flags):
                out.append(frame.encode())
        return out

    def _execute(self, kind: int, seq: int, dest: int, flags: int, payload: bytes
                 ) -> Iterator[Reply]:
        """The reply messages of one request; a refusal ends them with a NAK."""
        try:
            if flags & RESPONSE:
                raise ProtocolError(NakCode.BAD_FORMAT, "a reply frame sent to the device")
            yield from self._dispatch(kind, seq, dest, payload)
        except (ChipError, ProtocolError) as error:
            yield MsgType.NAK, Nak(seq, error.code, str(error)).encode()
        except Exception as error:  # noqa: BLE001  # the device answers every frame
            yield MsgType.NAK, Nak(seq, NakCode.BAD_FORMAT,
                                   f"{type(error).__name__}: {error}").encode()

    def _dispatch(self, kind: int, seq: int, dest: int, payload: bytes) -> Iterator[Reply]:
        chip = self.chip
        done = (MsgType.ACK, Ack(seq).encode())
        working = (MsgType.ACK, Ack(seq, WORKING).encode())
        if kind == MsgType.PING:
            ping = Ping.decode(payload)
            yield MsgType.PONG, Pong(ping.nonce, len(chip.pes), VERSION,
                                     len(chip.pes[0].memory)).encode()
        elif kind == MsgType.RESET:
            scope = Reset.decode(payload).scope
            chip.reset(scope, self._pe(dest) if scope == 1 else None)
            yield done
        elif kind == MsgType.WRITE_MEM:
            write = Memory.decode(payload)
            self._check_range(dest, write.address, len(write.data))
            chip.write_memory(dest, write.address, write.data)
            yield done
        elif kind == MsgType.READ_MEM:
            read = ReadMem.decode(payload)
            self._check_range(dest, read.address, read.nbytes)
            yield MsgType.MEMORY, Memory(read.address, chip.read_memory(
                dest, read.address, read.nbytes)).encode()
        elif kind == MsgType.LOAD_WEIGHTS:
            write = Weights.decode(payload)
            chip.write_weights(write.projection, write.fmt, write.scale, write.first,
                               write.count, write.values)
            yield done
        elif kind == MsgType.READ_WEIGHTS:
            read = ReadWeights.decode(payload)
            scale, values = chip.read_weights(read.projection, read.fmt, read.first, read.count)
            yield MsgType.WEIGHTS, Weights(read.projection, read.fmt, scale, read.first,
                                           read.count, values).encode()
        elif kind == MsgType.CONFIG:
            config = Config.decode(payload)
            if config.network is None:
                chip.configure(**config.fields)
            else:
                network = _network(config)
                yield working
                chip.load(network)
            yield done
        elif kind == MsgType.RUN:
            run = Run.decode(payload)
            yield working
            result = chip.run(run.steps, run.mode)
            for var, array in ((RECORD_OUTPUTS, result.outputs), (RECORD_SPIKES, result.spikes),
                               (RECORD_CYCLES, result.cycles)):
                yield MsgType.RECORD, Record(var, CHIP, 0, array).encode()
            yield MsgType.DONE, Done(result.ticks, result.overruns, result.dropped,
                                     result.loss, result.energy_j).encode()
        elif kind == MsgType.INJECT_SPIKES:
            spikes = Spikes.decode(payload)
            chip.inject_spikes(spikes.tick, list(spikes.keys))
            yield done
        elif kind == MsgType.INJECT_VALUES:
            values = Values.decode(payload)
            chip.inject_values(values.tick, list(values.pairs))
            yield done
        elif kind == MsgType.TARGET:
            target = Target.decode(payload)
            chip.target(target.sample_id, target.label)
            yield done
        elif kind == MsgType.STATUS:
            Empty.decode(payload)
            status = chip.status()
            yield MsgType.STATUS_REPLY, Status(
                status["tick"], status["samples"], status["overruns"], status["dropped"],
                status["saturations"], tuple(tuple(row) for row in status["sram"])).encode()
        elif kind == MsgType.STATE_GET:
            Empty.decode(payload)
            yield working
            yield MsgType.STATE, encode_state(chip.state_dict())
        elif kind == MsgType.STATE_PUT:
            state = decode_state(payload, _CONFIGS)
            yield working
            chip.load_state_dict(state)
            yield done
        else:
            raise ProtocolError(NakCode.UNKNOWN_TYPE, f"unknown message type {kind:#04x}")

    def _pe(self, dest: int) -> int:
        if dest >= len(self.chip.pes):
            raise ProtocolError(NakCode.ADDRESS, f"PE {dest} does not exist (the chip has "
                                f"{len(self.chip.pes)})")
        return dest

    def _check_range(self, dest: int, address: int, nbytes: int) -> None:
        size = len(self.chip.pes[self._pe(dest)].memory)
        if address + nbytes > size:
            raise ProtocolError(NakCode.ADDRESS, f"bytes {address}..{address + nbytes - 1} lie "
                                f"beyond PE {dest}'s {size:,} B of SRAM")


def _network(config: Config) -> EpropConfig | StorageConfig:
    try:
        if config.network == "storage":
            return StorageConfig(shapes=config.shapes, **config.fields)
        return EpropConfig(**config.fields)
    except TypeError as error:
        raise ProtocolError(NakCode.BAD_FORMAT, f"CONFIG fields: {error}") from None

