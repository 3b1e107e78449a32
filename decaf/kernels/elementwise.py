"""Elementwise passes: ReLU (with negative_slope), and the per-channel affine of Scale / Bias.

Arrays are C-contiguous NumPy arrays; the affine kernels see a blob as Caffe's
(outer, dim, inner) view, the parameter indexed by the middle axis.  Arithmetic is in the
arrays' own dtype, one rounding per Caffe operation (no fastmath, so no fused multiply-add);
the parameter-gradient sums accumulate in float64.

``relu_forward``     y = x > 0 ? x : slope * x   (Caffe: max(x, 0) + slope * min(x, 0))
``relu_backward``    dx = dy * ((x > 0) + slope * (x <= 0))   (0 for a NaN x, as in Caffe)
``affine_forward``   y = x * s[c] (+ b[c]), optionally followed by the ReLU above (fused)
``scale_backward``   ds[c] = sum dy * x, db[c] = sum dy, dx = dy * s[c]
``channel_sum``      sum of dy over outer and inner, per c (Bias's gradient)
"""
import numpy as np
from .jit import kernel
from numba import njit, prange

from .inplace import affine_relu, rows_per_task, same
from .reduce import add_dot_sum, add_sum, lanes, total

#: elements per parallel task of the flat kernels (one task per block keeps prange cheap)
BLOCK = 1 << 14


@kernel(streaming=True)
def relu_forward(x, y, slope):
    """y = x if x > 0 else slope * x, over flat arrays (y may be x)."""
    n = x.size
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        xb, yb = x[lo:lo + BLOCK], y[lo:lo + BLOCK]
        if same(xb, yb):                     # 1-D views from 0: LLVM vectorises (NOTES, 9)
            for i in range(yb.size):
                v = yb[i]
                yb[i] = v if v > 0 else v * slope
        else:
            for i in range(yb.size):
                v = xb[i]
                yb[i] = v if v > 0 else v * slope


@njit(cache=True, inline="always")
def _relu_grad(v, slope, zero, one):
    # two plain selects (LLVM vectorizes them; a nested one became a branch per value, 15x
    # slower); NaN: both 0, as Caffe's (x > 0) + slope * (x <= 0)
    p = one if v > 0 else zero
    r = slope if v <= 0 else zero
    return p + r


@kernel(streaming=True)
def relu_backward(x, dy, dx, slope):
    """dx = dy * ((x > 0) + slope * (x <= 0)) over flat arrays (dx may be dy)."""
    n = x.size
    zero, one = dy.dtype.type(0), dy.dtype.type(1)
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        xb, dyb, dxb = x[lo:lo + BLOCK], dy[lo:lo + BLOCK], dx[lo:lo + BLOCK]
        if same(dyb, dxb):
            for i in range(xb.size):
                dxb[i] = dxb[i] * _relu_grad(xb[i], slope, zero, one)
        else:
            for i in range(xb.size):
                dxb[i] = dyb[i] * _relu_grad(xb[i], slope, zero, one)


@kernel(streaming=True)
def affine_forward(x3, s, b, y3, has_scale, has_bias, relu, slope):
    """y = x * s[c] (if has_scale) + b[c] (if has_bias), then ReLU(slope) if ``relu``;
    x3, y3 are (outer, dim, inner); y3 may be x3."""
    outer, dim, inner = x3.shape
    rows, group = outer * dim, rows_per_task(inner)
    for g in prange((rows + group - 1) // group):
        for r in range(g * group, min(rows, (g + 1) * group)):
            o, c = r // dim, r % dim
            sc, bc = s[c], b[c]
            ys, xs = y3[o, c], x3[o, c]
            if same(xs, ys):
                for i in range(inner):
                    ys[i] = affine_relu(ys[i], sc, bc, has_scale, has_bias, relu, slope)
            else:
                for i in range(inner):
                    ys[i] = affine_relu(xs[i], sc, bc, has_scale, has_bias, relu, slope)


@kernel(streaming=True)
def scale_backward(x3, dy3, s, ds, db, dx3, want_ds, want_db, want_dx):
    """Per channel c: ds[c] = sum dy * x, db[c] = sum dy (float64 sums, written, not added);
    dx = dy * s[c].  dx3 may be dy3 (a channel's sums are taken before its dx is written)."""
    outer, dim, inner = dy3.shape
    for c in prange(dim):
        al, tl = lanes(), lanes()
        for o in range(outer):
            if want_ds:
                add_dot_sum(dy3[o, c], x3[o, c], al, tl)
            elif want_db:
                add_sum(dy3[o, c], tl)
        a, t = total(al), total(tl)
        if want_dx:
            sc = s[c]
            for o in range(outer):
                dxs, dys = dx3[o, c], dy3[o, c]
                if same(dys, dxs):
                    for i in range(inner):
                        dxs[i] = dxs[i] * sc
                else:
                    for i in range(inner):
                        dxs[i] = dys[i] * sc
        if want_ds:
            ds[c] = a
        if want_db:
            db[c] = t


@kernel(streaming=True)
def channel_sum(dy3, out):
    """out[c] = sum over (outer, inner) of dy3[:, c, :], accumulated in float64."""
    outer, dim, inner = dy3.shape
    for c in prange(dim):
        tl = lanes()
        for o in range(outer):
            add_sum(dy3[o, c], tl)
        out[c] = total(tl)


def view3(arr, dims):
    """``arr`` as the contiguous (outer, dim, inner) array the kernels take."""
    return arr.reshape(dims)


def as_vector(arr, dim, dtype):
    """A contiguous length-``dim`` parameter vector (a dummy one when ``arr`` is None)."""
    if arr is None:
        return np.zeros(max(dim, 1), dtype)
    return np.ascontiguousarray(arr.reshape(-1))
