"""Seeds of every random source of a run, derived from the one run seed.

A run's ``seed`` (0 ≤ seed < 2⁶³) seeds the task data, the initial weights, the shuffling and
the session (hwloop.trainer, hwloop.session), and the device: unless the backend spec or
``backend_options`` name a ``seed``, the device gets ``derive_seed(seed, "device")``.
Evaluation devices get ``derive_seed(k, "eval-device")`` for device index k (docs/eval.md).

``derive_seed`` hashes (seed, purpose, index) with numpy's SeedSequence, so derived seeds of
different purposes are unrelated streams even where the run seed feeds a generator of the
same kind (torch's generator seeds both the initial weights and the PCM device noise).
"""

from __future__ import annotations

import zlib

import numpy as np

SEED_LIMIT = 2**63
"""Seeds lie in [0, SEED_LIMIT): every generator hwloop uses accepts them."""


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A seed in [0, 2⁶³) for ``purpose`` (e.g. ``"device"``) and ``index``, derived from
    ``seed``; equal inputs give equal seeds on every machine."""
    words = np.random.SeedSequence([seed, zlib.crc32(purpose.encode()), index]).generate_state(
        2, np.uint32
    )
    return int(words[0]) << 31 | int(words[1]) >> 1  # 63 bits
