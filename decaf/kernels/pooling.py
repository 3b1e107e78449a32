"""Max and average pooling over NCHW planes: Caffe's loops, compiled (Numba).

Windows (per axis): start = o*s - p; MAX clips the window to [0, H); AVE divides by Caffe's
pool_size, the window clipped to [-p, H + p) only, then sums over the part inside [0, H).
Every kernel runs in parallel over the N*C planes (no two threads write the same plane, so
the result does not depend on the thread count).  MAX visits the cells of a window in
Caffe's (h, w) order with a compare and two selects, so the strict ``>`` keeps Caffe's first
maximum (NaN never wins; a window with no number above -FLT_MAX keeps -FLT_MAX and mask -1).
AVE sums in the bottom's dtype in the same order, then divides, as Caffe does.
"""
from . import threads  # noqa: F401  (Numba's environment before its first import)

import numpy as np
from numba import njit, prange

FLT_MAX = float(np.finfo(np.float32).max)


@njit(cache=True, parallel=True)
def max_forward(x, kh, kw, sh, sw, ph, pw, top, mask):
    """top[n, c, a, b] = max of the window (Caffe's init -FLT_MAX, strict >); mask: its
    plane index h * W + w (int32, -1 for none)."""
    n, c, height, width = x.shape
    oh, ow = top.shape[2], top.shape[3]
    neg = x.dtype.type(-FLT_MAX)
    xf = x.reshape(n * c, height * width)
    tf, mf = top.reshape(n * c, oh * ow), mask.reshape(n * c, oh * ow)
    for p in prange(n * c):
        xs, ts, ms = xf[p], tf[p], mf[p]
        for a in range(oh):
            hs = a * sh - ph
            he = min(hs + kh, height)
            hs = max(hs, 0)
            for b in range(ow):
                ws = b * sw - pw
                we = min(ws + kw, width)
                ws = max(ws, 0)
                best, idx = neg, -1
                for y in range(hs, he):
                    for q in range(y * width + ws, y * width + we):
                        v = xs[q]
                        better = v > best          # a select, not a branch
                        best = v if better else best
                        idx = q if better else idx
                ts[a * ow + b] = best
                ms[a * ow + b] = idx


@njit(cache=True, parallel=True)
def max_backward(top_diff, mask, bottom_diff):
    """bottom_diff = 0, then each top diff added onto its mask cell (Caffe's backward)."""
    n, c, height, width = bottom_diff.shape
    oh, ow = top_diff.shape[2], top_diff.shape[3]
    df = bottom_diff.reshape(n * c, height * width)
    tf, mf = top_diff.reshape(n * c, oh * ow), mask.reshape(n * c, oh * ow)
    for p in prange(n * c):
        ds, ts, ms = df[p], tf[p], mf[p]
        ds[:] = 0
        for o in range(oh * ow):
            if ms[o] >= 0:
                ds[ms[o]] += ts[o]


@njit(cache=True, inline="always")
def _window(o, k, s, p, size):
    """(first, end, pool_size extent) of window o along one axis (Caffe's AVE clipping)."""
    start = o * s - p
    end = min(start + k, size + p)
    return max(start, 0), min(end, size), end - start


@njit(cache=True, parallel=True)
def ave_forward(x, kh, kw, sh, sw, ph, pw, top):
    """top = (sum of the window inside the bottom) / pool_size, summed in Caffe's order."""
    n, c, height, width = x.shape
    oh, ow = top.shape[2], top.shape[3]
    xf, tf = x.reshape(n * c, height * width), top.reshape(n * c, oh * ow)
    for p in prange(n * c):
        xs, ts = xf[p], tf[p]
        for a in range(oh):
            hs, he, size_h = _window(a, kh, sh, ph, height)
            for b in range(ow):
                ws, we, size_w = _window(b, kw, sw, pw, width)
                total = x.dtype.type(0)
                for y in range(hs, he):
                    for q in range(y * width + ws, y * width + we):
                        total += xs[q]
                ts[a * ow + b] = total / (size_h * size_w)


@njit(cache=True, parallel=True)
def ave_backward(top_diff, kh, kw, sh, sw, ph, pw, bottom_diff):
    """bottom_diff = 0, then top_diff / pool_size added onto every cell of each window."""
    n, c, height, width = bottom_diff.shape
    oh, ow = top_diff.shape[2], top_diff.shape[3]
    df, tf = bottom_diff.reshape(n * c, height * width), top_diff.reshape(n * c, oh * ow)
    for p in prange(n * c):
        ds, ts = df[p], tf[p]
        ds[:] = 0
        for a in range(oh):
            hs, he, size_h = _window(a, kh, sh, ph, height)
            for b in range(ow):
                ws, we, size_w = _window(b, kw, sw, pw, width)
                g = top_diff.dtype.type(ts[a * ow + b] / (size_h * size_w))
                for y in range(hs, he):
                    for q in range(y * width + ws, y * width + we):
                        ds[q] += g
