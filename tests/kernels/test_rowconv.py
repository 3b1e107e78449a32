"""The row-GEMM convolution engine (decaf.kernels.rowconv.RowConv, decaf.kernels.im2col.RowIm2Col)
against the generic im2col engine (Caffe's column layout) in float64, with every layout /
chunking / fallback switch exercised."""
import itertools

import numpy as np
import pytest

from decaf.kernels import rowconv
from decaf.kernels.im2col import RowIm2Col, conv_output_shape
from decaf.layers import conv as conv_mod


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


# -- RowIm2Col ----------------------------------------------------------------------------------

GEOMS = [  # channels, (H, W), kernel, stride, pad, group
    (2, (5, 6), (3, 3), (1, 1), (1, 1), 1),
    (4, (7, 5), (3, 2), (2, 1), (1, 0), 2),
    (3, (6, 6), (5, 5), (1, 1), (2, 2), 1),
    (1, (8, 7), (2, 3), (3, 2), (0, 1), 1),
    (2, (4, 4), (1, 1), (1, 1), (0, 0), 2),
    (2, (3, 5), (3, 3), (2, 2), (3, 2), 1),    # pad larger than the image border
]


def ref_rows(x, kernel, stride, pad, group, out):
    """z[g, h, c, j, n, ox] = x[n, g*Cg + c, h - ph, ox*sw + j - pw], 0 outside."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out
    hu, cg = (oh - 1) * sh + kh, c // group
    z = np.zeros((group, hu, cg, kw, n, ow))
    for g, r, ci, j, ni, ox in itertools.product(range(group), range(hu), range(cg), range(kw),
                                                 range(n), range(ow)):
        y, xx = r - ph, ox * sw + j - pw
        if 0 <= y < h and 0 <= xx < w:
            z[g, r, ci, j, ni, ox] = x[ni, g * cg + ci, y, xx]
    return z


@pytest.mark.parametrize("batch_inner", [False, True])
@pytest.mark.parametrize("c,spatial,kernel,stride,pad,group", GEOMS)
def test_row_buffer_layout_and_adjoint(c, spatial, kernel, stride, pad, group, batch_inner):
    x = rand(3, c, *spatial)
    out = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
    plan = RowIm2Col(c, spatial, kernel, stride, pad, group, 3, np.float64, out_spatial=out,
                     batch_inner=batch_inner)
    z = plan.build(x)
    want = ref_rows(x, kernel, stride, pad, group, out)
    got = z.transpose(0, 1, 2, 3, 5, 4) if batch_inner else z
    np.testing.assert_array_equal(got, want)
    z2 = plan.build(2 * x)                   # rebuilding keeps the zero cells
    np.testing.assert_array_equal(z2 if not batch_inner else z2.transpose(0, 1, 2, 3, 5, 4),
                                  2 * want)
    dz = rand(*z.shape, seed=1)
    dx = np.empty_like(x)
    plan.fold(dz, dx)
    np.testing.assert_allclose(np.vdot(plan.build(x), dz), np.vdot(x, dx), rtol=1e-12)


def test_row_views_are_the_column_matrices():
    c, spatial, kernel, stride, pad = 2, (6, 5), (3, 2), (2, 1), (1, 1)
    out = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
    x = rand(2, c, *spatial)
    plan = RowIm2Col(c, spatial, kernel, stride, pad, 1, 2, np.float64, out_spatial=out)
    z = plan.build(x)
    views = plan.row_views(z, 0)
    for oy in range(out[0]):
        block = z[0, oy * stride[0]:oy * stride[0] + kernel[0]].reshape(plan.k, -1)
        np.testing.assert_array_equal(views[oy], block)
        assert np.shares_memory(plan.row_block(z, 0, oy), z)


# -- the row-GEMM convolution engine against the generic im2col engine --------------------------

CONV = [  # num, channels, (H, W), num_output, kernel, stride, pad, group
    (3, 2, (6, 5), 4, (3, 3), (1, 1), (1, 1), 1),
    (4, 4, (7, 6), 6, (3, 2), (2, 1), (1, 0), 2),
    (2, 3, (8, 8), 2, (5, 5), (1, 1), (2, 2), 1),
    (5, 2, (5, 7), 3, (2, 3), (3, 2), (0, 2), 1),
    (2, 6, (4, 4), 6, (3, 3), (1, 1), (1, 1), 3),
    # wide enough for the shifted GEMMs with the default SHIFT_MIN_ROWS (kh * C >= 32)
    (3, 16, (6, 5), 5, (5, 5), (1, 1), (2, 2), 1),
    (4, 24, (7, 6), 6, (3, 3), (2, 1), (1, 1), 1),
    (2, 32, (5, 7), 4, (2, 4), (1, 1), (0, 3), 1),
    (3, 16, (6, 6), 16, (3, 3), (1, 1), (1, 1), 1),     # ResNet-20's res2 (kh * C = 48)
]


def engines(args, **kw):
    num, c, spatial, m, kernel, stride, pad, group = args
    geom = (kernel, stride, pad, (1, 1))
    out = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
    row = rowconv.RowConv(np, np.float64, num, c, spatial, m, geom, group, out, **kw)
    ref = conv_mod._GemmConv(np, np.float64, num, (c,) + spatial, m, geom, group, out)
    return row, ref, out


def run(engine, x, w, b, dy, out, want_x=True):
    y = np.empty((x.shape[0], w.shape[0]) + out)
    engine.forward(x, w, b, y)
    dw, db = np.full_like(w, 0.5), np.full_like(b, 0.25)       # diffs accumulate
    dx = np.full_like(x, 7.0) if want_x else None
    engine.backward(dy, x, w, dw, db, dx)
    return y, dw, db, dx


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("blas", ["default", "off", "shift_all"])
@pytest.mark.parametrize("batch_inner", [False, True])
@pytest.mark.parametrize("args", CONV)
def test_row_engine_matches_the_column_engine(monkeypatch, args, batch_inner, blas, fast,
                                              direct):
    """Every path of _RowConv against the column engine: (n, ox) columns with or without the
    ones rows (bias_row), the blocked weight gradient, batch-innermost columns in the (oh, M, q)
    layout, in the BLAS layout (bi) and with shifted GEMMs (shift; "shift_all" lowers
    SHIFT_MIN_ROWS so that every group-1, horizontal-stride-1 case takes them)."""
    if blas == "shift_all":
        monkeypatch.setattr(rowconv, "SHIFT_MIN_ROWS", 1)
    kw = {"bias_row": False} if blas == "off" else {}
    row, ref, out = engines(args, batch_inner=batch_inner, **kw)
    assert row.direct == (not batch_inner)      # forward GEMMs straight into the NCHW top
    if not rowconv.cblas.available(np.float64):
        pytest.fail("decaf.kernels.cblas could not bind NumPy's BLAS on this machine")
    if batch_inner:
        assert row.bi
        group, stride = args[-1], args[5]
        wide = args[4][0] * args[1] // group >= rowconv.SHIFT_MIN_ROWS
        assert row.shift == (group == 1 and stride[1] == 1 and wide)
    else:
        assert row.bias_row == (blas != "off")
    if blas == "off":
        row.bi = row.shift = False              # the (oh, M, q) layout with NumPy reorders
    row.fast = row.fast and fast                # False: the batched-matmul fallback
    row.direct = row.direct and direct          # False: (oh, M, q) GEMMs and a reorder
    num, c, spatial, m, kernel = args[:5]
    x, w = rand(num, c, *spatial), rand(m, c // args[-1], *kernel, seed=2)
    b, dy = rand(m, seed=3), rand(num, m, *out, seed=4)
    for got, want in zip(run(row, x, w, b, dy, out), run(ref, x, w, b, dy, out)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # no data gradient: the direct layout's blocked weight gradient, rows paired or not
    for paired in (True, False):
        monkeypatch.setattr(rowconv, "PAIRED_ROWS", paired)
        _, dw, db, dx = run(row, x, w, b, dy, out, want_x=False)
        want = run(ref, x, w, b, dy, out)
        np.testing.assert_allclose(dw, want[1], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(db, want[2], rtol=1e-10, atol=1e-10)
        assert dx is None


@pytest.mark.parametrize("two_threads", [False, True])
@pytest.mark.parametrize("limit", [1, 100, 1 << 18])
def test_blocked_weight_gradient_in_whole_pairs(monkeypatch, limit, two_threads):
    """The direct layout's weight gradient with no data gradient, a block of top-diff rows at a
    time: blocks of whole pairs of rows, as many per block as accumulators (an odd output row
    count leaves one unpaired row at the end), on one thread or two (one accumulator each)."""
    from decaf.kernels import gemm, threads
    args = (3, 4, (11, 9), 3, (5, 5), (1, 1), (2, 2), 1)          # oh = 11, K = 5 * 21 >= 64
    monkeypatch.setattr(rowconv, "ROW_BLOCK_ELEMENTS", limit)
    before = threads.get_num_threads()
    if two_threads:
        monkeypatch.setattr(threads, "single_pool", lambda: True)
        monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
        threads.set_num_threads(2)
    blocks = []
    real = rowconv.top_rows
    monkeypatch.setattr(rowconv, "top_rows",
                        lambda dy, r0, out: (blocks.append(out.shape[0]), real(dy, r0, out)))
    try:
        row, ref, out = engines(args, batch_inner=False)
        assert row.direct and row.fast and row.k >= 64
        num, c, spatial, m, kernel = args[:5]
        x, w = rand(num, c, *spatial), rand(m, c, *kernel, seed=2)
        b, dy = rand(m, seed=3), rand(num, m, *out, seed=4)
        _, dw, db, dx = run(row, x, w, b, dy, out, want_x=False)
    finally:
        threads.set_num_threads(before)
    want = run(ref, x, w, b, dy, out)
    np.testing.assert_allclose(dw, want[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, want[2], rtol=1e-10, atol=1e-10)
    unit = 2 * rowconv.WGRAD_PARTS
    assert sum(blocks) == out[0] * len(list(row.chunks()))
    base = max(1, min(out[0], limit // (m * num * out[1])))      # one chunk of 3 images
    assert blocks[0] == min(out[0], -(-base // unit) * unit)
    assert all(n % unit == 0 for n in blocks[:-1])


@pytest.mark.parametrize("args", CONV[:5])
def test_row_engine_batch_inner_with_ones_rows(args):
    """Batch-innermost columns with the ones rows (not a default pair: the constructor's
    choice): the data gradient's rows are rk = C/group*kw + 1 apart."""
    row, ref, out = engines(args, batch_inner=True, bias_row=True)
    num, c, spatial, m, kernel = args[:5]
    x, w = rand(num, c, *spatial), rand(m, c // args[-1], *kernel, seed=2)
    b, dy = rand(m, seed=3), rand(num, m, *out, seed=4)
    for got, want in zip(run(row, x, w, b, dy, out), run(ref, x, w, b, dy, out)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("direct_limit", [1, 200, 1 << 18])
@pytest.mark.parametrize("limit", [1, 150, 700])
def test_row_engine_chunks(monkeypatch, limit, direct_limit):
    """Chunks of images (the row buffer's, the direct forward's own, the shifted GEMMs')."""
    monkeypatch.setattr(rowconv, "ROW_BUFFER_ELEMENTS", limit)
    monkeypatch.setattr(rowconv, "DIRECT_BUFFER_ELEMENTS", direct_limit)
    monkeypatch.setattr(rowconv, "SHIFT_BUFFER_ELEMENTS", 4 * limit)
    args = (7, 2, (6, 5), 3, (3, 3), (1, 1), (1, 1), 1)
    row, ref, out = engines(args)
    assert row.nb < 7
    if row.direct:
        assert row.nbf <= row.nb
        if direct_limit == 1:
            assert row.nbf == 1
    x, w = rand(7, 2, 6, 5), rand(3, 2, 3, 3, seed=2)
    b, dy = rand(3, seed=3), rand(7, 3, *out, seed=4)
    for got, want in zip(run(row, x, w, b, dy, out), run(ref, x, w, b, dy, out)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("max_kw", [3, 5])
@pytest.mark.parametrize("k", [5, 3])
@pytest.mark.parametrize("shift_limit", [1, 3000, 1 << 21])
def test_shift_engine_chunks(monkeypatch, shift_limit, k, max_kw):
    """Chunks of the shifted GEMMs; kernels up to SHIFT_WGRAD_MAX_KW wide take the shifted
    weight gradient too (_shift_backward: its dW_j accumulate over the chunks), wider ones
    the row buffer's."""
    monkeypatch.setattr(rowconv, "SHIFT_BUFFER_ELEMENTS", shift_limit)
    monkeypatch.setattr(rowconv, "SHIFT_WGRAD_MAX_KW", max_kw)
    args = (5, 16, (6, 5), 5, (k, k), (1, 1), (k // 2, k // 2), 1)
    row, ref, out = engines(args, batch_inner=True)
    assert row.shift and (row.nbs < 5) == (shift_limit < 1 << 21)
    assert row.shift_wgrad == (k <= rowconv.SHIFT_WGRAD_MAX_KW)
    x, w = rand(5, 16, 6, 5), rand(5, 16, k, k, seed=2)
    b, dy = rand(5, seed=3), rand(5, 5, *out, seed=4)
    for got, want in zip(run(row, x, w, b, dy, out), run(ref, x, w, b, dy, out)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_row_engine_float32_no_bias():
    args = (4, 3, (9, 9), 5, (5, 5), (1, 1), (2, 2), 1)
    row, ref, out = engines(args)
    x = rand(4, 3, 9, 9).astype(np.float32)
    w = rand(5, 3, 5, 5, seed=2).astype(np.float32)
    row32 = rowconv.RowConv(np, np.float32, 4, 3, (9, 9), 5, ((5, 5), (1, 1), (2, 2), (1, 1)),
                              1, out)
    y = np.empty((4, 5) + out, np.float32)
    row32.forward(x, w, None, y)
    want = np.empty((4, 5) + out)
    ref.forward(x.astype(np.float64), w.astype(np.float64), None, want)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_bias_rows_layout():
    """bias_row: z holds the image rows of the plain layout plus one row of ones per padded
    row; the adjoint (fold) ignores the ones rows."""
    c, spatial, kernel, stride, pad = 3, (6, 5), (3, 2), (2, 1), (1, 1)
    out = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
    x = rand(2, c, *spatial)
    plain = RowIm2Col(c, spatial, kernel, stride, pad, 1, 2, np.float64, out_spatial=out)
    ones = RowIm2Col(c, spatial, kernel, stride, pad, 1, 2, np.float64, out_spatial=out,
                     bias_row=True)
    assert ones.k == plain.k + kernel[0]
    z = ones.build(x)
    np.testing.assert_array_equal(ones.data(z), plain.build(x))
    assert (z[:, :, -1] == 1).all()
    dz = rand(*z.shape, seed=1)
    dx, dx_plain = np.empty_like(x), np.empty_like(x)
    ones.fold(dz, dx)
    plain.fold(np.ascontiguousarray(ones.data(dz)), dx_plain)
    np.testing.assert_array_equal(dx, dx_plain)
    z2 = ones.build(x[:1])                       # another batch size: ones rows set again
    assert (z2[:, :, -1] == 1).all()
