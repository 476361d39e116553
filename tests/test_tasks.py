"""Tasks: cue generator, sequential digits, SHD/SSC loading and binning, the registry."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hwloop.errors import UserError
from hwloop.tasks import TASKS, CueOptions, generate_cue, make_task, task_option_names
from hwloop.tasks.digits import DigitsOptions, encode_digits
from hwloop.tasks.heidelberg import HeidelbergOptions, bin_spikes

# ---------------------------------------------------------------------------------------------
# cue


def test_cue_default_shapes_split_and_mask() -> None:
    task = make_task("cue", {}, seed=0)
    assert (task.name, task.input_size, task.num_classes, task.num_steps) == ("cue", 15, 2, 60)
    assert task.ignore_first == 40  # only the cue period (last seq_len steps) counts
    assert task.validation is None and task.model_selection_split is task.test
    assert (len(task.train), len(task.test)) == (204, 52)  # int(256 * 0.8), rest
    assert task.train.inputs.shape == (204, 60, 15) and task.train.inputs.dtype == torch.uint8
    assert task.train.labels.dtype == torch.int64
    labels = torch.cat([task.train.labels, task.test.labels])
    assert set(labels.tolist()) == {0, 1}
    assert task.description == "cue: T=60, 15 inputs, 2 classes"


def test_cue_length_options() -> None:
    task = make_task("cue", {"seq_len": 10, "delay": 5}, seed=0)
    assert (task.num_steps, task.ignore_first) == (25, 15)
    task = make_task("cue", {"seq_len": 20, "steps": 1024}, seed=0)
    assert (task.num_steps, task.ignore_first) == (1024, 1004)  # cue1k: delay 984
    assert CueOptions(steps=1024).delay_steps == 984
    assert make_task("cue", {"ignore_first": 0}, seed=0).ignore_first == 0
    with pytest.raises(UserError, match="steps=30"):
        make_task("cue", {"steps": 30}, seed=0)
    with pytest.raises(UserError, match="ignore_first=60"):
        make_task("cue", {"ignore_first": 60}, seed=0)


def test_cue_channels_periods_and_rates() -> None:
    # fixed seed: deterministic (tolerances ≥ 4.5 standard errors)
    options = CueOptions(seq_len=20, delay=10, prob_a=0.2, prob_b=0.3, prob_cue=0.5)
    inputs, labels = generate_cue(2000, options, np.random.default_rng(1))
    assert inputs.shape == (2000, 50, 15) and inputs.dtype == np.uint8
    assert labels.dtype == np.int64 and 0.45 < labels.mean() < 0.55
    assert set(np.unique(inputs).tolist()) == {0, 1}
    evidence, delay, cue = inputs[:, :20], inputs[:, 20:30], inputs[:, 30:]
    class_a, class_b = evidence[labels == 0], evidence[labels == 1]
    assert not class_a[:, :, 5:].any() and not class_b[:, :, :5].any()
    assert not class_b[:, :, 10:].any()
    assert not delay.any()
    assert not cue[:, :, :10].any()
    # Bernoulli rates over ~1e5 draws each: standard error < 0.002.
    assert abs(class_a[:, :, :5].mean() - 0.2) < 0.01
    assert abs(class_b[:, :, 5:10].mean() - 0.3) < 0.01
    assert abs(cue[:, :, 10:].mean() - 0.5) < 0.01


def test_cue_is_seeded() -> None:
    first, again = make_task("cue", {}, seed=3), make_task("cue", {}, seed=3)
    other = make_task("cue", {}, seed=4)
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert torch.equal(first.test.labels, again.test.labels)
    assert not torch.equal(first.train.inputs, other.train.inputs)


def test_cue_16k_steps() -> None:
    # fixed seed: deterministic
    options = {"steps": 16000, "prob_a": 0.6, "prob_b": 0.6, "prob_cue": 0.6}
    task = make_task("cue", options, seed=0)
    assert task.train.inputs.shape == (204, 16000, 15)
    assert task.ignore_first == 15980
    assert not task.train.inputs[:, 20:15980].any()
    assert abs(task.train.inputs[:, 15980:, 10:].float().mean().item() - 0.6) < 0.03


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_image_presentation_is_the_default() -> None:
    task = make_task("digits", {}, seed=0)
    assert (task.input_size, task.num_classes, task.num_steps, task.ignore_first) == (64, 10, 10, 5)
    images = load_digits().images
    order = task.test.labels.argsort()  # any sample: find it back in the raw data by content
    first = task.test.inputs[order[0]]
    assert torch.equal(first[0], first[-1])  # the same image at every step
    flat = (images.reshape(len(images), 64) / 16).astype(np.float32)
    assert (np.abs(flat - first[0].numpy()).max(axis=1) == 0).any()
    spikes = make_task("digits", {"encoding": "spikes", "image_steps": 40}, seed=0)
    assert spikes.train.inputs.shape[1:] == (40, 64) and spikes.train.inputs.dtype == torch.uint8
    with pytest.raises(UserError, match="presentation='columns' is not known"):
        make_task("digits", {"presentation": "columns"}, seed=0)


def test_digits_shapes_values_and_mask() -> None:
    task = make_task("digits", {"presentation": "rows"}, seed=0)
    assert (task.input_size, task.num_classes, task.num_steps, task.ignore_first) == (8, 10, 16, 8)
    assert len(task.train) + len(task.test) == 1797
    assert task.validation is None
    inputs = task.train.inputs
    assert inputs.dtype == torch.float32 and inputs.shape[1:] == (16, 8)
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    assert torch.equal(inputs[:, 0::2], inputs[:, 1::2])  # each row held for 2 steps
    task = make_task("digits", {"presentation": "rows", "steps_per_row": 3, "gain": 2}, seed=0)
    assert (task.num_steps, task.ignore_first) == (24, 12)
    assert task.train.inputs.max().item() == 2.0


def test_digits_value_encoding_is_row_by_row() -> None:
    images = load_digits().images[:5]
    options = DigitsOptions(presentation="rows", steps_per_row=2)
    encoded = encode_digits(images, options, np.random.default_rng(0))
    assert encoded.shape == (5, 16, 8)
    for row in range(8):
        expected = (images[:, row] / 16).astype(np.float32)
        np.testing.assert_array_equal(encoded[:, 2 * row], expected)
        np.testing.assert_array_equal(encoded[:, 2 * row + 1], expected)


def test_digits_split_is_stratified() -> None:
    task = make_task("digits", {"test_fraction": 0.2}, seed=0)
    all_labels = load_digits().target
    test_counts = np.bincount(task.test.labels.numpy(), minlength=10)
    class_counts = np.bincount(all_labels, minlength=10)
    np.testing.assert_array_equal(test_counts, np.round(class_counts * 0.2))
    train_counts = np.bincount(task.train.labels.numpy(), minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, class_counts)


def test_digits_spike_encoding() -> None:
    # fixed seeds: deterministic
    rows = {"presentation": "rows", "steps_per_row": 20}
    task = make_task("digits", {"encoding": "spikes", **rows}, seed=0)
    values = make_task("digits", rows, seed=0)
    spikes = task.train.inputs
    assert spikes.dtype == torch.uint8 and set(spikes.unique().tolist()) <= {0, 1}
    probability = values.train.inputs  # same seed, same split
    assert not spikes[probability == 0].any()
    assert abs(spikes.float().mean().item() - probability.mean().item()) < 0.005
    again = make_task("digits", {"encoding": "spikes", **rows}, seed=0)
    other = make_task("digits", {"encoding": "spikes", **rows}, seed=1)
    assert torch.equal(spikes, again.train.inputs)
    assert not torch.equal(spikes, other.train.inputs)
    with pytest.raises(UserError, match="gain"):
        make_task("digits", {"encoding": "spikes", "gain": 2.0}, seed=0)


# ---------------------------------------------------------------------------------------------
# shd / ssc

# Sample 0 in the published layout, times in s (stored as float16), units 0..699:
# t = 0.9999 rounds to 1.0 in float16 (bin 250) and t = 1.3994 lies past 1 s: both dropped.
TIMES_0 = [0.0, 0.001, 0.0045, 0.0045, 0.5, 0.9995, 0.9999, 1.3994]
UNITS_0 = [0, 4, 5, 9, 350, 699, 699, 10]
SAMPLE_TIMES = [TIMES_0, [], [0.25] * 300]  # sample 1 is empty, sample 2 saturates a count
SAMPLE_UNITS = [UNITS_0, [], [699] * 300]


def _rows(rows: list, dtype: type) -> np.ndarray:
    """An object array of one ``dtype`` array per sample, as h5py writes vlen datasets."""
    array = np.empty(len(rows), dtype=object)
    for index, row in enumerate(rows):
        array[index] = np.asarray(row, dtype=dtype)
    return array


def write_spike_file(
    path: Path,
    times: list[list[float]],
    units: list[list[int]],
    labels: list[int],
    omit: str | None = None,
) -> None:
    """Write an SHD/SSC file in the published layout, optionally without dataset ``omit``."""
    with h5py.File(path, "w") as file:
        if omit != "spikes/times":
            vlen_times = h5py.vlen_dtype(np.float16)
            file.create_dataset("spikes/times", data=_rows(times, np.float16), dtype=vlen_times)
        if omit != "spikes/units":
            vlen_units = h5py.vlen_dtype(np.uint16)
            file.create_dataset("spikes/units", data=_rows(units, np.uint16), dtype=vlen_units)
        if omit != "labels":
            file.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        file.create_dataset("extra/keys", data=[b"zero", b"one"])
        file.create_dataset("extra/speaker", data=np.zeros(len(labels), dtype=np.uint16))


def write_shd(directory: Path, num_train: int = 20) -> None:
    """Training file: sample i has label i and one spike on unit i at 125 ms; test: the 3 above."""
    times = [[0.125]] * num_train
    units = [[index] for index in range(num_train)]
    write_spike_file(directory / "shd_train.h5", times, units, list(range(num_train)))
    write_spike_file(directory / "shd_test.h5", SAMPLE_TIMES, SAMPLE_UNITS, [3, 0, 19])


def expected_counts(num_channels: int, clip_to_1: bool) -> np.ndarray:
    """Hand-binned SAMPLE_TIMES/SAMPLE_UNITS: 4 ms bins, T = 250."""
    counts = np.zeros((3, 250, num_channels), dtype=np.uint8)
    pooled = num_channels == 140
    counts[0, 0, 0] += 1  # t 0 ms, unit 0
    counts[0, 0, 0 if pooled else 4] += 1  # t 1.0 ms, unit 4
    counts[0, 1, 1 if pooled else 5] += 1  # t 4.5 ms, unit 5
    counts[0, 1, 1 if pooled else 9] += 1  # t 4.5 ms, unit 9
    counts[0, 125, 70 if pooled else 350] += 1  # t 500 ms exactly: first step of bin 125
    counts[0, 249, 139 if pooled else 699] += 1  # t 999.5 ms
    counts[2, 62, 139 if pooled else 699] = 255  # 300 spikes at 250 ms saturate
    return np.minimum(counts, 1) if clip_to_1 else counts


@pytest.mark.parametrize(("num_channels", "clip_to_1"), [(140, False), (700, False), (140, True)])
def test_shd_binning_matches_hand_computation(
    tmp_path: Path, num_channels: int, clip_to_1: bool
) -> None:
    write_shd(tmp_path)
    options = {"data_dir": str(tmp_path), "num_channels": num_channels, "clip_to_1": clip_to_1}
    task = make_task("shd", options, seed=0)
    assert (task.num_steps, task.input_size, task.num_classes) == (250, num_channels, 20)
    assert task.ignore_first == 50
    assert task.test.inputs.dtype == torch.uint8
    expected = expected_counts(num_channels, clip_to_1)
    np.testing.assert_array_equal(task.test.inputs.numpy(), expected)
    assert task.test.labels.tolist() == [3, 0, 19]


def test_bin_spikes_options() -> None:
    times = [np.asarray([0.0, 0.0021, 0.0099, 0.0101], dtype=np.float16)]
    units = [np.asarray([0, 1, 699, 699], dtype=np.uint16)]
    options = HeidelbergOptions(bin_ms=2.0, max_time_ms=9.0, num_channels=2, ignore_first=0)
    inputs = bin_spikes(times, units, options)
    # T = ceil(9 / 2) = 5 bins cover 0-10 ms: 9.9 ms falls in bin 4, 10.1 ms is dropped.
    assert inputs.shape == (1, 5, 2)
    np.testing.assert_array_equal(inputs[0], [[1, 0], [1, 0], [0, 0], [0, 0], [0, 1]])


def test_shd_validation_split(tmp_path: Path) -> None:
    write_shd(tmp_path)
    task = make_task("shd", {"data_dir": str(tmp_path)}, seed=0)
    assert task.validation is not None and task.model_selection_split is task.validation
    assert (len(task.train), len(task.validation), len(task.test)) == (18, 2, 3)
    train, validation = task.train.labels.tolist(), task.validation.labels.tolist()
    assert sorted(train + validation) == list(range(20))
    for label, sample in zip(train, task.train.inputs):  # unit i at 125 ms: bin 31, channel i//5
        assert sample.sum() == 1 and sample[31, label // 5] == 1
    again = make_task("shd", {"data_dir": str(tmp_path)}, seed=0)
    assert torch.equal(again.validation.labels, task.validation.labels)
    others = {
        tuple(make_task("shd", {"data_dir": str(tmp_path)}, seed=s).validation.labels.tolist())
        for s in range(1, 6)
    }
    assert len(others | {tuple(validation)}) > 1
    whole = make_task("shd", {"data_dir": str(tmp_path), "validation_fraction": 0}, seed=0)
    assert whole.validation is None and len(whole.train) == 20


def test_ssc_uses_published_files(tmp_path: Path) -> None:
    write_spike_file(tmp_path / "ssc_train.h5", SAMPLE_TIMES, SAMPLE_UNITS, [0, 1, 34])
    write_spike_file(tmp_path / "ssc_valid.h5", [[0.5]], [[7]], [5])
    write_spike_file(tmp_path / "ssc_test.h5", [[], []], [[], []], [2, 3])
    task = make_task("ssc", {"data_dir": str(tmp_path)}, seed=0)
    assert (task.num_classes, len(task.train), len(task.test)) == (35, 3, 2)
    assert task.validation is not None and task.validation.labels.tolist() == [5]
    assert task.validation.inputs[0, 125, 1] == 1 and task.validation.inputs.sum() == 1
    np.testing.assert_array_equal(task.train.inputs.numpy(), expected_counts(140, False))
    assert task.description == "ssc: T=250, 140 inputs, 35 classes"


def test_shd_many_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    count = 8000
    lengths = rng.integers(0, 60, count)
    times = [np.sort(rng.random(n) * 1.4) for n in lengths]
    units = [rng.integers(0, 700, n) for n in lengths]
    write_spike_file(tmp_path / "shd_train.h5", times, units, list(rng.integers(0, 20, count)))
    write_spike_file(tmp_path / "shd_test.h5", times[:10], units[:10], [0] * 10)
    options = {"data_dir": str(tmp_path), "bin_ms": 50.0, "num_channels": 70, "ignore_first": 0}
    task = make_task("shd", options, seed=0)
    assert len(task.train) + len(task.validation) == count
    kept = sum(int((np.float16(t).astype(np.float64) < 1.0).sum()) for t in times)
    assert task.train.inputs.sum() + task.validation.inputs.sum() == kept


def test_heidelberg_needs_data_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs data_dir=.*shd_train.h5 and shd_test.h5"):
        make_task("shd", {}, seed=0)
    with pytest.raises(UserError, match="ssc_train.h5, ssc_valid.h5 and ssc_test.h5"):
        make_task("ssc", {}, seed=0)
    with pytest.raises(UserError, match="not a directory.*Zenke lab"):
        make_task("shd", {"data_dir": str(tmp_path / "absent")}, seed=0)
    write_spike_file(tmp_path / "shd_train.h5", [[]], [[]], [0])
    with pytest.raises(UserError, match="shd_test.h5 is missing.*decompress"):
        make_task("shd", {"data_dir": str(tmp_path)}, seed=0)


def _not_hdf5(path: Path) -> None:
    path.write_text("this is not an HDF5 file\n")


BROKEN_TRAIN_FILES = {
    "not HDF5": (_not_hdf5, "not an HDF5 file"),
    "no times": (
        lambda p: write_spike_file(p, [[0.1]], [[1]], [0], omit="spikes/times"),
        "no dataset 'spikes/times'",
    ),
    "no units": (
        lambda p: write_spike_file(p, [[0.1]], [[1]], [0], omit="spikes/units"),
        "no dataset 'spikes/units'",
    ),
    "no labels": (
        lambda p: write_spike_file(p, [[0.1]], [[1]], [0], omit="labels"),
        "no dataset 'labels'",
    ),
    "unequal lengths": (
        lambda p: write_spike_file(p, [[0.1], [0.1, 0.2]], [[1], [2]], [0, 1]),
        "sample 1 has 2 spike times but 1 units",
    ),
    "unit 700": (
        lambda p: write_spike_file(p, [[0.1], [0.1, 0.2]], [[1], [2, 700]], [0, 1]),
        "sample 1 has unit 700 outside 0..699",
    ),
    "label 20": (
        lambda p: write_spike_file(p, [[0.1], [0.2]], [[1], [2]], [0, 20]),
        "sample 1 has label 20 outside 0..19",
    ),
    "counts differ": (
        lambda p: write_spike_file(p, [[0.1], [0.2]], [[1], [2]], [0]),
        "2 spikes/times, 2 spikes/units and 1 labels",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_TRAIN_FILES))
def test_shd_broken_file_errors_name_the_file(tmp_path: Path, case: str) -> None:
    write_shd(tmp_path)
    write_broken, message = BROKEN_TRAIN_FILES[case]
    write_broken(tmp_path / "shd_train.h5")
    with pytest.raises(UserError, match=f"shd_train.h5.*{message}") as error:
        make_task("shd", {"data_dir": str(tmp_path)}, seed=0)
    assert "\n" not in str(error.value)


def test_ssc_label_range(tmp_path: Path) -> None:
    write_spike_file(tmp_path / "ssc_train.h5", [[0.1]], [[1]], [34])
    write_spike_file(tmp_path / "ssc_valid.h5", [[0.1]], [[1]], [35])
    write_spike_file(tmp_path / "ssc_test.h5", [[0.1]], [[1]], [0])
    with pytest.raises(UserError, match="ssc_valid.h5: sample 0 has label 35 outside 0..34"):
        make_task("ssc", {"data_dir": str(tmp_path)}, seed=0)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_options() -> None:
    assert list(TASKS) == ["cue", "digits", "shd", "ssc"]
    assert task_option_names("digits") == [
        "presentation",
        "image_steps",
        "steps_per_row",
        "encoding",
        "test_fraction",
        "ignore_first",
        "gain",
    ]
    assert "data_dir" in task_option_names("ssc")
    for options_class in set(TASKS.values()):
        for name in options_class.__dataclass_fields__:
            assert f"{name}:" in (options_class.__doc__ or ""), f"{options_class.__name__}.{name}"


def test_registry_errors() -> None:
    choices = r"\(choose from: cue, digits, shd, ssc\)"
    with pytest.raises(UserError, match=r"unknown task 'foo' " + choices):
        make_task("foo", {}, seed=0)
    with pytest.raises(UserError, match=r"unknown task 'foo'"):
        task_option_names("foo")
    with pytest.raises(UserError, match=r"unknown option 'x' for task 'cue' \(valid: seq_len, "):
        make_task("cue", {"x": 1}, seed=0)
    with pytest.raises(UserError, match="task 'cue': seq_len: expected an integer, got '20'"):
        make_task("cue", {"seq_len": "20"}, seed=0)
    with pytest.raises(UserError, match="seq_len: expected an integer, got True"):
        make_task("cue", {"seq_len": True}, seed=0)
    with pytest.raises(UserError, match="prob_a: expected a number, got .high."):
        make_task("cue", {"prob_a": "high"}, seed=0)
    with pytest.raises(UserError, match="clip_to_1: expected true or false, got 1"):
        make_task("shd", {"clip_to_1": 1}, seed=0)
    with pytest.raises(UserError, match="data_dir: expected a string, got 3"):
        make_task("shd", {"data_dir": 3}, seed=0)
    with pytest.raises(UserError, match=r"task 'cue': prob_a=1.5 must lie in \[0, 1\]"):
        make_task("cue", {"prob_a": 1.5}, seed=0)
    with pytest.raises(UserError, match="num_channels=0"):
        make_task("shd", {"num_channels": 0}, seed=0)


def test_registry_accepts_ints_for_floats_and_none_for_optionals() -> None:
    task = make_task("cue", {"prob_a": 1, "prob_b": 0, "steps": None}, seed=0)
    train = task.train
    class_a = train.inputs[train.labels == 0]
    class_b = train.inputs[train.labels == 1]
    assert class_a[:, :20, :5].all() and not class_b[:, :20].any()
