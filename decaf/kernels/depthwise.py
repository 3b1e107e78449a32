"""Depthwise convolution (one input channel per group, group == C: MobileNet-style nets and
one-channel input layers) as direct loops on NCHW arrays, compiled (Numba): no columns, no
GEMM.

* ``depthwise_forward``: y = b + W (*) x per plane, 3x3 vectorised over whole planes (stride 1,
  and stride 2 by its four phases), with an optional in-place BatchNorm / Scale / ReLU epilogue
  per output row (decaf.net_fuse).
* ``depthwise_backward_data`` / ``depthwise_backward_weights``: its adjoints.
* ``DepthwiseConv`` / ``DepthwiseDeconv``: the engines of decaf.layers.conv that call them.

Every kernel runs in parallel over planes that no other iteration writes, so the result does
not depend on the thread count; sums run in the arrays' dtype.
"""
from . import threads

import numpy as np
from numba import njit, prange

from .conv import _span, add_bias, bias_grad
from .inplace import affine_relu
from .jit import kernel, u as _u


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
    (the depthwise_* kernels above)."""

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
