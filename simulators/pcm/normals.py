"""The device's source of standard normal draws.

Every stochastic part of the PCM model (programming noise, drift exponents, 1/f noise, pulses,
MVM output noise) only needs standard normals. ``NormalSource`` is that one method, so the fits
accept a numpy ``Generator`` as well; the backend uses ``TorchNormals``, which draws float32
normals with torch's CPU generator (about 3× faster than numpy's float64 draws on a 256×256
pair array) and hands them over as numpy float32 arrays without a copy (arithmetic with the
float64 device state promotes them). Its state is a uint8 array, saved with the rest of the
device state so that a resumed device continues the same stream.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class NormalSource(Protocol):
    def standard_normal(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Independent N(0, 1) draws (float32 or float64) of the given shape."""
        ...


class TorchNormals:
    """Seeded standard normals from a torch CPU generator, as numpy float32 arrays."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def standard_normal(self, shape: int | tuple[int, ...]) -> np.ndarray:
        size = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        draws = torch.randn(size, generator=self.generator, dtype=torch.float32)
        return draws.numpy()

    def state(self) -> np.ndarray:
        """The generator's state as a uint8 array."""
        return self.generator.get_state().numpy().copy()

    def set_state(self, state: np.ndarray) -> None:
        self.generator.set_state(torch.from_numpy(np.asarray(state, dtype=np.uint8).copy()))
