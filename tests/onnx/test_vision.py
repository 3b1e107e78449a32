"""The rules of Convolution, Deconvolution, Pooling and LRN in the export."""
import numpy as np
import pytest

from .helpers import check_net, make_net, randomize


def _conv_net(type_name, params, shape=(2, 4, 9, 11)):
    net = make_net('layer { name: "c" type: "%s" bottom: "x" top: "y" convolution_param { %s '
                   'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }'
                   % (type_name, params), {"x": shape})
    randomize(net, np.random.RandomState(3))
    return net


@pytest.mark.parametrize("params", [
    "num_output: 6 kernel_size: 3",
    "num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 2",
    "num_output: 8 kernel_size: 3 group: 2 dilation: 2 pad: 2 stride: 2",
    "num_output: 4 kernel_size: 3 group: 4 pad: 1",
    "num_output: 5 kernel_size: 1 bias_term: false",
])
def test_convolution(params):
    check_net(_conv_net("Convolution", params))


@pytest.mark.parametrize("params", [
    "num_output: 6 kernel_size: 4 stride: 2 pad: 1",
    "num_output: 8 kernel_size: 3 stride: 2 pad: 1 group: 2",       # grouped
    "num_output: 4 kernel_size: 3 group: 4 dilation: 2 pad: 2 stride: 3",
    "num_output: 6 kernel_h: 2 kernel_w: 3 stride_h: 3 stride_w: 2 pad_w: 1 bias_term: false",
])
def test_deconvolution_size_rule(params):
    net = _conv_net("Deconvolution", params)
    errs, model, got = check_net(net)
    # Caffe's deconv size: s (H - 1) + d (k - 1) + 1 - 2 p
    assert got["y"].shape == net.blobs["y"].data.shape


def _pool(params, shape=(2, 3, 7, 8), rng=None):
    net = make_net('layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
                   'pooling_param { %s } }' % params, {"x": shape})
    rng = rng or np.random.RandomState(5)
    return check_net(net, rng=rng), net


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("geom,shape,out", [
    # ceil: (7 + 2 - 3) / 2 = 3 -> 4 windows; the last starts at 6 - 1 = 5 < 7 + 1: kept
    ("kernel_size: 3 stride: 2 pad: 1", (2, 3, 7, 7), (4, 4)),
    # ceil gives ceil((6 + 4 - 3) / 3) + 1 = 4, but window 3 starts at 9 - 2 = 7 >= 6 + 2:
    # the minus-one rule drops it (a window that starts in the padding)
    ("kernel_size: 3 stride: 3 pad: 2", (1, 2, 6, 6), (3, 3)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1", (2, 3, 8, 9), (5, 4)),
    ("kernel_size: 2 stride: 2", (1, 2, 5, 5), (3, 3)),          # ceil overhang, no pad
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 2, 8, 8), (3, 3)),
])
def test_pooling_windows(pool, geom, shape, out):
    (errs, model, got), net = _pool("pool: %s %s" % (pool, geom), shape)
    assert got["y"].shape[2:] == out


def test_ave_pooling_divisor_clipped_to_pad():
    """AVE with pad and a ceil overhang: the divisor counts the padding, not the overhang."""
    x = np.ones((1, 1, 6, 6), np.float32)
    net = make_net('layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { '
                   'pool: AVE kernel_size: 3 stride: 2 pad: 1 } }', {"x": x.shape})
    errs, model, got = check_net(net, {"x": x})
    y = got["y"][0, 0]
    # window 0 covers [-1, 2): 2 real of 3 counted -> 4/9; the last [5, 8) is clipped to
    # [5, 7) (H + pad): 1 real of 2 counted -> 1/2 per axis
    assert y.shape == (4, 4)
    np.testing.assert_allclose(y[0, 0], 4.0 / 9.0, rtol=1e-6)
    np.testing.assert_allclose(y[3, 3], 1.0 / 4.0, rtol=1e-6)
    np.testing.assert_allclose(y[0, 3], 2.0 / 6.0, rtol=1e-6)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_global_pooling(pool):
    _pool("pool: %s global_pooling: true" % pool, (2, 3, 5, 7))


def test_max_pooling_mask_top():
    net = make_net('layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "mask" '
                   'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }',
                   {"x": (2, 3, 7, 6)})
    errs, model, got = check_net(net)
    assert errs["mask"] == 0


def test_stochastic_pooling_test_phase():
    x = np.random.RandomState(0).rand(2, 3, 6, 6).astype(np.float32) + 0.1
    net = make_net('layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
                   'pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 } }', {"x": x.shape})
    check_net(net, {"x": x})


@pytest.mark.parametrize("params", [
    "local_size: 5 alpha: 0.3 beta: 0.75 k: 2",
    "local_size: 3 alpha: 1.5 beta: 0.5",
    "local_size: 3 alpha: 0.7 beta: 0.9 norm_region: WITHIN_CHANNEL",
    "local_size: 5 alpha: 2.0 beta: 0.75 norm_region: WITHIN_CHANNEL",
])
def test_lrn(params):
    net = make_net('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { %s } }'
                   % params, {"x": (2, 7, 6, 5)})
    x = (np.random.RandomState(1).randn(2, 7, 6, 5) * 2).astype(np.float32)
    check_net(net, {"x": x})


@pytest.mark.parametrize("params", ["pool: MAX pyramid_height: 3", "pool: AVE pyramid_height: 3",
                                    "pool: AVE pyramid_height: 1"])
def test_spp_levels(params):
    net = make_net('layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { %s } }'
                   % params, {"x": (2, 3, 9, 11)})
    check_net(net)


@pytest.mark.parametrize("params", ["kernel_size: 3", "kernel_h: 2 kernel_w: 3 stride: 2 pad: 1",
                                    "kernel_size: 2 dilation: 2 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2"])
def test_im2col_is_exact(params):
    net = make_net('layer { name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param '
                   '{ %s } }' % params, {"x": (2, 3, 6, 7)})
    errs, model, got = check_net(net)
    assert errs["y"] == 0


def test_convolution_3d():
    check_net(_conv_net("Convolution", "num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2",
                        shape=(1, 2, 5, 6, 7)))
    check_net(_conv_net("Deconvolution", "num_output: 3 kernel_size: 2 stride: 2",
                        shape=(1, 2, 3, 4, 2)))
