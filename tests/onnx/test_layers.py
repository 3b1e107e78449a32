"""The rules of the element-wise, plumbing, reducing and learned-blob layers in the export."""
import numpy as np
import pytest

from .helpers import check_net, make_net, randomize

X4 = {"x": (2, 3, 4, 5)}


def _one(type_name, params="", inputs=X4, bottoms=("x",), tops=("y",), feeds=None,
         rng_seed=0, phase=None):
    layer = 'layer { name: "l" type: "%s" %s %s %s }' % (
        type_name, " ".join('bottom: "%s"' % b for b in bottoms),
        " ".join('top: "%s"' % t for t in tops), params)
    net = make_net(layer, inputs)
    randomize(net, np.random.RandomState(rng_seed + 1))
    return check_net(net, feeds, rng=np.random.RandomState(rng_seed))


@pytest.mark.parametrize("type_name,params", [
    ("ReLU", ""), ("ReLU", "relu_param { negative_slope: 0.1 }"), ("Sigmoid", ""),
    ("TanH", ""), ("AbsVal", ""), ("BNLL", ""), ("ELU", "elu_param { alpha: 0.4 }"),
    ("Swish", "swish_param { beta: 1.7 }"), ("Swish", ""),
    ("Clip", "clip_param { min: -0.3 max: 0.8 }"),
    ("Threshold", "threshold_param { threshold: 0.2 }"), ("Dropout", ""),
    ("Exp", ""), ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.3 }"),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }"),
    ("Power", "power_param { power: 0 scale: 3 }"),      # constant 1
    ("Power", "power_param { power: 3 scale: 0 shift: 2 }"),   # constant shift^power
    ("Power", "power_param { scale: -1.5 shift: 0.25 }"),
    ("PReLU", ""), ("PReLU", "prelu_param { channel_shared: true }"),
])
def test_neuron(type_name, params):
    _one(type_name, params)


@pytest.mark.parametrize("params", ["", "log_param { base: 10 scale: 2 shift: 0.5 }",
                                    "log_param { base: 2 }"])
def test_log(params):
    x = np.random.RandomState(0).rand(2, 3, 4, 5).astype(np.float32) + 0.5
    _one("Log", params, feeds={"x": x})


@pytest.mark.parametrize("params", [
    "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 }",
    "eltwise_param { operation: SUM }",
    "eltwise_param { operation: PROD }",
    "eltwise_param { operation: MAX }",
])
def test_eltwise(params):
    _one("Eltwise", params, inputs={"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)},
         bottoms=("a", "b", "c"))


def test_batch_norm_scale_factor_zero():
    """BatchNorm divides its statistics by the scale factor, and uses 0 when it is 0."""
    for factor in (0.0, 4.0):
        net = make_net('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" '
                       'batch_norm_param { use_global_stats: true eps: 0.01 } }', X4)
        randomize(net, np.random.RandomState(2))
        net.layers[1].blobs[2].data[...] = factor
        errs, model, got = check_net(net)
        if factor == 0:   # mean 0, var 0: y = x / sqrt(eps)
            x = np.random.RandomState(0).randn(*X4["x"]).astype(np.float32)
            np.testing.assert_allclose(got["y"], x / np.sqrt(np.float32(0.01)), rtol=1e-6)


def test_batch_norm_batch_statistics():
    net = make_net('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" '
                   'batch_norm_param { use_global_stats: false } }', X4)
    check_net(net)


@pytest.mark.parametrize("params,inputs", [
    ("scale_param { bias_term: true }", X4),
    ("scale_param { axis: 2 num_axes: 2 }", X4),
    ("scale_param { axis: 0 num_axes: 0 bias_term: true }", X4),      # scalar
    ("scale_param { axis: -3 num_axes: 1 }", X4),
])
def test_scale(params, inputs):
    _one("Scale", params, inputs)


def test_scale_and_bias_two_bottoms():
    inputs = {"x": (2, 3, 4, 5), "s": (3, 4)}
    _one("Scale", "scale_param { axis: 1 bias_term: true }", inputs, bottoms=("x", "s"))
    _one("Bias", "bias_param { axis: 1 }", inputs, bottoms=("x", "s"))
    _one("Bias", "bias_param { axis: 2 num_axes: 1 }")


@pytest.mark.parametrize("params,shape", [
    ("inner_product_param { num_output: 7 }", (3, 4, 2, 2)),
    ("inner_product_param { num_output: 7 axis: 2 }", (3, 4, 5)),
    ("inner_product_param { num_output: 7 transpose: true }", (3, 10)),
    ("inner_product_param { num_output: 7 axis: -1 bias_term: false }", (2, 3, 6)),
])
def test_inner_product(params, shape):
    _one("InnerProduct", params, {"x": shape})


def test_embed():
    idx = np.array([[0, 4, 2], [3, 3, 1]], np.float32)
    _one("Embed", "embed_param { num_output: 6 input_dim: 5 }", {"x": idx.shape},
         feeds={"x": idx})


@pytest.mark.parametrize("params", [
    "", "mvn_param { across_channels: true }", "mvn_param { normalize_variance: false }",
    "mvn_param { eps: 0.1 }"])
def test_mvn(params):
    _one("MVN", params)


@pytest.mark.parametrize("params", ["", "norm_param { across_spatial: false }",
                                    "norm_param { channel_shared: true eps: 0.5 }"])
def test_normalize(params):
    _one("Normalize", params)


@pytest.mark.parametrize("params", [
    "crop_param { axis: 2 offset: 1 offset: 2 }", "crop_param { axis: 1 offset: 1 }",
    "crop_param { axis: 3 offset: 3 }"])
def test_crop_offsets(params):
    errs, model, got = _one("Crop", params, {"x": (2, 4, 6, 7), "r": (2, 3, 3, 2)},
                            bottoms=("x", "r"))


def test_crop_takes_the_offset_window():
    x = np.arange(2 * 4 * 6 * 7, dtype=np.float32).reshape(2, 4, 6, 7)
    errs, model, got = _one("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }",
                            {"x": x.shape, "r": (1, 1, 3, 2)}, bottoms=("x", "r"),
                            feeds={"x": x, "r": np.zeros((1, 1, 3, 2), np.float32)})
    np.testing.assert_array_equal(got["y"], x[:, :, 1:4, 2:4])


@pytest.mark.parametrize("type_name,params,shape", [
    ("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }", (2, 3, 4, 5)),
    ("Reshape", "reshape_param { shape { dim: 2 dim: -1 } axis: 1 num_axes: 2 }", (2, 3, 4, 5)),
    ("Reshape", "reshape_param { shape { dim: 2 dim: 2 } axis: -2 num_axes: 1 }", (2, 3, 5, 4)),
    ("Reshape", "reshape_param { shape { dim: -1 } axis: 0 num_axes: 2 }", (2, 3, 4, 5)),
    ("Flatten", "", (2, 3, 4, 5)),
    ("Flatten", "flatten_param { axis: 2 end_axis: -1 }", (2, 3, 4, 5)),
    ("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }", (2, 3, 4, 5)),
    ("Permute", "permute_param { order: 1 order: 0 }", (2, 3, 4, 5)),
    ("Tile", "tile_param { axis: 1 tiles: 3 }", (2, 3, 4)),
    ("Tile", "tile_param { axis: -1 tiles: 2 }", (2, 3, 4)),
    ("Softmax", "", (2, 5, 3)),
    ("Softmax", "softmax_param { axis: 2 }", (2, 5, 3, 4)),
    ("Softmax", "softmax_param { axis: -1 }", (3, 6)),
])
def test_shape_layers(type_name, params, shape):
    _one(type_name, params, {"x": shape})


def test_slice_concat_split():
    layers = ('layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" top: "c" '
              'slice_param { axis: 2 slice_point: 1 slice_point: 3 } }\n'
              'layer { name: "sp" type: "Split" bottom: "b" top: "b1" top: "b2" }\n'
              'layer { name: "cat" type: "Concat" bottom: "c" bottom: "a" bottom: "b1" '
              'top: "y" concat_param { axis: 2 } }\n'
              'layer { name: "e" type: "Slice" bottom: "b2" top: "u" top: "v" '
              'slice_param { axis: 1 } }\n'
              'layer { name: "cat0" type: "Concat" bottom: "u" bottom: "v" top: "w" '
              'concat_param { axis: 0 } }\n'
              'layer { name: "si" type: "Silence" bottom: "w" }')
    net = make_net(layers, {"x": (2, 4, 6, 3)})
    errs, model, got = check_net(net)
    assert set(got) == {"y"}


@pytest.mark.parametrize("params", [
    "reduction_param { operation: SUM axis: 1 coeff: 2 }",
    "reduction_param { operation: ASUM axis: 2 }",
    "reduction_param { operation: SUMSQ axis: 0 coeff: -0.5 }",
    "reduction_param { operation: MEAN axis: -1 coeff: 3 }"])
def test_reduction(params):
    _one("Reduction", params)


@pytest.mark.parametrize("params", [
    "", "argmax_param { top_k: 3 out_max_val: true }", "argmax_param { axis: 1 top_k: 2 }",
    "argmax_param { axis: -1 out_max_val: true top_k: 2 }"])
def test_argmax_ties_rank_the_larger_index_first(params):
    x = np.random.RandomState(0).randint(0, 3, (2, 3, 4, 5)).astype(np.float32)  # many ties
    _one("ArgMax", params, feeds={"x": x})


def test_batch_reindex_and_parameter():
    idx = np.array([2, 0, 0], np.float32)
    _one("BatchReindex", "", {"x": (3, 4, 2), "i": (3,)}, bottoms=("x", "i"),
         feeds={"x": np.random.RandomState(0).randn(3, 4, 2).astype(np.float32), "i": idx})
    _one("Parameter", "parameter_param { shape { dim: 2 dim: 3 } }", {}, bottoms=())


def test_filter_keeps_selected_items():
    sel = np.array([1, 0, 1, 1], np.float32)
    errs, model, got = _one("Filter", "", {"x": (4, 3), "z": (4, 2, 2), "s": (4,)},
                            bottoms=("x", "z", "s"), tops=("y", "w"),
                            feeds={"x": np.arange(12, dtype=np.float32).reshape(4, 3),
                                   "z": np.ones((4, 2, 2), np.float32), "s": sel})
    assert got["y"].shape == (3, 3) and got["w"].shape == (3, 2, 2)
    assert not model.graph.output[0].type.tensor_type.shape.dim[0].HasField("dim_value")


@pytest.mark.parametrize("type_name,expose,static", [
    ("LSTM", False, False), ("LSTM", True, True), ("RNN", False, True), ("RNN", True, False)])
def test_recurrent_unrolled(type_name, expose, static):
    T, N, H = 5, 3, 4
    states = ("h0", "c0") if type_name == "LSTM" else ("h0",)
    inputs = {"x": (T, N, 2, 3), "cont": (T, N)}
    bottoms = ["x", "cont"]
    if static:
        inputs["xs"] = (N, 6)
        bottoms.append("xs")
    tops = ["y"]
    if expose:
        for s in states:
            inputs[s] = (1, N, H)
        bottoms += list(states)
        tops += [s.replace("0", "T") for s in states]
    rng = np.random.RandomState(2)
    feeds = {k: rng.randn(*v).astype(np.float32) for k, v in inputs.items()}
    feeds["cont"] = np.ones((T, N), np.float32)
    feeds["cont"][0] = 0
    feeds["cont"][3, 1] = 0          # a sequence restarts mid-batch
    errs, model, got = _one(type_name, "recurrent_param { num_output: %d %s }"
                            % (H, "expose_hidden: true" if expose else ""), inputs,
                            bottoms=bottoms, tops=tops, feeds=feeds)
    assert set(got) == set(tops)


def test_lstm_unit():
    inputs = {"c_prev": (1, 3, 4), "gates": (1, 3, 16), "cont": (1, 3)}
    feeds = {k: np.random.RandomState(0).randn(*v).astype(np.float32) for k, v in inputs.items()}
    feeds["cont"] = np.array([[1, 0, 1]], np.float32)
    _one("LSTMUnit", "", inputs, bottoms=("c_prev", "gates", "cont"), tops=("c", "h"),
         feeds=feeds)
