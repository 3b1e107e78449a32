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
* ``depthwise_*`` (and the ``DepthwiseConv`` / ``DepthwiseDeconv`` engines that call them):
  convolution with one input channel per group (group == channels, e.g.
  MobileNet-style nets), as a direct loop: no columns, no GEMM.

Every kernel runs in parallel over rows or planes that no other iteration writes, so the
result does not depend on the thread count; sums run in the arrays' dtype.
"""
from . import threads  # noqa: F401  (Numba's environment before its first import)

import numpy as np
from .inplace import affine_relu
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


@njit(cache=True, inline="always")
def _taps_back(gp, wm, acc, y0, x0, dh, dw):
    """acc + sum_ij wm[i, j] gp[y0 - i*dh, x0 - j*dw], i descending, j ascending (the
    scatter's order at one pixel), taps inside only."""
    kh, kw = wm.shape
    oh, ow = gp.shape
    for r in range(kh):
        i = kh - 1 - r
        oy = y0 - i * dh
        if oy >= 0 and oy < oh:
            for j in range(kw):
                ox = x0 - j * dw
                if ox >= 0 and ox < ow:
                    acc += wm[i, j] * gp[oy, ox]
    return acc


@njit(cache=True, inline="always")
def _axpy(ys, wv, xs, step):
    """ys[k] += wv * xs[k*step] (1-D views: indices from 0, so no wrap-around test)."""
    if step == 1:
        for k in range(ys.size):
            ys[k] += wv * xs[k]
    else:
        for k in range(ys.size):
            ys[k] += wv * xs[k * step]


@njit(cache=True, inline="always")
def _acc9(acc, r0, r1, r2, q, c0, c1, c2, wt):
    """acc + wt[0] r0[q + c0] + wt[1] r0[q + c1] + ... + wt[8] r2[q + c2], in that order."""
    return (acc + wt[0] * r0[q + c0] + wt[1] * r0[q + c1] + wt[2] * r0[q + c2]
            + wt[3] * r1[q + c0] + wt[4] * r1[q + c1] + wt[5] * r1[q + c2]
            + wt[6] * r2[q + c0] + wt[7] * r2[q + c1] + wt[8] * r2[q + c2])


@njit(cache=True, inline="always")
def _row3x3(r0, r1, r2, wm, ys, step, c0, c1, c2):
    """ys[k] = ys[k] + w00 r0[k*step + c0] + w01 r0[k*step + c1] + w02 r0[k*step + c2]
    + w10 r1[..] + ... + w22 r2[k*step + c2] in that order: one pass over the row, the 9
    weights in registers, unsigned indices (no wrap-around test) into three source rows,
    one loop per step (a constant stride), so that LLVM vectorises it."""
    wt = (wm[0, 0], wm[0, 1], wm[0, 2], wm[1, 0], wm[1, 1], wm[1, 2],
          wm[2, 0], wm[2, 1], wm[2, 2])
    c0, c1, c2 = np.uint64(c0), np.uint64(c1), np.uint64(c2)
    if step == 1:
        for k in range(ys.size):
            ys[k] = _acc9(ys[k], r0, r1, r2, np.uint64(k), c0, c1, c2, wt)
    elif step == 2 and c0 == 0 and c1 == 1 and c2 == 2:
        for k in range(ys.size):
            ys[k] = _acc9(ys[k], r0, r1, r2, np.uint64(2 * k), np.uint64(0), np.uint64(1),
                          np.uint64(2), wt)
    else:
        s = np.uint64(step)
        for k in range(ys.size):
            ys[k] = _acc9(ys[k], r0, r1, r2, np.uint64(k) * s, c0, c1, c2, wt)


@njit(cache=True, inline="always")
def _pad_plane(xp, ph, pw, sw, buf):
    """buf = the plane xp inside a zero border of ph rows and pw columns; for sw == 2 each
    padded row stored as its even columns, then its odd ones (half = ceil(width / 2) in),
    so that a stride-2 tap reads consecutive values."""
    height, width = xp.shape
    hp, wp = buf.shape
    half = (wp + 1) // 2
    zero = buf.dtype.type(0)
    for r in range(hp):
        row = buf[_u(r)]
        for q in range(wp):
            row[_u(q)] = zero
        y = r - ph
        if y < 0 or y >= height:
            continue
        src = xp[_u(y)]
        if sw == 1:
            for q in range(width):
                row[_u(q + pw)] = src[_u(q)]
            continue
        for k in range((pw + 1) // 2, min(half, (width - 1 + pw) // 2 + 1)):
            row[_u(k)] = src[_u(2 * k - pw)]
        for k in range(pw // 2, min(wp - half, (width - 2 + pw) // 2 + 1)):
            row[_u(half + k)] = src[_u(2 * k + 1 - pw)]


_NO_EPILOGUE = {}


def depthwise_forward(x, w, bias, use_bias, sh, sw, ph, pw, dh, dw, y, epilogue=None):
    """y[n, m, oy, ox] = b[m] + sum_ij w[m, 0, i, j] P[oy*sh + i*dh, ox*sw + j*dw], summed from
    b in (i, j) order, P the plane x[n, m // mult] inside a zero border of ph rows and pw
    columns: Caffe's im2col + GEMM, so the taps in the padding add w * 0 (inf / NaN weights
    there give NaN, as in Caffe).  Each plane is copied once into the border (_pad_plane;
    3x3 with horizontal stride 2: even columns, then odd, so that each tap reads consecutive
    values; stride 2 both ways: its four phases, _polyphase) for all the mult outputs it
    feeds (in blocks when there are fewer planes than twice the threads); 3x3 then runs one
    vectorised pass per output row (_row3x3; stride 1 or 2 both ways: all rows in one pass
    at the padded pitch, then copied out), other kernels one tap at a time over each output
    row (_axpy).  ``epilogue`` (mean, std, scale, bias, bn, has_scale,
    has_bias, relu, slope): the in-place BatchNorm [Scale] [ReLU] after the layer, applied to
    each output row as it is written (decaf.net_fuse; their operations, in their order)."""
    n_count, c = x.shape[0], x.shape[1]
    mult = y.shape[1] // max(1, c)
    nthreads = threads.get_num_threads()
    nblk = 1 if nthreads == 1 else min(max(1, mult), max(1, -(-2 * nthreads // max(1, n_count * c))))
    if epilogue is None:
        epilogue = _NO_EPILOGUE.get(y.dtype)
        if epilogue is None:
            none = np.empty(0, y.dtype)
            epilogue = _NO_EPILOGUE.setdefault(
                y.dtype, (none, none, none, none, False, False, False, False, y.dtype.type(0)))
    _depthwise_forward(x, w, bias, use_bias, sh, sw, ph, pw, dh, dw, y, nblk, *epilogue)


@kernel
def _depthwise_forward(x, w, bias, use_bias, sh, sw, ph, pw, dh, dw, y, nblk, mean, std,
                       scale, shift, bn, has_scale, has_bias, relu, slope):
    n_count, c = x.shape[0], x.shape[1]
    mult = y.shape[1] // c
    mb = -(-mult // nblk) if mult > 0 else 1
    for t in prange(n_count * c * nblk):
        nc, blk = t // nblk, t % nblk
        n, ch = nc // c, nc % c
        m0 = ch * mult + blk * mb
        m1 = min(m0 + mb, (ch + 1) * mult)
        if m0 >= m1:
            continue
        buf, split = _padded(x[n, ch], w, y, sh, sw, ph, pw, dh, dw)
        for m in range(m0, m1):
            b = bias[m] if use_bias else y.dtype.type(0)
            ep = (mean[m], std[m], scale[m] if has_scale else b, shift[m] if has_bias else b) \
                if bn else (b, b, b, b)
            _dw_plane(buf, split, w[m, 0], b, sh, sw, dh, dw, y[n, m], bn, ep, has_scale,
                      has_bias, relu, slope)


@njit(cache=True, inline="always")
def _epilogue(ys, bn, ep, has_scale, has_bias, relu, slope):
    """BatchNorm's (v - mean) / std, Scale's v * a + b, ReLU(slope): each when asked."""
    mu, sd, a, b = ep
    if bn:
        for q in range(ys.size):
            ys[q] = affine_relu((ys[q] - mu) / sd, a, b, has_scale, has_bias, relu, slope)
    elif relu:
        for q in range(ys.size):
            v = ys[q]
            ys[q] = v if v > 0 else v * slope


@njit(cache=True, inline="always")
def _padded(plane, w, y, sh, sw, ph, pw, dh, dw):
    """The plane in its zero border (large enough for every tap: Caffe's output size
    truncates toward zero, so a window may reach past the padding), and its column split."""
    height, width = plane.shape
    kh, kw, oh, ow = w.shape[2], w.shape[3], y.shape[2], y.shape[3]
    split = 2 if kh == 3 and kw == 3 and sw == 2 else 1
    hp = max(height + 2 * ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(width + 2 * pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    if split == 2 and sh == 2:
        return _polyphase(plane, ph, pw, hp, wp), 4
    buf = np.empty((hp, wp), plane.dtype)
    _pad_plane(plane, ph, pw, split, buf)
    return buf, split


@njit(cache=True, inline="always")
def _polyphase(plane, ph, pw, hp, wp):
    """The padded plane P (hp x wp) as its four stride-2 phases, stacked: rows
    (2 * (r % 2) + (q % 2)) * hh + r // 2, column q // 2 hold P[r, q] (hh = ceil(hp / 2)),
    so that every tap of a 3x3 stride-2 window is one fixed offset from its output's index
    at the pitch ceil(wp / 2) (_dw_plane)."""
    height, width = plane.shape
    hh, half = (hp + 1) // 2, (wp + 1) // 2
    buf = np.zeros((4 * hh, half), plane.dtype)
    for yy in range(height):
        r = yy + ph
        even, odd = buf[_u((r % 2) * 2 * hh + r // 2)], buf[_u(((r % 2) * 2 + 1) * hh + r // 2)]
        src = plane[_u(yy)]
        e0, e1 = (pw + 1) // 2, min(half, (width - 1 + pw) // 2 + 1)
        o0, o1 = pw // 2, min(wp // 2, (width - 2 + pw) // 2 + 1)
        f1 = max(e0, min(e1, o1))
        for k in range(e0, f1):           # both phases in one loop: LLVM's interleaved loads
            q = _u(2 * k - pw)
            even[_u(k)] = src[q]
            odd[_u(k)] = src[q + _u(1)]
        for k in range(f1, e1):
            even[_u(k)] = src[_u(2 * k - pw)]
        for k in range(o0, min(o1, e0)):
            odd[_u(k)] = src[_u(2 * k + 1 - pw)]
        for k in range(max(o0, f1), o1):
            odd[_u(k)] = src[_u(2 * k + 1 - pw)]
    return buf


@njit(cache=True, inline="always")
def _dw_plane(buf, split, wm, b, sh, sw, dh, dw, yp, bn, ep, has_scale, has_bias, relu,
              slope):
    """One output plane yp from the padded input plane buf, then the epilogue on each row
    (depthwise_forward)."""
    hp, wp = buf.shape
    kh, kw = wm.shape
    oh, ow = yp.shape
    three = kh == 3 and kw == 3
    half = (wp + 1) // 2 if split == 2 else 0
    c0, c1, c2 = 0, dw, 2 * dw
    if split == 2:            # tap j at padded column 2*ox + j*dw: even or odd half
        c1, c2 = dw // 2 + (dw % 2) * half, dw
    if split == 4:
        if oh > 0 and ow > 0:
            # 3x3 stride 2 over the phases (_polyphase, pitch wp here): tap (i, j) of output k
            # is element k + phase(i*dh, j*dw) start + ((i*dh) // 2) * wp + (j*dw) // 2
            ss = (hp // 4) * wp
            bf = buf.reshape(hp * wp)
            out = np.empty((oh - 1) * wp + ow, buf.dtype)
            out[:] = b
            _row3x3(bf, bf[(dh % 2) * 2 * ss + (dh // 2) * wp:], bf[dh * wp:], wm, out, 1,
                    0, (dw % 2) * ss + dw // 2, dw)
            for oy in range(oh):
                ys = yp[oy]
                for q in range(ow):
                    ys[_u(q)] = out[_u(oy * wp + q)]
                _epilogue(ys, bn, ep, has_scale, has_bias, relu, slope)
        return
    if three and sh == 1 and sw == 1 and oh > 0 and ow > 0:
        # tap (i, j) of output k (at the padded pitch wp) is element k + i*dh*wp + j*dw
        bf = buf.reshape(hp * wp)
        out = np.empty((oh - 1) * wp + ow, buf.dtype)
        out[:] = b
        _row3x3(bf, bf[dh * wp:], bf[2 * dh * wp:], wm, out, 1, c0, c1, c2)
        for oy in range(oh):
            ys = yp[oy]
            for q in range(ow):
                ys[_u(q)] = out[_u(oy * wp + q)]
        if bn or relu:
            for oy in range(oh):
                _epilogue(yp[oy], bn, ep, has_scale, has_bias, relu, slope)
        return
    for oy in range(oh):
        ys, r = yp[oy], oy * sh
        ys[:] = b
        if three and split == 2:
            _row3x3(buf[r], buf[r + dh], buf[r + 2 * dh], wm, ys, 1, c0, c1, c2)
        elif three:
            _row3x3(buf[r], buf[r + dh], buf[r + 2 * dh], wm, ys, sw, c0, c1, c2)
        else:
            for i in range(kh):
                row = buf[r + i * dh]
                for j in range(kw):
                    _axpy(ys, wm[i, j], row[j * dw:], sw)
        _epilogue(ys, bn, ep, has_scale, has_bias, relu, slope)


@kernel
def depthwise_backward_data(dy, w, sh, sw, ph, pw, dh, dw, dx):
    """dx[n, c, yy, xx] = sum over the outputs m of channel c, then oy, i, j, ox of
    w[m, 0, i, j] dy[n, m, oy, ox], yy = oy*sh - ph + i*dh, xx = ox*sw - pw + j*dw (the
    forward's transpose), from 0 in that order.  3x3 stride 1 gathers the same sums per
    pixel (m, then i descending, j ascending), interior rows and columns in one pass
    (_row3x3); otherwise one tap at a time over each row's span."""
    n_count, c, height, width = dx.shape
    m_count, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    mult = m_count // c
    gather = kh == 3 and kw == 3 and sh == 1 and sw == 1
    # gather: pixels whose taps yy + ph - i*dh (i < 3) all lie inside [0, oh), and columns
    rlo, rhi = min(max(2 * dh - ph, 0), height), min(oh - ph, height)
    clo, chi = min(max(2 * dw - pw, 0), width), min(ow - pw, width)
    rhi, chi = max(rlo, rhi), max(clo, chi)
    for t in prange(n_count * c):
        n, ch = t // c, t % c
        xp = dx[n, ch]
        xp[...] = 0
        for m in range(ch * mult, (ch + 1) * mult):
            gp, wm = dy[n, m], w[m, 0]
            if not gather:
                for oy in range(oh):
                    for i in range(kh):
                        yy = oy * sh - ph + i * dh
                        if yy < 0 or yy >= height:
                            continue
                        for j in range(kw):
                            xoff = j * dw - pw
                            lo, hi = _span(ow, xoff, sw, width)
                            if hi > lo:
                                _scatter(xp[yy, lo * sw + xoff:], wm[i, j], gp[oy, lo:hi], sw)
                continue
            for yy in range(height):
                xs, o0 = xp[yy], yy + ph
                inside = yy >= rlo and yy < rhi
                for xx in range(width):
                    if not inside or xx < clo or xx >= chi:
                        xs[xx] = _taps_back(gp, wm, xs[xx], o0, xx + pw, dh, dw)
                if inside and chi > clo:
                    q, e = clo + pw - 2 * dw, chi + pw
                    _row3x3(gp[o0 - 2 * dh, q:e], gp[o0 - dh, q:e], gp[o0, q:e],
                            wm[::-1], xs[clo:chi], 1, 2 * dw, dw, 0)


@njit(cache=True, inline="always")
def _scatter(xs, wv, ys, step):
    """xs[k*step] += wv * ys[k] (1-D views, indices from 0)."""
    if step == 1:
        for k in range(ys.size):
            xs[k] += wv * ys[k]
    else:
        for k in range(ys.size):
            xs[k * step] += wv * ys[k]


@kernel
def depthwise_backward_weights(dy, x, sh, sw, ph, pw, dh, dw, dwt, db, want_w, want_b):
    """dW[m, 0, i, j] += sum_n,oy,ox dy[n, m, oy, ox] x[n, m // mult, ...]; db[m] += sum dy."""
    n_count, c, height, width = x.shape
    m_count, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, kw = dwt.shape[2], dwt.shape[3]
    mult = m_count // c
    for m in prange(m_count):
        ch = m // mult
        if want_b:
            total = db.dtype.type(0)
            for n in range(n_count):
                for oy in range(oh):
                    for ox in range(ow):
                        total += dy[n, m, oy, ox]
            db[m] += total
        if not want_w:
            continue
        for i in range(kh):
            for j in range(kw):
                xoff = j * dw - pw
                lo, hi = _span(ow, xoff, sw, width)
                total = dwt.dtype.type(0)
                for n in range(n_count):
                    for oy in range(oh):
                        yy = oy * sh - ph + i * dh
                        if yy < 0 or yy >= height:
                            continue
                        if sw == 1:
                            for ox in range(lo, hi):
                                total += dy[n, m, oy, ox] * x[n, ch, yy, ox + xoff]
                        else:
                            for ox in range(lo, hi):
                                total += dy[n, m, oy, ox] * x[n, ch, yy, ox * sw + xoff]
                dwt[m, 0, i, j] += total


# -- the depthwise engines of decaf.layers.conv (group == channels) ------------------------
# Above this top size per image a post pass (decaf.net_fuse: a Pooling) runs image by image
POST_IMAGE_BYTES = 1 << 20


class DepthwiseConv:
    """2-D convolution with one input channel per group (group == C), as a direct loop:
    y[n, m] = b[m] + sum_ij W[m, 0, i, j] x[n, m / (M/C), oy*sh - ph + i*dh, ox*sw - pw + j*dw]
    (decaf.conv.depthwise_*)."""

    def __init__(self, dtype, geometry):
        _, stride, pad, dilation = geometry
        self.args = tuple(stride) + tuple(pad) + tuple(dilation)
        self.none = np.empty(0, dtype=dtype)

    def forward(self, x, w, bias, y, post=None, epilogue=None):
        """``epilogue``: see depthwise_forward; ``post(n0, n1)`` once images n0..n1 are done
        (image by image when an image's top is larger than POST_IMAGE_BYTES: in cache)."""
        b = self.none if bias is None else bias
        if post is None or y[:1].nbytes <= POST_IMAGE_BYTES:
            depthwise_forward(x, w, b, bias is not None, *self.args, y, epilogue)
            if post is not None:
                post(0, x.shape[0])
            return
        for n in range(x.shape[0]):
            depthwise_forward(x[n:n + 1], w, b, bias is not None, *self.args, y[n:n + 1],
                              epilogue)
            post(n, n + 1)

    def backward(self, ydiff, x, w, dw, db, xdiff):
        if dw is not None or db is not None:
            depthwise_backward_weights(
                ydiff, x, *self.args, self.none.reshape(1, 1, 1, 0) if dw is None else dw,
                self.none if db is None else db, dw is not None, db is not None)
        if xdiff is not None:
            depthwise_backward_data(ydiff, w, *self.args, xdiff)


class DepthwiseDeconv:
    """2-D deconvolution with one output channel per group (group == num_output): the
    transpose of a depthwise convolution from the top to the bottom, as direct loops:
    top = depthwise^T(bottom) + b, bottom_diff = depthwise(top_diff), dW += bottom (*) top_diff."""

    def __init__(self, dtype, geometry):
        _, stride, pad, dilation = geometry
        self.args = tuple(stride) + tuple(pad) + tuple(dilation)
        self.none = np.empty(0, dtype=dtype)

    def forward(self, x, w, bias, y):
        depthwise_backward_data(x, w, *self.args, y)
        if bias is not None:
            add_bias(y.reshape(y.shape[0], y.shape[1], -1), bias)

    def backward(self, ydiff, x, w, dw, db, xdiff):
        if db is not None:
            bias_grad(ydiff.reshape(ydiff.shape[0], ydiff.shape[1], -1), db)
        if dw is not None:
            depthwise_backward_weights(x, ydiff, *self.args, dw, self.none, True, False)
        if xdiff is not None:
            depthwise_forward(ydiff, w, self.none, False, *self.args, xdiff)
