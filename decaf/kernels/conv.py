"""The loops of Convolution / Deconvolution on NCHW arrays, compiled (Numba).

* ``im2col`` / ``col2im``: Caffe's column buffer of a chunk of images with the batch folded
  into the columns: col[(c*kh + i)*kw + j, n*oh*ow + oy*ow + ox] =
  x[n0 + n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw] (0 outside); col2im adds every entry
  back onto its pixel.  The GEMMs in between stay in BLAS.
* ``im2col_rows`` / ``col2im_rows_add``: the same for a block of output rows of one image (the
  image-by-image engine keeps its column block cache-sized).
* ``add_bias`` / ``bias_grad``: the bias of the image-by-image GEMMs and its gradient;
  ``add_bias_relu`` the bias and a following ReLU in one pass (inference fusion).
* ``to_nchw`` / ``from_nchw``: the GEMM result (M, nb*oh*ow) to and from the NCHW top, with
  the bias added on the way out and its gradient summed on the way in (no pass of their own).
* depthwise convolution (group == channels): decaf.kernels.depthwise.

Every kernel runs in parallel over rows or planes that no other iteration writes, so the
result does not depend on the thread count; sums run in the arrays' dtype.
"""
from . import threads  # noqa: F401  (Numba's environment before its first import)

import numpy as np
from .jit import kernel, u as _u
from numba import njit, prange


@njit(cache=True, inline="always")
def _span(o_count, k_off, stride, size):
    """Outputs o in [lo, hi) whose input o*stride + k_off lies inside [0, size); lo <= o_count
    (a kernel offset wholly in the left padding: every output is outside, and the zeros
    written for o < lo stay inside the row)."""
    lo = 0 if k_off >= 0 else min((-k_off + stride - 1) // stride, o_count)
    hi = (size - 1 - k_off) // stride + 1 if size - 1 - k_off >= 0 else 0
    return lo, max(lo, min(hi, o_count))


@njit(cache=True, inline="always")
def _row_columns(plane, y, height, width, sw, xoff, lo, hi, ow, crow, q):
    """crow[q:q+ow] = one output row of one kernel offset (0 where the window is outside).
    Unsigned indices (decaf.kernels.jit.u): slices or signed loops ran 5-6x slower."""
    if y < 0 or y >= height:
        for o in range(ow):
            crow[_u(q + o)] = 0
        return
    src = plane[_u(y)]
    for o in range(lo):
        crow[_u(q + o)] = 0
    if sw == 1:
        for o in range(lo, hi):
            crow[_u(q + o)] = src[_u(o + xoff)]
    else:
        for o in range(lo, hi):
            crow[_u(q + o)] = src[_u(o * sw + xoff)]
    for o in range(hi, ow):
        crow[_u(q + o)] = 0


@njit(cache=True, inline="always")
def _row_fold(plane, y, height, sw, xoff, lo, hi, crow, q):
    """plane[y, pixels of the row] += crow[q + lo:q + hi] (nothing when the row is outside)."""
    if y < 0 or y >= height or hi <= lo:
        return
    dst = plane[_u(y)]
    if sw == 1:
        for o in range(lo, hi):
            dst[_u(o + xoff)] += crow[_u(q + o)]
    else:
        for o in range(lo, hi):
            dst[_u(o * sw + xoff)] += crow[_u(q + o)]


@kernel
def im2col(x, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, col):
    """col (C*kh*kw, nb*oh*ow) from the images n0 .. n0 + nb of x (N, C, H, W)."""
    height, width = x.shape[2], x.shape[3]
    rows, oc = col.shape[0], oh * ow
    kk = kh * kw
    nb = col.shape[1] // oc
    for t in prange(rows * nb):
        r, n = t // nb, t % nb
        ch, i, j = r // kk, (r % kk) // kw, r % kw
        xoff = j * dw - pw
        lo, hi = _span(ow, xoff, sw, width)
        plane, crow = x[n0 + n, ch], col[r]
        for oy in range(oh):
            _row_columns(plane, oy * sh - ph + i * dh, height, width, sw, xoff, lo, hi, ow,
                         crow, n * oc + oy * ow)


@kernel
def col2im(col, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
    """dx[n0 + n, c] = the sum of the columns of (c, image n) back onto their pixels."""
    c, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    oc = oh * ow
    nb = col.shape[1] // oc
    for t in prange(nb * c):
        n, ch = n0 + t // c, t % c
        q0 = (t // c) * oc
        plane = dx[n, ch]
        plane[...] = 0
        for i in range(kh):
            for j in range(kw):
                crow = col[(ch * kh + i) * kw + j]
                xoff = j * dw - pw
                lo, hi = _span(ow, xoff, sw, width)
                for oy in range(oh):
                    _row_fold(plane, oy * sh - ph + i * dh, height, sw, xoff, lo, hi, crow,
                              q0 + oy * ow)


@kernel
def im2col_rows(x, n, oy0, oy1, kh, kw, sh, sw, ph, pw, dh, dw, ow, col):
    """col (C*kh*kw, (oy1-oy0)*ow): the columns of output rows oy0 .. oy1 of image n of x."""
    height, width = x.shape[2], x.shape[3]
    kk = kh * kw
    for r in prange(col.shape[0]):
        ch, i, j = r // kk, (r % kk) // kw, r % kw
        xoff = j * dw - pw
        lo, hi = _span(ow, xoff, sw, width)
        plane, crow = x[n, ch], col[r]
        for oy in range(oy0, oy1):
            _row_columns(plane, oy * sh - ph + i * dh, height, width, sw, xoff, lo, hi, ow,
                         crow, (oy - oy0) * ow)


@kernel
def col2im_rows_add(col, n, oy0, oy1, kh, kw, sh, sw, ph, pw, dh, dw, ow, dx):
    """dx[n] += the columns of output rows oy0 .. oy1 added back onto their pixels."""
    height, width = dx.shape[2], dx.shape[3]
    for ch in prange(dx.shape[1]):
        plane = dx[n, ch]
        for i in range(kh):
            for j in range(kw):
                crow = col[(ch * kh + i) * kw + j]
                xoff = j * dw - pw
                lo, hi = _span(ow, xoff, sw, width)
                for oy in range(oy0, oy1):
                    _row_fold(plane, oy * sh - ph + i * dh, height, sw, xoff, lo, hi, crow,
                              (oy - oy0) * ow)


@kernel(streaming=True)
def to_nchw(gm, n0, bias, use_bias, y):
    """y[n0 + n, m, :] = gm[m, n*oc:(n+1)*oc] (+ bias[m]) for y (N, M, oc)."""
    m_count, oc = y.shape[1], y.shape[2]
    nb = gm.shape[1] // oc
    for t in prange(nb * m_count):
        n, m = t // m_count, t % m_count
        b = bias[m] if use_bias else gm.dtype.type(0)
        ys, gs, base = y[_u(n0 + n), _u(m)], gm[_u(m)], n * oc
        for q in range(oc):                 # unsigned: vectorized (64-wide rows 3x faster)
            ys[q] = gs[_u(base + q)] + b


@kernel(streaming=True)
def from_nchw(y, n0, gm, db, use_db):
    """gm[m, n*oc:(n+1)*oc] = y[n0 + n, m, :]; db[m] += the sum of those values."""
    m_count, oc = y.shape[1], y.shape[2]
    nb = gm.shape[1] // oc
    for m in prange(m_count):
        total = gm.dtype.type(0)
        for n in range(nb):
            for q in range(oc):
                v = y[n0 + n, m, q]
                gm[m, n * oc + q] = v
                total += v
        if use_db:
            db[m] += total


@kernel(streaming=True)
def add_bias(y, bias):
    """y[n, m, :] += bias[m] for y (N, M, oc) (Caffe's forward_cpu_bias)."""
    num, m_count, oc = y.shape
    for t in prange(num * m_count):
        n, m = t // m_count, t % m_count
        b = bias[m]
        ys = y[_u(n), _u(m)]
        for q in range(oc):
            ys[q] += b


@kernel(streaming=True)
def add_bias_relu(y, bias, use_bias, slope):
    """y[n, m, :] = ReLU(y[n, m, :] (+ bias[m])) for y (N, M, oc), in one pass: Caffe's bias
    add, then its ReLU as decaf.kernels.elementwise.relu_forward computes it (v if v > 0
    else v * slope): a Convolution and its in-place ReLU fused at inference (net_fuse)."""
    num, m_count, oc = y.shape
    for t in prange(num * m_count):
        n, m = t // m_count, t % m_count
        ys = y[n, m]
        b = bias[m] if use_bias else y.dtype.type(0)
        for q in range(oc):
            v = ys[q] + b if use_bias else ys[q]
            ys[q] = v if v > 0 else v * slope


@kernel(streaming=True)
def bias_grad(dy, db):
    """db[m] += the sum of dy[:, m, :] for dy (N, M, oc) (Caffe's backward_cpu_bias)."""
    num, m_count, oc = dy.shape
    for m in prange(m_count):
        acc = np.zeros(8, dy.dtype)
        for n in range(num):
            q = 0
            while q + 8 <= oc:
                for k in range(8):
                    acc[k] += dy[n, m, q + k]
                q += 8
            for r in range(q, oc):
                acc[r - q] += dy[n, m, r]
        db[m] += acc.sum()
