"""The exporter's contract: names, inputs/outputs, errors, prune_to, opsets, dynamic batch, the
``decaf export_onnx`` command and ``Net.to_onnx``."""
import numpy as np
import onnx
import pytest

import decaf
import decaf.onnx
from decaf.errors import DecafError
from decaf.tools import cli

from .helpers import check_net, make_net, net_from_text, randomize, run_ort

CHAIN = ('layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
         'convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n'
         'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }\n'
         'layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" '
         'scale_param { bias_term: true } }\n'
         'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
         'layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" '
         'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }\n'
         'layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" '
         'inner_product_param { num_output: 5 } }\n'
         'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }\n')


def _chain(shape=(2, 3, 8, 8)):
    net = make_net(CHAIN, {"data": shape})
    randomize(net, np.random.RandomState(0))
    return net


def test_names_follow_caffe_blobs():
    model = decaf.onnx.export(_chain())
    names = {o for n in model.graph.node for o in n.output}
    assert {"conv1", "conv1/conv1", "conv1/bn1", "conv1/sc1", "pool", "ip", "prob"} <= names
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["prob"]
    assert all(n.domain == "" for n in model.graph.node)
    assert model.opset_import[0].version == decaf.onnx.DEFAULT_OPSET >= 17
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_opsets(opset):
    net = make_net(CHAIN + 'layer { name: "mvn" type: "MVN" bottom: "pool" top: "mvn" }\n'
                   'layer { name: "red" type: "Reduction" bottom: "pool" top: "red" '
                   'reduction_param { operation: MEAN axis: 1 } }\n'
                   'layer { name: "sl" type: "Slice" bottom: "prob" top: "s1" top: "s2" '
                   'slice_param { slice_point: 2 } }', {"data": (2, 3, 8, 8)})
    randomize(net, np.random.RandomState(1))
    errs, model, got = check_net(net, opset=opset)
    assert model.opset_import[0].version == opset
    assert set(got) == {"mvn", "red", "s1", "s2"}


def test_old_opset_is_refused():
    with pytest.raises(DecafError, match="opset 11"):
        decaf.onnx.export(_chain(), opset=11)


def test_prune_to():
    net = _chain()
    model = decaf.onnx.export(net, prune_to="pool")
    assert [o.name for o in model.graph.output] == ["pool"]
    assert "Gemm" not in {n.op_type for n in model.graph.node}
    x = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
    net.forward(data=x)
    np.testing.assert_allclose(run_ort(model, {"data": x})["pool"], net.blobs["pool"].data,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(DecafError, match="no blob"):
        decaf.onnx.export(net, prune_to="nope")


def test_dynamic_batch_classifier():
    net = _chain((1, 3, 8, 8))
    model = decaf.onnx.export(net, dynamic_batch=True)
    for batch in (1, 3):
        net.blobs["data"].reshape(batch, 3, 8, 8)
        net.reshape()
        x = np.random.RandomState(batch).randn(batch, 3, 8, 8).astype(np.float32)
        net.forward(data=x)
        np.testing.assert_allclose(run_ort(model, {"data": x})["prob"], net.blobs["prob"].data,
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer", [
    'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }',
    'type: "Reshape" reshape_param { shape { dim: 3 dim: 2 } axis: -2 num_axes: 1 }',
    'type: "Reshape" reshape_param { shape { dim: -1 dim: 2 } axis: 0 num_axes: 2 }',
    'type: "Flatten" flatten_param { axis: 0 end_axis: 1 }',
    'type: "Flatten"',
    'type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }',
    'type: "InnerProduct" inner_product_param { num_output: 3 axis: 2 }'])
def test_dynamic_batch_shape_layers(layer):
    net = make_net('layer { name: "l" %s bottom: "x" top: "y" }' % layer, {"x": (1, 4, 6)})
    randomize(net, np.random.RandomState(0))
    model = decaf.onnx.export(net, dynamic_batch=True)
    for batch in (1, 3):
        net.blobs["x"].reshape(batch, 4, 6)
        net.reshape()
        x = np.random.RandomState(batch).randn(batch, 4, 6).astype(np.float32)
        net.forward(x=x)
        np.testing.assert_allclose(run_ort(model, {"x": x})["y"], net.blobs["y"].data,
                                   rtol=1e-5, atol=1e-6)


def test_input_fields_become_inputs():
    net = net_from_text('input: "im" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
                        'layer { name: "r" type: "ReLU" bottom: "im" top: "im" }\n'
                        'layer { name: "a" type: "AbsVal" bottom: "im" top: "out" }')
    errs, model, got = check_net(net)
    assert [i.name for i in model.graph.input] == ["im"] and set(got) == {"out"}


def test_input_rewritten_in_place_as_output():
    """The graph input keeps the blob's name; the output is its last version."""
    net = net_from_text('input: "im" input_shape { dim: 2 dim: 3 }\n'
                        'layer { name: "r" type: "ReLU" bottom: "im" top: "im" }')
    model = decaf.onnx.export(net)
    assert [i.name for i in model.graph.input] == ["im"]
    assert [o.name for o in model.graph.output] == ["im/r"]
    x = np.random.RandomState(0).randn(2, 3).astype(np.float32)
    np.testing.assert_array_equal(run_ort(model, {"im": x})["im/r"], np.maximum(x, 0))


def test_unsupported_layer_names_layer_type_and_supported_types():
    net = make_net('layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" '
                   'top: "a" }', {"x": (2, 4), "label": (2,)})
    with pytest.raises(DecafError) as e:
        decaf.onnx.export(net)
    msg = str(e.value)
    assert "'acc'" in msg and "Accuracy" in msg and "Convolution" in msg and \
        "DetectionOutput" in msg and "LSTM" in msg


def test_train_net_loss_layer_is_refused():
    net = make_net('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
                   'inner_product_param { num_output: 3 } }\n'
                   'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" '
                   'top: "loss" }', {"x": (2, 4), "label": (2,)}, phase=decaf.TRAIN)
    with pytest.raises(DecafError, match="'loss'.*SoftmaxWithLoss.*deploy"):
        decaf.onnx.export(net)


def test_python_layer_is_refused():
    net = make_net("layer { type: 'Python' name: 'py' bottom: 'x' top: 'y' python_param { "
                   "module: 'tests.pycaffe.pylayers' layer: 'TimesTen' } }", {"x": (2, 3)})
    with pytest.raises(DecafError, match="'py'.*Python"):
        decaf.onnx.export(net)


def test_train_phase_dropout_is_refused():
    net = make_net('layer { name: "d" type: "Dropout" bottom: "x" top: "y" }', {"x": (2, 3)},
                   phase=decaf.TRAIN)
    with pytest.raises(DecafError, match="Dropout"):
        decaf.onnx.export(net)


def test_export_onnx_command_and_to_onnx(tmp_path):
    net = _chain()
    proto, weights, out = tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel", \
        tmp_path / "m.onnx"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { '
                     'dim: 1 dim: 3 dim: 8 dim: 8 } } }\n' + CHAIN)
    net.save(str(weights))
    rc = cli.main(["export_onnx", "-model", str(proto), "-weights", str(weights), "-o", str(out),
                   "-opset", "18", "-dynamic_batch", "-prune_to", "ip"])
    assert rc == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18 and model.graph.output[0].name == "ip"
    x = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
    net.forward(data=x)
    np.testing.assert_allclose(run_ort(model, {"data": x})["ip"], net.blobs["ip"].data,
                               rtol=1e-5, atol=1e-5)
    path = tmp_path / "n.onnx"
    assert net.to_onnx(str(path)).graph.output[0].name == "prob" and path.exists()
    assert cli.main(["export_onnx", "-model", str(proto)]) == 1   # -o missing
    assert cli.main(["export_onnx", "-model", str(tmp_path / "missing.prototxt"),
                     "-o", str(out)]) == 1
