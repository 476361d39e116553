"""hwloop: train spiking neural networks with the neuromorphic device in the loop."""

from hwloop import _lava_compat

__version__ = "0.1.0"

_lava_compat.install()
