"""Layer: the base class every layer derives from, and the registry of layer types.

A layer reads its ``bottom`` blobs and writes its ``top`` blobs in ``forward``; ``backward``
writes d(loss)/d(bottom) into ``bottom[i].diff`` and accumulates parameter gradients into
``self.blobs[j].diff``. The net drives it through ``SetUp``, ``Forward`` and ``Backward``,
which add Caffe's bookkeeping (blob-count checks, loss weights) around the hooks.
"""
import difflib

import numpy as np

from . import backend
from .blob import Blob
from .errors import LayerSetupError, UnknownLayerTypeError

_REGISTRY = {}
# Net.forward_backward's pass: a number while one runs, None otherwise (see stable_bottom)
_PASS = [None, 0]


class forward_backward_pass:
    """``with forward_backward_pass(): forward; backward`` (Net.forward_backward, the solver's
    iteration): nothing outside the net runs between the two, so a layer whose
    ``stable_bottom`` the net set (no later layer overwrites its bottoms' memory) may keep
    what its forward derived from its bottoms for its backward, keyed by ``current_pass()``."""

    def __enter__(self):
        _PASS[1] += 1
        _PASS[0] = _PASS[1]
        return self

    def cancel(self):
        """The bottoms' memory moved during the forward (a reshape): keep nothing."""
        _PASS[0] = None

    def __exit__(self, *exc):
        _PASS[0] = None


def current_pass():
    return _PASS[0]


def register_layer(type_name):
    """Class decorator: ``@register_layer("ReLU")`` makes prototxt ``type: "ReLU"`` build it."""
    def deco(cls):
        if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
            raise ValueError("layer type %r registered twice" % type_name)
        _REGISTRY[type_name] = cls
        if "type" not in cls.__dict__:
            cls.type = type_name
        return cls
    return deco


def _ensure_loaded():
    from . import layers  # noqa: F401  (registers the built-in layers)


def layer_type_list():
    """Every registered layer type name, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def layer_class(type_name):
    _ensure_loaded()
    return _REGISTRY.get(type_name)


def create_layer(layer_param, phase=None):
    """Instantiate the registered class for ``layer_param.type``."""
    _ensure_loaded()
    cls = _REGISTRY.get(layer_param.type)
    if cls is None:
        close = difflib.get_close_matches(layer_param.type, list(_REGISTRY), n=3, cutoff=0.5)
        lower = [t for t in _REGISTRY if t.lower() == layer_param.type.lower()]
        hint = lower or close
        msg = "Unknown layer type %r in layer %r" % (layer_param.type, layer_param.name)
        if hint:
            msg += "; did you mean %s?" % " or ".join(repr(h) for h in hint)
        raise UnknownLayerTypeError(msg)
    if phase is not None:
        layer_param.phase = phase
    return cls(layer_param)


class Layer:
    """Base layer. Subclasses implement ``setup``, ``reshape``, ``forward``, ``backward``."""

    type = "Layer"
    exact_num_bottom = -1
    min_bottom = -1
    max_bottom = -1
    exact_num_top = -1
    min_top = -1
    max_top = -1
    equal_num_bottom_top = False
    auto_top_blobs = False
    # reshape depends only on the shapes and data memory of this layer's blobs (and its fixed
    # parameters): a net skips it while no blob changed either since its last full forward
    # (decaf.blob.shape_epoch; data layers, Python layers and DetectionOutput keep False)
    shape_only_reshape = False
    # set by the net: no layer after this one writes memory its bottoms' data lives in, so
    # within a forward_backward_pass the bottoms a backward reads are those its forward read
    stable_bottom = False

    def __init__(self, layer_param):
        from .proto import caffe_pb2
        self.layer_param = layer_param
        self.phase = layer_param.phase
        self.blobs = []
        self.param_propagate_down = []
        self.loss_weights = []
        self.xp = backend.xp()
        self._pb = caffe_pb2
        if len(layer_param.blobs):
            for bp in layer_param.blobs:
                b = Blob()
                b.from_proto(bp)
                self.blobs.append(b)

    @property
    def name(self):
        return self.layer_param.name

    # -- hooks (pycaffe names) -------------------------------------------------------------
    def setup(self, bottom, top):
        """LayerSetUp: read parameters, create parameter blobs, validate."""

    def reshape(self, bottom, top):
        raise NotImplementedError("%s must implement reshape" % type(self).__name__)

    def forward(self, bottom, top):
        raise NotImplementedError("%s must implement forward" % type(self).__name__)

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError("layer %r (%s) has no backward" % (self.name, self.type))

    def allow_force_backward(self, bottom_index):
        return True

    # -- drivers (Caffe's SetUp / Forward / Backward) ---------------------------------------
    def SetUp(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def Forward(self, bottom, top):
        """Reshape, forward, and return the weighted loss of the loss tops."""
        self.reshape(bottom, top)
        self.forward(bottom, top)
        return self.weighted_loss(top) if self.loss_weights else 0.0

    def weighted_loss(self, top):
        """sum over the loss tops of loss_weight * top (Caffe keeps the weight in top's diff)."""
        loss = 0.0
        for i, w in enumerate(self.loss_weights):
            if w:
                t = top[i]
                loss += float(self.xp.vdot(t.data.ravel(), t.diff.ravel()))
        return loss

    def Backward(self, top, propagate_down, bottom):
        self.backward(top, propagate_down, bottom)

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def set_loss(self, top_index, value):
        while len(self.loss_weights) <= top_index:
            self.loss_weights.append(0.0)
        self.loss_weights[top_index] = value

    def set_loss_weights(self, top):
        n = len(self.layer_param.loss_weight)
        if n:
            if n != len(top):
                self.error("loss_weight must be specified once per top blob (%d given, %d tops)"
                           % (n, len(top)))
            for i, w in enumerate(self.layer_param.loss_weight):
                self.set_loss(i, w)
        for i, w in enumerate(self.loss_weights):
            if w and i < len(top):
                top[i].diff[...] = w

    def check_blob_counts(self, bottom, top):
        nb, nt = len(bottom), len(top)

        def fail(what, rule, n):
            self.error("takes %s %s, got %d" % (rule, what, n))
        if self.exact_num_bottom >= 0 and nb != self.exact_num_bottom:
            fail("bottom blob(s)", "exactly %d" % self.exact_num_bottom, nb)
        if self.min_bottom >= 0 and nb < self.min_bottom:
            fail("bottom blob(s)", "at least %d" % self.min_bottom, nb)
        if self.max_bottom >= 0 and nb > self.max_bottom:
            fail("bottom blob(s)", "at most %d" % self.max_bottom, nb)
        if self.exact_num_top >= 0 and nt != self.exact_num_top:
            fail("top blob(s)", "exactly %d" % self.exact_num_top, nt)
        if self.min_top >= 0 and nt < self.min_top:
            fail("top blob(s)", "at least %d" % self.min_top, nt)
        if self.max_top >= 0 and nt > self.max_top:
            fail("top blob(s)", "at most %d" % self.max_top, nt)
        if self.equal_num_bottom_top and nb != nt:
            self.error("needs as many top blobs as bottom blobs (%d bottoms, %d tops)" % (nb, nt))

    # -- helpers for subclasses -------------------------------------------------------------
    def error(self, message):
        """Raise a LayerSetupError naming this layer."""
        raise LayerSetupError("Layer %r (%s): %s" % (self.name, self.type, message))

    def check(self, condition, message):
        if not condition:
            self.error(message)

    def blob_names(self, which):
        names = self.layer_param.bottom if which == "bottom" else self.layer_param.top
        return ", ".join(names)

    def make_blob(self, shape, dtype=np.float32):
        return Blob(shape, dtype=dtype, xp=self.xp)


class NeuronLayer(Layer):
    """One bottom, one top of the same shape (in-place allowed)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)


class LossLayer(Layer):
    """Two bottoms (prediction, target), a scalar loss top whose loss weight defaults to 1."""

    exact_num_bottom = 2
    exact_num_top = 1

    def SetUp(self, bottom, top):
        if not len(self.layer_param.loss_weight):
            self.set_loss(0, 1.0)
        super().SetUp(bottom, top)

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            self.error("the data and label should have the same first dimension: "
                       "bottom %s is %s, bottom %s is %s"
                       % (self.layer_param.bottom[0], bottom[0].shape,
                          self.layer_param.bottom[1], bottom[1].shape))
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1
