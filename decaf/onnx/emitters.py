"""Imports every emitter module (each registers its layer types)."""
from . import common, dense, neuron, recurrent, ssd, vision  # noqa: F401
