"""Learning curves of a run, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hwloop.runs import RunRecord  # noqa: E402


def plot_curves(record: RunRecord, path: Path) -> Path:
    """Loss per step and accuracies per epoch, side by side; written atomically to ``path``."""
    config = record.config
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [s.step for s in record.steps]
    loss_axis.plot(steps, [s.loss for s in record.steps], lw=0.8, alpha=0.5, label="per step")
    if record.epochs and record.steps:
        per_epoch = len(record.steps) / len(record.epochs)
        loss_axis.plot(
            [e.epoch * per_epoch for e in record.epochs], [e.train_loss for e in record.epochs],
            marker="o", label="epoch mean",
        )
    loss_axis.set(xlabel="optimizer step", ylabel="training loss", yscale="log")
    loss_axis.legend()
    epochs = [e.epoch for e in record.epochs]
    accuracy_axis.plot(epochs, [e.train_accuracy for e in record.epochs], marker="o", label="train")
    accuracy_axis.plot(epochs, [e.test_accuracy for e in record.epochs], marker="o", label="test")
    if any(e.validation_accuracy is not None for e in record.epochs):
        accuracy_axis.plot(
            epochs, [e.validation_accuracy for e in record.epochs], marker="o", label="validation"
        )
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    accuracy_axis.legend()
    learner = config["learner"] + (f" λ={config['lam']}" if config["learner"] == "hypr" else "")
    figure.suptitle(f"{config['task']} · {config['neuron']} · {learner}")
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(prefix=".curves-", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=100)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
