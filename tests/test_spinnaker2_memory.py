"""SpiNNaker 2 memory: the PE SRAM allocator and the placement of the e-prop reference network
(spec A3, A4.2, A4.4; docs/spinnaker2.md)."""

from __future__ import annotations

import pytest

from simulators.spinnaker2.mapping import (
    EpropNetwork,
    map_network,
    model_state_bytes,
)
from simulators.spinnaker2.sram import PE_SRAM_BYTES, Sram, SramOverflowError

REFERENCE = EpropNetwork(inputs=80, hidden=120, outputs=12)


def test_the_reference_network_holds_the_published_680_kb_of_training_state() -> None:
    assert (REFERENCE.parameters, REFERENCE.synapses) == (25_440, 24_000)
    # 25,440 × 16 B (weight, gradient, Adam m, v) + 24,000 × 12 B (three traces) + 200 × 4 B
    assert model_state_bytes(REFERENCE) == 695_840  # 679.5 KiB: "680 KB"
    assert model_state_bytes(REFERENCE, optimizer="sgd") == 695_840 - 25_440 * 8


def test_the_reference_network_maps_onto_12_pes() -> None:
    placement = map_network(REFERENCE)
    assert len(placement.pes) == 12 and [sram.pe for sram in placement.pes] == list(range(12))
    assert placement.slices == [(k, k + 12) for k in range(0, 120, 12)]
    workers = placement.pes[1:-1]
    # 2,400 synapses × 28 B + 200 presynaptic ε^v × 4 B + 12 neurons × 32 B
    assert all(sram.model_bytes == 68_384 for sram in workers)
    assert placement.pes[-1].model_bytes == 120 * 12 * 16 + 120 * 4 + 12 * 32
    assert all(sram.used <= PE_SRAM_BYTES for sram in placement.pes)
    table = placement.table()
    assert "worker, neurons 108..119" in table and "readout" in table


def test_a_single_pe_mapping_is_refused_with_the_table_of_regions_and_the_shortfall() -> None:
    with pytest.raises(SramOverflowError) as refused:
        map_network(REFERENCE, single_pe=True)
    message = str(refused.value)
    for region in ("code", "W_in", "W_rec", "Adam v", "trace E", "presynaptic eps_v", "W_out",
                   "readout state"):
        assert region in message
    assert "needs 738,752 B of 131,072 B: short by 607,680 B" in message
    assert "beyond the SRAM" in message


def test_slices_too_large_for_a_pe_are_refused_before_anything_runs() -> None:
    with pytest.raises(SramOverflowError, match="PE 1: "):
        map_network(REFERENCE, per_worker=20)
    inference = map_network(REFERENCE, per_worker=60, optimizer="none", training=False)
    assert len(inference.pes) == 4  # weights only: 200 × 60 × 4 B per worker


def test_the_allocator_aligns_places_all_or_nothing_and_keeps_its_reserves() -> None:
    sram = Sram(3)
    assert sram.free == 93_184  # 128 KiB less code, stack and heap, runtime
    assert sram.alloc("a", 3) == 37_888  # right after the 37,888 B of reserves
    assert sram.alloc("b", 8, align=16) == 37_904  # the next 16-byte boundary
    before = list(sram.regions)
    with pytest.raises(SramOverflowError, match="short by"):
        sram.place([("fits", 8), ("too big", sram.free)])
    assert sram.regions == before  # nothing of a refused placement stays
    with pytest.raises(ValueError, match="exceed"):
        Sram(0, reserves={"code": PE_SRAM_BYTES + 1})
    with pytest.raises(ValueError, match="size >= 0"):
        sram.alloc("negative", -1)
