"""What every task provides: labelled spike/value sequences, split into train/validation/test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from hwloop.errors import UserError
from hwloop.memory import check_fits


@dataclass(frozen=True)
class SequenceDataset:
    """Labelled sequences held in memory.

    Attributes:
        inputs: (S, T, M) tensor; uint8 for spikes and spike counts, float32 for analogue values.
            Batches are converted to the network's dtype on the fly (see ``batches``).
        labels: (S,) int64 class ids in [0, num_classes).
    """

    inputs: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.inputs.dim() != 3:
            raise ValueError(f"inputs must be (S, T, M), got shape {tuple(self.inputs.shape)}")
        if self.labels.shape != (self.inputs.shape[0],):
            raise ValueError(
                f"labels must be ({self.inputs.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @classmethod
    def from_numpy(
        cls, inputs: np.ndarray, labels: np.ndarray, index: np.ndarray | None = None
    ) -> "SequenceDataset":
        """The samples ``index`` (all if None) of numpy arrays inputs (S, T, M), labels (S,)."""
        if index is not None:
            inputs, labels = inputs[index], labels[index]
        return cls(torch.from_numpy(inputs), torch.from_numpy(labels))


@dataclass(frozen=True)
class Task:
    """A classification task over sequences of T steps.

    Attributes:
        name: registry name (``cue``, ``digits``, ``shd``, ``ssc``).
        input_size: M, inputs per step.
        num_classes: K.
        num_steps: T.
        ignore_first: the loss and the prediction ignore steps t < ignore_first (0-based).
        train, test: the splits; ``validation`` selects the best model (None: use ``test``).
        description: one line for summaries, e.g. "cue: T=60, 15 inputs, 2 classes".
    """

    name: str
    input_size: int
    num_classes: int
    num_steps: int
    ignore_first: int
    train: SequenceDataset
    test: SequenceDataset
    validation: SequenceDataset | None
    description: str

    def __post_init__(self) -> None:
        if not 0 <= self.ignore_first < self.num_steps:
            raise ValueError(
                f"ignore_first={self.ignore_first} must lie in [0, T={self.num_steps})"
            )
        for split in ("train", "test", "validation"):
            data = getattr(self, split)
            if data is not None and len(data) == 0:
                raise UserError(f"task {self.name!r}: the {split} split is empty; give more "
                                "samples or change how they are split")

    @property
    def model_selection_split(self) -> SequenceDataset:
        """The split used to pick the best model: validation if the task has one, else test."""
        return self.validation if self.validation is not None else self.test


def check_data_size(samples: int, steps: int, inputs: int, itemsize: int, what: str) -> None:
    """Refuse data of (samples, steps, inputs) items of ``itemsize`` bytes that cannot fit in
    memory (UserError naming ``what``, e.g. "task 'cue'"), before generating them."""
    check_fits(samples * steps * inputs * itemsize, f"{what} ({samples} samples × {steps} steps "
               f"× {inputs} inputs)", "use fewer samples or fewer, longer steps")


def batches(
    dataset: SequenceDataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    first_batch: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs (B, T, M) of ``dtype``, labels (B,) int64) batches.

    With ``shuffle`` the order is a permutation drawn from ``generator`` (pass a seeded one for
    reproducible runs). ``drop_last`` drops a final incomplete batch (training, as in HYPR's
    loaders); if the dataset is smaller than one batch, that single short batch is still kept.
    The first ``first_batch`` batches of the order are skipped (continuing an epoch).
    """
    count = len(dataset)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    stop = count - count % batch_size if drop_last and count >= batch_size else count
    for start in range(first_batch * batch_size, stop, batch_size):
        index = order[start : start + batch_size]
        inputs = dataset.inputs[index].to(device=device, dtype=dtype)
        yield inputs, dataset.labels[index].to(device)
