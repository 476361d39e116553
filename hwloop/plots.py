"""Learning curves of a run, drawn with matplotlib's Agg backend (no display needed).

``plot_curves`` writes ``curves.png`` and ``curves.svg`` into the run directory. The figure has
one panel for the training loss per optimizer step, one for the accuracies per epoch and, for
hardware-in-the-loop runs, one for what each update wrote to the device. It is cheap enough to
redraw after every epoch: long per-step series are thinned before drawing (``thin``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from hwloop.atomic import atomic_write  # noqa: E402
from hwloop.backends import parse_backend_spec  # noqa: E402
from hwloop.runs import RunRecord, best_epoch, selection_accuracy  # noqa: E402

if TYPE_CHECKING:
    from hwloop.evaluation import Evaluation

CURVES = "curves"
DPI = 110
PANEL_SIZE = (5.0, 4.4)  # inches per panel (width, height)
MAX_POINTS = 1000  # a longer series is thinned to about this many drawn points
MAX_EPOCH_MARKERS = 40  # more epochs than this: lines without markers
LEGEND_DROP = 34.0  # points from the bottom of an axes to the top of its legend


def plot_curves(record: RunRecord, directory: Path, *, chance: float | None = None) -> list[Path]:
    """Write ``curves.png`` and ``curves.svg`` of ``record`` into ``directory``, each atomically
    with the user's umask; returns their paths, png first.

    ``chance`` is the chance-level accuracy (1 / number of classes), drawn as a dashed line;
    None draws no line.
    """
    return save_figure(make_figure(record, chance), Path(directory) / CURVES)


def save_figure(figure: Figure, base: Path) -> list[Path]:
    """Write ``figure`` to ``base``.png and ``base``.svg atomically, then close it."""
    try:
        png = atomic_write(base.with_name(f"{base.name}.png"), _render(figure, "png"))
        figure.set_layout_engine("none")  # the SVG reuses the layout computed for the PNG
        svg = atomic_write(base.with_name(f"{base.name}.svg"), _render(figure, "svg"))
    finally:
        plt.close(figure)
    return [png, svg]


def plot_evaluation(evaluation: Evaluation, base: Path) -> list[Path]:
    """Accuracy and loss against drift time of an ``Evaluation``, mean ± standard deviation
    over the fresh devices, one line per device kind and drift-compensation setting; written
    to ``base``.png and ``base``.svg."""
    figure, (accuracy_axis, loss_axis) = plt.subplots(
        1, 2, figsize=(2 * PANEL_SIZE[0], PANEL_SIZE[1]), layout="constrained", dpi=DPI
    )
    labels = evaluation.drift
    lines: dict[tuple[str, bool | None], list[dict[str, Any]]] = {}
    for entry in evaluation.summary():
        lines.setdefault((entry["device"], entry["gdc"]), []).append(entry)
    for (device, gdc), entries in lines.items():
        x = [labels.index(entry["drift"]) for entry in entries]
        name = {"trained": "the run's own device", "fresh": f"fresh devices (n={entries[0]['n']})",
                "host": "host"}[device]
        name += {None: "", True: ", GDC on", False: ", GDC off"}[gdc]
        style = {"marker": "s" if device == "trained" else "o", "capsize": 3,
                 "linestyle": "--" if gdc is False else "-"}
        for axis, metric in ((accuracy_axis, "accuracy"), (loss_axis, "loss")):
            axis.errorbar(x, [e[f"{metric}_mean"] for e in entries],
                          yerr=[e[f"{metric}_std"] or 0.0 for e in entries], label=name, **style)
    if evaluation.chance is not None:
        accuracy_axis.axhline(evaluation.chance, color="0.4", linestyle=":", label="chance")
    accuracy_axis.set(ylim=(0, 1.02), ylabel="accuracy (% correct)", title="Accuracy")
    accuracy_axis.yaxis.set_major_formatter(PercentFormatter(1.0))
    loss_axis.set(ylabel="loss (nats)", title="Loss")
    for axis in (accuracy_axis, loss_axis):
        axis.set_xticks(range(len(labels)), labels)
        axis.set_xlabel("time since programming (drift)")
        axis.grid(alpha=0.3)
        _legend_below(axis)
    bits = "" if evaluation.bits is None else f" {evaluation.bits}-bit"
    figure.suptitle(f"{Path(evaluation.run).name} · {evaluation.weights} weights · "
                    f"{evaluation.backend}{bits} · products on {evaluation.forward} · "
                    f"{evaluation.split} split")
    return save_figure(figure, base)


def make_figure(record: RunRecord, chance: float | None = None) -> Figure:
    """The figure ``plot_curves`` saves, panels in a row: training loss, accuracy and, for
    hardware-in-the-loop runs, device writes (write error above, cells and pulses below).
    Each panel has its legend below it. The caller closes it (``plt.close(figure)``).

    Panel titles sit at a fixed height (``y=1.0``): placing them automatically would measure
    every tick label again at each draw, a tenth of the drawing time.
    """
    columns = 3 if record.updates else 2
    figure = plt.figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1]), dpi=DPI,
                        layout="constrained")
    grid = figure.add_gridspec(2, columns)
    _draw_loss(figure.add_subplot(grid[:, 0]), record)
    _draw_accuracy(figure.add_subplot(grid[:, 1]), record, chance)
    if record.updates:
        error_axis = figure.add_subplot(grid[0, 2])
        _draw_device(error_axis, figure.add_subplot(grid[1, 2], sharex=error_axis), record)
    figure.suptitle(run_title(record.config))
    return figure


def run_title(config: dict[str, Any] | None) -> str:
    """Two lines: task · neuron · learner · seed, then the device (or "host only")."""
    if config is None:  # a damaged run file
        return "run of unknown configuration (unreadable in the run file)"
    learner = config["learner"] + (f" λ={config['lam']}" if config["learner"] == "hypr" else "")
    return (f"{config['task']} · {config['neuron']} · {learner} · seed {config['seed']}\n"
            f"{device_text(config)}")


def device_text(config: dict[str, Any]) -> str:
    """E.g. "pcm 4-bit (mode=verify), mixed scheme, products on host", or "host only (no
    device)". Bits come from ``bits``, else from the backend spec or ``backend_options``."""
    if config.get("backend", "none") == "none":
        return "host only (no device)"
    name, options = parse_backend_spec(config["backend"])
    options = {**options, **config.get("backend_options", {})}  # as the session opens it
    bits = options.pop("bits", None)
    if config.get("bits") is not None:
        bits = config["bits"]
    text = name + ("" if bits is None else f" {bits}-bit")
    if options:
        text += " (" + ", ".join(f"{key}={value}" for key, value in options.items()) + ")"
    forward = config.get("forward", "host")  # runs made before --forward computed on the host
    return f"{text}, {config['scheme']} scheme, products on {forward}"


def thin(x: Sequence[float], y: Sequence[float], max_points: int = MAX_POINTS
         ) -> tuple[np.ndarray, np.ndarray]:
    """The finite points of (x, y), thinned to about ``max_points`` for drawing.

    NaN and ±inf values are dropped. A longer series is cut into ``max_points // 2`` runs of
    consecutive points, each drawn as its minimum and its maximum, so spikes stay visible.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) <= max_points:
        return x, y
    runs = max_points // 2
    starts = np.linspace(0, len(y), runs + 1).astype(int)
    thinned_x, thinned_y = [], []
    for start, stop in zip(starts[:-1], starts[1:]):
        low = start + int(np.argmin(y[start:stop]))
        high = start + int(np.argmax(y[start:stop]))
        for index in sorted((low, high)):
            thinned_x.append(x[index])
            thinned_y.append(y[index])
    return np.array(thinned_x), np.array(thinned_y)


def _draw_loss(axis: Axes, record: RunRecord) -> None:
    """Training loss per optimizer step (thinned) and its mean per epoch (nats)."""
    steps, losses = thin([s.step for s in record.steps], [s.loss for s in record.steps])
    axis.plot(steps, losses, color="C0", lw=0.7, alpha=0.45, label="per step")
    last_step = {s.epoch: s.step for s in record.steps}  # steps are in order
    means = [(last_step[e.epoch], e.train_loss) for e in record.epochs
             if e.epoch in last_step and math.isfinite(e.train_loss)]
    if means:
        axis.plot(*zip(*means), color="C0", marker=_marker(record), ms=3.5, lw=1.5,
                  label="epoch mean (at the epoch's last step)")
    drawn = list(losses) + [loss for _, loss in means]
    if drawn and min(drawn) > 0:  # a log scale cannot show a loss of 0
        axis.set_yscale("log")
    axis.set_title("Training loss", y=1.0)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(f"loss, {_loss_name(record.config)} (nats)")
    axis.xaxis.set_major_locator(_integer_ticks(6))
    axis.grid(alpha=0.3)
    _legend_below(axis)


def _draw_accuracy(axis: Axes, record: RunRecord, chance: float | None) -> None:
    """Train, test and (when present) validation accuracy per epoch; the best epoch marked."""
    epochs = [e.epoch for e in record.epochs]
    marker = _marker(record)
    axis.plot(epochs, [e.train_accuracy for e in record.epochs], color="C0", marker=marker,
              ms=3.5, label="train")
    axis.plot(epochs, [e.test_accuracy for e in record.epochs], color="C1", marker=marker,
              ms=3.5, label="test")
    has_validation = any(e.validation_accuracy is not None for e in record.epochs)
    if has_validation:
        validation = [math.nan if e.validation_accuracy is None else e.validation_accuracy
                      for e in record.epochs]
        axis.plot(epochs, validation, color="C2", marker=marker, ms=3.5, label="validation")
    best = best_epoch(record.epochs)
    if best is not None:
        epoch, accuracy = best.epoch, selection_accuracy(best)
        split = "validation" if has_validation else "test"
        axis.axvline(epoch, color="0.4", ls=":", lw=1)
        axis.plot([epoch], [accuracy], ls="none", marker="*", ms=13, color="C3",
                  label=f"best: epoch {epoch} ({split} {accuracy:.1%})")
    if chance is not None:
        axis.axhline(chance, color="0.3", ls="--", lw=1, label="chance")
    axis.set_title("Accuracy", y=1.0)
    axis.set_xlabel("epoch")
    axis.set_ylabel("accuracy (% correct)")
    axis.set_ylim(0, 1.04)
    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    axis.xaxis.set_major_locator(_integer_ticks(8))
    axis.grid(alpha=0.3)
    _legend_below(axis)


def _draw_device(error_axis: Axes, count_axis: Axes, record: RunRecord) -> None:
    """Per update written to the device: mean write error (weight units) above; cells written
    and SET pulses below (counts, symmetric log scale so that 0 shows)."""
    updates = record.updates
    written = [u for u in updates if u.cells > 0]  # an update that writes no cell has no error
    error_axis.plot(*thin([u.step for u in written], [u.write_error for u in written]),
                    color="C3", lw=0.8)
    count_axis.plot(*thin([u.step for u in updates], [u.cells for u in updates]),
                    color="C0", lw=0.8, zorder=3, label="cells written")  # over the pulses
    count_axis.plot(*thin([u.step for u in updates], [u.pulses for u in updates]),
                    color="C2", lw=0.8, label="SET pulses")
    first = updates[0]
    if first.step == 0:
        error_axis.plot([0], [first.write_error], "ko", ms=4)
        count_axis.plot([0, 0], [first.cells, first.pulses], "ko", ms=4,
                        label="initial programming (step 0)")
    error_axis.set_title("Device writes per update", y=1.0)
    error_axis.set_ylabel("mean write error\n(weight units)")
    error_axis.set_ylim(bottom=0)
    error_axis.tick_params(labelbottom=False)
    count_axis.set_yscale("symlog", linthresh=1)
    largest = max(max(u.cells, u.pulses) for u in updates)
    count_axis.set_ylim(0, 3 * max(largest, 1))  # room above the top marker
    count_axis.set_ylabel("count per update")
    count_axis.set_xlabel("optimizer step")
    count_axis.xaxis.set_major_locator(_integer_ticks(6))
    error_axis.yaxis.set_major_locator(MaxNLocator(nbins=4))
    error_axis.grid(alpha=0.3)
    count_axis.grid(alpha=0.3)
    _legend_below(count_axis)


def _legend_below(axis: Axes) -> None:
    """A legend under the axes, below its tick labels and x label (``LEGEND_DROP`` points under
    the axes), so it never covers the data."""
    below = offset_copy(axis.transAxes, fig=axis.figure, y=-LEGEND_DROP, units="points")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncols=2,
                frameon=False, fontsize="small")


def _integer_ticks(count: int) -> MaxNLocator:
    """At most ``count`` + 1 ticks on whole numbers (1, 2 or 5 times a power of ten apart);
    at least one tick even when the axis spans less than 1 (a single epoch)."""
    return MaxNLocator(nbins=count, steps=[1, 2, 5, 10], integer=True, min_n_ticks=1)


def _marker(record: RunRecord) -> str | None:
    return "o" if len(record.epochs) <= MAX_EPOCH_MARKERS else None


def _loss_name(config: dict[str, Any] | None) -> str:
    return "cross-entropy" if config is None else str(config.get("loss", "cross-entropy"))


def _render(figure: Figure, kind: str) -> bytes:
    """``figure`` as ``kind`` (png or svg); the SVG carries no date, so an unchanged run
    redraws to the same file."""
    metadata = {"Date": None} if kind == "svg" else None
    image = io.BytesIO()
    figure.savefig(image, format=kind, metadata=metadata)
    return image.getvalue()
