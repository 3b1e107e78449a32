"""net.forward_backward_all with input arrays only (no output diffs), as pycaffe allows: the
backward starts from the diffs the net holds (a loss layer's weight), batch by batch."""
import numpy as np

import caffe

LOSS_NET = """name: 'fb' force_backward: true
layer { name: 'data' type: 'Input' top: 'data' top: 'label'
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 1 }
    bias_filler { type: 'constant' value: 0.5 } } }
layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }
"""


def softmax_grad(net, x, label):
    """dLoss/ddata of one batch of 4 rows (normalisation VALID: / 4), float64."""
    w = net.params["ip"][0].data.astype(np.float64)
    b = net.params["ip"][1].data.astype(np.float64)
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), label.astype(int)] -= 1
    return p / len(x) @ w


def test_forward_backward_all_without_diffs(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(LOSS_NET)
    net = caffe.Net(str(path), caffe.TRAIN)
    rs = np.random.RandomState(0)
    x = rs.randn(6, 3).astype(np.float32)
    label = np.array([0, 1, 1, 0, 1, 0], dtype=np.float32)
    blobs, diffs = net.forward_backward_all(data=x, label=label)
    assert blobs["loss"].shape == (2,) and diffs["data"].shape == (6, 3)   # a loss per batch
    # two batches of 4: the second zero-padded (two padding rows of label 0 count in its mean)
    x2 = np.concatenate([x[4:], np.zeros((2, 3), np.float32)])
    l2 = np.concatenate([label[4:], np.zeros(2, np.float32)])
    expect = np.concatenate([softmax_grad(net, x[:4], label[:4]), softmax_grad(net, x2, l2)[:2]])
    np.testing.assert_allclose(diffs["data"], expect, rtol=1e-4, atol=1e-6)


def test_forward_backward_all_without_arrays(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(LOSS_NET.replace("type: 'Input'", "type: 'DummyData'").replace(
        "input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } }",
        "dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }"
        " data_filler { type: 'gaussian' std: 1 } data_filler { type: 'constant' value: 1 } }"))
    net = caffe.Net(str(path), caffe.TRAIN)
    blobs, diffs = net.forward_backward_all(diffs=["data"])   # one pass over the data layer
    x = net.blobs["data"].data.copy()
    np.testing.assert_allclose(diffs["data"], softmax_grad(net, x, net.blobs["label"].data),
                               rtol=1e-4, atol=1e-6)
    assert float(blobs["loss"]) == float(net.blobs["loss"].data)
