"""Max and average pooling over NCHW planes: Caffe's loops, compiled (Numba).

Windows (per axis): start = o*s - p; MAX clips the window to [0, H); AVE divides by Caffe's
pool_size, the window clipped to [-p, H + p) only, then sums over the part inside [0, H).
Every kernel runs in parallel over the N*C planes (no two threads write the same plane, so
the result does not depend on the thread count).  MAX visits the cells of a window in
Caffe's (h, w) order with a compare and two selects, so the strict ``>`` keeps Caffe's first
maximum (NaN never wins; a window with no number above -FLT_MAX keeps -FLT_MAX and mask -1).
AVE sums in the bottom's dtype in the same order, then divides, as Caffe does.
Forward: windows wholly inside the plane run as one loop per output row, 2x2 and 3x3
unrolled (constant trip counts, ~1.5-2x faster); clipped windows (pad, ceil edge) run the
clipped loop.  Same cells, same order either way.  3x3 stride 2 over wide rows (at least
``SEPARABLE_MIN_WIDTH`` full windows) runs separably instead: each input row split into its
even and odd columns, the max of each window's 3 cells in that row (w ascending), then of the
3 row maxima (h ascending), every loop unit-stride, so LLVM vectorizes it (a stride-2 window
loop stays scalar).  The strict ``>`` in both passes keeps the first maximum in (h, w) order,
so top and mask are Caffe's exactly (WeChat's 24 x 192 x 192 pool: 2.6 -> 0.85 ms).
``want_mask`` False (a TEST-phase layer whose backward never runs) writes the top alone:
the same selects on the values, no index (15-25 % faster, benchmarks/NOTES.md section 13).
"""
from . import threads  # noqa: F401  (Numba's environment before its first import)

import numpy as np
from .jit import kernel, u as _u
from numba import njit, prange

FLT_MAX = float(np.finfo(np.float32).max)
# Full windows per output row from which 3x3 stride-2 max pooling runs separably (narrower
# rows: the unrolled window loop, which has less per-row overhead; CIFAR's 15 was 2.4x slower)
SEPARABLE_MIN_WIDTH = 32


@njit(cache=True, inline="always")
def _pick(xs, q, best, idx):
    """Caffe's step: a cell replaces the best only if strictly greater (a select, no branch)."""
    v = xs[_u(q)]
    better = v > best
    return (v if better else best), (q if better else idx)


@njit(cache=True, inline="always")
def _full(k, s, p, size, count):
    """[first, end) of the outputs whose window lies wholly inside [0, size) (empty if none)."""
    first = (p + s - 1) // s
    return first, max(first, min(count, (size + p - k) // s + 1))


@njit(cache=True, inline="always")
def _max_clipped(xs, a, b, kh, kw, sh, sw, ph, pw, height, width, neg):
    """Max of window (a, b) clipped to the plane, cells in Caffe's (h, w) order."""
    hs, ws = a * sh - ph, b * sw - pw
    he, we = min(hs + kh, height), min(ws + kw, width)
    hs, ws = max(hs, 0), max(ws, 0)
    best, idx = neg, -1
    for y in range(hs, he):
        for q in range(y * width + ws, y * width + we):
            best, idx = _pick(xs, q, best, idx)
    return best, idx


@njit(cache=True, inline="always")
def _max_full_row(xs, ts, ms, a, b0, b1, kh, kw, sh, sw, ph, pw, width, ow, neg,
                  want_mask):
    """Windows b0 <= b < b1 of output row a, all wholly inside the plane; 2x2 and 3x3
    unrolled (constant trip counts: ~1.5x faster, benchmarks/pool_micro.py)."""
    row = (a * sh - ph) * width - pw
    if kh == 3 and kw == 3:
        for b in range(b0, b1):
            q = row + b * sw
            best, idx = neg, -1
            for _ in range(3):
                best, idx = _pick(xs, q, best, idx)
                best, idx = _pick(xs, q + 1, best, idx)
                best, idx = _pick(xs, q + 2, best, idx)
                q += width
            ts[_u(a * ow + b)] = best
            if want_mask:
                ms[_u(a * ow + b)] = idx
    elif kh == 2 and kw == 2:
        for b in range(b0, b1):
            q = row + b * sw
            best, idx = _pick(xs, q, neg, -1)
            best, idx = _pick(xs, q + 1, best, idx)
            best, idx = _pick(xs, q + width, best, idx)
            best, idx = _pick(xs, q + width + 1, best, idx)
            ts[_u(a * ow + b)] = best
            if want_mask:
                ms[_u(a * ow + b)] = idx
    else:
        for b in range(b0, b1):
            q = row + b * sw
            best, idx = neg, -1
            for y in range(kh):
                for i in range(q + y * width, q + y * width + kw):
                    best, idx = _pick(xs, i, best, idx)
            ts[_u(a * ow + b)] = best
            if want_mask:
                ms[_u(a * ow + b)] = idx


@njit(cache=True, inline="always")
def _pick3(v0, i0, v1, i1, v2, i2, neg):
    """The first of three (value, index) pairs strictly above all before it, from -FLT_MAX."""
    best, idx = neg, np.int32(-1)
    better = v0 > best
    best, idx = (v0 if better else best), (i0 if better else idx)
    better = v1 > best
    best, idx = (v1 if better else best), (i1 if better else idx)
    better = v2 > best
    return (v2 if better else best), (i2 if better else idx)


@njit(cache=True, inline="always")
def _top3(v0, v1, v2, neg):
    """_pick3's value alone (no mask): the same strict > selects, from -FLT_MAX."""
    best = v0 if v0 > neg else neg
    best = v1 if v1 > best else best
    return v2 if v2 > best else best


@njit(cache=True)
def _max3s2_plane(xs, ts, ms, a0, a1, b0, b1, ph, pw, width, ow, neg, want_mask):
    """Outputs [a0, a1) x [b0, b1) of a 3x3 stride-2 max pooling (all windows inside the
    plane), separably: each input row's three-wide maxima (columns 2b - pw + 0, 1, 2, in
    that order), then the three rows' (in order), Caffe's strict > from -FLT_MAX at each
    step, so the first maximum in window order wins as in the window loop.  Flat unsigned
    indices (``_u``): with signed ones LLVM vectorised these loops only when the plane's
    sizes were compile-time constants (WeChat stage2: 10.3 -> 3.5 ms)."""
    nb = b1 - b0
    y0, y1 = 2 * a0 - ph, 2 * (a1 - 1) - ph + 3
    hv = np.empty((y1 - y0) * nb, xs.dtype)
    hi = np.empty((y1 - y0) * nb if want_mask else 0, np.int32)
    w0 = 2 * b0 - pw                      # the first window's first column
    for y in range(y0, y1):
        base = _u(y * width + w0)
        h = _u((y - y0) * nb)
        if want_mask:
            for k in range(nb):
                q = base + _u(2 * k)
                i = np.int32(q)
                hv[h + _u(k)], hi[h + _u(k)] = _pick3(xs[q], i, xs[q + _u(1)], i + 1,
                                                      xs[q + _u(2)], i + 2, neg)
        else:
            for k in range(nb):
                q = base + _u(2 * k)
                hv[h + _u(k)] = _top3(xs[q], xs[q + _u(1)], xs[q + _u(2)], neg)
    for a in range(a0, a1):
        r0 = _u((2 * a - ph - y0) * nb)
        r1, r2 = r0 + _u(nb), r0 + _u(2 * nb)
        t0 = _u(a * ow + b0)
        if want_mask:
            for k in range(nb):
                ts[t0 + _u(k)], ms[t0 + _u(k)] = _pick3(
                    hv[r0 + _u(k)], hi[r0 + _u(k)], hv[r1 + _u(k)], hi[r1 + _u(k)],
                    hv[r2 + _u(k)], hi[r2 + _u(k)], neg)
        else:
            for k in range(nb):
                ts[t0 + _u(k)] = _top3(hv[r0 + _u(k)], hv[r1 + _u(k)], hv[r2 + _u(k)], neg)


@kernel
def max_forward(x, kh, kw, sh, sw, ph, pw, top, mask, want_mask=True):
    """top[n, c, a, b] = max of the window (Caffe's init -FLT_MAX, strict >); mask: its
    plane index h * W + w (int32, -1 for none).  Windows wholly inside the plane take the
    unrolled (or, 3x3 stride 2 on wide rows, the separable) path, the clipped ones (pad,
    ceil edge) the clipped loop."""
    n, c, height, width = x.shape
    oh, ow = top.shape[2], top.shape[3]
    neg = x.dtype.type(-FLT_MAX)
    xf = x.reshape(n * c, height * width)
    tf, mf = top.reshape(n * c, oh * ow), mask.reshape(n * c, oh * ow)
    a0, a1 = _full(kh, sh, ph, height, oh)
    b0, b1 = _full(kw, sw, pw, width, ow)
    separable = (kh == 3 and kw == 3 and sh == 2 and sw == 2 and a1 > a0
                 and b1 - b0 >= SEPARABLE_MIN_WIDTH)
    for p in prange(n * c):
        xs, ts, ms = xf[p], tf[p], mf[p]
        for a in range(oh):
            lo, hi = (b0, b1) if a0 <= a < a1 else (0, 0)
            for b in range(lo):
                ts[_u(a * ow + b)], idx = _max_clipped(
                    xs, a, b, kh, kw, sh, sw, ph, pw, height, width, neg)
                if want_mask:
                    ms[_u(a * ow + b)] = idx
            for b in range(hi, ow):
                ts[_u(a * ow + b)], idx = _max_clipped(
                    xs, a, b, kh, kw, sh, sw, ph, pw, height, width, neg)
                if want_mask:
                    ms[_u(a * ow + b)] = idx
            if not separable:
                _max_full_row(xs, ts, ms, a, lo, hi, kh, kw, sh, sw, ph, pw, width, ow, neg,
                              want_mask)
        if separable:
            _max3s2_plane(xs, ts, ms, a0, a1, b0, b1, ph, pw, width, ow, neg, want_mask)


@kernel
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
                ds[_u(ms[o])] += ts[o]


@njit(cache=True, inline="always")
def _window(o, k, s, p, size):
    """(first, end, pool_size extent) of window o along one axis (Caffe's AVE clipping)."""
    start = o * s - p
    end = min(start + k, size + p)
    return max(start, 0), min(end, size), end - start


@njit(cache=True, inline="always")
def _ave_clipped(xs, a, b, kh, kw, sh, sw, ph, pw, height, width):
    """Window (a, b) summed inside the plane in Caffe's (h, w) order, over pool_size."""
    hs, he, size_h = _window(a, kh, sh, ph, height)
    ws, we, size_w = _window(b, kw, sw, pw, width)
    total = xs.dtype.type(0)
    for y in range(hs, he):
        for q in range(y * width + ws, y * width + we):
            total += xs[_u(q)]
    return total / (size_h * size_w)


@njit(cache=True, inline="always")
def _ave_full_row(xs, ts, a, b0, b1, kh, kw, sh, sw, ph, pw, width, ow):
    """Windows b0 <= b < b1 of output row a, wholly inside the plane (pool_size kh * kw);
    2x2 and 3x3 unrolled, summed from 0 in Caffe's order."""
    row, size = (a * sh - ph) * width - pw, kh * kw
    zero = xs.dtype.type(0)
    if kh == 3 and kw == 3:
        for b in range(b0, b1):
            q, total = row + b * sw, zero
            for _ in range(3):
                total += xs[_u(q)]
                total += xs[_u(q + 1)]
                total += xs[_u(q + 2)]
                q += width
            ts[_u(a * ow + b)] = total / size
    elif kh == 2 and kw == 2:
        for b in range(b0, b1):
            q, total = row + b * sw, zero
            total += xs[_u(q)]
            total += xs[_u(q + 1)]
            total += xs[_u(q + width)]
            total += xs[_u(q + width + 1)]
            ts[_u(a * ow + b)] = total / size
    else:
        for b in range(b0, b1):
            q, total = row + b * sw, zero
            for y in range(kh):
                for i in range(q + y * width, q + y * width + kw):
                    total += xs[_u(i)]
            ts[_u(a * ow + b)] = total / size


@kernel
def ave_forward(x, kh, kw, sh, sw, ph, pw, top):
    """top = (sum of the window inside the bottom) / pool_size, summed in Caffe's order;
    whole windows unrolled as in max_forward."""
    n, c, height, width = x.shape
    oh, ow = top.shape[2], top.shape[3]
    xf, tf = x.reshape(n * c, height * width), top.reshape(n * c, oh * ow)
    a0, a1 = _full(kh, sh, ph, height, oh)
    b0, b1 = _full(kw, sw, pw, width, ow)
    for p in prange(n * c):
        xs, ts = xf[p], tf[p]
        for a in range(oh):
            lo, hi = (b0, b1) if a0 <= a < a1 else (0, 0)
            for b in range(lo):
                ts[_u(a * ow + b)] = _ave_clipped(xs, a, b, kh, kw, sh, sw, ph, pw, height, width)
            for b in range(hi, ow):
                ts[_u(a * ow + b)] = _ave_clipped(xs, a, b, kh, kw, sh, sw, ph, pw, height, width)
            _ave_full_row(xs, ts, a, lo, hi, kh, kw, sh, sw, ph, pw, width, ow)


@kernel
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
                        ds[_u(q)] += g
