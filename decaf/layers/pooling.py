"""Pooling (MAX, AVE, STOCHASTIC) and SPP (spatial pyramid pooling), as in Caffe.

Windows: row window of output oh is [oh*s - p, oh*s - p + k); its output count is Caffe's
ceil((H + 2p - k) / s) + 1 (floor with round_mode FLOOR), minus one when pad > 0 and the last
window would start at or beyond H + p.  On the CPU, MAX (with Caffe's argmax mask, found in the
forward pass) and AVE run as compiled loops (decaf.kernels.pooling); elsewhere (CuPy) and for
STOCHASTIC, as array passes over the kernel offsets (i, j) of a padded copy.
"""
import math

import numpy as np

from ..blob import Blob
from ..errors import LayerSetupError
from ..layer import Layer, register_layer
from ..kernels import pooling as kernels
from .center_loss import scatter_add
from ._reshape_cache import remember, unchanged
from .. import backend, memory

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)
# MAX and AVE of NumPy arrays through the compiled kernels (False: the array passes CuPy runs)
COMPILED = True


def pooled_size(size, kernel, stride, pad, ceil_mode=True):
    """Caffe's pooled output size along one axis, before the pad clip rule."""
    num = size + 2 * pad - kernel
    q = -((-num) // stride) if ceil_mode else num // stride
    return q + 1


class _Windows:
    """The pooling windows of a (N, C, H, W) bottom: padded buffers and strided slices."""

    def __init__(self, xp, dtype, shape, kernel, stride, pad, out):
        self.xp, self.dtype = xp, dtype
        self.shape, self.kernel, self.stride, self.pad, self.out = shape, kernel, stride, pad, out
        n, c, h, w = shape
        # padded extent: the bottom sits at [p, p + H); windows cover [0, (o-1)s + k)
        self.ext = tuple(max(p + size, (o - 1) * s + k)
                         for size, k, s, p, o in zip((h, w), kernel, stride, pad, out))
        self.needs_buf = self.ext != (h, w)
        self.interior = (slice(None), slice(None), slice(pad[0], pad[0] + h),
                         slice(pad[1], pad[1] + w))
        self.offsets = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
        self._bufs = {}
        # windows that start beyond the bottom (only possible with pad 0 and stride > kernel)
        starts = [np.arange(o) * s - p for o, s, p in zip(out, stride, pad)]
        empty = (starts[0] >= h)[:, None] | (starts[1] >= w)[None, :]
        self.empty = xp.asarray(empty) if empty.any() else None
        self.starts = starts

    def buffer(self, name, shape=None, dtype=None, fill=None):
        shape = shape or (self.shape[:2] + self.ext)
        key = (name, shape, dtype)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self.xp.zeros(shape, dtype=dtype or self.dtype)
            if fill is not None:
                buf[...] = fill
            self._bufs[key] = buf
        return buf

    def load(self, x, fill):
        """The bottom inside a buffer whose border holds ``fill`` (or x itself if none needed)."""
        if not self.needs_buf:
            return x
        buf = self.buffer("in%r" % fill, fill=fill)
        buf[self.interior] = x
        return buf

    def index_plane(self):
        """(1, 1, *ext) plane index h * W + w of every padded cell (-1 in the border)."""
        key = ("index", None, None)
        if key not in self._bufs:
            n, c, h, w = self.shape
            idx = np.full((1, 1) + self.ext, -1, dtype=np.intp)
            idx[self.interior] = np.arange(h * w).reshape(h, w)
            self._bufs[key] = self.xp.asarray(idx)
        return self._bufs[key]

    def accumulator(self, bottom_diff):
        """A zeroed array to accumulate bottom diffs into (padded when needed)."""
        acc = self.buffer("acc") if self.needs_buf else bottom_diff
        acc[...] = 0
        return acc

    def finish(self, acc, bottom_diff):
        if self.needs_buf:
            bottom_diff[...] = acc[self.interior]

    def view(self, arr, i, j):
        (sh, sw), (oh, ow) = self.stride, self.out
        return arr[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]

    def ave_divisor(self):
        """Caffe's pool_size: the window clipped to [-p, H + p) (padding counts)."""
        sizes = []
        for start, k, size, p in zip(self.starts, self.kernel, self.shape[2:], self.pad):
            sizes.append(np.minimum(start + k, size + p) - start)
        return self.xp.asarray(np.outer(sizes[0], sizes[1]).astype(self.dtype))



@register_layer("Pooling")
class PoolingLayer(Layer):
    """Pooling over k_h x k_w windows of each (n, c) plane of a 4-D bottom.

    MAX: top = max over the window clipped to the bottom (ties: first in (h, w) scan order),
    bottom_diff routes top_diff to that max; optional top[1] = its flat index h * W + w.
    AVE: top = sum over the clipped window / pool_size (window clipped to H + pad only).
    STOCHASTIC: TRAIN samples x_i with probability x_i / sum x (bottom_diff routes top_diff to
    the sample); TEST gives sum x^2 / sum x.  Caffe runs STOCHASTIC on the GPU only and has no
    TEST-phase backward (it reuses stale samples); here TEST backward is the exact gradient.
    """
    shape_only_reshape = True

    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        pp = self.layer_param.pooling_param
        P = self._pb.PoolingParameter
        self.method = pp.pool
        if self.method not in (P.MAX, P.AVE, P.STOCHASTIC):
            self.error("Unknown pooling method %d" % self.method)
        if len(top) > 1 and self.method != P.MAX:
            self.error("only MAX pooling has a second top (the argmax mask); got %d tops"
                       % len(top))
        self.global_pooling = pp.global_pooling
        has = pp.HasField
        if self.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                self.error("With Global_pooling: true Filter size cannot specified")
        else:
            if has("kernel_size") and (has("kernel_h") and has("kernel_w")):
                self.error("Filter size is kernel_size OR kernel_h and kernel_w; not both")
            if not has("kernel_size") and not (has("kernel_h") and has("kernel_w")):
                self.error("For non-square filters both kernel_h and kernel_w are required.")
        for name in ("pad", "stride"):
            if not ((not has(name) and has(name + "_h") and has(name + "_w")) or
                    (not has(name + "_h") and not has(name + "_w"))):
                self.error("%s is %s OR %s_h and %s_w are required." % (name, name, name, name))
        if not self.global_pooling:
            self.kernel = ((pp.kernel_size, pp.kernel_size) if has("kernel_size")
                           else (pp.kernel_h, pp.kernel_w))
            if min(self.kernel) <= 0:
                self.error("Filter dimensions cannot be zero (kernel %s)" % (self.kernel,))
        self.pad = (pp.pad_h, pp.pad_w) if has("pad_h") else (pp.pad, pp.pad)
        self.stride = (pp.stride_h, pp.stride_w) if has("stride_h") else (pp.stride, pp.stride)
        if min(self.stride) <= 0:
            self.error("stride must be positive (stride %s)" % (self.stride,))
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            self.error("With Global_pooling: true; only pad = 0 and stride = 1")
        if self.pad != (0, 0):
            if self.method not in (P.MAX, P.AVE):
                self.error("Padding implemented only for average and max pooling.")
            if not self.global_pooling and (self.pad[0] >= self.kernel[0] or
                                            self.pad[1] >= self.kernel[1]):
                self.error("pad %s must be smaller than the kernel %s" % (self.pad, self.kernel))
        self.ceil_mode = pp.round_mode == P.CEIL
        self._key = None

    def output_shape(self, h, w):
        out = [pooled_size(n, k, s, p, self.ceil_mode)
               for n, k, s, p in zip((h, w), self.kernel, self.stride, self.pad)]
        if self.pad != (0, 0):
            for a, n in enumerate((h, w)):
                if (out[a] - 1) * self.stride[a] >= n + self.pad[a]:
                    out[a] -= 1
        return tuple(out)

    def reshape(self, bottom, top):
        if unchanged(self, bottom, top):
            return
        b = bottom[0]
        if b.num_axes != 4:
            self.error("Input must have 4 axes, corresponding to (num, channels, height, "
                       "width); bottom %s is %s" % (self.blob_names("bottom"), b.shape))
        n, c, h, w = b.shape
        if self.global_pooling:
            self.kernel = (h, w)
        out = self.output_shape(h, w)
        if min(out) <= 0:
            self.error("pooled output %s is empty for bottom %s (kernel %s, stride %s, pad %s)"
                       % (out, b.shape, self.kernel, self.stride, self.pad))
        for t in top:
            if t is b:
                self.error("Pooling cannot be computed in-place")
            t.reshape((n, c) + out)
        key = (b.shape, self.kernel, b.dtype, self.xp)
        if key != self._key:
            self._key = key
            self.win = _Windows(self.xp, b.dtype, b.shape, self.kernel, self.stride, self.pad, out)
            self.divisor = self.win.ave_divisor()
            self.compiled = self.xp is np and COMPILED
            mask_type = np.dtype(np.int32 if self.compiled else np.intp)
            memory.reserve(n * c * int(np.prod(out)) * mask_type.itemsize,
                           "the argmax mask of pooling layer %r, shape %s" % (self.name,
                                                                            (n, c) + out),
                           on_gpu=self.xp is not np)
            self.mask = self.xp.empty((n, c) + out, dtype=mask_type)
            self._mask_valid = False
        remember(self, bottom, top)

    # -- forward ---------------------------------------------------------------------------
    def _geometry(self):
        return self.kernel + self.stride + self.pad

    def forward(self, bottom, top):
        P = self._pb.PoolingParameter
        x = bottom[0].data
        if self.method == P.MAX:
            # a layer whose backward never runs (TEST-phase net) and no mask top: no mask
            self._forward_max(x, top[0].data,
                              len(top) > 1 or getattr(self, "needs_backward", True))
            if len(top) > 1:
                top[1].data[...] = self.mask
        elif self.method == P.AVE:
            if self.compiled:
                kernels.ave_forward(x, *self._geometry(), top[0].data)
            else:
                self._forward_ave(x, top[0].data)
        elif self.phase == self._pb.TRAIN:
            self._forward_stochastic_train(x, top[0].data)
        else:
            self._forward_stochastic_test(x, top[0].data)

    def fusible(self):
        """MAX or AVE through the compiled kernels: forward_images can run it image by image."""
        P = self._pb.PoolingParameter
        return self.xp is np and COMPILED and self.method in (P.MAX, P.AVE)

    def forward_images(self, x, top, n0, n1):
        """forward of images n0..n1 alone (``fusible``; one top): net_fuse runs it on each
        chunk of images a convolution has just written, while they are in cache."""
        geometry = self._geometry()
        if self.method == self._pb.PoolingParameter.MAX:
            want_mask = getattr(self, "needs_backward", True)
            self._mask_valid = want_mask
            kernels.max_forward(x[n0:n1], *geometry, top[n0:n1], self.mask[n0:n1], want_mask)
        else:
            kernels.ave_forward(x[n0:n1], *geometry, top[n0:n1])

    def _forward_max(self, x, top, want_mask=True):
        """top = window max, self.mask = the plane index h * W + w of its first maximum (not
        written when ``want_mask`` is False: a backward then computes it first)."""
        if self.compiled:
            self._mask_valid = want_mask
            kernels.max_forward(x, *self._geometry(), top, self.mask, want_mask)
            return
        self._mask_valid = True
        xp, win = self.xp, self.win
        xb = win.load(x, -np.inf)        # padding never wins against -FLT_MAX (Caffe clips)
        index = win.index_plane()
        top[...] = -FLT_MAX
        self.mask[...] = -1
        for i, j in win.offsets:         # scan order: the strict > keeps the first maximum
            v = win.view(xb, i, j)
            better = v > top
            xp.copyto(top, v, where=better)
            xp.copyto(self.mask, win.view(index, i, j), where=better)

    def _forward_ave(self, x, top):
        """top = sum of the zero-padded window / Caffe's pool_size."""
        xb, win = self.win.load(x, 0.0), self.win
        top[...] = 0
        for i, j in win.offsets:
            top += win.view(xb, i, j)
        top /= self.divisor

    def _forward_stochastic_train(self, x, top):
        """Sample one element per window with probability proportional to its value."""
        xp, win = self.xp, self.win
        xb = win.load(x, 0.0)
        u = xp.asarray(backend.rng().uniform(0.0, 1.0, top.shape), dtype=top.dtype)
        cums = win.buffer("cums", top.shape)
        cums[...] = 0
        for i, j in win.offsets:
            cums += win.view(xb, i, j)
        thres = u * cums
        cums[...] = 0
        top[...] = 0
        remaining = win.buffer("remaining", top.shape, dtype=bool)
        hit = win.buffer("hit", top.shape, dtype=bool)
        sidx = win.buffer("sample", top.shape, dtype=np.int32)
        remaining[...] = True
        sidx[...] = -1
        for o, (i, j) in enumerate(win.offsets):
            v = win.view(xb, i, j)
            cums += v
            xp.greater_equal(cums, thres, out=hit)
            xp.logical_and(hit, remaining, out=hit)
            xp.logical_xor(remaining, hit, out=remaining)
            xp.copyto(top, v, where=hit)
            xp.copyto(sidx, o, where=hit)

    def _forward_stochastic_test(self, x, top):
        """top = sum x^2 / (FLT_MIN + sum x) over each window (Caffe's TEST-phase rule)."""
        xp, win = self.xp, self.win
        xb = win.load(x, 0.0)
        s1 = win.buffer("s1", top.shape)
        s1[...] = FLT_MIN
        top[...] = 0
        for i, j in win.offsets:
            v = win.view(xb, i, j)
            s1 += v
            top += v * v
        top /= s1

    # -- backward --------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        P = self._pb.PoolingParameter
        td, bd = top[0].diff, bottom[0].diff
        if self.method == P.MAX:
            if not self._mask_valid:      # a backward with no forward since the reshape
                self._forward_max(bottom[0].data, self.win.buffer("top", td.shape))
            self._backward_max(td, bd)
        elif self.method == P.AVE:
            if self.compiled:
                kernels.ave_backward(td, *self._geometry(), bd)
            else:
                self._backward_ave(td, bd)
        elif self.phase == self._pb.TRAIN:
            self._backward_stochastic_train(td, bd)
        else:
            self._backward_stochastic_test(bottom[0].data, top[0].data, td, bd)

    def _backward_max(self, td, bd):
        """bottom_diff[mask] += top_diff (Caffe's backward; mask -1: no cell)."""
        if self.compiled:
            kernels.max_backward(td, self.mask, bd)
            return
        xp = self.xp
        n, c = td.shape[:2]
        planes = xp.arange(n * c).reshape(n, c, 1, 1) * (bd.shape[2] * bd.shape[3])
        hit = self.mask >= 0
        flat = bd.reshape(-1)
        flat[...] = 0
        scatter_add(xp, flat, (self.mask + planes)[hit], td[hit])

    def _backward_ave(self, td, bd):
        win = self.win
        acc = win.accumulator(bd)
        g = td / self.divisor
        for i, j in win.offsets:
            win.view(acc, i, j)[...] += g
        win.finish(acc, bd)

    def _backward_stochastic_train(self, td, bd):
        xp, win = self.xp, self.win
        sidx = win.buffer("sample", td.shape, dtype=np.int32)
        tmp = win.buffer("tmp", td.shape)
        acc = win.accumulator(bd)
        for o, (i, j) in enumerate(win.offsets):
            xp.multiply(sidx == o, td, out=tmp)
            win.view(acc, i, j)[...] += tmp
        win.finish(acc, bd)

    def _backward_stochastic_test(self, x, y, td, bd):
        """d/dx_i of sum x^2 / sum x = (2 x_i - top) / sum x, summed over the windows of x_i."""
        win = self.win
        xb = win.load(x, 0.0)
        g = td / win.buffer("s1", td.shape)
        acc = win.accumulator(bd)
        for i, j in win.offsets:
            win.view(acc, i, j)[...] += g * (2 * win.view(xb, i, j) - y)
        win.finish(acc, bd)


def spp_pooling_param(level, height, width, spp_param, pb):
    """The PoolingParameter of pyramid level ``level`` (Caffe's SPPLayer::GetPoolingParam)."""
    bins = 2 ** level
    lp = pb.LayerParameter()
    pp = lp.pooling_param
    kh, kw = int(math.ceil(height / bins)), int(math.ceil(width / bins))
    pp.kernel_h, pp.kernel_w = kh, kw
    pp.stride_h, pp.stride_w = kh, kw
    pp.pad_h, pp.pad_w = (kh * bins - height + 1) // 2, (kw * bins - width + 1) // 2
    pp.pool = spp_param.pool
    return lp


@register_layer("SPP")
class SPPLayer(Layer):
    """SPP: pool the bottom over 1, 2, 4, ... 2^(L-1) bins per side and concatenate.

    Level l pools with kernel ceil(H / 2^l), stride = kernel, pad (kernel*2^l - H + 1) / 2;
    top = concat of the flattened levels (N x sum C*bins_h*bins_w); with pyramid_height 1 the
    top is the single pooled N x C x 1 x 1 blob.  bottom_diff = sum of the levels' diffs.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        sp = self.layer_param.spp_param
        self.pyramid_height = int(sp.pyramid_height)
        if self.pyramid_height < 1:
            self.error("pyramid_height must be at least 1, got %d" % self.pyramid_height)
        self._shape = None

    def _build(self, shape, dtype):
        n, c, h, w = shape
        self.levels = []
        for level in range(self.pyramid_height):
            lp = spp_pooling_param(level, h, w, self.layer_param.spp_param, self._pb)
            lp.name = "%s/level%d" % (self.name, level)
            lp.type = "Pooling"
            lp.phase = self._pb.TRAIN   # Caffe builds the inner layers with a default phase
            layer = PoolingLayer(lp)
            layer.xp = self.xp
            lb, lt = Blob(shape, dtype=dtype, xp=self.xp), Blob(dtype=dtype, xp=self.xp)
            try:
                layer.SetUp([lb], [lt])
            except LayerSetupError as e:
                pp = lp.pooling_param
                self.error("pyramid level %d of a %dx%d bottom (kernel %dx%d, pad %dx%d) cannot "
                           "be pooled: %s" % (level, h, w, pp.kernel_h, pp.kernel_w, pp.pad_h,
                                              pp.pad_w, e))
            self.levels.append((layer, lb, lt))

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            self.error("Input must have 4 axes, corresponding to (num, channels, height, "
                       "width); bottom %s is %s" % (self.blob_names("bottom"), b.shape))
        if b.shape[2] <= 0 or b.shape[3] <= 0:
            self.error("Input dimensions cannot be zero (bottom %s)" % (b.shape,))
        if top[0] is b:
            self.error("SPP cannot be computed in-place")
        if (b.shape, b.dtype) != self._shape:
            self._shape = (b.shape, b.dtype)
            self._build(b.shape, b.dtype)
        for layer, lb, lt in self.levels:
            lb.reshape(b.shape)
            lb.share_data(b)
            layer.reshape([lb], [lt])
        if self.pyramid_height == 1:
            top[0].reshape(self.levels[0][2].shape)
        else:
            top[0].reshape(b.shape[0], sum(lt.count_range(1) for _, _, lt in self.levels))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        out = top[0].data.reshape(n, -1)
        off = 0
        for layer, lb, lt in self.levels:
            layer.forward([lb], [lt])
            size = lt.count_range(1)
            out[:, off:off + size] = lt.data.reshape(n, size)
            off += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        tdiff = top[0].diff.reshape(n, -1)
        bd = bottom[0].diff
        off = 0
        for k, (layer, lb, lt) in enumerate(self.levels):
            size = lt.count_range(1)
            lt.diff[...] = tdiff[:, off:off + size].reshape(lt.shape)
            off += size
            layer.backward([lt], [True], [lb])
            if k == 0:
                bd[...] = lb.diff
            else:
                bd += lb.diff
