"""The pooling kernels (decaf/kernels/pooling.py) against Caffe's loops in float64: pad,
stride > kernel, ceil windows that start in the padding, ties, NaN / inf, thread counts."""
import itertools

import numpy as np
import pytest

from decaf.kernels import pooling, threads
from decaf.layers.pooling import pooled_size

FLT_MAX = pooling.FLT_MAX


def out_shape(shape, k, s, p):
    """Caffe's pooled size with its rule: no window may start in the bottom padding."""
    out = [pooled_size(n, kk, ss, pp) for n, kk, ss, pp in zip(shape[2:], k, s, p)]
    if p != (0, 0):
        out = [o - 1 if (o - 1) * ss >= n + pp else o
               for o, n, ss, pp in zip(out, shape[2:], s, p)]
    return tuple(out)


def ref_pool(x, k, s, p, out, dy):
    """Caffe's MAX and AVE loops: (max top, mask, max bottom diff, ave top, ave bottom diff)."""
    n, c, h, w = x.shape
    top, mask = np.full((n, c) + out, -FLT_MAX), np.full((n, c) + out, -1)
    ave, dmax, dave = np.zeros((n, c) + out), np.zeros(x.shape), np.zeros(x.shape)
    for i, j, a, b in itertools.product(range(n), range(c), range(out[0]), range(out[1])):
        hs, ws = a * s[0] - p[0], b * s[1] - p[1]
        size = (min(hs + k[0], h + p[0]) - hs) * (min(ws + k[1], w + p[1]) - ws)
        hs, ws = max(hs, 0), max(ws, 0)
        he, we = min(a * s[0] - p[0] + k[0], h), min(b * s[1] - p[1] + k[1], w)
        total = 0.0
        for y, z in itertools.product(range(hs, he), range(ws, we)):
            total += x[i, j, y, z]
            dave[i, j, y, z] += dy[i, j, a, b] / size if size else np.nan
            if x[i, j, y, z] > top[i, j, a, b]:
                top[i, j, a, b], mask[i, j, a, b] = x[i, j, y, z], y * w + z
        with np.errstate(divide="ignore", invalid="ignore"):
            ave[i, j, a, b] = np.float64(total) / size
        if mask[i, j, a, b] >= 0:
            dmax[i, j, mask[i, j, a, b] // w, mask[i, j, a, b] % w] += dy[i, j, a, b]
    return top, mask, dmax, ave, dave


def run(x, k, s, p, out, dy):
    top, mask = np.empty(x.shape[:2] + out, x.dtype), np.empty(x.shape[:2] + out, np.int32)
    dmax, ave, dave = np.full_like(x, 7.0), np.empty_like(top), np.full_like(x, 7.0)
    geom = tuple(k) + tuple(s) + tuple(p)
    pooling.max_forward(x, *geom, top, mask)
    pooling.max_backward(dy, mask, dmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooling.ave_forward(x, *geom, ave)
        pooling.ave_backward(dy, *geom, dave)
    return top, mask, dmax, ave, dave


POOLS = [  # shape, kernel, stride, pad
    ((2, 3, 8, 8), (3, 3), (2, 2), (0, 0)),      # CIFAR's pool1: overlapping, ceil edge window
    ((1, 2, 6, 6), (2, 2), (2, 2), (0, 0)),      # LeNet's: disjoint
    ((2, 2, 7, 8), (3, 3), (2, 2), (1, 1)),      # pad
    ((1, 2, 9, 8), (3, 2), (2, 2), (1, 0)),      # non-square kernel, pad on one axis
    ((1, 1, 6, 6), (1, 1), (3, 3), (0, 0)),      # stride > kernel: a window past the bottom
    ((2, 2, 5, 6), (4, 3), (1, 3), (1, 1)),
    ((1, 2, 4, 5), (2, 2), (3, 3), (1, 1)),      # ceil windows that would start in the pad
    ((1, 1, 3, 3), (4, 4), (2, 2), (0, 0)),      # kernel larger than the bottom
    ((2, 3, 5, 4), (5, 4), (1, 1), (0, 0)),      # global
    ((2, 2, 9, 9), (2, 2), (2, 2), (1, 1)),      # the unrolled 2x2 path beside clipped windows
    ((1, 2, 7, 9), (3, 3), (1, 1), (0, 0)),      # the unrolled 3x3 path, stride 1
    ((1, 2, 10, 9), (4, 3), (2, 3), (0, 0)),     # whole windows of another size
    # 3x3 stride 2 over rows of >= SEPARABLE_MIN_WIDTH full windows: the separable path,
    # both column parities (pad even / odd), ceil edge and padding around it
    ((1, 2, 7, 70), (3, 3), (2, 2), (0, 0)),
    ((2, 1, 8, 71), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 9, 72), (3, 3), (2, 2), (2, 2)),
    ((1, 1, 6, 69), (3, 3), (2, 2), (1, 0)),
]


@pytest.mark.parametrize("data", ["random", "ties", "special"])
@pytest.mark.parametrize("shape,k,s,p", POOLS)
def test_pooling_kernels_match_caffe_loops(shape, k, s, p, data):
    rng = np.random.RandomState(3)
    x = rng.standard_normal(shape)
    if data == "ties":                            # few distinct values: the first max wins
        x = np.round(x * 0.7)
    elif data == "special":
        x = np.round(x * 0.7)
        x[0, 0, :k[0], :k[1]] = np.nan            # NaN never wins; an all-NaN window
        x[-1, -1, -2:, -2:] = -np.inf             # -inf never beats -FLT_MAX
        x[0, -1, 1, 1] = np.inf
    out = out_shape(shape, k, s, p)
    dy = rng.standard_normal(shape[:2] + out)
    want = ref_pool(x, k, s, p, out, dy)
    got = run(x, k, s, p, out, dy)
    names = ["max", "mask", "max backward", "ave", "ave backward"]
    for name, g, w in zip(names, got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10, err_msg=name)
    # without the mask (a TEST-phase layer): the same top, the mask buffer left untouched
    top, mask = np.empty_like(got[0]), np.full(got[1].shape, 12345, np.int32)
    pooling.max_forward(x, *(tuple(k) + tuple(s) + tuple(p)), top, mask, False)
    np.testing.assert_allclose(top, want[0], rtol=1e-10, atol=1e-10, err_msg="max, no mask")
    assert (mask == 12345).all()
    if data == "random":                          # the same in float32, to its rounding
        got32 = run(x.astype(np.float32), k, s, p, out, dy.astype(np.float32))
        np.testing.assert_array_equal(got32[1], want[1])
        for g, w in zip(got32, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_pooling_does_not_depend_on_the_thread_count():
    x = np.random.RandomState(0).standard_normal((4, 8, 12, 12)).astype(np.float32)
    k, s, p = (3, 3), (2, 2), (1, 1)
    out = out_shape(x.shape, k, s, p)
    dy = np.random.RandomState(1).standard_normal(x.shape[:2] + out).astype(np.float32)
    before = threads.get_num_threads()
    try:
        threads.set_num_threads(1)
        one = run(x, k, s, p, out, dy)
        threads.set_num_threads(2)
        two = run(x, k, s, p, out, dy)
    finally:
        threads.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_the_wide_cases_take_the_separable_path():
    wide = [(shape, p) for shape, k, s, p in POOLS
            if k == (3, 3) and s == (2, 2) and shape[3] > 60]
    assert len(wide) == 4
    for shape, p in wide:
        ow = out_shape(shape, (3, 3), (2, 2), p)[1]
        b0, b1 = pooling._full(3, 2, p[1], shape[3], ow)
        assert b1 - b0 >= pooling.SEPARABLE_MIN_WIDTH
