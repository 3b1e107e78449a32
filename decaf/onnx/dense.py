"""Layers with learned blobs or statistics: InnerProduct, Embed, Parameter, BatchNorm, Scale,
Bias, MVN and SSD's Normalize, as ONNX operators."""
import numpy as np

from .registry import register_emitter


@register_emitter("InnerProduct")
def inner_product(c):
    """y = x(M x K) W^T + b over x flattened at the axis (Flatten -> Gemm; transB = 1 unless
    inner_product_param.transpose, where W is stored K x N); the top keeps shape[:axis]."""
    g, b, L = c.g, c.base(), c.layer
    shape, axis = c.bshape[0], L.axis
    x = c.x
    if len(shape) != 2 or axis != 1:
        x = g.op1("Flatten", [x], base=b, axis=axis)
    ins = [x, g.const(c.blob(0), c.base("weight"))]
    if L.bias_term:
        ins.append(g.const(c.blob(1), c.base("bias")))
    final = axis == 1
    y = g.op1("Gemm", ins, c.y if final else None, base=b, transB=0 if L.transpose else 1)
    if not final:   # (M, N) -> shape[:axis] + (N,); M holds the batch
        shape = list(c.tshape[0])
        if g.dynamic_batch and axis > 0:
            shape[0] = -1
        g.reshape(y, shape, c.y, keep_batch=False)


@register_emitter("Embed")
def embed(c):
    """y = W[x] + b: Gather of the rows of W (input_dim x num_output) at the int64 indices."""
    g, b = c.g, c.base()
    idx = g.op1("Cast", [c.x], base=b, to=g.onnx.TensorProto.INT64)
    rows = g.op1("Gather", [g.const(c.blob(0), c.base("weight")), idx],
                 None if c.layer.bias_term else c.y, base=b, axis=0)
    if c.layer.bias_term:
        g.op1("Add", [rows, g.const(c.blob(1), c.base("bias"))], c.y)


@register_emitter("Parameter")
def parameter(c):
    """top = the layer's blob, a constant."""
    c.g.op1("Identity", [c.g.const(c.blob(0), c.base("value"))], c.y)


@register_emitter("BatchNorm")
def batch_norm(c):
    """Global stats: mean = m/s, var = v/s (factor 0 when s = 0), y = (x - mean) * inv_std,
    inv_std = 1/sqrt(var + eps), folded into constants exactly as decaf/Caffe computes them.
    Batch stats (TRAIN without use_global_stats): mean and biased variance over (N, spatial)."""
    g, b, L = c.g, c.base(), c.layer
    ndim = len(c.bshape[0])
    if L.use_global_stats:
        s = float(c.blob(2).reshape(-1)[0])
        factor = 0.0 if s == 0 else 1.0 / s
        mean = c.blob(0) * np.float32(factor)
        var = c.blob(1) * np.float32(factor)
        inv_std = np.float32(1.0) / np.sqrt(var + np.float32(L.eps))
        xn = g.op1("Sub", [c.x, g.const(c.channel_shape(mean, ndim), c.base("mean"))], base=b)
        g.op1("Mul", [xn, g.const(c.channel_shape(inv_std, ndim), c.base("inv_std"))], c.y)
        return
    axes = [0] + list(range(2, ndim))
    mean = g.reduce("ReduceMean", c.x, axes, keepdims=1, base=b)
    xn = g.op1("Sub", [c.x, mean], base=b)
    var = g.reduce("ReduceMean", g.op1("Mul", [xn, xn], base=b), axes, keepdims=1, base=b)
    std = g.op1("Sqrt", [g.op1("Add", [var, g.const(float(L.eps))], base=b)], base=b)
    g.op1("Mul", [xn, g.op1("Reciprocal", [std], base=b)], c.y)


def _operand(c, shape, axis_param, value=None, bottom=None):
    """A Scale/Bias operand of ``shape`` laid along bottom[0]'s axes [axis, axis + n): a
    constant (``value``) or a runtime bottom, reshaped with trailing ones."""
    ndim, n = len(c.bshape[0]), len(shape)
    axis = 0 if n == 0 else int(axis_param) % ndim
    full = tuple(shape) + (1,) * (ndim - axis - n)
    if value is not None:
        return c.g.const(np.asarray(value, np.float32).reshape(full), c.base("operand"))
    if n and axis == 0 and c.g.dynamic_batch:
        c.error("a runtime operand along the batch axis cannot have a dynamic batch")
    return c.g.reshape(bottom, full, base=c.base(), keep_batch=False)


@register_emitter("Scale")
def scale(c):
    """y = x * s (+ bias), s a learned blob or bottom[1], broadcast along scale_param.axis."""
    g, L = c.g, c.layer
    p = c.lp.scale_param
    if len(c.bottom) > 1:
        s = _operand(c, c.bshape[1], p.axis, bottom=c.bottom[1])
    else:
        s = _operand(c, c.layer.blobs[0].shape, p.axis, value=c.blob(0))
    has_bias = L.bias_index is not None
    y = g.op1("Mul", [c.x, s], None if has_bias else c.y, base=c.base())
    if has_bias:
        bias = L.blobs[L.bias_index]
        g.op1("Add", [y, _operand(c, bias.shape, p.axis, value=c.blob(L.bias_index))], c.y)


@register_emitter("Bias")
def bias(c):
    """y = x + b, b a learned blob or bottom[1], broadcast along bias_param.axis."""
    p = c.lp.bias_param
    if len(c.bottom) > 1:
        v = _operand(c, c.bshape[1], p.axis, bottom=c.bottom[1])
    else:
        v = _operand(c, c.layer.blobs[0].shape, p.axis, value=c.blob(0))
    c.g.op1("Add", [c.x, v], c.y)


@register_emitter("MVN")
def mvn(c):
    """y = (x - mean) / (sqrt(var) + eps) (var = mean((x - mean)^2)), or x - mean; the means
    over (H, W) per (n, c), or over (C, H, W) per n with across_channels; the top has Caffe's
    legacy 4-D shape."""
    g, b, L = c.g, c.base(), c.layer
    x = c.x
    if tuple(c.bshape[0]) != tuple(c.tshape[0]):
        x = g.reshape(x, c.tshape[0], base=b)
    axes = [1, 2, 3] if L.across_channels else [2, 3]
    mean = g.reduce("ReduceMean", x, axes, base=b)
    xm = g.op1("Sub", [x, mean], None if L.normalize_variance else c.y, base=b)
    if not L.normalize_variance:
        return
    var = g.reduce("ReduceMean", g.op1("Mul", [xm, xm], base=b), axes, base=b)
    den = g.op1("Add", [g.op1("Sqrt", [var], base=b), g.const(float(L.eps))], base=b)
    g.op1("Mul", [xm, g.op1("Reciprocal", [den], base=b)], c.y)


@register_emitter("Normalize")
def normalize(c):
    """SSD's Normalize: y = x / sqrt(sum x^2 + eps) * scale, the sum over C (per position) or
    over (C, H, W) (across_spatial); scale shared (one value) or per channel."""
    g, b, L = c.g, c.base(), c.layer
    ndim = len(c.bshape[0])
    axes = list(range(1, ndim)) if L.across_spatial else [1]
    ssum = g.reduce("ReduceSum", g.op1("Mul", [c.x, c.x], base=b), axes, base=b)
    norm = g.op1("Sqrt", [g.op1("Add", [ssum, g.const(float(L.eps))], base=b)], base=b)
    y = g.op1("Div", [c.x, norm], base=b)
    s = c.blob(0)
    s = s.reshape(()) if L.channel_shared else c.channel_shape(s.reshape(-1), ndim)
    g.op1("Mul", [y, g.const(s, c.base("scale"))], c.y)
