"""Softmax over the middle axis of an (outer, C, inner) view, and SoftmaxWithLoss's gradient.

``forward``        y_c = exp(x_c - max_k x_k) / sum_k exp(x_k - max_k x_k)  (y may be x):
                   ``shift_max``, NumPy's exp, ``normalize``
``backward``       dx_c = (dy_c - sum_k dy_k y_k) * y_c                     (dx may be dy)
``loss_backward``  dx = (p - onehot(label)) * scale, 0 where the label is ignored

The difference, exp and quotient are in the arrays' dtype, as Caffe computes them; the sums
accumulate in float64.  A NaN input makes its position NaN; +inf gives NaN (inf - inf), as in
Caffe.  Tasks: one per outer index (the rows of all inner positions at once, inner contiguous).
"""
import numpy as np
from .jit import kernel
from numba import njit, prange


@kernel(streaming=True)
def shift_max(x3, y3):
    """y = x - max_c x (per (outer, inner) position; y may be x)."""
    outer, c_, inner = x3.shape
    for o in prange(outer):
        if inner == 1:                              # N x C logits: one row per task
            m = x3[o, 0, 0]
            for c in range(1, c_):
                v = x3[o, c, 0]
                m = v if v > m else m               # Caffe's std::max chain
            for c in range(c_):
                y3[o, c, 0] = x3[o, c, 0] - m
            continue
        mx = x3[o, 0].copy()
        for c in range(1, c_):
            for i in range(inner):
                v = x3[o, c, i]
                mx[i] = v if v > mx[i] else mx[i]
        for c in range(c_):
            for i in range(inner):
                y3[o, c, i] = x3[o, c, i] - mx[i]


@kernel(streaming=True)
def normalize(y3):
    """y /= sum_c y (float64 sums), in place: the last step after y = exp(x - max)."""
    outer, c_, inner = y3.shape
    for o in prange(outer):
        if inner == 1:
            t = 0.0
            for c in range(c_):
                t += y3[o, c, 0]
            d = y3.dtype.type(t)
            for c in range(c_):
                y3[o, c, 0] = y3[o, c, 0] / d
            continue
        tot = np.zeros(inner, np.float64)
        for c in range(c_):
            for i in range(inner):
                tot[i] += y3[o, c, i]
        den = tot.astype(y3.dtype)
        for c in range(c_):
            for i in range(inner):
                y3[o, c, i] = y3[o, c, i] / den[i]


def forward(x3, y3):
    """y = softmax of x over axis 1: the max shift and the normalization are kernels, the exp
    is NumPy's (SIMD; a compiled loop calls the scalar libm exp, 3x slower)."""
    shift_max(x3, y3)
    np.exp(y3, out=y3)
    normalize(y3)


@kernel(streaming=True)
def backward(y3, dy3, dx3):
    outer, c_, inner = y3.shape
    for o in prange(outer):
        dot = np.zeros(inner, np.float64)
        for c in range(c_):
            for i in range(inner):
                dot[i] += dy3[o, c, i] * y3[o, c, i]
        for c in range(c_):
            for i in range(inner):
                dx3[o, c, i] = (dy3[o, c, i] - dy3.dtype.type(dot[i])) * y3[o, c, i]


@kernel(streaming=True)
def loss_backward(p3, labels, valid, has_valid, scale, dx3):
    """dx = (p - onehot(labels[o, i])) * scale, and 0 where ``valid`` is False (when
    ``has_valid``); labels is (outer, inner) int64."""
    outer, c_, inner = p3.shape
    zero = dx3.dtype.type(0)
    one = dx3.dtype.type(1)
    for o in prange(outer):
        for c in range(c_):
            for i in range(inner):
                if has_valid and not valid[o, i]:
                    dx3[o, c, i] = zero
                    continue
                v = p3[o, c, i]
                if labels[o, i] == c:
                    v = v - one
                dx3[o, c, i] = v * scale
