"""Micro-benchmark of the pooling forward kernels: the per-window scalar loops (before,
copied here) against decaf.kernels.pooling, interleaved in one run (the machine is shared:
only the in-run ratio means anything).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/pool_micro.py [calls]
    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=2 python benchmarks/pool_micro.py [calls]

Prints the median ms of `calls` (default 50) calls per kernel after a warm-up, and checks
that both kernels give the same top and mask.
"""
import sys
import time

import numpy as np
from numba import njit, prange

from decaf.kernels import pooling, threads
from decaf.layers.pooling import pooled_size

FLT_MAX = pooling.FLT_MAX
SHAPES = [  # name, bottom, method, kernel, stride
    ("cifar pool1", (100, 32, 32, 32), "max", 3, 2),
    ("cifar pool2", (100, 32, 16, 16), "ave", 3, 2),
    ("cifar pool2 as max", (100, 32, 16, 16), "max", 3, 2),
    ("cifar pool3", (100, 64, 8, 8), "ave", 3, 2),
    ("lenet pool1", (64, 20, 24, 24), "max", 2, 2),
    ("lenet pool2", (64, 50, 8, 8), "max", 2, 2),
]


@njit(parallel=True)
def old_max_forward(x, kh, kw, sh, sw, ph, pw, top, mask):
    """The kernel before (per-window scalar loop, compare and two selects)."""
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
                        better = v > best
                        best = v if better else best
                        idx = q if better else idx
                ts[a * ow + b] = best
                ms[a * ow + b] = idx


@njit(parallel=True)
def old_ave_forward(x, kh, kw, sh, sw, ph, pw, top):
    """The kernel before (per-window scalar sum)."""
    n, c, height, width = x.shape
    oh, ow = top.shape[2], top.shape[3]
    xf, tf = x.reshape(n * c, height * width), top.reshape(n * c, oh * ow)
    for p in prange(n * c):
        xs, ts = xf[p], tf[p]
        for a in range(oh):
            hs = a * sh - ph
            he = min(hs + kh, height + ph)
            size_h = he - hs
            hs, he = max(hs, 0), min(he, height)
            for b in range(ow):
                ws = b * sw - pw
                we = min(ws + kw, width + pw)
                size_w = we - ws
                ws, we = max(ws, 0), min(we, width)
                total = x.dtype.type(0)
                for y in range(hs, he):
                    for q in range(y * width + ws, y * width + we):
                        total += xs[q]
                ts[a * ow + b] = total / (size_h * size_w)


def bench(name, shape, method, k, s, calls):
    x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
    out = tuple(pooled_size(n, k, s, 0) for n in shape[2:])
    geom = (k, k, s, s, 0, 0)
    tops = [np.empty(shape[:2] + out, np.float32) for _ in range(2)]
    masks = [np.empty(shape[:2] + out, np.int32) for _ in range(2)]
    if method == "max":
        fns = [lambda: old_max_forward(x, *geom, tops[0], masks[0]),
               lambda: pooling.max_forward(x, *geom, tops[1], masks[1])]
    else:
        fns = [lambda: old_ave_forward(x, *geom, tops[0]),
               lambda: pooling.ave_forward(x, *geom, tops[1])]
    times = [[], []]
    for _ in range(5):
        for f in fns:
            f()
    for _ in range(calls):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    np.testing.assert_array_equal(tops[0], tops[1])
    if method == "max":
        np.testing.assert_array_equal(masks[0], masks[1])
    old, new = (1e3 * np.median(t) for t in times)
    print(f"| {name} | {shape} {method.upper()} {k}x{k}/{s} | {old:.2f} | {new:.2f} "
          f"| {old / new:.2f}x |", flush=True)


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(f"threads: {threads.get_num_threads()}")
    print("| layer | shape | old ms | new ms | old / new |")
    print("| --- | --- | --- | --- | --- |")
    for row in SHAPES:
        bench(*row, calls)


if __name__ == "__main__":
    main()
