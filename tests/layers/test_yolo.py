"""Tests of Yolov3Loss and Yolov3Detection (decaf/layers/yolo.py).

The reference is darknet's forward_yolo_layer written out with plain loops below (pjreddie's
src/yolo_layer.c: its l.delta and its cost = mag_array(delta)^2); the layer's bottom diff must be
exactly minus that delta (Caffe's diff = dLoss/dInput, darknet's delta = -dLoss/dInput), and its
loss top must have that diff as its numerical gradient. No golden data: not a BVLC layer.
"""
import math

import numpy as np
import pytest
from google.protobuf import text_format

from decaf.errors import LayerSetupError
from decaf.layers.yolo import box_iou, nms
from decaf.proto import caffe_pb2
from decaf.testing.gradient_check import build_layer, check_gradient

ANCHORS = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]   # yolov3-tiny's


def spec(mask=(0, 1, 2), classes=2, num=6, anchors=ANCHORS, max_boxes=4, ignore=0.5,
         truth=1.0, net=(64, 64), extra=""):
    net_s = "net_w: %d net_h: %d" % net if net else ""
    return ('type: "Yolov3Loss" yolov3_loss_param { %s %s classes: %d num: %d max_boxes: %d '
            'ignore_thresh: %g truth_thresh: %g %s } %s'
            % (" ".join("anchors: %g" % a for a in anchors),
               " ".join("mask: %d" % m for m in mask), classes, num, max_boxes, ignore, truth,
               net_s, extra))


# -- darknet's forward_yolo_layer, written out with loops -------------------------------------

def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _iou(a, b):
    def ov(c1, w1, c2, w2):
        return min(c1 + w1 / 2, c2 + w2 / 2) - max(c1 - w1 / 2, c2 - w2 / 2)
    w, h = ov(a[0], a[2], b[0], b[2]), ov(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def darknet_forward(z, truth, anchors, mask, C, net_w, net_h, ignore_thresh, truth_thresh):
    """(delta, cost) of darknet's yolo layer; truth lists end at the first row with w == 0."""
    N, _, H, W = z.shape
    A = len(mask)
    out = z.reshape(N, A, 5 + C, H, W).copy()
    for idx in np.ndindex(out.shape):
        if idx[2] not in (2, 3):
            out[idx] = _sig(out[idx])
    delta = np.zeros_like(out)
    truth = truth.reshape(N, -1, 5)
    anc = np.asarray(anchors, float).reshape(-1, 2)

    def get_box(b, a, j, i, n):
        return ((i + out[b, a, 0, j, i]) / W, (j + out[b, a, 1, j, i]) / H,
                math.exp(out[b, a, 2, j, i]) * anc[n, 0] / net_w,
                math.exp(out[b, a, 3, j, i]) * anc[n, 1] / net_h)

    def delta_box(tr, b, a, j, i, n, scale):
        t = (tr[0] * W - i, tr[1] * H - j, math.log(tr[2] * net_w / anc[n, 0]),
             math.log(tr[3] * net_h / anc[n, 1]))
        for e in range(4):
            delta[b, a, e, j, i] = scale * (t[e] - out[b, a, e, j, i])

    def delta_class(b, a, j, i, cls):
        if delta[b, a, 5, j, i]:
            delta[b, a, 5 + cls, j, i] = 1 - out[b, a, 5 + cls, j, i]
            return
        for c in range(C):
            delta[b, a, 5 + c, j, i] = (1.0 if c == cls else 0.0) - out[b, a, 5 + c, j, i]

    for b in range(N):
        for j in range(H):
            for i in range(W):
                for a in range(A):
                    pred = get_box(b, a, j, i, mask[a])
                    best_iou, best_t = 0.0, 0
                    for t in range(truth.shape[1]):
                        if not truth[b, t, 2]:
                            break
                        iou = _iou(pred, truth[b, t])
                        if iou > best_iou:
                            best_iou, best_t = iou, t
                    delta[b, a, 4, j, i] = 0 - out[b, a, 4, j, i]
                    if best_iou > ignore_thresh:
                        delta[b, a, 4, j, i] = 0
                    if best_iou > truth_thresh:
                        delta[b, a, 4, j, i] = 1 - out[b, a, 4, j, i]
                        tr = truth[b, best_t]
                        delta_class(b, a, j, i, int(tr[4]))
                        delta_box(tr, b, a, j, i, mask[a], 2 - tr[2] * tr[3])
        for t in range(truth.shape[1]):
            tr = truth[b, t]
            if not tr[2]:
                break
            i, j = int(tr[0] * W), int(tr[1] * H)
            best_iou, best_n = 0.0, 0
            for n in range(len(anc)):
                iou = _iou((0, 0, anc[n, 0] / net_w, anc[n, 1] / net_h), (0, 0, tr[2], tr[3]))
                if iou > best_iou:
                    best_iou, best_n = iou, n
            if best_n in mask:
                a = mask.index(best_n)
                delta_box(tr, b, a, j, i, best_n, 2 - tr[2] * tr[3])
                delta[b, a, 4, j, i] = 1 - out[b, a, 4, j, i]
                delta_class(b, a, j, i, int(tr[4]))
    return delta.reshape(z.shape), float(np.sum(delta ** 2))


def run_loss(text, z, truth, extra_bottoms=(), loss_weight=1.0, num_tops=2):
    layer, bottom, top = build_layer(text, [z, truth, *extra_bottoms], num_tops=num_tops)
    layer.Forward(bottom, top)
    top[0].diff[...] = loss_weight
    layer.Backward(top, [True] + [False] * (len(bottom) - 1), bottom)
    return layer, [float(t.data) for t in top], bottom[0].diff.copy()


def random_case(seed, N=2, A=3, C=2, H=4, W=4, T=4, nbox=(3, 2), scale=0.7):
    rs = np.random.RandomState(seed)
    z = rs.standard_normal((N, A * (5 + C), H, W)) * scale
    truth = np.zeros((N, T, 5))
    for b in range(N):
        for t in range(nbox[b]):
            w, h = rs.uniform(0.1, 0.6, 2)
            truth[b, t] = [rs.uniform(0.05, 0.95), rs.uniform(0.05, 0.95), w, h,
                           rs.randint(C)]
    return z, truth


# -- the sign relation, on a hand-made case ---------------------------------------------------

def test_sign_hand_made_darknet_delta_is_minus_caffe_diff():
    # one image, 2 x 2 grid, one anchor (32 x 32 px in a 64 x 64 net), one class, all outputs 0
    z = np.zeros((1, 6, 2, 2))
    truth = np.zeros((1, 2, 5))
    truth[0, 0] = [0.3, 0.6, 0.25, 0.5, 0]          # cell i = 0, j = 1
    text = spec(mask=[0], classes=1, num=1, anchors=[32, 32], max_boxes=2, ignore=0.99)
    layer, (loss, cost), diff = run_loss(text, z, truth)
    delta = layer.darknet_delta().reshape(z.shape)
    s = 2 - 0.25 * 0.5
    # darknet: delta_x = s (tx - sigmoid(0)) with tx = 0.3 * 2 - 0 = 0.6  ->  +0.1875
    assert delta[0, 0, 1, 0] == pytest.approx(s * (0.6 - 0.5))
    assert diff[0, 0, 1, 0] == pytest.approx(-s * (0.6 - 0.5))   # Caffe: output - truth
    # w: delta = s (log(0.25 * 64 / 32) - 0) = s log(0.5) < 0; Caffe's diff is positive
    assert delta[0, 2, 1, 0] == pytest.approx(s * math.log(0.5))
    assert diff[0, 2, 1, 0] == pytest.approx(-s * math.log(0.5))
    # objectness: positive cell delta = 1 - 0.5, background cells delta = 0 - 0.5
    assert delta[0, 4, 1, 0] == pytest.approx(0.5) and diff[0, 4, 1, 0] == pytest.approx(-0.5)
    assert delta[0, 4, 0, 0] == pytest.approx(-0.5) and diff[0, 4, 0, 0] == pytest.approx(0.5)
    # class (one class): delta = 1 - 0.5
    assert diff[0, 5, 1, 0] == pytest.approx(-0.5)
    ref, ref_cost = darknet_forward(z, truth, [32, 32], [0], 1, 64, 64, 0.99, 1.0)
    np.testing.assert_allclose(delta, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(diff, -ref, rtol=1e-12, atol=1e-15)
    assert cost == pytest.approx(ref_cost, rel=1e-12)
    # the loss: 3 background cells BCE(0.5 -> 0) = log 2; the positive cell: x, y with soft
    # targets (BCE - entropy), w, h half squares, objectness and class BCE(0.5 -> 1) = log 2
    kl = lambda t: s * (math.log(2) + t * math.log(t) + (1 - t) * math.log(1 - t))  # noqa: E731
    expect = 3 * math.log(2) + kl(0.6) + kl(0.2) + s * 0.5 * (math.log(0.5) ** 2
                                                              + math.log(1.0) ** 2) \
        + 2 * math.log(2)
    assert loss == pytest.approx(expect, rel=1e-12)


# -- against darknet's loops -------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ignore,truth_thresh", [(0.5, 1.0), (0.2, 1.0), (0.1, 0.3)])
def test_matches_darknet_reference(seed, ignore, truth_thresh):
    z, truth = random_case(seed)
    layer, (loss, cost), diff = run_loss(spec(ignore=ignore, truth=truth_thresh), z, truth)
    ref, ref_cost = darknet_forward(z, truth, ANCHORS, [0, 1, 2], 2, 64, 64, ignore,
                                    truth_thresh)
    np.testing.assert_allclose(-diff, ref, rtol=1e-10, atol=1e-12)
    assert cost == pytest.approx(ref_cost, rel=1e-10)


def test_reference_cases_exercise_every_rule():
    z, truth = random_case(1)
    layer, _, _ = run_loss(spec(ignore=0.1, truth=0.3), z, truth)
    best = layer.stats["best_iou"]
    assert (best > 0.3).any() and ((best > 0.1) & (best <= 0.3)).any() and (best <= 0.1).any()


def test_two_truths_in_one_cell_last_box_union_of_classes():
    z = np.random.RandomState(0).standard_normal((1, 7, 2, 2)) * 0.3
    truth = np.zeros((1, 3, 5))
    truth[0, 0] = [0.2, 0.2, 0.3, 0.3, 0]
    truth[0, 1] = [0.3, 0.1, 0.35, 0.25, 1]            # same cell, same anchor
    text = spec(mask=[0], classes=2, num=1, anchors=[20, 20], max_boxes=3)
    layer, _, diff = run_loss(text, z, truth)
    ref, _ = darknet_forward(z, truth, [20, 20], [0], 2, 64, 64, 0.5, 1.0)
    np.testing.assert_allclose(-diff, ref, rtol=1e-12, atol=1e-14)
    out = 1 / (1 + np.exp(-z[0, :, 0, 0]))
    assert diff[0, 5, 0, 0] == pytest.approx(out[5] - 1)    # both classes are targets
    assert diff[0, 6, 0, 0] == pytest.approx(out[6] - 1)
    s = 2 - 0.35 * 0.25                                     # the box is the second truth's
    assert diff[0, 0, 0, 0] == pytest.approx(s * (out[0] - 0.3 * 2))


def test_truth_for_anchor_of_another_scale_is_skipped():
    z = np.zeros((1, 7, 2, 2))
    truth = np.zeros((1, 2, 5))
    truth[0, 0] = [0.5, 0.5, 0.9, 0.9, 1]   # the big anchor (index 1) is not in mask [0]
    text = spec(mask=[0], classes=2, num=2, anchors=[8, 8, 60, 60], max_boxes=2, ignore=0.99)
    _, _, diff = run_loss(text, z, truth)
    assert not diff[0, :4].any() and not diff[0, 5:].any()
    np.testing.assert_allclose(diff[0, 4], 0.5)            # all background


def test_rows_after_first_empty_row_are_ignored():
    z, truth = random_case(5, nbox=(3, 2))
    cut = truth.copy()
    cut[0, 1, 2] = 0                       # w == 0 ends image 0's list after one box
    _, _, diff = run_loss(spec(), z, cut)
    only = truth.copy()
    only[0, 1:] = 0
    _, _, diff2 = run_loss(spec(), z, only)
    np.testing.assert_array_equal(diff, diff2)


def test_net_size_from_image_bottom():
    z, truth = random_case(2)
    _, (l1, _), d1 = run_loss(spec(net=(96, 64)), z, truth)
    image = np.zeros((2, 3, 64, 96))
    _, (l2, _), d2 = run_loss(spec(net=None), z, truth, extra_bottoms=[image])
    assert l1 == pytest.approx(l2, rel=1e-12)
    np.testing.assert_array_equal(d1, d2)


def test_loss_weight_scales_diff():
    z, truth = random_case(4)
    _, _, d1 = run_loss(spec(), z, truth)
    _, _, d2 = run_loss(spec(), z, truth, loss_weight=0.5)
    np.testing.assert_allclose(d2, 0.5 * d1)


def test_float32():
    z, truth = random_case(4)
    layer, bottom, top = build_layer(spec(), [z, truth], dtype=np.float32)
    layer.Forward(bottom, top)
    layer.Backward(top, [True, False], bottom)
    assert bottom[0].diff.dtype == np.float32
    ref, _ = darknet_forward(z.astype(np.float32).astype(float), truth.astype(np.float32)
                             .astype(float), ANCHORS, [0, 1, 2], 2, 64, 64, 0.5, 1.0)
    np.testing.assert_allclose(-bottom[0].diff, ref, rtol=1e-4, atol=1e-5)


# -- numerical gradient -------------------------------------------------------------------------

@pytest.mark.parametrize("seed,ignore,truth_thresh", [(0, 0.5, 1.0), (1, 0.1, 0.3),
                                                      (2, 0.2, 1.0)])
def test_gradient(seed, ignore, truth_thresh):
    z, truth = random_case(seed, N=2, H=3, W=3, nbox=(2, 1))
    check_gradient(spec(ignore=ignore, truth=truth_thresh), [z, truth], num_tops=1)


def test_gradient_single_anchor_many_classes():
    z, truth = random_case(7, N=1, A=1, C=4, H=2, W=3, nbox=(2,))
    check_gradient(spec(mask=[1], classes=4, num=2, anchors=[12, 12, 30, 40]), [z, truth],
                   num_tops=1)


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,shape,match", [
    (spec(), (1, 20, 2, 2), "channels"),
    (spec(anchors=ANCHORS[:10]), (1, 21, 2, 2), "2 num"),
    (spec(mask=(0, 6, 2)), (1, 21, 2, 2), "mask entries"),
    (spec(net=None), (1, 21, 2, 2), "input size is unknown"),
    (spec(max_boxes=3), (1, 21, 2, 2), "max_boxes x 5"),
])
def test_setup_errors(text, shape, match):
    with pytest.raises(LayerSetupError, match=match):
        build_layer(text, [np.zeros(shape), np.zeros((1, 4, 5))])


def test_error_3d_bottom():
    with pytest.raises(LayerSetupError, match="4-D"):
        build_layer(spec(), [np.zeros((1, 21, 4)), np.zeros((1, 4, 5))])


@pytest.mark.parametrize("row,match", [([0.5, 0.5, 0.2, 0.2, 2], "class"),
                                       ([1.5, 0.5, 0.2, 0.2, 0], "x, y"),
                                       ([0.5, 0.5, 0.2, 0.0, 0], "w, h")])
def test_bad_truth_rows(row, match):
    truth = np.zeros((1, 4, 5))
    truth[0, 0] = row
    layer, bottom, top = build_layer(spec(), [np.zeros((1, 21, 2, 2)), truth])
    with pytest.raises(LayerSetupError, match=match):
        layer.Forward(bottom, top)


def test_error_backward_to_truths():
    z, truth = random_case(0)
    layer, bottom, top = build_layer(spec(), [z, truth])
    layer.Forward(bottom, top)
    with pytest.raises(LayerSetupError, match="truth"):
        layer.Backward(top, [True, True], bottom)


# -- Yolov3Detection ------------------------------------------------------------------------------

DET = ('type: "Yolov3Detection" yolov3_loss_param { anchors: 16 anchors: 16 anchors: 32 '
       'anchors: 32 num: 2 classes: 2 net_w: 64 net_h: 64 } '
       'detection_output_param { confidence_threshold: %g nms_param { nms_threshold: 0.45 } %s }')


def logit(p):
    return math.log(p / (1 - p))


def det_output(cells):
    """Raw outputs (1, 2 x 7, 2, 2), everything improbable except the listed cells:
    (anchor, j, i, (sx, sy), (tw, th), objectness, (p_class0, p_class1))."""
    z = np.full((1, 2, 7, 2, 2), -12.0)
    z[:, :, 2:4] = 0
    for a, j, i, sxy, twh, obj, cls in cells:
        z[0, a, 0:2, j, i] = [logit(s) for s in sxy]
        z[0, a, 2:4, j, i] = twh
        z[0, a, 4, j, i] = logit(obj)
        z[0, a, 5:7, j, i] = [logit(c) for c in cls]
    return z.reshape(1, 14, 2, 2)


def run_det(z, conf=0.1, extra=""):
    layer, bottom, top = build_layer(DET % (conf, extra), [z])
    layer.Forward(bottom, top)
    return top[0].data.reshape(-1, 7)


def test_detection_decodes_darknet_box():
    z = det_output([(1, 1, 0, (0.5, 0.25), (math.log(2), 0.0), 0.9, (0.2, 0.8))])
    det = run_det(z, conf=0.3)             # class 0 scores 0.9 x 0.2 = 0.18: dropped
    assert det.shape == (1, 7)
    # centre ((0 + .5) / 2, (1 + .25) / 2) = (.25, .625); size (2 * 32 / 64, 32 / 64) = (1, .5)
    np.testing.assert_allclose(det[0], [0, 1, 0.9 * 0.8, 0.25 - 0.5, 0.625 - 0.25,
                                        0.25 + 0.5, 0.625 + 0.25], rtol=1e-9)


def test_detection_threshold_and_per_class_nms():
    z = det_output([(0, 0, 0, (0.5, 0.5), (0, 0), 0.9, (0.9, 0.05)),
                    (1, 0, 0, (0.55, 0.5), (-math.log(2), -math.log(2)), 0.8, (0.9, 0.6)),
                    (0, 1, 1, (0.5, 0.5), (0, 0), 0.05, (0.9, 0.9))])   # objectness too low
    det = run_det(z, conf=0.1)
    # class 0: the two boxes overlap (IoU .. > .45) -> only the best; class 1: one box
    rows = {(int(r[1]), round(float(r[2]), 6)) for r in det}
    assert rows == {(0, round(0.9 * 0.9, 6)), (1, round(0.8 * 0.6, 6))}
    assert (np.diff(det[:, 2]) <= 0).all()           # sorted by score


def test_detection_none_gives_minus_one_row():
    det = run_det(det_output([]), conf=0.5)
    np.testing.assert_array_equal(det, -np.ones((1, 7)))


def test_detection_keep_top_k_and_image_ids():
    z = det_output([(0, 0, 0, (0.5, 0.5), (0, 0), 0.9, (0.9, 0.1)),
                    (0, 1, 1, (0.5, 0.5), (0, 0), 0.9, (0.7, 0.1))])
    z2 = np.concatenate([z, z])
    layer, bottom, top = build_layer(DET % (0.2, "keep_top_k: 1"), [z2])
    layer.Forward(bottom, top)
    det = top[0].data.reshape(-1, 7)
    assert det[:, 0].tolist() == [0, 1] and det[:, 2] == pytest.approx([0.81, 0.81])


def test_nms_helper_and_iou():
    boxes = np.array([[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]])
    keep = nms(boxes, np.array([0.5, 0.9, 0.7]), 0.45)
    assert keep.tolist() == [1, 2]
    assert box_iou(boxes[0], boxes[0]) == pytest.approx(1.0)
    assert box_iou(np.array([0.5, 0.5, 0.2, 0.2]), np.array([0.6, 0.5, 0.2, 0.2])) == \
        pytest.approx(0.02 / 0.06)


def test_detection_has_no_backward():
    layer, bottom, top = build_layer(DET % (0.1, ""), [det_output([])])
    layer.Forward(bottom, top)
    with pytest.raises(LayerSetupError, match="no backward"):
        layer.Backward(top, [True], bottom)


def test_netspec_roundtrip():
    from decaf.net_spec import layers as L, NetSpec
    n = NetSpec()
    n.out, n.truth = L.Input(shape=[dict(dim=[1, 14, 2, 2]), dict(dim=[1, 3, 5])], ntop=2)
    n.loss = L.Yolov3Loss(n.out, n.truth, yolov3_loss_param=dict(
        anchors=[16, 16, 32, 32], mask=[0, 1], num=2, classes=2, max_boxes=3, net_w=64,
        net_h=64))
    text = str(n.to_proto())
    p = text_format.Parse(text, caffe_pb2.NetParameter())
    assert list(p.layer[1].yolov3_loss_param.mask) == [0, 1]
