"""Net construction semantics (Caffe's Net::Init): filtering, splits, in-place, loss weights,
backward pruning, propagate_down, force_backward, sharing, weights I/O, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

import decaf
from decaf.errors import NetError, ShapeMismatchError, WeightsError, UnknownLayerTypeError
from decaf.net_build import filter_net, insert_splits
from decaf.proto import caffe_pb2


def net_param(text, phase=None):
    p = text_format.Parse(text, caffe_pb2.NetParameter())
    if phase is not None:
        p.state.phase = phase
    return p


TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def tiny_net(extra="", phase=caffe_pb2.TRAIN):
    net = decaf.Net(net_param(TINY + extra), phase)
    rs = np.random.RandomState(3)
    net.blobs["data"].data[...] = rs.randn(4, 3)
    net.blobs["label"].data[...] = rs.randint(0, 3, 4)
    return net


# -- filtering ---------------------------------------------------------------------------
RULES = """
layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 } } }
layer { name: "train_only" type: "AbsVal" bottom: "a" top: "b" include { phase: TRAIN } }
layer { name: "test_only" type: "AbsVal" bottom: "a" top: "c" include { phase: TEST } }
layer { name: "lvl" type: "AbsVal" bottom: "a" top: "d" include { min_level: 2 } }
layer { name: "stage" type: "AbsVal" bottom: "a" top: "e" include { stage: "s1" stage: "s2" } }
layer { name: "notstage" type: "AbsVal" bottom: "a" top: "f" exclude { stage: "s1" } }
layer { name: "maxlvl" type: "AbsVal" bottom: "a" top: "g" include { max_level: 0 } }
"""


@pytest.mark.parametrize("phase,level,stages,expected", [
    (caffe_pb2.TRAIN, 0, [], ["a", "train_only", "notstage", "maxlvl"]),
    (caffe_pb2.TEST, 0, [], ["a", "test_only", "notstage", "maxlvl"]),
    (caffe_pb2.TEST, 2, [], ["a", "test_only", "lvl", "notstage"]),
    (caffe_pb2.TEST, 0, ["s1"], ["a", "test_only", "maxlvl"]),
    (caffe_pb2.TEST, 0, ["s1", "s2"], ["a", "test_only", "stage", "maxlvl"]),
])
def test_filter_net_rules(phase, level, stages, expected):
    p = net_param(RULES)
    p.state.phase, p.state.level = phase, level
    p.state.stage.extend(stages)
    assert [l.name for l in filter_net(p).layer] == expected
    net = decaf.Net(net_param(RULES), phase, level=level, stages=stages)
    assert [n for n, l in zip(net.layer_names, net.layers) if l.type != "Split"] == expected


def test_include_and_exclude_together_is_an_error():
    p = net_param('layer { name: "x" type: "Input" top: "x" include { phase: TRAIN } '
                  'exclude { phase: TEST } input_param { shape { dim: 1 } } }')
    with pytest.raises(NetError, match="either include rules or exclude rules"):
        filter_net(p)


# -- splits ------------------------------------------------------------------------------
def test_insert_splits_names_as_caffe():
    p = insert_splits(net_param("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 } } }
      layer { name: "ip1" type: "AbsVal" bottom: "data" top: "ip1" }
      layer { name: "ip2" type: "AbsVal" bottom: "data" top: "ip2" }
      layer { name: "sum" type: "Eltwise" bottom: "ip1" bottom: "ip2" top: "sum" }"""))
    assert [l.name for l in p.layer] == ["data", "data_data_0_split", "ip1", "ip2", "sum"]
    split = p.layer[1]
    assert split.type == "Split" and list(split.bottom) == ["data"]
    assert list(split.top) == ["data_data_0_split_0", "data_data_0_split_1"]
    assert list(p.layer[2].bottom) == ["data_data_0_split_0"]
    assert list(p.layer[3].bottom) == ["data_data_0_split_1"]


def test_insert_splits_for_loss_top_also_consumed():
    p = insert_splits(net_param("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 } } }
      layer { name: "ip" type: "AbsVal" bottom: "data" top: "ip" loss_weight: 2 }
      layer { name: "other" type: "AbsVal" bottom: "ip" top: "o" }"""))
    assert [l.name for l in p.layer] == ["data", "ip", "ip_ip_0_split", "other"]
    assert list(p.layer[1].loss_weight) == []
    assert list(p.layer[2].loss_weight) == [2, 0]
    assert list(p.layer[3].bottom) == ["ip_ip_0_split_1"]


def test_split_sums_gradients():
    net = decaf.Net(net_param("""
      force_backward: true
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "a" type: "Power" bottom: "data" top: "a" power_param { scale: 2 } }
      layer { name: "b" type: "Power" bottom: "data" top: "b" power_param { scale: 3 } }
      layer { name: "la" type: "Reduction" bottom: "a" top: "la" loss_weight: 1 }
      layer { name: "lb" type: "Reduction" bottom: "b" top: "lb" loss_weight: 1 }"""),
        caffe_pb2.TRAIN)
    net.blobs["data"].data[...] = np.arange(6).reshape(2, 3)
    loss = net.forward_backward()
    assert loss == pytest.approx(5 * 15)
    np.testing.assert_allclose(net.blobs["data"].diff, 5.0)


# -- in-place, loss weights, pruning -------------------------------------------------------
def test_in_place_layer_shares_blob_and_outputs():
    net = tiny_net()
    assert "ip1" in net.blobs and list(net.blobs).count("ip1") == 1
    assert net.top_names["relu1"] == ["ip1"] and net.bottom_names["relu1"] == ["ip1"]
    assert net.outputs == ["loss"]
    assert net.inputs == ["data", "label"]
    assert net.blob_loss_weights["loss"] == 1.0


def test_forward_backward_matches_manual_computation():
    net = tiny_net()
    loss = net.forward_backward()
    x, y = net.blobs["data"].data, net.blobs["label"].data.astype(int)
    W1, b1 = (p.data for p in net.params["ip1"])
    W2, b2 = (p.data for p in net.params["ip2"])
    h = np.maximum(x @ W1.T + b1, 0)
    s = h @ W2.T + b2
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(4), y]).mean(), rel=1e-5)
    g = p.copy()
    g[np.arange(4), y] -= 1
    g /= 4
    np.testing.assert_allclose(net.params["ip2"][0].diff, g.T @ h, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip2"][1].diff, g.sum(0), rtol=1e-4, atol=1e-6)
    gh = (g @ W2) * (h > 0)
    np.testing.assert_allclose(net.params["ip1"][0].diff, gh.T @ x, rtol=1e-4, atol=1e-6)


def test_loss_weight_scales_loss_and_gradient():
    a = tiny_net()
    p = net_param(TINY.replace('top: "loss" }', 'top: "loss" loss_weight: 3 }'))
    c = decaf.Net(p, caffe_pb2.TRAIN)
    for name in a.params:
        for pa, pc in zip(a.params[name], c.params[name]):
            pc.data[...] = pa.data
    c.blobs["data"].data[...] = a.blobs["data"].data
    c.blobs["label"].data[...] = a.blobs["label"].data
    la, lc = a.forward_backward(), c.forward_backward()
    assert lc == pytest.approx(3 * la, rel=1e-6)
    np.testing.assert_allclose(c.params["ip1"][0].diff, 3 * a.params["ip1"][0].diff, rtol=1e-5)


def test_backward_pruning_and_force_backward():
    net = tiny_net()
    assert net.layer_need_backward == [False, True, True, True, True]
    assert net.bottom_need_backward(1) == [False]          # data needs no gradient
    assert net.bottom_need_backward(4) == [True, False]    # never into the label
    forced = decaf.Net(net_param("force_backward: true\n" + TINY), caffe_pb2.TRAIN)
    assert forced.bottom_need_backward(1) == [True]
    assert forced.bottom_need_backward(4) == [True, False]  # labels refuse force_backward


def test_layer_not_under_loss_does_no_backward():
    net = tiny_net('layer { name: "side" type: "AbsVal" bottom: "ip2" top: "side" }')
    assert net.layer_need_backward[net.layer_index["side"]] is False
    assert "side" in net.outputs


def test_propagate_down_false_stops_gradient():
    text = TINY.replace('layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"',
                        'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" '
                        'propagate_down: false')
    net = decaf.Net(net_param(text), caffe_pb2.TRAIN)
    rs = np.random.RandomState(3)
    net.blobs["data"].data[...] = rs.randn(4, 3)
    net.forward_backward()
    assert not net.layer_need_backward[net.layer_index["ip1"]]
    assert np.all(net.params["ip1"][0].diff == 0)
    assert np.any(net.params["ip2"][0].diff != 0)


def test_lr_mult_zero_prunes_param_gradient():
    text = TINY.replace('bottom: "data" top: "ip1"',
                        'bottom: "data" top: "ip1" param { lr_mult: 0 } param { lr_mult: 0 }')
    net = decaf.Net(net_param(text), caffe_pb2.TRAIN)
    assert net.params_lr == [0, 0, 1, 1]
    assert not net.layer_need_backward[net.layer_index["ip1"]]


def test_param_sharing_by_name():
    net = decaf.Net(net_param("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" lr_mult: 2 }
              inner_product_param { num_output: 4 bias_term: false weight_filler { type: "xavier" } } }
      layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" param { name: "w" }
              inner_product_param { num_output: 4 bias_term: false weight_filler { type: "xavier" } } }
      layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }
      layer { name: "l" type: "Reduction" bottom: "s" top: "l" loss_weight: 1 }"""),
        caffe_pb2.TRAIN)
    assert len(net.learnable_params) == 1 and net.params_lr == [2]
    wa, wb = net.params["a"][0], net.params["b"][0]
    wa.data[...] = 1.5
    assert np.all(wb.data == 1.5)
    net.blobs["data"].data[...] = 1
    net.clear_param_diffs()
    net.forward_backward()
    # each layer contributes sum over the batch of top_diff * x = 2; shared diff holds both
    np.testing.assert_allclose(wa.diff, 4.0)
    net.update()
    np.testing.assert_allclose(wb.data, -2.5)


def test_param_sharing_shape_mismatch_names_both_layers():
    with pytest.raises(ShapeMismatchError, match="Cannot share param 'w'.*'a'.*'b'"):
        decaf.Net(net_param("""
          layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
          layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" }
                  inner_product_param { num_output: 4 bias_term: false } }
          layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" param { name: "w" }
                  inner_product_param { num_output: 5 bias_term: false } }"""), caffe_pb2.TRAIN)


def test_permissive_sharing_allows_same_count():
    net = decaf.Net(net_param("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 6 } }
              param { name: "w" } }
      layer { name: "q" type: "Parameter" top: "q" parameter_param { shape { dim: 2 dim: 3 } }
              param { name: "w" share_mode: PERMISSIVE } }"""), caffe_pb2.TRAIN)
    net.params["p"][0].data[...] = np.arange(6)
    np.testing.assert_array_equal(net.params["q"][0].data, np.arange(6).reshape(2, 3))


# -- errors --------------------------------------------------------------------------------
def test_unknown_bottom_names_layer_and_blob():
    with pytest.raises(NetError, match="Unknown bottom blob 'nope' \\(layer 'ip', bottom index 0\\)"):
        decaf.Net(net_param('layer { name: "ip" type: "AbsVal" bottom: "nope" top: "x" }'),
                  caffe_pb2.TEST)


def test_unknown_layer_type_suggests():
    with pytest.raises(UnknownLayerTypeError, match="'Relu'.*'r'.*did you mean 'ReLU'"):
        decaf.Net(net_param("""
          layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 } } }
          layer { name: "r" type: "Relu" bottom: "d" top: "d" }"""), caffe_pb2.TEST)


def test_top_produced_twice_is_an_error():
    with pytest.raises(NetError, match="produced by multiple sources"):
        decaf.Net(net_param("""
          layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 } } }
          layer { name: "e" type: "Input" top: "d" input_param { shape { dim: 1 } } }"""),
                  caffe_pb2.TEST)


# -- forward/backward API ------------------------------------------------------------------
def test_pycaffe_forward_with_kwargs_and_start_end():
    net = tiny_net()
    out = net.forward(data=np.ones((4, 3)), label=np.zeros(4))
    assert set(out) == {"loss"} and out["loss"].shape == ()
    out2 = net.forward(start="ip2", end="ip2")
    assert set(out2) == {"ip2"}
    with pytest.raises(NetError, match="do not match net inputs"):
        net.forward(data=np.ones((4, 3)))
    with pytest.raises(ShapeMismatchError, match="batch sized"):
        net.forward(data=np.ones((5, 3)), label=np.zeros(5))


def test_pycaffe_backward_returns_input_diffs():
    net = decaf.Net(net_param("force_backward: true\n" + TINY), caffe_pb2.TRAIN)
    net.forward()
    diffs = net.backward()
    assert set(diffs) == {"data", "label"}
    assert diffs["data"].shape == (4, 3)


def test_legacy_constructor_and_weights(tmp_path):
    net = tiny_net()
    path = str(tmp_path / "tiny.caffemodel")
    net.save(path)
    proto = str(tmp_path / "tiny.prototxt")
    with open(proto, "w") as f:
        f.write(TINY)
    a = decaf.Net(proto, path, decaf.TEST)
    b = decaf.Net(proto, decaf.TEST, weights=path)
    for n in net.params:
        for x, y, z in zip(net.params[n], a.params[n], b.params[n]):
            np.testing.assert_array_equal(x.data, y.data)
            np.testing.assert_array_equal(x.data, z.data)
    assert a.phase == decaf.TEST


def test_copy_from_skips_missing_layers_and_reports_shape_mismatch(tmp_path):
    net = tiny_net()
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    other = decaf.Net(net_param(TINY.replace("num_output: 3", "num_output: 7")), caffe_pb2.TRAIN)
    with pytest.raises(WeightsError, match="param 0 weights from layer 'ip2'; shape mismatch.*3 5.*7 5"):
        other.copy_from(path)
    renamed = decaf.Net(net_param(TINY.replace('name: "ip2"', 'name: "ip2new"')), caffe_pb2.TRAIN)
    renamed.copy_from(path)    # ip2 is skipped, ip1 is loaded
    np.testing.assert_array_equal(renamed.params["ip1"][0].data, net.params["ip1"][0].data)


def test_save_writes_every_layer(tmp_path):
    net = tiny_net()
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    with open(path, "rb") as f:
        p = caffe_pb2.NetParameter.FromString(f.read())
    assert [l.name for l in p.layer] == net.layer_names
    assert [len(l.blobs) for l in p.layer] == [0, 2, 0, 2, 0]
    assert list(p.layer[1].blobs[0].shape.dim) == [5, 3]


def test_hdf5_round_trip(tmp_path):
    net = tiny_net()
    path = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(path)
    other = decaf.Net(net_param(TINY), caffe_pb2.TRAIN)
    other.load_hdf5(path)
    for n in net.params:
        for x, y in zip(net.params[n], other.params[n]):
            np.testing.assert_array_equal(x.data, y.data)
