"""Imports every emitter module (each registers its layer types)."""
from . import common, dense, neuron, ssd, vision  # noqa: F401
