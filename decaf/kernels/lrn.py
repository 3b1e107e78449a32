"""LRN's passes (Caffe's LRNLayer), n = local_size (odd), p = (n - 1) / 2, windows zero-padded.

ACROSS_CHANNELS on an (N, C, H*W) view:
  ``across_forward``   scale = k + alpha/n * sum_{|c'-c| <= p} x_c'^2,  y = x * scale^-beta
  ``across_backward``  dx = dy * scale^-beta
                            - 2 alpha beta / n * x * sum_{|c'-c| <= p} dy_c' y_c' / scale_c'
WITHIN_CHANNEL on an (N*C, H, W) view (Caffe's Power -> AVE pooling -> Power -> PROD chain):
  ``within_forward``   scale = 1 + alpha/n^2 * sum_{n x n window} x^2,  y = x * scale^-beta
  ``within_backward``  dx = dy * scale^-beta
                            - 2 alpha beta / n^2 * x * sum_{n x n window} dy y / scale
The window sums accumulate in float64; scale, the power and the products are in the arrays'
dtype.  ``scale`` is kept by the forward for the backward.
"""
import numpy as np
from .jit import kernel
from numba import njit, prange


@kernel
def across_forward(x3, size, alpha_over_n, k, beta, scale3, y3):
    n_, c_, s_ = x3.shape
    p = (size - 1) // 2
    for r in prange(n_ * c_):
        n, c = r // c_, r % c_
        lo, hi = max(0, c - p), min(c_, c + p + 1)
        for j in range(s_):
            t = 0.0
            for q in range(lo, hi):
                v = x3[n, q, j]
                t += v * v
            sc = k + alpha_over_n * scale3.dtype.type(t)
            scale3[n, c, j] = sc
            y3[n, c, j] = x3[n, c, j] * sc ** -beta


@kernel
def across_backward(x3, y3, dy3, scale3, size, coeff, beta, dx3):
    n_, c_, s_ = x3.shape
    p = (size - 1) // 2
    for n in prange(n_):
        ratio = np.empty((c_, s_), np.float64)
        for c in range(c_):
            for j in range(s_):
                ratio[c, j] = dy3[n, c, j] * y3[n, c, j] / scale3[n, c, j]
        for c in range(c_):
            lo, hi = max(0, c - p), min(c_, c + p + 1)
            for j in range(s_):
                t = 0.0
                for q in range(lo, hi):
                    t += ratio[q, j]
                dx3[n, c, j] = (dy3[n, c, j] * scale3[n, c, j] ** -beta
                                - coeff * x3[n, c, j] * dx3.dtype.type(t))


@njit(cache=True)
def _box(v, p, rows, out):
    """out = sum over the (2p+1)^2 zero-padded window of v (H, W), float64 scratch rows."""
    h_, w_ = v.shape
    for h in range(h_):
        for w in range(w_):
            t = 0.0
            for q in range(max(0, w - p), min(w_, w + p + 1)):
                t += v[h, q]
            rows[h, w] = t
    for h in range(h_):
        for w in range(w_):
            t = 0.0
            for q in range(max(0, h - p), min(h_, h + p + 1)):
                t += rows[q, w]
            out[h, w] = t


@kernel
def within_forward(x3, size, alpha_over_n2, beta, scale3, y3):
    planes, h_, w_ = x3.shape
    p = (size - 1) // 2
    one = scale3.dtype.type(1)
    for r in prange(planes):
        sq = np.empty((h_, w_), np.float64)
        rows = np.empty((h_, w_), np.float64)
        box = np.empty((h_, w_), np.float64)
        for h in range(h_):
            for w in range(w_):
                v = x3[r, h, w]
                sq[h, w] = v * v
        _box(sq, p, rows, box)
        for h in range(h_):
            for w in range(w_):
                sc = one + alpha_over_n2 * scale3.dtype.type(box[h, w])
                scale3[r, h, w] = sc
                y3[r, h, w] = x3[r, h, w] * sc ** -beta


@kernel
def within_backward(x3, y3, dy3, scale3, size, coeff, beta, dx3):
    planes, h_, w_ = x3.shape
    p = (size - 1) // 2
    for r in prange(planes):
        ratio = np.empty((h_, w_), np.float64)
        rows = np.empty((h_, w_), np.float64)
        box = np.empty((h_, w_), np.float64)
        for h in range(h_):
            for w in range(w_):
                ratio[h, w] = dy3[r, h, w] * y3[r, h, w] / scale3[r, h, w]
        _box(ratio, p, rows, box)
        for h in range(h_):
            for w in range(w_):
                dx3[r, h, w] = (dy3[r, h, w] * scale3[r, h, w] ** -beta
                                - coeff * x3[r, h, w] * dx3.dtype.type(box[h, w]))
