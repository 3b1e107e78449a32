"""onnxruntime on the export of every golden layer case whose type has an ONNX mapping equals
decaf's forward of the same one-layer net (TEST phase) within 1e-5 relative; where the case
ran in the TEST phase, it also equals Caffe's recorded top within the case's tolerance."""
import os

import numpy as np
import pytest

import decaf
import decaf.onnx
from decaf.errors import DecafError
from decaf.testing import golden

from .helpers import assert_close, run_ort

MAPPED = set(decaf.onnx.supported_types())
CASES = [n for n in golden.layer_cases() if golden.load_case(n)["layer_type"] in MAPPED]
UNMAPPED = sorted({golden.load_case(n)["layer_type"] for n in golden.layer_cases()} - MAPPED)


def _net(name):
    case = golden.load_case(name)
    with golden.chdir(golden.case_dir(name)):
        weights = "weights.caffemodel" if case.get("has_weights") else None
        return decaf.Net("net.prototxt", decaf.TEST, weights=weights), case


def test_cases_cover_the_mapped_types():
    covered = {golden.load_case(n)["layer_type"] for n in CASES}
    assert len(CASES) >= 90
    assert {"Convolution", "Deconvolution", "Pooling", "LRN", "BatchNorm", "Scale", "Eltwise",
            "Crop", "ArgMax", "Reduction", "Embed", "MVN"} <= covered
    assert "Python" not in MAPPED and "SoftmaxWithLoss" not in MAPPED
    assert "SoftmaxWithLoss" in UNMAPPED and "LSTM" in covered


@pytest.mark.parametrize("name", [n for n in CASES if n != "silence"])
def test_golden_case(name):
    net, case = _net(name)
    data = np.load(os.path.join(golden.case_dir(name), "data.npz"))
    rng = np.random.RandomState(0)
    feeds = {b: data["bottom." + b] if "bottom." + b in data.files else
             rng.randn(*net.blobs[b].shape).astype(np.float32) for b in net.inputs}
    model = decaf.onnx.export(net)
    got = run_ort(model, feeds)
    net.forward(**feeds)
    assert set(got) == set(net.outputs)
    for top, arr in got.items():
        assert_close("%s %s" % (name, top), arr, net.blobs[top].data)
        key = "top." + top
        if case["phase"] == "TEST" and key in data.files and "bottom." + top not in data.files:
            np.testing.assert_allclose(arr, data[key], rtol=case["rtol"], atol=case["atol"],
                                       err_msg="%s %s: onnxruntime vs Caffe" % (name, top))


def test_silence_only_net_has_no_output():
    net, _ = _net("silence")
    with pytest.raises(DecafError, match="no output"):
        decaf.onnx.export(net)
