"""Statistical PCM device fits: programming noise, drift exponents, accumulated 1/f read noise.

Two fits of measured PCM behind one small base class (docs/pcm.md cites the sources):

- ``PCMLikeFit``: the PCM model of Nandakumar et al. (ICECS 2019) as parametrised in IBM
  aihwkit's ``PCMLikeNoiseModel`` (g_max 25 µS, t0 20 s, t_read 250 ns).
- ``HermesFit``: the fit of the IBM 14 nm HERMES chip's PCM (Le Gallo et al. 2023) as in
  aihwkit's ``HermesNoiseModel`` (2 devices per weight: g_max 20.7 µS, t0 300 s, t_read 512 ns;
  1 device: 10.35 µS, 200 s).

All conductances are in µS, times in seconds; arrays are numpy float64 of any shape.
A device programmed to g_T gets g_prog = max(0, g_T + σ_prog(g_T)·ξ) and a drift exponent
ν = |μ_ν(g_T) + σ_ν(g_T)·ξ'|. At a time t_since seconds after programming it reads

    g(t) = max(0, g_drift + |g_drift| · Q_s(g_prog) · sqrt(ln((t + t_read)/(2 t_read))) · ξ'')
    g_drift = g_prog · (t/t0)^(−ν),  t = t_since + t0

where ξ'' is the device's accumulated 1/f noise. It is drawn once per programming, and the
device keeps the product Q_s(g_prog)·ξ'' (its "flicker"), so a read costs no random draw and no
power function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from simulators.pcm.normals import NormalSource

ZERO_CLIP = 1e-7  # relative conductances are clipped to ≥ this before taking logarithms


@dataclass(frozen=True)
class DeviceFit(ABC):
    """A statistical fit of programmed PCM devices.

    Attributes:
        g_max: conductance of the largest level (µS).
        t0: time of the first read after programming (s); drift is relative to it.
        t_read: duration of one read (s), the 1/f noise integration floor.
        prog_noise_scale, drift_scale, read_noise_scale: multipliers (0 switches a noise off).
    """

    g_max: float
    t0: float
    t_read: float
    prog_noise_scale: float = 1.0
    drift_scale: float = 1.0
    read_noise_scale: float = 1.0

    @abstractmethod
    def sigma_programming(self, g_target: np.ndarray) -> np.ndarray:
        """Standard deviation of programming noise σ_prog(g_T) (µS), before the noise scale."""

    @abstractmethod
    def drift_statistics(self, g_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (μ_ν, σ_ν) of the drift exponent for target g_T."""

    @abstractmethod
    def read_noise_q(self, g_programmed: np.ndarray) -> np.ndarray:
        """Q_s: relative 1/f noise amplitude of a device programmed to g_prog."""

    def program(self, g_target: np.ndarray, rng: NormalSource) -> np.ndarray:
        """One-shot programming: g_prog = max(0, g_T + scale·σ_prog(g_T)·ξ) (µS)."""
        return self._programmed(g_target, self.sigma_programming(g_target), rng)

    def drift_exponents(self, g_target: np.ndarray, rng: NormalSource) -> np.ndarray:
        """ν = |μ_ν + σ_ν ξ| × drift_scale, sampled once per programming."""
        return self._exponents(*self.drift_statistics(g_target), rng)

    def program_levels(
        self, g_levels: np.ndarray, index: np.ndarray, rng: NormalSource
    ) -> tuple[np.ndarray, np.ndarray]:
        """``program`` and ``drift_exponents`` for devices targeting g_levels[index] (µS; index
        an int array of any shape): the fits are evaluated once per level, not per device.
        Returns (g_prog, ν), shaped like ``index``."""
        sigma = self.sigma_programming(g_levels)
        g_programmed = self._programmed(g_levels[index], sigma[index], rng)
        mean, std = (value.astype(np.float32) for value in self.drift_statistics(g_levels))
        return g_programmed, self._exponents(mean[index], std[index], rng)

    def _programmed(self, g_target: np.ndarray, sigma: np.ndarray, rng: NormalSource) -> np.ndarray:
        programmed = rng.standard_normal(g_target.shape) * (self.prog_noise_scale * sigma)
        programmed += g_target
        return np.maximum(programmed, 0.0, out=programmed)

    def _exponents(self, mean: np.ndarray, std: np.ndarray, rng: NormalSource) -> np.ndarray:
        """float32 exponents (a noise statistic: float32 halves the memory a read streams)."""
        nu = rng.standard_normal(np.shape(mean)).astype(np.float32, copy=False)
        nu *= std
        nu += mean
        np.abs(nu, out=nu)
        nu *= np.float32(self.drift_scale)
        return nu

    def flicker(self, g_programmed: np.ndarray, rng: NormalSource) -> np.ndarray:
        """Accumulated 1/f noise of freshly programmed devices, drawn once per programming:
        scale · Q_s(g_prog) · ξ'' (relative to the conductance, per unit of sqrt-log time),
        float32."""
        amplitude = np.asarray(self.read_noise_q(g_programmed), dtype=np.float32)
        amplitude *= rng.standard_normal(g_programmed.shape)
        amplitude *= np.float32(self.read_noise_scale)
        return amplitude

    def conductance(
        self, g_programmed: np.ndarray, nu: np.ndarray, flicker: np.ndarray,
        seconds_since_programming: float | np.ndarray,
    ) -> np.ndarray:
        """g(t) of devices programmed to g_prog with exponents ν and ``flicker`` (from
        ``flicker``), ``seconds_since_programming`` ≥ 0 after their programming (a number when
        all were programmed at once, which saves the per-device logarithm).

        Programmed conductances are ≥ 0, so g_drift + |g_drift|·σ·ξ'' = g_prog·r with the
        relative factor r = (t/t0)^(−ν)·(1 + σ(t)·flicker), formed in the dtype of ν and flicker.
        """
        if np.ndim(seconds_since_programming) == 0:
            t = float(seconds_since_programming) + self.t0
            sigma = np.sqrt(np.log((t + self.t_read) / (2.0 * self.t_read)))
            relative = flicker * np.asarray(sigma, dtype=flicker.dtype)
            relative += 1
            log_drift = float(np.log(t / self.t0))
            if log_drift != 0.0:
                relative *= np.exp(np.asarray(-log_drift, dtype=nu.dtype) * nu)
        else:
            t = np.asarray(seconds_since_programming, dtype=np.float64) + self.t0
            relative = flicker * np.sqrt(np.log((t + self.t_read) / (2.0 * self.t_read)))
            relative += 1
            relative *= np.exp(-nu * np.log(t / self.t0))
        conductance = g_programmed * relative
        return np.maximum(conductance, 0.0, out=conductance)


@dataclass(frozen=True)
class PCMLikeFit(DeviceFit):
    """aihwkit's PCM-like statistics (Nandakumar et al. 2019); defaults g_max 25 µS, t0 20 s."""

    g_max: float = 25.0
    t0: float = 20.0
    t_read: float = 250e-9
    prog_coefficients: tuple[float, ...] = (0.26348, 1.9650, -1.1731)

    def sigma_programming(self, g_target: np.ndarray) -> np.ndarray:
        ratio = g_target / self.g_max
        c0, c1, c2 = self.prog_coefficients
        return (c0 + c1 * ratio + c2 * ratio**2) * (self.g_max / 25.0)

    def drift_statistics(self, g_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_ratio = np.log(np.maximum(g_target / self.g_max, ZERO_CLIP))
        mean = np.clip(-0.0155 * log_ratio + 0.0244, 0.049, 0.1)
        std = np.clip(-0.0125 * log_ratio - 0.0059, 0.008, 0.045)
        return mean, std

    def read_noise_q(self, g_programmed: np.ndarray) -> np.ndarray:
        # min(0.0088 / max(r^0.65, 1e-3), 0.2) = min(0.0088·r^−0.65, 0.2), as exp(−0.65 ln r)
        # in float32 (a noise amplitude; four times faster than a float64 power)
        q = np.abs(g_programmed.astype(np.float32))
        q *= np.float32(1 / self.g_max)
        with np.errstate(divide="ignore"):  # r = 0 → ln r = −inf → q = inf → capped at 0.2
            np.log(q, out=q)
        q *= np.float32(-0.65)
        np.exp(q, out=q)
        q *= np.float32(0.0088)
        return np.minimum(q, np.float32(0.2))


@dataclass(frozen=True)
class HermesFit(DeviceFit):
    """aihwkit's fit of the IBM HERMES 14 nm PCM chip; ``devices`` 2 (default) or 1 per weight."""

    devices: int = 2
    g_max: float = 20.7
    t0: float = 300.0
    t_read: float = 512e-9

    def __post_init__(self) -> None:
        if self.devices not in (1, 2):
            raise ValueError(f"HERMES holds 1 or 2 devices per weight, got {self.devices}")
        limit = 20.7 if self.devices == 2 else 10.35
        if self.g_max > limit:
            raise ValueError(f"HERMES with {self.devices} device(s) is characterised up to "
                             f"g_max {limit} µS, got {self.g_max}")

    def sigma_programming(self, g_target: np.ndarray) -> np.ndarray:
        if self.devices == 2:
            coefficients, reference = (0.16603222, 4.71806468, -8.48101252, 4.68961419), 20.7
        else:
            coefficients, reference = (0.15781817, 2.32443916, -2.16310839, 0.68841818), 10.35
        ratio = g_target / self.g_max
        sigma = sum(c * ratio**power for power, c in enumerate(coefficients))
        return sigma * (self.g_max / reference)

    def drift_statistics(self, g_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ratio = np.maximum(np.abs(g_target / self.g_max), ZERO_CLIP)
        log_ratio = np.log(ratio)
        mean = np.where(
            ratio < 0.0945,
            np.clip(-0.0387 * log_ratio - 0.0182, 0.072, 0.13),
            -0.0436 * ratio**2 - 0.0126 * ratio + 0.0736,
        )
        if self.devices == 2:
            low = np.clip(-0.0117 * log_ratio - 0.0057, 0.0091, 0.04)
            std = np.where(ratio < 0.3055, low, -0.0118 * ratio**2 + 0.0093 * ratio + 0.0073)
        else:
            low = np.clip(-0.0120 * log_ratio - 0.0023, 0.0124, 0.04)
            std = np.where(ratio < 0.3039, low, -0.0165 * ratio**2 + 0.0116 * ratio + 0.0104)
        return mean, std

    def read_noise_q(self, g_programmed: np.ndarray) -> np.ndarray:
        ratio = np.abs(g_programmed) / self.g_max
        with np.errstate(divide="ignore"):
            log_ratio = np.log(ratio)  # −inf at 0 is clipped to the upper bound below
        if self.devices == 2:
            low = np.clip(-0.0117 * log_ratio - 0.0069, 0.015, 0.04)
            high = 0.0069 * ratio**3 - 0.0280 * ratio**2 + 0.0211 * ratio + 0.0123
            return np.where(ratio < 0.16, low, high)
        low = np.clip(-0.0078 * log_ratio + 0.0038, 0.0179, 0.04)
        high = 0.0664 * ratio**3 - 0.1352 * ratio**2 + 0.0768 * ratio + 0.0088
        return np.where(ratio < 0.1591, low, high)


FITS = ("pcm", "hermes")


def make_fit(
    name: str, g_max: float | None = None, devices: int = 2, **scales: float
) -> DeviceFit:
    """The fit named ``pcm`` (PCM-like) or ``hermes`` (``devices`` 1 or 2 per weight) at its
    characterised g_max and t0, or at another ``g_max``."""
    if name == "pcm":
        return PCMLikeFit(**scales) if g_max is None else PCMLikeFit(g_max=g_max, **scales)
    if name == "hermes":
        defaults = {"g_max": 20.7, "t0": 300.0} if devices == 2 else {"g_max": 10.35, "t0": 200.0}
        if g_max is not None:
            defaults["g_max"] = g_max
        return HermesFit(devices=devices, **defaults, **scales)
    raise ValueError(f"unknown PCM fit {name!r} (choose from: {', '.join(FITS)})")
