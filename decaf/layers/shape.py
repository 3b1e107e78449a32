"""Shape layers: Flatten, Reshape and Crop, plus the axis and memory-sharing helpers that the
common layers (common.py) use too.

Flatten and Reshape move no data: the top is a view of the bottom's memory with another shape
(Caffe's ``ShareData``, redone at every reshape). Their gradient is the identity, so backward
makes the bottom's diff the top's diff memory (Caffe's ``FlattenLayer::Backward``:
``bottom->ShareDiff(*top)``); no copy is made either way. Caffe's Reshape shares the diff
already in Reshape; the state after backward is the same, and sharing at backward keeps the
top diff intact when a caller zeroes the bottom diff in between (the gradient checker does).
"""
from ..layer import Layer, register_layer


# -- helpers shared with common.py -----------------------------------------------------------------

def canonical_axis(layer, blob, axis, what="axis", blob_name="bottom[0]"):
    """Caffe's ``CanonicalAxisIndex``: ``axis`` in [-num_axes, num_axes) mapped to [0, num_axes);
    anything else raises LayerSetupError naming the layer."""
    n = blob.num_axes
    if not -n <= axis < n:
        layer.error("%s %d is out of range for %s of shape %s (%d axes): it must be in [%d, %d)"
                    % (what, axis, blob_name, blob.shape, n, -n, n))
    return axis + n if axis < 0 else axis


def forbid_in_place(layer, bottom, top):
    """Raise when a top is one of the bottoms (these layers read the bottom while writing)."""
    for i, t in enumerate(top):
        for j, b in enumerate(bottom):
            if t is b:
                layer.error("does not allow in-place computation (top[%d] is bottom[%d])" % (i, j))


def reshape_shared(top, shape, source):
    """Give ``top`` the shape ``shape`` and make its data ``source``'s memory (Caffe's
    ``top->ShareData(*source)``); ``source`` must hold as many values as ``shape`` describes."""
    try:
        top.reshape(shape)
    except ValueError:
        # After share_data, Blob.reshape sizes the top by the *shared* data buffer and may then
        # view its own, smaller diff buffer at the new count. Start the blob afresh instead.
        top.__init__(shape, dtype=top.dtype, xp=top.xp)
    top.share_data(source)


# -- Flatten -----------------------------------------------------------------------------------------

@register_layer("Flatten")
class FlattenLayer(Layer):
    """Flatten: top = bottom viewed with axes [axis, end_axis] merged into one of size
    count(axis, end_axis + 1); bottom diff = top diff (shared memory, no copy)."""
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.flatten_param
        self.axis, self.end_axis = int(p.axis), int(p.end_axis)

    def reshape(self, bottom, top):
        b = bottom[0]
        start = canonical_axis(self, b, self.axis, "flatten_param.axis")
        end = canonical_axis(self, b, self.end_axis, "flatten_param.end_axis")
        if end + 1 < start:
            self.error("flatten_param.end_axis %d (axis %d) comes before axis %d (axis %d)"
                       % (self.end_axis, end, self.axis, start))
        shape = b.shape[:start] + (b.count_range(start, end + 1),) + b.shape[end + 1:]
        reshape_shared(top[0], shape, b)

    def forward(self, bottom, top):
        pass  # top[0].data is bottom[0].data's memory (shared in reshape)

    def backward(self, top, propagate_down, bottom):
        bottom[0].share_diff(top[0])


# -- Reshape -----------------------------------------------------------------------------------------

@register_layer("Reshape")
class ReshapeLayer(Layer):
    """Reshape: top = bottom viewed with axes [axis, axis + num_axes) replaced by
    reshape_param.shape (0: copy the bottom dim, -1: infer); bottom diff = top diff (shared)."""
    shape_only_reshape = True

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        self.copy_axes = [i for i, d in enumerate(self.dims) if d == 0]
        inferred = [i for i, d in enumerate(self.dims) if d == -1]
        if len(inferred) > 1:
            self.error("reshape_param.shape %s contains %d -1 dims; at most one dim may be "
                       "inferred" % (self.dims, len(inferred)))
        bad = [d for d in self.dims if d < -1]
        if bad:
            self.error("reshape_param.shape %s has dim %d; dims must be >= 1, or 0 (copy) or "
                       "-1 (infer)" % (self.dims, bad[0]))
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = 1
        for d in self.dims:
            if d > 0:
                self.constant_count *= d
        self.axis, self.num_axes = int(p.axis), int(p.num_axes)
        if self.num_axes < -1:
            self.error("reshape_param.num_axes must be >= 0, or -1 for all, got %d" % self.num_axes)

    def _axis_range(self, b):
        """[start, end): the bottom axes that reshape_param.shape replaces."""
        n = b.num_axes
        start = self.axis if self.axis >= 0 else n + self.axis + 1
        if not 0 <= start <= n:
            self.error("reshape_param.axis %d is out of range for a %d-D bottom of shape %s"
                       % (self.axis, n, b.shape))
        end = n if self.num_axes == -1 else start + self.num_axes
        if end > n:
            self.error("reshape_param.axis + num_axes = %d is beyond the %d axes of bottom %s"
                       % (end, n, b.shape))
        return start, end

    def reshape(self, bottom, top):
        b = bottom[0]
        start, end = self._axis_range(b)
        shape = list(b.shape[:start]) + list(self.dims) + list(b.shape[end:])
        for i in self.copy_axes:
            if start + i >= b.num_axes:
                self.error("reshape_param.shape has a 0 at position %d but bottom %s has no "
                           "axis %d to copy" % (i, b.shape, start + i))
            shape[start + i] = b.shape[start + i]
        if self.inferred_axis >= 0:
            explicit = self.constant_count * b.count_range(0, start) * b.count_range(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            if explicit == 0 or b.count % explicit:
                self.error("bottom count %d (shape %s) is not divisible by the product %d of the "
                           "specified dimensions %s" % (b.count, b.shape, explicit, self.dims))
            shape[start + self.inferred_axis] = b.count // explicit
        count = 1
        for d in shape:
            count *= d
        if count != b.count:
            self.error("output count %d (shape %s) must match input count %d (bottom shape %s)"
                       % (count, tuple(shape), b.count, b.shape))
        reshape_shared(top[0], shape, b)

    def forward(self, bottom, top):
        pass  # top[0].data is bottom[0].data's memory (shared in reshape)

    def backward(self, top, propagate_down, bottom):
        bottom[0].share_diff(top[0])


# -- Crop --------------------------------------------------------------------------------------------

@register_layer("Crop")
class CropLayer(Layer):
    """Crop: top = bottom[0][..., o_a : o_a + s_a, ...] for every axis a >= crop_param.axis,
    s = bottom[1].shape (the reference), o = crop_param.offset (one for all axes or one per
    axis, default 0); bottom[0] diff = top diff inside the crop, 0 outside; none to bottom[1]."""

    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        forbid_in_place(self, bottom, top)
        p = self.layer_param.crop_param
        self.offset_param = [int(o) for o in p.offset]
        start = canonical_axis(self, bottom[0], int(p.axis), "crop_param.axis")
        n_off = len(self.offset_param)
        if n_off > 1 and start + n_off != bottom[0].num_axes:
            self.error("crop_param has %d offsets but bottom[0] %s has %d axes from axis %d on: "
                       "give one offset, or one per cropped axis"
                       % (n_off, bottom[0].shape, bottom[0].num_axes - start, start))

    def reshape(self, bottom, top):
        b, ref = bottom[0], bottom[1]
        start = canonical_axis(self, b, int(self.layer_param.crop_param.axis), "crop_param.axis")
        if ref.num_axes < b.num_axes:
            self.error("the reference bottom[1] %s has fewer axes than bottom[0] %s"
                       % (ref.shape, b.shape))
        shape, slices = list(b.shape), []
        for i in range(b.num_axes):
            off = 0
            if i >= start:
                if len(self.offset_param) == 1:
                    off = self.offset_param[0]
                elif self.offset_param:
                    off = self.offset_param[i - start]
                if b.shape[i] - off < ref.shape[i]:
                    self.error("invalid crop parameters in dimension %d: bottom[0] size %d with "
                               "offset %d cannot hold the reference size %d (bottom[0] %s, "
                               "bottom[1] %s)" % (i, b.shape[i], off, ref.shape[i], b.shape,
                                                  ref.shape))
                shape[i] = ref.shape[i]
            slices.append(slice(off, off + shape[i]))
        self.slices = tuple(slices)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        self.xp.copyto(top[0].data, bottom[0].data[self.slices])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff.fill(0)
        self.xp.copyto(diff[self.slices], top[0].diff)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
