"""Softmax over the middle axis of an (outer, C, inner) view, and SoftmaxWithLoss's gradient.

``forward``        y_c = exp(x_c - max_k x_k) / sum_k exp(x_k - max_k x_k)  (y may be x)
``backward``       dx_c = (dy_c - sum_k dy_k y_k) * y_c                     (dx may be dy)
``loss_backward``  dx = (p - onehot(label)) * scale, 0 where the label is ignored

The maximum, exp and quotient are in the arrays' dtype, as Caffe computes them; the sums
accumulate in float64.  A NaN input makes its position NaN; +inf gives NaN (inf - inf), as in
Caffe.  Tasks: one per outer index (the rows of all inner positions at once, inner contiguous).
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def forward(x3, y3):
    outer, c_, inner = x3.shape
    for o in prange(outer):
        mx = np.empty(inner, x3.dtype)
        tot = np.zeros(inner, np.float64)
        for i in range(inner):
            mx[i] = x3[o, 0, i]
        for c in range(1, c_):
            for i in range(inner):
                v = x3[o, c, i]
                if v > mx[i]:                      # Caffe's std::max chain
                    mx[i] = v
        for c in range(c_):
            for i in range(inner):
                e = np.exp(x3[o, c, i] - mx[i])
                y3[o, c, i] = e
                tot[i] += e
        for c in range(c_):
            for i in range(inner):
                y3[o, c, i] = y3[o, c, i] / y3.dtype.type(tot[i])


@njit(parallel=True, cache=True)
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


@njit(parallel=True, cache=True)
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
