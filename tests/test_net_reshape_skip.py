"""Net.forward_from_to skips the shape-only reshapes while no blob changed shape or memory
(decaf.blob.shape_epoch), and a TEST-phase max pooling writes no mask; the outputs stay those
of a net that reshapes every layer every time."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe
import decaf
from decaf import blob as blob_mod
from decaf.proto import caffe_pb2

DEPLOY = """
name: "skip"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "count" type: "Python" bottom: "pool" top: "counted"
  python_param { module: "tests.test_net_reshape_skip" layer: "CountingCopy" } }
layer { name: "flat" type: "Flatten" bottom: "counted" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
layer { name: "grow" type: "Python" bottom: "prob" top: "grown"
  python_param { module: "tests.test_net_reshape_skip" layer: "GrowingOutput" } }
"""


class CountingCopy(caffe.Layer):
    """top = bottom; counts its reshapes (a Python layer: the net reshapes it every time)."""
    reshapes = 0

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        type(self).reshapes += 1
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff


class GrowingOutput(caffe.Layer):
    """A net output whose shape its forward sets anew every time (as DetectionOutput's)."""

    def setup(self, bottom, top):
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.calls += 1
        top[0].reshape(1 + self.calls % 3)
        top[0].data[...] = bottom[0].data.sum()

    def backward(self, top, propagate_down, bottom):
        pass


def _net(batch=2):
    p = caffe_pb2.NetParameter()
    text_format.Merge(DEPLOY, p)
    p.layer[0].input_param.shape[0].dim[0] = batch
    net = decaf.Net(p, caffe_pb2.TEST)
    rs = np.random.RandomState(0)
    for layer in net.layers:
        for b in layer.blobs:
            b.data[...] = rs.randn(*b.shape)
    return net


def _count_reshapes(net, name):
    layer = net.layers[net.layer_names.index(name)]
    calls = []
    original = layer.reshape
    layer.reshape = lambda bottom, top: (calls.append(1), original(bottom, top))
    return calls


def test_settled_net_skips_shape_only_reshapes_and_keeps_its_outputs():
    net, ref = _net(), _net()
    ref_calls = _count_reshapes(ref, "conv")
    x = np.random.RandomState(1).randn(*net.blobs["data"].shape).astype(np.float32)
    conv_calls = _count_reshapes(net, "conv")
    CountingCopy.reshapes = 0
    for step in range(4):
        net.blobs["data"].data[...] = x + step
        ref.blobs["data"].data[...] = x + step
        ref._settled = None                  # the reference reshapes every layer every time
        net.forward()
        ref.forward()
        np.testing.assert_array_equal(net.blobs["prob"].data, ref.blobs["prob"].data)
        np.testing.assert_array_equal(net.blobs["grown"].data, ref.blobs["grown"].data)
    # the first forward reshapes everything and settles; the quiet, growing output does not
    # move the epoch; the Python layer is reshaped every time
    assert len(conv_calls) == 1 and len(ref_calls) == 4
    assert CountingCopy.reshapes == 8
    assert net.blobs["grown"].quiet and not net.blobs["prob"].quiet


def test_a_new_input_shape_reshapes_again():
    net = _net()
    net.forward()
    net.forward()
    assert net._settled == blob_mod.shape_epoch()
    net.blobs["data"].reshape(3, 3, 9, 8)              # no net.reshape(): forward does it
    x = np.random.RandomState(2).randn(3, 3, 9, 8).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    fresh = _net(batch=3)
    fresh.blobs["data"].reshape(3, 3, 9, 8)
    fresh.blobs["data"].data[...] = x
    fresh.forward()
    assert net.blobs["pool"].shape == (3, 4, 4, 4)
    np.testing.assert_array_equal(net.blobs["prob"].data, fresh.blobs["prob"].data)


def test_shape_epoch_counts_changes_of_existing_blobs_only():
    e = blob_mod.shape_epoch()
    a = decaf.Blob((2, 3))
    b = decaf.Blob((6,))
    assert blob_mod.shape_epoch() == e                 # new blobs
    a.reshape(2, 3)
    assert blob_mod.shape_epoch() == e                 # the same shape
    a.reshape(3, 2)
    assert blob_mod.shape_epoch() == e + 1
    a.share_data(b)
    assert blob_mod.shape_epoch() == e + 2             # other memory
    a.share_data(b)
    assert blob_mod.shape_epoch() == e + 2
    b.quiet = True
    b.reshape(7)
    assert blob_mod.shape_epoch() == e + 2


def test_test_phase_pooling_writes_no_mask_and_backward_still_works():
    net = _net()
    pool = net.layers[net.layer_names.index("pool")]
    assert not pool.needs_backward
    net.forward()
    assert not pool._mask_valid                        # the forward skipped the mask
    top, bottom = net.top_vecs[3], net.bottom_vecs[3]
    dy = np.random.RandomState(3).randn(*top[0].shape).astype(np.float32)
    top[0].diff[...] = dy
    pool.Backward(top, [True], bottom)                 # a backward by hand: mask computed
    assert pool._mask_valid
    x = bottom[0].data
    want = np.zeros_like(x)
    for n, c, a, b in np.ndindex(*top[0].shape):
        win = x[n, c, 2 * a:2 * a + 3, 2 * b:2 * b + 3]
        i, j = np.unravel_index(np.argmax(win), win.shape)   # the first maximum
        want[n, c, 2 * a + i, 2 * b + j] += dy[n, c, a, b]
    np.testing.assert_allclose(bottom[0].diff, want, rtol=1e-6)


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_pooling_mask_top_is_always_written(phase):
    p = caffe_pb2.NetParameter()
    text_format.Merge("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
""", p)
    net = decaf.Net(p, phase)
    net.blobs["data"].data[...] = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    net.forward()
    np.testing.assert_array_equal(net.blobs["mask"].data.ravel(), [5, 7, 13, 15])
