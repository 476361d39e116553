"""Memory and speed of one training step against the sequence length T: BPTT vs HYPR.

    python -m benchmarks.hypr_scaling            # the full table (about 15-25 minutes)
    python -m benchmarks.hypr_scaling --quick    # T in {250, 1000}, for a smoke test

Network: BRF (the cue preset: exponential mode, slayer_wide), one fully recurrent layer of
N = 256, 15 inputs, batch B = 32, on cue-task inputs. Each configuration runs in a fresh
process. Peak memory is the growth of the process's resident set during one full training step
(gradients + clipping + Adam), measured from just before the step: the kernel's high-water mark
(VmHWM) is reset through /proc/self/clear_refs, so the batch itself (B·T·15 floats) and the
libraries are not counted. Throughput is samples per second of full training steps (the median
of the timed steps). All ratios come from this one run.

Allocator: every configuration runs with glibc's mmap threshold fixed at 32 MiB
(MALLOC_MMAP_THRESHOLD_). glibc's default raises that threshold dynamically up to the size of
the largest block freed, after which the many-megabyte temporaries of each window go to the
heap, whose holes stay resident: the process then grows slowly with the number of windows
although HYPR keeps nothing from them. Fixing the threshold costs no measurable speed (BPTT and
HYPR alike). Two extra rows show HYPR(100) under glibc's default for comparison, and the
snntorch comparison runs under glibc's default (the fixed threshold slowed snntorch down
several-fold, ours not).

A row compares our BPTT on an equivalent recurrent LIF network with snntorch's BPTT (snntorch is
an optional extra: ``pip install -e '.[bench]'``; the row says so when it is absent).
Writes the table to stdout and the same figures to benchmarks/results/hypr_scaling.json, plus a
plot of memory growth against T to benchmarks/results/hypr_scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
LENGTHS = [250, 1000, 4000, 16000]
LEARNERS = ["bptt", "hypr-1", "hypr-10", "hypr-100"]
BATCH, HIDDEN, INPUTS = 32, 256, 15
MIN_SECONDS = 3.0  # time at least this long (and at least one step) per configuration
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}


def _read_status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this (fresh) process and return its figures."""
    import torch

    if spec["learner"].startswith("snntorch"):
        return _snntorch_worker(spec)
    from hwloop.config import build_config
    from hwloop.learning.bptt import BPTT
    from hwloop.learning.hypr import HYPR
    from hwloop.trainer import make_network
    from hwloop.tasks import CueOptions, generate_cue, make_task

    steps = spec["T"]
    neuron = spec.get("neuron", "brf")
    config = build_config(
        overrides=[f"neuron={neuron}", f"hidden=[{HIDDEN}]", "task_options.num_samples=8"]
    )
    task = make_task("cue", {"num_samples": 8}, seed=0)
    network = make_network(config, task)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    options = CueOptions(steps=steps, prob_a=0.6, prob_b=0.6, prob_cue=0.6)
    import numpy as np

    raw, labels = generate_cue(BATCH, options, np.random.default_rng(0))
    inputs = torch.from_numpy(raw).float()
    labels = torch.from_numpy(labels)
    ignore_first = steps - options.seq_len
    learner = BPTT() if spec["learner"] == "bptt" else HYPR(int(spec["learner"].split("-")[1]))

    def train_step(x: torch.Tensor, first: int) -> None:
        learner.compute_gradients(network, x, labels, first)
        torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
        optimizer.step()

    train_step(inputs[:, :50], 30)  # warm-up: thread pools, allocator, optimizer state
    return _measure(lambda: train_step(inputs, ignore_first))


def _measure(step: Any) -> dict[str, Any]:
    """Peak RSS growth of the first call and the median time of calls over MIN_SECONDS."""
    _reset_peak()
    baseline = _read_status("VmRSS")
    times = []
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
    growth = _read_status("VmHWM") - baseline
    while sum(times) < MIN_SECONDS:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    seconds = times[len(times) // 2]
    return {
        "peak_growth_mib": growth / 2**20,
        "seconds_per_step": seconds,
        "samples_per_s": BATCH / seconds,
        "timed_steps": len(times),
    }


def _snntorch_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """snntorch's BPTT on a recurrent LIF network equivalent to ours (neuron=lif)."""
    import numpy as np
    import snntorch
    import torch
    from torch import nn

    from hwloop.tasks import CueOptions, generate_cue

    steps = spec["T"]
    options = CueOptions(steps=steps, prob_a=0.6, prob_b=0.6, prob_cue=0.6)
    raw, labels = generate_cue(BATCH, options, np.random.default_rng(0))
    inputs = torch.from_numpy(raw).float()
    labels = torch.from_numpy(labels)
    ignore_first = steps - options.seq_len

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc_in = nn.Linear(INPUTS, HIDDEN)
            self.lif = snntorch.RLeaky(
                beta=torch.full((HIDDEN,), 0.9), linear_features=HIDDEN, all_to_all=True,
                learn_beta=True, reset_mechanism="zero",
            )
            self.fc_out = nn.Linear(HIDDEN, 2)
            self.readout = snntorch.Leaky(
                beta=torch.full((2,), 0.95), learn_beta=True, reset_mechanism="none"
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spk, mem = self.lif.init_rleaky()
            mem_out = self.readout.init_leaky()
            currents = self.fc_in(x)
            outputs = []
            for t in range(x.shape[1]):
                spk, mem = self.lif(currents[:, t], spk, mem)
                _, mem_out = self.readout(self.fc_out(spk), mem_out)
                outputs.append(mem_out)
            return torch.stack(outputs, 1)

    network = Net()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def train_step(x: torch.Tensor, first: int) -> None:
        optimizer.zero_grad()
        outputs = network(x)[:, first:]
        loss = nn.functional.cross_entropy(
            outputs.reshape(-1, 2), labels.repeat_interleave(outputs.shape[1])
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
        optimizer.step()

    train_step(inputs[:, :50], 30)
    return _measure(lambda: train_step(inputs, ignore_first))


def run_config(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``spec`` in a fresh interpreter; returns its figures or an ``error``."""
    command = [sys.executable, "-m", "benchmarks.hypr_scaling", "--worker", json.dumps(spec)]
    env = dict(os.environ)
    if spec.get("allocator") != "glibc default":
        env.update(FIXED_MMAP_THRESHOLD)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {timeout:.0f} s limit"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def snntorch_available() -> bool:
    try:
        import snntorch  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T in {250, 1000} only")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import torch

    lengths = LENGTHS[:2] if args.quick else LENGTHS
    rows: list[dict[str, Any]] = []
    for steps in lengths:
        for learner in LEARNERS:
            spec = {"learner": learner, "T": steps}
            result = run_config(spec, args.timeout)
            rows.append({**spec, "neuron": "brf", **result})
            _print_row(rows[-1])
    for steps in (lengths[1], lengths[-1]):
        spec = {"learner": "hypr-100", "T": steps, "allocator": "glibc default"}
        rows.append({**spec, "neuron": "brf", **run_config(spec, args.timeout)})
        _print_row(rows[-1])
    default = {"allocator": "glibc default"}
    lif_rows = [{"learner": "bptt", "T": 1000, "neuron": "lif", **default}]
    if snntorch_available():
        lif_rows.append({"learner": "snntorch-bptt", "T": 1000, "neuron": "lif", **default})
    for spec in lif_rows:
        rows.append({**spec, **run_config(spec, args.timeout)})
        _print_row(rows[-1])
    if not snntorch_available():
        rows.append({"learner": "snntorch-bptt", "T": 1000, "neuron": "lif", **default,
                     "error": "snntorch not installed (pip install -e '.[bench]')"})
        _print_row(rows[-1])
    targets = _targets(rows)
    report = {
        "benchmark": "hypr_scaling",
        "command": "python -m benchmarks.hypr_scaling" + (" --quick" if args.quick else ""),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "network": {"neuron": "brf (cue preset)", "B": BATCH, "N": HIDDEN, "inputs": INPUTS,
                    "layers": 1, "recurrence": "full"},
        "allocator": "MALLOC_MMAP_THRESHOLD_=33554432 unless a row says 'glibc default'",
        "rows": rows,
        "targets": targets,
    }
    print()
    for name, target in targets.items():
        print(f"{name}: {target['value']} (target {target['target']}) -> {target['verdict']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hypr_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(rows, RESULTS / "hypr_scaling.png")


def _print_row(row: dict[str, Any]) -> None:
    if not hasattr(_print_row, "header"):
        print(f"{'learner':<15}{'neuron':<8}{'T':>7}{'peak growth MiB':>17}{'s/step':>9}"
              f"{'samples/s':>11}  allocator")
        _print_row.header = True  # type: ignore[attr-defined]
    if "error" in row:
        print(f"{row['learner']:<15}{row['neuron']:<8}{row['T']:>7}  {row['error']}")
    else:
        print(f"{row['learner']:<15}{row['neuron']:<8}{row['T']:>7}{row['peak_growth_mib']:>17.1f}"
              f"{row['seconds_per_step']:>9.3f}{row['samples_per_s']:>11.2f}  "
              f"{row.get('allocator', 'fixed mmap threshold')}")
    sys.stdout.flush()


def _find(
    rows: list[dict[str, Any]], learner: str, steps: int, neuron: str = "brf",
    allocator: str | None = None,
) -> dict | None:
    for row in rows:
        if (row["learner"], row["T"], row["neuron"]) == (learner, steps, neuron) and (
            "error" not in row and row.get("allocator") == allocator
        ):
            return row
    return None


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    return None if a is None or b is None else round(a[key] / b[key], 3)


def _targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def verdict(value: float | None, target: float, at_most: bool) -> str:
        if value is None:
            return "not measured"
        return "met" if (value <= target if at_most else value >= target) else "missed"

    checks = {
        "HYPR(100) peak growth T=16000 / T=1000": (
            _ratio(_find(rows, "hypr-100", 16000), _find(rows, "hypr-100", 1000), "peak_growth_mib"),
            1.2, True),
        "HYPR(100) / BPTT samples/s at T=1000": (
            _ratio(_find(rows, "hypr-100", 1000), _find(rows, "bptt", 1000), "samples_per_s"),
            0.5, False),
        "HYPR(100) / HYPR(1) samples/s at T=1000": (
            _ratio(_find(rows, "hypr-100", 1000), _find(rows, "hypr-1", 1000), "samples_per_s"),
            5.0, False),
        "our BPTT / snntorch BPTT samples/s (LIF, T=1000)": (
            _ratio(_find(rows, "bptt", 1000, "lif", "glibc default"),
                   _find(rows, "snntorch-bptt", 1000, "lif", "glibc default"), "samples_per_s"),
            1.0, False),
    }
    return {
        name: {"value": value, "target": ("<= " if at_most else ">= ") + str(target),
               "verdict": verdict(value, target, at_most)}
        for name, (value, target, at_most) in checks.items()
    }


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for learner in LEARNERS:
        points = [(r["T"], r["peak_growth_mib"]) for r in rows
                  if r["learner"] == learner and r["neuron"] == "brf" and "error" not in r
                  and "allocator" not in r]
        if points:
            axis.plot(*zip(*points), marker="o", label=learner.replace("-", " λ="))
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("sequence length T (steps)")
    axis.set_ylabel("peak memory growth of one step (MiB)")
    axis.set_title(f"BRF, B={BATCH}, N={HIDDEN}: memory vs T")
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
