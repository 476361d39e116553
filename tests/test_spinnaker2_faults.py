"""SpiNNaker 2 serial link under faults: a damaging proxy, a server that dies mid-transfer,
and a fuzzed device port (spec A4.6, A4.7 item 6; tests/faultproxy.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
import zlib

import numpy as np
import pytest
from faultproxy import FaultProxy
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.spinnaker2.chip import Chip, StorageConfig
from simulators.spinnaker2.link import LinkError, RemoteChip, connect
from simulators.spinnaker2.port import DevicePort
from simulators.spinnaker2.protocol import (
    HEADER,
    MAX_PAYLOAD,
    REPLIES,
    RESPONSE,
    VERSION,
    Config,
    Memory,
    MsgType,
    ReadMem,
    ReadWeights,
    Reset,
    Run,
    Spikes,
    Target,
    Values,
    Weights,
    cobs_encode,
    decode_frame,
)
from simulators.spinnaker2.server import start_server


pytestmark = pytest.mark.deadline(150)


def test_ten_thousand_writes_through_a_damaging_line_arrive_intact() -> None:
    """1 % of bytes flipped and 1 % of frames dropped (and some duplicated, delayed) both
    ways: every damaged frame is caught by its CRC and sent again, nothing wrong is stored.
    Frames are small (4 f32 weights) so that most get through a line this noisy; the retry
    budget is raised to match (at 1 % per byte, a 50-byte frame fails 4 times in a row
    about once in 100 writes)."""
    rows, cols = 160, 256  # 40,960 weights, 4 a frame: 10,240 writes
    weights = np.random.default_rng(7).normal(0, 1, rows * cols).astype("<f4").tobytes()
    with start_server(n_pe=16) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with FaultProxy(port, flip=0.01, drop=0.01, duplicate=0.005, delay=0.005,
                        seed=11) as proxy, \
                RemoteChip(proxy.url, timeout=0.05, retries=50, max_payload=32) as noisy:
            noisy.load(StorageConfig(((rows, cols),), "f32"))
            started = time.monotonic()
            noisy.write_weights(0, "f32", 1.0, 0, rows * cols, weights)
            elapsed = time.monotonic() - started
            stats = noisy.stats
        with connect(server.url) as clean:
            _, stored = clean.read_weights(0, "f32", 0, rows * cols)
    print(f"\n10,240 writes in {elapsed:.1f} s; proxy {dict(proxy.counters)}; link {stats}")
    assert stored == weights
    assert proxy.counters["corrupted_frames"] > 1000 and proxy.counters["dropped"] > 100
    assert stats.retransmits > 1000 and stats.crc_naks > 0 and stats.damaged > 0


@pytest.mark.parametrize("transport", ["socket://127.0.0.1:0", "pty"])
def test_a_server_killed_mid_transfer_is_a_link_error_within_the_timeout(
        transport: str) -> None:
    server = start_server(transport, n_pe=16)
    try:
        remote = connect(server.url, timeout=0.5, retries=3)
        remote.load(StorageConfig(((256, 256),), "f32"))
        payload = bytes(4 * 256 * 256)
        killed: list[float] = []

        def kill() -> None:
            time.sleep(0.3)
            killed.append(time.monotonic())
            os.killpg(server.process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill)
        killer.start()
        with pytest.raises(LinkError, match="gone|no valid reply"):
            while True:
                remote.write_weights(0, "f32", 1.0, 0, 256 * 256, payload)
        raised = time.monotonic()
        killer.join()
        assert raised - killed[0] < 0.5 + 0.5  # within the timeout (and scheduling slack)
        remote.close()
    finally:
        server.stop()


# --- fuzzing the device port --------------------------------------------------------------

N_PE = 4
FRAMES_PER_EXAMPLE = 40


def _raw_frame(kind: int, seq: int, dest: int, flags: int, payload: bytes,
               version: int = VERSION, length: int | None = None) -> bytes:
    """A frame with any header values (oversized payloads and lying lengths included)."""
    body = HEADER.pack(version, kind, seq, dest, 0x8000, len(payload) if length is None
                       else length, flags) + payload
    return cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"


u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF)
small = st.integers(0, 300)
seqs = st.integers(0, 40)  # few numbers, so that repeats happen
dests = st.integers(0, N_PE + 1) | st.just(0xFFFF)


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """(type, dest, payload) of a plausible request, arguments anywhere."""
    kind = draw(st.sampled_from([MsgType.WRITE_MEM, MsgType.READ_MEM, MsgType.LOAD_WEIGHTS,
                                 MsgType.READ_WEIGHTS, MsgType.RESET, MsgType.CONFIG,
                                 MsgType.INJECT_SPIKES, MsgType.INJECT_VALUES, MsgType.TARGET,
                                 MsgType.STATUS, MsgType.PING, MsgType.RUN,
                                 MsgType.STATE_GET]))
    dest = draw(dests)
    address = draw(st.integers(0, 140_000) | st.integers(131_000, 131_072))
    if kind == MsgType.WRITE_MEM:
        payload = Memory(address, draw(st.binary(max_size=200))).encode()
    elif kind == MsgType.READ_MEM:
        payload = ReadMem(address, draw(small)).encode()
    elif kind == MsgType.LOAD_WEIGHTS:
        fmt = draw(st.sampled_from(["f32", "s16.15", "int8", "int4"]))
        count = draw(st.integers(0, 60))
        size = draw(st.sampled_from([(count + 1) // 2, count, 4 * count, count + 1]))
        payload = Weights(draw(st.integers(0, 3)), fmt, draw(st.floats(width=32)),
                          draw(st.integers(0, 300) | u32), count, bytes(size)).encode()
    elif kind == MsgType.READ_WEIGHTS:
        payload = ReadWeights(draw(st.integers(0, 3)), draw(st.sampled_from(
            ["f32", "s16.15", "int8", "int4"])), draw(st.integers(0, 300)), draw(small)).encode()
    elif kind == MsgType.RESET:
        payload = Reset(draw(st.integers(0, 4))).encode()
    elif kind == MsgType.CONFIG:
        payload = draw(st.sampled_from([
            Config("storage", {"weight_format": "int8"}, ((8, 8), (4, 30))).encode(),
            Config(None, {"learning_rate": 0.1}).encode(),
            Config("storage", {}, ((100_000, 9),)).encode()])) if draw(st.booleans()) else \
            draw(st.binary(max_size=40))
    elif kind == MsgType.INJECT_SPIKES:
        payload = Spikes(draw(u32), tuple(draw(st.lists(u32, max_size=5)))).encode()
    elif kind == MsgType.INJECT_VALUES:
        payload = Values(draw(u32), tuple(draw(st.lists(st.tuples(u32, st.floats(width=32)),
                                                        max_size=5)))).encode()
    elif kind == MsgType.TARGET:
        payload = Target(draw(u32), draw(u16)).encode()
    elif kind == MsgType.RUN:
        payload = Run(draw(st.integers(0, 3)), draw(st.integers(0, 255))).encode()
    else:
        payload = draw(st.binary(max_size=4)) if draw(st.booleans()) else b""
    if kind == MsgType.PING and len(payload) != 4:
        payload = draw(st.binary(min_size=4, max_size=4))
    return kind, dest, payload


@st.composite
def wires(draw: st.DrawFn) -> tuple[bytes, int, int, bytes]:
    """(wire bytes, type, dest, payload) of one fuzzed frame (type -1: not a valid frame)."""
    choice = draw(st.integers(0, 5))
    seq, flags = draw(seqs), draw(st.sampled_from([0, 1, 1, 1, 2, 8, 9]))
    if choice == 0:
        return draw(st.binary(max_size=1200)), -1, 0, b""
    if choice == 1:  # any type, any payload, maybe oversized or lying about its length
        payload = draw(st.binary(max_size=1100))
        kind = draw(st.integers(0, 255))
        length = draw(st.none() | u16)
        wire = _raw_frame(kind, seq, draw(dests), flags, payload,
                          draw(st.sampled_from([VERSION, VERSION, 0, 2])), length)
        valid = length in (None, len(payload)) and len(payload) <= MAX_PAYLOAD
        return wire, kind if valid else -1, 0, payload
    kind, dest, payload = draw(requests())
    if len(payload) > MAX_PAYLOAD:
        payload = payload[:MAX_PAYLOAD]
    wire = _raw_frame(kind, seq, dest, flags, payload)
    if choice == 5:  # damaged on the way
        damaged = bytearray(wire)
        damaged[draw(st.integers(0, len(wire) - 2))] ^= draw(st.integers(1, 255))
        return bytes(damaged), -1, 0, b""
    return wire, kind, dest, payload


def _written_range(kind: int, dest: int, payload: bytes) -> tuple[int, int, int] | None:
    """(pe, start, end) a WRITE_MEM may change."""
    if kind != MsgType.WRITE_MEM or len(payload) < 4:
        return None
    address = int.from_bytes(payload[:4], "little")
    return dest, address, address + len(payload) - 4


CHANGING = {MsgType.WRITE_MEM, MsgType.LOAD_WEIGHTS, MsgType.RESET, MsgType.CONFIG,
            MsgType.STATE_PUT, MsgType.RUN}
fuzzed: list[int] = []


@settings(max_examples=260, deadline=None)
@given(batch=st.lists(wires(), min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE))
def fuzz_the_device_port(batch: list[tuple[bytes, int, int, bytes]]) -> None:
    chip = Chip(n_pe=N_PE)
    chip.load(StorageConfig(((8, 8), (4, 30)), "int8"))
    port = DevicePort(chip)
    for wire, kind, dest, payload in batch:
        before = [bytes(pe.memory) for pe in chip.pes]
        replies = port.handle(wire)
        fuzzed.append(1)
        assert replies or wire in (b"", b"\x00"), "every frame gets an answer"
        for reply in map(decode_frame, replies):
            assert reply.flags & RESPONSE
            assert reply.type in REPLIES or reply.type == MsgType.STATE
        assert [len(pe.memory) for pe in chip.pes] == [131_072] * N_PE
        after = [bytes(pe.memory) for pe in chip.pes]
        if kind not in CHANGING or kind == -1:
            assert after == before
        allowed = _written_range(kind, dest, payload)
        if allowed is not None:
            for pe, (old, new) in enumerate(zip(before, after)):
                changed = np.flatnonzero(np.frombuffer(old, np.uint8)
                                         != np.frombuffer(new, np.uint8))
                if changed.size:
                    assert pe == allowed[0] and allowed[1] <= changed.min() and \
                        changed.max() < allowed[2]


def test_the_device_port_answers_every_fuzzed_frame_and_writes_only_where_asked() -> None:
    """Over 10,000 fuzzed frames: an answer to each, memories of unchanged size, writes only
    inside the addressed range (``fuzz_the_device_port``, one hypothesis example a batch)."""
    fuzzed.clear()
    fuzz_the_device_port()
    assert len(fuzzed) >= 10_000
