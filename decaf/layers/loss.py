"""Loss layers (and Accuracy): the scalar objectives a net minimises.

Every loss layer writes a 0-d top.  Its loss weight (default 1 for top 0) is what Caffe keeps in
``top[0].diff``; backward starts from it, so every gradient is scaled by ``top[0].diff``.  Loss
layers never back-propagate into their label bottom.

This module also holds the helpers the softmax-based losses (``softmax.py``) share: Caffe's
normalization rule (``LossParameter.normalization`` and the legacy ``normalize`` flag),
``get_normalizer`` and integer label reading with ``ignore_label``.
"""
import numpy as np

from ..errors import ShapeMismatchError
from ..layer import Layer, LossLayer, register_layer

#: Caffe's floor for probabilities in SoftmaxWithLoss: ``FLT_MIN``.
FLT_MIN = float(np.finfo(np.float32).tiny)
#: Caffe's ``kLOG_THRESHOLD`` (MultinomialLogisticLoss, InfogainLoss).
LOG_THRESHOLD = 1e-20


# -- shared helpers -------------------------------------------------------------------------------
def normalization_mode(layer, default=None):
    """The NormalizationMode a loss layer uses (Caffe's rule).

    An explicit ``loss_param.normalization`` wins; otherwise the deprecated ``normalize`` flag, when
    set, means VALID (true) or BATCH_SIZE (false); otherwise ``default`` (None: the proto default,
    VALID).
    """
    lp = layer.layer_param.loss_param
    modes = layer._pb.LossParameter
    if lp.HasField("normalization"):
        return lp.normalization
    if lp.HasField("normalize"):
        return modes.VALID if lp.normalize else modes.BATCH_SIZE
    return lp.normalization if default is None else default


def get_normalizer(layer, mode, outer_num, inner_num, valid_count):
    """Caffe's LossLayer::GetNormalizer, clamped to at least 1 (no NaN when all are ignored)."""
    modes = layer._pb.LossParameter
    if mode == modes.FULL:
        n = outer_num * inner_num
    elif mode == modes.VALID:
        n = outer_num * inner_num if valid_count == -1 else valid_count
    elif mode == modes.BATCH_SIZE:
        n = outer_num
    elif mode == modes.NONE:
        n = 1
    else:
        layer.error("unknown loss_param.normalization %r" % (mode,))
    return float(max(1.0, n))


def ignore_label_of(msg):
    """``msg.ignore_label`` when the field is set, else None."""
    return int(msg.ignore_label) if msg.HasField("ignore_label") else None


def canonical_axis(layer, blob, axis, field, index=0):
    try:
        return blob.canonical_axis_index(axis)
    except ShapeMismatchError:
        layer.error("%s %d is out of range for bottom %s of shape %s"
                    % (field, axis, layer.layer_param.bottom[index] if
                       len(layer.layer_param.bottom) > index else index, blob.shape))


def read_labels(layer, label_blob, shape, num_classes, ignore_label, index=1):
    """Integer labels (C's truncating cast) of ``shape``, and the mask of the counted ones.

    Returns ``(labels, valid)``: ``valid`` is None when no ignore_label is set; ignored entries
    of ``labels`` are replaced by 0 so that they can index safely.  A counted label outside
    ``[0, num_classes)`` raises LayerSetupError.
    """
    xp = layer.xp
    with np.errstate(invalid="ignore"):
        lab = label_blob.data.reshape(shape).astype(np.int64)
    valid = None if ignore_label is None else (lab != ignore_label)
    bad = (lab < 0) | (lab >= num_classes)
    if valid is not None:
        bad &= valid
    if bool(bad.any()):
        j = int(xp.flatnonzero(bad.ravel())[0])
        name = layer.layer_param.bottom[index] if len(layer.layer_param.bottom) > index else index
        layer.error("label %r at index %d of bottom %s is not in [0, %d)%s"
                    % (float(label_blob.data.ravel()[j]), j, name, num_classes,
                       "" if ignore_label is None else
                       " and is not the ignore_label %d" % ignore_label))
    if valid is not None:
        lab = xp.where(valid, lab, 0)
    return lab, valid


def check_no_label_backward(layer, propagate_down, indices, what="label inputs"):
    for i in indices:
        if i < len(propagate_down) and propagate_down[i]:
            layer.error("cannot backpropagate to %s (bottom %d)" % (what, i))


# -- Accuracy -------------------------------------------------------------------------------------
@register_layer("Accuracy")
class AccuracyLayer(Layer):
    """Accuracy: top[0] = (1/count) sum [#{k : x_k >= x_label} <= top_k] over non-ignored labels.

    A class scoring >= the true class ranks above it (ties count against). Optional top[1]: per
    class accuracy (0 for classes without samples). No backward.
    """
    shape_only_reshape = True

    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = int(p.top_k)
        self.ignore_label = ignore_label_of(p)

    def reshape(self, bottom, top):
        p = self.layer_param.accuracy_param
        if bottom[1].count == 0 or self.top_k > bottom[0].count // bottom[1].count:
            self.error("top_k (%d) must be less than or equal to the number of classes "
                       "(bottom %s count %d / bottom %s count %d)"
                       % (self.top_k, self.layer_param.bottom[0], bottom[0].count,
                          self.layer_param.bottom[1], bottom[1].count))
        self.axis = canonical_axis(self, bottom[0], p.axis, "accuracy_param.axis")
        self.outer = bottom[0].count_range(0, self.axis)
        self.inner = bottom[0].count_range(self.axis + 1)
        self.num_labels = bottom[0].shape[self.axis]
        if self.outer * self.inner != bottom[1].count:
            self.error("number of labels must match number of predictions: bottom %s %s has "
                       "%d x %d positions (outer x inner around axis %d), bottom %s has %d labels"
                       % (self.layer_param.bottom[0], bottom[0].shape, self.outer, self.inner,
                          self.axis, self.layer_param.bottom[1], bottom[1].count))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.num_labels,))

    def forward(self, bottom, top):
        xp = self.xp
        scores = bottom[0].data.reshape(self.outer, self.num_labels, self.inner)
        lab, valid = read_labels(self, bottom[1], (self.outer, self.inner), self.num_labels,
                                 self.ignore_label)
        true = xp.take_along_axis(scores, lab[:, None, :], axis=1)
        better = (scores >= true).sum(axis=1) - 1  # the true class itself is counted
        correct = better < self.top_k
        if valid is not None:
            correct &= valid
            count = int(valid.sum())
        else:
            count = self.outer * self.inner
        top[0].data[...] = 0 if count == 0 else float(correct.sum()) / count
        if len(top) > 1:
            lab_v = lab.ravel() if valid is None else lab[valid]
            nums = xp.bincount(lab_v, minlength=self.num_labels)
            hits = xp.bincount(lab[correct], minlength=self.num_labels)
            top[1].data[...] = xp.where(nums == 0, 0.0, hits / xp.maximum(nums, 1))

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, range(len(propagate_down)),
                                "its inputs (Accuracy has no backward)")

    def allow_force_backward(self, bottom_index):
        return False


# -- EuclideanLoss --------------------------------------------------------------------------------
@register_layer("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """EuclideanLoss: E = sum((a - b)^2) / (2N);  da = w (a - b) / N,  db = -w (a - b) / N."""

    def setup(self, bottom, top):
        self._diff = self.make_blob((), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            self.error("inputs must have the same dimension: bottom %s %s, bottom %s %s"
                       % (self.layer_param.bottom[0], bottom[0].shape,
                          self.layer_param.bottom[1], bottom[1].shape))
        self._diff.reshape(bottom[0].shape)
        self.num = bottom[0].shape[0] if bottom[0].num_axes else 1

    def forward(self, bottom, top):
        d = self._diff.data
        self.xp.subtract(bottom[0].data, bottom[1].data.reshape(d.shape), out=d)
        top[0].data[...] = self.xp.vdot(d.ravel(), d.ravel()) / self.num / 2

    def backward(self, top, propagate_down, bottom):
        w = float(top[0].diff)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                out = bottom[i].diff.reshape(self._diff.shape)
                self.xp.multiply(self._diff.data, sign * w / self.num, out=out)

    def allow_force_backward(self, bottom_index):
        return True


# -- SigmoidCrossEntropyLoss ----------------------------------------------------------------------
@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """SigmoidCrossEntropyLoss: E = -sum [t log s(x) + (1-t) log(1-s(x))] / normalizer.

    Computed stably as -sum [x (t - [x>=0]) - log(1 + exp(-|x|))]; d/dx = w (s(x) - t) /
    normalizer, 0 where int(t) == ignore_label. Default normalization BATCH_SIZE.
    """

    def setup(self, bottom, top):
        self.ignore_label = ignore_label_of(self.layer_param.loss_param)
        self.normalization = normalization_mode(self, self._pb.LossParameter.BATCH_SIZE)
        self._sig = self.make_blob((), dtype=bottom[0].dtype)
        self._buf = self.make_blob((), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            self.error("inputs must have the same count: bottom %s %s, bottom %s %s"
                       % (self.layer_param.bottom[0], bottom[0].shape,
                          self.layer_param.bottom[1], bottom[1].shape))
        self.outer = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.inner = bottom[0].count_range(1)
        self._sig.reshape(bottom[0].shape)
        self._buf.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = self.xp
        x, t = bottom[0].data, bottom[1].data.reshape(bottom[0].shape)
        sig, buf = self._sig.data, self._buf.data
        # per-element loss: log(1 + exp(-|x|)) + max(x, 0) - x t
        xp.abs(x, out=buf)
        xp.negative(buf, out=buf)
        xp.exp(buf, out=buf)
        xp.log1p(buf, out=buf)
        xp.maximum(x, 0, out=sig)
        buf += sig
        xp.multiply(x, t, out=sig)
        buf -= sig
        # sigmoid as Caffe computes it (kept for backward): 0.5 tanh(0.5 x) + 0.5
        xp.multiply(x, 0.5, out=sig)
        xp.tanh(sig, out=sig)
        sig *= 0.5
        sig += 0.5
        self._valid = None
        if self.ignore_label is not None:
            with np.errstate(invalid="ignore"):
                self._valid = t.astype(np.int64) != self.ignore_label
            buf *= self._valid
            count = int(self._valid.sum())
        else:
            count = bottom[0].count
        self.normalizer = get_normalizer(self, self.normalization, self.outer, self.inner, count)
        top[0].data[...] = buf.sum() / self.normalizer

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [1])
        if propagate_down[0]:
            diff = bottom[0].diff
            self.xp.subtract(self._sig.data, bottom[1].data.reshape(diff.shape), out=diff)
            if self._valid is not None:
                diff *= self._valid
            diff *= float(top[0].diff) / self.normalizer


# -- HingeLoss ------------------------------------------------------------------------------------
@register_layer("HingeLoss")
class HingeLossLayer(LossLayer):
    """HingeLoss (one-vs-all): t_nk = +1 if k == label_n else -1, m = max(0, 1 - t x);
    E = sum m / N (L1) or sum m^2 / N (L2); dx = -w t [m > 0] / N (L1), -2 w t m / N (L2).
    """

    def setup(self, bottom, top):
        self.norm = self.layer_param.hinge_loss_param.norm
        self._margin = self.make_blob((), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.num = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.dim = bottom[0].count // max(self.num, 1)
        if bottom[1].count != self.num:
            self.error("needs one label per item: bottom %s %s has %d items, bottom %s %s holds "
                       "%d values" % (self.layer_param.bottom[0], bottom[0].shape, self.num,
                                      self.layer_param.bottom[1], bottom[1].shape,
                                      bottom[1].count))
        self._margin.reshape((self.num, self.dim))

    def forward(self, bottom, top):
        xp = self.xp
        lab, _ = read_labels(self, bottom[1], (self.num,), self.dim, None)
        self._rows = xp.arange(self.num)
        self._lab = lab
        m = self._margin.data
        m[...] = bottom[0].data.reshape(m.shape)
        m[self._rows, lab] *= -1
        m += 1
        xp.maximum(m, 0, out=m)
        if self.norm == self._pb.HingeLossParameter.L2:
            loss = xp.vdot(m.ravel(), m.ravel())
        else:
            loss = m.sum()
        top[0].data[...] = loss / self.num

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [1])
        if not propagate_down[0]:
            return
        xp = self.xp
        w = float(top[0].diff)
        diff = bottom[0].diff.reshape(self._margin.shape)
        if self.norm == self._pb.HingeLossParameter.L2:
            xp.multiply(self._margin.data, 2 * w / self.num, out=diff)
        else:
            xp.sign(self._margin.data, out=diff)
            diff *= w / self.num
        diff[self._rows, self._lab] *= -1


# -- MultinomialLogisticLoss ----------------------------------------------------------------------
@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    """MultinomialLogisticLoss on probabilities p: E = -sum_n log(max(p_n,label_n, 1e-20)) / N;
    dp_n,label_n = -w / (N max(p, 1e-20)), 0 elsewhere.
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[1].count_range(1) != 1:
            self.error("label bottom %s must hold one value per item (shape N or N x 1 x 1 x 1), "
                       "got %s" % (self.layer_param.bottom[1], bottom[1].shape))
        self.num = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.dim = bottom[0].count // max(self.num, 1)

    def forward(self, bottom, top):
        xp = self.xp
        lab, _ = read_labels(self, bottom[1], (self.num,), self.dim, None)
        self._rows, self._lab = xp.arange(self.num), lab
        p = bottom[0].data.reshape(self.num, self.dim)[self._rows, lab]
        self._p = xp.maximum(p, LOG_THRESHOLD)
        top[0].data[...] = -xp.log(self._p).sum() / self.num

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [1])
        if propagate_down[0]:
            diff = bottom[0].diff.reshape(self.num, self.dim)
            diff[...] = 0
            diff[self._rows, self._lab] = (-float(top[0].diff) / self.num) / self._p


# -- ContrastiveLoss ------------------------------------------------------------------------------
@register_layer("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """ContrastiveLoss: d = ||a_n - b_n||, E = 1/(2N) sum [y d^2 + (1-y) max(margin - d, 0)^2]
    (legacy_version: max(margin - d^2, 0)); y = int(sim) != 0; no gradient to sim.
    """

    exact_num_bottom = 3

    def setup(self, bottom, top):
        self._diff = self.make_blob((), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        a, b, sim = bottom
        names = self.layer_param.bottom
        self.num = a.shape[0] if a.num_axes else 1
        self.channels = a.count // max(self.num, 1)
        for i in (0, 1):
            if bottom[i].count_range(2) != 1:
                self.error("bottom %s must be N x C (x 1 x 1), got %s" % (names[i],
                                                                          bottom[i].shape))
        if b.count != a.count:
            self.error("bottoms %s %s and %s %s must have the same shape"
                       % (names[0], a.shape, names[1], b.shape))
        if sim.count != self.num:
            self.error("similarity bottom %s must hold one value per pair (N = %d), got %s"
                       % (names[2], self.num, sim.shape))
        self._diff.reshape((self.num, self.channels))

    def forward(self, bottom, top):
        xp = self.xp
        p = self.layer_param.contrastive_loss_param
        d = self._diff.data
        xp.subtract(bottom[0].data.reshape(d.shape), bottom[1].data.reshape(d.shape), out=d)
        self._dist_sq = xp.einsum("nc,nc->n", d, d)
        self._similar = bottom[2].data.reshape(self.num).astype(np.int64) != 0
        if p.legacy_version:
            dissim = xp.maximum(p.margin - self._dist_sq, 0)
        else:
            dissim = xp.maximum(p.margin - xp.sqrt(self._dist_sq), 0) ** 2
        loss = xp.where(self._similar, self._dist_sq, dissim).sum()
        top[0].data[...] = loss / self.num / 2

    def backward(self, top, propagate_down, bottom):
        check_no_label_backward(self, propagate_down, [2], "the similarity input")
        xp = self.xp
        p = self.layer_param.contrastive_loss_param
        w = float(top[0].diff)
        if p.legacy_version:
            mdist = p.margin - self._dist_sq
            dissim = -(mdist > 0).astype(self._dist_sq.dtype)
        else:
            dist = xp.sqrt(self._dist_sq)
            mdist = p.margin - dist
            # Caffe's gradient: -mdist / (d + 1e-4), not the exact -mdist / d
            dissim = xp.where(mdist > 0, -mdist / (dist + 1e-4), 0)
        coef = xp.where(self._similar, 1, dissim)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                out = bottom[i].diff.reshape(self._diff.shape)
                xp.multiply(self._diff.data, (coef * (sign * w / self.num))[:, None], out=out)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2
