"""decaf.kernels.eltwise against plain float64 references (1e-10); Caffe's tie and NaN rules."""
import numpy as np
import pytest

from decaf.kernels import eltwise as ek


def _data(seed=0, n=50000):
    rs = np.random.RandomState(seed)
    a, b, c = rs.randn(n), rs.randn(n), rs.randn(n)
    a[:6] = [np.nan, 1.0, 2.0, np.inf, -np.inf, 1e300]
    b[:6] = [1.0, np.nan, 2.0, 1.0, 1e-300, 1e300]
    c[:6] = [0.0, 5.0, 2.0, np.nan, 1e-300, 1e300]
    return a, b, c


@pytest.mark.parametrize("relu", [False, True])
def test_sum(relu):
    a, b, c = _data()
    y = np.empty_like(a)
    ek.sum2(a, 0.5, b, -2.0, y, relu, 0.0)
    ek.sum_add(y, c, 3.0, relu, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        first = 0.5 * a + -2.0 * b
        if relu:
            first = np.where(first > 0, first, 0.0 * first)
        ref = first + 3.0 * c
        if relu:
            ref = np.where(ref > 0, ref, 0.0 * ref)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=0, equal_nan=True)


def test_prod():
    a, b, c = _data(1)
    y = np.empty_like(a)
    ek.prod2(a, b, y)
    ek.prod_mul(y, c)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = a * b * c
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=0, equal_nan=True)


def test_max_ties_nan_and_backward():
    a, b, c = _data(2)
    y, mask = np.empty_like(a), np.empty(a.size, np.uint8)
    ek.max2(a, b, y, mask)
    ek.max_next(c, 2, y, mask)
    # Caffe: y = a > b ? a : b (mask 0 / 1); then b_k > y takes over (mask k)
    ry, rm = np.where(a > b, a, b), np.where(a > b, 0, 1)
    take = c > ry
    ry, rm = np.where(take, c, ry), np.where(take, 2, rm)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(mask, rm)
    # a tie goes to bottom 1; a NaN bottom 0 loses, a NaN bottom 1 wins (a > b is false) and
    # then keeps the running max (b_k > NaN is false)
    assert mask[2] == 1 and y[0] == 1.0 and np.isnan(y[1]) and mask[1] == 1
    dy, dx = np.random.RandomState(3).randn(a.size), np.empty_like(a)
    for k in range(3):
        ek.max_backward(dy, mask, k, dx)
        np.testing.assert_array_equal(dx, np.where(rm == k, dy, 0.0))
