"""SpiNNaker 2 serial link end to end: a host ``RemoteChip`` talks to the emulator served in
a child process, over a pseudo-terminal and over socket://127.0.0.1 (spec A4.6, A4.7 item 6;
simulators/spinnaker2/link.py, server.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from simulators.spinnaker2.chip import Chip, ChipError, EpropConfig, StorageConfig
from simulators.spinnaker2.formats import FORMATS, encode
from simulators.spinnaker2.link import LinkError, RemoteChip, connect
from simulators.spinnaker2.server import ServerProcess, start_server
from states import same_state

TRANSPORTS = ("socket://127.0.0.1:0", "pty")


pytestmark = pytest.mark.deadline(120)


@pytest.fixture(scope="module", params=TRANSPORTS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with start_server(request.param, n_pe=32) as running:
        yield running


@pytest.fixture
def chip(server: ServerProcess) -> Iterator[RemoteChip]:
    with connect(server.url) as remote:
        yield remote


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_weight_of_a_256x256_projection_reads_back_identical(chip: RemoteChip,
                                                                   fmt: str) -> None:
    chip.load(StorageConfig(((256, 256),), fmt))
    stored = encode(np.random.default_rng(3).normal(0, 0.5, (256, 256)), fmt)
    chip.write_weights(0, fmt, stored.scale, 0, 256 * 256, stored.payload)
    scale, payload = chip.read_weights(0, fmt, 0, 256 * 256)
    assert payload == stored.payload
    assert scale == (np.float32(stored.scale) if fmt in ("int8", "int4") else 1.0)
    assert chip.stats.retransmits == 0 and chip.stats.damaged == 0


def test_a_remote_chip_trains_exactly_like_the_chip_in_this_process(chip: RemoteChip) -> None:
    config = EpropConfig(inputs=10, hidden=24, outputs=3, per_worker=8)
    local = Chip(n_pe=32)
    rng = np.random.default_rng(5)
    weights = [rng.normal(0, 0.5, size).astype(np.float32).tobytes()
               for size in (24 * 10, 24 * 24, 3 * 24)]
    for device in (chip, local):
        device.load(config)
        for projection, payload in enumerate(weights):
            device.write_weights(projection, "f32", 1.0, 0, len(payload) // 4, payload)
        device.configure(learning_rate=0.05, ignore_first=1)
    for sample in range(3):
        spikes = rng.random((20, 10)) < 0.3
        results = []
        for device in (chip, local):
            for step, row in enumerate(spikes):
                device.inject_spikes(step, [int(i) for i in np.flatnonzero(row)])
            device.inject_values(0, [(0, 0.25), (9, -1.5)])
            device.target(sample, sample % 3)
            results.append(device.run(20, 1))
        remote, here = results
        assert (remote.ticks, remote.overruns, remote.dropped, remote.loss, remote.energy_j) == (
            here.ticks, here.overruns, here.dropped, here.loss, here.energy_j)
        for name in ("outputs", "spikes", "cycles"):
            assert getattr(remote, name).dtype == getattr(here, name).dtype
            np.testing.assert_array_equal(getattr(remote, name), getattr(here, name))
    assert chip.read_weights(1, "f32", 0, 24 * 24) == local.read_weights(1, "f32", 0, 24 * 24)
    status = chip.status()
    assert status == {**local.status(), "sram": [tuple(row) for row in local.status()["sram"]]}
    state = chip.state_dict()
    assert same_state(state, local.state_dict())
    chip.reset(2)
    chip.load_state_dict(state)
    assert same_state(chip.state_dict(), state)


def test_memory_round_trips_and_bounds_are_enforced(chip: RemoteChip) -> None:
    data = bytes(np.random.default_rng(0).integers(0, 256, 70_000, dtype=np.uint8))
    chip.write_memory(3, 50_000, data)
    assert chip.read_memory(3, 50_000, len(data)) == data
    with pytest.raises(ChipError) as error:
        chip.write_memory(3, 131_000, bytes(100))
    assert error.value.code == 4 and "131,072" in str(error.value)
    assert chip.read_memory(3, 131_000, 72) == bytes(72)  # nothing written beyond


def test_refusals_raise_chip_errors_with_the_chips_codes_and_text(chip: RemoteChip) -> None:
    with pytest.raises(ChipError) as error:
        chip.load(EpropConfig(per_worker=120))
    assert error.value.code == 5 and "short by" in str(error.value)
    chip.load(StorageConfig(((4, 4),), "int8"))
    with pytest.raises(ChipError) as error:
        chip.write_weights(0, "f32", 1.0, 0, 16, bytes(64))
    assert error.value.code == 7
    with pytest.raises(ChipError) as error:
        chip.run(5, 0)
    assert error.value.code == 7
    chip.ping()  # the link is still in step


def test_a_client_may_leave_and_another_connect(server: ServerProcess) -> None:
    for _ in range(3):
        with connect(server.url) as remote:
            remote.load(StorageConfig(((2, 2),)))
            remote.write_weights(0, "f32", 1.0, 0, 4, bytes(16))


def test_no_device_is_a_link_error_within_the_retries() -> None:
    with pytest.raises(LinkError, match="cannot open"):
        connect("socket://127.0.0.1:1")
    with start_server("pty", n_pe=2) as running:
        path = running.url
    started = time.monotonic()
    with pytest.raises(LinkError):
        connect(path, timeout=0.1, retries=1)
    assert time.monotonic() - started < 2
