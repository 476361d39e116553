"""Evidence-accumulation cue task (HYPR spec 7.1, after e-prop's evidence accumulation task).

Each sample has 15 input channels and T = 2 * seq_len + delay steps:

* evidence period, steps [0, seq_len): class 0 spikes on channels 0-4 with probability
  ``prob_a`` per step, class 1 on channels 5-9 with probability ``prob_b``; all else silent;
* delay, steps [seq_len, seq_len + delay): silent;
* cue period, steps [T - seq_len, T): channels 10-14 spike with probability ``prob_cue``,
  independently of the class.

The network must remember which group spiked until the cue period, where the loss is taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwloop.errors import UserError
from hwloop.tasks.base import SequenceDataset, Task, check_data_size

INPUT_SIZE = 15
NUM_CLASSES = 2
GROUP_SIZE = 5  # channels per group
CLASS_0_CHANNELS = slice(0, 5)
CLASS_1_CHANNELS = slice(5, 10)
CUE_CHANNELS = slice(10, 15)

MAX_SAMPLES = 2**53
"""The most samples: ``num_train`` is computed in float64, exact for integers up to 2**53."""

# Random numbers drawn at once while generating; bounds the float64 scratch memory (32 MiB).
_DRAW_LIMIT = 1 << 22


@dataclass(frozen=True)
class CueOptions:
    """Options of the ``cue`` task.

    Attributes:
        seq_len: steps in the evidence period and in the cue period (default 20).
        delay: silent steps between them (default 20); replaced by ``steps - 2 * seq_len``
            when ``steps`` is set.
        steps: total length T in steps (default None: T = 2 * seq_len + delay).
        prob_a: spike probability per step of channels 0-4 for class 0 (default 0.2).
        prob_b: spike probability per step of channels 5-9 for class 1 (default 0.3).
        prob_cue: spike probability per step of channels 10-14 in the cue period (default 0.5).
        num_samples: samples generated in all, before the split (default 256).
        test_fraction: fraction of the samples in the test split (default 0.2); the training
            split gets int(num_samples * (1 - test_fraction)).
        ignore_first: the loss ignores steps t < ignore_first (default None: T - seq_len, so
            only the cue period counts).
    """

    seq_len: int = 20
    delay: int = 20
    steps: int | None = None
    prob_a: float = 0.2
    prob_b: float = 0.3
    prob_cue: float = 0.5
    num_samples: int = 256
    test_fraction: float = 0.2
    ignore_first: int | None = None

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise UserError(f"seq_len={self.seq_len} must be >= 1 (steps per period)")
        if self.steps is None and self.delay < 0:
            raise UserError(f"delay={self.delay} must be >= 0 (silent steps)")
        if self.steps is not None and self.steps < 2 * self.seq_len:
            raise UserError(
                f"steps={self.steps} must be >= 2 * seq_len = {2 * self.seq_len}; "
                "raise steps or lower seq_len"
            )
        for name in ("prob_a", "prob_b", "prob_cue"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name}={value} must lie in [0, 1] (a spike probability)")
        if not 0.0 < self.test_fraction < 1.0:
            raise UserError(f"test_fraction={self.test_fraction} must lie in (0, 1)")
        if self.num_samples > MAX_SAMPLES:
            raise UserError(f"num_samples={self.num_samples} must be at most 2**53")
        num_train = self.num_train
        if num_train < 1 or num_train >= self.num_samples:
            raise UserError(
                f"num_samples={self.num_samples} with test_fraction={self.test_fraction} "
                "leaves the train or test split empty; raise num_samples"
            )
        if self.ignore_first is not None and not 0 <= self.ignore_first < self.num_steps:
            raise UserError(
                f"ignore_first={self.ignore_first} must lie in [0, T={self.num_steps})"
            )

    @property
    def delay_steps(self) -> int:
        """Silent steps between the evidence and the cue period."""
        return self.delay if self.steps is None else self.steps - 2 * self.seq_len

    @property
    def num_steps(self) -> int:
        """T, the sequence length in steps."""
        return 2 * self.seq_len + self.delay_steps

    @property
    def num_train(self) -> int:
        """Samples in the training split."""
        return int(self.num_samples * (1.0 - self.test_fraction))


def generate_cue(
    num_samples: int, options: CueOptions, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_samples`` cue sequences (``options.num_samples`` is not used here).

    Returns:
        inputs: (S, T, 15) uint8 spikes.
        labels: (S,) int64 classes in {0, 1}.
    """
    seq_len, num_steps = options.seq_len, options.num_steps
    labels = rng.integers(0, NUM_CLASSES, size=num_samples, dtype=np.int64)
    inputs = np.zeros((num_samples, num_steps, INPUT_SIZE), dtype=np.uint8)
    block = max(1, _DRAW_LIMIT // (seq_len * GROUP_SIZE))
    for start in range(0, num_samples, block):
        stop = min(start + block, num_samples)
        shape = (stop - start, seq_len, GROUP_SIZE)
        class_1 = labels[start:stop] == 1
        prob = np.where(class_1, options.prob_b, options.prob_a)[:, None, None]
        evidence = rng.random(shape) < prob
        rows = np.arange(start, stop)
        inputs[rows[~class_1], :seq_len, CLASS_0_CHANNELS] = evidence[~class_1]
        inputs[rows[class_1], :seq_len, CLASS_1_CHANNELS] = evidence[class_1]
        cue = rng.random(shape) < options.prob_cue
        inputs[start:stop, num_steps - seq_len :, CUE_CHANNELS] = cue
    return inputs, labels


def build_cue_task(options: CueOptions, seed: int) -> Task:
    """Generate the cue task from ``seed``: a random permutation splits train/test.

    There is no validation split; the test split selects the model, as in HYPR.
    """
    check_data_size(options.num_samples, options.num_steps, INPUT_SIZE, 1, "task 'cue'")
    rng = np.random.default_rng(seed)
    inputs, labels = generate_cue(options.num_samples, options, rng)
    order = rng.permutation(options.num_samples)
    train, test = order[: options.num_train], order[options.num_train :]
    num_steps = options.num_steps
    ignore_first = (
        num_steps - options.seq_len if options.ignore_first is None else options.ignore_first
    )
    return Task(
        name="cue",
        input_size=INPUT_SIZE,
        num_classes=NUM_CLASSES,
        num_steps=num_steps,
        ignore_first=ignore_first,
        train=SequenceDataset.from_numpy(inputs, labels, train),
        test=SequenceDataset.from_numpy(inputs, labels, test),
        validation=None,
        description=f"cue: T={num_steps}, {INPUT_SIZE} inputs, {NUM_CLASSES} classes",
    )
