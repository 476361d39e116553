"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC), Cramer et al. 2022.

Reads the published HDF5 files (``spikes/times``: one variable-length float array of spike
times in seconds per sample, ``spikes/units``: the matching uint16 cochlea channels 0..699,
``labels``: uint16 class ids) and bins them as HYPR does (spec 7.2):

* T = ceil(max_time_ms / bin_ms) steps; a spike at time t (s) falls in bin floor(t * 1000 / bin_ms),
  spikes in bins >= T are dropped;
* unit u is mapped to channel floor(u * num_channels / 700);
* the input is the spike count per (bin, channel), clipped to 1 if ``clip_to_1``, stored as
  uint8 (counts saturate at 255).

Nothing is downloaded: users fetch and decompress the files themselves and pass ``data_dir``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from hwloop.errors import UserError
from hwloop.tasks.base import SequenceDataset, Task, check_data_size

NUM_UNITS = 700  # cochlea channels in the published files
DATASETS = ("spikes/times", "spikes/units", "labels")
SOURCE_PAGE = "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/"

# (sample, bin, channel) cells binned at once; bounds the int64 scratch memory (32 MiB).
_BLOCK_CELLS = 1 << 22


DEFAULT_VALIDATION_FRACTION = 0.1
"""SHD's share of the training file held out for validation when none is given (HYPR's)."""


@dataclass(frozen=True)
class HeidelbergOptions:
    """Options of the ``shd`` and ``ssc`` tasks.

    Attributes:
        data_dir: directory holding the decompressed files (required; default None):
            shd_train.h5 and shd_test.h5, or ssc_train.h5, ssc_valid.h5 and ssc_test.h5.
        bin_ms: width of a time bin = one step, in ms (default 4.0).
        max_time_ms: time covered, in ms (default 1000.0); T = ceil(max_time_ms / bin_ms) and
            later spikes are dropped.
        num_channels: input channels (default 140); unit u of 0..699 feeds channel
            floor(u * num_channels / 700), so 140 pools 5 neighbouring units, 700 is identity.
        clip_to_1: clip spike counts per (bin, channel) to 1 (default False).
        validation_fraction: SHD only: fraction of the training file held out, by a seeded
            permutation, for model selection (default None: 0.1; 0: no validation split, the
            test split selects the model). SSC uses its published validation file and refuses
            this option.
        ignore_first: the loss ignores steps t < ignore_first (default 50).
    """

    data_dir: str | None = None
    bin_ms: float = 4.0
    max_time_ms: float = 1000.0
    num_channels: int = 140
    clip_to_1: bool = False
    validation_fraction: float | None = None
    ignore_first: int = 50

    def __post_init__(self) -> None:
        if not 0.0 < self.bin_ms < math.inf:
            raise UserError(f"bin_ms={self.bin_ms} must be a finite number of ms > 0")
        if not self.bin_ms <= self.max_time_ms < math.inf:
            raise UserError(f"max_time_ms={self.max_time_ms} must be finite and >= bin_ms")
        if not math.isfinite(self.max_time_ms / self.bin_ms):
            raise UserError(f"max_time_ms={self.max_time_ms} / bin_ms={self.bin_ms} steps is "
                            "beyond any float; raise bin_ms")
        if not 1 <= self.num_channels <= NUM_UNITS:
            raise UserError(f"num_channels={self.num_channels} must lie in [1, {NUM_UNITS}]")
        if self.validation_fraction is not None and not 0.0 <= self.validation_fraction < 1.0:
            raise UserError(f"validation_fraction={self.validation_fraction} must lie in [0, 1)")
        if not 0 <= self.ignore_first < self.num_steps:
            raise UserError(
                f"ignore_first={self.ignore_first} must lie in [0, T={self.num_steps})"
            )

    @property
    def num_steps(self) -> int:
        """T = ceil(max_time_ms / bin_ms); the tolerance keeps 1000 / 0.1 at 10000."""
        return math.ceil(self.max_time_ms / self.bin_ms - 1e-9)


@dataclass(frozen=True)
class HeidelbergDataset:
    """One of the two published datasets: its task name, class count and file names."""

    name: str
    num_classes: int
    train_file: str
    validation_file: str | None
    test_file: str

    @property
    def files(self) -> list[str]:
        """The file names, as found in data_dir."""
        names = [self.train_file, self.validation_file, self.test_file]
        return [name for name in names if name is not None]

    @property
    def download_hint(self) -> str:
        """Where users get the files."""
        return (
            f"download {'/'.join(self.files)} from the Zenke lab's SHD page ({SOURCE_PAGE}) "
            "and decompress them"
        )


SHD = HeidelbergDataset("shd", 20, "shd_train.h5", None, "shd_test.h5")
SSC = HeidelbergDataset("ssc", 35, "ssc_train.h5", "ssc_valid.h5", "ssc_test.h5")


def read_spike_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one file in the published layout and check its structure and labels.

    Returns:
        times: (S,) object array of float spike-time arrays in seconds (as stored).
        units: (S,) object array of the matching unit arrays.
        labels: (S,) int64 class ids in [0, num_classes).
    """
    if not path.is_file():
        raise UserError(f"{path} is missing")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file; decompress the download (gunzip/unzip)")
    try:
        with h5py.File(path, "r") as file:
            for key in DATASETS:
                if not isinstance(file.get(key), h5py.Dataset):
                    raise UserError(
                        f"{path} has no dataset '{key}' (expected {', '.join(DATASETS)})"
                    )
                if file[key].ndim != 1:
                    raise UserError(f"{path}: '{key}' must be 1-D, one entry per sample")
            for key in DATASETS[:2]:
                if h5py.check_vlen_dtype(file[key].dtype) is None:
                    raise UserError(
                        f"{path}: '{key}' must hold one variable-length array per sample"
                    )
            times = file["spikes/times"][()]
            units = file["spikes/units"][()]
            labels = np.asarray(file["labels"][()], dtype=np.int64)
    except OSError as exc:
        raise UserError(f"{path} could not be read as HDF5 ({exc})") from None
    if not len(times) == len(units) == len(labels):
        raise UserError(
            f"{path} holds {len(times)} spikes/times, {len(units)} spikes/units and "
            f"{len(labels)} labels; the three counts must be equal"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise UserError(
            f"{path}: sample {bad[0]} has label {labels[bad[0]]} outside 0..{num_classes - 1}"
        )
    return times, units, labels


def _lengths(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(S,) int64 lengths of a sequence of arrays."""
    return np.fromiter((len(array) for array in arrays), dtype=np.int64, count=len(arrays))


def bin_spikes(
    times: Sequence[np.ndarray], units: Sequence[np.ndarray], options: HeidelbergOptions
) -> np.ndarray:
    """Bin spike events into counts per (step, channel).

    Args:
        times: S float arrays (a list or an object array as h5py reads it), spike times in
            seconds; float16 is fine, they are converted to float64 before scaling.
        units: S integer arrays of the same lengths, units 0..699.

    Returns:
        (S, T, num_channels) uint8 spike counts (saturating at 255; at 1 with clip_to_1).

    Raises:
        ValueError: naming the sample, if times and units differ in length, a time is
            negative or not finite, or a unit lies outside 0..699.
    """
    num_samples, num_steps, num_channels = len(times), options.num_steps, options.num_channels
    time_lengths, unit_lengths = _lengths(times), _lengths(units)
    unequal = np.flatnonzero(time_lengths != unit_lengths)
    if unequal.size:
        sample = unequal[0]
        raise ValueError(
            f"sample {sample} has {time_lengths[sample]} spike times but "
            f"{unit_lengths[sample]} units"
        )
    cells = num_steps * num_channels
    limit = 1 if options.clip_to_1 else np.iinfo(np.uint8).max
    inputs = np.zeros((num_samples, num_steps, num_channels), dtype=np.uint8)
    block = max(1, _BLOCK_CELLS // cells)
    for start in range(0, num_samples, block):
        stop = min(start + block, num_samples)
        sample = np.repeat(np.arange(stop - start), time_lengths[start:stop])
        seconds = np.concatenate(times[start:stop]).astype(np.float64)
        unit = np.concatenate(units[start:stop]).astype(np.int64)
        bad_time = np.flatnonzero(~(np.isfinite(seconds) & (seconds >= 0.0)))
        if bad_time.size:
            raise ValueError(
                f"sample {start + sample[bad_time[0]]} has spike time {seconds[bad_time[0]]} s; "
                "times must be finite and >= 0"
            )
        bad_unit = np.flatnonzero((unit < 0) | (unit >= NUM_UNITS))
        if bad_unit.size:
            raise ValueError(
                f"sample {start + sample[bad_unit[0]]} has unit {unit[bad_unit[0]]} "
                f"outside 0..{NUM_UNITS - 1}"
            )
        position = seconds * 1000.0 / options.bin_ms
        keep = position < num_steps
        step = np.floor(position[keep]).astype(np.int64)
        channel = unit[keep] * num_channels // NUM_UNITS
        cell = (sample[keep] * num_steps + step) * num_channels + channel
        counts = np.bincount(cell, minlength=(stop - start) * cells)
        counts = np.minimum(counts, limit).reshape(stop - start, num_steps, num_channels)
        inputs[start:stop] = counts
    return inputs


def load_spike_file(
    path: Path, num_classes: int, options: HeidelbergOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Read and bin one file: (S, T, num_channels) uint8 counts and (S,) int64 labels."""
    times, units, labels = read_spike_file(path, num_classes)
    check_data_size(len(labels), options.num_steps, options.num_channels, 1, str(path))
    try:
        inputs = bin_spikes(times, units, options)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    return inputs, labels


def _locate(dataset: HeidelbergDataset, options: HeidelbergOptions) -> Path:
    """The data directory, after checking it holds every file of ``dataset``."""
    if options.data_dir is None:
        raise UserError(
            f"task '{dataset.name}' needs data_dir=... pointing at "
            f"{', '.join(dataset.files[:-1])} and {dataset.files[-1]}; {dataset.download_hint}"
        )
    directory = Path(options.data_dir).expanduser()
    if not directory.is_dir():
        raise UserError(
            f"task '{dataset.name}': data_dir {directory} is not a directory; "
            f"{dataset.download_hint} into it"
        )
    for name in dataset.files:
        if not (directory / name).is_file():
            raise UserError(
                f"task '{dataset.name}': {directory / name} is missing; {dataset.download_hint}"
            )
    return directory


def _split(inputs: np.ndarray, labels: np.ndarray, index: np.ndarray) -> SequenceDataset:
    return SequenceDataset.from_numpy(inputs, labels, index)


def _all(inputs: np.ndarray, labels: np.ndarray) -> SequenceDataset:
    return SequenceDataset.from_numpy(inputs, labels)


def _task(
    dataset: HeidelbergDataset,
    options: HeidelbergOptions,
    train: SequenceDataset,
    validation: SequenceDataset | None,
    test: SequenceDataset,
) -> Task:
    return Task(
        name=dataset.name,
        input_size=options.num_channels,
        num_classes=dataset.num_classes,
        num_steps=options.num_steps,
        ignore_first=options.ignore_first,
        train=train,
        test=test,
        validation=validation,
        description=(
            f"{dataset.name}: T={options.num_steps}, {options.num_channels} inputs, "
            f"{dataset.num_classes} classes"
        ),
    )


def build_shd_task(options: HeidelbergOptions, seed: int) -> Task:
    """SHD from data_dir; validation: a permutation of the training file seeded by ``seed``."""
    directory = _locate(SHD, options)
    train_path = directory / SHD.train_file
    inputs, labels = load_spike_file(train_path, SHD.num_classes, options)
    test = _all(*load_spike_file(directory / SHD.test_file, SHD.num_classes, options))
    fraction = DEFAULT_VALIDATION_FRACTION if options.validation_fraction is None else (
        options.validation_fraction
    )
    if fraction == 0.0:
        return _task(SHD, options, _all(inputs, labels), None, test)
    order = np.random.default_rng(seed).permutation(len(labels))
    num_train = int(len(labels) * (1.0 - fraction))
    if not 1 <= num_train < len(labels):
        raise UserError(
            f"{train_path} holds {len(labels)} samples: validation_fraction={fraction} leaves "
            f"the {'training' if num_train < 1 else 'validation'} split empty; choose a "
            "fraction that holds out at least one sample, or 0 for no validation split"
        )
    train = _split(inputs, labels, order[:num_train])
    validation = _split(inputs, labels, order[num_train:])
    return _task(SHD, options, train, validation, test)


def build_ssc_task(options: HeidelbergOptions, seed: int) -> Task:
    """SSC from data_dir with its published train/validation/test files (``seed`` unused)."""
    if options.validation_fraction is not None:
        raise UserError("task 'ssc' uses its published validation file; drop "
                        "validation_fraction (it applies to shd only)")
    directory = _locate(SSC, options)
    train, validation, test = (
        _all(*load_spike_file(directory / name, SSC.num_classes, options)) for name in SSC.files
    )
    return _task(SSC, options, train, validation, test)
