"""Tests of decaf/kernels/im2col.py: Caffe's column layout, output sizes, col2im as the exact adjoint."""
import itertools

import numpy as np
import pytest

from decaf.kernels import im2col as ic


def ref_im2col(x, kernel, stride, pad, dilation):
    """Caffe's im2col_nd_cpu written out element by element (small inputs only)."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    out = ic.conv_output_shape(spatial, kernel, stride, pad, dilation)
    kcount, ocount = int(np.prod(kernel)), int(np.prod(out))
    cols = np.zeros((n, c * kcount, ocount), x.dtype)
    for b in range(n):
        for ch in range(c):
            for kr, koff in enumerate(itertools.product(*[range(k) for k in kernel])):
                for orr, ooff in enumerate(itertools.product(*[range(o) for o in out])):
                    pos = [o * s - p + k * d for o, s, p, k, d in
                           zip(ooff, stride, pad, koff, dilation)]
                    if all(0 <= q < size for q, size in zip(pos, spatial)):
                        cols[b, ch * kcount + kr, orr] = x[(b, ch) + tuple(pos)]
    return cols.reshape((n, c * kcount) + out)


CASES = [
    # spatial, kernel, stride, pad, dilation
    ((5, 6), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((5, 6), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((7, 6), (2, 3), (1, 1), (1, 1), (2, 2)),
    ((6, 7), (3, 2), (2, 3), (2, 0), (1, 2)),
    ((4, 4), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((2, 5), (3, 3), (2, 2), (0, 0), (1, 1)),   # C truncation: 1 output row over an overhang
    ((9,), (3,), (2,), (1,), (1,)),
    ((4, 3, 5), (2, 2, 3), (1, 2, 1), (1, 0, 1), (1, 1, 2)),
]


@pytest.mark.parametrize("spatial,kernel,stride,pad,dilation", CASES)
def test_im2col_matches_caffe_layout(spatial, kernel, stride, pad, dilation):
    x = np.random.RandomState(1).standard_normal((2, 3) + spatial)
    got = ic.im2col(x, kernel, stride, pad, dilation)
    np.testing.assert_array_equal(got, ref_im2col(x, kernel, stride, pad, dilation))


@pytest.mark.parametrize("spatial,kernel,stride,pad,dilation", CASES)
def test_col2im_is_the_adjoint(spatial, kernel, stride, pad, dilation):
    rs = np.random.RandomState(2)
    x = rs.standard_normal((2, 3) + spatial)
    cols = ic.im2col(x, kernel, stride, pad, dilation)
    y = rs.standard_normal(cols.shape)
    back = ic.col2im(y, x.shape[1:], kernel, stride, pad, dilation)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(cols, y), np.vdot(x, back), rtol=1e-12)


def test_col2im_counts_overlaps():
    # col2im of all-ones columns counts how many windows read each pixel
    x = np.zeros((1, 1, 4, 4))
    cols = np.ones_like(ic.im2col(x, (3, 3), (1, 1), (1, 1), (1, 1)))
    counts = ic.col2im(cols, (1, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1))[0, 0]
    edge = np.array([2, 3, 3, 2])
    np.testing.assert_array_equal(counts, np.outer(edge, edge))


def test_ckn_order_is_a_transpose_of_nck():
    rs = np.random.RandomState(3)
    x = rs.standard_normal((3, 2, 5, 4))
    plan = ic.Im2Col((2, 5, 4), (2, 3), (1, 1), (1, 0), (1, 1), np.float64)
    nck = np.empty((3, plan.col_rows, plan.out_count))
    ckn = np.empty((plan.col_rows, 3, plan.out_count))
    plan.im2col(x, nck, "nck")
    plan.im2col(x, ckn, "ckn")
    np.testing.assert_array_equal(nck.transpose(1, 0, 2), ckn)
    a, b = np.empty_like(x), np.empty_like(x)
    plan.col2im(nck, a, "nck")
    plan.col2im(ckn, b, "ckn")
    np.testing.assert_allclose(a, b)


def test_plan_reuses_buffers_and_keeps_padding_zero():
    plan = ic.Im2Col((1, 3, 3), (3, 3), (1, 1), (1, 1), (1, 1), np.float64)
    out = np.empty((1, 9, 9))
    plan.im2col(np.full((1, 1, 3, 3), 7.0), out)
    buf = plan._in_buf
    got = plan.im2col(np.ones((1, 1, 3, 3)), out).copy()
    assert plan._in_buf is buf
    np.testing.assert_array_equal(got, ref_im2col(np.ones((1, 1, 3, 3)), (3, 3), (1, 1),
                                                  (1, 1), (1, 1)).reshape(1, 9, 9))


def test_im2col_rejects_non_contiguous_output():
    plan = ic.Im2Col((1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1), np.float64)
    out = np.empty((1, 4, 8))[:, :, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        plan.im2col(np.ones((1, 1, 3, 3)), out)


@pytest.mark.parametrize("size,k,s,p,d,want", [
    (7, 3, 1, 0, 1, 5), (8, 3, 2, 1, 1, 4), (9, 3, 1, 2, 2, 9), (5, 1, 3, 0, 1, 2),
    (2, 3, 2, 0, 1, 1),   # (2 - 3) / 2 truncates to 0 in C, not -1
    (1, 4, 1, 0, 1, -2),
])
def test_conv_output_size_uses_c_truncation(size, k, s, p, d, want):
    assert ic.conv_output_shape((size,), (k,), (s,), (p,), (d,)) == (want,)


@pytest.mark.parametrize("size,k,s,p,d", [(4, 4, 2, 1, 1), (5, 3, 1, 1, 1), (3, 3, 2, 0, 2)])
def test_deconv_output_size_inverts_conv(size, k, s, p, d):
    (big,) = ic.deconv_output_shape((size,), (k,), (s,), (p,), (d,))
    assert big == s * (size - 1) + d * (k - 1) + 1 - 2 * p
    assert ic.conv_output_shape((big,), (k,), (s,), (p,), (d,)) == (size,)
