"""YOLOv3 (darknet's ``[yolo]`` layer, pjreddie/darknet src/yolo_layer.c): the training loss
``Yolov3Loss`` and the box decoder ``Yolov3Detection``.

Layout of the conv output (bottom[0]): N x (A (5 + C)) x H x W, A = len(mask) anchors per cell,
each with the planes (x, y, w, h, objectness, class_0 .. class_{C-1}), darknet's entry order.
Decoding (darknet's get_yolo_box), for the anchor a at cell (i, j), anchor n = mask[a]:

    bx = (i + sigmoid(tx)) / W      by = (j + sigmoid(ty)) / H
    bw = exp(tw) anchor_w[n] / net_w      bh = exp(th) anchor_h[n] / net_h
    objectness = sigmoid(to),  class scores = sigmoid(tc)  (independent logistics)

Boxes are (centre x, centre y, width, height), normalised to [0, 1] by the network input size
(net_w x net_h, darknet's net.w / net.h: the unit of the anchors).

Parameters (``yolov3_loss_param``, shared by both layers; defaults are darknet's):
  anchors        all anchors as w, h pairs in input pixels (2 num values).
  mask           indices (into the anchors) this output scale predicts; empty: 0 .. num-1.
  classes        C, the number of classes (default 20).
  num            the total number of anchors (default 1).
  ignore_thresh  a prediction whose box overlaps some truth box by IoU > ignore_thresh gets
                 no objectness gradient (it is neither pushed to 0 nor to 1). Default .5.
  truth_thresh   a prediction whose best IoU with a truth exceeds this is trained as a positive
                 for that truth (objectness, class and box, with its own anchor); default 1,
                 i.e. never (an IoU is at most 1).
  max_boxes      rows of the truth bottom per image (default 90, darknet's).
  net_w, net_h   network input size in pixels (decaf additions); unset: the width and height
                 of the optional last bottom (the input image blob, as PriorBox takes it).
"""
import numpy as np

from ..layer import Layer, register_layer
from .loss import check_no_label_backward


def _sigmoid(xp, z):
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def box_iou(a, b, xp=np):
    """IoU of boxes given as (..., 4) arrays of (cx, cy, w, h); broadcasts like darknet's
    box_iou (an empty union gives 0)."""
    def overlap(c1, w1, c2, w2):
        lo = xp.maximum(c1 - w1 / 2, c2 - w2 / 2)
        hi = xp.minimum(c1 + w1 / 2, c2 + w2 / 2)
        return xp.maximum(hi - lo, 0)
    inter = overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2]) * \
        overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return xp.where(union > 0, inter / xp.where(union > 0, union, 1), 0)


class _YoloBase(Layer):
    """Parameter parsing and shape checks shared by Yolov3Loss and Yolov3Detection."""

    #: bottoms before the optional image bottom
    data_bottoms = 1

    def read_yolo_params(self, bottom):
        p = self.layer_param.yolov3_loss_param
        self.C = int(p.classes)
        self.num = int(p.num)
        self.mask = [int(m) for m in p.mask] or list(range(self.num))
        self.A = len(self.mask)
        if self.num <= 0:
            self.error("yolov3_loss_param.num (total anchors) must be positive")
        if len(p.anchors) != 2 * self.num:
            self.error("yolov3_loss_param.anchors must hold 2 num = %d values (w, h pairs), "
                       "got %d" % (2 * self.num, len(p.anchors)))
        self.anchors = np.asarray(p.anchors, np.float64).reshape(self.num, 2)
        if (self.anchors <= 0).any():
            self.error("yolov3_loss_param.anchors must be positive, got %s"
                       % list(p.anchors))
        bad = [m for m in self.mask if m >= self.num]
        if bad:
            self.error("yolov3_loss_param.mask entries must be < num = %d, got %s"
                       % (self.num, bad))
        if (p.net_w > 0) != (p.net_h > 0):
            self.error("set both yolov3_loss_param.net_w and net_h, or neither")
        self.fixed_net = (int(p.net_w), int(p.net_h)) if p.net_w > 0 else None
        if self.fixed_net is None and len(bottom) <= self.data_bottoms:
            self.error("the network input size is unknown: set yolov3_loss_param.net_w and "
                       "net_h, or give the input image blob as the last bottom")
        # anchor index -> position in mask (darknet's int_index: the first match)
        self.mask_lut = np.full(self.num, -1, np.int64)
        for k in reversed(range(self.A)):
            self.mask_lut[self.mask[k]] = k

    def reshape_yolo(self, bottom):
        x = bottom[0]
        if x.num_axes != 4:
            self.error("bottom %s must be 4-D (N x A(5 + classes) x H x W), got shape %s"
                       % (self._bname(0), x.shape))
        if x.shape[1] != self.A * (5 + self.C):
            self.error("bottom %s has %d channels; len(mask) x (5 + classes) = %d x %d = %d "
                       "expected" % (self._bname(0), x.shape[1], self.A, 5 + self.C,
                                     self.A * (5 + self.C)))
        self.N, _, self.H, self.W = x.shape
        if self.fixed_net is not None:
            self.net_w, self.net_h = self.fixed_net
        else:
            img = bottom[self.data_bottoms]
            if img.num_axes < 2:
                self.error("the image bottom %s must have height and width axes, got shape %s"
                           % (self._bname(self.data_bottoms), img.shape))
            self.net_h, self.net_w = img.shape[-2], img.shape[-1]

    def _bname(self, i):
        names = self.layer_param.bottom
        return names[i] if i < len(names) else "#%d" % i

    def decode(self, z):
        """(sigmoid outputs (N, A, 5+C, H, W) with w, h left raw, boxes (N, A, H, W, 4))."""
        xp = self.xp
        out = _sigmoid(xp, z)
        out[:, :, 2:4] = z[:, :, 2:4]
        anc = xp.asarray(self.anchors[self.mask])
        gx = xp.arange(self.W, dtype=z.dtype)
        gy = xp.arange(self.H, dtype=z.dtype)[:, None]
        boxes = xp.stack([(gx + out[:, :, 0]) / self.W,
                          (gy + out[:, :, 1]) / self.H,
                          xp.exp(z[:, :, 2]) * anc[None, :, 0, None, None] / self.net_w,
                          xp.exp(z[:, :, 3]) * anc[None, :, 1, None, None] / self.net_h],
                         axis=-1)
        return out, boxes

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register_layer("Yolov3Loss")
class Yolov3LossLayer(_YoloBase):
    """Yolov3Loss: darknet's yolo_layer loss; bottom diff = -(darknet's delta), i.e.
    diff = s (sigmoid(t) - target) for x, y, objectness, classes and s (t - target) for w, h;
    top[0] = sum of s (BCE(sigmoid(t), target) - H(target)) + sum of s/2 (t - target)^2.

    Bottoms: the conv output (see the module doc), the truth boxes N x max_boxes x 5 (any shape
    with N x max_boxes*5 values): rows (x, y, w, h, class) with x, y, w, h normalised to [0, 1]
    (centre, size) and class in [0, classes); the list of an image ends at its first row with
    w == 0 (pad with zeros). Optional third bottom: the input image (for net_w/net_h).
    Tops: the loss; optional second top: darknet's reported cost sum(delta^2) (no gradient).

    Targets, as darknet builds them (s: the box scale 2 - truth_w truth_h):
      * every prediction: objectness target 0, unless its box has IoU > ignore_thresh with some
        truth of its image (then no objectness term), or IoU > truth_thresh (then a positive).
      * every truth: the anchor (over all num) whose shape best matches it (IoU of boxes with
        a common centre); if that anchor is in mask, the prediction at the truth's cell and that
        anchor gets box targets (x W - i, y H - j, log(w net_w / anchor_w), log(h net_h /
        anchor_h)) with scale s, objectness 1 and class targets (1 for the truth's class, 0 for
        the others; when several truths land on one prediction the box is the last truth's and
        the classes are their union, as darknet's delta_yolo_class does).

    darknet applies its deltas to the pre-activation (the yolo layer's backward copies delta
    without a logistic derivative): for a logistic output, target - sigmoid(t) is the negative
    gradient of the logistic cross-entropy, not of a squared error. So the loss whose exact
    gradient this layer back-propagates is the cross-entropy (minus the target's entropy, so
    that it is 0 at the target) for logistic entries and half the squared error for w, h,
    each times its scale; darknet's printed cost sum(delta^2) is the optional second top.
    The loss is a plain sum over the batch (darknet divides its learning rate by the batch).
    """

    min_bottom = 2
    max_bottom = 3
    min_top = 1
    max_top = 2
    data_bottoms = 2

    def SetUp(self, bottom, top):
        if not len(self.layer_param.loss_weight):
            self.set_loss(0, 1.0)
        super().SetUp(bottom, top)

    def setup(self, bottom, top):
        self.read_yolo_params(bottom)
        p = self.layer_param.yolov3_loss_param
        self.ignore_thresh = float(p.ignore_thresh)
        self.truth_thresh = float(p.truth_thresh)
        self.T = int(p.max_boxes)
        if self.T <= 0:
            self.error("yolov3_loss_param.max_boxes must be positive")
        self.stats = {}

    def reshape(self, bottom, top):
        self.reshape_yolo(bottom)
        t = bottom[1]
        if t.num_axes < 1 or t.shape[0] != self.N or t.count != self.N * self.T * 5:
            self.error("truth bottom %s must hold N x max_boxes x 5 = %d x %d x 5 values "
                       "(x, y, w, h, class rows), got shape %s"
                       % (self._bname(1), self.N, self.T, t.shape))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(())
        self.shape5 = (self.N, self.A, 5 + self.C, self.H, self.W)
        if getattr(self, "_diff", None) is None or self._diff.shape != self.shape5 or \
                self._diff.dtype != bottom[0].dtype:
            self._diff = self.xp.zeros(self.shape5, dtype=bottom[0].dtype)

    # -- truths ----------------------------------------------------------------------------
    def read_truths(self, blob):
        """(rows (N, T, 5), valid (N, T)): a row is used when every row up to it has w != 0."""
        xp = self.xp
        tr = blob.data.reshape(self.N, self.T, 5).astype(np.float64)
        valid = xp.cumprod(tr[..., 2] != 0, axis=1).astype(bool)
        v = tr[valid]
        cls = v[:, 4]
        problems = []
        if v.size:
            if bool(((v[:, 0:2] < 0) | (v[:, 0:2] > 1)).any()):
                problems.append("x, y must be in [0, 1]")
            if bool((v[:, 2:4] <= 0).any()):
                problems.append("w, h must be positive (w == 0 ends the list)")
            if bool(((cls < 0) | (cls >= self.C) | (cls != xp.floor(cls))).any()):
                problems.append("class must be an integer in [0, %d)" % self.C)
        if problems:
            self.error("bad truth rows in bottom %s: %s" % (self._bname(1), "; ".join(problems)))
        return tr, valid

    def build_targets(self, z, boxes, tr, valid):
        """Targets and per-entry weights (scales), shaped like z; weight 0: no term."""
        xp = self.xp
        tgt = xp.zeros(z.shape, dtype=np.float64)
        wgt = xp.zeros(z.shape, dtype=np.float64)
        # 1) every prediction: objectness 0, ignored above ignore_thresh
        used = max(int(valid.sum(axis=1).max()), 1)   # the valid rows are a prefix
        iou = box_iou(boxes[..., None, :], tr[:, None, None, None, :used, :4], xp)  # N,A,H,W,T
        iou = xp.where(valid[:, None, None, None, :used], iou, 0)
        best_iou, best_t = iou.max(axis=-1), iou.argmax(axis=-1)
        wgt[:, :, 4] = best_iou <= self.ignore_thresh
        self.stats["best_iou"] = best_iou
        # ... and positives above truth_thresh (own anchor, its own cell)
        b, a, j, i = xp.nonzero(best_iou > self.truth_thresh)
        if b.size:
            rows = tr[b, best_t[b, a, j, i]]
            self._set_positive(tgt, wgt, b, a, j, i, rows, xp.asarray(self.mask)[a])
        self._assign_truths(tgt, wgt, boxes, tr, valid)
        return tgt, wgt

    def _assign_truths(self, tgt, wgt, boxes, tr, valid):
        """2) every truth: the best anchor by shape (over all num), if it is in the mask."""
        xp = self.xp
        b, t = xp.nonzero(valid)
        rows = tr[b, t]
        anc = xp.asarray(self.anchors) / xp.asarray([self.net_w, self.net_h], np.float64)
        inter = xp.minimum(rows[:, None, 2], anc[None, :, 0]) * \
            xp.minimum(rows[:, None, 3], anc[None, :, 1])
        shape_iou = inter / (rows[:, None, 2] * rows[:, None, 3] + anc[:, 0] * anc[:, 1] - inter)
        best_n = shape_iou.argmax(axis=1)
        a = xp.asarray(self.mask_lut)[best_n]
        mine = a >= 0
        b, a, rows, best_n = b[mine], a[mine], rows[mine], best_n[mine]
        i = xp.clip((rows[:, 0] * self.W).astype(np.int64), 0, self.W - 1)
        j = xp.clip((rows[:, 1] * self.H).astype(np.int64), 0, self.H - 1)
        # several truths on one prediction: the box comes from the last one (darknet's order)
        key = ((b * self.A + a) * self.H + j) * self.W + i
        _, first_rev = np.unique(_np(key[::-1]), return_index=True)
        last = xp.asarray(key.size - 1 - first_rev)
        self._set_box(tgt, wgt, b[last], a[last], j[last], i[last], rows[last], best_n[last])
        tgt[b, a, 4, j, i] = 1
        wgt[b, a, 4, j, i] = 1
        wgt[b, a, 5:, j, i] = 1
        tgt[b, a, 5 + rows[:, 4].astype(np.int64), j, i] = 1   # union of the classes
        self.stats.update(count=int(b.size),
                          iou=box_iou(boxes[b, a, j, i], rows[:, :4], xp) if b.size else None)

    def _set_positive(self, tgt, wgt, b, a, j, i, rows, anchor):
        self._set_box(tgt, wgt, b, a, j, i, rows, anchor)
        tgt[b, a, 4, j, i] = 1
        wgt[b, a, 4, j, i] = 1
        wgt[b, a, 5:, j, i] = 1
        tgt[b, a, 5:, j, i] = 0
        tgt[b, a, 5 + rows[:, 4].astype(np.int64), j, i] = 1

    def _set_box(self, tgt, wgt, b, a, j, i, rows, anchor):
        xp = self.xp
        anc = xp.asarray(self.anchors)[anchor]
        scale = 2 - rows[:, 2] * rows[:, 3]
        tgt[b, a, 0, j, i] = rows[:, 0] * self.W - i
        tgt[b, a, 1, j, i] = rows[:, 1] * self.H - j
        tgt[b, a, 2, j, i] = xp.log(rows[:, 2] * self.net_w / anc[:, 0])
        tgt[b, a, 3, j, i] = xp.log(rows[:, 3] * self.net_h / anc[:, 1])
        for e in range(4):
            wgt[b, a, e, j, i] = scale

    # -- forward / backward ----------------------------------------------------------------
    def forward(self, bottom, top):
        xp = self.xp
        z = bottom[0].data.reshape(self.shape5)
        out, boxes = self.decode(z)
        tr, valid = self.read_truths(bottom[1])
        tgt, wgt = self.build_targets(z, boxes, tr, valid)
        diff = wgt * (out - tgt)            # out holds sigmoid(t) (raw t for w, h)
        lin = slice(2, 4)
        # logistic entries: s (softplus(t) - tg t + tg log tg + (1 - tg) log(1 - tg)), tg: target
        zz = z.astype(np.float64)
        bce = xp.maximum(zz, 0) + xp.log1p(xp.exp(-xp.abs(zz))) - tgt * zz
        inside = (tgt > 0) & (tgt < 1)
        tc = xp.where(inside, tgt, 0.5)
        ent = xp.where(inside, tc * xp.log(tc) + (1 - tc) * xp.log(1 - tc), 0)
        term = wgt * (bce + ent)
        term[:, :, lin] = wgt[:, :, lin] * 0.5 * (zz[:, :, lin] - tgt[:, :, lin]) ** 2
        top[0].data[...] = float(term.sum())
        if len(top) > 1:
            top[1].data[...] = float(xp.vdot(diff.ravel(), diff.ravel()))
        self._diff[...] = diff
        self.stats["recall50"] = float((self.stats["iou"] > 0.5).mean()) \
            if self.stats["count"] else 0.0

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [1], "the truth boxes")
        if propagate_down[0]:
            self.xp.multiply(self._diff, float(top[0].diff),
                             out=bottom[0].diff.reshape(self.shape5))
        if len(bottom) > 2 and propagate_down[2]:
            bottom[2].diff[...] = 0

    def darknet_delta(self):
        """darknet's l.delta for the last forward (N, A, 5 + C, H, W): minus the diff."""
        return -self._diff


def _np(a):
    from ..backend import to_numpy
    return to_numpy(a)


def nms(boxes, scores, thresh, top_k=None):
    """Greedy non-maximum suppression (darknet's do_nms_sort for one class): indices kept, best
    first. ``boxes``: (K, 4) centre boxes. A box is dropped when its IoU with a kept, higher
    scoring box is > thresh."""
    order = np.argsort(-scores, kind="stable")
    if top_k is not None and top_k >= 0:
        order = order[:top_k]
    b = boxes[order]
    iou = box_iou(b[:, None, :], b[None, :, :])
    dropped = np.zeros(len(order), bool)
    keep = []
    for k in range(len(order)):   # sequential by nature; vectorised over the other boxes
        if dropped[k]:
            continue
        keep.append(order[k])
        dropped |= iou[k] > thresh
    return np.asarray(keep, np.int64)


@register_layer("Yolov3Detection")
class Yolov3DetectionLayer(_YoloBase):
    """Yolov3Detection: decode a [yolo] output into boxes, keep score = objectness x class score
    above confidence_threshold (objectness itself above it too, as darknet), per-class NMS.

    Bottoms: the conv output, optional input image (net size). Parameters: yolov3_loss_param
    (anchors, mask, classes, num, net_w, net_h) and detection_output_param
    (confidence_threshold, default 0; nms_param.nms_threshold, default .3 (darknet uses .45);
    nms_param.top_k: candidates per class before NMS; keep_top_k: detections kept per image).
    Top: 1 x 1 x K x 7, rows (image id, class, score, x1, y1, x2, y2) in [0, 1] coordinates of
    the network input, as SSD's DetectionOutput; no detection at all: one row of -1.
    """

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        self.read_yolo_params(bottom)
        d = self.layer_param.detection_output_param
        self.conf = float(d.confidence_threshold)
        self.nms_thresh = float(d.nms_param.nms_threshold)
        self.top_k = int(d.nms_param.top_k) if d.nms_param.HasField("top_k") else None
        self.keep_top_k = int(d.keep_top_k)

    def reshape(self, bottom, top):
        self.reshape_yolo(bottom)
        top[0].reshape((1, 1, 1, 7))

    def forward(self, bottom, top):
        z = bottom[0].data.reshape(self.N, self.A, 5 + self.C, self.H, self.W)
        out, boxes = self.decode(z)
        out, boxes = _np(out), _np(boxes)
        obj = out[:, :, 4]                                   # N, A, H, W
        prob = obj[:, :, None] * out[:, :, 5:]               # N, A, C, H, W
        keep = (obj[:, :, None] > self.conf) & (prob > self.conf)
        rows = []
        for n in range(self.N):
            a, c, j, i = np.nonzero(keep[n])
            score, bx = prob[n, a, c, j, i], boxes[n, a, j, i]
            img_rows = []
            for cls in np.unique(c):
                sel = np.flatnonzero(c == cls)
                kept = sel[nms(bx[sel], score[sel], self.nms_thresh, self.top_k)]
                img_rows.append(np.column_stack([np.full(kept.size, n), np.full(kept.size, cls),
                                                 score[kept], _corners(bx[kept])]))
            if img_rows:
                r = np.concatenate(img_rows)
                r = r[np.argsort(-r[:, 2], kind="stable")]
                if self.keep_top_k > -1:
                    r = r[:self.keep_top_k]
                rows.append(r)
        det = np.concatenate(rows) if rows else np.full((1, 7), -1.0)
        top[0].reshape((1, 1, det.shape[0], 7))
        top[0].data[...] = self.xp.asarray(det.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            self.error("Yolov3Detection has no backward")


def _corners(b):
    return np.column_stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                            b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2])
