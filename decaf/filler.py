"""Fillers: initial values of parameter blobs, exactly as Caffe's filler.hpp computes them.

fan_in = count / shape[0], fan_out = count / shape[1];  n = fan_in, fan_out or their mean
(variance_norm).  xavier: U(-sqrt(3/n), sqrt(3/n));  msra: N(0, sqrt(2/n)).
"""
import math

import numpy as np

from . import backend
from .errors import DecafError


def _fill(blob, values):
    blob.data[...] = blob.xp.asarray(np.asarray(values, dtype=blob.dtype).reshape(blob.shape))


def _fans(blob):
    count = blob.count
    fan_in = count // blob.shape[0] if blob.num_axes else count
    fan_out = count // blob.shape[1] if blob.num_axes > 1 else count
    return fan_in, fan_out


def _norm(param, blob):
    from .proto import caffe_pb2
    fan_in, fan_out = _fans(blob)
    vn = param.variance_norm
    if vn == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if vn == caffe_pb2.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def constant(param, blob):
    blob.data[...] = param.value


def uniform(param, blob):
    _fill(blob, backend.rng().uniform(param.min, param.max, blob.shape))


def gaussian(param, blob):
    rng = backend.rng()
    values = rng.normal(param.mean, param.std, blob.shape)
    if param.sparse >= 0:
        if blob.num_axes < 1:
            raise DecafError("gaussian filler: sparse needs a blob with at least one axis")
        p = param.sparse / float(blob.shape[0])
        values = values * (rng.uniform(0, 1, blob.shape) < p)
    _fill(blob, values)


def positive_unitball(param, blob):
    values = backend.rng().uniform(0, 1, blob.shape).reshape(blob.shape[0] if blob.num_axes else 1, -1)
    values /= values.sum(axis=1, keepdims=True)
    _fill(blob, values)


def xavier(param, blob):
    scale = math.sqrt(3.0 / _norm(param, blob))
    _fill(blob, backend.rng().uniform(-scale, scale, blob.shape))


def msra(param, blob):
    std = math.sqrt(2.0 / _norm(param, blob))
    _fill(blob, backend.rng().normal(0.0, std, blob.shape))


def bilinear(param, blob):
    """Weights of bilinear upsampling: (1 - |x/f - c|)(1 - |y/f - c|), f = ceil(k/2)."""
    if blob.num_axes != 4 or blob.shape[2] != blob.shape[3]:
        raise DecafError("bilinear filler needs a 4-D blob with square kernels, got %s" % (blob.shape,))
    k = blob.shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    r = 1 - np.abs(np.arange(k) / f - c)
    _fill(blob, np.broadcast_to(np.outer(r, r), blob.shape))


FILLERS = {"constant": constant, "uniform": uniform, "gaussian": gaussian,
           "positive_unitball": positive_unitball, "xavier": xavier, "msra": msra,
           "bilinear": bilinear}


def fill(blob, filler_param):
    """Fill ``blob.data`` as the FillerParameter says."""
    kind = filler_param.type
    if kind not in FILLERS:
        raise DecafError("Unknown filler type %r (known: %s)" % (kind, ", ".join(sorted(FILLERS))))
    if kind != "gaussian" and filler_param.sparse != -1:
        raise DecafError("Sparsity not supported by the %r filler" % kind)
    if kind == "gaussian" and not filler_param.std >= 0:
        raise DecafError("gaussian filler: std must not be negative, got %g" % filler_param.std)
    if blob.count == 0:
        return   # nothing to fill (and fan_in / fan_out may be 0)
    FILLERS[kind](filler_param, blob)


def get_filler(filler_param):
    """An object with ``fill(blob)``, as Caffe's GetFiller returns."""
    class _Filler:
        def fill(self, blob):
            fill(blob, filler_param)
    return _Filler()
