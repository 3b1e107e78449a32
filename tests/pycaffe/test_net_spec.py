"""NetSpec (caffe.layers / caffe.params / caffe.NetSpec / caffe.to_proto): the prototxt text
pycaffe writes for the same script, and nets built from it."""
import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P


def lenet(batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                         dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=50, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n


SMALL_EXPECTED = '''layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param {
    shape {
      dim: 2
      dim: 3
    }
  }
}
layer {
  name: "ip"
  type: "InnerProduct"
  bottom: "data"
  top: "ip"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  inner_product_param {
    num_output: 4
    weight_filler {
      type: "gaussian"
      std: 0.5
    }
  }
}
layer {
  name: "relu"
  type: "ReLU"
  bottom: "ip"
  top: "ip"
}
layer {
  name: "pool"
  type: "Pooling"
  bottom: "ip"
  top: "pool"
  pooling_param {
    pool: AVE
    kernel_size: 1
  }
}
layer {
  name: "loss"
  type: "EuclideanLoss"
  bottom: "pool"
  bottom: "data"
  top: "loss"
  loss_weight: 0.5
  include {
    phase: TRAIN
  }
}
'''


def test_prototxt_text_matches_pycaffe():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data, num_output=4, weight_filler=dict(type="gaussian", std=0.5),
                          param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.relu = L.ReLU(n.ip, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.AVE, kernel_size=1)
    n.loss = L.EuclideanLoss(n.pool, n.data, loss_weight=0.5, include=dict(phase=caffe.TRAIN))
    assert str(n.to_proto()) == SMALL_EXPECTED


def test_auto_names_follow_pycaffe():
    data, label = L.DummyData(shape=[dict(dim=[2, 3]), dict(dim=[2])], ntop=2)
    a = L.InnerProduct(data, num_output=2)
    b = L.InnerProduct(a, num_output=2)
    loss = L.SoftmaxWithLoss(b, label)
    proto = loss.to_proto()
    assert [l.name for l in proto.layer] == ["DummyData1", "InnerProduct1", "InnerProduct2",
                                             "SoftmaxWithLoss1"]
    assert list(proto.layer[0].top) == ["DummyData1", "DummyData2"]
    assert list(proto.layer[3].bottom) == ["InnerProduct2", "DummyData2"]
    # caffe.to_proto over several tops gives the union, each layer once
    proto2 = caffe.to_proto(loss, a)
    assert [l.name for l in proto2.layer] == [l.name for l in proto.layer]


def test_named_and_anonymous_mix():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    hidden = L.InnerProduct(n.data, num_output=3)   # unnamed intermediate
    n.out = L.Sigmoid(hidden)
    proto = n.to_proto()
    assert [l.name for l in proto.layer] == ["data", "InnerProduct1", "out"]
    assert list(proto.layer[2].bottom) == ["InnerProduct1"]


def test_repeated_fields_enums_and_generic_params():
    n = caffe.NetSpec()
    n.data = L.Input(input_param=dict(shape=[dict(dim=[1, 3, 8, 8])]))
    n.conv = L.Convolution(n.data, kernel_size=[3, 5], pad=1, num_output=2,
                           engine=P.Convolution.CAFFE)
    n.slice_a, n.slice_b = L.Slice(n.conv, slice_point=1, ntop=2)
    n.elt = L.Eltwise(n.slice_a, n.slice_b, operation=P.Eltwise.PROD)
    layer = {l.name: l for l in n.to_proto().layer}
    assert list(layer["conv"].convolution_param.kernel_size) == [3, 5]
    assert list(layer["conv"].convolution_param.pad) == [1]
    assert layer["conv"].convolution_param.engine == caffe.proto.caffe_pb2.ConvolutionParameter.CAFFE
    assert list(layer["slice_a"].slice_param.slice_point) == [1]
    assert list(layer["slice_a"].top) == ["slice_a", "slice_b"]
    assert layer["elt"].eltwise_param.operation == caffe.proto.caffe_pb2.EltwiseParameter.PROD
    assert P.Pooling.STOCHASTIC == caffe.proto.caffe_pb2.PoolingParameter.STOCHASTIC


def test_python_layer_spec():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2]))
    n.py = L.Python(n.data, module="m", layer="C", param_str="{'a': 1}")
    p = n.to_proto().layer[1]
    assert (p.type, p.python_param.module, p.python_param.layer, p.python_param.param_str) == \
        ("Python", "m", "C", "{'a': 1}")


def test_deconvolution_params_go_to_convolution_param():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.up = L.Deconvolution(n.data, num_output=1, kernel_size=4, stride=2, bias_term=False)
    p = n.to_proto().layer[1].convolution_param
    assert (p.num_output, list(p.kernel_size), list(p.stride), p.bias_term) == (1, [4], [2], False)


def test_zero_tops_and_type_error():
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence = L.Silence(n.data, n.data2, ntop=0)
    proto = n.to_proto()
    assert proto.layer[1].name == "silence" and len(proto.layer[1].top) == 0
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


def test_netspec_item_api_and_update():
    n = caffe.NetSpec()
    n["data"] = L.Input(shape=dict(dim=[1, 2]))
    n.ip = L.InnerProduct(n["data"], num_output=3)
    assert n.keys() == ["data", "ip"] and n.vals() == [n.data, n.ip]
    n.update("ip", dict(num_output=7))
    assert n.to_proto().layer[1].inner_product_param.num_output == 7
    del n["ip"]
    assert n.keys() == ["data"]
    with pytest.raises(KeyError):
        n.missing
    assert not hasattr(n, "missing")


def test_lenet_builds_and_runs(tmp_path):
    proto = lenet(4).to_proto()
    assert proto.layer[4].bottom == proto.layer[4].top       # relu in place
    path = tmp_path / "lenet.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TRAIN)
    assert len(net.layers) == 7
    net.blobs["label"].data[...] = 1
    out = net.forward()
    assert set(out) == {"loss"} and np.isfinite(out["loss"])


def test_silent_net_forward_returns_nothing(tmp_path):
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.s1 = L.Silence(n.data, ntop=0)
    n.s2 = L.Silence(n.data2, ntop=0)
    path = tmp_path / "s.prototxt"
    path.write_text(str(n.to_proto()))
    assert caffe.Net(str(path), caffe.TEST).forward() == {}
