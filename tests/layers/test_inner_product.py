"""Tests of InnerProduct and Embed (decaf/layers/inner_product.py): golden cases from BVLC Caffe,
float64 gradient checks, forward/backward against the formulas, errors."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.layers.inner_product import gemm_accumulate
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, make_layer_param

TYPES = ["InnerProduct", "Embed"]

IP = ('type: "InnerProduct" inner_product_param { num_output: %d %s '
      'weight_filler { type: "gaussian" std: 0.5 } '
      'bias_filler { type: "uniform" min: -1 max: 1 } }')
EMBED = ('type: "Embed" embed_param { num_output: %d input_dim: %d %s '
         'weight_filler { type: "uniform" min: -1 max: 1 } '
         'bias_filler { type: "uniform" min: -1 max: 1 } }')


# -- golden cases written by BVLC Caffe ---------------------------------------------------------

@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_covers_both_types():
    seen = {golden.load_case(c)["layer_type"] for c in golden.layer_cases(types=TYPES)}
    assert seen == set(TYPES)


# -- helpers -------------------------------------------------------------------------------------

def fwd_bwd(spec, x, dy=None, params=None, dtype=np.float64, propagate_down=(True,)):
    layer, bottom, top = build_layer(spec, [x], dtype=dtype, params=params)
    layer.Forward(bottom, top)
    y = top[0].data.copy()
    if dy is None:
        return y, None, layer
    top[0].diff[...] = dy
    for b in layer.blobs:
        b.diff[...] = 0
    layer.Backward(top, list(propagate_down), bottom)
    return y, bottom[0].diff.copy(), layer


# -- InnerProduct --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((3, 5), 1), ((2, 3, 2, 2), 1), ((2, 3, 4), 2),
                                        ((2, 3, 4), -1), ((6,), 0), ((2, 3, 4), 0)])
@pytest.mark.parametrize("extra", ["", "bias_term: false", "transpose: true",
                                   "transpose: true bias_term: false"])
def test_ip_gradient(shape, axis, extra):
    x = np.random.RandomState(0).standard_normal(shape)
    check_gradient(IP % (4, "axis: %d %s" % (axis, extra)), [x])


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_ip_formula(transpose, bias):
    rs = np.random.RandomState(1)
    x = rs.standard_normal((2, 3, 2, 2))
    M, K, N = 2, 12, 5
    w = rs.standard_normal((K, N) if transpose else (N, K))
    b = rs.standard_normal(N)
    dy = rs.standard_normal((M, N))
    extra = "transpose: %s bias_term: %s" % (str(transpose).lower(), str(bias).lower())
    params = [w, b] if bias else [w]
    y, dx, layer = fwd_bwd(IP % (N, extra), x, dy, params=params)
    W = w.T if transpose else w  # N x K
    x2 = x.reshape(M, K)
    want = x2 @ W.T + (b if bias else 0)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    np.testing.assert_allclose(dx, (dy @ W).reshape(x.shape), rtol=1e-12)
    dW = dy.T @ x2
    np.testing.assert_allclose(layer.blobs[0].diff, dW.T if transpose else dW, rtol=1e-12)
    if bias:
        np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=0), rtol=1e-12)


def test_ip_shapes_and_defaults():
    layer, bottom, top = build_layer('type: "InnerProduct" inner_product_param { num_output: 7 }',
                                     [np.ones((2, 3, 4, 5))], dtype=np.float32)
    assert top[0].shape == (2, 7)
    assert [b.shape for b in layer.blobs] == [(7, 60), (7,)]
    assert all(b.dtype == np.float32 for b in layer.blobs)
    # default fillers: constant 0
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()
    assert layer.param_propagate_down == [True, True]
    layer, _, top = build_layer(IP % (3, "axis: 2 transpose: true"), [np.ones((2, 3, 4, 5))])
    assert top[0].shape == (2, 3, 3)
    assert layer.blobs[0].shape == (20, 3)


def test_ip_param_diffs_accumulate():
    rs = np.random.RandomState(2)
    x, dy = rs.standard_normal((4, 6)), rs.standard_normal((4, 3))
    for extra in ("", "transpose: true"):
        layer, bottom, top = build_layer(IP % (3, extra), [x])
        layer.Forward(bottom, top)
        top[0].diff[...] = dy
        layer.Backward(top, [True], bottom)
        once = [b.diff.copy() for b in layer.blobs]
        layer.Backward(top, [False], bottom)
        for b, d in zip(layer.blobs, once):
            np.testing.assert_allclose(b.diff, 2 * d, rtol=1e-13)


def test_ip_propagate_down_false_leaves_bottom_diff():
    x = np.random.RandomState(3).standard_normal((4, 6))
    layer, bottom, top = build_layer(IP % (3, ""), [x])
    layer.Forward(bottom, top)
    bottom[0].diff[...] = 7.0
    top[0].diff[...] = 1.0
    layer.Backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)
    assert layer.blobs[0].diff.any()


def test_ip_float32_matches_float64():
    rs = np.random.RandomState(4)
    x, dy = rs.standard_normal((8, 10)), rs.standard_normal((8, 6))
    w, b = rs.standard_normal((6, 10)), rs.standard_normal(6)
    y64, dx64, l64 = fwd_bwd(IP % (6, ""), x, dy, params=[w, b])
    y32, dx32, l32 = fwd_bwd(IP % (6, ""), x, dy, params=[w, b], dtype=np.float32)
    assert y32.dtype == np.float32 and dx32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l32.blobs[0].diff, l64.blobs[0].diff, rtol=1e-5, atol=1e-5)


def test_ip_reshape_batch_keeps_weights():
    layer, bottom, top = build_layer(IP % (3, ""), [np.ones((2, 4))])
    w = layer.blobs[0].data.copy()
    x = np.random.RandomState(5).standard_normal((5, 4))
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    assert top[0].shape == (5, 3)
    np.testing.assert_allclose(top[0].data, x @ w.T + layer.blobs[1].data, rtol=1e-12)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_accumulate(ta, tb, dtype):
    rs = np.random.RandomState(6)
    a = rs.standard_normal((4, 3) if ta else (3, 4)).astype(dtype)
    b = rs.standard_normal((5, 4) if tb else (4, 5)).astype(dtype)
    a, b = (a.T if ta else a), (b.T if tb else b)
    c = rs.standard_normal((3, 5)).astype(dtype)
    want = c + a @ b
    out = gemm_accumulate(a, b, c)
    assert out is c
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


# -- InnerProduct errors -------------------------------------------------------------------------

def test_ip_errors():
    with pytest.raises(LayerSetupError, match="num_output must be positive"):
        build_layer('type: "InnerProduct"', [np.ones((2, 3))])
    with pytest.raises(LayerSetupError, match="axis 3 is out of range"):
        build_layer(IP % (2, "axis: 3"), [np.ones((2, 3))])
    with pytest.raises(LayerSetupError, match="exactly 1 bottom"):
        build_layer(IP % (2, ""), [np.ones((2, 3)), np.ones((2, 3))])


def test_ip_input_size_change_is_an_error():
    layer, bottom, top = build_layer(IP % (2, ""), [np.ones((2, 3, 4))])
    bottom[0].reshape((2, 5, 4))
    with pytest.raises(LayerSetupError, match="input size incompatible.*K = 12"):
        layer.Forward(bottom, top)


def _with_blobs(spec, shapes):
    param = make_layer_param(spec)
    param.name = "fc"
    for shape in shapes:
        bp = param.blobs.add()
        bp.shape.dim.extend(shape)
        bp.data.extend([0.5] * int(np.prod(shape)))
    return param


def test_ip_loaded_weights_are_checked():
    ok = _with_blobs(IP % (2, ""), [(2, 6), (2,)])
    layer, _, _ = build_layer(ok, [np.ones((3, 6))])
    np.testing.assert_array_equal(layer.blobs[0].data, 0.5)  # kept, not refilled
    with pytest.raises(LayerSetupError, match=r"parameter blob 0 has shape \(2, 5\)"):
        build_layer(_with_blobs(IP % (2, ""), [(2, 5), (2,)]), [np.ones((3, 6))])
    with pytest.raises(LayerSetupError, match="expects 2 parameter blob"):
        build_layer(_with_blobs(IP % (2, ""), [(2, 6)]), [np.ones((3, 6))])
    with pytest.raises(LayerSetupError, match=r"expected \(6, 2\)"):
        build_layer(_with_blobs(IP % (2, "transpose: true"), [(2, 6), (2,)]), [np.ones((3, 6))])


# -- Embed ---------------------------------------------------------------------------------------

def indices(shape, k, seed=0):
    return np.random.RandomState(seed).randint(0, k, shape).astype(np.float64)


@pytest.mark.parametrize("shape", [(6,), (2, 5), (2, 2, 3)])
@pytest.mark.parametrize("bias", ["", "bias_term: false"])
def test_embed_gradient(shape, bias):
    idx = indices(shape, 4, seed=len(shape))
    check_gradient(EMBED % (3, 4, bias), [idx])


@pytest.mark.parametrize("bias", [True, False])
def test_embed_formula_and_repeated_indices(bias):
    rs = np.random.RandomState(7)
    K, N = 5, 3
    idx = np.array([[0, 4, 4], [2, 4, 0]], np.float64)
    w, b = rs.standard_normal((K, N)), rs.standard_normal(N)
    dy = rs.standard_normal((2, 3, N))
    spec = EMBED % (N, K, "bias_term: %s" % str(bias).lower())
    y, _, layer = fwd_bwd(spec, idx, dy, params=[w, b] if bias else [w], propagate_down=(False,))
    assert y.shape == (2, 3, N)
    want = w[idx.astype(int)] + (b if bias else 0)
    np.testing.assert_allclose(y, want, rtol=1e-15)
    dW = np.zeros((K, N))
    for n, i in enumerate(idx.astype(int).ravel()):  # reference loop over a few indices
        dW[i] += dy.reshape(-1, N)[n]
    np.testing.assert_allclose(layer.blobs[0].diff, dW, rtol=1e-13)
    assert not layer.blobs[0].diff[[1, 3]].any()  # unused rows get nothing
    if bias:
        np.testing.assert_allclose(layer.blobs[1].diff, dy.reshape(-1, N).sum(0), rtol=1e-13)


def test_embed_shapes_defaults_and_no_index_gradient():
    layer, bottom, top = build_layer('type: "Embed" embed_param { num_output: 4 input_dim: 9 }',
                                     [np.zeros((2, 3))], dtype=np.float32)
    assert top[0].shape == (2, 3, 4)
    assert [b.shape for b in layer.blobs] == [(9, 4), (4,)]
    assert all(b.dtype == np.float32 for b in layer.blobs)
    assert layer.allow_force_backward(0) is False
    layer.Forward(bottom, top)
    top[0].diff[...] = 1
    with pytest.raises(LayerSetupError, match="can't backpropagate to the Embed input"):
        layer.Backward(top, [True], bottom)


def test_embed_param_diffs_accumulate():
    idx = indices((4, 2), 3)
    layer, bottom, top = build_layer(EMBED % (2, 3, ""), [idx])
    layer.Forward(bottom, top)
    top[0].diff[...] = np.random.RandomState(8).standard_normal(top[0].shape)
    layer.Backward(top, [False], bottom)
    once = [b.diff.copy() for b in layer.blobs]
    layer.Backward(top, [False], bottom)
    for b, d in zip(layer.blobs, once):
        np.testing.assert_allclose(b.diff, 2 * d, rtol=1e-13)


@pytest.mark.parametrize("bad", [-1.0, 5.0, 2.5, np.nan])
def test_embed_bad_indices(bad):
    idx = np.array([0.0, 1.0, bad])
    layer, bottom, top = build_layer(EMBED % (2, 5, ""), [idx])
    with pytest.raises(LayerSetupError, match=r"integers in \[0, input_dim = 5\)"):
        layer.Forward(bottom, top)


def test_embed_errors():
    with pytest.raises(LayerSetupError, match="num_output must be positive"):
        build_layer('type: "Embed" embed_param { input_dim: 3 }', [np.zeros(2)])
    with pytest.raises(LayerSetupError, match="input_dim must be positive"):
        build_layer('type: "Embed" embed_param { num_output: 3 }', [np.zeros(2)])
    with pytest.raises(LayerSetupError, match=r"parameter blob 0 has shape \(4, 3\)"):
        build_layer(_with_blobs(EMBED % (3, 5, ""), [(4, 3), (3,)]), [np.zeros(2)])
    with pytest.raises(LayerSetupError, match="expects 1 parameter blob"):
        build_layer(_with_blobs(EMBED % (3, 5, "bias_term: false"), [(5, 3), (3,)]),
                    [np.zeros(2)])
