"""Tests of Pooling and SPP (decaf/layers/pooling.py): golden cases from BVLC Caffe, float64
gradient checks, forward/backward against Caffe's loops written out here, errors."""
import math

import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.layers import pooling as pooling_mod
from decaf.proto import caffe_pb2
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward

TYPES = ["Pooling", "SPP"]
FLT_MAX = float(np.finfo(np.float32).max)


def pool_spec(params, method="MAX"):
    return 'type: "Pooling" pooling_param { pool: %s %s }' % (method, params)


def distinct(*shape, seed=0):
    """Inputs whose values differ by at least 0.01 (so no max is within eps of another)."""
    n = int(np.prod(shape))
    return (np.random.RandomState(seed).permutation(n) * 0.01 - n * 0.005).reshape(shape)


# -- golden cases written by BVLC Caffe ---------------------------------------------------------

@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_covers_all_types():
    seen = {golden.load_case(c)["layer_type"] for c in golden.layer_cases(types=TYPES)}
    assert seen == set(TYPES)


# -- Caffe's pooling loops, written out ----------------------------------------------------------

def ref_out(size, k, s, p, ceil, any_pad):
    num = (size + 2 * p - k) / s
    o = (math.ceil(num) if ceil else math.floor(num)) + 1
    if any_pad and (o - 1) * s >= size + p:
        o -= 1
    return o


def ref_pool(x, method, k, s, p, ceil=True, top_diff=None):
    """Returns top, mask (MAX) and, given top_diff, the bottom diff."""
    n, c, h, w = x.shape
    any_pad = p[0] > 0 or p[1] > 0
    oh, ow = (ref_out(h, k[0], s[0], p[0], ceil, any_pad), ref_out(w, k[1], s[1], p[1], ceil, any_pad))
    top = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    bd = np.zeros_like(x)
    for a in range(oh):
        for b in range(ow):
            hs, ws = a * s[0] - p[0], b * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            for i in range(n):
                for j in range(c):
                    if method == "MAX":
                        best, idx = -FLT_MAX, -1
                        for y in range(hs, he):
                            for z in range(ws, we):
                                if x[i, j, y, z] > best:
                                    best, idx = x[i, j, y, z], y * w + z
                        top[i, j, a, b], mask[i, j, a, b] = best, idx
                        if top_diff is not None and idx >= 0:
                            bd[i, j, idx // w, idx % w] += top_diff[i, j, a, b]
                    else:
                        with np.errstate(divide="ignore", invalid="ignore"):
                            top[i, j, a, b] = np.float64(x[i, j, hs:he, ws:we].sum()) / size
                            if top_diff is not None:
                                bd[i, j, hs:he, ws:we] += np.float64(top_diff[i, j, a, b]) / size
    return top, mask, bd


def fwd_bwd(spec, x, ntop=1, seed=7, phase=caffe_pb2.TRAIN):
    layer, bottom, top = build_layer(spec, [x], num_tops=ntop, phase=phase)
    layer.Forward(bottom, top)
    dy = np.random.RandomState(seed).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    return layer, [t.data.copy() for t in top], dy, bottom[0].diff.copy()


GEOMS = [
    # params, kernel, stride, pad, ceil, shape
    ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), True, (2, 2, 8, 7)),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), True, (2, 2, 7, 6)),
    ("kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1), True, (1, 2, 5, 7)),
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (3, 3), (2, 2), (0, 0), False, (1, 2, 8, 7)),
    ("kernel_size: 3 stride: 1 pad: 1", (3, 3), (1, 1), (1, 1), True, (1, 2, 4, 5)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (3, 2), (2, 1), (1, 0),
     True, (1, 2, 7, 6)),
    ("kernel_size: 2 stride: 3 pad_h: 1 pad_w: 0", (2, 2), (3, 3), (1, 0), True, (1, 1, 7, 7)),
    ("kernel_size: 4 stride: 2", (4, 4), (2, 2), (0, 0), True, (1, 2, 3, 3)),   # kernel > H
    # pad_h > 0 makes Caffe apply the clip rule to the width too (pad_w = 0)
    ("kernel_size: 2 stride: 4 pad_h: 1 pad_w: 0", (2, 2), (4, 4), (1, 0), True, (1, 1, 6, 7)),
]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("params,k,s,p,ceil,shape", GEOMS)
def test_forward_backward_match_caffe_loops(monkeypatch, method, params, k, s, p, ceil, shape,
                                            compiled):
    """Both paths: the compiled kernels and the array passes (CuPy's code, run on NumPy)."""
    monkeypatch.setattr(pooling_mod, "COMPILED", compiled)
    x = distinct(*shape)
    _, (y,), dy, dx = fwd_bwd(pool_spec(params, method), x)
    want_y, _, want_dx = ref_pool(x, method, k, s, p, ceil, dy)
    np.testing.assert_allclose(y, want_y, atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, atol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("params,k,s,p,ceil,shape", GEOMS)
def test_gradient(method, params, k, s, p, ceil, shape):
    check_gradient(pool_spec(params, method), [distinct(*shape)])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = distinct(2, 3, 5, 4)
    _, (y,), dy, dx = fwd_bwd(pool_spec("global_pooling: true", method), x)
    want_y, _, want_dx = ref_pool(x, method, (5, 4), (1, 1), (0, 0), True, dy)
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(y, want_y, atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, atol=1e-12)
    check_gradient(pool_spec("global_pooling: true", method), [x])


@pytest.mark.parametrize("params", ["kernel_size: 2 stride: 2", "kernel_size: 3 stride: 2 pad: 1",
                                    "global_pooling: true"])
def test_max_mask_top(params):
    x = distinct(2, 2, 6, 5)
    layer, (y, mask), dy, dx = fwd_bwd(pool_spec(params), x, ntop=2)
    _, want_mask, want_dx = ref_pool(x, "MAX", layer.kernel, layer.stride, layer.pad, True, dy)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_allclose(dx, want_dx)
    # the mask top is not differentiable: leave it out of the objective
    check_gradient(pool_spec(params), [x], num_tops=2,
                   top_weights=[np.random.RandomState(1).standard_normal(y.shape), None])


def test_max_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 3, 3] = -1.0
    layer, (y, mask), dy, dx = fwd_bwd(pool_spec("kernel_size: 3 stride: 1"), x, ntop=2)
    np.testing.assert_array_equal(mask[0, 0], [[0, 1], [4, 5]])
    want = np.zeros((4, 4))
    for (a, b), idx in np.ndenumerate(mask[0, 0]):
        want[int(idx) // 4, int(idx) % 4] += dy[0, 0, a, b]
    np.testing.assert_allclose(dx[0, 0], want)


def test_max_padded_cells_never_win():
    x = -1.0 - distinct(1, 1, 4, 4) ** 2
    _, (y, mask), _, _ = fwd_bwd(pool_spec("kernel_size: 3 stride: 2 pad: 1"), x, ntop=2)
    assert (y < -0.5).all() and (mask >= 0).all()
    np.testing.assert_allclose(y, ref_pool(x, "MAX", (3, 3), (2, 2), (1, 1))[0])


def test_windows_beyond_the_bottom():
    # pad 0 and stride > kernel: Caffe's ceil rule makes a window that starts past the bottom
    x = distinct(1, 1, 6, 6)
    spec = "kernel_size: 1 stride: 3"
    layer, (y, mask), _, dx = fwd_bwd(pool_spec(spec), x, ntop=2)
    assert y.shape == (1, 1, 3, 3)
    want_y, want_mask, _ = ref_pool(x, "MAX", (1, 1), (3, 3), (0, 0))
    np.testing.assert_array_equal(y, want_y)
    assert y[0, 0, 2, 0] == -FLT_MAX and mask[0, 0, 2, 0] == -1
    np.testing.assert_array_equal(mask, want_mask)
    _, (ya,), _, _ = fwd_bwd(pool_spec(spec, "AVE"), x)
    np.testing.assert_array_equal(ya, ref_pool(x, "AVE", (1, 1), (3, 3), (0, 0))[0])
    assert np.isnan(ya[0, 0, 2, 2])          # Caffe divides 0 by a pool size of 0 here


def test_ave_divisor_counts_padding_but_not_overhang():
    x = np.ones((1, 1, 5, 5))
    _, (y,), _, _ = fwd_bwd(pool_spec("kernel_size: 3 stride: 2 pad: 1", "AVE"), x)
    # corner window: 4 real cells, 9 cells with padding -> 4/9; last window [3, 6) within H+p
    np.testing.assert_allclose(y[0, 0, 0, 0], 4 / 9)
    np.testing.assert_allclose(y[0, 0, 1, 1], 1.0)
    _, (y2,), _, _ = fwd_bwd(pool_spec("kernel_size: 2 stride: 2", "AVE"), x)
    np.testing.assert_allclose(y2[0, 0, 2, 2], 1.0)   # overhang window: 1 cell / size 1


def test_float32_and_reshape():
    layer, bottom, top = build_layer(pool_spec("kernel_size: 2 stride: 2"), [distinct(1, 1, 4, 4)],
                                     dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[0].data.dtype == np.float32
    x = distinct(2, 3, 5, 7, seed=3)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    np.testing.assert_allclose(top[0].data, ref_pool(x, "MAX", (2, 2), (2, 2), (0, 0))[0],
                               rtol=1e-6)


# -- STOCHASTIC ----------------------------------------------------------------------------------

def test_stochastic_train_samples_a_window_element():
    x = distinct(2, 3, 6, 6)
    x += 0.1 - x.min()                           # positive and distinct
    layer, (y,), dy, dx = fwd_bwd(pool_spec("kernel_size: 3 stride: 2", "STOCHASTIC"), x)
    assert y.shape == (2, 3, 3, 3)               # ceil: the last window overhangs the bottom
    want_dx = np.zeros_like(x)
    for (i, j, a, b), v in np.ndenumerate(y):
        window = x[i, j, 2 * a:2 * a + 3, 2 * b:2 * b + 3]
        hits = np.argwhere(window == v)
        assert len(hits) == 1
        h, w = hits[0]
        want_dx[i, j, 2 * a + h, 2 * b + w] += dy[i, j, a, b]
    np.testing.assert_allclose(dx, want_dx)      # each top diff lands on the sampled element


def test_stochastic_train_probability_is_proportional_to_value():
    x = np.tile(np.array([1.0, 3.0]), (4000, 1)).reshape(4000, 1, 1, 2)
    _, (y,) = forward('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_h: 1 kernel_w: 2 }',
                      [x])
    frac = float((y == 3.0).mean())
    assert abs(frac - 0.75) < 0.03


def test_stochastic_test_is_the_weighted_average():
    x = np.abs(distinct(1, 2, 4, 4)) + 0.1
    _, (y,) = forward(pool_spec("kernel_size: 2 stride: 2", "STOCHASTIC"), [x],
                      phase=caffe_pb2.TEST)
    w = x.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 2, 4)
    np.testing.assert_allclose(y, (w ** 2).sum(-1) / w.sum(-1), rtol=1e-12)


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_stochastic_gradient(phase):
    x = np.abs(distinct(1, 2, 5, 5)) + 0.2
    check_gradient(pool_spec("kernel_size: 3 stride: 2", "STOCHASTIC"), [x], phase=phase)


# -- SPP -----------------------------------------------------------------------------------------

def spp_spec(height, method="MAX"):
    return 'type: "SPP" spp_param { pyramid_height: %d pool: %s }' % (height, method)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 2, 5, 4)), (2, (2, 2, 5, 8)), (3, (1, 2, 7, 6))])
def test_spp_forward_is_concatenated_pooling(method, height, shape):
    x = distinct(*shape)
    _, (y,), dy, dx = fwd_bwd(spp_spec(height, method), x)
    n, c, h, w = shape
    parts, want_dx, off = [], np.zeros_like(x), 0
    dyf = dy.reshape(n, -1)
    for level in range(height):
        bins = 2 ** level
        k = (math.ceil(h / bins), math.ceil(w / bins))
        p = ((k[0] * bins - h + 1) // 2, (k[1] * bins - w + 1) // 2)
        top, _, _ = ref_pool(x, method, k, k, p)
        size = top[0].size
        _, _, d = ref_pool(x, method, k, k, p, top_diff=dyf[:, off:off + size].reshape(top.shape))
        parts.append(top.reshape(n, -1))
        want_dx += d
        off += size
    if height == 1:
        assert y.shape == (n, c, 1, 1)
    np.testing.assert_allclose(y.reshape(n, -1), np.concatenate(parts, axis=1), atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, atol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_spp_gradient(method):
    check_gradient(spp_spec(3, method), [distinct(1, 2, 6, 7)])


def test_spp_reshape_rebuilds_levels():
    layer, bottom, top = build_layer(spp_spec(2), [distinct(1, 2, 4, 4)])
    x = distinct(2, 2, 7, 9, seed=2)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    assert top[0].shape == (2, 2 * (1 + 4))
    np.testing.assert_allclose(top[0].data[:, :2], x.max(axis=(2, 3)))


def test_spp_errors():
    # level 2 of a height-5 bottom: kernel 2, pad (2*4 - 5 + 1)/2 = 2 -> Caffe's pad < kernel fails
    with pytest.raises(LayerSetupError, match="pyramid level 2"):
        build_layer(spp_spec(3), [np.zeros((1, 1, 5, 8))])
    with pytest.raises(LayerSetupError, match="pyramid_height"):
        build_layer('type: "SPP" spp_param { pool: MAX }', [np.zeros((1, 1, 4, 4))])
    with pytest.raises(LayerSetupError, match="4 axes"):
        build_layer(spp_spec(2), [np.zeros((1, 4, 4))])


# -- errors (Caffe's CHECKs) ---------------------------------------------------------------------

@pytest.mark.parametrize("params,method,match", [
    ("kernel_size: 2 pad: 2", "MAX", "smaller than the kernel"),
    ("kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2", "AVE", "smaller than the kernel"),
    ("global_pooling: true kernel_size: 2", "MAX", "Global_pooling"),
    ("global_pooling: true pad: 1", "AVE", "only pad = 0 and stride = 1"),
    ("global_pooling: true stride: 2", "AVE", "only pad = 0 and stride = 1"),
    ("kernel_size: 2 kernel_h: 2 kernel_w: 2", "MAX", "not both"),
    ("kernel_h: 2", "MAX", "both kernel_h and kernel_w"),
    ("stride: 2", "MAX", "both kernel_h and kernel_w"),
    ("kernel_size: 0", "MAX", "cannot be zero"),
    ("kernel_size: 2 stride: 0", "MAX", "stride"),
    ("kernel_size: 3 pad: 1", "STOCHASTIC", "Padding implemented only"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", "MAX", "pad is pad OR"),
    ("kernel_size: 2 stride_h: 2", "MAX", "stride is stride OR"),
    ("kernel_size: 9 round_mode: FLOOR", "MAX", "empty"),
])
def test_setup_errors(params, method, match):
    with pytest.raises(LayerSetupError, match=match):
        build_layer(pool_spec(params, method), [np.zeros((1, 1, 5, 5))])


def test_blob_errors():
    with pytest.raises(LayerSetupError, match="4 axes"):
        build_layer(pool_spec("kernel_size: 2"), [np.zeros((1, 5, 5))])
    with pytest.raises(LayerSetupError, match="second top"):
        build_layer(pool_spec("kernel_size: 2", "AVE"), [np.zeros((1, 1, 4, 4))], num_tops=2)
    with pytest.raises(LayerSetupError, match="at most 2"):
        build_layer(pool_spec("kernel_size: 2"), [np.zeros((1, 1, 4, 4))], num_tops=3)
    with pytest.raises(LayerSetupError, match="in-place"):
        build_layer(pool_spec("kernel_size: 1"), [np.zeros((1, 1, 4, 4))], inplace=True)
