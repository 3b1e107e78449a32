"""Tests of LRN (decaf/layers/lrn.py): golden cases from BVLC Caffe, float64 gradient checks,
forward/backward against the formulas written out here, errors."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward


def lrn_spec(params):
    return 'type: "LRN" lrn_param { %s }' % params


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


# -- golden cases written by BVLC Caffe ---------------------------------------------------------

@pytest.mark.parametrize("case", golden.layer_cases(types=["LRN"]))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_covers_both_regions():
    descs = [golden.load_case(c)["description"] for c in golden.layer_cases(types=["LRN"])]
    assert any("ACROSS" in d for d in descs) and any("WITHIN" in d for d in descs)


# -- the formulas, element by element ------------------------------------------------------------

def ref_across(x, n, alpha, beta, k):
    """scale_c = k + alpha/n sum_{|c'-c| <= n/2} x_c'^2; also Caffe's backward for a top diff."""
    c = x.shape[1]
    half = (n - 1) // 2
    scale = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + half + 1)
        scale[:, ch] = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
    return x * scale ** -beta, scale


def ref_across_backward(x, y, scale, dy, n, alpha, beta):
    c = x.shape[1]
    half = (n - 1) // 2
    ratio = dy * y / scale
    dx = dy * scale ** -beta
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + half + 1)
        dx[:, ch] -= 2 * alpha * beta / n * x[:, ch] * ratio[:, lo:hi].sum(axis=1)
    return dx


def ref_within(x, n, alpha, beta):
    """x (1 + alpha/n^2 sum_{n x n window} x^2)^-beta, zero outside the plane."""
    h, w = x.shape[2:]
    half = (n - 1) // 2
    s = np.empty_like(x)
    for a in range(h):
        for b in range(w):
            win = x[:, :, max(0, a - half):a + half + 1, max(0, b - half):b + half + 1]
            s[:, :, a, b] = (win ** 2).sum(axis=(2, 3))
    return x * (1 + alpha / n ** 2 * s) ** -beta


@pytest.mark.parametrize("n,alpha,beta,k,shape", [
    (5, 1.0, 0.75, 1.0, (2, 7, 3, 4)),
    (3, 0.5, 0.6, 2.0, (2, 4, 3, 3)),
    (1, 2.0, 0.5, 1.5, (1, 3, 2, 2)),
    (7, 1e-2, 0.75, 1.0, (1, 3, 2, 3)),    # window wider than the channel count
])
def test_across_forward_backward(n, alpha, beta, k, shape):
    x = rand(*shape)
    layer, bottom, top = build_layer(lrn_spec("local_size: %d alpha: %r beta: %r k: %r"
                                              % (n, alpha, beta, k)), [x])
    layer.Forward(bottom, top)
    alpha, beta, k = layer.alpha, layer.beta, layer.k      # the proto stores float32 values
    want, scale = ref_across(x, n, alpha, beta, k)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    dy = rand(*shape, seed=1)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff,
                               ref_across_backward(x, want, scale, dy, n, alpha, beta),
                               rtol=1e-10, atol=1e-12)


def test_defaults_are_caffes():
    layer, (y,) = forward('type: "LRN"', [rand(1, 6, 2, 2)])
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1.0, 0.75, 1.0)
    assert layer.across


@pytest.mark.parametrize("n,alpha,beta,shape", [
    (3, 0.8, 0.75, (2, 2, 5, 4)),
    (5, 1.0, 0.6, (1, 2, 4, 6)),
    (1, 0.5, 0.75, (1, 1, 3, 3)),
])
def test_within_forward(n, alpha, beta, shape):
    x = rand(*shape)
    layer, (y,) = forward(lrn_spec("local_size: %d alpha: %r beta: %r k: 5 "
                                   "norm_region: WITHIN_CHANNEL" % (n, alpha, beta)), [x])
    # k does not enter WITHIN_CHANNEL (Caffe's power layer uses shift 1)
    np.testing.assert_allclose(y, ref_within(x, n, layer.alpha, layer.beta), rtol=1e-12)


@pytest.mark.parametrize("params,shape", [
    ("local_size: 3 alpha: 1.0 beta: 0.75", (2, 4, 2, 3)),
    ("local_size: 5 alpha: 0.5 beta: 0.75 k: 2", (1, 7, 3, 2)),
    ("local_size: 5 alpha: 3 beta: 0.6", (2, 2, 2, 2)),
    ("local_size: 3 alpha: 0.8 beta: 0.75 norm_region: WITHIN_CHANNEL", (2, 2, 4, 3)),
    ("local_size: 5 alpha: 2 beta: 0.5 norm_region: WITHIN_CHANNEL", (1, 2, 3, 5)),
])
def test_gradient(params, shape):
    check_gradient(lrn_spec(params), [rand(*shape)])


def test_float32_and_reshape():
    layer, bottom, top = build_layer(lrn_spec("local_size: 3"), [rand(1, 4, 2, 2)],
                                     dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[0].data.dtype == np.float32
    x = rand(2, 5, 3, 3, seed=4)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    np.testing.assert_allclose(top[0].data, ref_across(x, 3, 1.0, 0.75, 1.0)[0], rtol=1e-5)


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [2, 4, 0])
@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_even_local_size_is_rejected(size, region):
    with pytest.raises(LayerSetupError, match="odd values for local_size"):
        build_layer(lrn_spec("local_size: %d norm_region: %s" % (size, region)),
                    [np.zeros((1, 3, 3, 3))])


def test_bottom_must_be_4d_and_not_in_place():
    with pytest.raises(LayerSetupError, match="4 axes"):
        build_layer(lrn_spec("local_size: 3"), [np.zeros((2, 3))])
    with pytest.raises(LayerSetupError, match="in-place"):
        build_layer(lrn_spec("local_size: 3"), [np.zeros((1, 3, 2, 2))], inplace=True)
    with pytest.raises(LayerSetupError, match="exactly 1"):
        build_layer(lrn_spec("local_size: 3"), [np.zeros((1, 3, 2, 2))] * 2)
