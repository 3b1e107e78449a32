"""Inference path: fused in-place chains (decaf/net_fuse.py) and lazily allocated diffs."""
import numpy as np
import pytest
from google.protobuf import text_format

import decaf
from decaf.proto import caffe_pb2

DEPLOY = """
name: "fuse"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: %s } }
layer { name: "conv2" type: "Convolution" bottom: "conv" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "relu2" type: "ReLU" bottom: "bn2" top: "bn2" }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "bn2" bottom: "conv2" top: "sum"
  eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 } }
layer { name: "relu3" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "sc2" type: "Scale" bottom: "sum" top: "sum" scale_param { bias_term: false } }
layer { name: "relu4" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "prob" type: "Softmax" bottom: "sum" top: "prob" }
"""


def _net(slope="0", force_backward=False, phase=caffe_pb2.TEST):
    p = caffe_pb2.NetParameter()
    text_format.Merge(DEPLOY % slope, p)
    p.force_backward = force_backward
    net = decaf.Net(p, phase)
    rs = np.random.RandomState(0)
    for layer in net.layers:
        for b in layer.blobs:
            b.data[...] = rs.rand(*b.shape) + 0.5
    net.blobs["data"].data[...] = rs.randn(*net.blobs["data"].shape)
    net.blobs["data"].data.flat[:3] = [np.nan, np.inf, -np.inf]
    return net


def _chains(net):
    return {net.layer_names[i]: net.layer_names[j] for i, j in net._fusion_plan().items()}


@pytest.mark.parametrize("slope", ["0", "0.25"])
def test_fused_chains_are_bit_identical(slope):
    fused, plain = _net(slope), _net(slope)
    plain.fuse_inference = False
    assert _chains(fused) == {"conv": "relu", "bn2": "relu2", "sum": "relu3", "sc2": "relu4"}
    out_f, out_p = fused.forward(), plain.forward()
    np.testing.assert_array_equal(out_f["prob"], out_p["prob"])
    for name in fused.blobs:
        np.testing.assert_array_equal(fused.blobs[name].data, plain.blobs[name].data)


def test_partial_forward_runs_layer_by_layer():
    fused, plain = _net(), _net()
    plain.fuse_inference = False
    fused.forward(end="sc")            # ends inside the bn -> sc -> relu chain
    plain.forward(end="sc")
    np.testing.assert_array_equal(fused.blobs["conv"].data, plain.blobs["conv"].data)
    assert (fused.blobs["conv"].data < 0).any()      # the ReLU did not run


def test_only_training_chains_fuse_when_backward_may_run():
    # a backward may run: only the BatchNorm [-> Scale] [-> ReLU] and Eltwise SUM -> ReLU
    # chains, which keep what the backwards read (Scale -> ReLU stays layer by layer)
    assert _chains(_net(force_backward=True)) == {"bn": "relu", "bn2": "relu2",
                                                  "sum": "relu3"}
    assert _chains(_net("-0.5", force_backward=True)) == {"bn": "sc", "bn2": "relu2",
                                                          "sum": "relu3"}
    # TRAIN: BatchNorm with batch statistics heads a training chain; this net has no loss,
    # so nothing else runs a backward and the other chains fuse as at inference
    assert _chains(_net(phase=caffe_pb2.TRAIN)) == {"bn": "relu", "bn2": "relu2",
                                                     "sum": "relu3", "sc2": "relu4"}


def test_deploy_forward_allocates_no_diff_and_diff_still_works():
    net = _net()
    net.forward()
    assert not any(b.has_diff for b in net.blobs.values())
    assert not any(b.has_diff for layer in net.layers for b in layer.blobs)
    d = net.blobs["prob"].diff
    assert d.shape == net.blobs["prob"].shape and not d.any()
    net.blobs["prob"].diff[...] = 1.0
    assert net.blobs["prob"].diff.sum() == d.size


def test_scale_in_place_keeps_no_copy_without_backward():
    net = _net()
    net.forward()
    assert net.layers[net.layer_index["sc"]]._temp is None


def test_share_diff_links_before_allocation():
    a, b = decaf.Blob((2, 3)), decaf.Blob((6,))
    b.share_diff(a)
    assert a._diff is None and b._diff is None
    b.diff[...] = np.arange(6)
    np.testing.assert_array_equal(a.diff.ravel(), np.arange(6))
    c, d = decaf.Blob((4,)), decaf.Blob((4,))
    d.share_diff(c)
    c.diff[...] = 7                          # the owner first
    np.testing.assert_array_equal(d.diff, [7, 7, 7, 7])


CONV_RELU = """
name: "conv_relu"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %d dim: 4 dim: 9 dim: 8 } } }
layer { name: "c1x1" type: "Convolution" bottom: "data" top: "c1x1"
  convolution_param { num_output: 6 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "r1" type: "ReLU" bottom: "c1x1" top: "c1x1" relu_param { negative_slope: %s } }
layer { name: "c3x3" type: "Convolution" bottom: "c1x1" top: "c3x3"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 bias_term: false
  weight_filler { type: "gaussian" std: 1 } } }
layer { name: "r2" type: "ReLU" bottom: "c3x3" top: "c3x3" relu_param { negative_slope: %s } }
layer { name: "dw" type: "Convolution" bottom: "c3x3" top: "dw"
  convolution_param { num_output: 5 group: 5 kernel_size: 3 stride: 2 pad: 1
  weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "r3" type: "ReLU" bottom: "dw" top: "dw" relu_param { negative_slope: %s } }
layer { name: "big" type: "Convolution" bottom: "dw" top: "big"
  convolution_param { num_output: 130 kernel_size: 2 weight_filler { type: "gaussian" std: 1 }
  bias_filler { type: "gaussian" std: 1 } } }
layer { name: "r4" type: "ReLU" bottom: "big" top: "big" relu_param { negative_slope: %s } }
layer { name: "out" type: "Convolution" bottom: "big" top: "out"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "r5" type: "ReLU" bottom: "out" top: "relu_out" }
"""


@pytest.mark.parametrize("num", [1, 3])
@pytest.mark.parametrize("slope", ["0", "0.25"])
def test_convolution_relu_fuses_bit_identically(num, slope):
    """Convolution -> in-place ReLU at inference: every engine (1x1 and im2col + GEMM image
    by image or in chunks, row GEMMs, depthwise), with and without bias, NaN / inf inputs."""
    def build():
        p = caffe_pb2.NetParameter()
        text_format.Merge(CONV_RELU % ((num,) + (slope,) * 4), p)
        net = decaf.Net(p, caffe_pb2.TEST)
        rs = np.random.RandomState(1)
        net.blobs["data"].data[...] = rs.randn(*net.blobs["data"].shape)
        net.blobs["data"].data[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
        return net
    fused, plain = build(), build()
    plain.fuse_inference = False
    for a, b in zip(fused.layers, plain.layers):
        for x, y in zip(a.blobs, b.blobs):
            y.data[...] = x.data
    # the last ReLU is not in place: it stays a layer of its own
    assert _chains(fused) == {"c1x1": "r1", "c3x3": "r2", "dw": "r3", "big": "r4"}
    fused.forward()
    plain.forward()
    for name in fused.blobs:
        np.testing.assert_array_equal(fused.blobs[name].data, plain.blobs[name].data)
    c = fused.blobs["c1x1"].data
    assert (c < 0).any() == (slope != "0") and np.isnan(c).any()


TRAIN_CHAINS = """
name: "train_chains"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 dim: 6 dim: 5 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" %s }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" %s scale_param { bias_term: %s } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: %s } }
layer { name: "conv2" type: "Convolution" bottom: "conv" top: "conv2"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "relu2" type: "ReLU" bottom: "bn2" top: "bn2" }
layer { name: "ip" type: "InnerProduct" bottom: "bn2" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("bn_param,sc_param,bias,slope,chains", [
    ("", "", "true", "0", {"bn": "relu", "bn2": "relu2"}),
    ("", "", "false", "0.2", {"bn": "relu", "bn2": "relu2"}),
    # frozen statistics while training (fine-tuning): Scale keeps its own copy of x_norm
    ("batch_norm_param { use_global_stats: true }", "", "true", "0",
     {"bn": "relu", "bn2": "relu2"}),
    # a frozen Scale, a ReLU whose backward reads its bottom (slope < 0): left out
    ("", "param { lr_mult: 0 } param { lr_mult: 0 }", "true", "-0.3",
     {"bn": "sc", "bn2": "relu2"}),
])
def test_training_chain_matches_layer_by_layer(bn_param, sc_param, bias, slope, chains):
    """Forward, loss, every diff, param diff and BatchNorm statistic bit-identical to the
    layers run one by one, over two iterations (x_norm and the Scale input are reused)."""
    def build():
        p = caffe_pb2.NetParameter()
        text_format.Merge(TRAIN_CHAINS % (bn_param, sc_param, bias, slope), p)
        net = decaf.Net(p, caffe_pb2.TRAIN)
        rs = np.random.RandomState(2)
        for layer in net.layers:
            for b in layer.blobs:
                b.data[...] = rs.rand(*b.shape) + 0.5
        return net
    fused, plain = build(), build()
    plain.fuse_inference = False
    assert _chains(fused) == chains
    # the backward of each chain runs as one too (its last layer -> its head)
    assert {fused.layer_names[k]: fused.layer_names[v]
            for k, v in fused._backward_fusion_plan().items()} == {v: k for k, v in chains.items()}
    rs = np.random.RandomState(3)
    for _ in range(2):
        data = rs.randn(4, 3, 6, 5)
        label = rs.randint(0, 5, 4)
        losses = []
        for net in (fused, plain):
            net.blobs["data"].data[...] = data
            net.blobs["label"].data[...] = label
            net.clear_param_diffs()
            losses.append(net.forward_backward())
        assert losses[0] == losses[1] and np.isfinite(losses[0])
        for name in fused.blobs:
            np.testing.assert_array_equal(fused.blobs[name].data, plain.blobs[name].data)
            np.testing.assert_array_equal(fused.blobs[name].diff, plain.blobs[name].diff)
        for a, b in zip(fused.layers, plain.layers):
            for x, y in zip(a.blobs, b.blobs):
                np.testing.assert_array_equal(x.data, y.data)
                np.testing.assert_array_equal(x.diff, y.diff)
    assert np.abs(fused.params["sc"][0].diff).sum() > 0 or sc_param


CONV_BN = """
layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: %d kernel_size: %d pad: %d stride: %d group: %d
                      weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: %s } }
%s
"""


def _fused_and_plain(text):
    """The TEST net of ``text`` twice: with the inference fusion, and without."""
    nets = []
    for fuse in (True, False):
        p = caffe_pb2.NetParameter()
        text_format.Merge(text, p)
        net = decaf.Net(p, caffe_pb2.TEST)
        net.fuse_inference = fuse
        nets.append(net)
    return nets


def _engine_kind(engine):
    kind = type(engine).__name__
    for flag in ("direct", "bi", "per_image"):
        if getattr(engine, flag, False):
            kind += "/" + flag
    return kind


@pytest.mark.parametrize("shape,out,k,pad,stride,group,bias,relu,engine", [
    ((3, 2, 20, 20), 16, 3, 1, 1, 1, "true", True, "RowConv/direct"),  # top >> bottom
    # one input channel, 3x3: the depthwise loops, the BatchNorm pass in their rows
    ((3, 1, 21, 20), 8, 3, 1, 2, 1, "true", True, "DepthwiseConv"),
    ((2, 1, 9, 9), 5, 3, 0, 1, 1, "false", False, "DepthwiseConv"),
    ((5, 16, 8, 8), 16, 3, 1, 1, 1, "true", True, "RowConv/bi"),       # batch innermost
    ((2, 8, 12, 12), 128, 3, 1, 1, 1, "false", True, "_GemmConv/per_image"),
    ((4, 8, 4, 4), 128, 1, 0, 1, 1, "true", False, "_GemmConv"),       # chunks of images
    ((3, 6, 9, 9), 6, 3, 1, 2, 6, "true", True, "DepthwiseConv"),
])
def test_convolution_batchnorm_chain_is_bit_identical(shape, out, k, pad, stride, group, bias,
                                                      relu, engine):
    """Convolution -> BatchNorm -> Scale [-> ReLU] in place: the BatchNorm pass runs on each
    chunk of images as the convolution finishes it (ConvolutionLayer.forward_post), with the
    layers' numbers, for every convolution engine; new weights or statistics are seen."""
    dims = " ".join("dim: %d" % d for d in shape)
    text = CONV_BN % (dims, out, k, pad, stride, group, bias,
                      'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }'
                      if relu else "")
    nets = fused, plain = _fused_and_plain(text)
    assert _chains(fused) == {"conv": "relu" if relu else "sc"}
    assert _engine_kind(fused.layers[1].engine) == engine
    for trial in range(2):
        rs = np.random.RandomState(trial)
        values = [rs.randn(*b.shape) for layer in fused.layers for b in layer.blobs]
        nconv = len(fused.layers[1].blobs)
        values[nconv + 1] = np.abs(values[nconv + 1])                # the variance
        x = rs.randn(*shape)
        x.flat[:2] = [np.nan, np.inf]
        for net in nets:
            blobs = [b for layer in net.layers for b in layer.blobs]
            for b, v in zip(blobs, values):
                b.data[...] = v
            net.layers[2].blobs[2].data[...] = 0.5 + trial         # the scale factor
            net.blobs["data"].data[...] = x
            net.forward()
        np.testing.assert_array_equal(fused.blobs["conv"].data, plain.blobs["conv"].data)
        assert np.isfinite(fused.blobs["conv"].data).mean() > 0.3


CONV_POOL = """
layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: %d kernel_size: %d pad: %d stride: 1 group: %d
                      weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
%s
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: %s kernel_size: 3 stride: 2 pad: %d } }
layer { name: "after" type: "ReLU" bottom: "pool" top: "pool" }
"""
BN_SC_RELU = """
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: 0.1 } }
"""
RELU = 'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }'


@pytest.mark.parametrize("shape,out,k,pad,group,engine", [
    ((3, 2, 20, 19), 16, 3, 1, 1, "RowConv/direct"),
    ((2, 8, 12, 12), 128, 3, 1, 1, "_GemmConv/per_image"),
    ((4, 8, 5, 5), 128, 1, 0, 1, "_GemmConv"),                  # chunks of images
    ((3, 6, 9, 9), 6, 3, 1, 6, "DepthwiseConv"),
    ((3, 1, 40, 37), 160, 3, 1, 1, "DepthwiseConv"),              # image by image (> 1 MB)
])
@pytest.mark.parametrize("follow", ["", RELU, BN_SC_RELU])
@pytest.mark.parametrize("method,pool_pad", [("MAX", 0), ("MAX", 1), ("AVE", 1)])
def test_convolution_pooling_tail_is_bit_identical(shape, out, k, pad, group, engine, follow,
                                                   method, pool_pad):
    """Convolution [-> BatchNorm -> Scale] [-> ReLU] -> Pooling at inference: the pooling runs
    on each chunk of images the convolution has just written (PoolingLayer.forward_images),
    with the layers' numbers (ceil windows in the padding, NaN / inf inputs), and the
    convolution's top stays observable."""
    dims = " ".join("dim: %d" % d for d in shape)
    text = CONV_POOL % (dims, out, k, pad, group, follow, method, pool_pad)
    nets = fused, plain = _fused_and_plain(text)
    assert _chains(fused) == {"conv": "pool"}
    assert _engine_kind(fused.layers[1].engine) == engine
    rs = np.random.RandomState(3)
    values = [rs.randn(*b.shape) for layer in fused.layers for b in layer.blobs]
    if follow == BN_SC_RELU:
        values[3] = np.abs(values[3]) + 0.1                        # the variance
        values[4][...] = 2.0                                         # the scale factor
    x = rs.randn(*shape)
    x.flat[:3] = [np.nan, np.inf, -np.inf]
    for net in nets:
        for b, v in zip([b for layer in net.layers for b in layer.blobs], values):
            b.data[...] = v
        net.blobs["data"].data[...] = x
        net.forward()
    for name in ("conv", "pool"):
        np.testing.assert_array_equal(fused.blobs[name].data, plain.blobs[name].data)
    assert np.isfinite(fused.blobs["pool"].data).mean() > 0.3


def test_pooling_tail_only_where_it_is_safe():
    """No pooling tail for a pool with a mask top, one that reads another blob, or a net whose
    backward may run (training keeps its own chains)."""
    base = CONV_POOL % ("dim: 2 dim: 2 dim: 8 dim: 8", 4, 3, 1, 1, RELU, "MAX", 0)
    mask = base.replace('top: "pool"\n  pooling_param', 'top: "pool" top: "mask"\n  pooling_param')
    for text, phase, chains in ((base, caffe_pb2.TEST, {"conv": "pool"}),
                                (mask, caffe_pb2.TEST, {"conv": "relu"}),
                                (base, caffe_pb2.TRAIN, {})):
        p = caffe_pb2.NetParameter()
        text_format.Merge(text, p)
        p.force_backward = phase == caffe_pb2.TRAIN
        assert _chains(decaf.Net(p, phase)) == chains
