"""Micro-benchmark: the elementwise kernels called in place (top is bottom) against the same
call out of place, 1M float32 values as (4, 64, 4096) (benchmarks/NOTES.md, section 10: in
place used to run LLVM's scalar fallback, 3-9x slower).

    OMP_NUM_THREADS=1 python benchmarks/inplace_micro.py

Prints the median ms of 30 calls after one warm-up call, in place and out of place.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import decaf  # noqa: E402,F401  (applies the thread policy)
from decaf.kernels import batchnorm as BN, elementwise as E, eltwise as W  # noqa: E402

F = np.float32
SHAPE = (4, 64, 4096)


def median_ms(fn, calls=30):
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def cases(x, d, y):
    rs = np.random.RandomState(1)
    c = SHAPE[1]
    s, b = (rs.rand(c) + 0.5).astype(F), rs.rand(c).astype(F)
    mean, std = rs.rand(c).astype(F), s + 1
    xf, df, yf = x.reshape(-1), d.reshape(-1), y.reshape(-1)
    z = F(0)
    return {  # name: (in place, out of place)
        "relu_forward": (lambda: E.relu_forward(xf, xf, z), lambda: E.relu_forward(xf, yf, z)),
        "relu_backward": (lambda: E.relu_backward(xf, df, df, z),
                          lambda: E.relu_backward(xf, df, yf, z)),
        "affine_forward": (lambda: E.affine_forward(x, s, b, x, True, True, False, z),
                           lambda: E.affine_forward(x, s, b, y, True, True, False, z)),
        "affine_forward + relu": (lambda: E.affine_forward(x, s, b, x, True, True, True, z),
                                  lambda: E.affine_forward(x, s, b, y, True, True, True, z)),
        "scale_backward dx": (
            lambda: E.scale_backward(x, d, s, s.copy(), b.copy(), d, False, False, True),
            lambda: E.scale_backward(x, d, s, s.copy(), b.copy(), y, False, False, True)),
        "eltwise sum2 + relu": (lambda: W.sum2(xf, F(1), df, F(1), xf, True, z),
                                lambda: W.sum2(xf, F(1), df, F(1), yf, True, z)),
        "bn normalize": (lambda: BN.normalize(x, mean, std, x, x, False),
                         lambda: BN.normalize(x, mean, std, y, y, False)),
        "bn normalize_affine + relu": (
            lambda: BN.normalize_affine(x, mean, std, s, b, x, True, True, True, z, x, False),
            lambda: BN.normalize_affine(x, mean, std, s, b, y, True, True, True, z, y, False)),
        "bn backward, global stats": (lambda: BN.backward(x, d, std, d, True),
                                      lambda: BN.backward(x, d, std, y, True)),
        "bn backward, batch stats": (lambda: BN.backward(x, d, std, d, False),
                                     lambda: BN.backward(x, d, std, y, False)),
    }


def main():
    rs = np.random.RandomState(0)
    x, d = rs.standard_normal(SHAPE).astype(F), rs.standard_normal(SHAPE).astype(F)
    y = np.empty_like(x)
    print("| kernel | in place ms | out of place ms |\n| --- | ---: | ---: |")
    for name, (inplace, outplace) in cases(x, d, y).items():
        x[...] = rs.standard_normal(SHAPE)
        d[...] = rs.standard_normal(SHAPE)
        print("| %s | %.3f | %.3f |" % (name, median_ms(inplace), median_ms(outplace)))


if __name__ == "__main__":
    main()
