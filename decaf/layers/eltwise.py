"""Eltwise: element-wise PROD, SUM (with coefficients) or MAX of two or more bottoms, with
Caffe's tie rule for MAX; the loops are in decaf.kernels.eltwise."""
import numpy as np

from ..kernels import eltwise as keltwise
from ..layer import Layer, register_layer
from .shape import forbid_in_place


@register_layer("Eltwise")
class EltwiseLayer(Layer):
    """Eltwise: top = prod_i bottom[i] (PROD) | sum_i coeff_i bottom[i] (SUM) | max_i bottom[i]
    (MAX). Diffs: PROD top_diff * prod_{j != i} bottom[j] (or top_diff * top / bottom[i] when
    stable_prod_grad is false); SUM coeff_i top_diff; MAX top_diff to the arg max only
    (Caffe's rule: bottom 1 wins ties with bottom 0, a later one must be strictly greater).
    Kernels: decaf.kernels.eltwise."""
    shape_only_reshape = True

    min_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.eltwise_param
        ops = type(p)
        self.op = p.operation
        if len(p.coeff) not in (0, len(bottom)):
            self.error("Eltwise takes one coefficient per bottom blob: %d coeff for %d bottoms"
                       % (len(p.coeff), len(bottom)))
        if self.op == ops.PROD and len(p.coeff):
            self.error("Eltwise only takes coefficients for SUM, not PROD")
        self.coeffs = [float(c) for c in p.coeff] if len(p.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = bool(p.stable_prod_grad)
        self.PROD, self.SUM, self.MAX = ops.PROD, ops.SUM, ops.MAX

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                self.error("all bottoms must have the same shape: bottom[0] %s, bottom[%d] %s"
                           % (bottom[0].shape, i, b.shape))
        shape = bottom[0].shape
        top[0].reshape(shape)
        mask = getattr(self, "_mask", None)
        if self.op == self.MAX and (mask is None or mask.shape != shape):
            itype = self.xp.uint8 if len(bottom) < 256 else self.xp.int32
            self._mask = self.xp.empty(shape, itype)   # Caffe's max_idx_

    def forward(self, bottom, top):
        if self.xp is not np:
            return self._forward_xp(bottom, top[0].data)
        y = top[0].data.reshape(-1)
        flat = [b.data.reshape(-1) for b in bottom]
        if self.op == self.PROD:
            keltwise.prod2(flat[0], flat[1], y)
            for x in flat[2:]:
                keltwise.prod_mul(y, x)
        elif self.op == self.SUM:
            dt, c = y.dtype.type, self.coeffs
            keltwise.sum2(flat[0], dt(c[0]), flat[1], dt(c[1]), y, False, dt(0))
            for x, ck in zip(flat[2:], c[2:]):
                keltwise.sum_add(y, x, dt(ck), False, dt(0))
        else:
            mask = self._mask.reshape(-1)
            keltwise.max2(flat[0], flat[1], y, mask)
            for k, x in enumerate(flat[2:], 2):
                keltwise.max_next(x, k, y, mask)

    def _forward_xp(self, bottom, y):
        """The generic (CuPy) path of the same formulas."""
        xp = self.xp
        if self.op == self.PROD:
            xp.multiply(bottom[0].data, bottom[1].data, out=y)
            for b in bottom[2:]:
                y *= b.data
        elif self.op == self.SUM:
            xp.multiply(bottom[0].data, self.coeffs[0], out=y)
            for b, c in zip(bottom[1:], self.coeffs[1:]):
                y += b.data * c
        else:                                   # bottom 1 takes over unless a > b
            xp.copyto(y, bottom[0].data)
            self._mask[...] = 0
            for k, blob in enumerate(bottom[1:], 1):
                take = ~(y > blob.data) if k == 1 else blob.data > y
                xp.copyto(y, blob.data, where=take)
                xp.copyto(self._mask, k, where=take)

    def backward(self, top, propagate_down, bottom):
        xp, dy = self.xp, top[0].diff
        for i, (b, flag) in enumerate(zip(bottom, propagate_down)):
            if not flag:
                continue
            dx = b.diff
            if self.op == self.PROD:
                if self.stable_prod_grad:
                    others = [o.data for j, o in enumerate(bottom) if j != i]
                    xp.copyto(dx, others[0])
                    for o in others[1:]:
                        xp.multiply(dx, o, out=dx)
                else:
                    xp.divide(top[0].data, b.data, out=dx)
                xp.multiply(dx, dy, out=dx)
            elif self.op == self.SUM:
                if self.coeffs[i] == 1.0:
                    xp.copyto(dx, dy)
                else:
                    xp.multiply(dy, self.coeffs[i], out=dx)
            elif xp is np:
                keltwise.max_backward(dy.reshape(-1), self._mask.reshape(-1), i, dx.reshape(-1))
            else:
                xp.multiply(dy, self._mask == i, out=dx)
