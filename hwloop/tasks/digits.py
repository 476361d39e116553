"""Handwritten digits as sequences: scikit-learn's bundled 8x8 digits.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1797 images, pixels 0..16,
10 classes), so this task needs no download. Two presentations:

* ``rows``: the 8 pixels of image row r are the 8 inputs during steps
  [r * steps_per_row, (r + 1) * steps_per_row), so T = 8 * steps_per_row;
* ``image``: all 64 pixels are the 64 inputs at every one of ``image_steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits

from hwloop.errors import UserError
from hwloop.tasks.base import SequenceDataset, Task, check_data_size

IMAGE_SIZE = 8  # rows per image, pixels per row (= inputs per step)
NUM_CLASSES = 10
MAX_PIXEL = 16.0
ENCODINGS = ("value", "spikes")
PRESENTATIONS = ("rows", "image")
MAX_GAIN = float(np.finfo(np.float32).max)
"""The largest gain whose "value" inputs (at most ``gain``) fit in float32."""


@dataclass(frozen=True)
class DigitsOptions:
    """Options of the ``digits`` task.

    Attributes:
        presentation: "image" (default: 64 inputs, the whole image at every step) or "rows"
            (8 inputs, row by row).
        image_steps: T for the "image" presentation (default 10).
        steps_per_row: steps each image row is held for (default 2); T = 8 * steps_per_row.
        encoding: "value" (default): float32 input currents gain * pixel / 16;
            "spikes": uint8 Bernoulli spikes with probability pixel / 16 per step.
        test_fraction: fraction of each class in the test split (default 0.2).
        ignore_first: the loss ignores steps t < ignore_first (default None: T // 2, so only
            the second half of the image counts).
        gain: factor on the "value" inputs (default 1.0, dimensionless).
    """

    presentation: str = "image"
    image_steps: int = 10
    steps_per_row: int = 2
    encoding: str = "value"
    test_fraction: float = 0.2
    ignore_first: int | None = None
    gain: float = 1.0

    def __post_init__(self) -> None:
        if self.presentation not in PRESENTATIONS:
            raise UserError(
                f"presentation={self.presentation!r} is not known "
                f"(choose from: {', '.join(PRESENTATIONS)})"
            )
        if self.image_steps < 1:
            raise UserError(f"image_steps={self.image_steps} must be >= 1")
        if self.steps_per_row < 1:
            raise UserError(f"steps_per_row={self.steps_per_row} must be >= 1")
        if self.encoding not in ENCODINGS:
            raise UserError(
                f"encoding={self.encoding!r} is not known (choose from: {', '.join(ENCODINGS)})"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise UserError(f"test_fraction={self.test_fraction} must lie in (0, 1)")
        if self.ignore_first is not None and not 0 <= self.ignore_first < self.num_steps:
            raise UserError(
                f"ignore_first={self.ignore_first} must lie in [0, T={self.num_steps})"
            )
        if not 0.0 < self.gain <= MAX_GAIN:
            raise UserError(f"gain={self.gain} must lie in (0, {MAX_GAIN:.4g}] (the inputs are "
                            "float32)")
        if self.encoding == "spikes" and self.gain != 1.0:
            raise UserError(f"gain={self.gain} applies only to encoding='value'; leave it at 1.0")

    @property
    def num_steps(self) -> int:
        """T, the sequence length in steps."""
        if self.presentation == "image":
            return self.image_steps
        return IMAGE_SIZE * self.steps_per_row

    @property
    def input_size(self) -> int:
        """M, inputs per step."""
        return IMAGE_SIZE * IMAGE_SIZE if self.presentation == "image" else IMAGE_SIZE


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices so each class keeps its proportion in both parts.

    Per class, round(count * test_fraction) randomly chosen samples go to the test part.

    Returns:
        (train, test): sorted int64 index arrays.
    """
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_test = round(len(members) * test_fraction)
        test.append(members[:num_test])
        train.append(members[num_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def encode_digits(
    images: np.ndarray, options: DigitsOptions, rng: np.random.Generator
) -> np.ndarray:
    """Turn (S, 8, 8) pixel images (0..16) into (S, T, M) sequences (see the module doc).

    Returns float32 ``gain * pixel / 16`` for "value", uint8 spikes for "spikes".
    """
    probability = images / MAX_PIXEL
    if options.presentation == "image":
        flat = probability.reshape(len(images), 1, IMAGE_SIZE * IMAGE_SIZE)
        if options.encoding == "value":
            return np.repeat((options.gain * flat).astype(np.float32), options.image_steps, 1)
        draws = rng.random((len(images), options.image_steps, IMAGE_SIZE * IMAGE_SIZE))
        return (draws < flat).astype(np.uint8)
    steps = options.steps_per_row
    if options.encoding == "value":
        values = (options.gain * probability).astype(np.float32)
        return np.repeat(values, steps, axis=1)
    spikes = np.empty((len(images), options.num_steps, IMAGE_SIZE), dtype=np.uint8)
    for row in range(IMAGE_SIZE):
        draws = rng.random((len(images), steps, IMAGE_SIZE))
        spikes[:, row * steps : (row + 1) * steps] = draws < probability[:, row, None, :]
    return spikes


def build_digits_task(options: DigitsOptions, seed: int) -> Task:
    """Load the bundled digits and build the task; split and spikes are drawn from ``seed``.

    There is no validation split; the test split selects the model.
    """
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, test = stratified_split(labels, options.test_fraction, rng)
    if len(train) == 0 or len(test) == 0:
        raise UserError(
            f"test_fraction={options.test_fraction} leaves the train or test split empty"
        )
    itemsize = 4 if options.encoding == "value" else 1
    check_data_size(len(images), options.num_steps, options.input_size, itemsize,
                    "task 'digits'")
    inputs = encode_digits(images, options, rng)
    num_steps = options.num_steps
    ignore_first = num_steps // 2 if options.ignore_first is None else options.ignore_first
    return Task(
        name="digits",
        input_size=options.input_size,
        num_classes=NUM_CLASSES,
        num_steps=num_steps,
        ignore_first=ignore_first,
        train=SequenceDataset.from_numpy(inputs, labels, train),
        test=SequenceDataset.from_numpy(inputs, labels, test),
        validation=None,
        description=f"digits: T={num_steps}, {options.input_size} inputs, {NUM_CLASSES} classes",
    )
