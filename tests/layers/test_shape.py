"""Tests of the shape layers (decaf/layers/shape.py): golden cases from BVLC Caffe, float64
gradient checks, Caffe's shape rules (0 = copy, -1 = infer, axis/num_axes, end_axis, crop
offsets), memory sharing, and setup errors."""
import numpy as np
import pytest

from decaf.blob import Blob
from decaf.errors import LayerSetupError
from decaf.layer import create_layer
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, make_layer_param

TYPES = ["Flatten", "Reshape", "Crop"]


# -- golden cases written by BVLC Caffe ---------------------------------------------------------

@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_covers_every_type():
    seen = {golden.load_case(c)["layer_type"] for c in golden.layer_cases(types=TYPES)}
    assert seen == set(TYPES)


# -- helpers ------------------------------------------------------------------------------------

def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def top_shape(spec, *shapes):
    layer, bottom, top = build_layer(spec, [rand(*s) for s in shapes])
    layer.Forward(bottom, top)
    return top[0].shape


def setup_error(spec, shapes, match):
    with pytest.raises(LayerSetupError, match=match):
        layer, bottom, top = build_layer(spec, [rand(*s) for s in shapes])
        layer.Forward(bottom, top)


def in_place_error(spec, shape):
    b = Blob(shape, dtype=np.float64)
    layer = create_layer(make_layer_param('name: "l" ' + spec))
    with pytest.raises(LayerSetupError, match="in-place"):
        layer.SetUp([b], [b])


# -- Flatten ------------------------------------------------------------------------------------

FLATTEN_CASES = [
    ("", (2, 3, 4, 5), (2, 60)),
    ("flatten_param { axis: 0 }", (2, 3, 4), (24,)),
    ("flatten_param { axis: 2 end_axis: -2 }", (2, 3, 4, 2, 2), (2, 3, 8, 2)),
    ("flatten_param { axis: -3 end_axis: 2 }", (2, 3, 4, 5), (2, 12, 5)),
    ("flatten_param { axis: 1 end_axis: 1 }", (2, 3, 4), (2, 3, 4)),
    ("flatten_param { axis: 1 end_axis: 0 }", (2, 3), (2, 1, 3)),  # count(1, 1) = 1
    ("", (2, 3), (2, 3)),
]


@pytest.mark.parametrize("param,shape,want", FLATTEN_CASES)
def test_flatten(param, shape, want):
    spec = 'type: "Flatten" ' + param
    check_gradient(spec, [rand(*shape)])
    x, dy = rand(*shape), rand(*want, seed=1)
    layer, bottom, top = build_layer(spec, [x])
    layer.Forward(bottom, top)
    assert top[0].shape == want
    np.testing.assert_array_equal(top[0].data, x.reshape(want))
    assert np.shares_memory(top[0].data, bottom[0].data)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy.reshape(shape))


def test_flatten_follows_bottom_reshape():
    layer, bottom, top = build_layer('type: "Flatten"', [rand(2, 3, 4)])
    for shape in [(5, 2, 2), (1, 3, 4), (2, 3, 4), (7, 2, 3)]:
        bottom[0].reshape(shape)
        bottom[0].data[...] = rand(*shape, seed=len(shape))
        layer.Forward(bottom, top)
        np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(shape[0], -1))


@pytest.mark.parametrize("param,shape,match", [
    ("flatten_param { axis: 4 }", (2, 3, 4), "flatten_param.axis 4 is out of range"),
    ("flatten_param { end_axis: -4 }", (2, 3, 4), "end_axis -4 is out of range"),
    ("flatten_param { axis: 2 end_axis: 0 }", (2, 3, 4), "comes before"),
    ("", (4,), "flatten_param.axis 1 is out of range"),  # as Caffe: default axis 1 needs 2-D
])
def test_flatten_errors(param, shape, match):
    setup_error('type: "Flatten" ' + param, [shape], match)


def test_flatten_in_place_is_an_error():
    in_place_error('type: "Flatten"', (2, 3))


# -- Reshape ------------------------------------------------------------------------------------

def reshape_spec(dims, extra=""):
    return 'type: "Reshape" reshape_param { shape { %s } %s }' % (
        " ".join("dim: %d" % d for d in dims), extra)


RESHAPE_CASES = [
    ([0, -1, 2], "", (2, 3, 4, 2), (2, 12, 2)),
    ([-1], "axis: 1 num_axes: 2", (2, 3, 4, 2), (2, 12, 2)),
    ([6, 8], "", (2, 3, 4, 2), (6, 8)),
    ([0, 0, -1], "", (2, 3, 4, 2), (2, 3, 8)),
    ([2, 2], "axis: -2", (2, 3, 4), (2, 3, 2, 2)),           # axis -2: replace the last axis
    ([1, 1], "axis: -1", (2, 3), (2, 3, 1, 1)),              # axis -1: append axes
    ([1], "axis: 0 num_axes: 0", (2, 3), (1, 2, 3)),         # insert a leading axis
    ([-1, 3], "axis: 1 num_axes: 1", (2, 6, 5), (2, 2, 3, 5)),
    ([0], "axis: 1 num_axes: 1", (2, 6, 5), (2, 6, 5)),
    ([], "axis: 1 num_axes: 2", (2, 1, 1), (2,)),            # drop singleton axes
    ([-1], "", (3, 4), (12,)),
]


@pytest.mark.parametrize("dims,extra,shape,want", RESHAPE_CASES)
def test_reshape(dims, extra, shape, want):
    spec = reshape_spec(dims, extra)
    check_gradient(spec, [rand(*shape)])
    x, dy = rand(*shape), rand(*want, seed=1)
    layer, bottom, top = build_layer(spec, [x])
    layer.Forward(bottom, top)
    assert top[0].shape == want
    np.testing.assert_array_equal(top[0].data, x.reshape(want))
    assert np.shares_memory(top[0].data, bottom[0].data)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy.reshape(shape))


def test_reshape_diff_is_shared_after_backward():
    layer, bottom, top = build_layer(reshape_spec([-1]), [rand(2, 3)])
    layer.Forward(bottom, top)
    layer.Backward(top, [True], bottom)
    top[0].diff[...] = np.arange(6)
    np.testing.assert_array_equal(bottom[0].diff, np.arange(6).reshape(2, 3))


def test_reshape_follows_bottom_reshape():
    layer, bottom, top = build_layer(reshape_spec([0, -1]), [rand(2, 3, 4)])
    for shape in [(3, 2, 2), (4, 3, 4), (1, 1, 1), (5, 5, 5)]:
        bottom[0].reshape(shape)
        bottom[0].data[...] = rand(*shape, seed=sum(shape))
        layer.Forward(bottom, top)
        assert top[0].shape == (shape[0], shape[1] * shape[2])
        np.testing.assert_array_equal(top[0].data.ravel(), bottom[0].data.ravel())


@pytest.mark.parametrize("dims,extra,shape,match", [
    ([-1, -1], "", (2, 3), "at most one dim may be inferred"),
    ([-1, 5], "", (2, 3), "not divisible"),
    ([4, 2], "", (2, 3), "output count 8"),
    ([0, 0, 0], "", (2, 3), "no axis 2 to copy"),
    ([-2, 3], "", (2, 3), "dim -2"),
    ([1], "axis: 3", (2, 3), "axis 3 is out of range"),
    ([1], "axis: -4", (2, 3), "axis -4 is out of range"),
    ([1], "axis: 1 num_axes: 2", (2, 3), "beyond the 2 axes"),
    ([1], "num_axes: -2", (2, 3), "num_axes must be >= 0"),
])
def test_reshape_errors(dims, extra, shape, match):
    setup_error(reshape_spec(dims, extra), [shape], match)


def test_reshape_in_place_is_an_error():
    in_place_error(reshape_spec([-1]), (2, 3))


# -- Crop ---------------------------------------------------------------------------------------

CROP_CASES = [
    ("crop_param { axis: 1 offset: 1 }", (2, 4, 5, 5), (2, 2, 3, 4), (0, 1, 1, 1)),
    ("crop_param { axis: 2 offset: 1 offset: 2 }", (2, 3, 7, 6), (2, 3, 4, 3), (0, 0, 1, 2)),
    ("", (2, 3, 5, 4), (1, 1, 2, 3), (0, 0, 0, 0)),                      # default axis 2, offset 0
    ("crop_param { axis: 0 offset: 1 }", (3, 4), (2, 2), (1, 1)),
    ("crop_param { axis: -1 offset: 2 }", (2, 3, 6), (9, 9, 3), (0, 0, 2)),  # ref axes < axis ignored
]


@pytest.mark.parametrize("param,shape,ref,offsets", CROP_CASES)
def test_crop(param, shape, ref, offsets):
    spec = 'type: "Crop" ' + param
    x, r = rand(*shape), rand(*ref, seed=1)
    check_gradient(spec, [x, r])
    layer, bottom, top = build_layer(spec, [x, r])
    layer.Forward(bottom, top)
    sl = tuple(slice(o, o + n) for o, n in zip(offsets, top[0].shape))
    np.testing.assert_array_equal(top[0].data, x[sl])
    dy = rand(*top[0].shape, seed=2)
    top[0].diff[...] = dy
    bottom[1].diff[...] = 9
    layer.Backward(top, [True, False], bottom)
    want = np.zeros_like(x)
    want[sl] = dy
    np.testing.assert_array_equal(bottom[0].diff, want)
    assert (bottom[1].diff == 9).all()
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)


@pytest.mark.parametrize("param,shape,ref,match", [
    ("crop_param { axis: 2 offset: 2 }", (2, 3, 5, 5), (2, 3, 4, 4), "invalid crop parameters"),
    ("", (2, 3, 5, 5), (2, 3, 6, 5), "invalid crop parameters in dimension 2"),
    ("crop_param { axis: 1 offset: 1 offset: 1 }", (2, 3, 5, 5), (2, 2, 2, 2),
     "3 axes from axis 1"),
    ("crop_param { axis: 4 }", (2, 3, 5, 5), (2, 3, 5, 5), "crop_param.axis 4 is out of range"),
    ("", (2, 3, 5, 5), (2, 3, 5), "fewer axes"),
])
def test_crop_errors(param, shape, ref, match):
    setup_error('type: "Crop" ' + param, [shape, ref], match)
