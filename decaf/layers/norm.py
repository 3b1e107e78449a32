"""Normalization layers: BatchNorm, MVN, and the affine helpers Scale and Bias.

BatchNorm only normalizes (y = (x - mu) / sqrt(var + eps)); the learned affine part of a
batch-normalization block is a Scale layer with ``bias_term: true`` after it, as in Caffe.
All four layers work on blobs of any number of axes through Caffe's (outer, dim, inner) view:
``outer = count(0, axis)``, ``dim`` the channel/parameter extent, ``inner`` the rest.
"""
import numpy as np

from ..errors import ShapeMismatchError
from ..filler import fill
from ..kernels import batchnorm, elementwise
from ..layer import Layer, register_layer


def _canonical_axis(layer, blob, axis, what):
    """``blob.canonical_axis_index(axis)``, reported through ``layer.error``."""
    try:
        return blob.canonical_axis_index(axis)
    except ShapeMismatchError as e:
        layer.error("%s: %s" % (what, e))


def _learned_shape(layer, bottom0, axis, num_axes, what):
    """Shape of a learned Scale/Bias blob: bottom0.shape[axis:axis + num_axes] (-1: to the end)."""
    axis = _canonical_axis(layer, bottom0, axis, "%s_param.axis" % what)
    if num_axes < -1:
        layer.error("%s_param.num_axes must be non-negative, or -1 to extend to the end of "
                    "bottom[0] (got %d)" % (what, num_axes))
    if num_axes >= 0 and bottom0.num_axes < axis + num_axes:
        layer.error("%s blob's shape extends past bottom[0]'s shape %s when applied starting "
                    "with bottom[0] axis = %d (num_axes %d)"
                    % (what, bottom0.shape, axis, num_axes))
    end = bottom0.num_axes if num_axes == -1 else axis + num_axes
    return bottom0.shape[axis:end]


def _broadcast_dims(layer, bottom0, operand_shape, axis_param, what):
    """(outer, dim, inner) such that bottom0 viewed as (outer, dim, inner) meets the operand as
    (1, dim, 1). A scalar operand always uses axis 0 (as Caffe does)."""
    n = len(operand_shape)
    axis = 0 if n == 0 else _canonical_axis(layer, bottom0, axis_param, "%s_param.axis" % what)
    if bottom0.num_axes < axis + n:
        layer.error("%s blob of shape %s extends past bottom[0]'s shape %s when applied starting "
                    "with bottom[0] axis = %d" % (what, tuple(operand_shape), bottom0.shape, axis))
    for i in range(n):
        if bottom0.shape[axis + i] != operand_shape[i]:
            layer.error("dimension mismatch between bottom[0]->shape(%d) = %d and %s->shape(%d) "
                        "= %d (bottom[0] %s, %s %s)"
                        % (axis + i, bottom0.shape[axis + i], what, i, operand_shape[i],
                           bottom0.shape, what, tuple(operand_shape)))
    dim = 1
    for d in operand_shape:
        dim *= d
    return bottom0.count_range(0, axis), dim, bottom0.count_range(axis + n)


def _default_filler(filler_param, value):
    """``filler_param`` when set, else a constant filler of ``value``."""
    from ..proto import caffe_pb2
    fp = caffe_pb2.FillerParameter()
    if filler_param is not None:
        fp.CopyFrom(filler_param)
    else:
        fp.type = "constant"
        fp.value = value
    return fp


@register_layer("BatchNorm")
class BatchNormLayer(Layer):
    """BatchNorm: top = (bottom - mu) / sqrt(var + eps), per channel (axis 1).

    mu, var are the batch statistics over N and the spatial axes (TRAIN, updating the stored sums
    s = lambda s + 1, mean_sum = lambda mean_sum + mu, var_sum = lambda var_sum + m/(m-1) var),
    or mean_sum/s, var_sum/s with use_global_stats (0 when s is 0). Backward (batch stats):
    bottom_diff = (dy - (sum(dy * y) * y + sum(dy)) / m) / sqrt(var + eps), m = N * spatial;
    with global stats bottom_diff = dy / sqrt(var + eps); the statistics blobs get no diff.
    Kernels: decaf.kernels.batchnorm (channel_stats, normalize, backward).
    """
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.moving_average_fraction = p.moving_average_fraction
        self.use_global_stats = self.phase == self._pb.TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = p.use_global_stats
        self.eps = p.eps
        if bottom[0].num_axes < 2:
            self.error("bottom %s must have at least 2 axes (N x C x ...), got shape %s"
                       % (self.blob_names("bottom"), bottom[0].shape))
        self.channels = bottom[0].shape[1]
        c = self.channels
        if self.blobs:
            want = [(c,), (c,), (1,)]
            got = [b.shape for b in self.blobs]
            if got != want:
                self.error("expected 3 blobs of shapes %s (mean sum, variance sum, scale factor), "
                           "got %s" % (want, got))
        else:
            dtype = bottom[0].dtype
            self.blobs = [self.make_blob((c,), dtype), self.make_blob((c,), dtype),
                          self.make_blob((1,), dtype)]
        # Caffe masks the statistics from the solver: lr_mult 0 for every blob, added to the
        # layer's own ParamSpec list (the net reads the layer's param specs after SetUp).
        for i in range(len(self.blobs)):
            if len(self.layer_param.param) == i:
                self.layer_param.param.add().lr_mult = 0.0
            elif self.layer_param.param[i].lr_mult != 0:
                self.error("Cannot configure batch normalization statistics as layer parameters: "
                           "param %d has lr_mult %g, it must be 0"
                           % (i, self.layer_param.param[i].lr_mult))
        self.param_propagate_down = [True] * len(self.blobs)
        self._shape = None

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes < 2 or b.shape[1] != self.channels:
            self.error("bottom %s shape %s: axis 1 must be the %d channels fixed at setup"
                       % (self.blob_names("bottom"), b.shape, self.channels))
        if top[0] is not b:
            top[0].reshape(b.shape)
        if self._shape != (b.shape, b.dtype):
            xp = self.xp
            self._shape = (b.shape, b.dtype)
            self._n, self._s = b.shape[0], b.count_range(2)   # spatial size (0-sized batches too)
            view = (self._n, self.channels, self._s)
            # Caffe's x_norm_: the normalized values the batch-statistics backward reads
            self._x_norm = None if self.use_global_stats else xp.zeros(view, b.dtype)
            self._std = xp.ones(self.channels, b.dtype)

    def _view(self, arr):
        return arr.reshape(self._n, self.channels, self._s)

    def statistics(self, x):
        """(mean, std) in the blob dtype: the stored averages (global stats, 0 when the scale
        factor is 0) or this batch's, which also updates the stored sums."""
        xp, dt = self.xp, self._std.dtype.type
        if self.use_global_stats:
            s = float(self.blobs[2].data[0])
            factor = dt(0.0 if s == 0 else 1.0 / s)
            mean = self.blobs[0].data * factor
            var = self.blobs[1].data * factor
        else:
            if xp is np:
                mean64, var64 = np.empty(self.channels), np.empty(self.channels)
                batchnorm.channel_stats(x, mean64, var64)
            else:
                mean64 = x.mean(axis=(0, 2), dtype=np.float64)
                var64 = ((x - mean64[None, :, None].astype(x.dtype)) ** 2).mean(
                    axis=(0, 2), dtype=np.float64)
            mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
            m = self._n * self._s
            lam = dt(self.moving_average_fraction)
            self.blobs[2].data[0] = self.blobs[2].data[0] * lam + 1
            self.blobs[0].data[...] = lam * self.blobs[0].data + mean
            correction = dt(m / (m - 1.0) if m > 1 else 1.0)
            self.blobs[1].data[...] = lam * self.blobs[1].data + correction * var
        xp.sqrt(var + dt(self.eps), out=self._std)
        return mean

    def forward(self, bottom, top):
        xp = self.xp
        x, y = self._view(bottom[0].data), self._view(top[0].data)
        mean = self.statistics(x)
        std, keep = self._std, self._x_norm
        if xp is np:
            batchnorm.normalize(x, mean, std, y, y if keep is None else keep, keep is not None)
            return
        xp.divide(x - mean[None, :, None], std[None, :, None], out=y)
        if keep is not None:
            keep[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = self._view(top[0].diff)
        dx = self._view(bottom[0].diff)  # may be dy's memory (in-place)
        std, y = self._std, self._x_norm
        if xp is np:
            batchnorm.backward(dy if y is None else y, dy, std, dx, self.use_global_stats)
            return
        if self.use_global_stats:
            xp.divide(dy, std[None, :, None], out=dx)
            return
        inv_m = dy.dtype.type(1.0 / (self._n * self._s))
        a = (dy * y).sum(axis=(0, 2), keepdims=True)
        b = dy.sum(axis=(0, 2), keepdims=True)
        xp.divide(dy - (y * a + b) * inv_m, std[None, :, None], out=dx)


@register_layer("MVN")
class MVNLayer(Layer):
    """MVN: top = (bottom - mean) / (std + eps) (or bottom - mean without normalize_variance),
    statistics per (n, c) or, with across_channels, per n.

    Backward (Caffe's formula): bottom_diff = (dy - mean(dy) - mean(dy * y) * y) / (std + eps);
    without variance normalization bottom_diff = dy - mean(dy).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = p.eps
        self._shape = None

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes > 4:
            self.error("bottom %s has shape %s: MVN uses Caffe's legacy num/channels/height/width "
                       "accessors and takes at most 4 axes" % (self.blob_names("bottom"), b.shape))
        legacy = (b.num, b.channels, b.height, b.width)
        top[0].reshape(legacy)  # Caffe gives the top the legacy 4-D shape
        if self._shape != (legacy, b.dtype):
            self._shape = (legacy, b.dtype)
            rows = b.num if self.across_channels else b.num * b.channels
            self._rows = rows
            self._dim = b.count // rows if rows else 0
            self._y = self.xp.zeros((rows, self._dim), b.dtype)
            self._tmp = self.xp.zeros((rows, self._dim), b.dtype)
            self._inv_std = self.xp.zeros((rows, 1), b.dtype)

    def forward(self, bottom, top):
        xp = self.xp
        if self._y.size == 0:  # empty blob: nothing to normalize
            return
        x = bottom[0].data.reshape(self._rows, self._dim)
        y = self._y
        xp.subtract(x, x.mean(axis=1, keepdims=True), out=y)
        if self.normalize_variance:
            std = xp.sqrt(xp.einsum("rd,rd->r", y, y)[:, None] / self._dim)
            xp.divide(1.0, std + self.eps, out=self._inv_std)
            y *= self._inv_std
        top[0].data.reshape(self._rows, self._dim)[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self._y.size == 0:
            return
        xp = self.xp
        dy = top[0].diff.reshape(self._rows, self._dim)
        dx = bottom[0].diff.reshape(self._rows, self._dim)
        if not self.normalize_variance:
            xp.subtract(dy, dy.mean(axis=1, keepdims=True), out=dx)
            return
        y = self._y
        mean_dyy = xp.einsum("rd,rd->r", dy, y)[:, None] / self._dim
        mean_dy = dy.mean(axis=1, keepdims=True)
        xp.multiply(y, mean_dyy, out=self._tmp)
        xp.subtract(dy, mean_dy, out=dx)
        dx -= self._tmp
        dx *= self._inv_std


@register_layer("Bias")
class BiasLayer(Layer):
    """Bias: top = bottom[0] + b, b (a learned blob or bottom[1]) broadcast over the axes before
    ``axis`` and after ``axis + b.num_axes``.  bottom_diff = top_diff;
    b_diff = sum of top_diff over the broadcast axes (accumulated for the learned blob)."""

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.bias_param
        if len(bottom) == 1:
            shape = _learned_shape(self, bottom[0], p.axis, p.num_axes, "bias")
            if self.blobs:
                if len(self.blobs) != 1 or self.blobs[0].shape != shape:
                    self.error("expected 1 bias blob of shape %s, got %s"
                               % (shape, [b.shape for b in self.blobs]))
            else:
                self.blobs = [self.make_blob(shape, bottom[0].dtype)]
                fill(self.blobs[0], _default_filler(p.filler if p.HasField("filler") else None, 0))
        elif self.blobs:
            self.error("takes no parameter blobs with two bottoms (the bias is bottom[1]), got %d"
                       % len(self.blobs))
        self.param_propagate_down = [True] * len(self.blobs)

    def _bias(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        b = self._bias(bottom)
        self._dims = _broadcast_dims(self, bottom[0], b.shape,
                                     self.layer_param.bias_param.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        dims = self._dims
        b = self._bias(bottom).data.reshape(-1)
        x, y = bottom[0].data.reshape(dims), top[0].data.reshape(dims)
        if self.xp is np:
            elementwise.affine_forward(x, b, b, y, False, True, False, b.dtype.type(0))
        else:
            self.xp.add(x, b.reshape(1, -1, 1), out=y)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self._dims)
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                self.blobs[0].diff.reshape(-1)[...] += self._channel_sum(dy)
        elif propagate_down[1]:
            bottom[1].diff.reshape(-1)[...] = self._channel_sum(dy)
        if propagate_down[0] and bottom[0] is not top[0]:
            bottom[0].diff[...] = top[0].diff

    def _channel_sum(self, dy):
        if self.xp is not np:
            return dy.sum(axis=(0, 2))
        out = np.empty(dy.shape[1])
        elementwise.channel_sum(dy, out)
        return out.astype(dy.dtype)


@register_layer("Scale")
class ScaleLayer(Layer):
    """Scale: top = bottom[0] * s (+ b with bias_term), s (a learned blob or bottom[1]) broadcast
    like Bias.  bottom_diff = top_diff * s; s_diff = sum(top_diff * bottom[0]) over the broadcast
    axes; b_diff = sum(top_diff) (param diffs accumulate, bottom[1]'s diff is overwritten).
    Kernels: decaf.kernels.elementwise.affine_forward / scale_backward."""
    shape_only_reshape = True

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.scale_param
        want = (1 if len(bottom) == 1 else 0) + (1 if p.bias_term else 0)
        if self.blobs and len(self.blobs) != want:
            self.error("expected %d parameter blob(s) (%s%s), got %d"
                       % (want, "scale" if len(bottom) == 1 else "",
                          ", bias" if p.bias_term else "", len(self.blobs)))
        if len(bottom) == 1:
            shape = _learned_shape(self, bottom[0], p.axis, p.num_axes, "scale")
            if self.blobs:
                if self.blobs[0].shape != shape:
                    self.error("scale blob has shape %s, expected %s"
                               % (self.blobs[0].shape, shape))
            else:
                blob = self.make_blob(shape, bottom[0].dtype)
                fill(blob, _default_filler(p.filler if p.HasField("filler") else None, 1))
                self.blobs.append(blob)
        self.bias_index = None
        if p.bias_term:
            # Caffe's internal Bias layer: axis = scale axis, num_axes = bottom[1]'s axes or
            # scale_param.num_axes, filler = bias_filler (default constant 0).
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            shape = _learned_shape(self, bottom[0], p.axis, num_axes, "bias")
            self.bias_index = want - 1
            if len(self.blobs) > self.bias_index:
                if self.blobs[self.bias_index].shape != shape:
                    self.error("bias blob has shape %s, expected %s"
                               % (self.blobs[self.bias_index].shape, shape))
            else:
                blob = self.make_blob(shape, bottom[0].dtype)
                fill(blob, _default_filler(p.bias_filler if p.HasField("bias_filler") else None, 0))
                self.blobs.append(blob)
        self.param_propagate_down = [True] * len(self.blobs)
        self._temp = None
        self._borrowed = None    # a fused forward's x_norm standing in for _temp (net_fuse)

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        p = self.layer_param.scale_param
        self._dims = _broadcast_dims(self, bottom[0], self._scale(bottom).shape, p.axis, "scale")
        if self.bias_index is not None:
            self._bias_dims = _broadcast_dims(self, bottom[0], self.blobs[self.bias_index].shape,
                                              p.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def _keeps_bottom(self, bottom, top):
        """An in-place forward keeps its input for the backward (Caffe's temp_), unless the
        net will never run this layer's backward (set by Net at TEST / deploy time)."""
        return top[0] is bottom[0] and getattr(self, "needs_backward", True)

    def _bottom_buffer(self, x):
        """The array an in-place forward keeps its input in (Caffe's temp_), shaped as x."""
        if self._temp is None or self._temp.shape != x.shape or self._temp.dtype != x.dtype:
            self._temp = self.xp.empty(x.shape, x.dtype)
        return self._temp

    def forward(self, bottom, top):
        xp = self.xp
        dims = self._dims
        x = bottom[0].data
        self._borrowed = None
        if self._keeps_bottom(bottom, top):
            self._bottom_buffer(x)[...] = x
        s = self._scale(bottom).data.reshape(-1)
        b = s if self.bias_index is None else self.blobs[self.bias_index].data.reshape(-1)
        x3, y3 = x.reshape(dims), top[0].data.reshape(dims)
        if xp is np:
            elementwise.affine_forward(x3, s, b, y3, True, self.bias_index is not None,
                                       False, s.dtype.type(0))
            return
        xp.multiply(x3, s.reshape(1, -1, 1), out=y3)
        if self.bias_index is not None:
            y3 += b.reshape(1, -1, 1)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        dims = self._dims
        dy = top[0].diff.reshape(dims)
        scale = self._scale(bottom)
        learned = len(bottom) == 1
        want_ds = (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1])
        want_db = self.bias_index is not None and self.param_propagate_down[self.bias_index]
        if top[0] is not bottom[0]:
            x = bottom[0].data
        else:
            x = self._temp if self._borrowed is None else self._borrowed
        x = x.reshape(dims)
        s = scale.data.reshape(-1)
        if xp is np:
            ds, db = np.zeros(dims[1]), np.zeros(dims[1])
            dx = bottom[0].diff.reshape(dims) if propagate_down[0] else dy
            elementwise.scale_backward(x, dy, s, ds, db, dx, want_ds, want_db,
                                       bool(propagate_down[0]))
            ds, db = ds.astype(dy.dtype), db.astype(dy.dtype)
        else:
            ds = xp.einsum("osi,osi->s", dy, x) if want_ds else None
            db = dy.sum(axis=(0, 2)) if want_db else None
            if propagate_down[0]:
                xp.multiply(dy, s.reshape(1, -1, 1), out=bottom[0].diff.reshape(dims))
        if want_db:
            self.blobs[self.bias_index].diff.reshape(-1)[...] += db
        if want_ds:
            if learned:
                scale.diff.reshape(-1)[...] += ds
            else:
                scale.diff.reshape(-1)[...] = ds
