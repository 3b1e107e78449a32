"""Tests of Convolution, Deconvolution and Im2col (decaf/layers/conv.py): golden cases from BVLC
Caffe, float64 gradient checks, forward against the formulas written out here, errors."""
import itertools

import numpy as np
import pytest

from decaf.blob import Blob
from decaf.errors import LayerSetupError
from decaf.kernels import rowconv
from decaf.layers import conv as conv_mod
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward, make_layer_param

TYPES = ["Convolution", "Deconvolution", "Im2col"]
FILLERS = ('weight_filler { type: "gaussian" std: 0.5 } '
           'bias_filler { type: "uniform" min: -1 max: 1 }')


def conv_spec(params, num_output=4, kind="Convolution"):
    return ('type: "%s" convolution_param { num_output: %d %s %s }'
            % (kind, num_output, params, FILLERS))


def im2col_spec(params):
    return 'type: "Im2col" convolution_param { %s }' % params


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


# -- golden cases written by BVLC Caffe ---------------------------------------------------------

@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_covers_all_types():
    seen = {golden.load_case(c)["layer_type"] for c in golden.layer_cases(types=TYPES)}
    assert seen == set(TYPES)


# -- reference formulas (independent of decaf.kernels.im2col) -------------------------------------------

def out_size(n, k, s, p, d):
    return int(np.trunc((n + 2 * p - (d * (k - 1) + 1)) / s)) + 1


def ref_conv(x, w, b, stride, pad, dil, group):
    """y[n, o, q] = sum_{c, k} w[o, c, k] x[n, g*Cg + c, q*s - p + k*d] + b[o], zero outside."""
    n, c = x.shape[:2]
    sp = x.shape[2:]
    kernel = w.shape[2:]
    out = tuple(out_size(*a) for a in zip(sp, kernel, stride, pad, dil))
    m, cg = w.shape[0], w.shape[1]
    mg = m // group
    y = np.zeros((n, m) + out)
    for o in range(m):
        g = o // mg
        for q in itertools.product(*[range(v) for v in out]):
            for k in itertools.product(*[range(v) for v in kernel]):
                pos = [qq * s - p + kk * d for qq, s, p, kk, d in zip(q, stride, pad, k, dil)]
                if all(0 <= a < size for a, size in zip(pos, sp)):
                    xs = x[(slice(None), slice(g * cg, (g + 1) * cg)) + tuple(pos)]
                    y[(slice(None), o) + q] += xs @ w[(o, slice(None)) + k]
        if b is not None:
            y[:, o] += b[o]
    return y


def ref_deconv(x, w, b, stride, pad, dil, group):
    """Scatter form: every bottom pixel i adds w[c, m, k] x[n, c, i] at top position i*s - p + k*d."""
    n, c = x.shape[:2]
    sp = x.shape[2:]
    kernel = w.shape[2:]
    m = w.shape[1] * group
    cg, mg = c // group, w.shape[1]
    out = tuple(s * (v - 1) + d * (k - 1) + 1 - 2 * p
                for v, k, s, p, d in zip(sp, kernel, stride, pad, dil))
    y = np.zeros((n, m) + out)
    for ci in range(c):
        g = ci // cg
        for i in itertools.product(*[range(v) for v in sp]):
            for k in itertools.product(*[range(v) for v in kernel]):
                pos = [ii * s - p + kk * d for ii, s, p, kk, d in zip(i, stride, pad, k, dil)]
                if all(0 <= a < size for a, size in zip(pos, out)):
                    y[(slice(None), slice(g * mg, (g + 1) * mg)) + tuple(pos)] += \
                        x[(slice(None), ci) + i][:, None] * w[(ci, slice(None)) + k][None, :]
    if b is not None:
        y += b.reshape((1, m) + (1,) * len(sp))
    return y


# -- Convolution ---------------------------------------------------------------------------------

CONV_CASES = [
    ("kernel_size: 3", (2, 3, 5, 5), 4),
    ("kernel_size: 3 pad: 1 stride: 2", (2, 3, 6, 5), 3),
    ("kernel_size: 3 dilation: 2 pad: 2", (1, 2, 7, 6), 3),
    ("kernel_size: 3 group: 2 pad: 1", (2, 4, 4, 4), 6),
    ("kernel_size: 3 group: 3 pad: 1", (1, 3, 4, 3), 3),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (2, 2, 5, 6), 3),
    ("kernel_size: 2 bias_term: false", (2, 3, 4, 4), 2),
    ("kernel_size: 1", (2, 3, 4, 3), 4),
    ("kernel_size: 3 stride: 2 pad: 1", (2, 3, 7), 3),
    ("kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 stride: 1 stride: 2 stride: 1",
     (1, 2, 3, 4, 3), 2),
    ("kernel_size: 3 axis: 2", (2, 2, 3, 4, 4), 2),
    ("kernel_size: 3 stride: 2", (1, 2, 2, 5), 2),     # C-truncated output: reads over an edge
    ("kernel_size: 1 stride: 2 group: 2", (3, 4, 5, 5), 4),     # strided 1x1: columns needed
    ("kernel_size: 1 group: 2", (3, 4, 3, 5), 6),               # 1x1: the GEMMs on the blobs
    ("kernel_size: 5 pad: 3 stride: 4", (2, 2, 6, 7), 3),       # stride > kernel... windows in pad
]


@pytest.fixture(params=["rows", "compiled", "per_image", "arrays"])
def compiled(request, monkeypatch):
    """Every engine: the row-GEMM one; im2col + GEMM on the compiled kernels with chunks of
    images in the columns, and image by image (columns one output row at a time, so that
    several blocks run); and on the strided-view arrays CuPy runs (here on NumPy)."""
    mode = request.param
    monkeypatch.setattr(conv_mod, "ROW_GEMM", mode == "rows")
    monkeypatch.setattr(conv_mod, "COMPILED", mode != "arrays")
    if mode == "rows":        # every 2-D dilation-1 case through the row engine, 1x1 included
        monkeypatch.setattr(conv_mod, "PLAIN_GEMM_1X1", False)
        monkeypatch.setattr(conv_mod, "PLAIN_GEMM_MIN_OUTPUTS", 10 ** 9)
    if mode == "compiled":
        monkeypatch.setattr(conv_mod, "PER_IMAGE_MIN_COLUMNS", 10 ** 9)
    if mode == "per_image":
        monkeypatch.setattr(conv_mod, "PER_IMAGE_MIN_COLUMNS", 1)
        monkeypatch.setattr(conv_mod, "PER_IMAGE_MIN_MACS", 1)
        monkeypatch.setattr(conv_mod, "COL_BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(conv_mod, "COL_BLOCK_WEIGHTS", 0)
    return mode


@pytest.mark.parametrize("params,shape,num_output", CONV_CASES)
def test_conv_gradient(params, shape, num_output, compiled):
    check_gradient(conv_spec(params, num_output), [rand(*shape)])


def test_conv_gradient_two_bottoms_share_weights():
    spec = conv_spec("kernel_size: 2 pad: 1") + ' bottom: "a" bottom: "b" top: "ya" top: "yb"'
    check_gradient(spec, [rand(2, 2, 3, 3), rand(2, 2, 3, 3, seed=1)])


def test_conv_gradient_no_spatial_axes():
    # Caffe allows a channel axis with no spatial axes: an inner product over channels
    check_gradient(conv_spec("kernel_size: 1", 3), [rand(4, 5)])


def geometry_of(params, nd):
    lp = make_layer_param(conv_spec(params))

    class _L:
        def error(self, m):
            raise LayerSetupError(m)
    return conv_mod.parse_geometry(_L(), lp.convolution_param, nd)


@pytest.mark.parametrize("params,shape,num_output", CONV_CASES[:10] + [
    ("kernel_size: 3 group: 4 pad: 2 stride: 2 dilation: 2", (2, 4, 7, 6), 8),  # depthwise
    ("kernel_h: 1 kernel_w: 3 group: 3 stride_h: 3 stride_w: 1", (1, 3, 7, 5), 3)])
def test_conv_forward_formula(params, shape, num_output, compiled):
    x = rand(*shape)
    layer, (y,) = forward(conv_spec(params, num_output), [x])
    kernel, stride, pad, dil = geometry_of(params, len(shape) - 2)
    group = layer.group
    w = layer.blobs[0].data
    b = layer.blobs[1].data if layer.bias_term else None
    assert w.shape == (num_output, shape[1] // group) + kernel
    np.testing.assert_allclose(y, ref_conv(x, w, b, stride, pad, dil, group), atol=1e-12)


def test_conv_axis_keeps_leading_axes():
    x = rand(2, 3, 2, 5, 4)
    layer, (y,) = forward(conv_spec("kernel_size: 3 axis: 2", 4), [x])
    assert y.shape == (2, 3, 4, 3, 2)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    want = ref_conv(x.reshape(6, 2, 5, 4), w, b, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(y.reshape(want.shape), want, atol=1e-12)


def run_fwd_bwd(spec, x, dy_seed=5, propagate_down=True, params=None):
    layer, bottom, top = build_layer(spec, [x], params=params)
    layer.Forward(bottom, top)
    top[0].diff[...] = rand(*top[0].shape, seed=dy_seed)
    for p in layer.blobs:
        p.diff[...] = 0
    layer.Backward(top, [propagate_down], bottom)
    return (top[0].data.copy(), bottom[0].diff.copy(), [p.diff.copy() for p in layer.blobs],
            [p.data.copy() for p in layer.blobs])


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_batch_chunking_gives_the_same_numbers(monkeypatch, kind, compiled):
    spec = conv_spec("kernel_size: 3 pad: 1 stride: 2 group: 2", 4, kind)
    x = rand(5, 4, 5, 4)
    whole = run_fwd_bwd(spec, x)
    monkeypatch.setattr(conv_mod, "COL_BUFFER_ELEMENTS", 100)   # forces chunks of 1 image
    monkeypatch.setattr(rowconv, "COL_BUFFER_ELEMENTS", 100)
    chunked = run_fwd_bwd(spec, x, params=whole[3])
    for a, b in zip([whole[0], whole[1]] + whole[2], [chunked[0], chunked[1]] + chunked[2]):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_layers_sharing_the_scratch_workspace_do_not_interfere():
    spec = conv_spec("kernel_size: 3 pad: 1", 3)
    x = rand(2, 2, 5, 5)
    alone = run_fwd_bwd(spec, x)
    a, ba, ta = build_layer(spec, [x], params=alone[3])
    b, bb, tb = build_layer(conv_spec("kernel_size: 2", 5, "Deconvolution"), [rand(3, 4, 6, 6)])
    a.Forward(ba, ta)
    b.Forward(bb, tb)             # reuses (and grows) the same column scratch arrays
    ta[0].diff[...] = rand(*ta[0].shape, seed=5)
    for p in a.blobs:
        p.diff[...] = 0
    tb[0].diff[...] = 1.0
    b.Backward(tb, [True], bb)
    a.Backward(ta, [True], ba)
    np.testing.assert_allclose(ta[0].data, alone[0], atol=1e-12)
    np.testing.assert_allclose(ba[0].diff, alone[1], atol=1e-12)
    for p, d in zip(a.blobs, alone[2]):
        np.testing.assert_allclose(p.diff, d, atol=1e-12)


def test_param_diffs_accumulate_and_propagate_down_false():
    spec = conv_spec("kernel_size: 2", 3)
    layer, bottom, top = build_layer(spec, [rand(2, 2, 4, 4)])
    layer.Forward(bottom, top)
    top[0].diff[...] = rand(*top[0].shape, seed=3)
    bottom[0].diff[...] = 42.0
    layer.Backward(top, [False], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    assert np.all(bottom[0].diff == 42.0)          # not touched without propagate_down
    layer.Backward(top, [False], bottom)
    for p, d in zip(layer.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * d)
    np.testing.assert_allclose(once[1], top[0].diff.sum(axis=(0, 2, 3)))


def test_conv_float32_and_fillers():
    layer, bottom, top = build_layer(
        'type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 '
        'weight_filler { type: "constant" value: 0.5 } bias_filler { type: "constant" value: 2 } }',
        [np.ones((1, 1, 3, 3))], dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[0].data.dtype == np.float32 and layer.blobs[0].dtype == np.float32
    np.testing.assert_allclose(top[0].data, np.full((1, 2, 1, 1), 6.5))


def test_default_fillers_are_zero():
    layer, (y,) = forward('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 }',
                          [rand(1, 2, 2, 2)])
    assert not y.any() and not layer.blobs[0].data.any() and len(layer.blobs) == 2


def test_reshape_to_a_new_spatial_size():
    layer, bottom, top = build_layer(conv_spec("kernel_size: 3 pad: 1", 2), [rand(1, 2, 4, 4)])
    x = rand(3, 2, 6, 5, seed=4)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, ref_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1),
                               atol=1e-12)


def test_weights_from_layer_param_blobs_are_kept():
    lp = make_layer_param(conv_spec("kernel_size: 1", 2))
    w = np.arange(6.0).reshape(2, 3, 1, 1)
    bp = lp.blobs.add()
    bp.shape.dim.extend(w.shape)
    bp.data.extend(w.ravel())
    bp = lp.blobs.add()
    bp.shape.dim.append(2)
    bp.data.extend([1.0, -1.0])
    layer, (y,) = forward(lp, [np.ones((1, 3, 1, 1))])
    np.testing.assert_allclose(y.ravel(), [0 + 1 + 2 + 1, 3 + 4 + 5 - 1])


# -- Deconvolution -------------------------------------------------------------------------------

DECONV_CASES = [
    ("kernel_size: 4 stride: 2 pad: 1", (2, 3, 3, 4), 2),
    ("kernel_size: 3 group: 2 pad: 1", (2, 4, 3, 3), 4),
    ("kernel_size: 3 dilation: 2", (1, 2, 3, 3), 3),
    ("kernel_size: 2 stride: 2 bias_term: false", (2, 2, 3, 2), 3),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (1, 2, 3, 4), 2),
    ("kernel_size: 3 stride: 2", (2, 3, 4), 2),
    ("kernel_size: 2 stride: 2 pad: 0", (1, 2, 2, 2, 3), 2),
    ("kernel_size: 3 group: 3 stride: 2 pad: 1", (2, 3, 4, 5), 3),          # depthwise
    ("kernel_size: 4 group: 2 stride: 2 pad: 1 dilation: 2", (1, 4, 3, 3), 2),  # 2 in / group
    ("kernel_h: 3 kernel_w: 2 group: 2 stride_h: 3 stride_w: 1 pad_h: 0 pad_w: 1 "
     "bias_term: false", (2, 2, 3, 4), 2),
]


@pytest.mark.parametrize("params,shape,num_output", DECONV_CASES)
def test_deconv_gradient(params, shape, num_output, compiled):
    check_gradient(conv_spec(params, num_output, "Deconvolution"), [rand(*shape)])


@pytest.mark.parametrize("params,shape,num_output", DECONV_CASES)
def test_deconv_forward_formula(params, shape, num_output, compiled):
    x = rand(*shape)
    layer, (y,) = forward(conv_spec(params, num_output, "Deconvolution"), [x])
    kernel, stride, pad, dil = geometry_of(params, len(shape) - 2)
    w = layer.blobs[0].data
    assert w.shape == (shape[1], num_output // layer.group) + kernel
    b = layer.blobs[1].data if layer.bias_term else None
    np.testing.assert_allclose(y, ref_deconv(x, w, b, stride, pad, dil, layer.group), atol=1e-12)


def test_deconv_is_the_transpose_of_conv():
    params = "kernel_size: 3 stride: 2 pad: 1 group: 2 bias_term: false"
    x = rand(2, 4, 7, 5)
    conv, (y,) = forward(conv_spec(params, 6), [x])
    z = rand(*y.shape, seed=9)
    _, (back,) = forward(conv_spec(params, 4, "Deconvolution"), [z], params=[conv.blobs[0].data])
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, back), rtol=1e-12)


def test_bilinear_deconv_upsamples_a_constant():
    spec = ('type: "Deconvolution" convolution_param { num_output: 2 group: 2 kernel_size: 4 '
            'stride: 2 pad: 1 bias_term: false weight_filler { type: "bilinear" } }')
    _, (y,) = forward(spec, [np.ones((1, 2, 4, 4))])
    assert y.shape == (1, 2, 8, 8)
    np.testing.assert_allclose(y[:, :, 1:-1, 1:-1], 1.0)   # interior of a constant stays constant


# -- Im2col --------------------------------------------------------------------------------------

IM2COL_CASES = [
    ("kernel_size: 3 pad: 1 stride: 2", (2, 2, 5, 6)),
    ("kernel_h: 2 kernel_w: 3 dilation: 2 pad: 1", (1, 2, 7, 6)),
    ("kernel_size: 2 stride: 1", (1, 2, 3, 4, 3)),
    ("kernel_size: 2 axis: 2", (2, 2, 2, 4, 3)),
]


@pytest.mark.parametrize("params,shape", IM2COL_CASES)
def test_im2col_gradient(params, shape):
    check_gradient(im2col_spec(params), [rand(*shape)])


def test_im2col_forward_formula():
    x = rand(2, 2, 5, 6)
    _, (y,) = forward(im2col_spec("kernel_size: 3 pad: 1 stride: 2"), [x])
    assert y.shape == (2, 18, 3, 3)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for c, i, j, oh, ow in itertools.product(range(2), range(3), range(3), range(3), range(3)):
        np.testing.assert_array_equal(y[:, (c * 3 + i) * 3 + j, oh, ow],
                                      xp[:, c, oh * 2 + i, ow * 2 + j])


# -- errors (Caffe's CHECKs) ---------------------------------------------------------------------

def setup_error(spec, shapes, match, tops=None):
    with pytest.raises(LayerSetupError, match=match):
        build_layer(spec, [np.zeros(s) for s in shapes], num_tops=tops)


@pytest.mark.parametrize("params,shape,match", [
    ("num_output: 4 kernel_size: 3 group: 2", (1, 3, 5, 5), "multiple of group"),
    ("num_output: 3 kernel_size: 3 group: 2", (1, 4, 5, 5), "multiples of group"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 3, 5, 5), "not both"),
    ("num_output: 4 kernel_size: 0", (1, 3, 5, 5), "nonzero"),
    ("num_output: 4 kernel_h: 3", (1, 3, 5, 5), "nonzero"),
    ("num_output: 4", (1, 3, 5, 5), "kernel_size must be specified"),
    ("num_output: 4 kernel_h: 2 kernel_w: 2", (1, 3, 5, 5, 5), "only be used for 2D"),
    ("num_output: 4 kernel_size: 2 kernel_size: 2 kernel_size: 2", (1, 3, 5, 5), "once per"),
    ("num_output: 4 kernel_size: 2 stride: 0", (1, 3, 5, 5), "Stride dimensions"),
    ("num_output: 4 kernel_size: 2 pad: 1 pad_h: 1", (1, 3, 5, 5), "Either pad or pad_h"),
    ("num_output: 4 kernel_size: 2 stride_h: 2", (1, 3, 5, 5), "Stride dimensions"),
    ("num_output: 4 kernel_size: 2 dilation: 0", (1, 3, 5, 5), "dilation"),
    ("kernel_size: 2", (1, 3, 5, 5), "num_output"),
    ("num_output: 4 kernel_size: 2 axis: 4", (1, 3, 5, 5), "axis"),
    ("num_output: 4 kernel_size: 7", (1, 3, 5, 5), "empty"),
])
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_conv_setup_errors(params, shape, match, kind):
    if kind == "Deconvolution" and match == "empty":
        params = params.replace("kernel_size: 7", "kernel_size: 2 pad: 3")
    setup_error('type: "%s" convolution_param { %s }' % (kind, params), [shape], match)


def test_conv_error_names_the_layer():
    with pytest.raises(LayerSetupError, match=r"'conv1' \(Convolution\)"):
        build_layer('name: "conv1" type: "Convolution" convolution_param { num_output: 3 '
                    'kernel_size: 3 group: 2 }', [np.zeros((1, 4, 5, 5))])


def test_conv_bottom_count_and_shape_errors():
    spec = conv_spec("kernel_size: 2", 2)
    setup_error(spec, [(1, 2, 4, 4), (1, 2, 4, 4)], "as many top", tops=1)
    setup_error(spec, [(1, 2, 4, 4), (1, 2, 4, 5)], "same shape", tops=2)
    layer, bottom, top = build_layer(spec, [np.zeros((1, 2, 4, 4))])
    bottom[0].reshape(1, 3, 4, 4)
    with pytest.raises(LayerSetupError, match="channels"):
        layer.Forward(bottom, top)
    bottom[0].reshape(1, 2, 4, 4, 4)
    with pytest.raises(LayerSetupError, match="num_axes"):
        layer.Forward(bottom, top)


def test_conv_in_place_is_rejected():
    with pytest.raises(LayerSetupError, match="in-place"):
        build_layer(conv_spec("kernel_size: 1", 2), [np.zeros((1, 2, 3, 3))], inplace=True)


def test_conv_wrong_stored_blobs():
    lp = make_layer_param(conv_spec("kernel_size: 1", 2))
    bp = lp.blobs.add()
    bp.shape.dim.extend([2, 3, 1, 1])
    bp.data.extend([0.0] * 6)
    with pytest.raises(LayerSetupError, match="number of weight blobs"):
        build_layer(lp, [np.zeros((1, 3, 2, 2))])
    bp = lp.blobs.add()
    bp.shape.dim.append(2)
    bp.data.extend([0.0] * 2)
    with pytest.raises(LayerSetupError, match="Incorrect weight shape"):
        build_layer(lp, [np.zeros((1, 4, 2, 2))])


def test_im2col_errors():
    setup_error(im2col_spec("kernel_size: 1"), [(3, 4)], "spatial axis")
    setup_error(im2col_spec("kernel_size: 3 kernel_w: 3"), [(1, 1, 4, 4)], "not both")
    setup_error(im2col_spec("stride: 1"), [(1, 1, 4, 4)], "kernel_size must be specified")
    setup_error(im2col_spec("kernel_size: 5"), [(1, 1, 4, 4)], "empty")


def test_blob_dtype_follows_bottom():
    layer, bottom, top = build_layer(conv_spec("kernel_size: 1", 2), [np.zeros((1, 2, 2, 2))])
    assert isinstance(layer.blobs[0], Blob) and layer.blobs[0].dtype == np.float64
    assert layer.param_propagate_down == [True, True]
