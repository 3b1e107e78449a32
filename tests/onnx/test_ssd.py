"""PriorBox folded to a constant and DetectionOutput as standard ops: decoding per code_type,
per-class NMS with top_k, keep_top_k across classes, Caffe's -1 rows when nothing is found."""
import numpy as np
import pytest

from .helpers import assert_same_detections, make_net, run_ort
import decaf.onnx

C, NUM = 3, 3


def _ssd_net(det_params, batch=NUM, prior_params=""):
    layers = (
        'layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "img" top: "priors" '
        'prior_box_param { min_size: 8 max_size: 16 aspect_ratio: 2 flip: true clip: false '
        'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 %s } }\n'
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
        'bottom: "priors" top: "det" detection_output_param { num_classes: %d %s } }'
        % (prior_params, C, det_params))
    P = 3 * 3 * 4
    share = "share_location: false" not in det_params
    inputs = {"feat": (batch, 2, 3, 3), "img": (batch, 3, 30, 30),
              "loc": (batch, P * (1 if share else C) * 4), "conf": (batch, P * C)}
    return make_net(layers, inputs), P


def _feeds(net, rng, loc_scale=1.0):
    f = {n: rng.randn(*net.blobs[n].shape).astype(np.float32) for n in net.inputs}
    f["loc"] *= np.float32(loc_scale)
    f["conf"] = rng.rand(*net.blobs["conf"].shape).astype(np.float32)
    return f


def _check(net, feeds, **kw):
    model = decaf.onnx.export(net, **kw)
    got = run_ort(model, feeds)["det"]
    net.forward(**feeds)
    want = net.blobs["det"].data
    assert_same_detections(got, want)
    return got, want


NMS = "nms_param { nms_threshold: 0.45 top_k: %d } keep_top_k: %d confidence_threshold: %g"


@pytest.mark.parametrize("code_type,loc_scale", [("CENTER_SIZE", 1.0), ("CORNER", 0.3),
                                                 ("CORNER_SIZE", 0.3)])
@pytest.mark.parametrize("share", [True, False])
def test_decode_and_nms(code_type, loc_scale, share):
    params = "code_type: %s %s background_label_id: 0 %s" % (
        code_type, "" if share else "share_location: false", NMS % (20, 30, 0.3))
    net, P = _ssd_net(params)
    got, want = _check(net, _feeds(net, np.random.RandomState(7), loc_scale))
    assert len(want[0, 0]) > NUM


def test_top_k_and_keep_top_k_cut():
    """top_k 4 candidates per class, then the 5 best over both classes of each image."""
    net, P = _ssd_net("code_type: CENTER_SIZE " + NMS % (4, 5, 0.0))
    got, want = _check(net, _feeds(net, np.random.RandomState(3)))
    rows = want[0, 0]
    assert [int((rows[:, 0] == n).sum()) for n in range(NUM)] == [5] * NUM
    for n in range(NUM):   # labels ascending, scores descending within a label
        r = rows[rows[:, 0] == n]
        assert (np.diff(r[:, 1]) >= 0).all()


def test_variance_in_target_and_no_background():
    net, P = _ssd_net("code_type: CENTER_SIZE variance_encoded_in_target: true "
                      "background_label_id: -1 " + NMS % (10, 12, 0.5))
    _check(net, _feeds(net, np.random.RandomState(4), 0.1))


def test_nothing_detected_gives_minus_one_rows():
    net, P = _ssd_net("code_type: CENTER_SIZE " + NMS % (10, 12, 2.0))
    got, want = _check(net, _feeds(net, np.random.RandomState(5)))
    expect = -np.ones((NUM, 7), np.float32)
    expect[:, 0] = np.arange(NUM)
    np.testing.assert_array_equal(got.reshape(-1, 7), expect)


def test_dynamic_batch_detections():
    net, P = _ssd_net("code_type: CENTER_SIZE " + NMS % (10, 8, 0.3), batch=1)
    model = decaf.onnx.export(net, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 4):
        for n in net.inputs:
            net.blobs[n].reshape(batch, *net.blobs[n].shape[1:])
        net.reshape()
        feeds = _feeds(net, np.random.RandomState(batch))
        got = run_ort(model, feeds)["det"]
        net.forward(**feeds)
        assert_same_detections(got, net.blobs["det"].data)


def test_prior_box_is_a_constant():
    net = make_net('layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "img" '
                   'top: "priors" prior_box_param { min_size: 4 aspect_ratio: 3 step: 5 '
                   'offset: 0.25 clip: true } }', {"feat": (1, 2, 4, 3), "img": (1, 3, 20, 16)})
    model = decaf.onnx.export(net)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    rng = np.random.RandomState(0)
    feeds = {n: rng.randn(*net.blobs[n].shape).astype(np.float32) for n in net.inputs}
    got = run_ort(model, feeds)["priors"]
    net.forward(**feeds)
    np.testing.assert_array_equal(got, net.blobs["priors"].data)


def test_adaptive_nms_is_refused():
    net, P = _ssd_net("code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 eta: 0.9 }")
    with pytest.raises(decaf.errors.DecafError, match="eta"):
        decaf.onnx.export(net)


def test_no_top_k_no_keep_top_k():
    net, P = _ssd_net("code_type: CENTER_SIZE share_location: false background_label_id: -1 "
                      "nms_param { nms_threshold: 0.3 } confidence_threshold: 0.6")
    got, want = _check(net, _feeds(net, np.random.RandomState(9)))
    assert len(want[0, 0]) > 3 * C
