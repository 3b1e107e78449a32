"""The three real models end to end (detections included), ResNet-50 with random weights and
the SSD face detector at batch 4 with a dynamic batch: onnxruntime equals decaf's forward."""
import os

import numpy as np
import pytest

import decaf
import decaf.onnx
from decaf.testing.data import model_path

from .helpers import assert_close, assert_same_detections, run_ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL = {
    "res10_ssd_face": ("res10_ssd_face", "deploy.prototxt",
                       "res10_300x300_ssd_iter_140000.caffemodel",
                       "res10_ssd_face_opencv4.14.0_seed0.npz", "detection_out"),
    "wechat_detect": ("wechat_qrcode", "detect.prototxt", "detect.caffemodel",
                      "wechat_detect_opencv4.14.0_seed0.npz", "detection_output"),
    "wechat_sr": ("wechat_qrcode", "sr.prototxt", "sr.caffemodel",
                  "wechat_sr_opencv4.14.0_seed0.npz", "fc"),
}


def _real(name):
    folder, proto, weights, ref, out = REAL[name]
    net = decaf.Net(model_path(folder, proto), decaf.TEST, weights=model_path(folder, weights))
    return net, np.load(model_path("reference_outputs", ref))["input"], out


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_model(name):
    net, x, out = _real(name)
    model = decaf.onnx.export(net)
    assert [o.name for o in model.graph.output] == [out]
    assert {op.domain for op in model.opset_import} == {""}
    (inp,) = net.inputs
    got = run_ort(model, {inp: x})[out]
    net.forward(**{inp: x})
    want = net.blobs[out].data
    if name == "wechat_sr":
        assert_close(out, got, want)
    else:
        assert len(want[0, 0]) >= 10 and (want[0, 0, :, 2] > 0).all()
        assert_same_detections(got, want)


def test_ssd_batch4_dynamic_batch():
    net, x, out = _real("wechat_detect")
    model = decaf.onnx.export(net, dynamic_batch=True)
    batch = np.concatenate([x, x[..., ::-1], x * 0.5, x[..., ::-1, :]]).astype(np.float32)
    (inp,) = net.inputs
    net.blobs[inp].reshape(*batch.shape)
    net.reshape()
    got = run_ort(model, {inp: batch})[out]
    net.forward(**{inp: batch})
    want = net.blobs[out].data
    assert set(want[0, 0, :, 0]) == {0, 1, 2, 3}
    assert_same_detections(got, want)


def _resnet50(rng):
    net = decaf.Net(os.path.join(ROOT, "examples", "resnet", "ResNet-50-deploy.prototxt"),
                    decaf.TEST)
    for layer in net.layers:
        b = layer.blobs
        if layer.type in ("Convolution", "InnerProduct"):
            fan_in = b[0].count / b[0].shape[0]
            gain = 50.0 if layer.type == "InnerProduct" else 2.0
            b[0].data[...] = rng.randn(*b[0].shape) * np.sqrt(gain / fan_in)
            if len(b) > 1:
                b[1].data[...] = rng.randn(*b[1].shape) * 0.1
        elif layer.type == "BatchNorm":
            b[0].data[...] = rng.randn(*b[0].shape) * 0.2
            b[1].data[...] = rng.uniform(1, 3, b[1].shape)
            b[2].data[...] = 2.0
        elif layer.type == "Scale":
            b[0].data[...] = rng.uniform(0.3, 0.8, b[0].shape)
            b[1].data[...] = rng.randn(*b[1].shape) * 0.1
    return net


def test_resnet50_deploy():
    rng = np.random.RandomState(0)
    net = _resnet50(rng)
    assert sum(l.type != "Split" for l in net.layers) == 229   # Input + 228
    model = decaf.onnx.export(net)
    x = rng.randn(1, 3, 224, 224).astype(np.float32)
    got = run_ort(model, {"data": x})["prob"]
    net.forward(data=x)
    want = net.blobs["prob"].data
    assert want.max() > 0.05        # a peaked softmax: the logits are not all alike
    assert_close("prob", got, want)
    assert got.argmax() == want.argmax()
