"""Spatial coordinate mapping between NetSpec tops: pycaffe's ``caffe.coord_map``.

A map is ``(axis, a, b)``: output coordinate ``y`` relates to input coordinate ``x`` by
``x = a * y + b`` along the spatial axes from ``axis`` on (``axis`` None: any axis, the identity
maps of pointwise layers). Convolution/Pooling/Im2col with stride s, (dilated) kernel k and pad p
give ``(1/s, (p - (k-1)/2) / s)``; Deconvolution the inverse ``(s, (k-1)/2 - p)``; Crop a shift by
its offset. ``coord_map_from_to`` composes maps through the graph; ``crop`` builds the Crop layer
that aligns one top with another (FCN style).
"""
import numpy as np

from .net_spec import layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid",
                       "Split", "TanH", "Threshold"]


def conv_params(fn):
    """(axis, stride, dilated kernel extent, pad) of a Convolution-like or Pooling Function,
    as arrays (one value or one per spatial axis)."""
    params = fn.params.get("convolution_param", fn.params)
    axis = params.get("axis", 1)
    ks = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    assert len({"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} &
               set(fn.params)) == 0, "cropping does not support legacy _h/_w params"
    return (axis, np.array(params.get("stride", 1), ndmin=1), (ks - 1) * dilation + 1,
            np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop Function, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    axis = params.get("axis", 2)
    offset = np.array(params.get("offset", 0), ndmin=1)
    return (axis, offset)


class UndefinedMapException(Exception):
    """A layer with no coordinate mapping."""


def coord_map(fn):
    """The (axis, scale, shift) map of one layer Function."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        axis -= 1  # the last non-coordinate axis, as for convolution's axis
        return axis, 1, -offset
    raise UndefinedMapException


class AxisMismatchException(Exception):
    """Two maps over different axes."""


def compose(base_map, next_map):
    """The map of ``base_map`` followed by ``next_map``: scales multiply, the further shift is
    scaled by the base scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The inverse map (de-scale and un-shift)."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _collect_bottoms(top):
    """The bottoms to walk: all of them, but only the first (cropped) one for Crop."""
    bottoms = top.fn.inputs
    if top.fn.type_name == "Crop":
        bottoms = bottoms[:1]
    return bottoms


def coord_map_from_to(top_from, top_to):
    """The map from ``top_from``'s coordinates to ``top_to``'s, through their nearest common
    ancestor. RuntimeError when they are not connected by spatial layers."""
    from_maps = {top_from: (None, 1, 0)}
    frontier = {top_from}
    while frontier:
        top = frontier.pop()
        try:
            for bottom in _collect_bottoms(top):
                from_maps[bottom] = compose(from_maps[top], coord_map(top.fn))
                frontier.add(bottom)
        except UndefinedMapException:
            pass
    to_maps = {top_to: (None, 1, 0)}
    frontier = {top_to}
    while frontier:
        top = frontier.pop()
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            for bottom in _collect_bottoms(top):
                to_maps[bottom] = compose(to_maps[top], coord_map(top.fn))
                frontier.add(bottom)
        except UndefinedMapException:
            continue
    raise RuntimeError("Could not compute map between tops; are they connected by spatial "
                       "layers?")


def crop(top_from, top_to):
    """A Crop layer (NetSpec Top) that crops ``top_from`` to ``top_to``'s extent, with the axis
    and offsets from their coordinate mapping. AssertionError when the scales differ or the
    offset would be negative or fractional."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b, dtype=float)
    assert (a == 1).all(), "scale mismatch on crop (a = {})".format(a)
    assert (b <= 0).all(), "cannot crop negative offset (b = {})".format(b)
    assert (np.round(b) == b).all(), "cannot crop noninteger offset (b = {})".format(b)
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=ax + 1,  # +1 for the first cropped axis
                                  offset=[int(v) for v in np.ravel(-np.round(b).astype(int))]))
