"""Learning-curve figures: files, title, panels, legends, chance line, umask, failures."""

from __future__ import annotations

import math
import errno
import os
import stat
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from hwloop import plots
from hwloop.errors import RunError
from hwloop.plots import MAX_POINTS, make_figure, plot_curves, thin
from hwloop.runs import RunRecord
from hwloop.session import UpdateMetrics
from hwloop.trainer import EpochMetrics, StepMetrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOST = {"task": "cue", "neuron": "brf", "learner": "hypr", "lam": 10, "seed": 7,
        "loss": "per_step_ce", "backend": "none", "bits": None, "scheme": "direct",
        "forward": "host", "backend_options": {}}
HIL = {**HOST, "backend": "pcm://?mode=verify", "bits": 4, "scheme": "mixed"}


def make_record(config: dict, epochs: int = 6, steps_per_epoch: int = 5,
                validation: bool = False) -> RunRecord:
    """A run of ``epochs`` × ``steps_per_epoch`` steps with falling loss and rising accuracy;
    hardware-in-the-loop configs get one update per step after the initial programming."""
    steps, epoch_rows, updates = [], [], []
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step = len(steps) + 1
            steps.append(StepMetrics(step, epoch, 2.0 / step, 0.5, 1.0, 0.01))
        accuracy = 0.5 + 0.4 * epoch / epochs
        epoch_rows.append(EpochMetrics(
            epoch, 2.0 / epoch, accuracy, accuracy - 0.05,
            accuracy - 0.1 + (0.3 if epoch == 2 else 0.0) if validation else None, 1.0,
        ))
    if config["backend"] != "none":
        updates.append(UpdateMetrics(0, 5000, 20000, 20, 3, 0.02, 0.01, 0.1))
        updates += [UpdateMetrics(s.step, 100, 250, 5, 0, 0.01, 0.001, 0.001) for s in steps]
    return RunRecord(
        path=Path("run.h5"), config=config, versions={}, created="", epochs=epoch_rows,
        steps=steps, final_weights={}, best_weights={}, checkpoint={}, updates=updates,
    )


@pytest.fixture
def figures():
    """Figures made by a test, closed after it."""
    made: list[Figure] = []
    yield made
    for figure in made:
        plt.close(figure)


def drawn(figures: list[Figure], record: RunRecord, chance: float | None = 0.5) -> Figure:
    figure = make_figure(record, chance)
    figures.append(figure)
    figure.canvas.draw()
    return figure


def panels(figure: Figure) -> list[str]:
    return [axes.get_title() for axes in figure.axes if axes.get_title()]


def line(axes, label: str):
    [found] = [line for line in axes.get_lines() if line.get_label() == label]
    return found


def test_writes_png_and_svg_and_closes_the_figure(tmp_path):
    open_before = plt.get_fignums()
    written = plot_curves(make_record(HIL), tmp_path, chance=0.5)
    assert written == [tmp_path / "curves.png", tmp_path / "curves.svg"]
    assert written[0].read_bytes().startswith(PNG_SIGNATURE)
    assert ElementTree.parse(written[1]).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]
    assert plt.get_fignums() == open_before


def test_title_names_the_run_and_the_device(figures):
    title = drawn(figures, make_record(HIL)).get_suptitle()
    assert "cue · brf · hypr λ=10 · seed 7" in title
    assert "pcm 4-bit (mode=verify), mixed scheme, products on host" in title
    host_title = drawn(figures, make_record({**HOST, "learner": "bptt"})).get_suptitle()
    assert "bptt · seed 7" in host_title and "λ" not in host_title
    assert "host only (no device)" in host_title


def test_bits_from_the_backend_spec_when_the_config_gives_none():
    config = {**HIL, "backend": "pcm://?bits=6", "bits": None, "forward": "device"}
    assert plots.device_text(config) == "pcm 6-bit, mixed scheme, products on device"


def test_hardware_in_the_loop_runs_get_a_device_panel(figures):
    assert panels(drawn(figures, make_record(HOST))) == ["Training loss", "Accuracy"]
    record = make_record(HIL)
    record.updates[3].cells = 0  # an update that wrote nothing has no write error
    figure = drawn(figures, record)
    assert panels(figure) == ["Training loss", "Accuracy", "Device writes per update"]
    error_axes, count_axes = figure.axes[2], figure.axes[3]
    [error] = [line for line in error_axes.get_lines() if len(line.get_xdata()) > 1]
    assert record.updates[3].step not in error.get_xdata()
    assert list(line(count_axes, "cells written").get_ydata()[:3]) == [5000, 100, 100]
    assert line(count_axes, "SET pulses").get_ydata()[0] == 20000
    assert count_axes.get_yscale() == "symlog"


@pytest.mark.parametrize("config", [HOST, HIL])
def test_legends_sit_below_their_axes_and_cover_no_data(figures, config):
    figure = drawn(figures, make_record(config, validation=True))
    legends = [(axes, axes.get_legend()) for axes in figure.axes if axes.get_legend()]
    assert len(legends) == len(figure.axes) - (1 if config is HIL else 0)  # not the error axes
    for owner, legend in legends:
        box = legend.get_window_extent()
        assert box.y1 <= owner.get_window_extent().y0
        for axes in figure.axes:
            assert not box.overlaps(axes.get_window_extent()), (legend, axes.get_title())


def test_chance_line_at_one_over_classes(figures):
    accuracy = drawn(figures, make_record(HOST), chance=1 / 20).axes[1]
    chance = line(accuracy, "chance")
    assert list(chance.get_ydata()) == [0.05, 0.05] and chance.get_linestyle() == "--"
    without = drawn(figures, make_record(HOST), chance=None).axes[1]
    assert "chance" not in [line.get_label() for line in without.get_lines()]


def test_validation_accuracy_and_best_epoch(figures):
    accuracy = drawn(figures, make_record(HOST, validation=True)).axes[1]
    labels = [line.get_label() for line in accuracy.get_lines()]
    assert {"train", "test", "validation"} <= set(labels)
    [best] = [label for label in labels if label.startswith("best")]
    assert best.startswith("best: epoch 2 (validation")  # chosen by validation, not test
    host_only = drawn(figures, make_record(HOST)).axes[1]
    assert "validation" not in [line.get_label() for line in host_only.get_lines()]


@pytest.mark.parametrize("epochs", [1, 30, 100])
def test_epoch_ticks_are_whole_numbers(figures, epochs):
    accuracy = drawn(figures, make_record(HOST, epochs=epochs, steps_per_epoch=2)).axes[1]
    low, high = accuracy.get_xlim()
    ticks = [t for t in accuracy.get_xticks() if low <= t <= high]
    assert 1 <= len(ticks) <= 9 and all(float(t).is_integer() for t in ticks)
    assert accuracy.get_xlabel() == "epoch" and "%" in accuracy.get_ylabel()


def test_loss_axis_is_logarithmic_only_for_positive_losses(figures, tmp_path):
    assert drawn(figures, make_record(HOST)).axes[0].get_yscale() == "log"
    record = make_record(HOST)
    record.steps[2].loss = math.nan
    record.epochs[1].train_loss = math.nan
    loss = drawn(figures, record).axes[0]
    assert loss.get_yscale() == "log"
    per_step = line(loss, "per step")
    assert record.steps[2].step not in per_step.get_xdata()
    assert not any(math.isnan(y) for y in per_step.get_ydata())
    record.steps[4].loss = 0.0
    assert drawn(figures, record).axes[0].get_yscale() == "linear"
    assert len(plot_curves(record, tmp_path)) == 2


def test_long_series_are_thinned_keeping_their_extremes(figures):
    x = list(range(1, 5001))
    y = [1.0 / step for step in x]
    y[1234], y[4321] = 50.0, math.nan
    thin_x, thin_y = thin(x, y)
    assert len(thin_x) <= MAX_POINTS and max(thin_y) == 50.0 and min(thin_y) == 1 / 5000
    assert list(thin_x) == sorted(thin_x) and 4322 not in thin_x
    loss = drawn(figures, make_record(HOST, epochs=100, steps_per_epoch=50)).axes[0]
    assert len(line(loss, "per step").get_xdata()) <= MAX_POINTS


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        written = plot_curves(make_record(HOST), tmp_path)
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(path.stat().st_mode) for path in written] == [mode, mode]


def test_a_failing_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "curves.svg").write_text("old")
    real_fsync = os.fsync

    def full_disk_on_svg(descriptor):
        if os.readlink(f"/proc/self/fd/{descriptor}").split(".tmp-")[0].endswith("curves.svg"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", full_disk_on_svg)
    open_before = plt.get_fignums()
    with pytest.raises(RunError, match="no space left"):
        plot_curves(make_record(HOST), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]
    assert (tmp_path / "curves.svg").read_text() == "old"
    assert plt.get_fignums() == open_before
