"""SSD layers (Wei Liu's caffe, branch ssd): Normalize, Permute, PriorBox, DetectionOutput.

These are the layers that the published SSD detectors (VGG/ResNet/MobileNet SSD, OpenCV's face
detector, WeChat's QR-code detector) add to BVLC Caffe. The semantics follow SSD's
normalize_layer.cpp, permute_layer.cpp, prior_box_layer.cpp, detection_output_layer.cpp and
util/bbox_util.cpp (DecodeBBox, JaccardOverlap, ApplyNMSFast), with their parameter messages at
SSD's LayerParameter field numbers (norm_param 206, permute_param 202, prior_box_param 203,
detection_output_param 204).

Where decaf departs from SSD's code, on purpose:
- Normalize backward with channel_shared: false. SSD computes
  bottom_diff = scale_c * (top_diff - x * sum_c(x * top_diff) / norm^2) / norm, which leaves the
  per-channel scale out of the inner sum and so is not the gradient of its forward unless all
  scales are equal. decaf returns the gradient: with g = scale_c * top_diff,
  bottom_diff = (g - x * sum_c(x * g) / norm^2) / norm (identical to SSD for channel_shared).
- DetectionOutput with share_location and background_label_id -1: SSD's DecodeBBoxesAll skips
  the shared label -1 (it equals the background id) and then aborts; decaf decodes and detects.
- DetectionOutput's save_output_param (writing VOC/COCO files) is refused; visualize is ignored.
"""
import math
import warnings

import numpy as np

from .. import backend
from ..kernels import nms
from ..layer import Layer, register_layer

FLT_MAX = float(np.finfo(np.float32).max)


def _legacy_nchw(layer, blob, what="bottom[0]"):
    """(num, channels, height*width) of a blob of 2 to 4 axes (Caffe's legacy accessors)."""
    if not 2 <= blob.num_axes <= 4:
        layer.error("%s must have 2 to 4 axes (num, channels[, height[, width]]), got shape %s"
                    % (what, blob.shape))
    return blob.shape[0], blob.shape[1], blob.count_range(2)


# -- Normalize -------------------------------------------------------------------------------------

@register_layer("Normalize")
class NormalizeLayer(Layer):
    """Normalize: top = scale * bottom / norm, norm = sqrt(sum bottom^2 + eps), the sum over
    (C, H, W) per item (across_spatial) or over C per position; scale is one learned value
    (channel_shared) or one per channel. With g = scale * top_diff:
    bottom diff = (g - bottom * <bottom, g> / norm^2) / norm;
    scale diff += sum(top_diff * bottom / norm)."""
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            self.error("does not allow in-place computation (its backward reads bottom and top)")
        p = self.layer_param.norm_param
        self.across_spatial = bool(p.across_spatial)
        self.channel_shared = bool(p.channel_shared)
        self.eps = float(p.eps)
        _, channels, _ = _legacy_nchw(self, bottom[0])
        want = 1 if self.channel_shared else channels
        if self.blobs:
            if len(self.blobs) != 1 or self.blobs[0].count != want:
                self.error("expects 1 scale blob of %d value(s) (channel_shared: %s, %d channels),"
                           " got %s" % (want, self.channel_shared, channels,
                                        [b.shape for b in self.blobs]))
        else:
            from .. import filler
            scale = self.make_blob(() if self.channel_shared else (channels,),
                                   dtype=bottom[0].dtype)
            if p.HasField("scale_filler"):
                filler.fill(scale, p.scale_filler)
            else:
                scale.data[...] = 1.0
            self.blobs = [scale]
        self.param_propagate_down = [True]
        self.channels = channels

    def reshape(self, bottom, top):
        num, channels, spatial = _legacy_nchw(self, bottom[0])
        if channels != self.channels:
            self.error("bottom %s has %d channels but the layer was set up for %d"
                       % (self.blob_names("bottom"), channels, self.channels))
        top[0].reshape(bottom[0].shape)
        self.shape3 = (num, channels, spatial)
        norm_shape = (num, 1, 1) if self.across_spatial else (num, 1, spatial)
        xp, dt = self.xp, bottom[0].dtype
        if getattr(self, "norm", None) is None or self.norm.shape != norm_shape \
                or self.norm.dtype != dt:
            self.norm = xp.empty(norm_shape, dt)
        if getattr(self, "buf", None) is None or self.buf.shape != self.shape3 \
                or self.buf.dtype != dt:
            self.buf = xp.empty(self.shape3, dt)

    def _scale(self):
        s = self.blobs[0].data
        return s.reshape(()) if self.channel_shared else s.reshape(1, -1, 1)

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.shape3)
        y = top[0].data.reshape(self.shape3)
        xp.multiply(x, x, out=self.buf)
        axes = (1, 2) if self.across_spatial else (1,)
        xp.sum(self.buf, axis=axes, keepdims=True, out=self.norm)
        self.norm += self.eps
        xp.sqrt(self.norm, out=self.norm)
        xp.divide(x, self.norm, out=y)
        y *= self._scale()

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        x = bottom[0].data.reshape(self.shape3)
        dy = top[0].diff.reshape(self.shape3)
        axes = (1, 2) if self.across_spatial else (1,)
        if self.param_propagate_down[0]:
            # Caffe: sum(top * top_diff) / scale; the same as sum(bottom / norm * top_diff)
            xp.divide(x, self.norm, out=self.buf)
            self.buf *= dy
            sd = self.blobs[0].diff
            if self.channel_shared:
                sd += self.buf.sum()
            else:
                sd += self.buf.sum(axis=(0, 2)).reshape(sd.shape)
        if propagate_down[0]:
            # g = scale * top_diff; bottom_diff = (g - bottom * <bottom, g> / norm^2) / norm.
            # SSD applies the scale after the bracket instead, which is the same for a shared
            # scale but not the gradient for per-channel scales (see the module docstring).
            dx = bottom[0].diff.reshape(self.shape3)
            xp.multiply(dy, self._scale(), out=dx)
            xp.multiply(x, dx, out=self.buf)
            a = self.buf.sum(axis=axes, keepdims=True)
            a /= self.norm * self.norm
            xp.multiply(x, a, out=self.buf)
            dx -= self.buf
            dx /= self.norm


# -- Permute ---------------------------------------------------------------------------------------

@register_layer("Permute")
class PermuteLayer(Layer):
    """Permute: top = bottom with its axes reordered, top axis i = bottom axis order[i] (axes not
    listed follow in their original order); bottom diff = top diff permuted back."""
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            self.error("does not allow in-place computation")
        n = bottom[0].num_axes
        orders = []
        for o in self.layer_param.permute_param.order:
            if o >= n:
                self.error("permute_param.order %d should be less than the number of axes (%d) of "
                           "bottom %s, shape %s" % (o, n, self.blob_names("bottom"),
                                                    bottom[0].shape))
            if o in orders:
                self.error("permute_param.order has duplicate axis %d (order: %s)"
                           % (o, list(self.layer_param.permute_param.order)))
            orders.append(int(o))
        orders += [i for i in range(n) if i not in orders]
        self.order = tuple(orders)
        self.inverse = tuple(int(i) for i in np.argsort(orders))
        self.need_permute = self.order != tuple(range(n))

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != len(self.order):
            self.error("bottom %s has %d axes, but the layer was set up for %d"
                       % (self.blob_names("bottom"), b.num_axes, len(self.order)))
        top[0].reshape(tuple(b.shape[o] for o in self.order))

    def forward(self, bottom, top):
        if self.need_permute:
            top[0].data[...] = self.xp.transpose(bottom[0].data, self.order)
        else:
            top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            if self.need_permute:
                bottom[0].diff[...] = self.xp.transpose(top[0].diff, self.inverse)
            else:
                bottom[0].diff[...] = top[0].diff


# -- PriorBox --------------------------------------------------------------------------------------

@register_layer("PriorBox")
class PriorBoxLayer(Layer):
    """PriorBox: default boxes of one feature map (bottom[0], H x W) on the image (bottom[1] or
    img_size): for each position, for each min_size: the square min box, the sqrt(min*max) box,
    then one box per aspect ratio r != 1 (w = s sqrt(r), h = s / sqrt(r)); top (1, 2, H*W*P*4):
    [xmin, ymin, xmax, ymax] / image size, then the variances. No gradient."""
    shape_only_reshape = True

    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.prior_box_param
        if not len(p.min_size):
            self.error("prior_box_param must provide min_size")
        # SSD keeps min/max sizes as float but reads them into an int in Forward_cpu
        self.min_sizes = [float(s) for s in p.min_size]
        if any(s <= 0 for s in self.min_sizes):
            self.error("prior_box_param.min_size must be positive, got %s" % self.min_sizes)
        ratios = [1.0]
        for ar in p.aspect_ratio:
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(float(ar))
            if p.flip:
                ratios.append(float(np.float32(1.0 / ar)))
        self.aspect_ratios = ratios
        self.max_sizes = [float(s) for s in p.max_size]
        if self.max_sizes:
            if len(self.max_sizes) != len(self.min_sizes):
                self.error("prior_box_param needs as many max_size as min_size (%d vs %d)"
                           % (len(self.max_sizes), len(self.min_sizes)))
            for mn, mx in zip(self.min_sizes, self.max_sizes):
                if not mx > mn:
                    self.error("max_size must be greater than min_size (%g <= %g)" % (mx, mn))
        self.num_priors = len(ratios) * len(self.min_sizes) + len(self.max_sizes)
        self.clip = bool(p.clip)
        self._setup_variance(p)
        self._setup_sizes(p)
        self.offset = float(p.offset)
        self._key = None

    def _setup_variance(self, p):
        v = [float(x) for x in p.variance]
        if len(v) > 1 and len(v) != 4:
            self.error("prior_box_param.variance takes 1 or 4 values, got %d" % len(v))
        if any(x <= 0 for x in v):
            self.error("prior_box_param.variance must be positive, got %s" % v)
        self.variance = v or [0.1]

    def _setup_sizes(self, p):
        if p.HasField("img_h") or p.HasField("img_w"):
            if p.HasField("img_size"):
                self.error("either img_size or img_h/img_w should be specified; not both")
            self.img_h, self.img_w = int(p.img_h), int(p.img_w)
            if self.img_h <= 0 or self.img_w <= 0:
                self.error("img_h and img_w should be larger than 0 (got %d, %d)"
                           % (self.img_h, self.img_w))
        elif p.HasField("img_size"):
            if p.img_size <= 0:
                self.error("img_size should be larger than 0")
            self.img_h = self.img_w = int(p.img_size)
        else:
            self.img_h = self.img_w = 0
        if p.HasField("step_h") or p.HasField("step_w"):
            if p.HasField("step"):
                self.error("either step or step_h/step_w should be specified; not both")
            self.step_h, self.step_w = float(p.step_h), float(p.step_w)
            if not (self.step_h > 0 and self.step_w > 0):
                self.error("step_h and step_w should be larger than 0 (got %g, %g)"
                           % (self.step_h, self.step_w))
        elif p.HasField("step"):
            if not p.step > 0:
                self.error("step should be larger than 0, got %g" % p.step)
            self.step_h = self.step_w = float(p.step)
        else:
            self.step_h = self.step_w = 0.0

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom):
            if not 2 <= b.num_axes <= 4:
                self.error("bottom[%d] must have 2 to 4 axes, got shape %s" % (i, b.shape))
        h, w = bottom[0].height, bottom[0].width
        if h * w * self.num_priors == 0:
            self.error("bottom[0] %s has an empty feature map" % (bottom[0].shape,))
        top[0].reshape(1, 2, h * w * self.num_priors * 4)
        if self.img_h == 0 or self.img_w == 0:
            img_h, img_w = bottom[1].height, bottom[1].width
        else:
            img_h, img_w = self.img_h, self.img_w
        key = (h, w, img_h, img_w, top[0].dtype)
        if key != self._key:
            self._priors = self.xp.asarray(self._compute(h, w, img_h, img_w, top[0].dtype))
            self._key = key

    def _box_sizes(self):
        """(P, 2) widths and heights of the priors at one position, in SSD's order."""
        sizes = []
        for s, mn in enumerate(self.min_sizes):
            mn = int(mn)  # SSD: int min_size_ = min_sizes_[s]
            sizes.append((mn, mn))
            if self.max_sizes:
                big = math.sqrt(mn * int(self.max_sizes[s]))
                sizes.append((big, big))
            for ar in self.aspect_ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                sizes.append((mn * math.sqrt(ar), mn / math.sqrt(ar)))
        return np.asarray(sizes, np.float32).astype(np.float64)

    def _compute(self, h, w, img_h, img_w, dtype):
        f32 = np.float32
        if self.step_w == 0 or self.step_h == 0:
            step_w, step_h = f32(img_w) / f32(w), f32(img_h) / f32(h)
        else:
            step_w, step_h = f32(self.step_w), f32(self.step_h)
        cx = ((np.arange(w, dtype=f32) + f32(self.offset)) * step_w).astype(np.float64)
        cy = ((np.arange(h, dtype=f32) + f32(self.offset)) * step_h).astype(np.float64)
        bw, bh = self._box_sizes().T / 2.0
        boxes = np.empty((h, w, self.num_priors, 4))
        boxes[..., 0] = (cx[None, :, None] - bw) / img_w
        boxes[..., 1] = (cy[:, None, None] - bh) / img_h
        boxes[..., 2] = (cx[None, :, None] + bw) / img_w
        boxes[..., 3] = (cy[:, None, None] + bh) / img_h
        out = np.empty((1, 2, boxes.size), dtype)
        out[0, 0] = boxes.reshape(-1)
        if self.clip:
            np.clip(out[0, 0], 0.0, 1.0, out=out[0, 0])
        out[0, 1].reshape(-1, len(self.variance))[...] = np.asarray(self.variance, dtype)
        return out

    def forward(self, bottom, top):
        top[0].data[...] = self._priors

    def backward(self, top, propagate_down, bottom):
        pass  # SSD's Backward_cpu is empty: priors do not depend on bottom values


# -- DetectionOutput -------------------------------------------------------------------------------

def _decode(loc, prior, var, code_type, variance_in_target):
    """SSD's DecodeBBox for all priors: loc (..., P, 4), prior/var (P, 4) -> boxes (..., P, 4)."""
    if variance_in_target:
        var = np.ones_like(var)
    prior, var = prior[:, None, :], var[:, None, :]  # (P, 1, 4): broadcast over loc classes
    out = np.empty_like(loc)
    if code_type == 1:  # CORNER
        np.add(prior, var * loc, out=out)
        return out
    pw = prior[..., 2] - prior[..., 0]
    ph = prior[..., 3] - prior[..., 1]
    if code_type == 2:  # CENTER_SIZE
        pcx = (prior[..., 0] + prior[..., 2]) / 2
        pcy = (prior[..., 1] + prior[..., 3]) / 2
        cx = var[..., 0] * loc[..., 0] * pw + pcx
        cy = var[..., 1] * loc[..., 1] * ph + pcy
        with np.errstate(over="ignore"):
            w = np.exp(var[..., 2] * loc[..., 2]) * pw
            h = np.exp(var[..., 3] * loc[..., 3]) * ph
        out[..., 0], out[..., 1] = cx - w / 2, cy - h / 2
        out[..., 2], out[..., 3] = cx + w / 2, cy + h / 2
        return out
    # CORNER_SIZE
    size = np.stack([pw, ph, pw, ph], axis=-1)
    np.add(prior, var * loc * size, out=out)
    return out


def _bbox_size(boxes):
    """SSD's BBoxSize (normalized): w * h, 0 for a box with xmax < xmin or ymax < ymin."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.where((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), 0, w * h)


def apply_nms_fast(boxes, scores, score_threshold, nms_threshold, eta, top_k):
    """SSD's ApplyNMSFast: candidates with score > score_threshold, best first (stable), at most
    top_k of them; a candidate is kept when its overlap with every box kept so far is <= the
    adaptive threshold, which becomes threshold * eta after each kept box while it is > 0.5.
    Returns the kept indices into ``boxes``, best first (loop: decaf.kernels.nms)."""
    cand = np.flatnonzero(scores > score_threshold)
    if -1 < top_k < len(cand):       # only scores >= the top_k-th largest can be among them
        s = scores[cand]
        cand = cand[s >= np.partition(s, len(s) - top_k)[len(s) - top_k]]
    order = cand[np.argsort(-scores[cand], kind="stable")]
    if top_k > -1:
        order = order[:top_k]
    b = np.ascontiguousarray(boxes[order])
    keep = np.empty(len(order), np.int64)
    dt = b.dtype.type
    count = nms.greedy_nms(b, _bbox_size(b).astype(b.dtype), dt(nms_threshold), dt(eta), keep)
    return order[keep[:count]]


@register_layer("DetectionOutput")
class DetectionOutputLayer(Layer):
    """DetectionOutput: decode loc (bottom[0]) against the priors (bottom[2]), per-class NMS on
    conf (bottom[1]), keep the keep_top_k best over all classes; top (1, 1, K, 7) rows
    [image_id, label, score, xmin, ymin, xmax, ymax], grouped by image then label (ascending),
    best first. No backward."""

    min_bottom = 3
    max_bottom = 4
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.detection_output_param
        if not p.HasField("num_classes"):
            self.error("detection_output_param must specify num_classes")
        self.num_classes = int(p.num_classes)
        self.share_location = bool(p.share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background_label_id = int(p.background_label_id)
        self.code_type = int(p.code_type)
        if self.code_type not in (1, 2, 3):
            self.error("unknown code_type %d" % self.code_type)
        self.variance_encoded_in_target = bool(p.variance_encoded_in_target)
        self.keep_top_k = int(p.keep_top_k)
        self.confidence_threshold = float(p.confidence_threshold) \
            if p.HasField("confidence_threshold") else -FLT_MAX
        nms = p.nms_param
        self.nms_threshold = float(nms.nms_threshold)
        if self.nms_threshold < 0:
            self.error("nms_param.nms_threshold must be non negative, got %g" % self.nms_threshold)
        self.eta = float(nms.eta)
        if not 0 < self.eta <= 1:
            self.error("nms_param.eta must be in (0, 1], got %g" % self.eta)
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        s = p.save_output_param
        if s.output_directory and s.label_map_file and s.name_size_file:
            self.error("save_output_param (writing detections to %r) is not supported"
                       % s.output_directory)
        if p.visualize:
            warnings.warn("DetectionOutput %r: visualize is not supported and is ignored"
                          % self.name)

    def reshape(self, bottom, top):
        loc, conf, prior = bottom[0], bottom[1], bottom[2]
        for i, b in enumerate(bottom[:3]):
            if b.num_axes > 4 or b.num_axes < 2:
                self.error("bottom[%d] must have 2 to 4 axes, got shape %s" % (i, b.shape))
        if loc.num != conf.num:
            self.error("loc %s and conf %s must have the same num" % (loc.shape, conf.shape))
        self.num_priors = prior.height // 4
        if self.num_priors * self.num_loc_classes * 4 != loc.channels:
            self.error("number of priors (%d, from bottom[2] %s) must match the number of "
                       "location predictions (bottom[0] %s: %d = priors x %d x 4 expected)"
                       % (self.num_priors, prior.shape, loc.shape, loc.channels,
                          self.num_loc_classes))
        if self.num_priors * self.num_classes != conf.channels:
            self.error("number of priors (%d, from bottom[2] %s) must match the number of "
                       "confidence predictions (bottom[1] %s: %d = priors x %d classes expected)"
                       % (self.num_priors, prior.shape, conf.shape, conf.channels,
                          self.num_classes))
        if prior.channels < 2:
            self.error("bottom[2] (priors) must hold boxes and variances: shape (1, 2, P*4), "
                       "got %s" % (prior.shape,))
        top[0].reshape(1, 1, 1, 7)

    def _inputs(self, bottom):
        num, P = bottom[0].num, self.num_priors
        loc = backend.to_numpy(bottom[0].data).reshape(num, P, self.num_loc_classes, 4)
        conf = backend.to_numpy(bottom[1].data).reshape(num, P, self.num_classes)
        pr = backend.to_numpy(bottom[2].data).reshape(-1)
        prior, var = pr[:P * 4].reshape(P, 4), pr[P * 4:P * 8].reshape(P, 4)
        if self.code_type != 1:
            if not ((prior[:, 2] - prior[:, 0] > 0) & (prior[:, 3] - prior[:, 1] > 0)).all():
                self.error("every prior box must have a positive width and height for "
                           "code_type CENTER_SIZE / CORNER_SIZE")
        return loc, conf, prior, var

    def _detect_image(self, boxes, scores):
        """Per-class NMS then keep_top_k for one image -> (labels, indices) in output order."""
        labels, idx = [], []
        for c in range(self.num_classes):
            if c == self.background_label_id:
                continue
            b = boxes[:, 0 if self.share_location else c]
            keep = apply_nms_fast(b, scores[:, c], self.confidence_threshold,
                                  self.nms_threshold, self.eta, self.top_k)
            labels.append(np.full(len(keep), c, np.int64))
            idx.append(keep)
        labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
        if -1 < self.keep_top_k < len(idx):
            s = scores[idx, labels]
            best = np.argsort(-s, kind="stable")[:self.keep_top_k]
            best = best[np.argsort(labels[best], kind="stable")]  # map<label, ...> order
            labels, idx = labels[best], idx[best]
        return labels, idx

    def forward(self, bottom, top):
        loc, conf, prior, var = self._inputs(bottom)
        decoded = _decode(loc, prior, var, self.code_type, self.variance_encoded_in_target)
        rows = []
        for n in range(loc.shape[0]):
            labels, idx = self._detect_image(decoded[n], conf[n])
            r = np.empty((len(idx), 7), loc.dtype)
            r[:, 0], r[:, 1], r[:, 2] = n, labels, conf[n, idx, labels]
            r[:, 3:] = decoded[n, idx, 0 if self.share_location else labels]
            rows.append(r)
        out = np.concatenate(rows) if rows else np.zeros((0, 7), loc.dtype)
        if not len(out):  # Caffe: one fake row of -1 per image, holding the image id
            out = np.full((loc.shape[0], 7), -1, loc.dtype)
            out[:, 0] = np.arange(loc.shape[0])
        top[0].reshape(1, 1, len(out), 7)
        top[0].data[...] = self.xp.asarray(out)
