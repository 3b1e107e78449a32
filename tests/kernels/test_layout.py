"""The shifted-GEMM engine's layout moves (decaf.kernels.layout) against a plain reference on
both paths (two passes on one thread, one compiled loop in parallel), and the bordered image
a convolution's forward leaves for its backward in one Net.forward_backward (RowConv.token,
Layer.stable_bottom)."""
import numpy as np
import pytest
from google.protobuf import text_format

import decaf
from decaf.kernels import gemm, layout, rowconv, threads
from decaf.kernels.im2col import conv_output_shape
from decaf.proto import caffe_pb2

SHAPES = [(32, 16, 8, 8, 1, 1), (3, 5, 7, 9, 2, 0), (1, 1, 1, 1, 0, 0), (17, 3, 4, 6, 1, 2),
          (40, 2, 5, 17, 0, 3)]


@pytest.fixture(params=["serial", "parallel"])
def path(request, monkeypatch):
    if request.param == "parallel":      # the compiled loops on two threads, any size
        monkeypatch.setattr(threads, "single_pool", lambda: True)
        monkeypatch.setattr(decaf.kernels.jit, "ONE_POOL_STREAMING_MIN_ELEMENTS", 0)
        before = threads.get_num_threads()
        threads.set_num_threads(2)
        assert gemm.parallel()
        yield request.param
        threads.set_num_threads(before)
    else:
        monkeypatch.setattr(gemm, "parallel", lambda: False)
        yield request.param


def reference_bordered(x, img, ph, pw):
    out = img.copy()
    nb, c, h, w = x.shape
    for n in range(nb):
        for ci in range(c):
            for i in range(h):
                for j in range(w):
                    out[ph + i, ci, pw + j, n] = x[n, ci, i, j]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_to_and_from_bordered(path, shape, dtype):
    nb, c, h, w, ph, pw = shape
    rng = np.random.RandomState(1)
    x = rng.standard_normal((nb, c, h, w)).astype(dtype)
    x[0, 0, 0, 0] = np.nan                                   # moved, not computed on
    img = np.full((h + 2 * ph + 1, c, w + 2 * pw + 1, nb), 7.0, dtype)   # border: 7
    want = reference_bordered(x, img, ph, pw)
    layout.to_bordered(x, img, ph, pw, np.empty(x.size, dtype))
    np.testing.assert_array_equal(img, want)
    dx = np.full_like(x, -1.0)
    layout.from_bordered(img, ph, pw, dx, np.empty(x.size, dtype))
    np.testing.assert_array_equal(dx, x)
    # a strided bottom diff (one of two bottoms' halves) and a strided source
    wide = np.full((nb, 2 * c, h, w), -1.0, dtype)
    layout.from_bordered(img, ph, pw, wide[:, ::2], np.empty(x.size, dtype))
    np.testing.assert_array_equal(wide[:, ::2], x)
    assert (wide[:, 1::2] == -1).all()
    img2 = np.full_like(img, 7.0)
    layout.to_bordered(wide[:, ::2], img2, ph, pw, np.empty(x.size, dtype))
    np.testing.assert_array_equal(img2, want)


# -- the forward's bordered image in the backward ----------------------------------------------

def shift_engine(num=4, c=16, spatial=(6, 5), m=5):
    geom = ((3, 3), (1, 1), (1, 1), (1, 1))
    out = conv_output_shape(spatial, *geom)
    eng = rowconv.RowConv(np, np.float64, num, c, spatial, m, geom, 1, out)
    assert eng.shift and eng.shift_wgrad and eng.nbs == num
    return eng, out


def passes(eng, x, w, dy, out, token):
    y = np.empty((x.shape[0], w.shape[0]) + out)
    eng.token = token
    eng.forward(x, w, None, y)
    return y


def test_backward_reuses_the_image_of_the_same_pass(monkeypatch):
    eng, out = shift_engine()
    rng = np.random.RandomState(0)
    x0, x1 = rng.standard_normal((2, 4, 16, 6, 5))
    w = rng.standard_normal((5, 16, 3, 3))
    dy = rng.standard_normal((4, 5) + out)
    built = []
    real = layout.to_bordered
    monkeypatch.setattr(layout, "to_bordered", lambda x, *a: built.append(x.ctypes.data)
                        or real(x, *a))

    def grads(x, token, *forwards):
        for f in forwards:                        # the forwards before this backward
            passes(eng, f, w, dy, out, token)
        dw, dx = np.zeros_like(w), np.zeros_like(x)
        eng.token = token
        eng.backward(dy, x, w, dw, None, dx)
        return dw, dx

    want = grads(x0, None, x0)                    # no pass: the backward builds it again
    assert len(built) == 2
    del built[:]
    got = grads(x0, 11, x0)
    assert len(built) == 1                        # the forward's image, reused
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # two bottoms through one engine: the image holds the last one's, x0's is rebuilt
    del built[:]
    got = grads(x0, 12, x0, x1)
    assert built == [x0.ctypes.data, x1.ctypes.data, x0.ctypes.data]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # an image of another pass (same bottom array, its values changed since) is not reused
    passes(eng, x0, w, dy, out, 13)
    x0[...] = x1
    del built[:]
    got = grads(x0, 14)
    want1 = grads(x1.copy(), None, x1.copy())
    assert built[0] == x0.ctypes.data
    for a, b in zip(got, want1):
        np.testing.assert_array_equal(a, b)


NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 16 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 0.1 } } }
%s
layer { name: "loss" type: "Reduction" bottom: "conv" top: "loss" loss_weight: 1
        reduction_param { operation: SUMSQ } }
"""
# a ReLU after the convolution, in place on a Reshape of the convolution's bottom (the Split's
# tops and the Reshape's top share the bottom's memory, as in Caffe): Caffe's backward then
# reads the rectified bottom, so the forward's image must not be kept
LATER_INPLACE = """
layer { name: "flat" type: "Reshape" bottom: "data" top: "flat"
        reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "r" type: "ReLU" bottom: "flat" top: "flat" }
layer { name: "s" type: "Reduction" bottom: "flat" top: "s" loss_weight: 0 }
"""


def net(extra=""):
    p = text_format.Parse(NET % extra, caffe_pb2.NetParameter())
    p.force_backward = True
    n = decaf.Net(p, decaf.TRAIN)
    n.blobs["data"].data[...] = np.random.RandomState(3).standard_normal((2, 16, 6, 6))
    return n


def gradient(n, together):
    data = n.blobs["data"].data.copy()
    n.clear_param_diffs()
    if together:
        n.forward_backward()
    else:
        n.forward()
        n.backward()
    dw = n.params["conv"][0].diff.copy()
    n.blobs["data"].data[...] = data
    return dw


@pytest.mark.parametrize("extra,stable", [("", True), (LATER_INPLACE, False)])
def test_stable_bottoms_and_forward_backward(monkeypatch, extra, stable):
    n = net(extra)
    conv = n.layers[n.layer_index["conv"]]
    assert isinstance(conv.engine, rowconv.RowConv) and conv.engine.shift_wgrad
    want = gradient(n, together=False)
    got = gradient(n, together=True)
    assert conv.stable_bottom is stable
    np.testing.assert_array_equal(got, want)
    if not stable:    # the check matters: kept anyway, the weight gradient would be wrong
        monkeypatch.setattr(type(n), "_mark_stable_bottoms", lambda self: [
            setattr(layer, "stable_bottom", True) for layer in self.layers])
        n._stable_epoch = None
        assert not np.array_equal(gradient(n, together=True), want)


def test_python_layers_make_no_bottom_stable():
    n = net()
    n.layers[0].type = "Python"          # any Python layer may write any blob
    n._stable_epoch = None
    n.forward_backward()
    assert not any(layer.stable_bottom for layer in n.layers)
