"""LRN: local response normalization, across channels or within a channel (Caffe's LRNLayer).
Kernels: decaf.kernels.lrn (the padded-buffer window sums below are the CuPy path)."""
import numpy as np

from ..kernels import lrn
from ..layer import Layer, register_layer


@register_layer("LRN")
class LRNLayer(Layer):
    """LRN on a 4-D bottom, n = local_size (odd), windows centred and zero-padded.

    ACROSS_CHANNELS: top = x * scale^-beta, scale = k + alpha/n * sum_{|c'-c| <= n/2} x_c'^2;
      bottom_diff = top_diff * scale^-beta
                    - 2 alpha beta / n * x * sum_{|c'-c| <= n/2} top_diff_c' top_c' / scale_c'.
    WITHIN_CHANNEL: top = x * (1 + alpha/n^2 * sum_{n x n window} x^2)^-beta (k is not used;
      Caffe builds it from Power, AVE Pooling with pad (n-1)/2 -- divisor always n^2 -- and
      Eltwise PROD), with the exact backward of that chain.
    """
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        lp = self.layer_param.lrn_param
        R = self._pb.LRNParameter
        self.size = int(lp.local_size)
        if self.size % 2 != 1:
            self.error("LRN only supports odd values for local_size (got %d)" % self.size)
        self.pre_pad = (self.size - 1) // 2
        self.alpha, self.beta, self.k = float(lp.alpha), float(lp.beta), float(lp.k)
        self.region = lp.norm_region
        if self.region not in (R.ACROSS_CHANNELS, R.WITHIN_CHANNEL):
            self.error("Unknown normalization region %d" % self.region)
        self.across = self.region == R.ACROSS_CHANNELS
        self._key = None

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            self.error("Input must have 4 axes, corresponding to (num, channels, height, "
                       "width); bottom %s is %s" % (self.blob_names("bottom"), b.shape))
        if top[0] is b:
            self.error("LRN cannot be computed in-place (backward needs its bottom and top)")
        top[0].reshape(b.shape)
        key = (b.shape, b.dtype, self.xp)
        if key == self._key:
            return
        self._key = key
        xp, (n, c, h, w), p = self.xp, b.shape, self.pre_pad
        self.scale = xp.empty(b.shape, dtype=b.dtype)     # kept for the backward
        if xp is np:                                      # the kernels need no other buffer
            return
        # zero-bordered work buffers: only their interiors are rewritten
        if self.across:
            self.padded = xp.zeros((n, c + 2 * p, h, w), dtype=b.dtype)
            self.interior = (slice(None), slice(p, p + c))
        else:
            self.padded = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=b.dtype)
            self.interior = (slice(None), slice(None), slice(p, p + h), slice(p, p + w))
            self.rowsum = xp.empty((n, c, h + 2 * p, w), dtype=b.dtype)
        self.power = xp.empty(b.shape, dtype=b.dtype)
        self.work = xp.empty(b.shape, dtype=b.dtype)

    def _window_sum(self, out):
        """out = sum over the centred window of self.padded (channels, or a separable box)."""
        n = self.size
        if self.across:
            c = out.shape[1]
            out[...] = self.padded[:, 0:c]
            for o in range(1, n):
                out += self.padded[:, o:o + c]
            return out
        h, w = out.shape[2:]
        rows = self.rowsum
        rows[...] = self.padded[:, :, :, 0:w]
        for o in range(1, n):
            rows += self.padded[:, :, :, o:o + w]
        out[...] = rows[:, :, 0:h]
        for o in range(1, n):
            out += rows[:, :, o:o + h]
        return out

    def _kernel_args(self, b):
        n, dt = self.size, b.dtype.type
        if self.across:
            views = (b.shape[0], b.shape[1], b.shape[2] * b.shape[3])
            a = self.alpha / n
        else:
            views = (b.shape[0] * b.shape[1], b.shape[2], b.shape[3])
            a = self.alpha / (n * n)
        return views, dt(a), dt(2.0 * a * self.beta), dt(self.beta)

    def forward(self, bottom, top):
        xp, x = self.xp, bottom[0].data
        if xp is np:
            v, a, _, beta = self._kernel_args(x)
            x3, y3, s3 = x.reshape(v), top[0].data.reshape(v), self.scale.reshape(v)
            if self.across:
                lrn.across_forward(x3, self.size, a, x.dtype.type(self.k), beta, s3, y3)
            else:
                lrn.within_forward(x3, self.size, a, beta, s3, y3)
            return
        xp.multiply(x, x, out=self.padded[self.interior])
        s = self._window_sum(self.scale)
        if self.across:
            s *= self.alpha / self.size
            s += self.k
        else:
            # base of the power: 1 + alpha * (AVE pool of x^2, divisor n^2)
            s *= self.alpha / (self.size * self.size)
            s += 1.0
        xp.power(s, -self.beta, out=self.power)
        xp.multiply(x, self.power, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, x, td = self.xp, bottom[0].data, top[0].diff
        if xp is np:
            v, _, coeff, beta = self._kernel_args(x)
            args = (x.reshape(v), top[0].data.reshape(v), td.reshape(v), self.scale.reshape(v),
                    self.size, coeff, beta, bottom[0].diff.reshape(v))
            (lrn.across_backward if self.across else lrn.within_backward)(*args)
            return
        # ratio = top_diff * top / scale (the chain rule through scale), zero-padded
        ratio = self.padded[self.interior]
        xp.multiply(td, x, out=ratio)
        ratio *= self.power
        ratio /= self.scale
        acc = self._window_sum(self.work)
        if self.across:
            coeff = 2.0 * self.alpha * self.beta / self.size
        else:
            coeff = 2.0 * self.alpha * self.beta / (self.size * self.size)
        bd = bottom[0].diff
        xp.multiply(td, self.power, out=bd)
        acc *= x
        acc *= coeff
        bd -= acc
