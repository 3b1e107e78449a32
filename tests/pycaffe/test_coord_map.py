"""caffe.coord_map: coordinate maps through conv/pool/deconv/crop and the crop() helper."""
import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.coord_map import (coord_map, coord_map_from_to, compose, crop, inverse,
                             AxisMismatchException, UndefinedMapException)


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    dks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=dks, stride=dstride, pad=dpad)
    return n


def test_single_layer_maps():
    n = conv_pool_deconv(ks=5, stride=2, pad=1)
    ax, a, b = coord_map(n.conv.fn)        # x_in = a * y + b with a = 1/s, b = (p - (k-1)/2)/s
    assert ax == 1 and a == 0.5 and b == (1 - 2) / 2
    ax, a, b = coord_map(n.deconv.fn)
    assert ax == 1 and a == 2 and b == (4 - 1) / 2 - 0
    assert coord_map(L.ReLU(n.conv).fn) == (None, 1, 0)
    with pytest.raises(UndefinedMapException):
        coord_map(L.InnerProduct(n.conv, num_output=2).fn)


def test_dilation_counts_in_kernel_extent():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2)
    _, a, b = coord_map(n.conv.fn)
    assert a == 1 and b == -2       # extent (3-1)*2+1 = 5


def test_compose_and_inverse():
    assert compose((None, 1, 0), (1, 2, 3)) == (1, 2, 3)
    assert compose((1, 2, 1), (None, 1, 0)) == (1, 2, 1)
    assert compose((1, 2, 1), (1, 3, 4)) == (1, 6, 9)
    assert inverse((1, 2, 4)) == (1, 0.5, -2)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))


def test_conv_pool_deconv_identity_and_shift():
    n = conv_pool_deconv()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, 0)
    n = conv_pool_deconv(pool=4, dstride=4)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, -1)


@pytest.mark.parametrize("pad", [0, 3, 7])
def test_padding_shifts(pad):
    n = conv_pool_deconv()
    _, a, b = coord_map_from_to(n.deconv, n.data)
    n = conv_pool_deconv(pad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b - pad)
    n = conv_pool_deconv(dpad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b + pad)
    n = conv_pool_deconv(pad=pad, dpad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b)


def test_pass_through_and_multi_bottom():
    n = conv_pool_deconv()
    base = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1)
    assert coord_map_from_to(n.relu, n.data) == base
    assert coord_map_from_to(n.conv1x1, n.data) == base
    n.cd, n.ca = L.Convolution(n.data, n.aux, ntop=2, num_output=10, kernel_size=5, stride=2)
    assert coord_map_from_to(n.cd, n.data) == coord_map_from_to(n.ca, n.aux)


def test_anisotropic_and_nd():
    n = conv_pool_deconv(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n33 = conv_pool_deconv(ks=3, stride=1, pad=0)
    n55 = conv_pool_deconv(ks=5, stride=2, pad=10)
    assert coord_map_from_to(n33.deconv, n33.data)[1:] == (a[0], b[0])
    assert coord_map_from_to(n55.deconv, n55.data)[1:] == (a[1], b[1])
    m = caffe.NetSpec()
    m.data = L.Input(shape=dict(dim=[2, 3, 10, 10, 10]))
    m.conv = L.Convolution(m.data, num_output=4, kernel_size=[3, 3, 3], pad=[0, 1, 2])
    m.pool = L.Pooling(m.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    m.deconv = L.Deconvolution(m.pool, num_output=4, kernel_size=4, stride=2)
    ax, a, b = coord_map_from_to(m.deconv, m.data)
    assert ax == 1 and np.all(a == 1) and list(b) == [b[0], b[0] - 1, b[0] - 2]


def test_crop_layer_offsets_and_helper():
    n = conv_pool_deconv()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=4)
    assert coord_map_from_to(n.crop, n.data) == (ax, a, b + 4)
    n = conv_pool_deconv(pad=5)                 # conv pad 5 -> the deconv output is 5 bigger
    c = crop(n.deconv, n.data)
    p = c.to_proto().layer[-1]
    assert p.type == "Crop" and list(p.bottom) == ["Deconvolution1", "Input1"]
    assert p.crop_param.axis == 2 and list(p.crop_param.offset) == [5]


def test_errors():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="connected"):
        coord_map_from_to(n.ip, n.data)
    with pytest.raises(AssertionError, match="scale mismatch"):
        n = conv_pool_deconv(pool=3, dstride=2)
        crop(n.deconv, n.data)
    with pytest.raises(AssertionError, match="negative"):
        n = conv_pool_deconv(dpad=10)
        crop(n.deconv, n.data)
    with pytest.raises(AssertionError, match="legacy"):
        m = caffe.NetSpec()
        m.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
        m.conv = L.Convolution(m.data, num_output=1, kernel_size=3, pad_h=1, pad_w=1)
        coord_map(m.conv.fn)
