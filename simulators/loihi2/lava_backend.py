"""Loihi 2 as real Lava processes: ``open_backend("loihi2-lava")`` (docs/loihi2.md).

The same device as the ``loihi2`` emulator — the same weight format, exponents and clipping,
the same ``run`` alignment — but the network runs in Lava 0.10.0's own fixed-point Dense,
LIF and ATRLIF models (``Loihi2SimCfg(select_tag="fixed_pt")``) in a child process
(``LavaChip``). Once the network is declared and every one of its weight matrices written,
the Lava network is built with them and kept alive until ``close``: every later write goes to
its Dense processes through the fast path, and ``read`` returns what they hold, read back from
them. A run that needs longer samples than the live network was built for rebuilds it with
the weights it holds. Lava failing, dying or hanging (beyond ``timeout``) raises ``RunError``.
"""

from __future__ import annotations

import numpy as np

from hwloop.backends.base import NeuronGroup, check_number
from hwloop.errors import RunError
from hwloop.quantize import DEFAULT_RANGE_FACTOR
from simulators.loihi2.backend import Loihi2Backend
from simulators.loihi2.lava_chip import LavaChip, LavaChipError
from simulators.loihi2.network import LifNetwork, Trajectory

LAVA_INSTALL = "pip install --no-deps --ignore-requires-python lava-nc==0.10.0"
MAX_TIMEOUT = 86400.0


def require_lava() -> None:
    """ValueError (one line, with the install command) if Lava cannot be imported."""
    try:
        import hwloop  # noqa: F401  (installs the import fix lava-nc 0.10.0 needs on 3.11)
        import lava.magma.core.run_configs  # noqa: F401
    except Exception as error:  # any import failure means the same to the user
        raise ValueError(f"Lava cannot be imported ({type(error).__name__}: {error}); install "
                         f"it with `{LAVA_INSTALL}` (docs/loihi2.md), or use the loihi2 "
                         "emulator") from None


class Loihi2LavaBackend(Loihi2Backend):
    """Loihi 2 run by real Lava processes (options as ``loihi2``, plus ``timeout``).

    Args:
        bits, range_factor: as ``Loihi2Backend``.
        timeout: seconds one call to the Lava processes (starting, one sample, one write) may
            take before they are stopped, in (0, 86400].
    """

    name = "loihi2-lava"

    def __init__(self, bits: int = 8, range_factor: float = DEFAULT_RANGE_FACTOR,
                 timeout: float = 300.0) -> None:
        super().__init__(bits, range_factor)
        self.timeout = check_number("timeout", timeout, 0, MAX_TIMEOUT, open_low=True, unit="s")
        require_lava()
        self.chip: LavaChip | None = None

    def _store(self, layer: str, integers: np.ndarray) -> None:
        try:
            if self.chip is not None:
                index, connection = self._place(layer)
                self.held[layer] = self.chip.write(index, connection, integers)
                return
            super()._store(layer, integers)
            if self.groups and self._complete():
                self._start(1)  # the weights now live on the chip
        except LavaChipError as error:
            self.chip = None
            raise RunError(f"Loihi 2 (Lava) failed: {error}") from None

    def _complete(self) -> bool:
        """Whether every weight matrix of the declared network has been written."""
        return all(name in self.held for group in self.groups
                   for name in self._weights_of(group))

    def _start(self, steps: int) -> None:
        """(Re)build the Lava network with the held weights, for samples of up to ``steps``."""
        self.close()
        self.chip = LavaChip(self.network(), steps, self.timeout).start()

    def _place(self, layer: str) -> tuple[int, str]:
        """(population index, ``w_in`` or ``w_rec``) of a weight layer such as
        ``hidden.0.w_rec``."""
        prefix, connection = layer.rsplit(".", 1)
        names = [group.layer for group in self.groups]
        return names.index(prefix), connection

    def _run_device(self, network: LifNetwork, inputs: np.ndarray) -> Trajectory:
        steps = inputs.shape[1]
        try:
            if self.chip is None or self.chip.steps < steps:
                self._start(steps)
            return self.chip.run(inputs)
        except LavaChipError as error:
            self.chip = None
            raise RunError(f"Loihi 2 (Lava) failed: {error}") from None

    def declare_network(self, groups: list[NeuronGroup]) -> None:
        self.close()  # a live network was built for the old populations
        super().declare_network(groups)

    def reset(self) -> None:
        self.close()
        super().reset()

    def close(self) -> None:
        """Stop the Lava processes (the held weights stay; the next ``run`` rebuilds them)."""
        if self.chip is not None:
            self.chip.stop()
            self.chip = None
