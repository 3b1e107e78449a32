"""Forward fusion: runs of in-place layers computed in one pass, with Caffe's numbers.

A chain is a head layer followed, in the net's order, by layers that work in place on the
head's top blob:

    Convolution                  -> ReLU                 ConvolutionLayer.forward_relu (the
                                                         bias pass applies the ReLU)
    Convolution -> BatchNorm (use_global_stats) [-> Scale] [-> ReLU]
                                 ConvolutionLayer.forward_post: normalize_affine (below) on
                                 each chunk of images the convolution has just written
    Convolution [-> ...] -> Pooling (MAX, AVE; its bottom: the chain's top, kept as it is)
                                 PoolingLayer.forward_images on each chunk, after the rest
    BatchNorm (use_global_stats) [-> Scale] [-> ReLU]     decaf.kernels.batchnorm.normalize_affine
    Scale                        -> ReLU                 decaf.kernels.elementwise.affine_forward
    Eltwise SUM                  -> ReLU                 decaf.kernels.eltwise (ReLU in the last pass)

The fused pass performs the same floating-point operations in the same order as the layers
one after the other, so every value is bit-identical; the intermediate values are not
observable either, since the followers overwrite the head's top in place.  A chain is fused
when none of its layers will ever run a backward (``needs_backward`` False: a TEST-phase or
deploy net, no force_backward), on the CPU, and only when a forward covers the whole chain
(``forward(end=...)`` inside a chain runs the layers one by one).  Training keeps two,

    BatchNorm (batch or global statistics) [-> Scale] [-> ReLU, slope >= 0]
    Eltwise SUM                            -> ReLU, slope >= 0

(the CIFAR ResNets' conv -> bn -> scale -> relu, all in place, and sum -> relu): the pass
also writes what each backward reads: BatchNorm's x_norm, Scale's input (that same x_norm,
borrowed instead of Caffe's copy; its own copy under global statistics), the ReLU's top (an
Eltwise SUM's backward reads no data).  The BatchNorm chains' backward runs as one too
(``run_backward``); the Eltwise chains' layer by layer.

Opt out per net with ``net.fuse_inference = False``, or for the process with DECAF_FUSE=0.
"""
import os

import numpy as np

from .kernels import batchnorm, eltwise, elementwise


def enabled_by_default():
    return os.environ.get("DECAF_FUSE", "1").strip() not in ("0", "false", "no", "off")


def _inplace_on(net, j, blob):
    """Layer j works in place on ``blob`` (its only bottom and top)."""
    return (len(net.bottom_vecs[j]) == 1 and len(net.top_vecs[j]) == 1 and
            net.bottom_vecs[j][0] is blob and net.top_vecs[j][0] is blob)


def _follower(net, j, blob, kind):
    if j >= len(net.layers) or net.layers[j].type != kind or net.layer_need_backward[j]:
        return False
    return not any(net.layers[j].loss_weights) and _inplace_on(net, j, blob)


def _tail(net, j, blob):
    """1 if layer j pools ``blob`` (MAX, AVE; its only bottom) into one top, which it can do
    image by image after a convolution chain, else 0.  (An Eltwise SUM tail, tried: slower,
    benchmarks/NOTES.md section 17.)"""
    if j >= len(net.layers) or net.layer_need_backward[j]:
        return 0
    layer, bottoms = net.layers[j], net.bottom_vecs[j]
    if any(layer.loss_weights) or len(net.top_vecs[j]) != 1 or layer.type != "Pooling":
        return 0
    return int(layer.fusible() and len(bottoms) == 1 and bottoms[0] is blob)


def _head_ok(net, i):
    layer = net.layers[i]
    if (net.layer_need_backward[i] or layer.xp is not np or len(net.top_vecs[i]) != 1
            or any(layer.loss_weights)):
        return False
    if layer.type == "Convolution":
        return len(net.bottom_vecs[i]) == 1
    if layer.type == "BatchNorm":
        return layer.use_global_stats
    if layer.type == "Scale":
        return len(net.bottom_vecs[i]) == 1
    if layer.type == "Eltwise":
        return layer.op == layer.SUM
    return False


def _train_head_ok(net, i):
    """A BatchNorm, or an Eltwise SUM (whose backward reads no data), heading a chain whose
    layers may run a backward (training): the fused forward keeps what each backward reads
    (below)."""
    layer = net.layers[i]
    if layer.xp is not np or len(net.top_vecs[i]) != 1 or any(layer.loss_weights):
        return False
    return layer.type == "BatchNorm" or (layer.type == "Eltwise" and layer.op == layer.SUM)


def _train_follower(net, j, blob, kind):
    if j >= len(net.layers) or net.layers[j].type != kind:
        return False
    layer = net.layers[j]
    if any(layer.loss_weights) or not _inplace_on(net, j, blob):
        return False
    if kind == "ReLU":          # its backward reads the top (slope >= 0), which the pass writes
        return not layer.backward_reads_bottom
    return len(net.bottom_vecs[j]) == 1      # Scale by a learned blob


def plan(net):
    """{head index: last index of its chain} for every chain of two or more layers."""
    chains = {}
    i = 0
    while i < len(net.layers):
        top, j = net.top_vecs[i][0] if net.top_vecs[i] else None, i + 1
        if _head_ok(net, i):
            conv = net.layers[i].type == "Convolution"
            if conv and _follower(net, j, top, "BatchNorm") and _head_ok(net, j):
                j += 1                       # Convolution -> BatchNorm [-> Scale] [-> ReLU]
            elif conv and not (_follower(net, j, top, "ReLU") or _tail(net, j, top)):
                i += 1
                continue
            if net.layers[j - 1].type == "BatchNorm" and _follower(net, j, top, "Scale") \
                    and _head_ok(net, j):
                j += 1
            if _follower(net, j, top, "ReLU"):
                j += 1
            if conv:
                j += _tail(net, j, top)      # ... [-> Pooling | -> Eltwise SUM [-> ReLU]]
        if j == i + 1 and _train_head_ok(net, i):
            if net.layers[i].type == "BatchNorm" and _train_follower(net, j, top, "Scale"):
                j += 1
            if _train_follower(net, j, top, "ReLU"):
                j += 1
        if j - 1 > i:
            chains[i] = j - 1
        i = j
    return chains


def backward_plan(net):
    """{last index: head index} of the training chains (``plan``) whose backward runs as one:
    every layer of the chain propagates down (a BatchNorm head, the followers in place)."""
    chains = {}
    for i, last in plan(net).items():
        if net.layers[i].type != "BatchNorm" or any(
                not (net.layer_need_backward[k] and net.bottom_need_backward(k)[0])
                for k in range(i, last + 1)):
            continue
        chains[last] = i
    return chains


def run_backward(net, i, last):
    """Backward of the training chain i..last (``backward_plan``) in one pass per channel:
    decaf.kernels.batchnorm.chain_backward, the layers' operations in their order; False
    (nothing run) when the shapes do not allow it."""
    layers = net.layers[i:last + 1]
    head, top = layers[0], net.top_vecs[i][0]
    scale = next((l for l in layers[1:] if l.type == "Scale"), None)
    relu = next((l for l in layers[1:] if l.type == "ReLU"), None)
    if scale is not None and scale._dims != (head._n, head.channels, head._s):
        return False
    dt = top.dtype.type
    dy, y = head._view(top.diff), head._view(top.data)
    dx = head._view(net.bottom_vecs[i][0].diff)
    std, xn = head._std, head._x_norm
    channels = head.channels
    ds, db = np.zeros(channels), np.zeros(channels)
    want_ds = want_db = False
    s, xs = std, dy                  # stand-ins when there is no Scale (never read)
    if scale is not None:
        want_ds = scale.param_propagate_down[0]
        want_db = scale.bias_index is not None and scale.param_propagate_down[scale.bias_index]
        s = scale.blobs[0].data.reshape(-1)
        xs = head._view(scale._temp if scale._borrowed is None else scale._borrowed)
    slope = dt(relu.slope if relu is not None else 0.0)
    batchnorm.chain_backward(y, dy, xs, dy if xn is None else xn, s, std, ds, db, dx,
                             net.bottom_vecs[i][0] is top, relu is not None, slope,
                             scale is not None, want_ds, want_db, head.use_global_stats)
    if want_db:     # Scale's parameter diffs, accumulated as its backward does
        scale.blobs[scale.bias_index].diff.reshape(-1)[...] += db.astype(dy.dtype)
    if want_ds:
        scale.blobs[0].diff.reshape(-1)[...] += ds.astype(dy.dtype)
    return True


def run(net, i, last, settled=False):
    """Forward of layers i..last (a chain of ``plan``) in one pass; False (nothing run but
    the reshapes) when the shapes do not allow it.  ``settled``: the net skips the reshapes
    of shape-only layers (Net.forward_from_to)."""
    for k in range(i, last + 1):
        if not (settled and net.layers[k].shape_only_reshape):
            net.layers[k].reshape(net.bottom_vecs[k], net.top_vecs[k])
    head, bottom, top = net.layers[i], net.bottom_vecs[i], net.top_vecs[i][0]
    scale = relu = pool = None
    for layer in net.layers[i + 1:last + 1]:
        if layer.type == "Scale":
            scale = layer
        elif layer.type == "ReLU":
            relu = layer
        elif layer.type == "Pooling":
            pool = layer
    dt = top.dtype.type
    slope = dt(relu.slope if relu is not None else 0.0)
    bn = next((l for l in net.layers[i:last + 1] if l.type == "BatchNorm"), None)
    if bn is not None and scale is not None and scale._dims != (bn._n, bn.channels, bn._s):
        return False                             # not a per-channel Scale: layer by layer
    if head.type == "Convolution" and bn is None and pool is None:
        head.forward_relu(bottom, [top], slope)
    elif head.type == "Convolution":
        # the BatchNorm [Scale] [ReLU] pass, then the Pooling, on each chunk of images as
        # soon as the convolution has written it (still in cache); their operations, in order
        epilogue = None
        if bn is not None:
            y = bn._view(top.data)
            mean = bn.statistics(y)
            s, b = _scale_bias(scale, bn._std)
            has_s, has_b = scale is not None, scale is not None and scale.bias_index is not None
            if head.writes_epilogue:          # the engine applies them row by row
                epilogue = (mean, bn._std, s, b, True, has_s, has_b, relu is not None, slope)
        if pool is not None:
            pool_x, pool_y = net.bottom_vecs[last][0].data, net.top_vecs[last][0].data

        def post(n0, n1):
            if bn is not None and epilogue is None:
                v = y[n0:n1]
                batchnorm.normalize_affine(v, mean, bn._std, s, b, v, has_s, has_b,
                                           relu is not None, slope, v, False)
            if pool is not None:
                pool.forward_images(pool_x, pool_y, n0, n1)
        head.forward_post(bottom, [top], post if bn is not None and epilogue is None or
                          pool is not None else None,
                          slope if relu is not None and bn is None else None, epilogue)
    elif head.type == "BatchNorm":
        x, y = head._view(bottom[0].data), head._view(top.data)
        mean = head.statistics(x)
        s, b = _scale_bias(scale, head._std)
        # what the backwards read: BatchNorm its x_norm (batch statistics), Scale its input
        # (= x_norm: it borrows BatchNorm's, else keeps its own), ReLU its top
        keep = head._x_norm
        if scale is not None:
            scale._borrowed = None
            if scale._keeps_bottom([top], [top]):
                if keep is None:
                    keep = head._view(scale._bottom_buffer(top.data))
                else:
                    scale._borrowed = keep
        batchnorm.normalize_affine(x, mean, head._std, s, b, y, scale is not None,
                                   scale is not None and scale.bias_index is not None,
                                   relu is not None, slope, y if keep is None else keep,
                                   keep is not None)
    elif head.type == "Scale":
        s, b = _scale_bias(head, None)
        dims = head._dims
        elementwise.affine_forward(bottom[0].data.reshape(dims), s, b, top.data.reshape(dims),
                                   True, head.bias_index is not None, True, slope)
    else:
        flat, c, y = [v.data.reshape(-1) for v in bottom], head.coeffs, top.data.reshape(-1)
        eltwise.sum2(flat[0], dt(c[0]), flat[1], dt(c[1]), y, len(flat) == 2, slope)
        for k, (v, ck) in enumerate(zip(flat[2:], c[2:]), 3):
            eltwise.sum_add(y, v, dt(ck), k == len(flat), slope)
    return True


def _scale_bias(scale, fallback):
    """The Scale layer's (scale, bias) vectors; ``fallback`` stands in for missing ones."""
    if scale is None:
        return fallback, fallback
    s = scale.blobs[0].data.reshape(-1)
    b = s if scale.bias_index is None else scale.blobs[scale.bias_index].data.reshape(-1)
    return s, b
