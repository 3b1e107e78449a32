"""Neuron layers: elementwise activations with one bottom and one top of the same shape.

ReLU, Sigmoid, TanH, AbsVal, BNLL, ELU, Exp, Log, Power, PReLU, Swish, Clip, Threshold, Dropout.
Each writes its top with ``out=`` into the preallocated top blob and works in place
(top[0] is bottom[0]): a layer whose backward needs the original bottom data keeps a copy of it
during an in-place forward (Caffe's PReLU ``bottom_memory_``), the others derive what they need
from the top data, as Caffe does.
"""
import math

import numpy as np

from .. import backend
from ..filler import fill
from ..kernels import elementwise
from ..layer import NeuronLayer, register_layer


class _Elementwise(NeuronLayer):
    """Base of the elementwise layers: cached scratch buffers and the in-place bottom copy."""
    shape_only_reshape = True

    #: True when backward reads the bottom data; an in-place forward then keeps a copy of it.
    backward_reads_bottom = False

    def __init__(self, layer_param):
        super().__init__(layer_param)
        self._bufs = {}
        self._inplace = False

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self._inplace = top[0] is bottom[0]
        if self._inplace and self.backward_reads_bottom:
            self._buffer("bottom_copy", bottom[0])

    def _buffer(self, key, like, dtype=None):
        """A scratch array with ``like``'s shape (a Blob or array), kept across calls."""
        dtype = np.dtype(like.dtype if dtype is None else dtype)
        buf = self._bufs.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != dtype:
            buf = self.xp.empty(like.shape, dtype)
            self._bufs[key] = buf
        return buf

    def _keep_bottom(self, bottom, top):
        """Call first in forward: save the bottom data when in place and backward needs it."""
        if self._inplace and self.backward_reads_bottom:
            self.xp.copyto(self._buffer("bottom_copy", bottom[0]), bottom[0].data)

    def _bottom_data(self, bottom, top):
        """The bottom data as forward saw it (the saved copy after an in-place forward)."""
        if top[0] is bottom[0] and self.backward_reads_bottom:
            return self._bufs["bottom_copy"]
        return bottom[0].data

    def _copy_if_needed(self, src, dst):
        if src is not dst:
            self.xp.copyto(dst, src)


def _sigmoid(xp, x, out, scale=1.0):
    """out = sigmoid(scale * x) = 1 / (1 + exp(-scale * x)).

    Full relative precision in float32 also for very negative inputs (Caffe evaluates its
    0.5 tanh(0.5 x) + 0.5 in double); exp overflows to inf there, giving the limit 0.
    """
    xp.multiply(x, -scale, out=out)
    with np.errstate(over="ignore"):
        xp.exp(out, out=out)
    xp.add(out, 1, out=out)
    xp.reciprocal(out, out=out)
    return out


@register_layer("ReLU")
class ReLULayer(_Elementwise):
    """ReLU: top = max(bottom, 0) + negative_slope * min(bottom, 0);
    bottom diff = top diff * ((bottom > 0) + negative_slope * (bottom <= 0)).
    Kernel: decaf.kernels.elementwise.relu_forward / relu_backward."""

    def setup(self, bottom, top):
        self.slope = float(self.layer_param.relu_param.negative_slope)
        # In place, sign(top) == sign(bottom) only for slope >= 0.
        self.backward_reads_bottom = self.slope < 0

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        self._keep_bottom(bottom, top)
        s = x.dtype.type(self.slope)
        if xp is np:
            elementwise.relu_forward(x.reshape(-1), y.reshape(-1), s)
        else:
            xp.copyto(y, xp.where(x > 0, x, x * s))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        # After an in-place forward with slope >= 0, top data > 0 exactly where bottom was.
        x = self._bottom_data(bottom, top)
        dy, dx = top[0].diff, bottom[0].diff
        s = x.dtype.type(self.slope)
        if xp is np:
            elementwise.relu_backward(x.reshape(-1), dy.reshape(-1), dx.reshape(-1), s)
        else:
            xp.multiply(dy, (x > 0) + s * (x <= 0), out=dx)


@register_layer("Sigmoid")
class SigmoidLayer(_Elementwise):
    """Sigmoid: top = 1 / (1 + exp(-bottom)); bottom diff = top diff * top * (1 - top)."""

    def forward(self, bottom, top):
        _sigmoid(self.xp, bottom[0].data, top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, y = self.xp, top[0].data
        buf = self._buffer("buf", y)
        xp.subtract(1, y, out=buf)
        buf *= y
        xp.multiply(top[0].diff, buf, out=bottom[0].diff)


@register_layer("TanH")
class TanHLayer(_Elementwise):
    """TanH: top = tanh(bottom); bottom diff = top diff * (1 - top^2)."""

    def forward(self, bottom, top):
        self.xp.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, y = self.xp, top[0].data
        buf = self._buffer("buf", y)
        xp.multiply(y, y, out=buf)
        xp.subtract(1, buf, out=buf)
        xp.multiply(top[0].diff, buf, out=bottom[0].diff)


@register_layer("AbsVal")
class AbsValLayer(_Elementwise):
    """AbsVal: top = |bottom|; bottom diff = sign(bottom) * top diff (sign(0) = 0)."""

    backward_reads_bottom = True

    def forward(self, bottom, top):
        self._keep_bottom(bottom, top)
        self.xp.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._bottom_data(bottom, top)
        buf = self._buffer("buf", x)
        self.xp.sign(x, out=buf)
        self.xp.multiply(top[0].diff, buf, out=bottom[0].diff)


@register_layer("BNLL")
class BNLLLayer(_Elementwise):
    """BNLL: top = log(1 + exp(bottom)) (as x + log(1 + exp(-x)) for x > 0);
    bottom diff = top diff * e / (e + 1), e = exp(min(bottom, 50))."""

    backward_reads_bottom = True
    THRESHOLD = 50.0

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        self._keep_bottom(bottom, top)
        buf = self._buffer("buf", x)
        xp.abs(x, out=buf)
        xp.negative(buf, out=buf)
        xp.exp(buf, out=buf)
        xp.log1p(buf, out=buf)  # log(1 + exp(-|x|))
        xp.maximum(x, 0, out=y)
        y += buf

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        x = self._bottom_data(bottom, top)
        buf = self._buffer("buf", x)
        # e / (e + 1) = 1 / (1 + exp(-min(x, 50))); exp may overflow to inf -> 0, the limit.
        xp.minimum(x, self.THRESHOLD, out=buf)
        xp.negative(buf, out=buf)
        with np.errstate(over="ignore"):
            xp.exp(buf, out=buf)
        buf += 1
        xp.divide(top[0].diff, buf, out=bottom[0].diff)


@register_layer("ELU")
class ELULayer(_Elementwise):
    """ELU: top = max(x, 0) + alpha * (exp(min(x, 0)) - 1);
    bottom diff = top diff * (1 if x > 0 else alpha + top)."""

    def setup(self, bottom, top):
        self.alpha = float(self.layer_param.elu_param.alpha)
        # In place, top > 0 exactly where bottom > 0 only for alpha >= 0.
        self.backward_reads_bottom = self.alpha < 0

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        self._keep_bottom(bottom, top)
        buf = self._buffer("buf", x)
        xp.minimum(x, 0, out=buf)
        xp.expm1(buf, out=buf)
        buf *= self.alpha
        xp.maximum(x, 0, out=y)
        y += buf

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        x = self._bottom_data(bottom, top)
        buf = self._buffer("buf", x)
        le0 = self._buffer("le0", x)  # 1.0 where x <= 0 (arithmetic beats masked selection)
        xp.less_equal(x, 0, out=le0)
        # factor = 1 + [x <= 0] (alpha + top - 1): 1 for x > 0, alpha + top for x <= 0
        xp.add(top[0].data, self.alpha - 1.0, out=buf)
        buf *= le0
        buf += 1
        xp.multiply(top[0].diff, buf, out=bottom[0].diff)


@register_layer("Exp")
class ExpLayer(_Elementwise):
    """Exp: top = base^(shift + scale * bottom) (base -1 means e);
    bottom diff = top diff * top * log(base) * scale."""

    def setup(self, bottom, top):
        p = self.layer_param.exp_param
        base = float(p.base)
        if base != -1 and not base > 0:
            self.error("exp_param.base must be strictly positive (or -1 for e), got %g" % base)
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner_scale = log_base * float(p.scale)
        try:
            self.outer_scale = 1.0 if p.shift == 0 else math.exp(log_base * float(p.shift))
        except OverflowError:       # Caffe's pow(base, shift) in floating point: inf
            self.outer_scale = math.inf

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        if self.inner_scale == 1:
            xp.exp(x, out=y)
        else:
            xp.multiply(x, self.inner_scale, out=y)
            xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        self.xp.multiply(top[0].data, top[0].diff, out=dx)
        if self.inner_scale != 1:
            dx *= self.inner_scale


@register_layer("Log")
class LogLayer(_Elementwise):
    """Log: top = log_base(shift + scale * bottom) (base -1 means e);
    bottom diff = top diff * scale / (log(base) * (shift + scale * bottom))."""

    backward_reads_bottom = True

    def setup(self, bottom, top):
        p = self.layer_param.log_param
        base = float(p.base)
        if base != -1 and not base > 0:
            self.error("log_param.base must be strictly positive (or -1 for e), got %g" % base)
        log_base = 1.0 if base == -1 else math.log(base)
        if log_base == 0:
            self.error("log_param.base must not be 1 (log(base) = 0 divides by zero)")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)
        self.backward_num_scale = self.scale / log_base

    def _affine(self, x, out):
        if self.scale != 1:
            self.xp.multiply(x, self.scale, out=out)
        else:
            self._copy_if_needed(x, out)
        if self.shift != 0:
            out += self.shift
        return out

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        self._keep_bottom(bottom, top)
        xp.log(self._affine(x, y), out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._bottom_data(bottom, top)
        buf = self._affine(x, self._buffer("buf", x))
        dx = bottom[0].diff
        self.xp.divide(top[0].diff, buf, out=dx)
        if self.backward_num_scale != 1:
            dx *= self.backward_num_scale


@register_layer("Power")
class PowerLayer(_Elementwise):
    """Power: top = (shift + scale * bottom)^power;
    bottom diff = top diff * power * scale * (shift + scale * bottom)^(power - 1)."""

    def setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale
        self.backward_reads_bottom = not (self.diff_scale == 0 or self.power == 1)

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        if self.diff_scale == 0:  # the input does not matter: scale or power is 0
            with np.errstate(all="ignore"):  # C's pow: NaN / inf rather than an exception
                value = 1.0 if self.power == 0 else float(np.power(self.shift, self.power))
            y[...] = value
            return
        self._keep_bottom(bottom, top)
        if self.scale != 1:
            xp.multiply(x, self.scale, out=y)
        else:
            self._copy_if_needed(x, y)
        if self.shift != 0:
            y += self.shift
        p = self.power
        if p == 2:
            xp.square(y, out=y)
        elif p == 0.5:
            xp.sqrt(y, out=y)
        elif p == -1:
            xp.reciprocal(y, out=y)
        elif p != 1:
            xp.power(y, p, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, dy, dx = self.xp, top[0].diff, bottom[0].diff
        if self.diff_scale == 0:
            dx[...] = 0
            return
        if self.power == 1:
            xp.multiply(dy, self.diff_scale, out=dx)
            return
        x = self._bottom_data(bottom, top)
        buf = self._buffer("buf", x)
        if self.power == 2:  # 2 scale (shift + scale x), Caffe's special case
            xp.multiply(x, self.diff_scale * self.scale, out=buf)
            if self.shift != 0:
                buf += self.diff_scale * self.shift
        elif self.shift == 0:  # power * y / x
            xp.divide(top[0].data, x, out=buf)
            buf *= self.power
        else:  # diff_scale * y / (shift + scale x)
            xp.multiply(x, self.scale, out=buf)
            buf += self.shift
            xp.divide(top[0].data, buf, out=buf)
            if self.diff_scale != 1:
                buf *= self.diff_scale
        xp.multiply(dy, buf, out=dx)


@register_layer("PReLU")
class PReLULayer(_Elementwise):
    """PReLU: top = max(x, 0) + a_c * min(x, 0), one learned slope a_c per channel (axis 1)
    or one shared; a_c diff += sum of top diff * min(x, 0);
    bottom diff = top diff * (1 if x > 0 else a_c)."""

    backward_reads_bottom = True

    def setup(self, bottom, top):
        p = self.layer_param.prelu_param
        if bottom[0].num_axes < 2:
            self.error("bottom %s must have at least 2 axes, got shape %s"
                       % (self.blob_names("bottom"), bottom[0].shape))
        self.channel_shared = bool(p.channel_shared)
        channels = bottom[0].shape[1]
        if self.blobs:
            if len(self.blobs) != 1:
                self.error("expects 1 parameter blob (the slopes), got %d" % len(self.blobs))
        else:
            self.blobs = [self.make_blob(() if self.channel_shared else (channels,),
                                         dtype=bottom[0].dtype)]
            if p.HasField("filler"):
                filler = p.filler
            else:
                filler = self._pb.FillerParameter(type="constant", value=0.25)
            fill(self.blobs[0], filler)
        self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            self.error("bottom %s must have at least 2 axes, got shape %s"
                       % (self.blob_names("bottom"), bottom[0].shape))
        want = 1 if self.channel_shared else bottom[0].shape[1]
        if self.blobs[0].count != want:
            self.error("negative slope size %d is inconsistent with %s (bottom %s of shape %s)"
                       % (self.blobs[0].count,
                          "channel_shared" if self.channel_shared else "the channel count",
                          self.blob_names("bottom"), bottom[0].shape))
        super().reshape(bottom, top)

    def _slope(self, ndim):
        a = self.blobs[0].data
        if self.channel_shared:
            return a.reshape(())
        return a.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        self._keep_bottom(bottom, top)
        buf = self._buffer("buf", x)
        xp.minimum(x, 0, out=buf)
        buf *= self._slope(x.ndim)
        xp.maximum(x, 0, out=y)
        y += buf

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        x = self._bottom_data(bottom, top)
        dy = top[0].diff
        buf = self._buffer("buf", x)
        # Parameter gradient first: in place, the bottom diff overwrites the top diff.
        if self.param_propagate_down[0]:
            xp.minimum(x, 0, out=buf)
            buf *= dy
            if self.channel_shared:
                self.blobs[0].diff[...] += buf.sum()
            else:
                n, c = x.shape[0], x.shape[1]
                self.blobs[0].diff[...] += xp.einsum("ncd->c", buf.reshape(n, c, -1))
        if propagate_down[0]:
            # factor = 1 + [x <= 0] (a_c - 1)
            xp.less_equal(x, 0, out=buf)
            buf *= self._slope(x.ndim) - 1
            buf += 1
            xp.multiply(dy, buf, out=bottom[0].diff)


@register_layer("Swish")
class SwishLayer(_Elementwise):
    """Swish: top = x * sigmoid(beta * x);
    bottom diff = top diff * (beta * top + sigmoid(beta * x) * (1 - beta * top))."""

    def setup(self, bottom, top):
        self.beta = float(self.layer_param.swish_param.beta)

    def forward(self, bottom, top):
        x = bottom[0].data
        s = _sigmoid(self.xp, x, self._buffer("sigmoid", x), self.beta)
        self.xp.multiply(x, s, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, y = self.xp, top[0].data
        s = self._bufs["sigmoid"]
        buf = self._buffer("buf", y)
        # beta y + s (1 - beta y) = s + beta y (1 - s)
        xp.subtract(1, s, out=buf)
        buf *= y
        if self.beta != 1:
            buf *= self.beta
        buf += s
        xp.multiply(top[0].diff, buf, out=bottom[0].diff)


@register_layer("Clip")
class ClipLayer(_Elementwise):
    """Clip: top = max(min, min(bottom, max));
    bottom diff = top diff where min <= bottom <= max, else 0."""

    backward_reads_bottom = True

    def setup(self, bottom, top):
        p = self.layer_param.clip_param
        if not (self.layer_param.HasField("clip_param") and p.HasField("min")
                and p.HasField("max")):
            self.error("clip_param.min and clip_param.max are required")
        self.min, self.max = float(p.min), float(p.max)
        if self.min > self.max:
            self.error("clip_param.min (%g) must not exceed clip_param.max (%g)"
                       % (self.min, self.max))

    def forward(self, bottom, top):
        self._keep_bottom(bottom, top)
        self.xp.clip(bottom[0].data, self.min, self.max, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        x = self._bottom_data(bottom, top)
        buf = self._buffer("buf", x)
        mask = self._buffer("mask", x, np.bool_)
        xp.clip(x, self.min, self.max, out=buf)
        xp.equal(buf, x, out=mask)  # x == clip(x) exactly where min <= x <= max
        xp.multiply(top[0].diff, mask, out=bottom[0].diff)


@register_layer("Threshold")
class ThresholdLayer(_Elementwise):
    """Threshold: top = 1 if bottom > threshold else 0. No backward (as in Caffe)."""

    def setup(self, bottom, top):
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def forward(self, bottom, top):
        self.xp.greater(bottom[0].data, self.threshold, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise NotImplementedError("layer %r (Threshold) has no backward: the step function "
                                      "has no useful gradient (Caffe: Not Implemented)" % self.name)


@register_layer("Dropout")
class DropoutLayer(_Elementwise):
    """Dropout: TRAIN top = bottom * mask / (1 - dropout_ratio), mask ~ Bernoulli(1 - ratio),
    bottom diff = top diff * mask / (1 - ratio); TEST top = bottom, bottom diff = top diff."""

    def setup(self, bottom, top):
        self.ratio = float(self.layer_param.dropout_param.dropout_ratio)
        if not 0 <= self.ratio < 1:
            self.error("dropout_param.dropout_ratio must be in [0, 1), got %g" % self.ratio)
        self.scale = 1.0 / (1.0 - self.ratio)
        # Keep an element when a uniform 32-bit draw is >= ratio * 2^32 (probability 1 - ratio).
        self.uint_threshold = min(int(round(self.ratio * 2.0 ** 32)), 2 ** 32 - 1)

    def _train(self):
        return self.phase == self._pb.TRAIN

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        if not self._train():
            self._copy_if_needed(x, y)
            return
        mask = self._buffer("mask", x)  # holds mask * scale
        draws = backend.rng().randint(0, 2 ** 32, size=x.shape, dtype=np.uint32)
        if xp is not np:
            draws = xp.asarray(draws)
        xp.greater_equal(draws, self.uint_threshold, out=mask)
        mask *= self.scale
        xp.multiply(x, mask, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self._train():
            self.xp.multiply(top[0].diff, self._bufs["mask"], out=bottom[0].diff)
        else:
            self._copy_if_needed(top[0].diff, bottom[0].diff)
