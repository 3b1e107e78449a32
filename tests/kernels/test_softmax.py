"""decaf.kernels.softmax against plain float64 references (1e-10): axis != 1, NaN/inf, huge."""
import numpy as np
import pytest

from decaf.kernels import softmax as sk


def _ref(x):
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dims", [(4, 10, 1), (2, 3, 5), (1, 1, 7), (3, 21, 17), (1, 4, 0)])
def test_forward_backward(dims):
    rs = np.random.RandomState(0)
    x = rs.randn(*dims) * 30
    y = np.empty_like(x)
    sk.forward(x, y)
    np.testing.assert_allclose(y, _ref(x), rtol=1e-10, atol=1e-300)
    dy, dx = rs.randn(*dims), np.empty_like(x)
    sk.backward(y, dy, dx)
    ref = (dy - (dy * y).sum(axis=1, keepdims=True)) * y
    np.testing.assert_allclose(dx, ref, rtol=1e-10, atol=1e-14)
    sk.forward(x, x)                                   # in place
    np.testing.assert_allclose(x, y, rtol=1e-10, atol=0)


def test_edges():
    x = np.array([[1e308, -1e308, 0.0], [np.nan, 1.0, 2.0], [np.inf, 1.0, 0.0],
                  [-np.inf, 0.0, 0.0], [5.0, 5.0, 5.0], [1e-300, -1e-300, 0.0]])[:, :, None]
    y = np.empty_like(x)
    sk.forward(x, y)
    np.testing.assert_allclose(y, _ref(x), rtol=1e-10, atol=0, equal_nan=True)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()       # NaN / +inf rows: NaN (Caffe)
    np.testing.assert_array_equal(y[3, :, 0], [0.0, 0.5, 0.5])


@pytest.mark.parametrize("has_valid", [False, True])
def test_loss_backward(has_valid):
    rs = np.random.RandomState(1)
    p = _ref(rs.randn(3, 5, 4))
    lab = rs.randint(0, 5, size=(3, 4)).astype(np.int64)
    valid = rs.rand(3, 4) > 0.3
    dx = np.empty_like(p)
    sk.loss_backward(p, lab, valid, has_valid, 0.25, dx)
    ref = p.copy()
    for o in range(3):
        for i in range(4):
            ref[o, lab[o, i], i] -= 1
    ref *= 0.25
    if has_valid:
        ref *= valid[:, None, :]
    np.testing.assert_allclose(dx, ref, rtol=1e-10, atol=0)
