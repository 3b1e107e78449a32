"""Micro-benchmark of the depthwise convolution kernels (decaf.kernels.depthwise.depthwise_*): the
4-D indexed loops before (copied here) against the current ones, interleaved in one run (the
machine is shared: only the in-run ratio means anything).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
        python benchmarks/depthwise_micro.py [calls]

Prints the median ms of `calls` (default 200) calls per kernel after a warm-up (forward and
backward data; the weight gradient's kernel did not change), float32, and how far the two
kernels' results lie apart (max abs difference; both keep the old sums' order: 0).
"""
import os
import sys
import time

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from decaf.kernels import depthwise as K, threads  # noqa: E402
from decaf.kernels.im2col import conv_output_shape  # noqa: E402

SHAPES = [  # bottom, kernel, stride, pad, dilation
    ((1, 16, 48, 48), 3, 1, 1, 1),
    ((1, 32, 24, 24), 3, 1, 1, 1),
    ((1, 16, 96, 96), 3, 2, 1, 1),
    ((1, 32, 48, 48), 3, 2, 1, 1),
    ((1, 64, 12, 12), 3, 1, 1, 1),
    ((1, 32, 12, 12), 3, 1, 2, 2),      # WeChat detector's dilated stage
    ((1, 32, 24, 24), 5, 1, 2, 1),      # the general (non-3x3) path
    ((8, 32, 24, 24), 3, 1, 1, 1),
]


@njit(error_model="numpy")
def old_forward(x, w, bias, use_bias, sh, sw, ph, pw, dh, dw, y):
    """Before: y[n, m] = b[m] + sum_ij w[m, 0, i, j] x[n, m // mult, oy*sh - ph + i*dh, ...]."""
    n_count, c, height, width = x.shape
    m_count, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    mult = m_count // c
    for t in prange(n_count * m_count):
        n, m = t // m_count, t % m_count
        ch = m // mult
        b = bias[m] if use_bias else y.dtype.type(0)
        for oy in range(oh):
            for ox in range(ow):
                y[n, m, oy, ox] = b
            for i in range(kh):
                yy = oy * sh - ph + i * dh
                if yy < 0 or yy >= height:
                    continue
                for j in range(kw):
                    xoff = j * dw - pw
                    lo, hi = K._span(ow, xoff, sw, width)
                    wv = w[m, 0, i, j]
                    if sw == 1:
                        for ox in range(lo, hi):
                            y[n, m, oy, ox] += wv * x[n, ch, yy, ox + xoff]
                    else:
                        for ox in range(lo, hi):
                            y[n, m, oy, ox] += wv * x[n, ch, yy, ox * sw + xoff]


@njit(error_model="numpy")
def old_backward_data(dy, w, sh, sw, ph, pw, dh, dw, dx):
    """dx[n, c] = sum over the outputs m of channel c of W[m]-weighted top diffs."""
    n_count, c, height, width = dx.shape
    m_count, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    mult = m_count // c
    for t in prange(n_count * c):
        n, ch = t // c, t % c
        for y in range(height):
            for xx in range(width):
                dx[n, ch, y, xx] = 0
        for m in range(ch * mult, (ch + 1) * mult):
            for oy in range(oh):
                for i in range(kh):
                    yy = oy * sh - ph + i * dh
                    if yy < 0 or yy >= height:
                        continue
                    for j in range(kw):
                        xoff = j * dw - pw
                        lo, hi = K._span(ow, xoff, sw, width)
                        wv = w[m, 0, i, j]
                        if sw == 1:
                            for ox in range(lo, hi):
                                dx[n, ch, yy, ox + xoff] += wv * dy[n, m, oy, ox]
                        else:
                            for ox in range(lo, hi):
                                dx[n, ch, yy, ox * sw + xoff] += wv * dy[n, m, oy, ox]


def timed(fns, calls):
    times = [[] for _ in fns]
    for _ in range(5):
        for f in fns:
            f()
    for _ in range(calls):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return [1e3 * np.median(t) for t in times]


def bench(shape, k, s, p, d, calls):
    rs = np.random.RandomState(0)
    n, c = shape[:2]
    x = rs.standard_normal(shape).astype(np.float32)
    w = rs.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rs.standard_normal(c).astype(np.float32)
    out = (n, c) + tuple(conv_output_shape(shape[2:], (k, k), (s, s), (p, p), (d, d)))
    g = (s, s, p, p, d, d)
    dy = rs.standard_normal(out).astype(np.float32)
    ys = [np.empty(out, np.float32) for _ in range(2)]
    dxs = [np.empty(shape, np.float32) for _ in range(2)]
    rows = [("fwd", [lambda: old_forward(x, w, b, True, *g, ys[0]),
                     lambda: K.depthwise_forward(x, w, b, True, *g, ys[1])], ys),
            ("bwd data", [lambda: old_backward_data(dy, w, *g, dxs[0]),
                          lambda: K.depthwise_backward_data(dy, w, *g, dxs[1])], dxs)]
    name = f"{shape[0]}x{c}x{shape[2]}x{shape[3]} {k}x{k} s{s} p{p} d{d}"
    for what, fns, outs in rows:
        old, new = timed(fns, calls)
        tag = f"abs {np.abs(outs[0] - outs[1]).max():.1e}"
        print(f"| {name} | {what} | {old:.3f} | {new:.3f} | {old / new:.2f}x | {tag} |",
              flush=True)


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(f"threads: {threads.get_num_threads()}")
    print("| shape | pass | old ms | new ms | old / new | new - old |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for row in SHAPES:
        bench(*row, calls)


if __name__ == "__main__":
    main()
