"""The one gradient checker every layer test uses (Caffe's GradientChecker, in float64).

The objective is L = sum_t <top_t.data, w_t> for fixed random weights w_t, so the analytic
gradient is the layer's backward started from top diffs w_t; it is compared with central
differences (L(x + eps) - L(x - eps)) / (2 eps) for every element of every checked bottom and
parameter blob.
"""
import contextlib

import numpy as np

from .. import backend
from ..blob import Blob
from ..layer import create_layer
from ..proto import caffe_pb2
from google.protobuf import text_format


def make_layer_param(spec):
    """A LayerParameter from a LayerParameter or its prototxt text."""
    if isinstance(spec, caffe_pb2.LayerParameter):
        p = caffe_pb2.LayerParameter()
        p.CopyFrom(spec)
        return p
    return text_format.Parse(spec, caffe_pb2.LayerParameter())


def build_layer(spec, bottoms, phase=caffe_pb2.TRAIN, num_tops=None, inplace=False,
                dtype=np.float64, params=None):
    """Create and SetUp a layer on float64 bottom blobs; returns (layer, bottom, top)."""
    param = make_layer_param(spec)
    if not param.name:
        param.name = param.type.lower() or "layer"
    param.phase = phase
    bottom = []
    for a in bottoms:
        b = Blob(np.shape(a), dtype=dtype)
        b.data[...] = a
        bottom.append(b)
    n_top = num_tops if num_tops is not None else max(len(param.top), 1)
    top = [bottom[0]] if inplace else [Blob(dtype=dtype) for _ in range(n_top)]
    layer = create_layer(param, phase)
    layer.SetUp(bottom, top)
    if params is not None:
        for blob, value in zip(layer.blobs, params):
            blob.data[...] = value
    return layer, bottom, top


@contextlib.contextmanager
def _seeded(seed):
    state = backend.rng().get_state()
    backend.set_random_seed(seed)
    try:
        yield
    finally:
        backend.rng().set_state(state)


def check_gradient(spec, bottoms, *, phase=caffe_pb2.TRAIN, propagate_down=None, num_tops=None,
                   inplace=False, check_params=True, params=None, top_weights=None,
                   eps=1e-4, atol=1e-6, rtol=1e-4, seed=1701, layer_hook=None):
    """Compare a layer's backward with central differences. Raises AssertionError on mismatch.

    ``spec``: LayerParameter or its text. ``bottoms``: arrays (float64 is used). ``top_weights``:
    per top, an array/scalar weight or None to leave that top out of the objective.
    Returns the layer, so callers can inspect it.
    """
    inputs = [np.array(a, dtype=np.float64) for a in bottoms]
    layer, bottom, top = build_layer(spec, inputs, phase, num_tops, inplace, params=params)
    if layer_hook is not None:
        layer_hook(layer)
    pd = list(propagate_down) if propagate_down is not None else \
        [layer.allow_force_backward(i) for i in range(len(bottom))]

    def objective():
        for b, a in zip(bottom, inputs):
            b.data[...] = a
        with _seeded(seed):
            layer.Forward(bottom, top)
        return sum(float(np.vdot(t.data, w)) for t, w in zip(top, weights) if w is not None)

    # top weights are drawn after a first forward: some layers (Filter) size tops there
    for b, a in zip(bottom, inputs):
        b.data[...] = a
    with _seeded(seed):
        layer.Forward(bottom, top)
    rs = np.random.RandomState(seed)
    weights = []
    for i, t in enumerate(top):
        w = None if top_weights is None else top_weights[i]
        if top_weights is None:
            w = rs.standard_normal(t.shape) if t.num_axes else np.float64(rs.standard_normal())
        weights.append(None if w is None else np.broadcast_to(np.asarray(w, np.float64), t.shape))
    # analytic gradient
    objective()
    for p in layer.blobs:
        p.diff[...] = 0
    for b in bottom:
        b.diff[...] = 0
    for t, w in zip(top, weights):   # after zeroing: a top may share its diff with a bottom
        t.diff[...] = 0 if w is None else w
    layer.Backward(top, pd, bottom)
    analytic = [(("bottom", i), bottom[i].diff.copy()) for i in range(len(bottom)) if pd[i]]
    checked_params = [k for k in range(len(layer.blobs))
                      if check_params and (k >= len(layer.param_propagate_down)
                                           or layer.param_propagate_down[k])]
    analytic += [(("param", k), layer.blobs[k].diff.copy()) for k in checked_params]

    for (kind, idx), grad in analytic:
        target = inputs[idx] if kind == "bottom" else layer.blobs[idx].data
        numeric = np.zeros_like(grad)
        flat, nflat = target.reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            fp = objective()
            flat[j] = orig - eps
            fm = objective()
            flat[j] = orig
            nflat[j] = (fp - fm) / (2 * eps)
        scale = np.maximum(np.abs(grad), np.abs(numeric))
        bad = np.abs(grad - numeric) > atol + rtol * scale
        if bad.any():
            j = int(np.flatnonzero(bad.reshape(-1))[0])
            raise AssertionError(
                "%s (%s): gradient of %s %d wrong at flat index %d: analytic %.8g, numeric %.8g "
                "(%d of %d elements off)" % (layer.name, layer.type, kind, idx, j,
                                             grad.reshape(-1)[j], numeric.reshape(-1)[j],
                                             int(bad.sum()), bad.size))
    objective()
    return layer


def forward(spec, bottoms, phase=caffe_pb2.TRAIN, num_tops=None, params=None, dtype=np.float64,
            inplace=False):
    """Build a layer, run one forward; returns (layer, [top arrays])."""
    layer, bottom, top = build_layer(spec, bottoms, phase, num_tops, inplace, dtype, params)
    layer.Forward(bottom, top)
    return layer, [t.data.copy() for t in top]

