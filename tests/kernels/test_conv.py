"""The convolution kernels (decaf/kernels/conv.py) against plain float64 references: Caffe's
column layout and its adjoint, the GEMM-layout moves with bias / db, the depthwise direct loop
(pad, stride > kernel, dilation, channel multiplier, 1x1, non-square), thread counts."""
import numpy as np
import pytest

from decaf.kernels import conv as K, depthwise as D, threads
from decaf.kernels.im2col import CompiledIm2Col, conv_output_shape
from tests.layers.test_conv import ref_conv
from tests.test_im2col import ref_im2col

GEOMETRIES = [  # spatial, kernel, stride, pad, dilation
    ((5, 6), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((5, 6), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((7, 6), (2, 3), (1, 1), (1, 1), (2, 2)),     # dilation, non-square kernel
    ((6, 7), (3, 2), (2, 3), (2, 0), (1, 2)),
    ((4, 4), (1, 1), (1, 1), (0, 0), (1, 1)),     # 1x1
    ((7, 7), (1, 2), (3, 4), (0, 1), (1, 1)),     # stride > kernel
    ((2, 5), (3, 3), (2, 2), (0, 0), (1, 1)),     # C truncation: a row over the edge
]


def geom_args(kernel, stride, pad, dilation, out):
    return tuple(kernel) + tuple(stride) + tuple(pad) + tuple(dilation) + tuple(out)


@pytest.mark.parametrize("spatial,kernel,stride,pad,dilation", GEOMETRIES)
def test_im2col_col2im_match_caffe(spatial, kernel, stride, pad, dilation):
    rs = np.random.RandomState(0)
    x = rs.standard_normal((5, 3) + spatial)
    x[0, 0, 0, 0] = np.nan                      # copied where read, never spread
    x[1, 2, -1, -1] = np.inf
    out = conv_output_shape(spatial, kernel, stride, pad, dilation)
    want = ref_im2col(x, kernel, stride, pad, dilation)          # (n, C*k, *out)
    args = geom_args(kernel, stride, pad, dilation, out)
    oc = int(np.prod(out))
    for n0, nb in ((0, 5), (2, 3)):                               # a chunk of images
        col = np.full((want.shape[1], nb * oc), 7.0)
        K.im2col(x, n0, *args, col)
        ref = want[n0:n0 + nb].reshape(nb, -1, oc).transpose(1, 0, 2).reshape(col.shape)
        np.testing.assert_array_equal(col, ref)
    # col2im: the adjoint, written out, with every entry added back onto its pixel
    y = rs.standard_normal(col.shape)
    dx = np.full_like(x, 7.0)
    K.col2im(y, 2, *args, dx)
    ref_dx = np.zeros((3,) + x.shape[1:])
    ys = y.reshape(-1, 3, oc).transpose(1, 0, 2).reshape((3, -1) + tuple(out))
    c, kk = x.shape[1], kernel[0] * kernel[1]
    for n in range(3):
        for r in range(c * kk):
            ch, i, j = r // kk, (r % kk) // kernel[1], r % kernel[1]
            for oy in range(out[0]):
                for ox in range(out[1]):
                    yy, xx = oy * stride[0] - pad[0] + i * dilation[0], \
                        ox * stride[1] - pad[1] + j * dilation[1]
                    if 0 <= yy < spatial[0] and 0 <= xx < spatial[1]:
                        ref_dx[n, ch, yy, xx] += ys[n, r, oy, ox]
    np.testing.assert_allclose(dx[2:], ref_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(dx[:2], 7.0)                   # other images untouched


def test_span_stays_within_the_outputs():
    """A kernel column wholly left of the plane by more than the output width (a 1-wide
    plane, dilation 3, pad 3): lo must not pass the output count, or im2col's zeros for
    o < lo spill into the next row's segment of the column buffer."""
    assert K._span(1, -3, 1, 1) == (1, 1)
    assert K._span(2, -9, 2, 5) == (2, 2)
    assert K._span(4, -3, 2, 5) == (2, 4)


def test_im2col_in_parallel_with_columns_left_of_the_plane(monkeypatch):
    """The spill raced with the thread writing the next segment (wrong in ~80 % of runs)."""
    from decaf.kernels import jit
    monkeypatch.setattr(jit, "PARALLEL_MIN_ELEMENTS", 0)
    x = np.random.RandomState(0).standard_normal((2, 1, 3, 1)) + 5
    want = ref_im2col(x, (3, 3), (1, 1), (0, 3), (1, 3)).reshape(2, 9, 1)
    want = want.transpose(1, 0, 2).reshape(9, 2)
    old = threads.get_num_threads()
    threads.set_num_threads(2)
    try:
        for _ in range(100):
            col = np.full(want.shape, np.nan)
            K.im2col(x, 0, 3, 3, 1, 1, 0, 3, 1, 3, 1, 1, col)
            np.testing.assert_array_equal(col, want)
    finally:
        threads.set_num_threads(old)


def test_compiled_plan_is_im2col_in_ckn_order():
    x = np.random.RandomState(1).standard_normal((2, 3, 6, 5)).astype(np.float32)
    plan = CompiledIm2Col((3, 6, 5), (3, 2), (1, 2), (1, 1), (1, 1), np.float32, (6, 3))
    col = np.empty((plan.col_rows, 2 * plan.out_count), np.float32)
    plan.im2col(x, col)
    want = ref_im2col(x, (3, 2), (1, 2), (1, 1), (1, 1)).reshape(2, plan.col_rows, -1)
    np.testing.assert_array_equal(col, want.transpose(1, 0, 2).reshape(col.shape))
    with pytest.raises(ValueError):
        plan.im2col(x, col, order="nck")


def test_gemm_layout_moves_with_bias_and_its_gradient():
    rs = np.random.RandomState(2)
    m, oc, num, n0, nb = 4, 6, 5, 1, 3
    gm = rs.standard_normal((m, nb * oc))
    bias = rs.standard_normal(m)
    y = np.full((num, m, oc), 7.0)
    K.to_nchw(gm, n0, bias, True, y)
    want = gm.reshape(m, nb, oc).transpose(1, 0, 2) + bias[None, :, None]
    np.testing.assert_allclose(y[n0:n0 + nb], want, rtol=1e-15)
    np.testing.assert_array_equal(y[0], 7.0)
    K.to_nchw(gm, n0, bias[:0], False, y)
    np.testing.assert_array_equal(y[n0:n0 + nb], gm.reshape(m, nb, oc).transpose(1, 0, 2))
    back, db = np.empty_like(gm), np.ones(m)
    K.from_nchw(y, n0, back, db, True)
    np.testing.assert_array_equal(back, gm)
    np.testing.assert_allclose(db, 1 + gm.sum(axis=1), rtol=1e-12)


DEPTHWISE = [  # shape, multiplier, kernel, stride, pad, dilation
    ((2, 3, 6, 7), 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 3, 6, 7), 2, (3, 3), (2, 2), (1, 1), (1, 1)),    # channel multiplier, stride 2
    ((1, 2, 7, 6), 1, (3, 2), (1, 2), (2, 0), (2, 1)),    # dilation, non-square
    ((1, 4, 5, 5), 1, (1, 1), (1, 1), (0, 0), (1, 1)),    # 1x1
    ((1, 2, 7, 7), 3, (2, 2), (3, 3), (0, 1), (1, 1)),    # stride > kernel
    # 3x3: the one-pass interior rows, with the border taps around them
    ((1, 2, 9, 10), 1, (3, 3), (1, 1), (2, 2), (2, 2)),   # dilated (the gather backward)
    ((1, 2, 10, 11), 2, (3, 3), (3, 2), (0, 1), (1, 1)),  # stride 3 rows, no row padding
    ((1, 1, 3, 3), 1, (3, 3), (1, 1), (0, 0), (1, 1)),    # one output, all taps inside
    ((1, 1, 2, 2), 1, (3, 3), (1, 1), (1, 1), (1, 1)),    # plane smaller than the kernel
    ((1, 2, 6, 6), 1, (3, 3), (1, 1), (3, 3), (1, 1)),    # pad 3: outputs wholly in pad
    ((1, 2, 9, 9), 1, (3, 3), (2, 2), (1, 1), (2, 2)),    # stride 2 and dilation 2
    # stride 1, top as wide as the bottom: the flattened interior; stride 2: even / odd columns
    ((2, 2, 11, 11), 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # flattened, two images
    ((1, 2, 8, 9), 1, (3, 3), (1, 1), (1, 0), (1, 1)),    # stride 1, narrower top: per row
    ((1, 2, 12, 16), 1, (3, 3), (2, 2), (0, 0), (1, 1)),  # stride 2, no pad, even width
    ((1, 1, 13, 12), 4, (3, 3), (2, 2), (1, 1), (1, 1)),  # one input channel, 4 outputs
    ((1, 2, 10, 13), 1, (3, 3), (2, 2), (0, 1), (1, 3)),  # stride 2, column dilation 3
    # Caffe's output size truncates toward zero: the last window reaches past the padding
    ((1, 2, 4, 9), 2, (3, 3), (2, 1), (1, 3), (3, 3)),
    ((2, 3, 8, 2), 1, (3, 3), (2, 2), (3, 0), (1, 1)),
    ((1, 1, 3, 6), 1, (3, 3), (2, 2), (1, 0), (1, 3)),
]


@pytest.mark.parametrize("shape,mult,kernel,stride,pad,dil", DEPTHWISE)
def test_depthwise_matches_the_convolution_formula(shape, mult, kernel, stride, pad, dil):
    rs = np.random.RandomState(3)
    n, c = shape[:2]
    m = c * mult
    x = rs.standard_normal(shape)
    w = rs.standard_normal((m, 1) + kernel)
    b = rs.standard_normal(m)
    want = ref_conv(x, w, b, stride, pad, dil, c)
    y = np.full(want.shape, 7.0)
    args = tuple(stride) + tuple(pad) + tuple(dil)
    D.depthwise_forward(x, w, b, True, *args, y)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
    # backward: the adjoints of the forward, by the definition <dy, J v> = <J^T dy, v>
    dy = rs.standard_normal(want.shape)
    dx = np.full_like(x, 7.0)
    D.depthwise_backward_data(dy, w, *args, dx)
    dw, db = np.ones_like(w), np.ones(m)
    D.depthwise_backward_weights(dy, x, *args, dw, db, True, True)
    ref_dx = np.zeros_like(x)
    ref_dw = np.zeros_like(w)
    for idx in np.ndindex(*x.shape):                  # the forward is linear in x and in w
        e = np.zeros_like(x)
        e[idx] = 1.0
        ref_dx[idx] = np.vdot(dy, ref_conv(e, w, None, stride, pad, dil, c))
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1.0
        ref_dw[idx] = np.vdot(dy, ref_conv(x, e, None, stride, pad, dil, c))
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, 1 + ref_dw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, 1 + dy.sum(axis=(0, 2, 3)), rtol=1e-10)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_border_columns_do_not_see_the_next_row(stride):
    """The flattened stride-1 pass reads, for the border columns, the neighbouring row's
    cells (then recomputes them); inf / NaN there must not leak into any output."""
    rs = np.random.RandomState(5)
    x = rs.standard_normal((1, 2, 10, 12))
    x[0, 0, 3, -1], x[0, 0, 6, 0], x[0, 1, 4, -1] = np.inf, np.nan, -np.inf
    w = rs.standard_normal((2, 1, 3, 3))
    b = rs.standard_normal(2)
    args = (stride, stride, 1, 1, 1, 1)
    want = ref_conv(x, w, b, (stride,) * 2, (1, 1), (1, 1), 2)
    y = np.full(want.shape, 7.0)
    D.depthwise_forward(x, w, b, True, *args, y)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
    assert np.isfinite(y).mean() > 0.5        # the bad cells reach their own windows only


def test_conv_kernels_do_not_depend_on_the_thread_count():
    rs = np.random.RandomState(4)
    x = rs.standard_normal((4, 6, 9, 9)).astype(np.float32)
    w = rs.standard_normal((6, 1, 3, 3)).astype(np.float32)
    args = (3, 3, 1, 1, 1, 1, 1, 1, 9, 9)
    col = np.empty((54, 4 * 81), np.float32)
    dy = rs.standard_normal((4, 6, 9, 9)).astype(np.float32)

    def run():
        K.im2col(x, 0, *args, col)
        dx = np.empty_like(x)
        K.col2im(col, 0, *args, dx)
        y, dxd, dw = np.empty_like(x), np.empty_like(x), np.zeros_like(w)
        D.depthwise_forward(x, w, w[:0, 0, 0, 0], False, 1, 1, 1, 1, 1, 1, y)
        D.depthwise_backward_data(dy, w, 1, 1, 1, 1, 1, 1, dxd)
        D.depthwise_backward_weights(dy, x, 1, 1, 1, 1, 1, 1, dw, w[:, 0, 0, 0].copy(), True,
                                     False)
        return col.copy(), dx, y, dxd, dw

    before = threads.get_num_threads()
    try:
        threads.set_num_threads(1)
        one = run()
        threads.set_num_threads(2)
        two = run()
    finally:
        threads.set_num_threads(before)
    for a, b in zip(one, two):                  # every sum runs in one order per output
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,mult,stride", [((1, 1, 13, 12), 7, 2), ((2, 1, 9, 10), 5, 1),
                                               ((1, 2, 8, 8), 3, 2), ((3, 1, 6, 7), 1, 1)])
def test_depthwise_output_blocks_per_plane_at_any_thread_count(shape, mult, stride):
    """Fewer planes than twice the threads: each plane's mult outputs run in blocks (each
    block pads the plane again); the values do not move with the thread count."""
    rs = np.random.RandomState(8)
    c = shape[1]
    x, w, b = (rs.standard_normal(shape), rs.standard_normal((c * mult, 1, 3, 3)),
               rs.standard_normal(c * mult))
    args = (stride, stride, 1, 1, 1, 1)
    want = ref_conv(x, w, b, (stride,) * 2, (1, 1), (1, 1), c)
    before, outs = threads.get_num_threads(), []
    try:
        for n in (1, 2, 3):
            threads.set_num_threads(n)
            y = np.full(want.shape, 7.0)
            D.depthwise_forward(x, w, b, True, *args, y)
            outs.append(y)
    finally:
        threads.set_num_threads(before)
    np.testing.assert_allclose(outs[0], want, rtol=1e-10, atol=1e-10)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("bn,has_scale,has_bias,relu,slope", [
    (True, True, True, True, 0.1), (True, False, False, False, 0.0),
    (True, True, False, True, 0.0), (False, False, False, True, 0.25)])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_epilogue_is_batchnorm_scale_relu_in_their_order(bn, has_scale, has_bias,
                                                                   relu, slope, stride):
    """The epilogue (decaf.net_fuse) gives exactly the convolution, then (y - mean) / std,
    * scale, + bias, ReLU(slope) as separate passes, NaN and inf included."""
    rs = np.random.RandomState(9)
    x = rs.standard_normal((2, 1, 11, 10)).astype(np.float32)
    x[0, 0, 2, 3], x[1, 0, 5, 5] = np.nan, np.inf
    m = 6
    w = rs.standard_normal((m, 1, 3, 3)).astype(np.float32)
    b = rs.standard_normal(m).astype(np.float32)
    mean, std, sc, sh = (rs.standard_normal(m).astype(np.float32) for _ in range(4))
    std = np.abs(std) + np.float32(0.5)
    args = (stride, stride, 1, 1, 1, 1)
    oh, ow = (11 + 2 - 3) // stride + 1, (10 + 2 - 3) // stride + 1
    plain = np.empty((2, m, oh, ow), np.float32)
    D.depthwise_forward(x, w, b, True, *args, plain)
    want = plain.copy()
    per = (slice(None), None, None)
    if bn:
        want = (want - mean[per]) / std[per]
        if has_scale:
            want = want * sc[per]
        if has_bias:
            want = want + sh[per]
    if relu:
        want = np.where(want > 0, want, want * np.float32(slope))
    y = np.empty_like(plain)
    D.depthwise_forward(x, w, b, True, *args, y,
                        (mean, std, sc, sh, bn, has_scale, has_bias, relu, np.float32(slope)))
    np.testing.assert_array_equal(y, want.astype(np.float32))
    assert np.isnan(y).any() and np.isfinite(y).mean() > 0.5


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")      # inf * 0, on purpose
@pytest.mark.parametrize("kernel,stride", [((1, 2), (1, 1)), ((3, 3), (1, 1)), ((3, 3), (2, 2)),
                                           ((3, 3), (1, 3)), ((2, 5), (2, 1))])
def test_depthwise_padding_taps_multiply_zeros_as_caffe(kernel, stride):
    """Caffe's im2col + GEMM multiplies the padding's zeros by the weights, so an inf weight on
    a tap that lies in the padding makes that output NaN (inf * 0); every path agrees."""
    pad = (kernel[0] // 2, kernel[1] // 2 if kernel[1] > 1 else 1)
    x = np.ones((1, 2, 4, 5))
    w = np.ones((2, 1) + kernel)
    w[0, 0, 0, 0] = np.inf                     # top-left tap: in the padding at the border
    b = np.zeros(2)
    want = ref_conv(np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2)), w, b, stride,
                    (0, 0), (1, 1), 2)       # the padded plane, every tap a product
    y = np.full(want.shape, 7.0)
    with np.errstate(invalid="ignore"):
        D.depthwise_forward(x, w, b, True, *stride, *pad, 1, 1, y)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 1]).any()
    np.testing.assert_allclose(y[~np.isnan(y)], want[~np.isnan(want)], rtol=1e-12)
