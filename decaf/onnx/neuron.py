"""Element-wise layers (Caffe's neuron layers) as ONNX operators."""
import math

from .registry import register_emitter


@register_emitter("ReLU")
def relu(c):
    """y = max(x, 0) + negative_slope * min(x, 0): Relu, or LeakyRelu(alpha = slope)."""
    slope = float(c.lp.relu_param.negative_slope)
    if slope == 0:
        c.g.op1("Relu", [c.x], c.y)
    else:
        c.g.op1("LeakyRelu", [c.x], c.y, alpha=slope)


@register_emitter("Sigmoid", "TanH", "AbsVal")
def plain(c):
    """Sigmoid, Tanh, Abs: the same functions."""
    op = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs"}[c.lp.type]
    c.g.op1(op, [c.x], c.y)


@register_emitter("Dropout")
def dropout(c):
    """TEST-phase Dropout is the identity (Caffe scales at TRAIN time)."""
    if c.layer.phase == c.layer._pb.TRAIN:
        c.error("TRAIN-phase Dropout draws a random mask; export the TEST phase")
    c.g.op1("Identity", [c.x], c.y)


@register_emitter("BNLL")
def bnll(c):
    """y = log(1 + exp(x)), written as max(x, 0) + log(1 + exp(-|x|)) (never overflows)."""
    g, b = c.g, c.base()
    e = g.op1("Exp", [g.op1("Neg", [g.op1("Abs", [c.x], base=b)], base=b)], base=b)
    lg = g.op1("Log", [g.op1("Add", [e, g.const(1.0)], base=b)], base=b)
    g.op1("Add", [g.op1("Relu", [c.x], base=b), lg], c.y)


@register_emitter("ELU")
def elu(c):
    """y = x if x > 0 else alpha (exp(x) - 1): Elu(alpha)."""
    c.g.op1("Elu", [c.x], c.y, alpha=float(c.lp.elu_param.alpha))


@register_emitter("Swish")
def swish(c):
    """y = x * sigmoid(beta x)."""
    g, b = c.g, c.base()
    s = g.op1("Sigmoid", [g.scalar_mul(c.x, float(c.lp.swish_param.beta), base=b)], base=b)
    g.op1("Mul", [c.x, s], c.y)


@register_emitter("Clip")
def clip(c):
    """y = max(min, min(x, max))."""
    p = c.lp.clip_param
    c.g.op1("Clip", [c.x, c.g.const(float(p.min)), c.g.const(float(p.max))], c.y)


@register_emitter("Threshold")
def threshold(c):
    """y = 1 if x > threshold else 0."""
    g = c.g
    gt = g.op1("Greater", [c.x, g.const(float(c.lp.threshold_param.threshold))], base=c.base())
    g.op1("Cast", [gt], c.y, to=c.g.onnx.TensorProto.FLOAT)


@register_emitter("Exp")
def exp(c):
    """y = base^(shift + scale x) = outer * exp(inner x), inner = ln(base) scale,
    outer = base^shift (Caffe's ExpLayer; base -1 is e)."""
    g, b, L = c.g, c.base(), c.layer
    e = g.op1("Exp", [g.scalar_mul(c.x, L.inner_scale, base=b)],
              c.y if L.outer_scale == 1 else None, base=b)
    if L.outer_scale != 1:
        g.op1("Mul", [e, g.const(L.outer_scale)], c.y)


@register_emitter("Log")
def log(c):
    """y = log(shift + scale x) / ln(base) (Caffe's LogLayer; base -1 is e)."""
    g, b, L = c.g, c.base(), c.layer
    t = g.scalar_mul(c.x, L.scale, base=b)
    if L.shift != 0:
        t = g.op1("Add", [t, g.const(L.shift)], base=b)
    lg = g.op1("Log", [t], c.y if L.base_scale == 1 else None, base=b)
    if L.base_scale != 1:
        g.op1("Mul", [lg, g.const(L.base_scale)], c.y)


@register_emitter("Power")
def power(c):
    """y = (shift + scale x)^power; a constant (1 or shift^power) when power * scale is 0."""
    g, b, L = c.g, c.base(), c.layer
    if L.diff_scale == 0:
        value = 1.0 if L.power == 0 else float(math.pow(L.shift, L.power))
        g.op1("Expand", [g.const(value), g.op1("Shape", [c.x], base=b)], c.y)
        return
    t = g.scalar_mul(c.x, L.scale, base=b)
    if L.shift != 0:
        t = g.op1("Add", [t, g.const(L.shift)], base=b)
    if L.power == 1:
        g.op1("Identity", [t], c.y)
    else:
        g.op1("Pow", [t, g.const(L.power)], c.y)


@register_emitter("PReLU")
def prelu(c):
    """y = max(x, 0) + a_c min(x, 0), a shared (one value) or one per channel (axis 1)."""
    a = c.blob(0)
    if c.lp.prelu_param.channel_shared:
        slope = a.reshape(1)
    else:
        slope = c.channel_shape(a.reshape(-1), len(c.bshape[0]))
    c.g.op1("PRelu", [c.x, c.g.const(slope, c.base("slope"))], c.y)
