"""Tests of decaf.layers.ssd: Normalize, Permute, PriorBox, DetectionOutput (SSD's layers).

BVLC Caffe has none of these layers, so there are no golden cases: the forward tests compare
with SSD's formulas written out here independently (plain Python loops, small sizes).
"""
import math

import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.testing.gradient_check import build_layer, check_gradient, forward, make_layer_param
from decaf.layer import create_layer


def f32(v):
    return float(np.float32(v))


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


# -- Normalize -------------------------------------------------------------------------------------
def normalize_param(across, shared, eps=None, filler=None):
    s = 'type: "Normalize" norm_param { across_spatial: %s channel_shared: %s' % (
        str(across).lower(), str(shared).lower())
    if eps is not None:
        s += " eps: %g" % eps
    if filler is not None:
        s += " scale_filler { %s }" % filler
    return s + " }"


def normalize_reference(x, scale, across, eps=1e-10):
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    axes = (1, 2) if across else (1,)
    norm = np.sqrt((x3 ** 2).sum(axis=axes, keepdims=True) + eps)
    s = np.asarray(scale).reshape(()) if np.size(scale) == 1 and np.ndim(scale) == 0 \
        else np.asarray(scale).reshape(1, -1, 1)
    return (x3 / norm * s).reshape(x.shape)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3), (2, 4, 3), (1, 3, 1, 1)])
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_gradient(shape, across, shared):
    c = shape[1]
    scale = np.array(1.7) if shared else rand(c, seed=3) + 2
    check_gradient(normalize_param(across, shared), [rand(*shape)], params=[scale])


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_gradient_large_eps(across, shared):
    c = 3
    scale = np.array(-0.8) if shared else rand(c, seed=4)
    check_gradient(normalize_param(across, shared, eps=0.5), [rand(2, c, 2, 3) * 0.3],
                   params=[scale])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4), (2, 2, 6)])
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_forward(shape, across, shared):
    x = rand(*shape)
    scale = np.array(20.0) if shared else np.arange(1, shape[1] + 1, dtype=float)
    _, (y,) = forward(normalize_param(across, shared), [x], params=[scale])
    np.testing.assert_allclose(y, normalize_reference(x, scale, across), rtol=1e-12, atol=1e-12)


def test_normalize_float32_and_zero_input():
    x = np.zeros((1, 3, 2, 2), np.float32)
    _, (y,) = forward(normalize_param(False, False), [x], dtype=np.float32)
    assert y.dtype == np.float32 and np.all(y == 0)  # eps keeps 0 / norm finite


def test_normalize_default_scale_and_blob_shapes():
    layer, _, _ = build_layer('type: "Normalize"', [rand(2, 3, 2, 2)])
    assert layer.across_spatial and layer.channel_shared  # SSD's defaults
    assert layer.blobs[0].shape == () and layer.blobs[0].data == 1.0
    layer, _, _ = build_layer(normalize_param(False, False, filler='type: "constant" value: 20'),
                              [rand(2, 3, 2, 2)])
    assert layer.blobs[0].shape == (3,) and np.all(layer.blobs[0].data == 20)
    assert layer.param_propagate_down == [True]


def test_normalize_scale_diff_accumulates():
    x = rand(2, 3, 2, 2)
    layer, bottom, top = build_layer(normalize_param(True, False), [x],
                                     params=[np.array([1.0, 2.0, 3.0])])
    layer.Forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.blobs[0].diff[...] = 5.0
    layer.Backward(top, [True], bottom)
    xhat = normalize_reference(x, np.ones(3), True)
    np.testing.assert_allclose(layer.blobs[0].diff, 5.0 + xhat.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_normalize_loaded_blob_kept():
    param = make_layer_param(normalize_param(False, False))
    bp = param.blobs.add()
    bp.shape.dim.extend([3])
    bp.data.extend([1.0, 2.0, 3.0])
    layer, _, _ = build_layer(param, [rand(1, 3, 2, 2)])
    np.testing.assert_array_equal(layer.blobs[0].data, [1, 2, 3])


@pytest.mark.parametrize("shared,count", [(True, 3), (False, 1), (False, 4)])
def test_normalize_loaded_blob_wrong_count(shared, count):
    param = make_layer_param(normalize_param(False, shared))
    bp = param.blobs.add()
    bp.shape.dim.extend([count])
    bp.data.extend([1.0] * count)
    with pytest.raises(LayerSetupError, match="scale blob"):
        build_layer(param, [rand(1, 3, 2, 2)])


@pytest.mark.parametrize("shape", [(5,), (1, 2, 2, 2, 2)])
def test_normalize_bad_axes(shape):
    with pytest.raises(LayerSetupError, match="2 to 4 axes"):
        build_layer('type: "Normalize"', [rand(*shape)])


def test_normalize_in_place_refused():
    with pytest.raises(LayerSetupError, match="in-place"):
        build_layer('type: "Normalize"', [rand(1, 3, 2, 2)], inplace=True)


# -- Permute ---------------------------------------------------------------------------------------
def permute_param(order):
    return 'type: "Permute" permute_param { %s }' % " ".join("order: %d" % o for o in order)


@pytest.mark.parametrize("shape,order", [((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 3, 4), [2, 0, 1]),
                                         ((2, 3, 4, 5), [3]), ((3, 4), [1, 0]),
                                         ((2, 3, 4), []), ((2, 3, 2), [0, 1, 2])])
def test_permute_gradient(shape, order):
    check_gradient(permute_param(order), [rand(*shape)])


@pytest.mark.parametrize("shape,order,full", [((2, 3, 4, 5), [0, 2, 3, 1], (0, 2, 3, 1)),
                                              ((2, 3, 4, 5), [2], (2, 0, 1, 3)),
                                              ((2, 3, 4, 5), [3, 1], (3, 1, 0, 2)),
                                              ((2, 3), [], (0, 1))])
def test_permute_forward(shape, order, full):
    x = rand(*shape)
    _, (y,) = forward(permute_param(order), [x])
    np.testing.assert_array_equal(y, np.transpose(x, full))


def test_permute_backward_is_inverse():
    x = rand(2, 3, 4)
    layer, bottom, top = build_layer(permute_param([1, 2, 0]), [x])
    layer.Forward(bottom, top)
    g = rand(*top[0].shape, seed=5)
    top[0].diff[...] = g
    layer.Backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.transpose(g, (2, 0, 1)))


@pytest.mark.parametrize("order,msg", [([0, 4], "less than the number of axes"),
                                       ([1, 1], "duplicate")])
def test_permute_bad_order(order, msg):
    with pytest.raises(LayerSetupError, match=msg):
        build_layer(permute_param(order), [rand(2, 3, 4, 5)])


# -- PriorBox --------------------------------------------------------------------------------------
def prior_box_reference(h, w, img_h, img_w, min_sizes, max_sizes=(), ars=(), flip=True,
                        clip=False, variance=(0.1,), step_h=0, step_w=0, offset=0.5):
    """SSD's PriorBoxLayer::Forward_cpu, element by element."""
    ratios = [1.0]
    for ar in ars:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if flip:
            ratios.append(1.0 / ar)
    if not step_h or not step_w:
        step_w, step_h = img_w / w, img_h / h
    boxes = []
    for i in range(h):
        for j in range(w):
            cx, cy = (j + offset) * step_w, (i + offset) * step_h
            for s, mn in enumerate(min_sizes):
                mn = int(mn)
                sizes = [(mn, mn)]
                if max_sizes:
                    big = math.sqrt(mn * int(max_sizes[s]))
                    sizes.append((big, big))
                sizes += [(mn * math.sqrt(r), mn / math.sqrt(r)) for r in ratios
                          if abs(r - 1) >= 1e-6]
                for bw, bh in sizes:
                    boxes.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                                  (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    boxes = np.asarray(boxes).ravel()
    if clip:
        boxes = np.clip(boxes, 0, 1)
    var = np.tile(np.asarray(variance, float), boxes.size // len(variance))
    return np.stack([boxes, var])[None]


def prior_param(**kw):
    body = []
    for key, val in kw.items():
        vals = val if isinstance(val, (list, tuple)) else [val]
        body += ["%s: %s" % (key, str(v).lower() if isinstance(v, bool) else v) for v in vals]
    return 'type: "PriorBox" prior_box_param { %s }' % " ".join(body)


PRIOR_CASES = [
    (dict(min_size=4), {}),
    (dict(min_size=[4, 7], max_size=[6, 9], aspect_ratio=[2, 3]), {}),
    (dict(min_size=5, aspect_ratio=[2, 0.5, 1, 2], flip=False), {}),
    (dict(min_size=5, max_size=8, aspect_ratio=2, flip=True, clip=True,
          variance=[0.1, 0.1, 0.2, 0.2]), {}),
    (dict(min_size=6.9, max_size=11.5, aspect_ratio=3), {}),  # SSD truncates sizes to int
    (dict(min_size=3, img_size=20, step=5, offset=0.25), dict(img_h=20, img_w=20, step=(5, 5))),
    (dict(min_size=3, img_h=12, img_w=18, step_h=4, step_w=6, offset=0), dict(
        img_h=12, img_w=18, step=(4, 6))),
    (dict(min_size=3, variance=0.3, clip=True), {}),
]


@pytest.mark.parametrize("kw,override", PRIOR_CASES)
@pytest.mark.parametrize("fmap", [(3, 4), (1, 1)])
def test_prior_box_forward(kw, override, fmap):
    h, w = fmap
    img = np.zeros((1, 3, 16, 24))
    _, (y,) = forward(prior_param(**kw), [np.zeros((1, 2, h, w)), img])
    ref_kw = dict(min_sizes=np.atleast_1d(kw["min_size"]),
                  max_sizes=tuple(np.atleast_1d(kw.get("max_size", []))),
                  ars=tuple(np.float32(np.atleast_1d(kw.get("aspect_ratio", [])))),
                  flip=kw.get("flip", True), clip=kw.get("clip", False),
                  variance=tuple(np.atleast_1d(kw.get("variance", [0.1]))),
                  offset=kw.get("offset", 0.5))
    img_h, img_w = override.get("img_h", 16), override.get("img_w", 24)
    step_h, step_w = override.get("step", (0, 0))
    ref = prior_box_reference(h, w, img_h, img_w, step_h=step_h, step_w=step_w, **ref_kw)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_prior_box_count_and_order():
    layer, bottom, top = build_layer(prior_param(min_size=[2, 4], max_size=[3, 6],
                                                 aspect_ratio=2),
                                     [np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 8, 12))])
    layer.Forward(bottom, top)
    assert layer.num_priors == 2 * (1 + 1 + 2)
    assert top[0].shape == (1, 2, 2 * 3 * 8 * 4)
    first = top[0].data[0, 0, :8 * 4].reshape(8, 4)
    widths = (first[:, 2] - first[:, 0]) * 12
    np.testing.assert_allclose(widths, [2, math.sqrt(6), 2 * math.sqrt(2), 2 / math.sqrt(2),
                                        4, math.sqrt(24), 4 * math.sqrt(2), 4 / math.sqrt(2)],
                               rtol=1e-6)


def test_prior_box_float32_and_no_gradient():
    layer, bottom, top = build_layer(prior_param(min_size=4), [np.ones((1, 2, 2, 2)),
                                                              np.ones((1, 1, 8, 8))],
                                     dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[0].dtype == np.float32
    top[0].diff[...] = 1
    layer.Backward(top, [True, False], bottom)
    assert np.all(bottom[0].diff == 0) and np.all(bottom[1].diff == 0)


@pytest.mark.parametrize("kw,msg", [
    (dict(aspect_ratio=2), "min_size"),
    (dict(min_size=0), "positive"),
    (dict(min_size=4, max_size=4), "greater than min_size"),
    (dict(min_size=[4, 5], max_size=6), "as many max_size"),
    (dict(min_size=4, variance=[0.1, 0.2]), "1 or 4"),
    (dict(min_size=4, variance=-0.1), "positive"),
    (dict(min_size=4, img_size=8, img_h=8, img_w=8), "not both"),
    (dict(min_size=4, img_h=8), "larger than 0"),
    (dict(min_size=4, step=4, step_h=4, step_w=4), "not both"),
    (dict(min_size=4, step_w=4), "larger than 0"),
    (dict(min_size=4, step=0), "larger than 0"),
])
def test_prior_box_bad_params(kw, msg):
    with pytest.raises(LayerSetupError, match=msg):
        build_layer(prior_param(**kw), [np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 8, 8))])


def test_prior_box_needs_two_bottoms():
    with pytest.raises(LayerSetupError, match="exactly 2 bottom"):
        build_layer(prior_param(min_size=4), [np.zeros((1, 1, 2, 2))])


# -- DetectionOutput -------------------------------------------------------------------------------
def ref_decode(prior, var, loc, code, in_target):
    if in_target:
        var = [1.0] * 4
    px0, py0, px1, py1 = prior
    pw, ph = px1 - px0, py1 - py0
    if code == "CORNER":
        return [prior[k] + var[k] * loc[k] for k in range(4)]
    if code == "CORNER_SIZE":
        size = [pw, ph, pw, ph]
        return [prior[k] + var[k] * loc[k] * size[k] for k in range(4)]
    cx = var[0] * loc[0] * pw + (px0 + px1) / 2
    cy = var[1] * loc[1] * ph + (py0 + py1) / 2
    w, h = math.exp(var[2] * loc[2]) * pw, math.exp(var[3] * loc[3]) * ph
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ref_iou(a, b):
    def size(r):
        return 0.0 if r[2] < r[0] or r[3] < r[1] else (r[2] - r[0]) * (r[3] - r[1])
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw > 0 and ih > 0:
        return iw * ih / (size(a) + size(b) - iw * ih)
    return 0.0


def ref_nms(boxes, scores, conf_thr, nms_thr, eta, top_k):
    cand = sorted([i for i in range(len(scores)) if scores[i] > conf_thr],
                  key=lambda i: -scores[i])  # sorted() is stable
    if top_k > -1:
        cand = cand[:top_k]
    kept, thr = [], nms_thr
    for i in cand:
        keep = all(ref_iou(boxes[i], boxes[k]) <= thr for k in kept)
        if keep:
            kept.append(i)
            if eta < 1 and thr > 0.5:
                thr *= eta
    return kept


def ref_detection_output(loc, conf, prior, num_classes, share, bg, code, in_target, conf_thr,
                         nms_thr, eta, top_k, keep_top_k):
    num, P = conf.shape[0], prior.shape[2] // 4
    L = 1 if share else num_classes
    loc = loc.reshape(num, P, L, 4)
    conf = conf.reshape(num, P, num_classes)
    pb, pv = prior[0, 0].reshape(P, 4), prior[0, 1].reshape(P, 4)
    rows = []
    for n in range(num):
        dec = [[ref_decode(pb[p], pv[p], loc[n, p, c], code, in_target) for p in range(P)]
               for c in range(L)]
        dets = []
        for c in range(num_classes):
            if c == bg:
                continue
            boxes = dec[0 if share else c]
            dets += [(conf[n, i, c], c, i) for i in ref_nms(boxes, conf[n, :, c], conf_thr,
                                                            nms_thr, eta, top_k)]
        if keep_top_k > -1 and len(dets) > keep_top_k:
            dets = sorted(dets, key=lambda d: -d[0])[:keep_top_k]
        dets = sorted(dets, key=lambda d: d[1])  # grouped by label, score order kept
        for s, c, i in dets:
            rows.append([n, c, s] + list(dec[0 if share else c][i]))
    if not rows:
        return np.array([[n] + [-1] * 6 for n in range(num)], float)[None, None]
    return np.array(rows)[None, None]


def det_param(num_classes=3, share=True, bg=0, code="CORNER", in_target=False, conf_thr=None,
              nms_thr=0.45, eta=1.0, top_k=None, keep_top_k=-1):
    s = ('type: "DetectionOutput" detection_output_param { num_classes: %d share_location: %s '
         'background_label_id: %d code_type: %s variance_encoded_in_target: %s keep_top_k: %d '
         'nms_param { nms_threshold: %g eta: %g' % (num_classes, str(share).lower(), bg, code,
                                                   str(in_target).lower(), keep_top_k, nms_thr,
                                                   eta))
    if top_k is not None:
        s += " top_k: %d" % top_k
    s += " }"
    if conf_thr is not None:
        s += " confidence_threshold: %g" % conf_thr
    return s + " }"


def det_inputs(num=2, P=30, num_classes=3, share=True, seed=0, spread=0.3):
    rs = np.random.RandomState(seed)
    ctr = rs.uniform(0.2, 0.8, (P, 2))
    wh = rs.uniform(0.1, 0.4, (P, 2))
    pb = np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1)
    pv = np.tile([0.1, 0.1, 0.2, 0.2], (P, 1))
    prior = np.stack([pb.ravel(), pv.ravel()])[None]
    L = 1 if share else num_classes
    loc = rs.standard_normal((num, P * L * 4)) * spread
    logits = rs.standard_normal((num, P, num_classes)) * 2
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return loc, conf.reshape(num, -1), prior


DET_CASES = [
    dict(),
    dict(code="CENTER_SIZE", conf_thr=0.3, top_k=12),
    dict(code="CORNER_SIZE", share=False, keep_top_k=5),
    dict(code="CENTER_SIZE", in_target=True, eta=0.8, nms_thr=0.7),
    dict(code="CENTER_SIZE", share=False, bg=-1, conf_thr=0.2, keep_top_k=7, top_k=10),
    dict(code="CORNER", nms_thr=0.1, bg=2, keep_top_k=0),
    dict(code="CENTER_SIZE", conf_thr=0.05, nms_thr=0.3, eta=0.5, keep_top_k=20),
]


@pytest.mark.parametrize("kw", DET_CASES)
def test_detection_output_forward(kw):
    share = kw.get("share", True)
    loc, conf, prior = det_inputs(share=share)
    _, (y,) = forward(det_param(**kw), [loc, conf, prior])
    ref = ref_detection_output(
        loc, conf, prior, 3, share, kw.get("bg", 0), kw.get("code", "CORNER"),
        kw.get("in_target", False), f32(kw["conf_thr"]) if "conf_thr" in kw else -3.4e38,
        f32(kw.get("nms_thr", 0.45)), f32(kw.get("eta", 1.0)), kw.get("top_k", -1),
        kw.get("keep_top_k", -1))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)


def test_detection_output_float32_matches_float64():
    loc, conf, prior = det_inputs(seed=3)
    param = det_param(code="CENTER_SIZE", conf_thr=0.2, keep_top_k=10)
    _, (y64,) = forward(param, [loc, conf, prior])
    _, (y32,) = forward(param, [loc, conf, prior], dtype=np.float32)
    assert y32.dtype == np.float32 and y32.shape == y64.shape
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)


def test_detection_output_nms_hand_made():
    # 3 priors, 1 foreground class; boxes 0 and 1 overlap (IoU 0.6), box 2 is apart
    prior = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.3], [0.6, 0.6, 0.9, 0.9]])
    prior = np.stack([prior.ravel(), np.full(12, 0.1)])[None]
    loc = np.zeros((1, 12))
    conf = np.array([[0.1, 0.9, 0.2, 0.8, 0.7, 0.3]])  # (bg, fg) per prior
    _, (y,) = forward(det_param(num_classes=2, nms_thr=0.5), [loc, conf, prior])
    np.testing.assert_allclose(y[0, 0, :, :3], [[0, 1, 0.9], [0, 1, 0.3]])
    np.testing.assert_allclose(y[0, 0, 1, 3:], [0.6, 0.6, 0.9, 0.9])
    _, (y,) = forward(det_param(num_classes=2, nms_thr=0.6), [loc, conf, prior])
    np.testing.assert_allclose(y[0, 0, :, 2], [0.9, 0.8, 0.3])  # IoU 0.6 <= 0.6 is kept


@pytest.mark.parametrize("top_k,eta,dtype", [(7, 1.0, np.float64), (25, 0.9, np.float32),
                                             (-1, 1.0, np.float32), (300, 1.0, np.float64)])
def test_nms_ties_at_top_k(top_k, eta, dtype):
    # coarse scores: many ties, so top_k cuts through a run of equal scores (Caffe's stable
    # sort keeps the lower prior index); overlapping random boxes, some inverted (size 0)
    from decaf.layers.ssd import apply_nms_fast
    rs = np.random.RandomState(top_k + 3)
    lo = rs.rand(200, 2)
    boxes = np.concatenate([lo, lo + rs.rand(200, 2) * 0.4 - 0.05], axis=1).astype(dtype)
    scores = (rs.randint(0, 6, 200) / 5.0).astype(dtype)
    kept = apply_nms_fast(boxes, scores, dtype(0.1), dtype(0.45), eta, top_k)
    ref = ref_nms(boxes, scores, dtype(0.1), dtype(0.45), dtype(eta), top_k)
    assert list(kept) == ref and len(ref) > 3


def test_detection_output_nothing_detected():
    loc, conf, prior = det_inputs(num=3)
    _, (y,) = forward(det_param(conf_thr=1.0), [loc, conf, prior])
    expect = np.full((1, 1, 3, 7), -1.0)
    expect[0, 0, :, 0] = [0, 1, 2]
    np.testing.assert_array_equal(y, expect)


def test_detection_output_groups_by_label():
    loc, conf, prior = det_inputs(num=1, num_classes=4, seed=7)
    _, (y,) = forward(det_param(num_classes=4, conf_thr=0.1, keep_top_k=8), [loc, conf, prior])
    labels, scores = y[0, 0, :, 1], y[0, 0, :, 2]
    assert len(labels) == 8 and np.all(np.diff(labels) >= 0)
    for c in np.unique(labels):
        assert np.all(np.diff(scores[labels == c]) <= 0)


def test_detection_output_reshapes_between_calls():
    loc, conf, prior = det_inputs(num=1)
    layer, bottom, top = build_layer(det_param(conf_thr=0.5), [loc, conf, prior])
    layer.Forward(bottom, top)
    n1 = top[0].shape[2]
    bottom[1].data[...] = 0.0  # no score above the threshold now
    layer.Forward(bottom, top)
    assert n1 > 1 and top[0].shape == (1, 1, 1, 7)


@pytest.mark.parametrize("text,msg", [
    ('type: "DetectionOutput" detection_output_param { }', "num_classes"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 '
     'nms_param { nms_threshold: -0.1 } }', "nms_threshold"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 nms_param { eta: 1.5 } }',
     "eta"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 4 }', "confidence"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 share_location: false }',
     "location"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 save_output_param { '
     'output_directory: "/tmp/x" label_map_file: "a" name_size_file: "b" } }', "not supported"),
])
def test_detection_output_bad_params(text, msg):
    loc, conf, prior = det_inputs(num=1)
    with pytest.raises(LayerSetupError, match=msg):
        build_layer(text, [loc, conf, prior])


def test_detection_output_bottom_count():
    loc, conf, prior = det_inputs(num=1)
    with pytest.raises(LayerSetupError, match="at least 3"):
        build_layer(det_param(), [loc, conf])


def test_detection_output_has_no_backward():
    loc, conf, prior = det_inputs(num=1)
    layer, bottom, top = build_layer(det_param(), [loc, conf, prior])
    layer.Forward(bottom, top)
    with pytest.raises(NotImplementedError):
        layer.Backward(top, [True, True, False], bottom)


def test_detection_output_share_location_without_background():
    # SSD's DecodeBBoxesAll skips label -1 here and then aborts; decaf decodes and detects
    loc, conf, prior = det_inputs(num=1)
    _, (y,) = forward(det_param(bg=-1, conf_thr=0.3), [loc, conf, prior])
    ref = ref_detection_output(loc, conf, prior, 3, True, -1, "CORNER", False, f32(0.3),
                               f32(0.45), 1.0, -1, -1)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    assert set(y[0, 0, :, 1]) == {0, 1, 2}


def test_ssd_layers_registered():
    for t in ("Normalize", "Permute", "PriorBox", "DetectionOutput"):
        assert create_layer(make_layer_param('type: "%s"' % t)).type == t
