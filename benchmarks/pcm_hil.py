"""Cost of the PCM device in the loop.

    python -m benchmarks.pcm_hil

1. Program + read back of one 256×256 layer in statistical mode (every cell written), median
   of 50 repetitions (target ≤ 5 ms), and the same in verify (pulse-level) mode.
2. Wall time per training step of HYPR (λ = 10) on the cue task on the host alone and with the
   PCM backend in the loop (4 bits, each scheme; and mixed with the products computed on the
   crossbar, ``forward=device``), measured side by side in this run; the ratio is the HIL
   overhead (target ≤ 1.5×). Median over the steps of three epochs per setting, trained in
   turn after a warm-up epoch each. Writes benchmarks/results/pcm_hil.json.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from hwloop.backends import open_backend
from hwloop.config import build_config
from hwloop.trainer import Trainer
from hwloop.tasks import make_task

RESULTS = Path(__file__).parent / "results"


def program_and_read_ms(spec: str, repeats: int) -> float:
    weights = np.random.default_rng(0).normal(size=(256, 256))
    times = []
    for _ in range(repeats):
        backend = open_backend(spec)
        backend.declare("layer", weights.shape)
        start = time.perf_counter()
        backend.program("layer", weights)
        backend.read("layer")
        times.append(time.perf_counter() - start)
    return 1e3 * median(times)


def step_seconds(devices: dict[str, dict[str, Any]], rounds: int = 3,
                 **base: Any) -> dict[str, float]:
    """Median wall time per training step for each device setting (name → config values, on
    top of ``base``, by default HYPR λ = 10 with BRF neurons on cue). After one warm-up epoch
    each, the settings train one epoch in turn, ``rounds`` times, so that a slow spell of the
    machine hits them all alike."""
    trainers = {}
    for name, device in devices.items():
        settings = {"task": "cue", "neuron": "brf", "learner": "hypr", "lam": 10, "seed": 0,
                    **base, **device}
        config = build_config(None, [], epochs=rounds + 1, **settings)
        trainer = Trainer(config, make_task(config.task, config.task_options, config.seed))
        trainer.train_epoch()  # warm-up
        trainers[name] = trainer
    seconds: dict[str, list[float]] = {name: [] for name in devices}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            trainer.train_epoch(lambda metrics, name=name: seconds[name].append(metrics.seconds))
    return {name: median(values) for name, values in seconds.items()}


def main() -> None:
    writes = {
        "statistical": program_and_read_ms("pcm", 50),
        "verify": program_and_read_ms("pcm://?mode=verify", 5),
    }
    settings: dict[str, dict[str, Any]] = {"host only": {}}
    for scheme in ("direct", "mixed", "sign", "stochastic"):
        settings[f"pcm 4-bit, {scheme}"] = dict(backend="pcm", bits=4, scheme=scheme, threshold=0.5)
    settings["pcm 4-bit, mixed, forward device"] = dict(backend="pcm", bits=4, scheme="mixed",
                                                        forward="device")
    steps = step_seconds(settings)
    host = steps.pop("host only")
    print(f"{'256×256 program + read back':<32}{'ms':>10}")
    for mode, ms in writes.items():
        print(f"{mode:<32}{ms:>10.2f}")
    print(f"\n{'training step (cue, HYPR λ=10)':<36}{'ms':>10}{'× host':>10}")
    print(f"{'host only':<36}{1e3 * host:>10.2f}{1.0:>10.2f}")
    for name, seconds in steps.items():
        print(f"{name:<36}{1e3 * seconds:>10.2f}{seconds / host:>10.2f}")
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": platform.processor() or platform.machine(),
        "program_and_read_ms": writes,
        "step_ms": {"host only": 1e3 * host, **{k: 1e3 * v for k, v in steps.items()}},
        "overhead": {k: v / host for k, v in steps.items()},
    }
    (RESULTS / "pcm_hil.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
