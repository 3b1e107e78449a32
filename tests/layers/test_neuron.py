"""Tests of the neuron layers (decaf/layers/neuron.py): golden cases from BVLC Caffe, float64
gradient checks (also in place), forward/backward against the formulas, edge cases, errors."""
import numpy as np
import pytest

from decaf import backend
from decaf.errors import LayerSetupError
from decaf.proto import caffe_pb2
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward, make_layer_param

TYPES = ["ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "Exp", "Log", "Power", "PReLU",
         "Swish", "Clip", "Threshold", "Dropout"]


# -- golden cases written by BVLC Caffe ---------------------------------------------------------

@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_covers_every_type():
    seen = {golden.load_case(c)["layer_type"] for c in golden.layer_cases(types=TYPES)}
    assert seen == set(TYPES)


# -- helpers ---------------------------------------------------------------------------------

def away_from(shape, kinks=(0.0,), margin=0.05, scale=1.0, seed=0):
    """Random values at least ``margin`` away from every kink (non-differentiable point)."""
    rs = np.random.RandomState(seed)
    x = rs.uniform(-scale, scale, shape)
    for k in kinks:
        close = np.abs(x - k) < margin
        x[close] = k + np.where(x[close] >= k, margin, -margin) * 2
    return x


def run(spec, x, dy, phase=caffe_pb2.TRAIN, inplace=False, dtype=np.float64, params=None):
    """Forward then backward (propagate_down True); returns (top data, bottom diff, layer)."""
    layer, bottom, top = build_layer(spec, [x], phase, inplace=inplace, dtype=dtype,
                                     params=params)
    layer.Forward(bottom, top)
    y = top[0].data.copy()
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    return y, bottom[0].diff.copy(), layer


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


SHAPES = [(2, 3, 4, 5), (3, 7), (5,)]

# (spec, kinks of the input, input scale) for every differentiable layer.
GRAD_SPECS = {
    "relu": ('type: "ReLU"', (0.0,), 1.0),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.2 }', (0.0,), 1.0),
    "relu_steep": ('type: "ReLU" relu_param { negative_slope: 2.5 }', (0.0,), 1.0),
    "relu_negslope": ('type: "ReLU" relu_param { negative_slope: -0.5 }', (0.0,), 1.0),
    "sigmoid": ('type: "Sigmoid"', (), 3.0),
    "tanh": ('type: "TanH"', (), 2.0),
    "absval": ('type: "AbsVal"', (0.0,), 1.0),
    "bnll": ('type: "BNLL"', (), 4.0),
    "elu": ('type: "ELU"', (0.0,), 2.0),
    "elu_alpha": ('type: "ELU" elu_param { alpha: 0.4 }', (0.0,), 2.0),
    "elu_negalpha": ('type: "ELU" elu_param { alpha: -0.7 }', (0.0,), 2.0),
    "exp": ('type: "Exp"', (), 1.0),
    "exp_base": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.3 }', (), 1.0),
    "swish": ('type: "Swish"', (), 3.0),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.7 }', (), 3.0),
    "clip": ('type: "Clip" clip_param { min: -0.4 max: 0.6 }', (-0.4, 0.6), 1.0),
    "power_linear": ('type: "Power" power_param { power: 1 scale: -1.5 shift: 0.5 }', (), 1.0),
    "power_square": ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', (), 1.0),
    "power_cube": ('type: "Power" power_param { power: 3 scale: 0.7 }', (0.0,), 1.0),
    "power_zero": ('type: "Power" power_param { power: 0 scale: 2 }', (), 1.0),
    "power_scale0": ('type: "Power" power_param { power: 3 scale: 0 shift: 2 }', (), 1.0),
    "dropout": ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', (), 1.0),
}

# Layers on positive inputs only (log, fractional powers).
POSITIVE_SPECS = {
    "log": 'type: "Log"',
    "log_base": 'type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }',
    "power_sqrt": 'type: "Power" power_param { power: 0.5 scale: 1.5 shift: 0.2 }',
    "power_frac_noshift": 'type: "Power" power_param { power: -1.3 scale: 2 }',
    "power_general": 'type: "Power" power_param { power: 1.7 scale: 0.8 shift: 0.3 }',
    "power_recip": 'type: "Power" power_param { power: -1 shift: 0.5 }',
}


# -- gradient checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("name", sorted(GRAD_SPECS))
def test_gradient(name, shape, inplace):
    spec, kinks, scale = GRAD_SPECS[name]
    x = away_from(shape, kinks, scale=scale, seed=len(name))
    check_gradient(spec, [x], inplace=inplace)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("name", sorted(POSITIVE_SPECS))
def test_gradient_positive_inputs(name, inplace):
    x = np.random.RandomState(3).uniform(0.2, 2.0, (2, 3, 4))
    check_gradient(POSITIVE_SPECS[name], [x], inplace=inplace)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("spec", [
    'type: "PReLU"',
    'type: "PReLU" prelu_param { channel_shared: true }',
    'type: "PReLU" prelu_param { filler { type: "uniform" min: -0.5 max: 1.5 } }',
])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (2, 3, 2, 2, 2)])
def test_gradient_prelu(spec, shape, inplace):
    x = away_from(shape, seed=7)
    check_gradient(spec, [x], inplace=inplace)


def test_gradient_dropout_test_phase():
    x = away_from((3, 4), seed=1)
    check_gradient('type: "Dropout"', [x], phase=caffe_pb2.TEST)
    check_gradient('type: "Dropout"', [x], phase=caffe_pb2.TEST, inplace=True)


# -- in place gives the same numbers as out of place ----------------------------------------

ALL_SPECS = dict({k: v[0] for k, v in GRAD_SPECS.items()}, **POSITIVE_SPECS,
                 prelu='type: "PReLU" prelu_param { filler { type: "uniform" min: -1 max: 1 } }')


@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_inplace_matches_out_of_place(name):
    positive = name in POSITIVE_SPECS
    rs = np.random.RandomState(5)
    x = rs.uniform(0.2, 2.0, (2, 3, 4)) if positive else away_from((2, 3, 4), (-0.4, 0, 0.6))
    dy = rs.standard_normal(x.shape)
    backend.set_random_seed(11)
    y0, dx0, l0 = run(ALL_SPECS[name], x, dy)
    backend.set_random_seed(11)
    y1, dx1, l1 = run(ALL_SPECS[name], x, dy, inplace=True,
                      params=[b.data for b in l0.blobs] or None)
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-14)
    for b0, b1 in zip(l0.blobs, l1.blobs):
        np.testing.assert_allclose(b1.diff, b0.diff, rtol=1e-12, atol=1e-14)


# -- forward / backward against the formulas ---------------------------------------------------

@pytest.mark.parametrize("slope", [0.0, 0.1, 2.0, -0.3])
def test_relu_formula(slope):
    x = away_from((4, 5))
    dy = np.random.RandomState(1).standard_normal(x.shape)
    y, dx, _ = run('type: "ReLU" relu_param { negative_slope: %r }' % slope, x, dy)
    s = np.float64(np.float32(slope))
    np.testing.assert_allclose(y, np.where(x > 0, x, s * x), rtol=1e-15)
    np.testing.assert_allclose(dx, dy * np.where(x > 0, 1.0, s), rtol=1e-15)


def test_relu_zero_input_gets_slope_gradient():
    # Caffe: bottom_diff = top_diff * ((x > 0) + slope * (x <= 0)), so x == 0 takes the slope.
    _, dx, _ = run('type: "ReLU" relu_param { negative_slope: 0.5 }', np.zeros(3), np.ones(3))
    np.testing.assert_array_equal(dx, 0.5)


def test_sigmoid_tanh_formula():
    x = np.linspace(-30, 30, 41)
    dy = np.random.RandomState(2).standard_normal(x.shape)
    y, dx, _ = run('type: "Sigmoid"', x, dy)
    np.testing.assert_allclose(y, sigmoid(x), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(dx, dy * sigmoid(x) * (1 - sigmoid(x)), rtol=1e-6, atol=1e-15)
    y, dx, _ = run('type: "TanH"', x, dy)
    np.testing.assert_allclose(y, np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(dx, dy * (1 - np.tanh(x) ** 2), rtol=1e-6, atol=1e-15)


def test_sigmoid_extreme_inputs_float32_finite():
    x = np.array([-1e4, -100, 0, 100, 1e4], np.float32)
    y, dx, _ = run('type: "Sigmoid"', x, np.ones(5), dtype=np.float32)
    assert y.dtype == np.float32 and np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_array_equal(y, [0, 0, 0.5, 1, 1])


def test_absval_formula_and_zero():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    dy = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y, dx, _ = run('type: "AbsVal"', x, dy)
    np.testing.assert_array_equal(y, np.abs(x))
    np.testing.assert_array_equal(dx, [-1.0, -2.0, 0.0, 4.0, 5.0])  # sign(0) = 0


def test_bnll_formula_and_threshold():
    x = np.array([-200.0, -60.0, -1.0, 0.0, 1.0, 49.0, 51.0, 200.0])
    dy = np.ones_like(x)
    y, dx, _ = run('type: "BNLL"', x, dy)
    np.testing.assert_allclose(y, np.logaddexp(0, x), rtol=1e-14, atol=1e-300)
    e = np.exp(np.minimum(x, 50.0))  # Caffe clamps the exponent at 50 in backward
    np.testing.assert_allclose(dx, e / (e + 1), rtol=1e-14, atol=1e-300)
    y32, dx32, _ = run('type: "BNLL"', x, dy, dtype=np.float32)
    assert np.isfinite(y32).all() and np.isfinite(dx32).all()
    np.testing.assert_allclose(y32, np.logaddexp(0, x), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("alpha", [1.0, 0.4, -0.5])
def test_elu_formula(alpha):
    x = away_from((3, 4), scale=3)
    dy = np.random.RandomState(4).standard_normal(x.shape)
    y, dx, _ = run('type: "ELU" elu_param { alpha: %r }' % alpha, x, dy)
    a = np.float64(np.float32(alpha))
    want = np.where(x > 0, x, a * (np.exp(x) - 1))
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx, dy * np.where(x > 0, 1, a * np.exp(x)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (2, 0.5, 0.3), (-1, 2, -1), (10, -1, 2)])
def test_exp_formula(base, scale, shift):
    x = np.random.RandomState(6).uniform(-2, 2, (3, 4))
    dy = np.random.RandomState(7).standard_normal(x.shape)
    spec = 'type: "Exp" exp_param { base: %r scale: %r shift: %r }' % (base, scale, shift)
    y, dx, _ = run(spec, x, dy)
    b, s, t = (np.float64(np.float32(v)) for v in (base, scale, shift))
    b = np.e if base == -1 else b
    want = b ** (t + s * x)
    np.testing.assert_allclose(y, want, rtol=1e-13)
    np.testing.assert_allclose(dx, dy * want * np.log(b) * s, rtol=1e-13)


@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (10, 2, 0.5), (2, 0.5, 1)])
def test_log_formula(base, scale, shift):
    x = np.random.RandomState(8).uniform(0.1, 3, (3, 4))
    dy = np.random.RandomState(9).standard_normal(x.shape)
    spec = 'type: "Log" log_param { base: %r scale: %r shift: %r }' % (base, scale, shift)
    y, dx, _ = run(spec, x, dy)
    b, s, t = (np.float64(np.float32(v)) for v in (base, scale, shift))
    lb = 1.0 if base == -1 else np.log(b)
    np.testing.assert_allclose(y, np.log(t + s * x) / lb, rtol=1e-13)
    np.testing.assert_allclose(dx, dy * s / (lb * (t + s * x)), rtol=1e-13)


@pytest.mark.parametrize("power,scale,shift", [
    (1, 1, 0), (1, -2, 0.5), (2, 0.5, 1), (2, 1.5, 0), (3, 0.7, 0), (0.5, 1.5, 0.2),
    (-1.5, 2, 0.1), (2.5, 1, 0)])
def test_power_formula(power, scale, shift):
    x = np.random.RandomState(10).uniform(0.1, 2, (3, 4))
    dy = np.random.RandomState(11).standard_normal(x.shape)
    spec = 'type: "Power" power_param { power: %r scale: %r shift: %r }' % (power, scale, shift)
    y, dx, _ = run(spec, x, dy)
    p, s, t = (np.float64(np.float32(v)) for v in (power, scale, shift))
    np.testing.assert_allclose(y, (t + s * x) ** p, rtol=1e-13)
    np.testing.assert_allclose(dx, dy * p * s * (t + s * x) ** (p - 1), rtol=1e-12)


def test_power_input_ignored_when_power_or_scale_is_zero():
    x = np.random.RandomState(1).standard_normal((2, 3))
    y, dx, _ = run('type: "Power" power_param { power: 0 scale: 3 shift: -2 }', x, np.ones(x.shape))
    np.testing.assert_array_equal(y, 1.0)  # x^0 = 1, even for a negative shift
    np.testing.assert_array_equal(dx, 0.0)
    y, dx, _ = run('type: "Power" power_param { power: 3 scale: 0 shift: -2 }', x, np.ones(x.shape))
    np.testing.assert_array_equal(y, -8.0)
    np.testing.assert_array_equal(dx, 0.0)


def test_power_default_is_identity():
    x = np.random.RandomState(1).standard_normal((2, 3))
    y, dx, _ = run('type: "Power"', x, 2 * np.ones(x.shape))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, 2.0)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_formula(shared):
    x = away_from((2, 3, 2, 2))
    dy = np.random.RandomState(12).standard_normal(x.shape)
    slopes = np.array(0.3) if shared else np.array([0.1, -0.2, 0.5])
    spec = 'type: "PReLU" prelu_param { channel_shared: %s }' % ("true" if shared else "false")
    y, dx, layer = run(spec, x, dy, params=[slopes])
    a = slopes if shared else slopes.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, np.where(x > 0, x, a * x), rtol=1e-15)
    np.testing.assert_allclose(dx, dy * np.where(x > 0, 1, a), rtol=1e-15)
    da = dy * np.where(x > 0, 0, x)
    want = da.sum() if shared else da.sum(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].diff, want, rtol=1e-13)


def test_prelu_defaults_and_param_diff_accumulates():
    x = away_from((2, 4, 3))
    layer, bottom, top = build_layer('type: "PReLU"', [x])
    assert layer.blobs[0].shape == (4,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.25)  # default constant 0.25 filler
    layer.Forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.Backward(top, [True], bottom)
    once = layer.blobs[0].diff.copy()
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)
    shared, _, _ = build_layer('type: "PReLU" prelu_param { channel_shared: true }', [x])
    assert shared.blobs[0].shape == ()


@pytest.mark.parametrize("beta", [1.0, 1.7, -0.5])
def test_swish_formula(beta):
    x = np.random.RandomState(13).uniform(-6, 6, (3, 5))
    dy = np.random.RandomState(14).standard_normal(x.shape)
    y, dx, _ = run('type: "Swish" swish_param { beta: %r }' % beta, x, dy)
    b = np.float64(np.float32(beta))
    s = sigmoid(b * x)
    np.testing.assert_allclose(y, x * s, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, dy * (s + b * x * s * (1 - s)), rtol=1e-12, atol=1e-15)


def test_clip_formula_bounds_inclusive():
    x = np.array([-2.0, -0.5, -0.25, 0.0, 0.75, 1.0, 3.0])
    dy = np.arange(1.0, 8.0)
    y, dx, _ = run('type: "Clip" clip_param { min: -0.5 max: 0.75 }', x, dy)
    np.testing.assert_array_equal(y, np.clip(x, -0.5, 0.75))
    # the gradient passes where min <= x <= max, bounds included
    np.testing.assert_array_equal(dx, [0, 2, 3, 4, 5, 0, 0])


def test_threshold_forward_and_no_backward():
    x = np.array([-1.0, 0.2, 0.3, 0.30001, 5.0])
    spec = 'type: "Threshold" threshold_param { threshold: 0.3 }'
    _, (y,) = forward(spec, [x])
    t = np.float64(np.float32(0.3))
    np.testing.assert_array_equal(y, (x > t).astype(float))
    _, (y,) = forward('type: "Threshold"', [x], inplace=True)
    np.testing.assert_array_equal(y, (x > 0).astype(float))
    layer, bottom, top = build_layer(spec, [x])
    layer.Forward(bottom, top)
    layer.Backward(top, [False], bottom)  # nothing asked: fine
    with pytest.raises(NotImplementedError, match="no backward"):
        layer.Backward(top, [True], bottom)


# -- Dropout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.8])
def test_dropout_train_statistics(ratio):
    x = np.ones((200, 500), np.float32)
    y, dx, _ = run('type: "Dropout" dropout_param { dropout_ratio: %r }' % ratio, x,
                   np.ones(x.shape), dtype=np.float32)
    r = float(np.float32(ratio))
    kept = y != 0
    frac = kept.mean()
    n = x.size
    assert abs(frac - (1 - r)) < 5 * np.sqrt(r * (1 - r) / n)
    np.testing.assert_allclose(y[kept], 1 / (1 - r), rtol=1e-6)
    # backward scales by the same mask
    np.testing.assert_array_equal(dx, y)
    assert abs(y.mean() - 1.0) < 0.02  # expectation preserved


def test_dropout_default_ratio_and_scale():
    x = np.random.RandomState(0).uniform(1, 2, (50, 40))
    y, _, _ = run('type: "Dropout"', x, np.zeros(x.shape))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-15)
    assert 0.4 < kept.mean() < 0.6


def test_dropout_same_seed_same_mask_and_new_mask_each_forward():
    spec = 'type: "Dropout"'
    x = np.ones((30, 30))
    backend.set_random_seed(123)
    layer, bottom, top = build_layer(spec, [x])
    layer.Forward(bottom, top)
    first = top[0].data.copy()
    layer.Forward(bottom, top)
    second = top[0].data.copy()
    assert not np.array_equal(first, second)  # a fresh mask per forward
    backend.set_random_seed(123)
    layer.Forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, first)
    backend.set_random_seed(124)
    layer.Forward(bottom, top)
    assert not np.array_equal(top[0].data, first)


def test_dropout_test_phase_identity_and_inplace():
    x = np.random.RandomState(0).standard_normal((4, 5))
    dy = np.random.RandomState(1).standard_normal((4, 5))
    for inplace in (False, True):
        y, dx, _ = run('type: "Dropout" dropout_param { dropout_ratio: 0.9 }', x, dy,
                       phase=caffe_pb2.TEST, inplace=inplace)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(dx, dy)


def test_dropout_ratio_zero_is_identity_in_train():
    x = np.random.RandomState(0).standard_normal((4, 5))
    y, _, _ = run('type: "Dropout" dropout_param { dropout_ratio: 0 }', x, np.ones(x.shape))
    np.testing.assert_array_equal(y, x)


# -- dtype, shapes, reshape --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL_SPECS))
def test_float32_stays_float32(name):
    x = np.random.RandomState(0).uniform(0.2, 2.0, (2, 3, 4)).astype(np.float32)
    y, dx, layer = run(ALL_SPECS[name], x, np.ones(x.shape), dtype=np.float32)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert all(b.dtype == np.float32 for b in layer.blobs)
    assert np.isfinite(y).all() and np.isfinite(dx).all()


def test_reshape_between_forwards():
    layer, bottom, top = build_layer('type: "ELU"', [away_from((2, 3))])
    layer.Forward(bottom, top)
    x = away_from((4, 5, 6), seed=3)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    assert top[0].shape == x.shape
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, np.expm1(x)), rtol=1e-14)


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,match", [
    ('type: "Exp" exp_param { base: -2 }', "base must be strictly positive"),
    ('type: "Exp" exp_param { base: 0 }', "base must be strictly positive"),
    ('type: "Log" log_param { base: -3 }', "base must be strictly positive"),
    ('type: "Log" log_param { base: 1 }', "must not be 1"),
    ('type: "Clip" clip_param { min: -1 }', "min and clip_param.max are required"),
    ('type: "Clip"', "are required"),
    ('type: "Clip" clip_param { min: 1 max: -1 }', "must not exceed"),
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', r"in \[0, 1\)"),
    ('type: "Dropout" dropout_param { dropout_ratio: -0.1 }', r"in \[0, 1\)"),
])
def test_bad_parameters(spec, match):
    with pytest.raises(LayerSetupError, match=match):
        build_layer(spec, [np.ones((2, 3))])


@pytest.mark.parametrize("layer_type", TYPES)
def test_wrong_blob_counts(layer_type):
    spec = 'type: "%s" clip_param { min: 0 max: 1 }' % layer_type
    with pytest.raises(LayerSetupError, match="exactly 1 bottom"):
        build_layer(spec, [np.ones((2, 3)), np.ones((2, 3))])
    with pytest.raises(LayerSetupError, match="exactly 1 top"):
        build_layer(spec, [np.ones((2, 3))], num_tops=2)


def test_prelu_errors():
    with pytest.raises(LayerSetupError, match="at least 2 axes"):
        build_layer('type: "PReLU"', [np.ones(5)])
    param = make_layer_param('name: "p" type: "PReLU"')
    param.blobs.add().shape.dim.extend([4])
    param.blobs[0].data.extend([0.1] * 4)
    with pytest.raises(LayerSetupError, match="inconsistent with the channel count"):
        build_layer(param, [np.ones((2, 3, 2))])
    param.blobs.add().CopyFrom(param.blobs[0])
    with pytest.raises(LayerSetupError, match="expects 1 parameter blob"):
        build_layer(param, [np.ones((2, 4, 2))])
    shared = make_layer_param('name: "p" type: "PReLU" prelu_param { channel_shared: true }')
    shared.blobs.add().shape.dim.extend([3])
    shared.blobs[0].data.extend([0.1] * 3)
    with pytest.raises(LayerSetupError, match="channel_shared"):
        build_layer(shared, [np.ones((2, 3, 2))])


def test_prelu_uses_loaded_slopes():
    param = make_layer_param('name: "p" type: "PReLU"')
    param.blobs.add().shape.dim.extend([3])
    param.blobs[0].data.extend([0.5, -1.0, 2.0])
    x = -np.ones((1, 3, 2))
    _, (y,) = forward(param, [x])
    np.testing.assert_array_equal(y[0, :, 0], [-0.5, 1.0, -2.0])


def test_prelu_channel_change_at_reshape_is_an_error():
    layer, bottom, top = build_layer('type: "PReLU"', [np.ones((2, 3, 2))])
    bottom[0].reshape((2, 4, 2))
    with pytest.raises(LayerSetupError, match="inconsistent"):
        layer.Forward(bottom, top)
