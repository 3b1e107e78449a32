"""CenterLoss (Wen et al., ECCV 2016; the ``CenterLoss`` layer of caffe-face).

Bottoms: the features x (M x K after flattening the axes from ``center_loss_param.axis``; M is
the product of the axes before it) and the labels y (M values, integral, in [0, num_output)).
One parameter blob: the class centres c (num_output x K), filled by ``center_filler``.

    loss          L = 1/(2M) sum_i ||x_i - c_{y_i}||^2
    bottom diff   dL/dx_i = w (x_i - c_{y_i}) / M            (w: the loss weight, top[0].diff)
    centre diff   diff(c_j) += sum_{i: y_i = j} (c_j - x_i) / (1 + #{i: y_i = j})

The centre "diff" is NOT the gradient of L (that would be w/M sum (c_j - x_i)): it is caffe-face's
update rule (the paper's eq. 4): the mean offset of the class towards its samples, damped by
1/(1 + count), and it is not scaled by the loss weight (caffe-face ignores top[0].diff there).
The solver moves the centres by lr * lr_mult * diff, so the paper's centre learning rate alpha is
set with the ``param { lr_mult }`` of this layer (caffe-face's examples use lr_mult 1,
decay_mult 0).  As in the seed's caffe-face version (caffe_axpy) the centre diff accumulates;
a later caffe-face revision overwrote it (axpby with beta 0), which is the same after the
solver's per-iteration clear unless several backward passes add up (iter_size > 1).
"""
import numpy as np

from ..filler import fill
from ..layer import LossLayer, register_layer
from .loss import canonical_axis, check_no_label_backward, read_labels


def scatter_add(xp, out, index, values):
    """out[index[i]] += values[i] for every i, repeated indices adding up (no Python loop)."""
    if xp is np:
        np.add.at(out, index, values)
    else:  # pragma: no cover - CuPy only
        import cupyx
        cupyx.scatter_add(out, index, values)
    return out


@register_layer("CenterLoss")
class CenterLossLayer(LossLayer):
    """CenterLoss: top = sum_i ||x_i - c_{y_i}||^2 / (2M);  bottom diff = w (x_i - c_{y_i}) / M;
    centre diff(c_j) += sum_{y_i = j} (c_j - x_i) / (1 + count_j) (caffe-face's update rule)."""

    def setup(self, bottom, top):
        p = self.layer_param.center_loss_param
        self.N = int(p.num_output)
        if self.N <= 0:
            self.error("center_loss_param.num_output (the number of classes) must be positive, "
                       "got %d" % self.N)
        self.axis = canonical_axis(self, bottom[0], p.axis, "center_loss_param.axis")
        self.K = bottom[0].count_range(self.axis)
        if self.blobs:
            if len(self.blobs) != 1:
                self.error("expects 1 parameter blob (the centres), got %d" % len(self.blobs))
            if self.blobs[0].shape != (self.N, self.K):
                self.error("centre blob has shape %s, expected (num_output, K) = %s"
                           % (self.blobs[0].shape, (self.N, self.K)))
        else:
            self.blobs = [self.make_blob((self.N, self.K), dtype=bottom[0].dtype)]
            fill(self.blobs[0], p.center_filler)
        self.param_propagate_down = [True]
        self._dist = self.make_blob((), dtype=bottom[0].dtype)

    def _bottom_name(self, i):
        names = self.layer_param.bottom
        return names[i] if i < len(names) else "#%d" % i

    def reshape(self, bottom, top):
        x, lab = bottom[0], bottom[1]
        self.axis = canonical_axis(self, x, self.layer_param.center_loss_param.axis,
                                   "center_loss_param.axis")
        if x.count_range(self.axis) != self.K:
            self.error("bottom %s %s has %d features from axis %d; the layer was set up with "
                       "K = %d" % (self._bottom_name(0), x.shape,
                                   x.count_range(self.axis), self.axis, self.K))
        self.M = x.count_range(0, self.axis)
        if lab.count != self.M:
            self.error("bottom %s must hold one label per sample: %d labels for %d samples "
                       "(bottom %s %s, axis %d)"
                       % (self._bottom_name(1), lab.count, self.M,
                          self._bottom_name(0), x.shape, self.axis))
        top[0].reshape(())
        self._dist.reshape((self.M, self.K))

    def forward(self, bottom, top):
        xp = self.xp
        self._labels, _ = read_labels(self, bottom[1], (self.M,), self.N, None)
        d = self._dist.data
        xp.subtract(bottom[0].data.reshape(self.M, self.K), self.blobs[0].data[self._labels],
                    out=d)
        top[0].data[...] = xp.vdot(d.ravel(), d.ravel()) / max(self.M, 1) / 2

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        check_no_label_backward(self, propagate_down, [1])
        d = self._dist.data
        if self.param_propagate_down[0]:
            # variation_sum_j = sum_{y_i = j} (c_j - x_i) = -sum_{y_i = j} d_i
            var = xp.zeros((self.N, self.K), dtype=d.dtype)
            scatter_add(xp, var, self._labels, d)
            count = xp.bincount(self._labels, minlength=self.N).astype(d.dtype)
            var /= -(1 + count)[:, None]
            self.blobs[0].diff[...] += var
        if propagate_down[0]:
            w = float(top[0].diff)
            xp.multiply(d, w / max(self.M, 1), out=bottom[0].diff.reshape(self.M, self.K))
