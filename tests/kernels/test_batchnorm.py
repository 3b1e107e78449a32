"""decaf.kernels.batchnorm against plain float64 references (1e-10)."""
import numpy as np
import pytest

from decaf.kernels import batchnorm as bk


@pytest.mark.parametrize("dims", [(4, 3, 5), (1, 6, 1), (7, 1, 9), (2, 2, 1)])
def test_stats_normalize_backward(dims):
    rs = np.random.RandomState(0)
    x = rs.randn(*dims) * 3 + 10
    mean, var = np.empty(dims[1]), np.empty(dims[1])
    bk.channel_stats(x, mean, var)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-10)
    np.testing.assert_allclose(var, x.var(axis=(0, 2)), rtol=1e-10, atol=1e-14)
    std = np.sqrt(var + 1e-5)
    y, keep = np.empty_like(x), np.empty_like(x)
    bk.normalize(x, mean, std, y, keep, True)
    ref = (x - mean[None, :, None]) / std[None, :, None]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(keep, y)
    dy, dx = rs.randn(*dims), np.empty_like(x)
    bk.backward(keep, dy, std, dx, False)
    m = dims[0] * dims[2]
    a = (dy * ref).sum(axis=(0, 2), keepdims=True)
    b = dy.sum(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(dx, (dy - (ref * a + b) / m) / std[None, :, None],
                               rtol=1e-10, atol=1e-13)
    bk.backward(keep, dy, std, dx, True)
    np.testing.assert_allclose(dx, dy / std[None, :, None], rtol=1e-10, atol=0)
    bk.backward(keep, dy, std, dy, False)                           # in place: dx is dy
    np.testing.assert_allclose(dy, (dx * std[None, :, None] - (ref * a + b) / m)
                               / std[None, :, None], rtol=1e-9, atol=1e-12)


def test_normalize_affine_and_edges():
    x = np.array([[[1e300, -1e300, np.nan], [1e-300, 0.0, np.inf]]])
    mean, std = np.array([0.0, 1e-300]), np.array([1e300, 2.0])
    s, b = np.array([2.0, -1.0]), np.array([0.5, 1e-300])
    y = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        ref = ((x - mean[None, :, None]) / std[None, :, None]) * s[None, :, None] + b[None, :, None]
        relu = np.where(ref > 0, ref, 0.1 * ref)
    bk.normalize_affine(x, mean, std, s, b, y, True, True, False, 0.0, y, False)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=0, equal_nan=True)
    keep = np.full_like(x, 7.0)
    bk.normalize_affine(x, mean, std, s, b, y, True, True, True, 0.1, keep, True)
    np.testing.assert_allclose(y, relu, rtol=1e-10, atol=0, equal_nan=True)
    with np.errstate(invalid="ignore"):           # the kept x_norm: before scale and bias
        np.testing.assert_allclose(keep, (x - mean[None, :, None]) / std[None, :, None],
                                   rtol=1e-10, atol=0, equal_nan=True)
    xi = x.copy()                                 # in place, keeping x_norm
    bk.normalize_affine(xi, mean, std, s, b, xi, True, True, True, 0.1, keep, True)
    np.testing.assert_allclose(xi, relu, rtol=1e-10, atol=0, equal_nan=True)
    bk.normalize_affine(x, mean, std, s, b, y, False, False, False, 0.0, y, False)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(y, (x - mean[None, :, None]) / std[None, :, None],
                                   rtol=1e-10, atol=0, equal_nan=True)
    y2 = np.empty_like(x)
    bk.normalize(x, mean, std, y2, y2, False)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(y2, (x - mean[None, :, None]) / std[None, :, None],
                                   rtol=1e-10, atol=0, equal_nan=True)


def test_constant_channel_and_single_value():
    x = np.full((3, 2, 4), 7.25)
    mean, var = np.empty(2), np.empty(2)
    bk.channel_stats(x, mean, var)
    np.testing.assert_array_equal(mean, [7.25, 7.25])
    np.testing.assert_array_equal(var, [0.0, 0.0])
