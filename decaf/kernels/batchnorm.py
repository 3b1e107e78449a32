"""BatchNorm's passes over an (N, C, S) view (S = the spatial size), one channel per task.

``channel_stats``     mean[c] = sum x / m, var[c] = sum (x - mean)^2 / m (m = N * S), in one
                      pass: float64 sums of x - x_0 and its square (shifted data), so
                      var = E[d^2] - E[d]^2 loses nothing a float32 input can resolve
``normalize``         y = (x - mean[c]) / std[c] and, when ``keep`` is given, a copy of y
                      (Caffe's x_norm_, read by the backward); y may be x
``normalize_affine``  y = ((x - mean[c]) / std[c]) * s[c] + b[c], then ReLU (BatchNorm + Scale
                      + ReLU of an inference net in one pass, each operation rounded as the
                      layers round it; decaf.net_fuse)
``backward``          dx = (dy - (sum(dy * y) * y + sum(dy)) / m) / std[c] (batch statistics),
                      dx = dy / std[c] (global statistics); dx may be dy
``chain_backward``    the backwards of an in-place ReLU, Scale and this ``backward``, one
                      channel at a time, each row while it is in cache (decaf.net_fuse)
"""
import numpy as np
from .jit import kernel
from numba import njit, prange

from .inplace import affine_relu, rows_per_task, same
from .reduce import add_dot_sum, add_sum, add_sum_sq, lanes, total


@kernel(streaming=True)
def channel_stats(x3, mean, var):
    """mean[c], var[c] (biased: divided by m) of x3[:, c, :], in float64."""
    n, c_, s = x3.shape
    m = n * s
    for c in prange(c_):
        if m == 0:
            mean[c] = 0.0
            var[c] = 0.0
            continue
        shift = np.float64(x3[0, c, 0])
        tl, ql = lanes(), lanes()
        for i in range(n):
            add_sum_sq(x3[i, c], shift, tl, ql)
        t, q = total(tl), total(ql)
        d = t / m
        mean[c] = shift + d
        var[c] = max(q / m - d * d, 0.0)


@kernel(streaming=True)
def normalize(x3, mean, std, y3, keep, has_keep):
    """y = (x - mean[c]) / std[c] in the arrays' dtype; keep = y when ``has_keep``."""
    n, c_, s = x3.shape
    rows, group = n * c_, rows_per_task(s)
    for g in prange((rows + group - 1) // group):
        for r in range(g * group, min(rows, (g + 1) * group)):
            i, c = r // c_, r % c_
            mu, sd = mean[c], std[c]
            ys, xs = y3[i, c], x3[i, c]
            if same(xs, ys):
                for j in range(s):
                    ys[j] = (ys[j] - mu) / sd
            else:
                for j in range(s):
                    ys[j] = (xs[j] - mu) / sd
            if has_keep:
                ks = keep[i, c]
                for j in range(s):
                    ks[j] = ys[j]


@kernel(streaming=True)
def normalize_affine(x3, mean, std, scale, bias, y3, has_scale, has_bias, relu, slope, keep,
                     has_keep):
    """v = (x - mean[c]) / std[c] (kept in ``keep`` when ``has_keep``: BatchNorm's x_norm),
    then v * scale[c], + bias[c], ReLU(slope) (each when asked); y = v (y may be x).  The
    operations of BatchNorm, Scale and ReLU, in their order."""
    n, c_, s = x3.shape
    rows, group = n * c_, rows_per_task(s)
    for g in prange((rows + group - 1) // group):
        for r in range(g * group, min(rows, (g + 1) * group)):
            i, c = r // c_, r % c_
            mu, sd, a, b = mean[c], std[c], scale[c], bias[c]
            ys, xs = y3[i, c], x3[i, c]
            if has_keep:
                ks = keep[i, c]
                if same(xs, ys):
                    for j in range(s):
                        v = (ys[j] - mu) / sd
                        ks[j] = v
                        ys[j] = affine_relu(v, a, b, has_scale, has_bias, relu, slope)
                else:
                    for j in range(s):
                        v = (xs[j] - mu) / sd
                        ks[j] = v
                        ys[j] = affine_relu(v, a, b, has_scale, has_bias, relu, slope)
            elif same(xs, ys):
                for j in range(s):
                    ys[j] = affine_relu((ys[j] - mu) / sd, a, b, has_scale, has_bias, relu,
                                        slope)
            else:
                for j in range(s):
                    ys[j] = affine_relu((xs[j] - mu) / sd, a, b, has_scale, has_bias, relu,
                                        slope)


@kernel(streaming=True)
def backward(y3, dy3, std, dx3, global_stats):
    """Caffe's BatchNorm backward (see the module docstring); y3 is the kept x_norm."""
    n, c_, s = dy3.shape
    m = n * s
    for c in prange(c_):
        sd = std[c]
        if global_stats:
            for i in range(n):
                dxs, dys = dx3[i, c], dy3[i, c]
                if same(dys, dxs):
                    for j in range(s):
                        dxs[j] = dxs[j] / sd
                else:
                    for j in range(s):
                        dxs[j] = dys[j] / sd
            continue
        al, bl = lanes(), lanes()
        for i in range(n):
            add_dot_sum(dy3[i, c], y3[i, c], al, bl)
        a, b = total(al), total(bl)
        a32 = dy3.dtype.type(a)
        b32 = dy3.dtype.type(b)
        inv_m = dy3.dtype.type(1.0 / m)
        for i in range(n):
            dxs, dys, ys = dx3[i, c], dy3[i, c], y3[i, c]
            if same(dys, dxs):
                for j in range(s):
                    dxs[j] = (dxs[j] - (ys[j] * a32 + b32) * inv_m) / sd
            else:
                for j in range(s):
                    dxs[j] = (dys[j] - (ys[j] * a32 + b32) * inv_m) / sd


@kernel(streaming=True)
def chain_backward(y3, dy3, xs3, xn3, s, std, ds, db, dx3, in_place, has_relu, slope,
                   has_scale, want_ds, want_db, global_stats):
    """The backwards of BatchNorm -> Scale -> ReLU (in place, ReLU and Scale optional) in
    their order, with their operations and sums: dy = dy * ((y > 0) + slope * (y <= 0))
    (ReLU, y its top); ds[c] = sum dy * xs, db[c] = sum dy (Scale, float64, written), dy =
    dy * s[c]; then ``backward`` with x_norm xn3 into dx3 (``in_place``: dx3 is dy3).  Each row of a
    channel goes through the ReLU and Scale steps and BatchNorm's sums while in cache."""
    n, c_, sp = dy3.shape
    m = n * sp
    zero, one = dy3.dtype.type(0), dy3.dtype.type(1)
    for c in prange(c_):
        sc = s[c] if has_scale else one
        sd = std[c]
        asl, tsl, al, bl = lanes(), lanes(), lanes(), lanes()
        for i in range(n):
            d = dy3[i, c]
            if has_relu:
                yr = y3[i, c]
                for j in range(sp):
                    v = yr[j]
                    p = one if v > 0 else zero
                    r = slope if v <= 0 else zero
                    d[j] = d[j] * (p + r)
            if has_scale:
                if want_ds:
                    add_dot_sum(d, xs3[i, c], asl, tsl)
                elif want_db:
                    add_sum(d, tsl)
                for j in range(sp):
                    d[j] = d[j] * sc
            if not global_stats:
                add_dot_sum(d, xn3[i, c], al, bl)
        if want_ds:
            ds[c] = total(asl)
        if want_db:
            db[c] = total(tsl)
        a, b = total(al), total(bl)
        a32 = dy3.dtype.type(a)
        b32 = dy3.dtype.type(b)
        inv_m = dy3.dtype.type(1.0 / m)
        for i in range(n):
            # in place, one array read and written (LLVM's overlap test would fail on two
            # names for it and fall back to a scalar loop)
            d, xn = dy3[i, c], xn3[i, c]
            dx = d if in_place else dx3[i, c]
            if global_stats:
                for j in range(sp):
                    dx[j] = d[j] / sd
            elif in_place:
                for j in range(sp):
                    d[j] = (d[j] - (xn[j] * a32 + b32) * inv_m) / sd
            else:
                for j in range(sp):
                    dx[j] = (d[j] - (xn[j] * a32 + b32) * inv_m) / sd
