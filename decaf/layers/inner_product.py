"""Fully connected layers: InnerProduct (a GEMM) and Embed (a lookup table).

Both keep Caffe's parameter layouts, so .caffemodel weights load unchanged: InnerProduct's
weight is N x K (K x N with ``transpose``), Embed's is input_dim x num_output.
"""
import numpy as np

from ..kernels.blas import gemm_accumulate, matmul  # noqa: F401  (also imported from here)
from ..filler import fill
from ..layer import Layer, register_layer
from ._reshape_cache import remember, unchanged


def _check_param_blobs(layer, shapes):
    """Check loaded parameter blobs (from layer_param.blobs) against the expected shapes."""
    if len(layer.blobs) != len(shapes):
        layer.error("expects %d parameter blob(s), got %d" % (len(shapes), len(layer.blobs)))
    for i, (blob, shape) in enumerate(zip(layer.blobs, shapes)):
        if blob.shape != tuple(shape):
            layer.error("parameter blob %d has shape %s, expected %s"
                        % (i, blob.shape, tuple(shape)))


@register_layer("InnerProduct")
class InnerProductLayer(Layer):
    """InnerProduct: top (M x N) = bottom (M x K) . W^T + b, M = count(0, axis), K = count(axis);
    W diff += top diff^T . bottom, b diff += column sums of top diff, bottom diff = top diff . W."""
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        self.N = int(p.num_output)
        if self.N <= 0:
            self.error("inner_product_param.num_output must be positive, got %d" % self.N)
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        self.axis = self._axis(bottom[0])
        self.K = bottom[0].count_range(self.axis)
        wshape = (self.K, self.N) if self.transpose else (self.N, self.K)
        shapes = [wshape] + ([(self.N,)] if self.bias_term else [])
        if self.blobs:
            _check_param_blobs(self, shapes)
        else:
            dtype = bottom[0].dtype
            self.blobs = [self.make_blob(s, dtype=dtype) for s in shapes]
            fill(self.blobs[0], p.weight_filler)
            if self.bias_term:
                fill(self.blobs[1], p.bias_filler)
        self.param_propagate_down = [True] * len(self.blobs)

    def _axis(self, blob):
        axis = self.layer_param.inner_product_param.axis
        if not -blob.num_axes <= axis < max(blob.num_axes, 1):
            self.error("axis %d is out of range for bottom %s of shape %s"
                       % (axis, self.blob_names("bottom"), blob.shape))
        return axis + blob.num_axes if axis < 0 else axis

    def reshape(self, bottom, top):
        if unchanged(self, bottom, top):
            return
        axis = self._axis(bottom[0])
        k = bottom[0].count_range(axis)
        if k != self.K:
            self.error("input size incompatible with inner product parameters: bottom %s of "
                       "shape %s has %d inputs from axis %d, the weights expect K = %d"
                       % (self.blob_names("bottom"), bottom[0].shape, k, axis, self.K))
        self.axis = axis
        self.M = bottom[0].count_range(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.N,))
        remember(self, bottom, top)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        w = self.blobs[0].data
        matmul(x, w if self.transpose else w.T, y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        if self.param_propagate_down[0]:
            dw = self.blobs[0].diff
            if self.transpose:  # W is K x N: dW += bottom^T . top_diff
                gemm_accumulate(x.T, dy, dw)
            else:  # W is N x K: dW += top_diff^T . bottom
                gemm_accumulate(dy.T, x, dw)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            w = self.blobs[0].data
            dx = bottom[0].diff.reshape(self.M, self.K)
            matmul(dy, w.T if self.transpose else w, dx)


@register_layer("Embed")
class EmbedLayer(Layer):
    """Embed: top[..., :] = W[index] + b for each integer index (given as floats) in
    [0, input_dim); W diff[index] += top diff (repeated indices add up), b diff += sums;
    no gradient to the indices."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.embed_param
        self.N, self.K = int(p.num_output), int(p.input_dim)
        if self.N <= 0:
            self.error("embed_param.num_output must be positive, got %d" % self.N)
        if self.K <= 0:
            self.error("embed_param.input_dim must be positive, got %d" % self.K)
        self.bias_term = bool(p.bias_term)
        shapes = [(self.K, self.N)] + ([(self.N,)] if self.bias_term else [])
        if self.blobs:
            _check_param_blobs(self, shapes)
        else:
            dtype = bottom[0].dtype
            self.blobs = [self.make_blob(s, dtype=dtype) for s in shapes]
            fill(self.blobs[0], p.weight_filler)
            if self.bias_term:
                fill(self.blobs[1], p.bias_filler)
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        self.M = bottom[0].count
        top[0].reshape(bottom[0].shape + (self.N,))

    def allow_force_backward(self, bottom_index):
        return bottom_index != 0

    def _indices(self, bottom):
        """The indices as integers; raises when one is not an integer in [0, input_dim)."""
        xp = self.xp
        values = bottom[0].data.reshape(-1)
        with np.errstate(invalid="ignore"):  # NaN / huge values are reported below
            idx = values.astype(np.intp)
        bad = (idx < 0) | (idx >= self.K) | (idx != values)
        if bool(bad.any()):
            j = int(xp.flatnonzero(bad)[0])
            self.error("bottom %s holds %r at flat index %d: indices must be integers in "
                       "[0, input_dim = %d)" % (self.blob_names("bottom"), float(values[j]), j,
                                                self.K))
        return idx

    def forward(self, bottom, top):
        xp = self.xp
        self._idx = idx = self._indices(bottom)
        y = top[0].data.reshape(self.M, self.N)
        xp.take(self.blobs[0].data, idx, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.error("can't backpropagate to the Embed input (bottom %s holds indices)"
                       % self.blob_names("bottom"))
        xp = self.xp
        dy = top[0].diff.reshape(self.M, self.N)
        if self.param_propagate_down[0]:
            idx = self._indices(bottom)
            add_at = getattr(xp.add, "at", None)
            if add_at is not None:
                add_at(self.blobs[0].diff, idx, dy)
            else:  # pragma: no cover - CuPy without ufunc.at
                import cupyx
                cupyx.scatter_add(self.blobs[0].diff, idx, dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
