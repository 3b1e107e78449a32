"""pycaffe's Net surface through ``import caffe``: names, phases/levels/stages, forward and
backward ranges, weights files, batching (forward_all, forward_backward_all), MemoryData input
arrays, per-layer callbacks, and pycaffe's low-level names."""
import textwrap
from collections import OrderedDict

import numpy as np
import pytest

import caffe

SIMPLE = """name: 'testnet' force_backward: true
layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4
    num: 5 channels: 1 height: 1 width: 1
    data_filler { type: 'gaussian' std: 1 } data_filler { type: 'constant' } } }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param { num_output: 11 kernel_size: 2 pad: 3
    weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'constant' value: 2 } }
  param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
  inner_product_param { num_output: 13
    weight_filler { type: 'gaussian' std: 2.5 } bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
"""

DEPLOY = """name: 'deploy'
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 4 dim: 3 } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 1 }
    bias_filler { type: 'constant' value: 0.5 } } }
layer { name: 'prob' type: 'Softmax' bottom: 'ip' top: 'prob' }
"""


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def net(tmp_path):
    n = caffe.Net(write(tmp_path, SIMPLE), caffe.TRAIN)
    n.blobs["label"].data[...] = np.random.randint(13, size=n.blobs["label"].data.shape)
    return n


@pytest.fixture
def deploy(tmp_path):
    return caffe.Net(write(tmp_path, DEPLOY), caffe.TEST)


def test_names_and_dicts(net):
    assert net.inputs == [] and net.outputs == ["loss"]
    assert list(net.layer_dict) == list(net._layer_names) == ["data", "conv", "ip", "loss"]
    assert [l.type for l in net.layers] == ["DummyData", "Convolution", "InnerProduct",
                                            "SoftmaxWithLoss"]
    assert net.top_names == OrderedDict([("data", ["data", "label"]), ("conv", ["conv"]),
                                         ("ip", ["ip_blob"]), ("loss", ["loss"])])
    assert net.bottom_names == OrderedDict([("data", []), ("conv", ["data"]), ("ip", ["conv"]),
                                            ("loss", ["ip_blob", "label"])])
    assert net.blob_loss_weights == OrderedDict([("data", 0), ("label", 0), ("conv", 0),
                                                 ("ip_blob", 0), ("loss", 1)])
    assert list(net.params) == ["conv", "ip"]
    assert [b.data.shape for b in net.params["conv"]] == [(11, 2, 2, 2), (11,)]


def test_low_level_names(net, deploy):
    assert net._top_ids(0) == [0, 1]
    assert net._bottom_ids(3) == [list(net.blobs).index("ip_blob"), 1]
    assert net._outputs == [list(net.blobs).index("loss")]
    assert net._inputs == [] and deploy._inputs == [0]
    assert list(net._blob_names) == list(net.blobs)
    assert list(net._blob_loss_weights) == list(net.blob_loss_weights.values())
    loss = net._forward(0, 3)
    assert loss == pytest.approx(float(net.blobs["loss"].data))
    net._backward(3, 0)
    assert np.abs(net.params["conv"][0].diff).sum() > 0


def test_blob_memory_outlives_net(net):
    params = [p for ps in net.params.values() for p in ps]
    blobs = list(net.blobs.values())
    del net
    total = sum(float(p.data.sum() + p.diff.sum()) for p in params + blobs)
    assert np.isfinite(total)


def test_forward_backward_and_clear_param_diffs(net):
    net.forward()
    net.backward()
    diff = net.params["conv"][0].diff
    assert diff.max() > 0
    net.clear_param_diffs()
    assert not diff.any()


def test_forward_start_end(net):
    conv = net.blobs["conv"]
    conv.data[...] = np.random.uniform(size=conv.data.shape)
    out = net.forward(start="ip", end="ip")
    assert set(out) == {"ip_blob"}
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    expect = conv.data.reshape(5, -1) @ w.T + b
    np.testing.assert_allclose(net.blobs["ip_blob"].data, expect, rtol=1e-4, atol=1e-4)


def test_backward_start_end(net):
    top = np.random.uniform(size=net.blobs["ip_blob"].data.shape).astype(np.float32)
    net.blobs["ip_blob"].diff[...] = top
    out = net.backward(start="ip", end="ip")
    assert "conv" in out
    expect = (top @ net.params["ip"][0].data).reshape(net.blobs["conv"].data.shape)
    np.testing.assert_allclose(net.blobs["conv"].diff, expect, rtol=1e-4, atol=1e-4)


def test_save_and_load_weights(net, tmp_path):
    model = str(tmp_path / "w.caffemodel")
    net.save(model)
    legacy = caffe.Net(write(tmp_path, SIMPLE, "n2.prototxt"), model, caffe.TRAIN)
    named = caffe.Net(write(tmp_path, SIMPLE, "n3.prototxt"), caffe.TRAIN, weights=model)
    h5 = str(tmp_path / "w.h5")
    net.save_hdf5(h5)
    from_h5 = caffe.Net(write(tmp_path, SIMPLE, "n4.prototxt"), caffe.TRAIN)
    from_h5.load_hdf5(h5)
    for other in (legacy, named, from_h5):
        for name in net.params:
            for a, b in zip(net.params[name], other.params[name]):
                np.testing.assert_array_equal(a.data, b.data)


LEVELS = """
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 4 } } }
layer { name: "NoLevel" type: "InnerProduct" bottom: "data" top: "NoLevel"
  inner_product_param { num_output: 1 } }
layer { name: "L1" type: "InnerProduct" bottom: "data" top: "L1"
  include { min_level: 1 } inner_product_param { num_output: 1 } }
layer { name: "A" type: "InnerProduct" bottom: "data" top: "A"
  include { stage: "A" } inner_product_param { num_output: 1 } }
layer { name: "AB" type: "InnerProduct" bottom: "data" top: "AB"
  include { stage: "A" stage: "B" } inner_product_param { num_output: 1 } }
layer { name: "T" type: "InnerProduct" bottom: "data" top: "T"
  include { phase: TRAIN } inner_product_param { num_output: 1 } }
"""


@pytest.mark.parametrize("kwargs, phase, blobs", [
    ({}, caffe.TEST, ["NoLevel"]),
    ({"level": 1}, caffe.TEST, ["NoLevel", "L1"]),
    ({"stages": ["A"]}, caffe.TEST, ["NoLevel", "A"]),
    ({"stages": ["A", "B"], "level": 2}, caffe.TRAIN, ["NoLevel", "L1", "A", "AB", "T"]),
])
def test_phase_level_stages(tmp_path, kwargs, phase, blobs):
    net = caffe.Net(write(tmp_path, LEVELS), phase, **kwargs)
    assert [b for b in net.blobs if "data" not in b] == blobs  # (split blobs too)


def test_forward_all_batches_and_unpads(deploy):
    x = np.random.rand(10, 3).astype(np.float32)   # 10 rows, batch size 4: 4 + 4 + 2 (padded)
    out = deploy.forward_all(data=x, blobs=["ip"])
    assert set(out) == {"prob", "ip"}
    assert out["prob"].shape == (10, 2) and out["ip"].shape == (10, 2)
    w, b = deploy.params["ip"][0].data, deploy.params["ip"][1].data
    ip = x @ w.T + b
    np.testing.assert_allclose(out["ip"], ip, rtol=1e-5, atol=1e-6)
    e = np.exp(ip - ip.max(1, keepdims=True))
    np.testing.assert_allclose(out["prob"], e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_batch_pads_last_batch_with_zeros(deploy):
    x = np.arange(18, dtype=np.float32).reshape(6, 3)
    batches = list(deploy._batch({"data": x}))
    assert [b["data"].shape for b in batches] == [(4, 3), (4, 3)]
    np.testing.assert_array_equal(batches[1]["data"][:2], x[4:])
    assert not batches[1]["data"][2:].any()


def test_forward_backward_all(tmp_path):
    text = DEPLOY.replace("name: 'deploy'", "name: 'deploy' force_backward: true")
    net = caffe.Net(write(tmp_path, text), caffe.TEST)
    x = np.random.rand(6, 3).astype(np.float32)
    dprob = np.random.rand(6, 2).astype(np.float32)
    blobs, diffs = net.forward_backward_all(blobs=["ip"], diffs=["ip"], data=x, prob=dprob)
    assert blobs["prob"].shape == (6, 2) and diffs["data"].shape == (6, 3)
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    ip = x @ w.T + b
    p = np.exp(ip - ip.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dip = p * (dprob - (dprob * p).sum(1, keepdims=True))
    np.testing.assert_allclose(blobs["prob"], p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffs["ip"], dip, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(diffs["data"], dip @ w, rtol=1e-4, atol=1e-6)


def test_forward_input_checks(deploy):
    with pytest.raises(Exception, match="[Ii]nput"):
        deploy.forward(data=np.zeros((3, 3)))       # not batch sized
    with pytest.raises(Exception):
        deploy.forward(nope=np.zeros((4, 3)))      # not an input


MEMORY = """
layer { name: 'md' type: 'MemoryData' top: 'data' top: 'label'
  memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
  inner_product_param { num_output: 1 } }
"""


def test_set_input_arrays(tmp_path):
    net = caffe.Net(write(tmp_path, MEMORY), caffe.TEST)
    data = np.arange(24, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([5, 6, 7, 8], dtype=np.float32)        # 1-d labels are accepted
    net.set_input_arrays(data, labels)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [5, 6])
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[2:])
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [7, 8])


@pytest.mark.parametrize("data, labels, msg", [
    (np.zeros((3, 1, 2, 3)), np.zeros(3), "multiple of batch size"),
    (np.zeros((2, 1, 2, 3)), np.zeros(4), "same first dimension"),
    (np.zeros((2, 2, 2, 3)), np.zeros(2), "channels"),
    (np.zeros((2, 6)), np.zeros(2), "4-d"),
])
def test_set_input_arrays_checks(tmp_path, data, labels, msg):
    net = caffe.Net(write(tmp_path, MEMORY), caffe.TEST)
    with pytest.raises(RuntimeError, match=msg):
        net.set_input_arrays(data.astype(np.float32), labels.astype(np.float32))


def test_set_input_arrays_needs_memory_data_first(deploy):
    with pytest.raises(RuntimeError, match="MemoryDataLayer"):
        deploy.set_input_arrays(np.zeros((4, 1, 1, 3), np.float32), np.zeros(4, np.float32))


def test_layer_callbacks_order(net):
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    net.forward()
    assert calls == [(k, i) for i in range(4) for k in ("bf", "af")]
    del calls[:]
    net.backward()
    assert calls == [(k, i) for i in range(3, -1, -1) for k in ("bb", "ab")]
    del calls[:]
    net.forward(start="conv", end="ip")
    assert calls == [("bf", 1), ("af", 1), ("bf", 2), ("af", 2)]


def test_callback_sees_layer_outputs(net):
    seen = {}

    def grab(i):
        name = net._layer_names[i]
        for top in net.top_names[name]:
            seen[top] = net.blobs[top].data.copy()
    net.after_forward(grab)
    net.forward()
    np.testing.assert_array_equal(seen["ip_blob"], net.blobs["ip_blob"].data)
    with pytest.raises(TypeError):
        net.before_forward(42)


def test_callbacks_do_not_change_results(tmp_path):
    a = caffe.Net(write(tmp_path, DEPLOY), caffe.TEST)
    b = caffe.Net(write(tmp_path, DEPLOY, "b.prototxt"), caffe.TEST)
    b.share_with(a)
    b.before_forward(lambda i: None)
    x = np.random.rand(4, 3).astype(np.float32)
    np.testing.assert_array_equal(a.forward(data=x)["prob"], b.forward(data=x)["prob"])


def test_share_with_shares_memory(tmp_path, deploy):
    other = caffe.Net(write(tmp_path, DEPLOY, "o.prototxt"), caffe.TEST)
    other.share_with(deploy)
    deploy.params["ip"][0].data[...] = 3
    assert (other.params["ip"][0].data == 3).all()


def test_reshape_after_input_resize(deploy):
    deploy.blobs["data"].reshape(7, 3)
    deploy.reshape()
    assert deploy.blobs["ip"].data.shape == (7, 2)
    assert deploy.blobs["prob"].data.shape == (7, 2)
