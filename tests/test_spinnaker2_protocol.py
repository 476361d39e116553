"""SpiNNaker 2 serial protocol: COBS, frames, CRC, message codecs and the device port
(spec A4.6; simulators/spinnaker2/protocol.py, port.py)."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.spinnaker2.chip import CONFIGURABLE, Chip, EpropConfig, StorageConfig
from simulators.spinnaker2.formats import FORMATS, encode, payload_bytes
from simulators.spinnaker2.port import DevicePort
from simulators.spinnaker2.protocol import (
    CONFIG_KEYS,
    MAX_PAYLOAD,
    MORE,
    RESPONSE,
    Ack,
    Config,
    Done,
    Frame,
    Memory,
    MsgType,
    Nak,
    NakCode,
    Ping,
    ProtocolError,
    ReadMem,
    Record,
    Spikes,
    Status,
    Values,
    Weights,
    cobs_decode,
    cobs_encode,
    decode_frame,
    decode_state,
    encode_state,
    fragments,
    join,
)
from states import same_state


pytestmark = pytest.mark.deadline(120)


@settings(max_examples=300)
@given(data=st.binary(max_size=1200))
def test_cobs_removes_zeros_within_its_overhead_and_round_trips(data: bytes) -> None:
    coded = cobs_encode(data)
    assert 0 not in coded
    assert len(coded) <= len(data) + 1 + -(-len(data) // 254)
    assert cobs_decode(coded) == data


def test_cobs_of_a_full_block_is_canonical() -> None:
    data = bytes(range(1, 255))  # 254 non-zero bytes: 0xFF and the bytes, nothing after
    assert cobs_encode(data) == b"\xff" + data
    assert cobs_encode(b"\x00") == b"\x01\x01"


frames = st.builds(Frame, type=st.integers(0, 255), seq=st.integers(0, 0xFFFF),
                   dest=st.integers(0, 0xFFFF), src=st.integers(0, 0xFFFF),
                   flags=st.integers(0, 0xFFFF), payload=st.binary(max_size=MAX_PAYLOAD))


@settings(max_examples=200)
@given(sent=st.lists(frames, min_size=1, max_size=6))
def test_frames_round_trip_through_a_loop_port(sent: list[Frame]) -> None:
    port = serial.serial_for_url("loop://", timeout=1)
    wire = b"".join(frame.encode() for frame in sent)
    port.write(wire)
    received = port.read(len(wire))
    port.close()
    assert [decode_frame(part) for part in received.split(b"\x00")[:-1]] == sent


def test_a_frame_is_laid_out_as_the_spec_says() -> None:
    frame = Frame(MsgType.PING, 0x1234, 0xFFFF, 0x8000, 1, Ping(7).encode())
    body = cobs_decode(frame.encode()[:-1])
    assert body[:12] == bytes([1, 0x01, 0x34, 0x12, 0xFF, 0xFF, 0x00, 0x80, 4, 0, 1, 0])
    assert body[12:16] == (7).to_bytes(4, "little")
    assert body[16:] == zlib.crc32(body[:16]).to_bytes(4, "little")


@settings(max_examples=500)
@given(data=st.binary(max_size=1100))
def test_decoding_arbitrary_bytes_raises_only_protocol_errors(data: bytes) -> None:
    try:
        decode_frame(data)
    except ProtocolError as error:
        assert error.code in (NakCode.CRC, NakCode.BAD_LENGTH, NakCode.BAD_FORMAT)


@settings(max_examples=300)
@given(frame=frames, where=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_every_damaged_byte_is_caught(frame: Frame, where: int, xor: int) -> None:
    wire = bytearray(frame.encode()[:-1])
    wire[where % len(wire)] ^= xor
    with pytest.raises(ProtocolError):
        assert decode_frame(bytes(wire)) != frame  # a changed frame must never decode


def test_oversized_and_mislabelled_payloads_are_bad_length() -> None:
    body = bytes([1, 0x03, 0, 0, 0, 0, 0, 0x80]) + (1100).to_bytes(2, "little") + bytes(2)
    body += bytes(1100)
    with pytest.raises(ProtocolError) as error:
        decode_frame(cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")))
    assert error.value.code == NakCode.BAD_LENGTH


@settings(max_examples=100)
@given(payload=st.binary(max_size=5000), seq=st.integers(0, 0xFFFF))
def test_fragments_use_consecutive_sequence_numbers_and_join_back(payload: bytes,
                                                                  seq: int) -> None:
    parts = fragments(MsgType.STATE_PUT, seq, payload)
    assert [frame.seq for frame in parts] == [(seq + i) % 65536 for i in range(len(parts))]
    assert all(frame.more for frame in parts[:-1]) and not parts[-1].more
    assert all(len(frame.payload) <= MAX_PAYLOAD for frame in parts)
    assert join([decode_frame(frame.encode()) for frame in parts]) == [
        (MsgType.STATE_PUT, payload)]


u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF)
f32 = st.floats(width=32, allow_nan=False)


@st.composite
def weights(draw: st.DrawFn) -> Weights:
    fmt = draw(st.sampled_from(FORMATS))
    count = draw(st.integers(0, 200))
    values = draw(st.binary(min_size=payload_bytes(count, fmt), max_size=payload_bytes(count,
                                                                                       fmt)))
    return Weights(draw(u16), fmt, draw(f32), draw(u32), count, values)


messages = st.one_of(
    weights(),
    st.builds(Memory, u32, st.binary(max_size=100)),
    st.builds(ReadMem, u32, u16),
    st.builds(Spikes, u32, st.lists(u32, max_size=50).map(tuple)),
    st.builds(Values, u32, st.lists(st.tuples(u32, f32), max_size=50).map(tuple)),
    st.builds(Done, u32, u32, u32, st.none() | st.floats(allow_nan=False), st.floats(0, 1)),
    st.builds(Status, u32, u32, u32, u32, u32,
              st.lists(st.tuples(u16, u32, u32), max_size=20).map(tuple)),
    st.builds(Ack, u16, st.integers(0, 255)),
    st.builds(Nak, u16, st.integers(0, 255), st.text(max_size=50)),
    st.builds(Config, st.sampled_from([None, "eprop", "storage"]),
              st.fixed_dictionaries({}, optional={"tau_m": st.floats(allow_nan=False),
                                                  "hidden": u32, "training": st.booleans(),
                                                  "weight_format": st.sampled_from(FORMATS)}),
              st.lists(st.tuples(u32, u32), max_size=5).map(tuple)),
)


@settings(max_examples=400)
@given(message=messages)
def test_message_codecs_round_trip(message: object) -> None:
    assert type(message).decode(message.encode()) == message


@settings(max_examples=300)
@given(payload=st.binary(max_size=300),
       codec=st.sampled_from([Weights, Memory, ReadMem, Spikes, Values, Done, Status, Ack, Nak,
                              Config, Record, Ping]))
def test_message_decoders_raise_only_protocol_errors(payload: bytes, codec: type) -> None:
    try:
        codec.decode(payload)
    except ProtocolError as error:
        assert 1 <= error.code <= 7


def test_records_carry_2d_arrays_of_run_results() -> None:
    for array in (np.arange(12, dtype=np.float32).reshape(3, 4),
                  np.eye(3, dtype=np.uint8), np.arange(6, dtype=np.int64).reshape(2, 3)):
        back = Record.decode(Record(1, 2, 3, array).encode())
        assert back.array.dtype == array.dtype
        np.testing.assert_array_equal(back.array, array)


def test_config_keys_cover_every_field_the_chip_takes() -> None:
    names = {name for name, _ in CONFIG_KEYS.values()}
    assert {field.name for field in dataclasses.fields(EpropConfig)} <= names
    assert set(CONFIGURABLE) | {"clock_hz", "tick_s"} <= names
    assert "weight_format" in names  # StorageConfig's other field is SHAPE


def test_state_dicts_travel_without_pickle_and_restore_the_chip() -> None:
    chip = Chip(n_pe=16)
    chip.load(EpropConfig(inputs=6, hidden=20, outputs=3, per_worker=8))
    chip.write_memory(1, 40_000, bytes(range(1, 200)))
    chip.inject_values(2, [(1, 0.5)])
    state = chip.state_dict()
    back = decode_state(encode_state(state), {})
    assert same_state(back, state)
    restored = Chip(n_pe=16)
    restored.load_state_dict(back)
    assert [bytes(pe.memory) for pe in restored.pes] == [bytes(pe.memory) for pe in chip.pes]


# --- the device port ---------------------------------------------------------------------

def _port() -> tuple[Chip, DevicePort]:
    chip = Chip(n_pe=4)
    chip.load(StorageConfig(((8, 8),), "int8"))
    return chip, DevicePort(chip)


def _reply(port: DevicePort, frame: Frame) -> list[tuple[int, bytes]]:
    replies = [decode_frame(wire) for wire in port.handle(frame.encode())]
    assert all(reply.flags & RESPONSE for reply in replies)
    assert [reply.seq for reply in replies] == [(frame.seq + i) % 65536
                                                for i in range(len(replies))]
    return join(replies)


def test_a_repeated_sequence_number_is_answered_from_the_cache_not_executed_again() -> None:
    chip, port = _port()
    write = Frame(MsgType.WRITE_MEM, 9, 2, payload=Memory(50_000, b"\x01\x02").encode())
    assert _reply(port, write) == [(MsgType.ACK, Ack(9).encode())]
    chip.write_memory(2, 50_000, b"\x07\x07")
    assert _reply(port, write) == [(MsgType.ACK, Ack(9).encode())]
    assert chip.read_memory(2, 50_000, 2) == b"\x07\x07"  # not written twice
    other = Frame(MsgType.WRITE_MEM, 9, 2, payload=Memory(50_000, b"\x03\x04").encode())
    _reply(port, other)  # same number, other bytes: a new request
    assert chip.read_memory(2, 50_000, 2) == b"\x03\x04"


@pytest.mark.parametrize("frame, code", [
    (Frame(MsgType.WRITE_MEM, 1, 2, payload=Memory(131_070, b"abc").encode()), NakCode.ADDRESS),
    (Frame(MsgType.WRITE_MEM, 1, 4, payload=Memory(0, b"a").encode()), NakCode.ADDRESS),
    (Frame(MsgType.READ_MEM, 1, 0, payload=ReadMem(131_000, 100).encode()), NakCode.ADDRESS),
    (Frame(0x55, 1), NakCode.UNKNOWN_TYPE),
    (Frame(MsgType.PING, 1, payload=b"\x01"), NakCode.BAD_LENGTH),
    (Frame(MsgType.LOAD_WEIGHTS, 1, payload=Weights(0, "f32", 1.0, 0, 1, bytes(4)).encode()),
     NakCode.BAD_FORMAT),  # the projection is int8
    (Frame(MsgType.CONFIG, 1, payload=Config("storage", {}, ((100_000, 100_000),)).encode()),
     NakCode.SRAM_OVERFLOW),
])
def test_refusals_are_naks_with_the_spec_codes(frame: Frame, code: int) -> None:
    _, port = _port()
    kind, payload = _reply(port, frame)[-1]  # a load says "working" first
    assert kind == MsgType.NAK
    nak = Nak.decode(payload)
    assert (nak.seq, nak.error) == (1, code) and nak.detail


def test_damaged_frames_are_naked_with_code_1() -> None:
    _, port = _port()
    wire = bytearray(Frame(MsgType.PING, 77, payload=Ping(1).encode()).encode())
    wire[14] ^= 0x40
    (reply,) = [decode_frame(out) for out in port.handle(bytes(wire))]
    assert reply.type == MsgType.NAK and Nak.decode(reply.payload).error == NakCode.CRC
    assert port.handle(b"\x00") == [] and port.handle(b"") == []


def test_an_sram_refusal_carries_the_table() -> None:
    _, port = _port()
    frame = Frame(MsgType.CONFIG, 3, payload=Config("eprop", {"per_worker": 120}).encode())
    kind, payload = _reply(port, frame)[-1]
    assert kind == MsgType.NAK
    assert "short by" in Nak.decode(payload).detail and "W_rec" in Nak.decode(payload).detail


def test_fragmented_requests_are_reassembled_in_order() -> None:
    chip = Chip(n_pe=16)
    chip.load(EpropConfig(inputs=6, hidden=20, outputs=3, per_worker=8))
    chip.write_memory(1, 40_000, bytes(range(256)) * 12)
    state = encode_state(chip.state_dict())
    target = Chip(n_pe=16)
    port = DevicePort(target)
    parts = fragments(MsgType.STATE_PUT, 100, state)
    assert len(parts) > 3
    _reply(port, parts[0])
    (kind, payload), = _reply(port, parts[2])  # ahead of the missing one: resend from it
    assert kind == MsgType.NAK and Nak.decode(payload).error == NakCode.CRC
    for frame in parts[1:-1]:
        assert _reply(port, frame) == [(MsgType.ACK, Ack(frame.seq).encode())]
    assert _reply(port, parts[1]) == [(MsgType.ACK, Ack(parts[1].seq).encode())]  # repeat
    assert _reply(port, parts[-1])[-1] == (MsgType.ACK, Ack(parts[-1].seq).encode())
    assert [bytes(pe.memory) for pe in target.pes] == [bytes(pe.memory) for pe in chip.pes]


def test_more_fragments_on_a_one_frame_message_is_taken_as_a_fragment() -> None:
    _, port = _port()
    assert _reply(port, Frame(MsgType.STATUS, 5, flags=MORE)) == [(MsgType.ACK,
                                                                   Ack(5).encode())]
    (kind, _), = _reply(port, Frame(MsgType.STATUS, 6))
    assert kind == MsgType.STATUS_REPLY


def test_int8_weights_written_through_the_port_read_back_identical() -> None:
    chip, port = _port()
    stored = encode(np.random.default_rng(1).normal(size=64), "int8")
    write = Weights(0, "int8", stored.scale, 0, 64, stored.payload)
    assert _reply(port, Frame(MsgType.LOAD_WEIGHTS, 1, payload=write.encode()))[0][0] == \
        MsgType.ACK
    assert chip.read_weights(0, "int8", 0, 64) == (np.float32(stored.scale), stored.payload)
