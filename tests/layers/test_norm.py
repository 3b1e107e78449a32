"""Tests of decaf.layers.norm: BatchNorm, MVN, Scale, Bias."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.proto import caffe_pb2
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward, make_layer_param
from decaf.layer import layer_class

TYPES = ["BatchNorm", "MVN", "Scale", "Bias"]


def f32(v):
    """A float parameter as the protobuf float field stores it."""
    return float(np.float32(v))


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


# -- golden cases (BVLC Caffe) ----------------------------------------------------------------
@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_cases_present():
    names = golden.layer_cases(types=TYPES)
    for t in TYPES:
        assert any(golden.load_case(n)["layer_type"] == t for n in names), t


# -- BatchNorm ----------------------------------------------------------------------------------
def bn_reference(x, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps), mu.ravel(), var.ravel()


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 3, 2)])
@pytest.mark.parametrize("inplace", [False, True])
def test_batchnorm_gradient_batch_stats(shape, inplace):
    check_gradient('type: "BatchNorm"', [rand(*shape)], inplace=inplace)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 2)])
@pytest.mark.parametrize("inplace", [False, True])
def test_batchnorm_gradient_global_stats(shape, inplace):
    c = shape[1]
    params = [rand(c, seed=1) * 3, np.abs(rand(c, seed=2)) * 2 + 0.5, np.array([2.5])]
    # the statistics get no gradient in Caffe (they are not learned): check the bottom only
    check_gradient('type: "BatchNorm" batch_norm_param { use_global_stats: true }', [rand(*shape)],
                   params=params, check_params=False, inplace=inplace)


def test_batchnorm_gradient_test_phase_defaults_to_global():
    layer = check_gradient('type: "BatchNorm"', [rand(3, 2, 4)], phase=caffe_pb2.TEST,
                           params=[np.ones(2), np.full(2, 4.0), np.array([2.0])],
                           check_params=False)
    assert layer.use_global_stats


def test_batchnorm_forward_and_running_stats():
    x = rand(3, 4, 2, 5)
    spec = 'type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }'
    layer, bottom, top = build_layer(spec, [x])
    old = [rand(4, seed=3), np.abs(rand(4, seed=4)), np.array([1.7])]
    for b, v in zip(layer.blobs, old):
        b.data[...] = v
    layer.Forward(bottom, top)
    y, mu, var = bn_reference(x, f32(1e-3))
    np.testing.assert_allclose(top[0].data, y, rtol=1e-10, atol=1e-12)
    m = 3 * 2 * 5
    np.testing.assert_allclose(layer.blobs[0].data, 0.9 * old[0] + mu)
    np.testing.assert_allclose(layer.blobs[1].data, 0.9 * old[1] + m / (m - 1.0) * var)
    np.testing.assert_allclose(layer.blobs[2].data, [0.9 * 1.7 + 1])
    assert not layer.use_global_stats and layer.moving_average_fraction == pytest.approx(0.9)


def test_batchnorm_defaults():
    layer, _, _ = build_layer('type: "BatchNorm"', [rand(2, 3)])
    assert layer.eps == pytest.approx(1e-5)
    assert layer.moving_average_fraction == pytest.approx(0.999)
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert all((b.data == 0).all() for b in layer.blobs)


def test_batchnorm_global_stats_forward():
    x = rand(2, 3, 4)
    mean_sum, var_sum, s = rand(3, seed=5), np.abs(rand(3, seed=6)) + 0.1, 4.0
    _, (y,) = forward('type: "BatchNorm"', [x], phase=caffe_pb2.TEST,
                      params=[mean_sum, var_sum, [s]])
    want = (x - (mean_sum / s)[None, :, None]) / np.sqrt(var_sum / s + f32(1e-5))[None, :, None]
    np.testing.assert_allclose(y, want, rtol=1e-10)


def test_batchnorm_global_stats_zero_scale_factor():
    """s == 0: Caffe uses a scale factor of 0, i.e. mean 0 and variance 0."""
    x = rand(2, 3)
    _, (y,) = forward('type: "BatchNorm" batch_norm_param { use_global_stats: true }', [x],
                      params=[np.ones(3), np.ones(3), [0.0]])
    np.testing.assert_allclose(y, x / np.sqrt(f32(1e-5)), rtol=1e-10)


def test_batchnorm_single_value_per_channel_no_bias_correction():
    """m = N * spatial = 1: the variance sum gets the plain (uncorrected) variance 0."""
    layer, _ = forward('type: "BatchNorm"', [rand(1, 2)])
    np.testing.assert_allclose(layer.blobs[1].data, [0, 0])
    np.testing.assert_allclose(layer.blobs[2].data, [1])


def test_batchnorm_inplace_keeps_x_norm_for_backward():
    x = rand(4, 2, 3)
    layer, bottom, top = build_layer('type: "BatchNorm"', [x], inplace=True)
    layer.Forward(bottom, top)
    y = top[0].data.copy()
    top[0].data[...] = 123.0  # a later in-place layer clobbers the data
    dy = rand(4, 2, 3, seed=9)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    mean_dy = dy.mean(axis=(0, 2), keepdims=True)
    mean_dyy = (dy * y).mean(axis=(0, 2), keepdims=True)
    std = np.sqrt(x.var(axis=(0, 2), keepdims=True) + f32(1e-5))
    np.testing.assert_allclose(bottom[0].diff, (dy - mean_dy - mean_dyy * y) / std, rtol=1e-9)


def test_batchnorm_forces_lr_mult_zero():
    param = make_layer_param('name: "bn" type: "BatchNorm"')
    layer, _, _ = build_layer(param, [rand(2, 3)])
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    # user-given entries with lr_mult 0 are kept, missing ones are added
    param = make_layer_param('name: "bn" type: "BatchNorm" param { lr_mult: 0 decay_mult: 0 }')
    layer, _, _ = build_layer(param, [rand(2, 3)])
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    assert layer.layer_param.param[0].decay_mult == 0


def test_batchnorm_rejects_learned_statistics():
    with pytest.raises(LayerSetupError, match="Cannot configure batch normalization statistics"):
        build_layer('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }', [rand(2, 3)])


def test_batchnorm_bad_input():
    with pytest.raises(LayerSetupError, match="at least 2 axes"):
        build_layer('type: "BatchNorm"', [rand(5)])
    layer, bottom, top = build_layer('type: "BatchNorm"', [rand(2, 3)])
    bottom[0].reshape(2, 4)
    with pytest.raises(LayerSetupError, match="3 channels"):
        layer.Forward(bottom, top)


def test_batchnorm_loaded_blob_shapes_checked():
    param = make_layer_param('type: "BatchNorm"')
    for shape in [(3,), (3,), (2,)]:
        bp = param.blobs.add()
        bp.shape.dim.extend(shape)
        bp.data.extend([0.0] * shape[0])
    with pytest.raises(LayerSetupError, match="expected 3 blobs"):
        build_layer(param, [rand(2, 3)])


# -- MVN ----------------------------------------------------------------------------------------
def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    x4 = x.reshape(x.shape + (1,) * (4 - x.ndim))
    rows = x4.reshape(x4.shape[0] if across_channels else x4.shape[0] * x4.shape[1], -1)
    y = rows - rows.mean(axis=1, keepdims=True)
    if normalize_variance:
        y = y / (np.sqrt((y ** 2).mean(axis=1, keepdims=True)) + eps)
    return y.reshape(x4.shape)


MVN_PARAMS = ["", "mvn_param { across_channels: true }",
              "mvn_param { normalize_variance: false }",
              "mvn_param { normalize_variance: false across_channels: true }"]


@pytest.mark.parametrize("extra", MVN_PARAMS)
@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (3, 4), (2, 2, 5)])
def test_mvn_gradient(extra, shape):
    check_gradient('type: "MVN" %s' % extra, [rand(*shape)])


@pytest.mark.parametrize("extra", MVN_PARAMS[:2])
def test_mvn_gradient_inplace(extra):
    check_gradient('type: "MVN" %s' % extra, [rand(2, 3, 2, 2)], inplace=True)


@pytest.mark.parametrize("nv", [True, False])
@pytest.mark.parametrize("ac", [True, False])
def test_mvn_forward(nv, ac):
    x = rand(2, 3, 4, 5) * 3 + 1
    extra = "mvn_param { normalize_variance: %s across_channels: %s eps: 0.01 }" % (
        str(nv).lower(), str(ac).lower())
    _, (y,) = forward('type: "MVN" %s' % extra, [x])
    np.testing.assert_allclose(y, mvn_reference(x, nv, ac, f32(0.01)), rtol=1e-10, atol=1e-12)


def test_mvn_eps_added_to_std():
    x = np.array([[[[1.0, 3.0]]]])  # mean 2, std 1
    _, (y,) = forward('type: "MVN" mvn_param { eps: 0.5 }', [x])
    np.testing.assert_allclose(y.ravel(), [-1 / 1.5, 1 / 1.5])  # 0.5 is exact in float32


def test_mvn_backward_is_caffe_formula():
    """Caffe's backward divides by (std + eps) throughout (not the exact derivative)."""
    x, dy = rand(2, 6), rand(2, 6, seed=1)
    layer, bottom, top = build_layer('type: "MVN" mvn_param { across_channels: true eps: 0.1 }',
                                     [x])
    layer.Forward(bottom, top)
    top[0].diff[...] = dy.reshape(top[0].shape)
    layer.Backward(top, [True], bottom)
    y = top[0].data.reshape(2, 6)
    std = np.sqrt(((x - x.mean(1, keepdims=True)) ** 2).mean(1, keepdims=True)) + f32(0.1)
    want = (dy - dy.mean(1, keepdims=True) - (dy * y).mean(1, keepdims=True) * y) / std
    np.testing.assert_allclose(bottom[0].diff, want, rtol=1e-10)


def test_mvn_defaults_and_legacy_top_shape():
    layer, (y,) = forward('type: "MVN"', [rand(3, 4)])
    assert layer.normalize_variance and not layer.across_channels
    assert layer.eps == pytest.approx(1e-9)
    assert y.shape == (3, 4, 1, 1)  # Caffe reshapes the top with num/channels/height/width


def test_mvn_constant_input_gives_zero():
    _, (y,) = forward('type: "MVN"', [np.full((1, 2, 3, 3), 7.0)])
    assert np.all(y == 0)


def test_mvn_too_many_axes():
    with pytest.raises(LayerSetupError, match="at most 4 axes"):
        build_layer('type: "MVN"', [rand(1, 2, 2, 2, 2)])


# -- Scale --------------------------------------------------------------------------------------
SCALE_ONE_BOTTOM = ["", "axis: 0 num_axes: 2", "axis: -1 num_axes: 1", "num_axes: 0",
                    "axis: 1 num_axes: -1", "bias_term: true", "num_axes: 0 bias_term: true",
                    "axis: 2 num_axes: 1 bias_term: true"]


@pytest.mark.parametrize("extra", SCALE_ONE_BOTTOM)
@pytest.mark.parametrize("inplace", [False, True])
def test_scale_gradient_learned(extra, inplace):
    spec = ('type: "Scale" scale_param { filler { type: "gaussian" } '
            'bias_filler { type: "uniform" min: -1 max: 1 } %s }' % extra)
    check_gradient(spec, [rand(2, 3, 4, 2)], inplace=inplace)


@pytest.mark.parametrize("axis,sshape", [(0, (2,)), (0, (2, 3)), (1, (3,)), (1, (3, 4)),
                                         (-1, (2,)), (0, ()), (1, (3, 4, 2))])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
def test_scale_gradient_two_bottoms(axis, sshape, bias, inplace):
    spec = 'type: "Scale" scale_param { axis: %d bias_term: %s ' \
           'bias_filler { type: "gaussian" } }' % (axis, str(bias).lower())
    check_gradient(spec, [rand(2, 3, 4, 2), rand(*sshape, seed=1)], inplace=inplace)


def test_scale_forward_broadcast():
    x = rand(2, 3, 4)
    s, b = rand(3, 4, seed=1), rand(3, 4, seed=2)
    _, (y,) = forward('type: "Scale" scale_param { num_axes: 2 bias_term: true }', [x],
                      params=[s, b])
    np.testing.assert_allclose(y, x * s[None] + b[None])
    _, (y,) = forward('type: "Scale" scale_param { axis: 0 }', [x, rand(2, seed=3)])
    np.testing.assert_allclose(y, x * rand(2, seed=3)[:, None, None])


def test_scale_default_fillers():
    layer, (y,) = forward('type: "Scale" scale_param { bias_term: true }', [rand(2, 3)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(layer.blobs[0].data, 1)
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    np.testing.assert_allclose(y, rand(2, 3))


def test_scale_two_bottom_bias_shape_follows_second_bottom():
    layer, _, _ = build_layer('type: "Scale" scale_param { bias_term: true }',
                              [rand(2, 3, 4), rand(3, 4)])
    assert [b.shape for b in layer.blobs] == [(3, 4)]


def test_scale_param_diffs_accumulate_bottom1_diff_overwritten():
    layer, bottom, top = build_layer('type: "Scale" scale_param { axis: 0 bias_term: true }',
                                     [rand(2, 3)])
    layer.Forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.Backward(top, [True], bottom)
    first = [b.diff.copy() for b in layer.blobs]
    layer.Backward(top, [True], bottom)
    for b, f in zip(layer.blobs, first):
        np.testing.assert_allclose(b.diff, 2 * f)
    layer, bottom, top = build_layer('type: "Scale"', [rand(2, 3), rand(3, seed=1)])
    layer.Forward(bottom, top)
    top[0].diff[...] = 1.0
    bottom[1].diff[...] = 99.0
    layer.Backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[1].diff, rand(2, 3).sum(0))


def test_scale_errors():
    with pytest.raises(LayerSetupError, match="dimension mismatch"):
        build_layer('type: "Scale"', [rand(2, 3), rand(4)])
    with pytest.raises(LayerSetupError, match="extends past"):
        build_layer('type: "Scale" scale_param { axis: 1 num_axes: 3 }', [rand(2, 3)])
    with pytest.raises(LayerSetupError, match="num_axes must be non-negative"):
        build_layer('type: "Scale" scale_param { num_axes: -2 }', [rand(2, 3)])
    with pytest.raises(LayerSetupError, match="axis"):
        build_layer('type: "Scale" scale_param { axis: 5 }', [rand(2, 3)])
    with pytest.raises(LayerSetupError, match="extends past"):
        build_layer('type: "Scale" scale_param { axis: 1 }', [rand(2, 3), rand(3, 2)])
    with pytest.raises(LayerSetupError, match="bottom"):
        build_layer('type: "Scale"', [rand(2, 3), rand(3), rand(3)])
    param = make_layer_param('type: "Scale"')
    bp = param.blobs.add()
    bp.shape.dim.append(4)
    bp.data.extend([1.0] * 4)
    with pytest.raises(LayerSetupError, match="expected"):
        build_layer(param, [rand(2, 3)])


def test_scale_reshape_mismatch_after_setup():
    layer, bottom, top = build_layer('type: "Scale"', [rand(2, 3)])
    bottom[0].reshape(2, 5)
    with pytest.raises(LayerSetupError, match="dimension mismatch"):
        layer.Forward(bottom, top)


# -- Bias ---------------------------------------------------------------------------------------
BIAS_ONE_BOTTOM = ["", "bias_param { axis: 0 num_axes: 2 }", "bias_param { num_axes: 0 }",
                   "bias_param { axis: -2 num_axes: -1 }"]


@pytest.mark.parametrize("extra", BIAS_ONE_BOTTOM)
@pytest.mark.parametrize("inplace", [False, True])
def test_bias_gradient_learned(extra, inplace):
    spec = 'type: "Bias" %s' % extra
    check_gradient(spec, [rand(2, 3, 4)], inplace=inplace)


@pytest.mark.parametrize("axis,bshape", [(0, (2,)), (1, (3, 4)), (-1, (4,)), (0, ())])
@pytest.mark.parametrize("inplace", [False, True])
def test_bias_gradient_two_bottoms(axis, bshape, inplace):
    check_gradient('type: "Bias" bias_param { axis: %d }' % axis,
                   [rand(2, 3, 4), rand(*bshape, seed=1)], inplace=inplace)


def test_bias_forward_and_defaults():
    x = rand(2, 3, 4)
    layer, (y,) = forward('type: "Bias"', [x])
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0)
    np.testing.assert_allclose(y, x)
    layer, (y,) = forward('type: "Bias" bias_param { filler { type: "constant" value: 2 } }', [x])
    np.testing.assert_allclose(y, x + 2)
    b = rand(3, 4, seed=1)
    _, (y,) = forward('type: "Bias"', [x, b])
    np.testing.assert_allclose(y, x + b[None])


def test_bias_param_diff_accumulates():
    layer, bottom, top = build_layer('type: "Bias"', [rand(2, 3)])
    layer.Forward(bottom, top)
    top[0].diff[...] = rand(2, 3, seed=2)
    layer.Backward(top, [True], bottom)
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * rand(2, 3, seed=2).sum(0))
    np.testing.assert_allclose(bottom[0].diff, rand(2, 3, seed=2))


def test_bias_errors():
    with pytest.raises(LayerSetupError, match="dimension mismatch"):
        build_layer('type: "Bias"', [rand(2, 3), rand(2)])
    with pytest.raises(LayerSetupError, match="extends past"):
        build_layer('type: "Bias" bias_param { axis: 1 num_axes: 2 }', [rand(2, 3)])
    with pytest.raises(LayerSetupError, match="bottom"):
        build_layer('type: "Bias"', [])


def test_float32_dtype_kept():
    for spec, bottoms in [('type: "BatchNorm"', [rand(2, 3)]), ('type: "MVN"', [rand(2, 3)]),
                          ('type: "Scale" scale_param { bias_term: true }', [rand(2, 3)]),
                          ('type: "Bias"', [rand(2, 3)])]:
        layer, bottom, top = build_layer(spec, bottoms, dtype=np.float32)
        layer.Forward(bottom, top)
        assert top[0].data.dtype == np.float32
        assert all(b.dtype == np.float32 for b in layer.blobs)


def test_registered():
    for t in TYPES:
        assert layer_class(t) is not None, t
