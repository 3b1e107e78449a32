"""decaf.kernels.lrn against plain float64 loop references (1e-10), across and within channels."""
import numpy as np
import pytest

from decaf.kernels import lrn


def _ref_across(x, size, alpha, k, beta):
    n_, c_, s_ = x.shape
    p = (size - 1) // 2
    scale = np.empty_like(x)
    for c in range(c_):
        lo, hi = max(0, c - p), min(c_, c + p + 1)
        scale[:, c] = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
    return scale, x * scale ** -beta


def _ref_within(x, size, alpha, beta):
    p = (size - 1) // 2
    pad = np.pad(x ** 2, ((0, 0), (p, p), (p, p)))
    h_, w_ = x.shape[1:]
    box = sum(pad[:, i:i + h_, j:j + w_] for i in range(size) for j in range(size))
    scale = 1 + alpha / size ** 2 * box
    return scale, x * scale ** -beta


def _numeric_grad(f, x, dy, eps=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += eps
        xm.flat[i] -= eps
        g.flat[i] = ((f(xp) - f(xm)) * dy).sum() / (2 * eps)
    return g


@pytest.mark.parametrize("shape,size", [((2, 7, 6), 5), ((1, 2, 3), 5), ((2, 4, 1), 3),
                                        ((1, 1, 4), 1)])
def test_across(shape, size):
    rs = np.random.RandomState(0)
    x, dy = rs.randn(*shape) * 2, rs.randn(*shape)
    alpha, k, beta = 1e-2 * 7, 1.5, 0.75
    scale, y = np.empty_like(x), np.empty_like(x)
    lrn.across_forward(x, size, alpha / size, k, beta, scale, y)
    rscale, ry = _ref_across(x, size, alpha, k, beta)
    np.testing.assert_allclose(scale, rscale, rtol=1e-10)
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-14)
    dx = np.empty_like(x)
    lrn.across_backward(x, y, dy, scale, size, 2 * alpha * beta / size, beta, dx)
    ref = dy * rscale ** -beta
    ratio = dy * ry / rscale
    p = (size - 1) // 2
    for c in range(shape[1]):
        ref[:, c] -= 2 * alpha * beta / size * x[:, c] * ratio[:, max(0, c - p):c + p + 1].sum(1)
    np.testing.assert_allclose(dx, ref, rtol=1e-10, atol=1e-13)
    num = _numeric_grad(lambda v: _ref_across(v, size, alpha, k, beta)[1], x, dy)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape,size", [((3, 5, 6), 3), ((2, 2, 2), 5), ((1, 1, 7), 3)])
def test_within(shape, size):
    rs = np.random.RandomState(1)
    x, dy = rs.randn(*shape) * 2, rs.randn(*shape)
    alpha, beta = 0.3, 0.75
    scale, y = np.empty_like(x), np.empty_like(x)
    lrn.within_forward(x, size, alpha / size ** 2, beta, scale, y)
    rscale, ry = _ref_within(x, size, alpha, beta)
    np.testing.assert_allclose(scale, rscale, rtol=1e-10)
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-14)
    dx = np.empty_like(x)
    lrn.within_backward(x, y, dy, scale, size, 2 * alpha * beta / size ** 2, beta, dx)
    num = _numeric_grad(lambda v: _ref_within(v, size, alpha, beta)[1], x, dy)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7)


def test_huge_tiny_nan():
    x = np.array([[[1e150], [1e-300], [np.nan], [0.0]]])
    scale, y = np.empty_like(x), np.empty_like(x)
    lrn.across_forward(x, 3, 1.0 / 3, 1.0, 0.75, scale, y)
    rscale, ry = _ref_across(x, 3, 1.0, 1.0, 0.75)
    np.testing.assert_allclose(scale, rscale, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(y, ry, rtol=1e-10, equal_nan=True)
    assert np.isnan(y[0, 1:4, 0]).all() and np.isfinite(y[0, 0, 0])
