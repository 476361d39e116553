"""Noise robustness on the PCM crossbar: cue task, HYPR, float vs 4-bit PCM in the loop, then
accuracy after drift with and without global drift compensation.

    python -m benchmarks.pcm_robustness             # 3 seeds (a few minutes)
    python -m benchmarks.pcm_robustness --seeds 1   # smoke test

For each seed: train on the host in float32 (no device), and train through ``pcm`` (statistical
PCM-like fit, 4 bits, mixed-precision scheme); report the final test accuracy of both. Then the
PCM-trained devices are left to drift: test accuracy (forward on the host with the read-back
weights) right after training and after 1 hour, 1 day and 1 month, read without and with global
drift compensation. Writes benchmarks/results/pcm_robustness.json and .png.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from statistics import mean
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hwloop.config import build_config  # noqa: E402
from hwloop.trainer import Trainer  # noqa: E402
from hwloop.tasks import make_task  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DRIFT_TIMES = {"0 s": 0.0, "1 h": 3600.0, "1 day": 86_400.0, "1 month": 30 * 86_400.0}
EPOCHS = 12


def train(seed: int, **device: Any) -> Trainer:
    config = build_config(None, [], task="cue", neuron="brf", learner="hypr", lam=10,
                          epochs=EPOCHS, seed=seed, **device)
    trainer = Trainer(config, make_task(config.task, config.task_options, config.seed))
    for _ in range(EPOCHS):
        trainer.train_epoch()
    return trainer


def drift_accuracies(trainer: Trainer) -> dict[str, dict[str, float]]:
    """Test accuracy at each drift time, read without ("raw") and with GDC."""
    session = trainer.session
    assert session is not None
    backend = session.backend
    result: dict[str, dict[str, float]] = {"raw": {}, "gdc": {}}
    elapsed = 0.0
    for label, seconds in DRIFT_TIMES.items():
        backend.advance_time(seconds - elapsed)
        elapsed = seconds
        for mode in ("raw", "gdc"):
            backend.gdc = mode == "gdc"  # type: ignore[attr-defined]
            session.load_device_weights()
            result[mode][label] = trainer.accuracy(trainer.task.test)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        plain = train(seed)
        device = train(seed, backend="pcm", bits=4, scheme="mixed")
        row = {
            "seed": seed,
            "float_accuracy": plain.accuracy(plain.task.test),
            "pcm_accuracy": device.accuracy(device.task.test),
            "drift": drift_accuracies(device),
        }
        rows.append(row)
        print(f"seed {seed}: float {row['float_accuracy']:.4f}, pcm 4-bit "
              f"{row['pcm_accuracy']:.4f}", flush=True)
    summary = {
        "float_accuracy": mean(r["float_accuracy"] for r in rows),
        "pcm_accuracy": mean(r["pcm_accuracy"] for r in rows),
        "drift": {
            mode: {label: mean(r["drift"][mode][label] for r in rows) for label in DRIFT_TIMES}
            for mode in ("raw", "gdc")
        },
    }
    print(f"\ncue task, HYPR λ=10, BRF, {EPOCHS} epochs, mean of {args.seeds} seeds")
    print(f"{'training':<28}{'test accuracy':>14}")
    print(f"{'float (host only)':<28}{summary['float_accuracy']:>14.4f}")
    print(f"{'PCM 4-bit, mixed scheme':<28}{summary['pcm_accuracy']:>14.4f}")
    print(f"\n{'drift time':<12}{'no GDC':>10}{'with GDC':>10}")
    for label in DRIFT_TIMES:
        print(f"{label:<12}{summary['drift']['raw'][label]:>10.4f}"
              f"{summary['drift']['gdc'][label]:>10.4f}")
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": platform.processor() or platform.machine(), "epochs": EPOCHS,
               "seeds": rows, "summary": summary}
    (RESULTS / "pcm_robustness.json").write_text(json.dumps(payload, indent=2))
    plot(summary, RESULTS / "pcm_robustness.png")


def plot(summary: dict[str, Any], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    labels = list(DRIFT_TIMES)
    for mode, name in (("raw", "no drift compensation"), ("gdc", "global drift compensation")):
        axis.plot(labels, [summary["drift"][mode][k] for k in labels], marker="o", label=name)
    axis.axhline(summary["float_accuracy"], color="grey", linestyle="--", label="float training")
    axis.set_xlabel("time since training")
    axis.set_ylabel("test accuracy")
    axis.set_title("cue, HYPR, 4-bit PCM (mixed precision)")
    axis.set_ylim(0.4, 1.02)
    axis.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
