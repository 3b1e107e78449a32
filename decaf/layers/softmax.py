"""Softmax and the losses built on it: Softmax, SoftmaxWithLoss, InfogainLoss.

All three view the bottom as outer x C x inner around the softmax axis (outer = product of the
axes before it, inner = product of the axes after it), so N x C, N x C x H x W and other axes
share one vectorized path.  The softmax is numerically stable: the per-position maximum is
subtracted before ``exp``.
"""
import os

import numpy as np
from google.protobuf.message import DecodeError

from ..blob import blob_to_array
from ..kernels import softmax as ksoftmax
from ..layer import Layer, LossLayer, register_layer
from ._reshape_cache import remember, unchanged
from .loss import (FLT_MIN, LOG_THRESHOLD, canonical_axis, check_no_label_backward,
                   get_normalizer, ignore_label_of, normalization_mode, read_labels)

_NO_MASK = np.ones((1, 1), bool)     # the kernels' stand-in when no ignore_label is set


def softmax_forward(xp, x3, out3, scale):
    """out3 = softmax of x3 (outer x C x inner) over axis 1; ``scale`` is an outer x 1 x inner
    buffer (CuPy path). ``out3`` may be ``x3`` (in-place). Kernel: decaf.kernels.softmax."""
    if xp is np:
        ksoftmax.forward(x3, out3)
        return
    xp.max(x3, axis=1, keepdims=True, out=scale)
    xp.subtract(x3, scale, out=out3)
    xp.exp(out3, out=out3)
    xp.sum(out3, axis=1, keepdims=True, out=scale)
    out3 /= scale


def softmax_backward(xp, top_data3, top_diff3, bottom_diff3, scale):
    """bottom_diff = (top_diff - sum_c top_diff * top_data) * top_data (in-place safe)."""
    if xp is np:
        ksoftmax.backward(top_data3, top_diff3, bottom_diff3)
        return
    xp.sum(top_diff3 * top_data3, axis=1, keepdims=True, out=scale)
    xp.subtract(top_diff3, scale, out=bottom_diff3)
    bottom_diff3 *= top_data3


def split_at_axis(layer, blob, axis, field):
    """(canonical axis, (outer, C, inner)) of ``blob`` around ``axis``."""
    a = canonical_axis(layer, blob, axis, field)
    if a >= blob.num_axes:
        layer.error("%s %d: bottom %s has no axes" % (field, axis, blob.shape))
    return a, (blob.count_range(0, a), blob.shape[a], blob.count_range(a + 1))


@register_layer("Softmax")
class SoftmaxLayer(Layer):
    """Softmax over softmax_param.axis: y_c = exp(x_c - max x) / sum_k exp(x_k - max x);
    dx = (dy - sum_k dy_k y_k) * y.
    """
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self._scale = self.make_blob((), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        if unchanged(self, bottom, top):
            return
        self.axis, self.dims = split_at_axis(self, bottom[0], self.layer_param.softmax_param.axis,
                                             "softmax_param.axis")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        self._scale.reshape((self.dims[0], 1, self.dims[2]))
        remember(self, bottom, top)

    def forward(self, bottom, top):
        if bottom[0].count:
            softmax_forward(self.xp, bottom[0].data.reshape(self.dims),
                            top[0].data.reshape(self.dims), self._scale.data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        softmax_backward(self.xp, top[0].data.reshape(self.dims), top[0].diff.reshape(self.dims),
                         bottom[0].diff.reshape(self.dims), self._scale.data)


class _SoftmaxLossBase(LossLayer):
    """Shared part of SoftmaxWithLoss and InfogainLoss: internal softmax, labels, normalizer."""

    exact_num_top = -1
    min_top = 1
    max_top = 2
    axis_field = "softmax_param.axis"

    def softmax_axis(self):
        return self.layer_param.softmax_param.axis

    def setup(self, bottom, top):
        self.ignore_label = ignore_label_of(self.layer_param.loss_param)
        self.normalization = normalization_mode(self)
        self._prob = self.make_blob((), dtype=bottom[0].dtype)
        self._scale = self.make_blob((), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis, self.dims = split_at_axis(self, bottom[0], self.softmax_axis(), self.axis_field)
        outer, _, inner = self.dims
        if outer * inner != bottom[1].count:
            self.error("number of labels must match number of predictions: bottom %s %s has "
                       "%d x %d positions around axis %d (%s), so bottom %s must hold %d labels "
                       "with integer values in {0, ..., %d}, got shape %s"
                       % (self.layer_param.bottom[0], bottom[0].shape, outer, inner, self.axis,
                          self.axis_field, self.layer_param.bottom[1], outer * inner,
                          self.dims[1] - 1, bottom[1].shape))
        self._prob.reshape(bottom[0].shape)
        self._scale.reshape((outer, 1, inner))
        if len(top) >= 2:
            top[1].reshape(bottom[0].shape)

    def softmax_and_labels(self, bottom):
        """Run the softmax into self._prob; return (prob3, labels (outer x inner), valid)."""
        prob3 = self._prob.data.reshape(self.dims)
        if bottom[0].count:
            softmax_forward(self.xp, bottom[0].data.reshape(self.dims), prob3, self._scale.data)
        outer, c, inner = self.dims
        lab, valid = read_labels(self, bottom[1], (outer, inner), c, self.ignore_label)
        return prob3, lab, valid

    def finish_forward(self, top, loss, count):
        outer, _, inner = self.dims
        self.normalizer = get_normalizer(self, self.normalization, outer, inner, count)
        top[0].data[...] = loss / self.normalizer
        if len(top) >= 2:
            top[1].data[...] = self._prob.data

    def scale_diff(self, top, diff3):
        if self._valid is not None:
            diff3 *= self._valid[:, None, :]
        diff3 *= float(top[0].diff) / self.normalizer


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLossLayer(_SoftmaxLossBase):
    """SoftmaxWithLoss: p = softmax(x); E = -sum log(max(p_label, FLT_MIN)) / normalizer;
    dx = w (p - onehot(label)) / normalizer, 0 at ignore_label. Optional top[1] = p.
    Kernels: decaf.kernels.softmax.forward / loss_backward.
    """
    shape_only_reshape = True

    def reshape(self, bottom, top):
        if unchanged(self, bottom, top):
            return
        old = getattr(self, "dims", None)
        super().reshape(bottom, top)
        if old != self.dims or not hasattr(self, "_base"):
            xp, (outer, c, inner) = self.xp, self.dims
            self._base = xp.arange(outer)[:, None] * (c * inner) + xp.arange(inner)[None, :]
        remember(self, bottom, top)

    def forward(self, bottom, top):
        xp = self.xp
        _, lab, valid = self.softmax_and_labels(bottom)
        idx = self._base + lab * self.dims[2]
        idx = idx.ravel() if valid is None else idx[valid]
        self._idx, self._valid, self._lab = idx, valid, lab
        p = self._prob.data.reshape(-1)[idx]
        loss = -xp.log(xp.maximum(p, FLT_MIN)).sum()
        self.finish_forward(top, loss, int(idx.size))

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [1])
        if propagate_down[0]:
            diff = bottom[0].diff
            if self.xp is np:
                valid = self._valid
                scale = diff.dtype.type(float(top[0].diff) / self.normalizer)
                ksoftmax.loss_backward(self._prob.data.reshape(self.dims), self._lab,
                                       _NO_MASK if valid is None else valid, valid is not None,
                                       scale, diff.reshape(self.dims))
                return
            diff[...] = self._prob.data
            diff.reshape(-1)[self._idx] -= 1
            self.scale_diff(top, diff.reshape(self.dims))


@register_layer("InfogainLoss")
class InfogainLossLayer(_SoftmaxLossBase):
    """InfogainLoss: p = softmax(x) over infogain_loss_param.axis;
    E = -sum_n sum_k H[label_n, k] log(max(p_nk, 1e-20)) / normalizer;
    dx_nk = w (p_nk sum_j H[label_n, j] - H[label_n, k]) / normalizer, 0 at ignore_label.
    H (C x C) comes from the third bottom or the BlobProto file infogain_loss_param.source.
    """

    exact_num_bottom = -1
    min_bottom = 2
    max_bottom = 3
    axis_field = "infogain_loss_param.axis"

    def softmax_axis(self):
        return self.layer_param.infogain_loss_param.axis

    def setup(self, bottom, top):
        super().setup(bottom, top)
        if self.layer_param.loss_param.HasField("normalize"):
            self.error("loss_param.normalize is deprecated for InfogainLoss; "
                       "use loss_param.normalization")
        self._logp = self.make_blob((), dtype=bottom[0].dtype)
        self._H_file = self._read_infogain(bottom[0].dtype) if len(bottom) < 3 else None

    def _read_infogain(self, dtype):
        p = self.layer_param.infogain_loss_param
        if not p.HasField("source"):
            self.error("infogain matrix source must be specified "
                       "(infogain_loss_param.source) when H is not given as a third bottom")
        try:
            with open(p.source, "rb") as f:
                raw = f.read()
        except OSError as e:
            self.error("cannot read infogain matrix file %r (paths are relative to the working "
                       "directory %s): %s" % (p.source, os.getcwd(), e.strerror or e))
        try:
            arr = blob_to_array(self._pb.BlobProto.FromString(raw))
        except (DecodeError, ValueError) as e:
            self.error("infogain matrix file %r is not a valid BlobProto (truncated or corrupt?): "
                       "%s" % (p.source, e))
        return self.xp.asarray(arr.astype(dtype).ravel())

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        c = self.dims[1]
        count = bottom[2].count if len(bottom) > 2 else self._H_file.size
        if count != c * c:
            where = ("bottom %s" % self.layer_param.bottom[2] if len(bottom) > 2 else
                     "infogain_loss_param.source %r" % self.layer_param.infogain_loss_param.source)
            self.error("infogain matrix H (%s) must be %d x %d (%d values) for %d classes, "
                       "got %d values" % (where, c, c, c * c, c, count))
        self._logp.reshape(self.dims)

    def _infogain(self, bottom):
        c = self.dims[1]
        return (bottom[2].data if len(bottom) > 2 else self._H_file).reshape(c, c)

    def _rows_of_infogain(self, bottom, lab):
        """H[lab[o, i], k] laid out as outer x C x inner (inner contiguous)."""
        return self.xp.take(self._infogain(bottom).T, lab, axis=1).transpose(1, 0, 2)

    def forward(self, bottom, top):
        xp = self.xp
        prob3, lab, valid = self.softmax_and_labels(bottom)
        self._lab, self._valid = lab, valid
        logp = self._logp.data
        xp.maximum(prob3, LOG_THRESHOLD, out=logp)
        xp.log(logp, out=logp)
        logp *= self._rows_of_infogain(bottom, lab)
        per_position = logp.sum(axis=1)
        if valid is not None:
            per_position = per_position[valid]
        self.finish_forward(top, -per_position.sum(), int(per_position.size))

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [1])
        check_no_label_backward(self, propagate_down, [2], "the infogain matrix input")
        if propagate_down[0]:
            xp = self.xp
            H = self._infogain(bottom)
            diff3 = bottom[0].diff.reshape(self.dims)
            xp.multiply(self._prob.data.reshape(self.dims), H.sum(axis=1)[self._lab][:, None, :],
                        out=diff3)
            diff3 -= self._rows_of_infogain(bottom, self._lab)
            self.scale_diff(top, diff3)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
