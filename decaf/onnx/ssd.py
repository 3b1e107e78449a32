"""SSD's PriorBox (folded to a constant) and DetectionOutput (box decoding, per-class
NonMaxSuppression, keep_top_k) in standard ONNX operators.

DetectionOutput, as decaf's layer (SSD's detection_output_layer.cpp):
1. decode loc against the priors by code_type (CORNER, CENTER_SIZE, CORNER_SIZE), variances
   from the prior blob (ones when variance_encoded_in_target);
2. per image and non-background class: candidates with score > confidence_threshold, the
   top_k best (ties: lower prior index first), then greedy NMS (suppress IoU > nms_threshold):
   scores outside that set become -inf, and ONNX NonMaxSuppression runs with
   max_output_boxes_per_class = top_k (ONNX's own score_threshold, "less than" removes, is
   not Caffe's "> threshold", so the threshold is applied before);
3. keep_top_k per image over all classes: rank by score (stable), keep the best keep_top_k,
   and keep them in NMS order (image, label ascending, score descending);
4. rows [image_id, label, score, xmin, ymin, xmax, ymax] as (1, 1, K, 7); no detection at
   all in the batch gives one row [n, -1, ..., -1] per image, as Caffe.
"""
import numpy as np

from .. import backend
from .registry import register_emitter

FLT_MAX = float(np.finfo(np.float32).max)


@register_emitter("PriorBox")
def prior_box(c):
    """The priors depend on shapes only: decaf's own layer computes them; a constant."""
    priors = np.asarray(backend.to_numpy(c.layer._priors), np.float32)
    c.g.op1("Identity", [c.g.const(priors, c.base("priors"))], c.y)


def _parts(g, x, n, b):
    """The n slices x[..., i:i+1] of the last axis."""
    return [g.slice(x, [i], [i + 1], [-1], base=b) for i in range(n)]


def _decode(c, loc, prior, var):
    """Decoded boxes (N, P, L, 4) from loc (N, P, L, 4), prior and var (P, 1, 4), in decaf's
    arithmetic order."""
    g, b, L = c.g, c.base("decode"), c.layer

    def add(u, v):
        return g.op1("Add", [u, v], base=b)

    def mul(u, v):
        return g.op1("Mul", [u, v], base=b)

    def sub(u, v):
        return g.op1("Sub", [u, v], base=b)

    if L.code_type == 1:  # CORNER
        return add(prior, mul(var, loc))
    p0, p1, p2, p3 = _parts(g, prior, 4, b)
    pw, ph = sub(p2, p0), sub(p3, p1)
    if L.code_type == 3:  # CORNER_SIZE
        size = g.op1("Concat", [pw, ph, pw, ph], base=b, axis=-1)
        return add(prior, mul(mul(var, loc), size))
    two = g.const(2.0)
    half = lambda u: g.op1("Div", [u, two], base=b)  # noqa: E731
    l0, l1, l2, l3 = _parts(g, loc, 4, b)
    v0, v1, v2, v3 = _parts(g, var, 4, b)
    cx = add(mul(mul(v0, l0), pw), half(add(p0, p2)))
    cy = add(mul(mul(v1, l1), ph), half(add(p1, p3)))
    w = mul(g.op1("Exp", [mul(v2, l2)], base=b), pw)
    h = mul(g.op1("Exp", [mul(v3, l3)], base=b), ph)
    hw, hh = half(w), half(h)
    return g.op1("Concat", [sub(cx, hw), sub(cy, hh), add(cx, hw), add(cy, hh)], base=b,
                 axis=-1)


def _candidates(c, scores, num_priors):
    """scores (B, C, P) with everything but the top_k best above the threshold set to -inf."""
    g, b, L = c.g, c.base("candidates"), c.layer
    ninf = g.const(-np.inf)
    keep = g.op1("Greater", [scores, g.const(L.confidence_threshold)], base=b)
    if -1 < L.top_k < num_priors:
        _, idx = g.op("TopK", [scores, g.ints([L.top_k], "k")], base=b, n_out=2, axis=2,
                      largest=1, sorted=1)
        zeros = g.op1("ConstantOfShape", [g.op1("Shape", [scores], base=b)], base=b,
                      value=g.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
        ones = g.op1("ConstantOfShape", [g.op1("Shape", [idx], base=b)], base=b,
                     value=g.onnx.numpy_helper.from_array(np.ones(1, np.float32)))
        top = g.op1("ScatterElements", [zeros, idx, ones], base=b, axis=2)
        in_top = g.op1("Greater", [top, g.const(0.5)], base=b)
        keep = g.op1("And", [keep, in_top], base=b)
    return g.op1("Where", [keep, scores, ninf], base=b)


def _keep_top_k(c, rows, image, score, num):
    """The rows of the keep_top_k best scores of each image, in their NMS order."""
    g, b, k = c.g, c.base("keep_top_k"), c.layer.keep_top_k
    i64 = g.onnx.TensorProto.INT64
    count = g.op1("Shape", [score], base=b)
    _, by_score = g.op("TopK", [score, count], base=b, n_out=2, axis=0, largest=1, sorted=1)
    neg_img = g.op1("Neg", [g.op1("Cast", [g.op1("Gather", [image, by_score], base=b)],
                                  base=b, to=g.onnx.TensorProto.FLOAT)], base=b)
    _, by_img = g.op("TopK", [neg_img, count], base=b, n_out=2, axis=0, largest=1, sorted=1)
    pos = g.op1("Gather", [by_score, by_img], base=b)           # (image, -score) order
    img_sorted = g.op1("Gather", [image, pos], base=b)
    zero, one = g.ints([0], "zero"), g.ints([1], "one")
    scalar = lambda t: g.op1("Squeeze", [t, zero], base=b)  # noqa: E731
    images = g.op1("Range", [scalar(zero), scalar(num), scalar(one)], base=b)
    onehot = g.op1("Equal", [g.op1("Unsqueeze", [img_sorted, one], base=b),
                             g.op1("Unsqueeze", [images, zero], base=b)], base=b)
    counts = g.reduce("ReduceSum", g.op1("Cast", [onehot], base=b, to=i64), [0], keepdims=0,
                      base=b)
    starts = g.op1("CumSum", [counts, scalar(zero)], base=b, exclusive=1)
    rank = g.op1("Sub", [g.op1("Range", [scalar(zero), scalar(count), scalar(one)], base=b),
                         g.op1("Gather", [starts, img_sorted], base=b)], base=b)
    kept = g.op1("Cast", [g.op1("Less", [rank, g.ints([k], "k")], base=b)], base=b,
                 to=g.onnx.TensorProto.FLOAT)
    zeros = g.op1("ConstantOfShape", [count], base=b,
                  value=g.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
    mask = g.op1("ScatterElements", [zeros, pos, kept], base=b, axis=0)
    idx = g.op1("Squeeze", [g.op1("NonZero", [mask], base=b), zero], base=b)
    return g.op1("Gather", [rows, idx], base=b, axis=0)


@register_emitter("DetectionOutput")
def detection_output(c):
    """DetectionOutput as decode + NonMaxSuppression + keep_top_k (see the module docstring)."""
    g, b, L = c.g, c.base(), c.layer
    if L.eta != 1:
        c.error("nms_param.eta %g (adaptive NMS) has no ONNX equivalent; only eta 1" % L.eta)
    P, C, Lc = L.num_priors, L.num_classes, L.num_loc_classes
    i64, f32 = g.onnx.TensorProto.INT64, g.onnx.TensorProto.FLOAT
    num = g.slice(g.op1("Shape", [c.x], base=b), [0], [1], [0], base=b)  # (1,) batch size
    loc = g.reshape(c.bottom[0], [c.bshape[0][0], P, Lc, 4], base=b)
    conf = g.reshape(c.bottom[1], [c.bshape[1][0], P, C], base=b)
    pr = g.reshape(c.bottom[2], [c.bshape[2][1], P, 1, 4], base=b, keep_batch=False)
    prior = g.op1("Gather", [pr, g.ints([0])], base=b, axis=0)
    prior = g.op1("Squeeze", [prior, g.ints([0], "zero")], base=b)
    if L.variance_encoded_in_target:
        var = g.const(np.ones((1, 1, 4), np.float32), c.base("ones"))
    else:
        var = g.op1("Squeeze", [g.op1("Gather", [pr, g.ints([1])], base=b, axis=0),
                                g.ints([0], "zero")], base=b)
    boxes = _decode(c, loc, prior, var)                                  # (N, P, Lc, 4)
    classes = [k for k in range(C) if k != L.background_label_id]
    cls = g.ints(classes, "classes")
    scores = g.op1("Gather", [g.op1("Transpose", [conf], base=b, perm=[0, 2, 1]), cls], base=b,
                   axis=1)                                                # (N, C', P)
    nc = len(classes)
    if L.share_location:
        nms_boxes = g.op1("Squeeze", [boxes, g.ints([2], "two")], base=b)  # (N, P, 4)
        nms_scores = scores
    else:
        per_class = g.op1("Gather", [g.op1("Transpose", [boxes], base=b, perm=[0, 2, 1, 3]),
                                     cls], base=b, axis=1)              # (N, C', P, 4)
        nms_boxes = g.op1("Reshape", [per_class, g.ints([-1, P, 4])], base=b)
        nms_scores = g.op1("Reshape", [scores, g.ints([-1, 1, P])], base=b)
    nms_scores = _candidates(c, nms_scores, P)
    max_out = g.ints([L.top_k if L.top_k > -1 else P], "max_out")
    sel = g.op1("NonMaxSuppression", [nms_boxes, nms_scores, max_out,
                                      g.const([L.nms_threshold]), g.const([-FLT_MAX])], base=b)
    score = g.op1("GatherND", [nms_scores, sel], base=b)                 # (K,)
    col = lambda j: g.op1("Squeeze", [g.slice(sel, [j], [j + 1], [1], base=b),  # noqa: E731
                                      g.ints([1], "one")], base=b)
    if L.share_location:
        image, label_idx = col(0), col(1)
    else:
        flat = col(0)
        image = g.op1("Div", [flat, g.ints([nc], "nc")], base=b)
        label_idx = g.op1("Mod", [flat, g.ints([nc], "nc")], base=b)
    pick = g.op1("Concat", [g.op1("Unsqueeze", [col(0), g.ints([1], "one")], base=b),
                            g.op1("Unsqueeze", [col(2), g.ints([1], "one")], base=b)],
                 base=b, axis=1)
    box = g.op1("GatherND", [nms_boxes, pick], base=b)                   # (K, 4)
    label = g.op1("Gather", [cls, label_idx], base=b)
    as_col = lambda t: g.op1("Unsqueeze", [g.op1("Cast", [t], base=b, to=f32),  # noqa: E731
                                           g.ints([1], "one")], base=b)
    rows = g.op1("Concat", [as_col(image), as_col(label), as_col(score), box], base=b, axis=1)
    if L.keep_top_k > -1:
        rows = _keep_top_k(c, rows, image, score, num)
    _emit_rows(c, rows, num, i64, f32)


def _emit_rows(c, rows, num, i64, f32):
    """(1, 1, K, 7) from rows (K, 7); K = 0 gives Caffe's one [n, -1 x 6] row per image."""
    g, b = c.g, c.base("output")
    zero, one = g.ints([0], "zero"), g.ints([1], "one")
    scalar = lambda t: g.op1("Squeeze", [t, zero], base=b)  # noqa: E731
    ids = g.op1("Cast", [g.op1("Range", [scalar(zero), scalar(num), scalar(one)], base=b)],
                base=b, to=f32)
    minus = g.op1("Expand", [g.const(-np.ones((1, 6), np.float32), c.base("minus_one")),
                             g.op1("Concat", [num, g.ints([6])], base=b, axis=0)], base=b)
    fallback = g.op1("Concat", [g.op1("Unsqueeze", [ids, one], base=b), minus], base=b, axis=1)
    k = g.slice(g.op1("Shape", [rows], base=b), [0], [1], [0], base=b)
    empty = g.op1("Cast", [g.op1("Equal", [k, zero], base=b)], base=b, to=i64)
    end = g.op1("Add", [k, g.op1("Mul", [num, empty], base=b)], base=b)
    both = g.op1("Concat", [rows, fallback], base=b, axis=0)
    out = g.op1("Slice", [both, zero, end, zero], base=b)
    g.op1("Reshape", [out, g.ints([1, 1, -1, 7])], c.y)
