"""Blob plumbing (Split, Concat, Slice, Crop, Reshape, Flatten, Permute, Tile, BatchReindex,
Filter) and the reducing layers (Eltwise, Reduction, ArgMax, Softmax) as ONNX operators."""

from .registry import register_emitter


def _axis(axis, ndim):
    return int(axis) % ndim if ndim else 0


@register_emitter("Split")
def split(c):
    """Every top is the bottom."""
    for t in c.top:
        c.g.op1("Identity", [c.x], t)


@register_emitter("Silence", "Input")
def nothing(c):
    """Silence has no output; Input tops are the graph's inputs (handled by the exporter)."""


@register_emitter("Concat")
def concat(c):
    """Concat along concat_param.axis (legacy concat_dim)."""
    p = c.lp.concat_param
    axis = int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis)
    if len(c.bottom) == 1:
        c.g.op1("Identity", [c.x], c.y)
        return
    c.g.op1("Concat", c.bottom, c.y, axis=_axis(axis, len(c.bshape[0])))


@register_emitter("Slice")
def slice_(c):
    """Split along the axis into Caffe's pieces (slice_point, or equal parts)."""
    if len(c.top) == 1:
        c.g.op1("Identity", [c.x], c.y)
        return
    c.g.split(c.x, c.layer.sizes, c.layer.axis, c.top)


@register_emitter("Crop")
def crop(c):
    """bottom[0][offset : offset + bottom[1].shape] on every axis from crop_param.axis on."""
    starts, ends, axes = [], [], []
    for a, s in enumerate(c.layer.slices):
        if s.start is None and s.stop is None:
            continue
        starts.append(s.start or 0)
        ends.append(s.stop)
        axes.append(a)
    if not axes:
        c.g.op1("Identity", [c.x], c.y)
        return
    c.g.slice(c.x, starts, ends, axes, c.y)


@register_emitter("Reshape", "Flatten")
def reshape(c):
    """Reshape to Caffe's top shape (0 / -1 / axis / num_axes resolved by the layer). With a
    dynamic batch the first dimension is copied (ONNX's 0) when the layer keeps it, else the
    dimension that holds the batch is inferred (-1)."""
    shape = list(c.tshape[0])
    keep = shape[:1] == list(c.bshape[0][:1]) and _keeps_batch(c)
    if c.g.dynamic_batch and not keep and shape:
        shape[_batch_holder(c)] = -1
    c.g.reshape(c.x, shape, c.y, keep_batch=keep)


def _start(c):
    """The first bottom axis the layer rewrites."""
    ndim = len(c.bshape[0])
    if c.lp.type == "Flatten":
        return _axis(c.lp.flatten_param.axis, ndim)
    axis = int(c.lp.reshape_param.axis)
    return axis if axis >= 0 else axis + ndim + 1


def _keeps_batch(c):
    if _start(c) > 0:
        return True
    return c.lp.type == "Reshape" and len(c.lp.reshape_param.shape.dim) > 0 and \
        c.lp.reshape_param.shape.dim[0] == 0


def _batch_holder(c):
    """The top axis that absorbs a batch merged from axis 0: Reshape's inferred (-1) axis,
    else the first."""
    if c.lp.type == "Reshape" and c.layer.inferred_axis >= 0:
        return _start(c) + c.layer.inferred_axis
    return 0


@register_emitter("Permute")
def permute(c):
    """Transpose with perm = the layer's full order."""
    c.g.op1("Transpose", [c.x], c.y, perm=[int(o) for o in c.layer.order])


@register_emitter("Tile")
def tile(c):
    """ONNX Tile with repeats = tiles at the axis (Caffe repeats the block from the axis on,
    which is index i -> i mod dim along that axis, as Tile does)."""
    ndim = len(c.bshape[0])
    reps = [1] * ndim
    reps[_axis(c.lp.tile_param.axis, ndim)] = int(c.lp.tile_param.tiles)
    c.g.op1("Tile", [c.x, c.g.ints(reps, "repeats")], c.y)


@register_emitter("BatchReindex")
def batch_reindex(c):
    """top[i] = bottom[0][permut[i]]: Gather along axis 0."""
    g = c.g
    idx = g.op1("Cast", [c.bottom[1]], base=c.base(), to=g.onnx.TensorProto.INT64)
    g.op1("Gather", [c.x, idx], c.y, axis=0)


@register_emitter("Filter")
def filter_(c):
    """The items n of each data bottom whose selector (the last bottom) is != 0: Compress on
    axis 0 (the top's first dimension depends on the data)."""
    g, b = c.g, c.base()
    sel = g.op1("Reshape", [c.bottom[-1], g.ints([-1])], base=b)
    keep = g.op1("Not", [g.op1("Equal", [sel, g.const(0.0)], base=b)], base=b)
    for x, t in zip(c.bottom[:-1], c.top):
        g.op1("Compress", [x, keep], t, axis=0)


@register_emitter("Eltwise")
def eltwise(c):
    """SUM: ((c0 x0 + c1 x1) + c2 x2)... in Caffe's order (a coefficient of 1 is no Mul);
    PROD: x0 x1 ...; MAX: Max."""
    g, b = c.g, c.base()
    ops = c.layer._pb.EltwiseParameter
    if c.layer.op == ops.MAX:
        g.op1("Max", c.bottom, c.y)
        return
    if c.layer.op == ops.PROD:
        terms, op = list(c.bottom), "Mul"
    else:
        terms = [g.scalar_mul(x, k, base=b) for x, k in zip(c.bottom, c.layer.coeffs)]
        op = "Add"
    if len(terms) == 1:
        g.op1("Identity", terms, c.y)
        return
    acc = terms[0]
    for i, t in enumerate(terms[1:], 2):
        acc = g.op1(op, [acc, t], c.y if i == len(terms) else None, base=b)


@register_emitter("Reduction")
def reduction(c):
    """coeff * f-sum over every axis from the axis on: ReduceSum / ReduceL1 (ASUM) /
    ReduceSumSquare (SUMSQ) / ReduceMean (MEAN)."""
    g, b = c.g, c.base()
    R = c.layer._pb.ReductionParameter
    p = c.lp.reduction_param
    ndim, axis = len(c.bshape[0]), len(c.tshape[0])
    op = {R.SUM: "ReduceSum", R.ASUM: "ReduceL1", R.SUMSQ: "ReduceSumSquare",
          R.MEAN: "ReduceMean"}[p.operation]
    coeff = float(p.coeff)
    r = g.reduce(op, c.x, range(axis, ndim), keepdims=0, out=None if coeff != 1 else c.y,
                 base=b)
    if coeff != 1:
        g.op1("Mul", [r, g.const(coeff)], c.y)


@register_emitter("Softmax")
def softmax(c):
    """Softmax over softmax_param.axis (opset >= 13: one axis, as Caffe)."""
    ndim = len(c.bshape[0])
    c.g.op1("Softmax", [c.x], c.y, axis=_axis(c.lp.softmax_param.axis, ndim))


@register_emitter("ArgMax")
def argmax(c):
    """TopK (largest, sorted) over the axis, or over count(1) per item without one. Caffe ranks
    ties by the larger index first: TopK runs on the reversed axis (ONNX ranks ties by the
    lower index) and the indices are mapped back, idx = dim - 1 - pos."""
    g, b, L = c.g, c.base(), c.layer
    shape = c.bshape[0]
    k = L.top_k
    if L.has_axis:
        axis = _axis(c.lp.argmax_param.axis, len(shape))
        x = c.x
    else:
        axis, x = 1, g.reshape(c.x, [shape[0], -1], base=b)
    dim = L.dim
    rev = g.slice(x, [dim - 1], [-2 ** 62], [axis], base=b, steps=[-1])
    vals, pos = g.op("TopK", [rev, g.ints([k], "k")], base=b, n_out=2, axis=axis, largest=1,
                     sorted=1)
    fpos = g.op1("Cast", [pos], base=b, to=g.onnx.TensorProto.FLOAT)
    idx = g.op1("Sub", [g.const(float(dim - 1)), fpos], base=b)
    if L.has_axis:
        g.op1("Identity", [vals if L.out_max_val else idx], c.y)
        return
    flat = g.op1("Concat", [idx, vals], base=b, axis=1) if L.out_max_val else idx
    g.reshape(flat, c.tshape[0], c.y, keep_batch=True)
