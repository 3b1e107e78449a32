"""Convolution, Deconvolution, Pooling and LRN as ONNX operators, with Caffe's size rules."""
import numpy as np

from .. import backend
from .registry import register_emitter


def _geometry(c):
    """(kernel, stride, pad, dilation) of a (De)Convolution layer; the channel axis must be 1."""
    if c.layer.channel_axis != 1:
        c.error("convolution_param.axis must be 1 (ONNX Conv has channels at axis 1), got %d"
                % c.layer.channel_axis)
    return [list(map(int, v)) for v in c.layer.geometry]


@register_emitter("Convolution", "Deconvolution")
def convolution(c):
    """Conv / ConvTranspose with explicit symmetric pads, strides, dilations and groups; the
    weights are Caffe's blob as is ((out, in/g, k...) resp. (in, out/g, k...)). Caffe's sizes:
    conv floor((H + 2p - d(k-1) - 1) / s) + 1, deconv s(H - 1) + d(k-1) + 1 - 2p, which are
    ONNX's for these pads (output_padding 0)."""
    kernel, stride, pad, dilation = _geometry(c)
    g = c.g
    op = "Conv" if c.lp.type == "Convolution" else "ConvTranspose"
    for b, t in zip(c.bottom, c.top):
        ins = [b, g.const(c.blob(0), c.base("weight"))]
        if c.layer.bias_term:
            ins.append(g.const(c.blob(1), c.base("bias")))
        g.op1(op, ins, t, kernel_shape=kernel, strides=stride, pads=pad + pad,
              dilations=dilation, group=int(c.layer.group))


@register_emitter("Im2col")
def im2col(c):
    """Caffe's column buffer, channel (c k_h + i) k_w + j = x[c] shifted by (i d_h, j d_w): a
    grouped Conv (group = C) with one-hot kernels, same pads, strides and dilations."""
    kernel, stride, pad, dilation = _geometry(c)
    channels, kcount = c.bshape[0][1], int(np.prod(kernel))
    w = np.zeros((channels * kcount, 1, kcount), np.float32)
    for ch in range(channels):
        w[ch * kcount:(ch + 1) * kcount, 0, :] = np.eye(kcount, dtype=np.float32)
    w = w.reshape((channels * kcount, 1) + tuple(kernel))
    c.g.op1("Conv", [c.x, c.g.const(w, c.base("onehot"))], c.y, kernel_shape=kernel,
            strides=stride, pads=pad + pad, dilations=dilation, group=int(channels))


def _end_pads(L, h, w, out):
    """End pads that make ONNX's floor output size equal Caffe's ``out`` (never negative):
    the last window [(out-1)s - p, (out-1)s - p + k) must end inside H + pad_end."""
    pads = []
    for n, k, s, p, o in zip((h, w), L.kernel, L.stride, L.pad, out):
        pads.append(max(0, (o - 1) * s + k - n - p))
    return pads


@register_emitter("Pooling")
def pooling(c):
    """MAX: MaxPool; AVE: sum over the window clipped to the bottom divided by Caffe's
    pool_size (window clipped to [-p, H + p)), i.e. AveragePool(count_include_pad=1) over
    pads that hold every window whole (divisor k_h k_w) times k_h k_w / pool_size;
    STOCHASTIC (TEST): sum x^2 / sum x; global pooling: GlobalMax/AveragePool.
    Ceil rounding: Caffe's output size (with the minus-one rule when the last window would
    start in the padding) is met by explicit end pads."""
    L, g = c.layer, c.g
    P = L._pb.PoolingParameter
    if len(c.top) > 1 and L.method != P.MAX:
        c.error("only MAX pooling has a second top (the argmax mask)")
    n, ch, h, w = c.bshape[0]
    out = tuple(c.tshape[0][2:])
    if L.global_pooling:
        if L.method == P.MAX:
            g.op1("GlobalMaxPool", [c.x], c.y)
        elif L.method == P.AVE:
            g.op1("GlobalAveragePool", [c.x], c.y)
        else:
            _stochastic(c, dict(kernel_shape=[h, w], strides=[1, 1], pads=[0] * 4))
        return
    pads = list(L.pad) + _end_pads(L, h, w, out)
    attrs = dict(kernel_shape=list(L.kernel), strides=list(L.stride), pads=pads)
    if L.method == P.MAX:
        if len(c.top) == 1:
            g.op1("MaxPool", [c.x], c.y, **attrs)
            return
        # Caffe's mask is h * W + w in the plane; ONNX's Indices count over (N, C, H, W)
        _, idx = g.op("MaxPool", [c.x], [c.y, g.fresh(c.base("indices"))], **attrs)
        plane = g.op1("Mod", [idx, g.ints([h * w], "plane")], base=c.base())
        g.op1("Cast", [plane], c.top[1], to=g.onnx.TensorProto.FLOAT)
        return
    if L.method == P.STOCHASTIC:
        if c.layer.phase == L._pb.TRAIN:
            c.error("TRAIN-phase STOCHASTIC pooling samples at random; export the TEST phase")
        _stochastic(c, attrs)
        return
    divisor = np.asarray(backend.to_numpy(L.win.ave_divisor()), np.float64)
    ratio = (L.kernel[0] * L.kernel[1]) / divisor
    whole = np.all(ratio == 1)
    avg = g.op1("AveragePool", [c.x], c.y if whole else None, base=c.base(),
                count_include_pad=1, **attrs)
    if not whole:
        g.op1("Mul", [avg, g.const(ratio, c.base("divisor"))], c.y)


def _stochastic(c, attrs):
    """TEST-phase STOCHASTIC pooling: sum x^2 / sum x over each window (no padding)."""
    g, b = c.g, c.base()
    sq = g.op1("Mul", [c.x, c.x], base=b)
    num = g.op1("AveragePool", [sq], base=b, **attrs)
    den = g.op1("AveragePool", [c.x], base=b, **attrs)
    g.op1("Div", [num, den], c.y)


@register_emitter("LRN")
def lrn(c):
    """ACROSS_CHANNELS: ONNX LRN (size n, alpha, beta, bias = k) is Caffe's
    x (k + alpha/n sum x^2)^-beta over the centred window of n channels.
    WITHIN_CHANNEL: x (1 + alpha * avg_{n x n, pad (n-1)/2} x^2)^-beta; the average divides by
    n^2 everywhere (every window lies inside the padding), as Caffe's AVE pooling does here."""
    L, g, b = c.layer, c.g, c.base()
    if L.across:
        g.op1("LRN", [c.x], c.y, size=L.size, alpha=L.alpha, beta=L.beta, bias=L.k)
        return
    p = L.pre_pad
    sq = g.op1("Mul", [c.x, c.x], base=b)
    avg = g.op1("AveragePool", [sq], base=b, kernel_shape=[L.size, L.size], strides=[1, 1],
                pads=[p] * 4, count_include_pad=1)
    base = g.op1("Add", [g.scalar_mul(avg, L.alpha, base=b), g.const(1.0)], base=b)
    scale = g.op1("Pow", [base, g.const(-L.beta)], base=b)
    g.op1("Mul", [c.x, scale], c.y)


@register_emitter("SPP")
def spp(c):
    """Each pyramid level is one of decaf's inner Pooling layers (kernel ceil(H / 2^l), stride
    = kernel, pad (kernel 2^l - H + 1) / 2), emitted as Pooling; the levels are flattened and
    concatenated (a single level stays N x C x 1 x 1)."""
    from .registry import Ctx
    g, levels = c.g, c.layer.levels
    if len(levels) == 1:
        layer, _, lt = levels[0]
        pooling(Ctx(g, layer, [c.x], [c.y], c.bshape, [tuple(lt.shape)]))
        return
    flat = []
    for layer, _, lt in levels:
        out = g.fresh(layer.layer_param.name)
        pooling(Ctx(g, layer, [c.x], [out], c.bshape, [tuple(lt.shape)]))
        flat.append(g.op1("Flatten", [out], base=c.base(), axis=1))
    g.op1("Concat", flat, c.y, axis=1)
