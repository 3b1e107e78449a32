"""decaf.kernels.elementwise against plain float64 NumPy references (1e-10)."""
import numpy as np
import pytest

from decaf.kernels import elementwise as ew

EDGE = np.array([0.0, -0.0, 1.5, -2.5, 1e-300, -1e-300, 1e300, -1e300, np.inf, -np.inf, np.nan])


def _ref_relu(x, s):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.maximum(x, 0) + s * np.minimum(x, 0) if s else np.where(x > 0, x, x * s)


@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5, 2.0])
def test_relu_forward_backward_edges(slope):
    rs = np.random.RandomState(0)
    x = np.concatenate([EDGE, rs.randn(40000)])
    y = np.empty_like(x)
    ew.relu_forward(x, y, slope)
    np.testing.assert_allclose(y, _ref_relu(x, slope), rtol=1e-10, atol=0, equal_nan=True)
    dy = rs.randn(x.size)
    dx = np.empty_like(x)
    ew.relu_backward(x, dy, dx, slope)
    ref = dy * ((x > 0) + slope * (x <= 0))          # Caffe's mask: 0 for a NaN bottom
    np.testing.assert_allclose(dx, ref, rtol=1e-10, atol=0)


def test_relu_in_place_float32():
    x = np.random.RandomState(1).randn(3, 5, 7).astype(np.float32)
    ref = np.where(x > 0, x, np.float32(0.2) * x)
    ew.relu_forward(x.ravel(), x.ravel(), np.float32(0.2))
    np.testing.assert_array_equal(x, ref)


@pytest.mark.parametrize("dims", [(2, 3, 4), (1, 5, 1), (6, 1, 9), (3, 4, 0)])
@pytest.mark.parametrize("bias,relu", [(False, False), (True, False), (True, True)])
def test_affine_forward(dims, bias, relu):
    rs = np.random.RandomState(2)
    x, s, b = rs.randn(*dims), rs.randn(dims[1]), rs.randn(dims[1])
    if x.size:
        x.flat[0] = np.inf
    y = np.empty_like(x)
    ew.affine_forward(x, s, b, y, True, bias, relu, 0.0)
    ref = x * s[None, :, None] + (b[None, :, None] if bias else 0)
    if relu:
        with np.errstate(invalid="ignore"):
            ref = np.where(ref > 0, ref, 0.0 * ref)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=0, equal_nan=True)


def test_affine_bias_only_in_place():
    rs = np.random.RandomState(3)
    x, b = rs.randn(2, 3, 5), rs.randn(3)
    ref = x + b[None, :, None]
    ew.affine_forward(x, b, b, x, False, True, False, 0.0)
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("dims", [(2, 3, 4), (1, 7, 1), (4, 1, 33)])
def test_scale_backward_and_channel_sum(dims):
    rs = np.random.RandomState(4)
    x, dy, s = rs.randn(*dims), rs.randn(*dims), rs.randn(dims[1])
    ds, db, dx, cs = (np.zeros(dims[1]), np.zeros(dims[1]), np.empty_like(x),
                      np.zeros(dims[1]))
    ew.scale_backward(x, dy, s, ds, db, dx, True, True, True)
    np.testing.assert_allclose(ds, (dy * x).sum(axis=(0, 2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, dy * s[None, :, None], rtol=1e-10, atol=0)
    ew.channel_sum(dy, cs)
    np.testing.assert_allclose(cs, dy.sum(axis=(0, 2)), rtol=1e-10, atol=1e-12)
    ew.scale_backward(x, dy, s, ds, db, dy, False, False, True)   # in place: dx is dy
    np.testing.assert_allclose(dy, dx, rtol=1e-10, atol=0)


def test_scale_backward_huge_tiny_and_nan():
    x = np.array([[[1e300, 1e-300, np.nan]]])
    dy = np.array([[[1e-300, 1e300, 1.0]]])
    ds, db, dx = np.zeros(1), np.zeros(1), np.empty_like(x)
    ew.scale_backward(x, dy, np.array([2.0]), ds, db, dx, True, True, True)
    assert np.isnan(ds[0])
    assert db[0] == 1e300 + 1e-300 + 1.0
    np.testing.assert_array_equal(dx, 2.0 * dy)
