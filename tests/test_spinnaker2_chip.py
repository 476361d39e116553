"""The SpiNNaker 2 chip emulator (spec A4.1-A4.5, A4.7 tests 3-5): weight storage, memory,
SRAM refusal, the router, the cycle model's overruns, energy and state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulators.spinnaker2.chip import Chip, ChipError, EpropConfig, StorageConfig
from simulators.spinnaker2.energy import PAPER_SAMPLE_ENERGY_J, reference_sample_energy
from simulators.spinnaker2.formats import decode, encode, payload_bytes
from simulators.spinnaker2.router import Packets, Router, RouterFullError
from states import same_state

SHAPES = ((120, 80), (120, 120), (12, 120))


def random_weights(seed: int, shapes=SHAPES, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale / math.sqrt(cols), (rows, cols)) for rows, cols in shapes]


def write(chip: Chip, weights: list[np.ndarray], fmt: str, chunk: int = 37) -> list:
    """Write every projection in ``chunk``-weight fragments (odd: int4 fragments start on
    high nibbles); returns the encodings."""
    encodings = []
    for projection, w in enumerate(weights):
        encoded = encode(w, fmt)
        levels = decode(encoded.payload, w.size, fmt, 1.0)  # the stored elements' values
        for first in range(0, w.size, chunk):
            count = min(chunk, w.size - first)
            part = encode(levels[first:first + count], fmt, scale=1.0).payload \
                if fmt in ("int8", "int4") else \
                encoded.payload[first * 4:(first + count) * 4]
            chip.write_weights(projection, fmt, encoded.scale, first, count, part)
        encodings.append(encoded)
    return encodings


@pytest.mark.parametrize("fmt", ["f32", "s16.15", "int8", "int4"])
def test_weights_read_back_exactly_as_stored(fmt: str) -> None:
    chip = Chip(n_pe=8)
    chip.load(StorageConfig(SHAPES, fmt))
    weights = random_weights(0, scale=3.0)
    for projection, encoded in enumerate(write(chip, weights, fmt)):
        size = weights[projection].size
        scale, payload = chip.read_weights(projection, fmt, 0, size)
        assert payload == encoded.payload and scale == pytest.approx(encoded.scale, rel=1e-7)
        _, middle = chip.read_weights(projection, fmt, 3, 101)
        assert np.array_equal(decode(middle, 101, fmt, scale),
                              decode(payload, size, fmt, scale)[3:104])
    holders = {block.pe for p in chip._net.projections for block in p.blocks}
    assert 0 not in holders and len(holders) >= 1  # rows live on PEs 1..


def test_eprop_weights_span_the_worker_pes_and_state_lives_in_memory() -> None:
    chip = Chip()
    chip.load(EpropConfig())
    weights = random_weights(1)
    write(chip, weights, "f32", chunk=256)
    for projection, w in enumerate(weights):
        _, payload = chip.read_weights(projection, "f32", 0, w.size)
        assert payload == w.astype("<f4").tobytes()
    w_in_of_pe3 = chip.pes[3].region("W_in")  # neurons 24..35
    raw = chip.read_memory(3, w_in_of_pe3.offset, 4 * 80)
    assert raw == weights[0][24].astype("<f4").tobytes()
    v = chip.pes[1].region("neuron state")  # row 0 of (8, 12): v
    chip.write_memory(1, v.offset, np.full(12, 0.5, "<f4").tobytes())
    assert np.all(chip.gather("v")[:12] == 0.5) and np.all(chip.gather("v")[12:] == 0)


def test_requests_out_of_range_or_in_the_wrong_format_are_refused() -> None:
    chip = Chip(n_pe=4)
    chip.load(StorageConfig(((4, 4),), "int8"))
    with pytest.raises(ChipError) as wrong:
        chip.write_weights(0, "f32", 1.0, 0, 1, bytes(4))
    assert wrong.value.code == 7 and "int8" in str(wrong.value)
    for call, code in [(lambda: chip.write_weights(0, "int8", 1.0, 0, 2, bytes(3)), 3),
                       (lambda: chip.write_weights(0, "int8", 1.0, 15, 2, bytes(2)), 4),
                       (lambda: chip.write_weights(1, "int8", 1.0, 0, 1, bytes(1)), 4),
                       (lambda: chip.write_weights(0, "int8", 0.0, 0, 1, bytes(1)), 7),
                       (lambda: chip.read_weights(0, "int8", -1, 1), 4),
                       (lambda: chip.write_memory(3, 131_070, bytes(4)), 4),
                       (lambda: chip.read_memory(4, 0, 1), 4),
                       (lambda: chip.read_memory(0, -1, 1), 4),
                       (lambda: chip.run(10, 0), 7)]:
        with pytest.raises(ChipError) as refused:
            call()
        assert refused.value.code == code
    chip.write_memory(3, 131_068, b"\x01\x02\x03\x04")  # the last word of the SRAM
    assert chip.read_memory(3, 131_068, 4) == b"\x01\x02\x03\x04"


def test_a_network_too_big_for_its_pes_is_refused_with_the_table_and_changes_nothing() -> None:
    chip = Chip()
    chip.load(EpropConfig())
    assert len(chip.status()["sram"]) == 12  # the reference network on 12 PEs
    before = chip.state_dict()
    with pytest.raises(ChipError) as refused:  # every hidden neuron on one worker PE
        chip.load(EpropConfig(per_worker=120))
    assert refused.value.code == 5
    assert "W_rec" in str(refused.value) and "short by" in str(refused.value)
    assert chip.config == EpropConfig() and same_state(chip.state_dict(), before)
    with pytest.raises(ChipError) as storage:
        Chip(n_pe=2).load(StorageConfig(SHAPES, "f32"))
    assert storage.value.code == 5 and "do not fit" in str(storage.value)
    with pytest.raises(ChipError, match="int8") as training:
        chip.load(EpropConfig(weight_format="int8"))
    assert training.value.code == 7


def test_packets_arrive_one_tick_later_and_unrouted_ones_are_dropped() -> None:
    router = Router()
    router.add(0x0100_0000, 0xFF00_0000, {2, 3}, host=True)
    router.add(0x0100_0000, 0xFF00_0000, {4})  # shadowed: the first match wins
    router.add(0x0200_0005, 0xFFFF_FFFF, {4})
    keys = np.array([0x0100_0007, 0x0200_0005, 0x0300_0000, 0x0200_0006], np.uint32)
    router.send(7, Packets(keys, np.arange(4, dtype=np.uint32)))
    assert router.dropped == 2
    early, early_host = router.deliver(7)
    assert early == {} and len(early_host) == 0
    inboxes, host = router.deliver(8)
    assert sorted(inboxes) == [2, 3, 4]
    assert inboxes[2].keys.tolist() == [0x0100_0007] and inboxes[4].payloads.tolist() == [1]
    assert host.keys.tolist() == [0x0100_0007]
    later, later_host = router.deliver(9)
    assert later == {} and len(later_host) == 0


def test_packets_sent_at_tick_t_are_not_delivered_at_t() -> None:
    router = Router()
    router.add(0, 0, {1})
    router.send(3, Packets(np.array([5], np.uint32), np.array([9], np.uint32)))
    assert router.deliver(3)[0] == {}
    assert router.deliver(4)[0][1].payloads.tolist() == [9]


def test_the_router_refuses_entries_beyond_its_capacity() -> None:
    router = Router(capacity=16_384)
    for index in range(16_384):
        router.add(index, 0xFFFF_FFFF, {1})
    with pytest.raises(RouterFullError, match="16,384"):
        router.add(99_999, 0xFFFF_FFFF, {1})


def loaded_reference(chip: Chip, seed: int = 5) -> None:
    chip.load(EpropConfig())
    write(chip, random_weights(seed, scale=3.0), "f32", chunk=4096)


def inject(chip: Chip, seed: int, steps: int = 20) -> None:
    rng = np.random.default_rng(seed)
    for step in range(steps):
        chip.inject_spikes(step, np.flatnonzero(rng.random(80) < 0.2).tolist())


def test_overruns_fire_when_cycles_exceed_the_clock_and_not_at_the_default_clock() -> None:
    chip = Chip()
    loaded_reference(chip)
    inject(chip, 0, steps=30)
    chip.target(0, 1)
    result = chip.run(30, mode=1)
    assert result.overruns == 0 and result.cycles.shape == (33, 12)
    assert result.cycles.max() <= chip.clock_hz * chip.tick_s
    assert result.spikes.sum() > 0
    slow = Chip(clock_hz=20e6)  # 20,000 cycles per 1 ms tick: the workers cannot keep up
    loaded_reference(slow)
    inject(slow, 0)
    result = slow.run(20, mode=0)
    assert result.overruns == int((result.cycles > 20_000).sum()) > 0
    assert slow.status()["overruns"] == result.overruns
    fatal = Chip(clock_hz=20e6, overrun_fatal=True)
    loaded_reference(fatal)
    with pytest.raises(ChipError) as overran:
        fatal.run(5, mode=0)
    assert overran.value.code == 6


def test_energy_is_the_model_of_the_cycles_and_calibrated_to_the_paper() -> None:
    chip = Chip()
    loaded_reference(chip)
    inject(chip, 1)
    result = chip.run(20, mode=0)
    model = chip.energy_model
    idle = result.cycles.size * model.p_idle_w * chip.tick_s
    assert result.energy_j > idle + result.cycles.sum() * model.e_cycle_j
    assert reference_sample_energy() == pytest.approx(PAPER_SAMPLE_ENERGY_J, rel=0.02)


def test_state_dict_continues_bit_identically() -> None:
    def train(chip: Chip, sample: int) -> np.ndarray:
        inject(chip, sample)
        chip.target(sample, sample % 12)
        return chip.run(20, mode=1).outputs

    chip = Chip()
    loaded_reference(chip)
    train(chip, 0), train(chip, 1)
    state = chip.state_dict()
    expected = train(chip, 2)
    restored = Chip(numeric="s16.15")  # settings come from the state
    restored.load_state_dict(state)
    np.testing.assert_array_equal(train(restored, 2), expected)
    assert same_state(restored.state_dict(), chip.state_dict())
    assert restored.status()["samples"] == 3 and int(chip.readout.adam_step[0]) == 3


def test_reset_scopes() -> None:
    chip = Chip()
    loaded_reference(chip)
    inject(chip, 0)
    chip.target(0, 3)
    chip.run(20, mode=1)
    _, before = chip.read_weights(0, "f32", 0, 9600)
    chip.reset(2)
    assert not chip.gather("m").any() and not chip.gather("E").any()
    assert chip.read_weights(0, "f32", 0, 9600)[1] == before
    chip.reset(1, pe=3)
    assert not any(chip.read_memory(3, 0, 131_072))
    chip.reset(0)
    assert chip.status()["tick"] == 0 and not any(chip.read_weights(1, "f32", 0, 100)[1])
    with pytest.raises(ChipError) as refused:
        chip.run(5, mode=1)  # the reset forgot the label
    assert refused.value.code == 7


def test_inference_networks_keep_weights_and_neuron_state_only() -> None:
    chip = Chip()
    chip.load(EpropConfig(weight_format="int4", training=False))
    names = {region.name for region in chip.pes[1].sram.regions}
    assert {"W_in", "W_rec", "neuron state"} <= names and "trace E" not in names
    assert chip.pes[1].region("W_in").size == payload_bytes(12 * 80, "int4")
    write(chip, random_weights(2, scale=3.0), "int4", chunk=4096)
    inject(chip, 2)
    result = chip.run(20, mode=0)
    assert result.outputs.shape == (20, 12) and result.spikes.sum() > 0
    with pytest.raises(ChipError) as refused:
        chip.run(20, mode=1)
    assert refused.value.code == 7
