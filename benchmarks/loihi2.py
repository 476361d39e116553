"""Cost of Loihi 2 in the loop: the emulator against real Lava, the fast weight path against
``Var.set/get``, and training with the emulator in the loop against host-only training.

    python -m benchmarks.loihi2

1. Time steps per second on the same network (64 inputs → 256 recurrent LIF → 10 LIF readout,
   500 steps per sample): the ``loihi2`` emulator runs a batch of 32 samples at once (best of
   three after a warm-up); Lava (fixed_pt) runs samples one by one, in two ways: hwloop's live
   ``LavaChip`` (the network stays up; one message per sample in and out), and the usual Lava
   script (``RingBuffer`` input, ``Monitor`` per state, build, compile, run, read, stop: what
   ``run_in_lava`` does), timed inside its process. Target: emulator ≥ 100× Lava. The runs
   are compared spike for spike on the samples Lava ran.
2. One 256×256 weight write plus read-back on a live Lava network: the fast path (an injector
   port into the Dense and a read-back channel) against ``Var.set`` + ``Var.get``. Target
   ≤ 50 ms (fast) against ≈ 4 s.
3. Wall time per training step of HYPR (λ = 10) on the cue task with ``loihi_lif`` neurons
   (float64), host only against the ``loihi2`` emulator in the loop, measured side by side;
   target ≤ 1.5×.
4. Accuracy: HYPR on the digits task (10 epochs, ``loihi_lif``), float training of the same
   network against training through ``loihi2`` (8 bits, direct scheme; and 4 bits, mixed),
   final test accuracy over five seeds; target: within 2 percentage points of float.

Prints a table and writes benchmarks/results/loihi2.json.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from statistics import mean, median, stdev
from typing import Any

import numpy as np

from benchmarks.pcm_hil import step_seconds
from hwloop import train
from hwloop.config import build_config
from simulators.loihi2.dense import DenseWeights
from simulators.loihi2.isolation import call_isolated
from simulators.loihi2.lava_chip import LavaChip
from simulators.loihi2.lava_run import run_in_lava
from simulators.loihi2.lif import LifParameters
from simulators.loihi2.network import LifLayer, LifNetwork, Trajectory, emulate

RESULTS = Path(__file__).parent / "results"
INPUTS, HIDDEN, READOUT, STEPS, BATCH, LAVA_SAMPLES = 64, 256, 10, 500, 32, 2


def benchmark_network(seed: int = 0) -> LifNetwork:
    """64 → 256 (recurrent) → 10 with random 8-bit weights that keep the layer busy."""
    rng = np.random.default_rng(seed)

    def dense(out: int, into: int, scale: float) -> DenseWeights:
        return DenseWeights.prepare(rng.normal(0.0, scale, (out, into)), 0, 8, "mixed")

    def neurons(size: int, vth: int) -> LifParameters:
        zeros = np.zeros(size, dtype=np.int64)
        return LifParameters(du=1024, dv=410, vth=vth, bias_mant=zeros, bias_exp=zeros)

    hidden = LifLayer(dense(HIDDEN, INPUTS, 60.0), neurons(HIDDEN, 200),
                      dense(HIDDEN, HIDDEN, 20.0))
    readout = LifLayer(dense(READOUT, HIDDEN, 30.0), neurons(READOUT, 131071))
    return LifNetwork((hidden, readout))


def timed_run_in_lava(network: LifNetwork, inputs: np.ndarray) -> tuple[Trajectory, float]:
    """``run_in_lava`` and its wall time (s), measured in the process that runs it."""
    start = time.perf_counter()
    trajectory = run_in_lava(network, inputs)
    return trajectory, time.perf_counter() - start


def same(lava: Trajectory, emulated: Trajectory, samples: slice) -> bool:
    return all(np.array_equal(got, expected[samples])
               for name in ("u", "v", "spikes")
               for got, expected in zip(getattr(lava, name), getattr(emulated, name)))


def steps_per_second() -> dict[str, Any]:
    network = benchmark_network()
    inputs = (np.random.default_rng(1).random((BATCH, STEPS, INPUTS)) < 0.1).astype(np.int64)
    emulate(network, inputs[:, :20])  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        emulated, _ = emulate(network, inputs)
        times.append(time.perf_counter() - start)
    with LavaChip(network, STEPS) as chip:
        start = time.perf_counter()
        lava = chip.run(inputs[:LAVA_SAMPLES])
        chip_seconds = time.perf_counter() - start
    script, script_seconds = call_isolated(timed_run_in_lava, network, inputs[0], timeout=600)
    emulator_rate = BATCH * STEPS / min(times)
    chip_rate = LAVA_SAMPLES * STEPS / chip_seconds
    script_rate = STEPS / script_seconds
    return {"emulator_steps_per_s": emulator_rate, "lava_chip_steps_per_s": chip_rate,
            "lava_script_steps_per_s": script_rate, "ratio_to_chip": emulator_rate / chip_rate,
            "ratio_to_script": emulator_rate / script_rate,
            "identical": same(lava, emulated, slice(0, LAVA_SAMPLES))
            and same(script, emulated, slice(0, 1)),
            "hidden_spike_rate": float(emulated.spikes[0].mean())}


def write_paths(repeats: int = 10) -> dict[str, float]:
    rng = np.random.default_rng(2)
    network = benchmark_network()
    fast, slow = [], []
    with LavaChip(network, 10) as chip:
        chip.run(np.zeros((1, 10, INPUTS), dtype=np.int64))  # the network has started
        for _ in range(repeats):
            weights = DenseWeights.prepare(rng.uniform(-256, 256, (HIDDEN, HIDDEN))).weights
            start = time.perf_counter()
            chip.write(0, "w_rec", weights)
            held = chip.read(0, "w_rec")
            fast.append(time.perf_counter() - start)
            assert np.array_equal(held, weights)
        start = time.perf_counter()
        chip.write_slow(0, "w_rec", weights)
        held = chip.read_slow(0, "w_rec")
        slow.append(time.perf_counter() - start)
        assert np.array_equal(held, weights)
    return {"fast_ms": 1e3 * median(fast), "var_set_get_ms": 1e3 * median(slow)}


ACCURACY_SETTINGS: dict[str, dict[str, Any]] = {
    "float (host only)": {},
    "loihi2, 8 bits, direct": {"backend": "loihi2"},
    "loihi2, 4 bits, mixed": {"backend": "loihi2", "bits": 4, "scheme": "mixed"},
}


def accuracies(seeds: int = 5) -> dict[str, dict[str, Any]]:
    """Final test accuracy (%) per setting over ``seeds`` seeds, digits, 10 epochs."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, device in ACCURACY_SETTINGS.items():
            finals = []
            for seed in range(seeds):
                config = build_config(None, [], task="digits", neuron="loihi_lif",
                                      dtype="float64", epochs=10, seed=seed, **device)
                record = train(config, Path(scratch) / f"{len(results)}-{seed}")
                finals.append(100 * record.epochs[-1].test_accuracy)
            results[name] = {"final_test_accuracy": finals, "mean": mean(finals),
                             "std": stdev(finals)}
    return results


def main() -> None:
    rates = steps_per_second()
    writes = write_paths()
    base = dict(neuron="loihi_lif", dtype="float64")
    steps = step_seconds({"host only": {}, "loihi2 in the loop": {"backend": "loihi2"}}, **base)
    wide = step_seconds({"host only": {}, "loihi2 in the loop": {"backend": "loihi2"}},
                        hidden=[256], **base)
    print(f"{'time steps per second (256 LIF)':<40}{'steps/s':>12}")
    print(f"{'emulator, batch 32':<40}{rates['emulator_steps_per_s']:>12.0f}")
    print(f"{'Lava, live LavaChip, sample by sample':<40}{rates['lava_chip_steps_per_s']:>12.0f}")
    print(f"{'Lava, RingBuffer + Monitors script':<40}{rates['lava_script_steps_per_s']:>12.0f}")
    print(f"{'ratio to LavaChip (target >= 100)':<40}{rates['ratio_to_chip']:>12.0f}")
    print(f"{'ratio to the Lava script':<40}{rates['ratio_to_script']:>12.0f}")
    print(f"{'identical spikes, u, v':<40}{str(rates['identical']):>12}")
    print(f"\n{'256×256 write + read-back':<40}{'ms':>12}")
    print(f"{'fast path (target <= 50)':<40}{writes['fast_ms']:>12.2f}")
    print(f"{'Var.set + Var.get':<40}{writes['var_set_get_ms']:>12.0f}")
    print(f"\n{'training step (cue, HYPR λ=10, loihi_lif)':<44}{'ms':>8}{'× host':>8}")
    for label, measured in (("64 hidden", steps), ("256 hidden", wide)):
        host = measured["host only"]
        for name, seconds in measured.items():
            print(f"{label + ', ' + name:<44}{1e3 * seconds:>8.2f}{seconds / host:>8.2f}")
    trained = accuracies()
    float_mean = trained["float (host only)"]["mean"]
    print(f"\n{'digits, HYPR, loihi_lif, 10 epochs, 5 seeds':<40}{'test acc %':>14}{'Δ pp':>8}")
    for name, result in trained.items():
        print(f"{name:<40}{result['mean']:>8.2f} ± {result['std']:<4.2f}"
              f"{result['mean'] - float_mean:>+8.2f}")
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "accuracy": trained,
        "machine": platform.processor() or platform.machine(),
        "steps_per_second": rates,
        "write_and_read_256x256": writes,
        "step_ms": {"64 hidden": {k: 1e3 * v for k, v in steps.items()},
                    "256 hidden": {k: 1e3 * v for k, v in wide.items()}},
        "overhead": {"64 hidden": steps["loihi2 in the loop"] / steps["host only"],
                     "256 hidden": wide["loihi2 in the loop"] / wide["host only"]},
    }
    (RESULTS / "loihi2.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
