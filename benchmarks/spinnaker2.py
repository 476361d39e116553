"""SpiNNaker 2: the serial link, the emulator's speed, its modelled real-time margin and
energy, and training through it and on it.

    python -m benchmarks.spinnaker2

1. Link: 1 KiB and 64 KiB weight-memory writes (``RemoteChip.write_memory``: framed, CRC-checked,
   executed and acknowledged) over a pseudo-terminal and over socket://127.0.0.1, against a raw
   pyserial echo over the same transport in the same run (write, read back, 4 KiB pieces: a pty
   holds about 4 KiB). Latency: a PING round trip against a raw echo of the same bytes.
   Target: link ≥ 0.5× raw.
2. Emulator ticks per second on the reference network (80 → 120 ALIF → 12, log-Mel-like real
   inputs, 100 steps a sample), f32 and s16.15, inference and training.
3. Real time (cycle model): the busiest PE's cycles per tick against the budget
   clock × tick (150 MHz × 1 ms), while training the reference network.
4. Energy per training sample of the reference network at the paper's real time (10 ms a
   tick), from the run's own cycle and packet counts — a model estimate whose cycle energy is
   calibrated to the ≈ 26 mJ derived from the paper (spec A3, A4.5), shown next to it.
5. Training (final test accuracy, seeds 0–4 / 0–2):
   - cue, HYPR (λ = 10, the BRF preset, 15 epochs): float against ``spinnaker2`` int8 in the
     loop; target within 2 percentage points;
   - cue, e-prop on the chip (``eprop_alif``, ``--learner eprop-onchip``, 3 epochs) against
     hwloop's host e-prop on the same network;
   - keywords: SHD-shaped synthetic spike files (4 classes, 80 channels, 100 steps of 4 ms;
     the ``shd`` task keeps SHD's 20 outputs), e-prop on the chip (lr 0.003, one Adam step a
     sample) against host e-prop (lr 0.03, one step a batch of 16), 5 epochs.

Prints a table and writes benchmarks/results/spinnaker2.json.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median, stdev
from typing import Any

import h5py
import numpy as np
import serial

from hwloop import train
from hwloop.config import build_config
from simulators.spinnaker2.chip import Chip, EpropConfig
from simulators.spinnaker2.energy import PAPER_SAMPLE_ENERGY_J
from simulators.spinnaker2.formats import encode
from simulators.spinnaker2.link import connect
from simulators.spinnaker2.server import start_server

RESULTS = Path(__file__).parent / "results"
PIECE = 4096
"""Bytes a raw echo writes before reading them back (a pty buffers about 4 KiB)."""

ECHO = r"""
import os, select, socket, sys, tty
if sys.argv[1] == "pty":
    master, slave = os.openpty(); tty.setraw(master); tty.setraw(slave)
    print(os.ttyname(slave), flush=True)
    read, write, fd = (lambda: os.read(master, 65536)), (lambda b: os.write(master, b)), master
else:
    server = socket.create_server(("127.0.0.1", 0))
    print(f"socket://127.0.0.1:{server.getsockname()[1]}", flush=True)
    client, _ = server.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read, write, fd = (lambda: client.recv(65536)), client.send, client.fileno()
while True:
    select.select([fd], [], [])
    data = read()
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[write(view):]
"""


# --- 1. the link --------------------------------------------------------------------------


def raw_echo(transport: str, size: int, repeats: int, pings: int) -> tuple[float, float]:
    """(bytes/s of a raw pyserial write + read back of ``size`` bytes, median round trip (s)
    of 22 bytes — a PING frame's size) through an echo process on ``transport``."""
    echo = subprocess.Popen([sys.executable, "-c", ECHO, transport], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert echo.stdout is not None
        port = serial.serial_for_url(echo.stdout.readline().decode().strip(), timeout=5)
        data = (bytes(range(1, 256)) * (size // 255 + 1))[:size]
        started = time.perf_counter()
        for _ in range(repeats):
            for at in range(0, size, PIECE):
                piece = data[at:at + PIECE]
                port.write(piece)
                if port.read(len(piece)) != piece:
                    raise RuntimeError("the echo returned other bytes")
        rate = size * repeats / (time.perf_counter() - started)
        trips = []
        for _ in range(pings):
            started = time.perf_counter()
            port.write(data[:22])
            port.read(22)
            trips.append(time.perf_counter() - started)
        port.close()
        return rate, median(trips)
    finally:
        echo.kill()
        echo.wait()


def link_rates(url: str, size: int, repeats: int, pings: int) -> tuple[float, float]:
    """(bytes/s of ``write_memory`` of ``size`` bytes, median PING round trip (s)) over ``url``."""
    data = bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8))
    with connect(url) as remote:
        started = time.perf_counter()
        for index in range(repeats):
            remote.write_memory(1 + index % 8, 40_000, data)
        rate = size * repeats / (time.perf_counter() - started)
        trips = []
        for _ in range(pings):
            started = time.perf_counter()
            remote.ping()
            trips.append(time.perf_counter() - started)
    return rate, median(trips)


def link() -> dict[str, Any]:
    """Throughput and latency of the link against raw pyserial, per transport and size."""
    results: dict[str, Any] = {}
    for transport, spec in (("socket", "socket://127.0.0.1:0"), ("pty", "pty")):
        with start_server(spec, n_pe=16) as server:
            for size, repeats in ((1024, 400), (65_536, 30)):
                raw, raw_trip = raw_echo(transport, size, repeats, 300)
                rate, trip = link_rates(server.url, size, repeats, 300)
                results[f"{transport} {size // 1024} KiB"] = {
                    "link_MB_s": rate / 1e6, "raw_MB_s": raw / 1e6, "ratio": rate / raw,
                    "link_ping_us": 1e6 * trip, "raw_echo_us": 1e6 * raw_trip,
                }
    return results


# --- 2.-4. the emulator ---------------------------------------------------------------------


def reference_sample(rng: np.random.Generator, steps: int = 100) -> np.ndarray:
    """Log-Mel-like inputs (steps, 80): positive, smooth in time, normalised to max 1."""
    energy = np.cumsum(rng.normal(0, 0.3, (steps, 80)), axis=0)
    values = np.exp(energy - energy.max())
    return values / values.max()


def reference_chip(numeric: str, training: bool, tick_s: float = 1e-3) -> Chip:
    """The 80-120-12 network on 12 PEs with weights of the e-prop reference's scale."""
    chip = Chip(numeric=numeric, tick_s=tick_s)
    chip.load(EpropConfig(training=training, weight_format=numeric))
    rng = np.random.default_rng(1)
    for projection, shape in enumerate(((120, 80), (120, 120), (12, 120))):
        weights = rng.normal(0, 1.5 / np.sqrt(shape[1]), shape)
        chip.write_weights(projection, numeric, 1.0, 0, weights.size,
                           encode(weights, numeric).payload)
    return chip


def run_samples(chip: Chip, samples: int, mode: int) -> tuple[float, list[Any]]:
    """(ticks per second, the RunResults) of ``samples`` reference samples in ``mode``."""
    rng = np.random.default_rng(2)
    ticks, results = 0, []
    started = time.perf_counter()
    for index in range(samples):
        for step, row in enumerate(reference_sample(rng)):
            chip.inject_values(step, list(enumerate(row.tolist())))
        if mode == 1:
            chip.target(index, index % 12)
        results.append(chip.run(100, mode))
        ticks += results[-1].ticks
    return ticks / (time.perf_counter() - started), results


def emulator() -> dict[str, Any]:
    """Ticks per second (f32, s16.15; inference, training), the real-time margin, energy."""
    rates: dict[str, float] = {}
    for numeric in ("f32", "s16.15"):
        for mode, name in ((0, "inference"), (1, "training")):
            rate, _ = run_samples(reference_chip(numeric, training=mode == 1), 3, mode)
            rates[f"{numeric} {name}"] = rate
    chip = reference_chip("f32", training=True)
    _, results = run_samples(chip, 3, 1)
    cycles = np.concatenate([result.cycles for result in results])
    budget = chip.clock_hz * chip.tick_s
    timing = {
        "budget_cycles": budget, "peak_cycles": int(cycles.max()),
        "mean_worker_cycles": float(cycles[:, 1:-1].mean()),
        "peak_fraction_of_budget": float(cycles.max() / budget),
        "overruns": sum(result.overruns for result in results),
    }
    paced = reference_chip("f32", training=True, tick_s=10e-3)
    _, paced_results = run_samples(paced, 3, 1)
    energy = {"per_sample_mJ": 1e3 * mean(r.energy_j for r in paced_results),
              "paper_mJ": 1e3 * PAPER_SAMPLE_ENERGY_J, "tick_ms": 10.0}
    return {"ticks_per_second": rates, "real_time": timing, "energy": energy}


# --- 5. training -------------------------------------------------------------------------


def write_keywords(directory: Path, train_samples: int = 240, test_samples: int = 80,
                   seed: int = 0) -> None:
    """SHD-shaped spike files (shd_train.h5, shd_test.h5) of 4 "keywords": each a sweep of
    activity across the 700 cochlea units (up, down, up-down, down-up) over 400 ms, with
    timing jitter, dropped spikes and background noise."""
    rng = np.random.default_rng(seed)

    def sample(label: int) -> tuple[np.ndarray, np.ndarray]:
        phase = np.linspace(0.0, 1.0, 60)
        path = {0: phase, 1: 1 - phase, 2: 1 - np.abs(2 * phase - 1),
                3: np.abs(2 * phase - 1)}[label]
        start, length = rng.uniform(0.0, 0.05), rng.uniform(0.25, 0.33)
        times = np.repeat(start + length * phase, 6) + rng.normal(0, 0.004, 360)
        units = np.repeat(100 + 500 * path, 6) + rng.normal(0, 15, 360)
        kept = rng.random(360) < 0.8
        noise_times, noise_units = rng.uniform(0, 0.4, 60), rng.uniform(0, 700, 60)
        times = np.concatenate([times[kept], noise_times]).clip(0, 0.399)
        units = np.concatenate([units[kept], noise_units]).clip(0, 699)
        order = np.argsort(times)
        return times[order], units[order].astype(np.uint16)

    for name, count in (("shd_train.h5", train_samples), ("shd_test.h5", test_samples)):
        labels = rng.integers(0, 4, count)
        spikes = [sample(int(label)) for label in labels]
        with h5py.File(directory / name, "w") as file:
            times = file.create_dataset("spikes/times", (count,),
                                        dtype=h5py.vlen_dtype(np.float16))
            units = file.create_dataset("spikes/units", (count,),
                                        dtype=h5py.vlen_dtype(np.uint16))
            for index, (t, u) in enumerate(spikes):
                times[index], units[index] = t.astype(np.float16), u
            file.create_dataset("labels", data=labels.astype(np.uint16))


KEYWORD_OPTIONS = {"num_channels": 80, "bin_ms": 4.0, "max_time_ms": 400.0, "clip_to_1": True,
                   "validation_fraction": 0.0, "ignore_first": 0}
CUE_HIL = {"float (host only)": {}, "spinnaker2 int8, direct": {"backend": "spinnaker2",
                                                                 "bits": 8}}


def final_accuracies(settings: dict[str, dict[str, Any]], seeds: int, scratch: Path,
                     **base: Any) -> dict[str, dict[str, Any]]:
    """Final test accuracy (%) per setting over ``seeds`` seeds, and seconds per run (runs in
    fresh folders below ``scratch``)."""
    return {name: _accuracy(setting, seeds, Path(tempfile.mkdtemp(dir=scratch)), base)
            for name, setting in settings.items()}


def _accuracy(setting: dict[str, Any], seeds: int, folder: Path, base: dict[str, Any]
              ) -> dict[str, Any]:
    finals, seconds = [], []
    for seed in range(seeds):
        config = build_config(None, [], seed=seed, **base, **setting)
        started = time.perf_counter()
        record = train(config, folder / f"seed-{seed}")
        seconds.append(time.perf_counter() - started)
        finals.append(100 * record.epochs[-1].test_accuracy)
    return {"final_test_accuracy": finals, "mean": mean(finals),
            "std": stdev(finals) if len(finals) > 1 else 0.0, "seconds_per_run": mean(seconds)}


def training() -> dict[str, Any]:
    """The three training comparisons of the module doc."""
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        cue_hil = final_accuracies(CUE_HIL, 5, scratch, task="cue", epochs=15)
        onchip = {"host e-prop (hwloop)": {"learner": "eprop"},
                  "e-prop on the chip (f32)": {"learner": "eprop-onchip",
                                               "backend": "spinnaker2"}}
        cue_onchip = final_accuracies(onchip, 3, scratch, task="cue", neuron="eprop_alif",
                                      epochs=3, batch_size=16)
        data = scratch / "keywords"
        data.mkdir()
        write_keywords(data)
        # one Adam step per sample on the chip, per batch of 16 on the host: each its own lr
        keywords = final_accuracies(
            {name: {**setting, "lr": 0.003 if "chip" in name else 0.03}
             for name, setting in onchip.items()},
            1, scratch, task="shd", neuron="eprop_alif", epochs=5, batch_size=16,
            loss="mean_output_ce", init_gain=4.0,
            task_options={**KEYWORD_OPTIONS, "data_dir": str(data)})
    return {"cue_hil": cue_hil, "cue_onchip": cue_onchip, "keywords_onchip": keywords}


def main() -> None:
    links = link()
    print(f"{'link (write_memory vs raw pyserial echo)':<26}{'link MB/s':>11}{'raw MB/s':>10}"
          f"{'ratio':>7}{'ping µs':>9}{'raw µs':>8}")
    for name, row in links.items():
        print(f"{name:<26}{row['link_MB_s']:>11.2f}{row['raw_MB_s']:>10.2f}{row['ratio']:>7.2f}"
              f"{row['link_ping_us']:>9.0f}{row['raw_echo_us']:>8.0f}")
    chip = emulator()
    print(f"\n{'emulator, 80-120-12, 100 steps':<40}{'ticks/s':>10}")
    for name, rate in chip["ticks_per_second"].items():
        print(f"{name:<40}{rate:>10.0f}")
    timing, energy = chip["real_time"], chip["energy"]
    print(f"\n{'real time (model), training, 150 MHz, 1 ms':<46}{'cycles':>10}")
    print(f"{'budget per PE-tick':<46}{timing['budget_cycles']:>10,.0f}")
    print(f"{'busiest PE-tick':<46}{timing['peak_cycles']:>10,}")
    print(f"{'mean worker PE-tick':<46}{timing['mean_worker_cycles']:>10,.0f}")
    print(f"{'overruns':<46}{timing['overruns']:>10}")
    print(f"\n{'energy per training sample (model estimate)':<46}{'mJ':>10}")
    print(f"{'emulated run, 10 ms ticks':<46}{energy['per_sample_mJ']:>10.1f}")
    print(f"{'paper (derived, spec A3)':<46}{energy['paper_mJ']:>10.1f}")
    trained = training()
    for title, key in (("cue, HYPR, 15 epochs, 5 seeds", "cue_hil"),
                       ("cue, eprop_alif, 3 epochs, 3 seeds", "cue_onchip"),
                       ("keywords (SHD-shaped), 5 epochs", "keywords_onchip")):
        rows = trained[key]
        reference = next(iter(rows.values()))["mean"]
        print(f"\n{title:<40}{'test acc %':>14}{'Δ pp':>8}{'s/run':>8}")
        for name, result in rows.items():
            print(f"{name:<40}{result['mean']:>8.2f} ± {result['std']:<4.2f}"
                  f"{result['mean'] - reference:>+8.2f}{result['seconds_per_run']:>8.1f}")
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": platform.processor() or platform.machine(), "link": links, **chip,
               "training": trained}
    (RESULTS / "spinnaker2.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
