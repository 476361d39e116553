"""A phase-change-memory crossbar with 4-bit differential-pair weights and realistic noise."""

from simulators.pcm.backend import PCMBackend

__all__ = ["PCMBackend"]
