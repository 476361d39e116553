"""Cost of the PCM device in the loop.

    python -m benchmarks.pcm_hil

1. Program + read back of one 256×256 layer in statistical mode (every cell written), median
   of 50 repetitions (target ≤ 5 ms), and the same in verify (pulse-level) mode.
2. Wall time per training step of HYPR (λ = 10) on the cue task on the host alone and with the
   PCM backend in the loop (4 bits, each scheme; and mixed with the products computed on the
   crossbar, ``forward=device``), measured side by side in this run; the ratio is the HIL
   overhead (target ≤ 1.5×). Median over the steps of two epochs after a warm-up
   epoch. Writes benchmarks/results/pcm_hil.json.
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
from hwloop.learning.training import Trainer
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


def step_seconds(**device: Any) -> float:
    config = build_config(None, [], task="cue", neuron="brf", learner="hypr", lam=10, epochs=3,
                          seed=0, **device)
    trainer = Trainer(config, make_task(config.task, config.task_options, config.seed))
    trainer.train_epoch()  # warm-up
    seconds: list[float] = []
    for _ in range(2):
        trainer.train_epoch(lambda metrics: seconds.append(metrics.seconds))
    return median(seconds)


def main() -> None:
    writes = {
        "statistical": program_and_read_ms("pcm", 50),
        "verify": program_and_read_ms("pcm://?mode=verify", 5),
    }
    host = step_seconds()
    schemes = {
        scheme: step_seconds(backend="pcm", bits=4, scheme=scheme, threshold=0.5)
        for scheme in ("direct", "mixed", "sign", "stochastic")
    }
    schemes["mixed, forward device"] = step_seconds(backend="pcm", bits=4, scheme="mixed",
                                                    forward="device")
    print(f"{'256×256 program + read back':<32}{'ms':>10}")
    for mode, ms in writes.items():
        print(f"{mode:<32}{ms:>10.2f}")
    print(f"\n{'training step (cue, HYPR λ=10)':<36}{'ms':>10}{'× host':>10}")
    print(f"{'host only':<36}{1e3 * host:>10.2f}{1.0:>10.2f}")
    for scheme, seconds in schemes.items():
        print(f"{'pcm 4-bit, ' + scheme:<36}{1e3 * seconds:>10.2f}{seconds / host:>10.2f}")
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": platform.processor() or platform.machine(),
        "program_and_read_ms": writes,
        "step_ms": {"host": 1e3 * host, **{k: 1e3 * v for k, v in schemes.items()}},
        "overhead": {k: v / host for k, v in schemes.items()},
    }
    (RESULTS / "pcm_hil.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
