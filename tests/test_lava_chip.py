"""A live Lava chip (``LavaChip``): bit-exact runs of LIF and ATRLIF networks, mid-run weight
writes through the fast path, and no process left behind after any failure (spec
loihi2_lava_nir.md §5, §10.4)."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np
import pytest

from hwloop.quantize import lava_dense_weights
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lava_chip import STOP_GRACE, LavaChip, LavaChipError
from simulators.loihi2.network import LifNetwork, emulate
from test_loihi2 import assert_trajectories_equal, random_network, sample

TIMEOUT = 60.0  # seconds any one chip call may take (LavaChip's own timeout: no call hangs)
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark = pytest.mark.timeout(180)  # a hard limit per test on top of it
REPO = Path(__file__).resolve().parents[1]


def legal_weights(rng: np.random.Generator, held: DenseWeights) -> np.ndarray:
    """New weights on ``held``'s grid, about a third of them at the grid's two ends."""
    shape = held.weights.shape
    raw = np.where(rng.random(shape) < 0.35, rng.choice([-1000.0, 1000.0], shape),
                   rng.uniform(-300, 300, shape))
    return lava_dense_weights(raw, held.num_weight_bits, held.sign_mode)


def grid_ends(held: DenseWeights) -> list[int]:
    return lava_dense_weights(np.array([-1000, 1000]), held.num_weight_bits,
                              held.sign_mode).tolist()


def spikes_in(network: LifNetwork, steps: int, samples: int, rng: np.random.Generator,
              rate: float = 0.3) -> np.ndarray:
    width = network.layers[0].w_in.weights.shape[1]
    return (rng.random((samples, steps, width)) < rate).astype(np.int64)


# --- processes, read from /proc (zombies are dead; reaping orphans is init's job) ----------


def processes() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, process group) of every living process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            state, parent, group = stat[stat.rindex(")") + 2 :].split()[:3]
            if state != "Z":
                found[int(entry)] = (int(parent), int(group))
    return found


def in_group(group: int, wait: float = 10.0) -> list[int]:
    """The processes still in ``group`` after waiting up to ``wait`` s for them to end."""
    deadline = time.monotonic() + wait
    while True:
        left = [pid for pid, (_, g) in processes().items() if g == group]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def descendants(pid: int) -> set[int]:
    table = processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier}
        found |= frontier
    return found


# --- parity -----------------------------------------------------------------------------


@pytest.mark.parametrize("sizes,regime,hidden,samples,steps", [
    ([256, 5], "busy", "lif", 3, 500), ([24, 16, 5], "busy", "lif", 4, 200),
    ([7, 5], "wide", "lif", 4, 100), ([32, 5], "extreme", "lif", 3, 300),
    ([24, 16, 5], "busy", "atrlif", 4, 200), ([32, 5], "extreme", "atrlif", 3, 300)])
def test_run_equals_the_emulator_at_every_step(sizes: list[int], regime: str, hidden: str,
                                               samples: int, steps: int) -> None:
    rng = np.random.default_rng(sum(sizes) * 7 + steps)
    network, _ = random_network(rng, 12, sizes, regime, hidden)
    inputs = spikes_in(network, steps, samples, rng, 0.5 if regime == "extreme" else 0.3)
    with LavaChip(network, steps, timeout=TIMEOUT) as chip:
        lava = chip.run(inputs)
    emulator, _ = emulate(network, inputs)
    assert_trajectories_equal(lava, emulator)
    if regime == "busy":
        assert all(int(s.sum()) > 0 for s in emulator.spikes), "every layer spikes"


@pytest.mark.parametrize("hidden", ["lif", "atrlif"])
def test_writes_between_and_within_samples_match_the_chained_emulator(hidden: str) -> None:
    rng = np.random.default_rng(11)
    network, _ = random_network(rng, 10, [16, 12, 4], "busy", hidden)
    inputs = spikes_in(network, 80, 3, rng)
    with LavaChip(network, 80, timeout=TIMEOUT) as chip:
        head = chip.run(inputs[:1, :50])  # a sample stopped after 50 of its 80 steps
        expected, state = emulate(network, inputs[:1, :50])
        assert_trajectories_equal(head, expected)
        for layer, connection in [(0, "w_in"), (0, "w_rec"), (1, "w_rec"), (2, "w_in")]:
            held = getattr(network.layers[layer], connection)
            weights = legal_weights(rng, held)
            assert [weights.min(), weights.max()] == grid_ends(held)  # the range's extremes
            np.testing.assert_array_equal(chip.write(layer, connection, weights), weights)
            network = network.with_weights(layer, connection, replace(held, weights=weights))
        tail = chip.run(inputs[:1, 50:], reset=False)  # continues with the new weights
        expected, state = emulate(network, inputs[:1, 50:], state)
        assert_trajectories_equal(tail, expected)
        chained = chip.run(inputs[1:], reset=False)  # each sample continues the one before
        for index in range(2):
            expected, state = emulate(network, inputs[1 + index : 2 + index], state)
            assert_trajectories_equal(sample(chained, index), expected)
        fresh = chip.run(inputs)
        assert_trajectories_equal(fresh, emulate(network, inputs)[0])
        for layer, ours in zip(chip.network.layers, network.layers):
            np.testing.assert_array_equal(layer.w_in.weights, ours.w_in.weights)


def test_fast_and_slow_weight_paths_agree_and_bad_writes_change_nothing() -> None:
    rng = np.random.default_rng(12)
    network, _ = random_network(rng, 8, [6, 3], "wide")
    with LavaChip(network, 40, timeout=TIMEOUT) as chip:
        for layer, connection in [(0, "w_in"), (0, "w_rec"), (1, "w_in")]:
            held = getattr(network.layers[layer], connection)
            np.testing.assert_array_equal(chip.read(layer, connection), held.weights)
            np.testing.assert_array_equal(chip.read_slow(layer, connection), held.weights)
            fast = legal_weights(rng, held)
            np.testing.assert_array_equal(chip.write(layer, connection, fast), fast)
            np.testing.assert_array_equal(chip.read(layer, connection), fast)
            np.testing.assert_array_equal(chip.read_slow(layer, connection), fast)
            slow = legal_weights(rng, held)
            chip.write_slow(layer, connection, slow)
            np.testing.assert_array_equal(chip.read(layer, connection), slow)
            np.testing.assert_array_equal(chip.read_slow(layer, connection), slow)
        held = chip.network.layers[0].w_in
        off_grid = held.weights.copy()
        off_grid[0, 0] = 1000  # beyond every sign mode's range
        bad_writes = [(0, "w_in", held.weights[:, :-1]), (0, "w_in", off_grid),
                      (0, "w_in", held.weights.astype(np.float64)), (1, "w_rec", held.weights),
                      (2, "w_in", held.weights), (0, "w_out", held.weights)]
        for layer, connection, weights in bad_writes:
            with pytest.raises(ValueError):
                chip.write(layer, connection, weights)
            with pytest.raises(ValueError):
                chip.write_slow(layer, connection, weights)
        np.testing.assert_array_equal(chip.read(0, "w_in"), held.weights)
        inputs = spikes_in(network, 40, 2, rng)
        assert_trajectories_equal(chip.run(inputs), emulate(chip.network, inputs)[0])


# --- faults -----------------------------------------------------------------------------


def small_chip(timeout: float = TIMEOUT) -> LavaChip:
    network, _ = random_network(np.random.default_rng(3), 6, [5, 3], "busy")
    return LavaChip(network, 20, timeout=timeout)


@pytest.mark.parametrize("victim", ["model", "child"])
def test_a_killed_process_fails_the_next_call_and_leaves_no_process(victim: str) -> None:
    resource_tracker.ensure_running()  # Python's own helper, shared by every spawn: not ours
    before = descendants(os.getpid())
    chip = small_chip().start()
    pids = chip.model_pids()
    group = os.getpgid(pids[0])
    assert group != os.getpgrp() and all(os.getpgid(pid) == group for pid in pids)
    assert len(descendants(os.getpid()) - before) > len(pids)  # models, runtime service, child
    os.kill(pids[2] if victim == "model" else group, signal.SIGKILL)  # the child leads the group
    started = time.monotonic()
    with pytest.raises(LavaChipError, match="died"):
        chip.run(np.zeros((1, 20, 6), dtype=np.int64))
    assert time.monotonic() - started < TIMEOUT
    assert in_group(group) == []
    assert descendants(os.getpid()) - before == set()
    with pytest.raises(LavaChipError, match="not running"):
        chip.read(0, "w_in")
    chip.stop()  # idempotent


def test_a_hung_call_times_out_and_leaves_no_process() -> None:
    chip = small_chip().start()
    group = os.getpgid(chip.model_pids()[0])
    chip.timeout = 2.0
    os.kill(chip.model_pids()[1], signal.SIGSTOP)  # the run can never finish
    started = time.monotonic()
    with pytest.raises(LavaChipError, match="longer than 2 s"):
        chip.run(np.zeros((1, 20, 6), dtype=np.int64))
    assert time.monotonic() - started < 2.0 + STOP_GRACE
    assert in_group(group) == []


def test_a_chip_never_stopped_is_cleaned_up_when_collected() -> None:
    chip = small_chip().start()
    group = os.getpgid(chip.model_pids()[0])
    del chip
    gc.collect()
    assert in_group(group) == []


EXIT_SCRIPT = """
import os, time
import numpy as np
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.lava_chip import LavaChip
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import LifLayer, LifNetwork

neurons = LifParameters(du=0, dv=0, vth=10, bias_mant=np.zeros(2, int), bias_exp=np.zeros(2, int))
network = LifNetwork((LifLayer(DenseWeights.prepare(np.full((2, 3), 64)), neurons),))
chip = LavaChip(network, 5, timeout=60).start()
chip.run(np.ones((1, 5, 3), dtype=np.int64))
print(os.getpgid(chip.model_pids()[0]), time.time(), flush=True)
"""  # and ends without stopping the chip


@pytest.mark.parametrize("ending", ["exit", "SIGKILL"])
def test_a_chip_never_stopped_is_cleaned_up_when_its_owner_ends(ending: str) -> None:
    script = EXIT_SCRIPT + ("import signal; os.kill(os.getpid(), signal.SIGKILL)\n"
                            if ending == "SIGKILL" else "")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    ended = time.time()
    assert done.returncode == (0 if ending == "exit" else -signal.SIGKILL), done.stderr[-2000:]
    group, printed = done.stdout.split()
    assert ended - float(printed) < STOP_GRACE + 5, "the script must end promptly"
    assert in_group(int(group)) == []  # after a SIGKILL, the chip's child kills its own group
