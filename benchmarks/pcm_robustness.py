"""Noise robustness on the PCM crossbar: cue task, HYPR, float vs 4-bit PCM in the loop, then
accuracy after drift with and without global drift compensation.

    python -m benchmarks.pcm_robustness             # 3 seeds (a few minutes)
    python -m benchmarks.pcm_robustness --seeds 1   # smoke test

For each seed: train on the host in float32 (no device), and train through ``pcm`` (statistical
PCM-like fit, 4 bits, mixed-precision scheme); report the final test accuracy of both. Then
``hwloop.evaluate`` lets the device each run trained on drift: test accuracy right after
training and after 1 hour, 1 day and 1 month, read without and with global drift
compensation, plus the same on 3 fresh devices per run. Writes
benchmarks/results/pcm_robustness.json and .png.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import hwloop  # noqa: E402
from hwloop.jsonout import dumps  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DRIFT = ["0", "1h", "1d", "1mo"]
EPOCHS = 12
FRESH_DEVICES = 3
SETTINGS = {"task": "cue", "neuron": "brf", "learner": "hypr", "lam": 10, "epochs": EPOCHS}


def study(seed: int, folder: Path) -> dict[str, Any]:
    """Train float and 4-bit PCM runs of ``seed`` into ``folder``; evaluate the PCM one."""
    plain = hwloop.train(hwloop.build_config(seed=seed, **SETTINGS), folder / f"float-{seed}")
    device = hwloop.train(hwloop.build_config(seed=seed, backend="pcm", bits=4, scheme="mixed",
                                              **SETTINGS), folder / f"pcm-{seed}")
    result = hwloop.evaluate(device, drift=DRIFT, device_seeds=FRESH_DEVICES, gdc="both")
    accuracy = {f"{e['device']} {'gdc' if e['gdc'] else 'raw'} {e['drift']}": e["accuracy_mean"]
                for e in result.summary()}
    return {"seed": seed, "float_accuracy": plain.epochs[-1].test_accuracy,
            "pcm_accuracy": device.epochs[-1].test_accuracy, "drift": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [study(seed, Path(folder)) for seed in range(args.seeds)]
    summary = {
        "float_accuracy": mean(r["float_accuracy"] for r in rows),
        "pcm_accuracy": mean(r["pcm_accuracy"] for r in rows),
        "drift": {key: mean(r["drift"][key] for r in rows) for key in rows[0]["drift"]},
    }
    print(f"cue task, HYPR λ=10, BRF, {EPOCHS} epochs, mean of {args.seeds} seeds")
    print(f"{'training':<28}{'test accuracy':>14}")
    print(f"{'float (host only)':<28}{summary['float_accuracy']:>14.4f}")
    print(f"{'PCM 4-bit, mixed scheme':<28}{summary['pcm_accuracy']:>14.4f}")
    print(f"\n{'drift time':<12}" + "".join(f"{h:>16}" for h in (
        "trained, no GDC", "trained, GDC", "fresh, no GDC", "fresh, GDC")))
    for drift in DRIFT:
        print(f"{drift:<12}" + "".join(
            f"{summary['drift'][f'{kind} {mode} {drift}']:>16.4f}"
            for kind in ("trained", "fresh") for mode in ("raw", "gdc")))
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": platform.processor() or platform.machine(), "epochs": EPOCHS,
               "fresh_devices": FRESH_DEVICES, "seeds": rows, "summary": summary}
    (RESULTS / "pcm_robustness.json").write_text(dumps(payload, indent=2) + "\n")
    plot(summary, RESULTS / "pcm_robustness.png")


def plot(summary: dict[str, Any], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8.5, 3.8))
    for kind, marker in (("trained", "s"), ("fresh", "o")):
        for mode, name, style in (("raw", "no drift compensation", "--"), ("gdc", "GDC", "-")):
            axis.plot(DRIFT, [summary["drift"][f"{kind} {mode} {d}"] for d in DRIFT],
                      marker=marker, linestyle=style, label=f"{kind} device, {name}")
    axis.axhline(summary["float_accuracy"], color="grey", linestyle=":", label="float training")
    axis.axhline(0.5, color="0.6", linestyle="-.", label="chance")
    axis.set_xlabel("time since programming (drift)")
    axis.set_ylabel("test accuracy")
    axis.set_title("cue, HYPR, 4-bit PCM (mixed precision)")
    axis.set_ylim(0.4, 1.02)
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
