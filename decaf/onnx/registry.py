"""The registry of ONNX emitters: Caffe layer type -> function writing its ONNX nodes.

    @register_emitter("ReLU")
    def relu(c):               # c: Ctx of one layer
        c.g.op1("Relu", [c.x], c.y)

Importing ``decaf.onnx`` imports every emitter module, which fills the registry.
"""
import numpy as np

from .. import backend

EMITTERS = {}


def register_emitter(*type_names):
    """Decorator: the function emits the ONNX nodes of layers of these Caffe types."""
    def deco(fn):
        for t in type_names:
            if t in EMITTERS:
                raise ValueError("ONNX emitter for %r registered twice" % t)
            EMITTERS[t] = fn
        return fn
    return deco


def supported_types():
    """The Caffe layer types that export to ONNX, sorted."""
    return sorted(EMITTERS)


class Ctx:
    """What an emitter sees of one layer: ``g`` (GraphBuilder), ``layer`` (the decaf layer),
    ``lp`` (its LayerParameter), ``bottom``/``top`` (ONNX value names; the top names are the
    ones to produce), ``bshape``/``tshape`` (static Caffe shapes), ``x``/``y`` (first of each)."""

    def __init__(self, g, layer, bottom, top, bshape, tshape):
        self.g, self.layer, self.lp = g, layer, layer.layer_param
        self.bottom, self.top, self.bshape, self.tshape = bottom, top, bshape, tshape
        self.x = bottom[0] if bottom else None
        self.y = top[0] if top else None

    def blob(self, i):
        """Parameter blob ``i`` of the layer, as a float32 NumPy array."""
        return np.asarray(backend.to_numpy(self.layer.blobs[i].data), np.float32)

    def base(self, suffix=""):
        """A name stem for the layer's internal values."""
        return self.lp.name + ("/" + suffix if suffix else "")

    def error(self, message):
        from ..errors import DecafError
        raise DecafError("ONNX export: layer %r (type %s): %s" % (self.lp.name, self.lp.type,
                                                                 message))

    def channel_shape(self, values, ndim, axis=1):
        """``values`` (C,) reshaped to broadcast along ``axis`` of an ``ndim``-D tensor."""
        v = np.asarray(values, np.float32)
        return v.reshape(v.shape + (1,) * (ndim - axis - v.ndim))
