"""In-place calls (top is bottom) of the elementwise kernels run their loops through one name
(decaf.kernels.inplace): the results must be bit-identical to the out-of-place call and to the
formula, across chunk and block boundaries, for rows shorter and longer than a chunk, with
NaN, inf and signed zeros, serial and parallel."""
import numpy as np
import pytest

from decaf.kernels import batchnorm as BN, elementwise as E, eltwise as W
from decaf.kernels.inplace import CHUNK

F = np.float32
pytestmark = pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
# (outer, dim, inner): many short rows (grouped per task), rows across chunk boundaries
DIMS = [(3, 5, 7), (2, 3, CHUNK + 5), (1, 2, 3 * CHUNK), (4, 1, 1)]


def _data(shape, seed):
    x = np.random.RandomState(seed).standard_normal(shape).astype(F)
    flat = x.reshape(-1)
    flat[::97] = np.nan
    flat[5::101] = np.inf
    flat[7::103] = -np.inf
    flat[11::89] = -0.0
    flat[13::83] = 0.0
    return x


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a).view(np.int32), np.asarray(b).view(np.int32))


@pytest.fixture(params=["serial", "parallel"])
def mode(request):
    return request.param


def _k(kern, mode):
    return getattr(kern, mode)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_relu_in_place_is_out_of_place(dims, slope, mode):
    x = _data(dims, 1).reshape(-1)
    s = F(slope)
    want = np.where(x > 0, x, x * s)
    out = np.empty_like(x)
    _k(E.relu_forward, mode)(x, out, s)
    y = x.copy()
    _k(E.relu_forward, mode)(y, y, s)
    _same(out, want)
    _same(y, want)
    dy = _data(dims, 2).reshape(-1)
    want_dx = dy * ((x > 0).astype(F) + s * (x <= 0).astype(F))
    dx = np.empty_like(dy)
    _k(E.relu_backward, mode)(x, dy, dx, s)
    d2 = dy.copy()
    _k(E.relu_backward, mode)(x, d2, d2, s)
    _same(dx, want_dx)
    _same(d2, want_dx)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("relu", [False, True])
def test_affine_and_scale_backward_in_place(dims, relu, mode):
    x = _data(dims, 3)
    rs = np.random.RandomState(4)
    s, b = rs.standard_normal(dims[1]).astype(F), rs.standard_normal(dims[1]).astype(F)
    out = np.empty_like(x)
    _k(E.affine_forward, mode)(x, s, b, out, True, True, relu, F(0.5))
    want = x * s[None, :, None] + b[None, :, None]
    if relu:
        want = np.where(want > 0, want, want * F(0.5))
    _same(out, want)
    y = x.copy()
    _k(E.affine_forward, mode)(y, s, b, y, True, True, relu, F(0.5))
    _same(y, want)
    dy = _data(dims, 5)
    ds, db = np.zeros(dims[1]), np.zeros(dims[1])
    d2 = dy.copy()
    _k(E.scale_backward, mode)(x, d2, s, ds, db, d2, False, False, True)
    _same(d2, dy * s[None, :, None])


@pytest.mark.parametrize("dims", DIMS)
def test_batchnorm_passes_in_place(dims, mode):
    x = _data(dims, 6)
    rs = np.random.RandomState(7)
    c = dims[1]
    mean = rs.standard_normal(c).astype(F)
    std = (rs.rand(c) + 0.5).astype(F)
    sc, bi = rs.standard_normal(c).astype(F), rs.standard_normal(c).astype(F)
    want = (x - mean[None, :, None]) / std[None, :, None]
    y, keep = x.copy(), np.empty_like(x)
    _k(BN.normalize, mode)(y, mean, std, y, keep, True)
    _same(y, want)
    _same(keep, want)
    fused = (want * sc[None, :, None]) + bi[None, :, None]
    fused = np.where(fused > 0, fused, fused * F(0))
    y = x.copy()
    _k(BN.normalize_affine, mode)(y, mean, std, sc, bi, y, True, True, True, F(0), y, False)
    _same(y, fused)
    y, keep = x.copy(), np.empty_like(x)      # in place, keeping x_norm (training chains)
    _k(BN.normalize_affine, mode)(y, mean, std, sc, bi, y, True, True, True, F(0), keep, True)
    _same(y, fused)
    _same(keep, want)
    # backward, dx written over dy: global statistics, then batch statistics
    dy = _data(dims, 8)
    d2 = dy.copy()
    _k(BN.backward, mode)(want, d2, std, d2, True)
    _same(d2, dy / std[None, :, None])
    clean = np.random.RandomState(9).standard_normal(dims).astype(F)
    out = np.empty_like(clean)
    _k(BN.backward, mode)(want, clean, std, out, False)
    d3 = clean.copy()
    _k(BN.backward, mode)(want, d3, std, d3, False)
    _same(d3, out)


@pytest.mark.parametrize("n", [5, CHUNK + 3, (1 << 14) + CHUNK + 1])
def test_eltwise_sum_into_a_bottom(n, mode):
    a, b = _data((n,), 10), _data((n,), 11)
    want = np.where(a * F(2) + b * F(-1) > 0, a * F(2) + b * F(-1), F(0) * (a * F(2) + b * F(-1)))
    for into in ("a", "b"):
        aa, bb = a.copy(), b.copy()
        y = aa if into == "a" else bb
        _k(W.sum2, mode)(aa, F(2), bb, F(-1), y, True, F(0))
        _same(y, want)
    both = a.copy()                          # the same blob twice, summed into itself
    _k(W.sum2, mode)(both, F(2), both, F(-1), both, True, F(0))
    v = a * F(2) + a * F(-1)
    _same(both, np.where(v > 0, v, F(0) * v))
