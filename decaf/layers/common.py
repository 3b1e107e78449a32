"""Common layers: route, combine and reduce blobs without learned weights.

Split, Silence, Concat, Slice, Tile, Reduction, ArgMax, BatchReindex, Filter and Parameter,
with Caffe's semantics (including ArgMax's tie rule; Eltwise lives in layers/eltwise.py). Tops whose
data Caffe shares with a bottom or a parameter (Split, one-bottom Concat, one-top Slice,
Parameter) are views of that memory here too. Parameter accumulates its top diff into its
param diff (Caffe shares the diff memory instead: equal after one backward from zeroed diffs).
"""
import math

import numpy as np

from ..layer import Layer, register_layer
from ._reshape_cache import remember, unchanged
from .shape import canonical_axis, forbid_in_place, reshape_shared


# -- Split / Silence --------------------------------------------------------------------------------

@register_layer("Split")
class SplitLayer(Layer):
    """Split: top[i] = bottom (shared data) for i < k; bottom diff = sum_i top[i] diff."""
    shape_only_reshape = True

    exact_num_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        src = bottom[0].data
        owner = src if src.base is None else src.base      # the memory the tops must view
        if unchanged(self, bottom, top) and self.__dict__.get("_owner") is owner:
            return                                         # (the net reshapes every forward)
        for t in top:
            reshape_shared(t, bottom[0].shape, bottom[0])
        self._owner = owner
        remember(self, bottom, top)

    def forward(self, bottom, top):
        pass  # every top's data is the bottom's memory (shared in reshape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, diff = self.xp, bottom[0].diff
        if len(top) == 1:
            xp.copyto(diff, top[0].diff)
            return
        xp.add(top[0].diff, top[1].diff, out=diff)
        for t in top[2:]:
            xp.add(diff, t.diff, out=diff)


@register_layer("Silence")
class SilenceLayer(Layer):
    """Silence: no top; bottom[i] diff = 0 (where propagate_down[i])."""

    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, flag in zip(bottom, propagate_down):
            if flag:
                b.diff.fill(0)


# -- Concat / Slice ------------------------------------------------------------------------------------

def _legacy_axis(layer, blob, msg, name, legacy):
    """The axis of Concat/Slice: ``axis`` or the legacy non-negative ``<legacy>`` field."""
    if msg.HasField(legacy):
        d = int(getattr(msg, legacy))
        if d >= blob.num_axes:
            layer.error("%s %d is out of range for bottom %s (%d axes)"
                        % (legacy, d, blob.shape, blob.num_axes))
        return d
    return canonical_axis(layer, blob, int(msg.axis), name + ".axis")


@register_layer("Concat")
class ConcatLayer(Layer):
    """Concat: top = [bottom[0], ..., bottom[k-1]] joined along concat_param.axis;
    bottom[i] diff = the matching slice of the top diff."""
    shape_only_reshape = True

    min_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            self.error("either concat_param.axis or concat_param.concat_dim should be specified; "
                       "not both")

    def reshape(self, bottom, top):
        b0 = bottom[0]
        axis = _legacy_axis(self, b0, self.layer_param.concat_param, "concat_param", "concat_dim")
        shape = list(b0.shape)
        for i, b in enumerate(bottom[1:], 1):
            if b.num_axes != b0.num_axes:
                self.error("all inputs must have the same number of axes: bottom[0] %s, "
                           "bottom[%d] %s" % (b0.shape, i, b.shape))
            for j in range(b0.num_axes):
                if j != axis and b.shape[j] != b0.shape[j]:
                    self.error("all inputs must have the same shape except at concat axis %d: "
                               "bottom[0] %s, bottom[%d] %s (axis %d differs)"
                               % (axis, b0.shape, i, b.shape, j))
            shape[axis] += b.shape[axis]
        self.axis = axis
        self.outer = b0.count_range(0, axis)
        self.inner = b0.count_range(axis + 1)
        if len(bottom) == 1:
            reshape_shared(top[0], shape, b0)
        else:
            top[0].reshape(shape)

    def _pieces(self, bottom, top, attr):
        """(bottom array, top-array slice) pairs as (outer, size, inner) views."""
        whole = getattr(top[0], attr).reshape(self.outer, -1, self.inner)
        offset = 0
        for b in bottom:
            n = b.shape[self.axis]
            yield b, whole[:, offset:offset + n]
            offset += n

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return  # shared memory
        for b, part in self._pieces(bottom, top, "data"):
            self.xp.copyto(part, b.data.reshape(part.shape))

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            bottom[0].share_diff(top[0])
            return
        for (b, part), flag in zip(self._pieces(bottom, top, "diff"), propagate_down):
            if flag:
                self.xp.copyto(b.diff.reshape(part.shape), part)


@register_layer("Slice")
class SliceLayer(Layer):
    """Slice: top[i] = bottom[..., p_i : p_{i+1}, ...] along slice_param.axis, p = [0,
    slice_point..., size] (equal parts without slice_point); bottom diff = the top diffs joined."""

    exact_num_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            self.error("either slice_param.axis or slice_param.slice_dim should be specified; "
                       "not both")
        self.points = [int(s) for s in p.slice_point]

    def _sizes(self, size, ntop):
        if not self.points:
            if size % ntop:
                self.error("the number of tops (%d) should evenly divide the slice axis size (%d)"
                           % (ntop, size))
            return [size // ntop] * ntop
        if len(self.points) != ntop - 1:
            self.error("%d slice_point values given for %d tops: need one less than the tops"
                       % (len(self.points), ntop))
        if ntop > size:
            self.error("%d tops cannot slice an axis of size %d" % (ntop, size))
        sizes, prev = [], 0
        for pt in self.points:
            if pt <= prev:
                self.error("slice_point %s must be strictly increasing and > 0" % (self.points,))
            sizes.append(pt - prev)
            prev = pt
        if prev > size:
            self.error("slice_point %d is beyond the slice axis size %d" % (prev, size))
        return sizes + [size - prev]

    def reshape(self, bottom, top):
        b = bottom[0]
        axis = _legacy_axis(self, b, self.layer_param.slice_param, "slice_param", "slice_dim")
        self.axis = axis
        self.outer = b.count_range(0, axis)
        self.inner = b.count_range(axis + 1)
        self.sizes = self._sizes(b.shape[axis], len(top))
        if len(top) == 1:
            reshape_shared(top[0], b.shape, b)
            return
        for t, n in zip(top, self.sizes):
            t.reshape(b.shape[:axis] + (n,) + b.shape[axis + 1:])

    def _pieces(self, bottom, top, attr):
        whole = getattr(bottom[0], attr).reshape(self.outer, -1, self.inner)
        offset = 0
        for t, n in zip(top, self.sizes):
            yield t, whole[:, offset:offset + n]
            offset += n

    def forward(self, bottom, top):
        if len(top) == 1:
            return  # shared memory
        for t, part in self._pieces(bottom, top, "data"):
            self.xp.copyto(t.data.reshape(part.shape), part)

    def backward(self, top, propagate_down, bottom):
        if len(top) == 1:
            bottom[0].share_diff(top[0])
            return
        if not propagate_down[0]:
            return
        for t, part in self._pieces(bottom, top, "diff"):
            self.xp.copyto(part, t.diff.reshape(part.shape))


# -- Tile / Reduction -------------------------------------------------------------------------------

@register_layer("Tile")
class TileLayer(Layer):
    """Tile: top = bottom repeated tiles times along tile_param.axis (the whole block
    count(axis) is repeated); bottom diff = sum of the top diff over the copies."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        self.tiles = int(self.layer_param.tile_param.tiles)
        if self.tiles < 1:
            self.error("tile_param.tiles must be positive, got %d" % self.tiles)

    def reshape(self, bottom, top):
        b = bottom[0]
        axis = canonical_axis(self, b, int(self.layer_param.tile_param.axis), "tile_param.axis")
        self.outer = b.count_range(0, axis)
        self.inner = b.count_range(axis)
        top[0].reshape(b.shape[:axis] + (b.shape[axis] * self.tiles,) + b.shape[axis + 1:])

    def forward(self, bottom, top):
        y = top[0].data.reshape(self.outer, self.tiles, self.inner)
        self.xp.copyto(y, bottom[0].data.reshape(self.outer, 1, self.inner))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            self.xp.sum(dy, axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))


@register_layer("Reduction")
class ReductionLayer(Layer):
    """Reduction over all axes from reduction_param.axis on: top[n] = coeff * sum_d f(x[n, d]),
    f = x (SUM), |x| (ASUM), x^2 (SUMSQ), x / D (MEAN); top shape = bottom shape[:axis].
    Bottom diff = coeff * top_diff[n] * f'(x[n, d])."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.reduction_param
        self.op, self.ops = p.operation, type(p)

    def reshape(self, bottom, top):
        b = bottom[0]
        p = self.layer_param.reduction_param
        axis = canonical_axis(self, b, int(p.axis), "reduction_param.axis")
        top[0].reshape(b.shape[:axis])
        self.num, self.dim = b.count_range(0, axis), b.count_range(axis)
        self.coeff = float(p.coeff)
        if self.op == self.ops.MEAN:
            if self.dim:
                self.coeff /= self.dim
            else:     # an empty axis: Caffe's float division gives inf (nan for coeff 0)
                self.coeff = math.copysign(math.inf, self.coeff) if self.coeff else math.nan
        if self.op in (self.ops.ASUM, self.ops.SUMSQ):
            buf = getattr(self, "_buf", None)
            if buf is None or buf.shape != (self.num, self.dim) or buf.dtype != b.dtype:
                self._buf = self.xp.empty((self.num, self.dim), b.dtype)

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.num, self.dim)
        y = top[0].data.reshape(self.num)
        if self.op == self.ops.ASUM:
            x = xp.abs(x, out=self._buf)
        elif self.op == self.ops.SUMSQ:
            x = xp.multiply(x, x, out=self._buf)
        xp.sum(x, axis=1, out=y)
        if self.coeff != 1.0:
            xp.multiply(y, self.coeff, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        g = top[0].diff.reshape(self.num, 1) * self.coeff
        dx = bottom[0].diff.reshape(self.num, self.dim)
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == self.ops.ASUM:
            xp.sign(x, out=dx)
            xp.multiply(dx, g, out=dx)
        elif self.op == self.ops.SUMSQ:
            xp.multiply(x, 2 * g, out=dx)
        else:
            xp.copyto(dx, xp.broadcast_to(g, dx.shape))


# -- ArgMax ------------------------------------------------------------------------------------------

@register_layer("ArgMax")
class ArgMaxLayer(Layer):
    """ArgMax: top = the indices (and/or values) of the top_k largest bottom values along
    argmax_param.axis, or over count(1) per item without an axis; ties rank the larger index
    first (Caffe sorts (value, index) pairs with std::greater). No backward (as Caffe)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.argmax_param
        self.out_max_val, self.top_k = bool(p.out_max_val), int(p.top_k)
        self.has_axis = p.HasField("axis")
        if self.top_k < 1:
            self.error("argmax_param.top_k must not be less than 1")

    def reshape(self, bottom, top):
        b = bottom[0]
        if self.has_axis:
            axis = canonical_axis(self, b, int(self.layer_param.argmax_param.axis),
                                  "argmax_param.axis")
            self.dim, self.outer, self.inner = b.shape[axis], b.count_range(0, axis), \
                b.count_range(axis + 1)
            shape = list(b.shape)
            shape[axis] = self.top_k
        else:
            if b.num_axes < 1:
                self.error("bottom[0] needs at least one axis (items), got shape %s" % (b.shape,))
            self.dim, self.outer, self.inner = b.count_range(1), b.shape[0], 1
            shape = [1] * max(b.num_axes, 3)
            shape[0], shape[2] = b.shape[0], self.top_k
            if self.out_max_val:
                shape[1] = 2
        if self.top_k > self.dim:
            self.error("top_k %d must be at most the size %d of the %s" % (
                self.top_k, self.dim, "axis" if self.has_axis else "flattened item (count(1))"))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        xp, k, dim = self.xp, self.top_k, self.dim
        # (outer, inner, dim) with the candidates last, reversed so that on ties the larger
        # original index comes first in a stable descending order.
        x = bottom[0].data.reshape(self.outer, dim, self.inner).transpose(0, 2, 1)[..., ::-1]
        if k == 1:
            pos = xp.argmax(x, axis=2)[..., None]
        else:
            pos = xp.argsort(-x, axis=2, kind="stable")[..., :k]
        vals = xp.take_along_axis(x, pos, axis=2)
        idx = (dim - 1) - pos
        y = top[0].data
        if self.has_axis:
            out = vals if self.out_max_val else idx
            xp.copyto(y.reshape(self.outer, k, self.inner), out.transpose(0, 2, 1),
                      casting="unsafe")
        else:
            y2 = y.reshape(self.outer, 2 * k if self.out_max_val else k)
            xp.copyto(y2[:, :k], idx[:, 0, :], casting="unsafe")
            if self.out_max_val:
                xp.copyto(y2[:, k:], vals[:, 0, :])

    # backward: the base class raises NotImplementedError, as Caffe's NOT_IMPLEMENTED.


# -- BatchReindex / Filter ---------------------------------------------------------------------------

@register_layer("BatchReindex")
class BatchReindexLayer(Layer):
    """BatchReindex: top[i] = bottom[0][int(bottom[1][i])]; bottom[0] diff[n] = sum of the top
    diffs of the items i that picked n (0 if none); no gradient to the indices."""

    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            self.error("the index bottom[1] must be 1-D, got shape %s" % (bottom[1].shape,))
        if bottom[0].num_axes < 1:
            self.error("bottom[0] needs an item axis, got shape %s" % (bottom[0].shape,))
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])
        shape = (bottom[0].shape[0], bottom[1].shape[0])
        buf = getattr(self, "_onehot", None)
        if buf is None or buf.shape != shape or buf.dtype != bottom[0].dtype:
            self._onehot = self.xp.empty(shape, bottom[0].dtype)

    def _indices(self, bottom):
        """The indices as integers (C++ static_cast<int>: truncation), range-checked."""
        xp, idx, n = self.xp, bottom[1].data, bottom[0].shape[0]
        bad = ~((idx >= 0) & (idx < n))  # NaN is bad too
        if bool(bad.any()):
            j = int(xp.flatnonzero(bad)[0])
            self.error("index bottom[1][%d] = %r is outside the batch [0, %d) of bottom[0]"
                       % (j, float(idx[j]), n))
        return idx.astype(xp.intp)

    def forward(self, bottom, top):
        idx = self._indices(bottom)
        self.xp.take(bottom[0].data, idx, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            self.error("cannot back-propagate to the index bottom[1]")
        if not propagate_down[0]:
            return
        xp = self.xp
        idx = bottom[1].data.astype(xp.intp)
        n, m = bottom[0].shape[0], idx.size
        # Scatter-add as a GEMM: diff (n x inner) = onehot (n x m) . top_diff (m x inner).
        onehot = self._onehot
        onehot.fill(0)
        onehot[idx, xp.arange(m)] = 1
        inner = bottom[0].count_range(1)
        xp.matmul(onehot, top[0].diff.reshape(m, inner), out=bottom[0].diff.reshape(n, inner))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register_layer("Filter")
class FilterLayer(Layer):
    """Filter: tops = the items n of bottom[0..k-2] whose selector bottom[k-1][n] != 0, in
    order; bottom diff = the top diff for kept items, 0 for dropped ones; none to the selector."""

    min_bottom = 2
    min_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        if len(top) != len(bottom) - 1:
            self.error("needs one top per filtered bottom: %d bottoms (the last is the "
                       "selector) but %d tops" % (len(bottom), len(top)))
        self._first_reshape = True
        self.num_bottom = len(bottom)

    def reshape(self, bottom, top):
        sel = bottom[-1]
        if sel.num_axes < 1 or any(d != 1 for d in sel.shape[1:]):
            self.error("selector blob (last bottom) dimensions must be singletons (1) except the "
                       "first, got shape %s" % (sel.shape,))
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != sel.shape[0]:
                self.error("each bottom should have the same 0th dimension as the selector: "
                           "bottom[%d] %s, selector %s" % (i, b.shape, sel.shape))
        self.indices = self.xp.flatnonzero(sel.data.reshape(-1))
        n = int(self.indices.size)
        if self._first_reshape:  # Caffe: the first reshape keeps every item
            n, self._first_reshape = bottom[0].shape[0], False
        for t, b in zip(top, bottom):
            t.reshape((n,) + b.shape[1:])

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            self.xp.take(b.data, self.indices, axis=0, out=t.data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            self.error("cannot back-propagate to the selector (last bottom)")
        for t, b, flag in zip(top, bottom, propagate_down):
            if flag:
                b.diff.fill(0)
                b.diff[self.indices] = t.diff

    def allow_force_backward(self, bottom_index):
        n = getattr(self, "num_bottom", len(self.layer_param.bottom))
        return bottom_index != n - 1


# -- Parameter ---------------------------------------------------------------------------------------

@register_layer("Parameter")
class ParameterLayer(Layer):
    """Parameter: top = blobs[0] (shared data, shape parameter_param.shape, zero-initialised, no
    filler); blobs[0] diff += top diff."""

    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top):
        shape = tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            self.error("parameter_param.shape %s has a negative dim" % (shape,))
        if self.blobs:
            if len(self.blobs) != 1:
                self.error("expects 1 parameter blob, layer_param.blobs holds %d" % len(self.blobs))
            if self.blobs[0].count != math.prod(shape):
                self.error("stored blob shape %s does not fit parameter_param.shape %s"
                           % (self.blobs[0].shape, shape))
        else:
            # No bottom to take the dtype from: the top's (float64 in gradient checks).
            self.blobs = [self.make_blob(shape, dtype=top[0].dtype)]
        self.param_propagate_down = [True]
        self.shape = shape

    def reshape(self, bottom, top):
        reshape_shared(top[0], self.shape, self.blobs[0])

    def forward(self, bottom, top):
        pass  # top[0].data is blobs[0].data's memory

    def backward(self, top, propagate_down, bottom):
        p = self.blobs[0]
        self.xp.add(p.diff, top[0].diff.reshape(p.shape), out=p.diff)
