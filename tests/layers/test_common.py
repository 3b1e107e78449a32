"""Tests of the common layers (decaf/layers/common.py): golden cases from BVLC Caffe, float64
gradient checks, forward/backward against Caffe's formulas (written here in plain numpy),
Caffe's tie rules and memory sharing, edge cases and setup errors."""
import numpy as np
import pytest

from decaf.blob import Blob
from decaf.errors import LayerSetupError
from decaf.layer import create_layer
from decaf.layers.common import FilterLayer
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, make_layer_param

TYPES = ["Split", "Silence", "Concat", "Slice", "Eltwise", "Tile", "Reduction", "ArgMax",
         "BatchReindex", "Filter", "Parameter"]


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


def run(spec, bottoms, top_diffs=None, propagate_down=None, num_tops=None):
    """Forward, then (with top_diffs) backward; returns (top data, bottom diffs, layer, top)."""
    layer, bottom, top = build_layer(spec, bottoms, num_tops=num_tops)
    layer.Forward(bottom, top)
    ys = [t.data.copy() for t in top]
    dxs = None
    if top_diffs is not None:
        for t, d in zip(top, top_diffs):
            t.diff[...] = d
        pd = propagate_down or [True] * len(bottom)
        layer.Backward(top, pd, bottom)
        dxs = [b.diff.copy() for b in bottom]
    return ys, dxs, layer, top


def setup_error(spec, bottoms, match, num_tops=None):
    with pytest.raises(LayerSetupError, match=match):
        layer, bottom, top = build_layer(spec, bottoms, num_tops=num_tops)
        layer.Forward(bottom, top)


# -- Split --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ntop", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 4), (5,)])
def test_split_gradient(ntop, shape):
    check_gradient('type: "Split"', [rand(*shape)], num_tops=ntop)


def test_split_shares_data_and_sums_diffs():
    x = rand(2, 3)
    dys = [rand(2, 3, seed=s) for s in (1, 2, 3)]
    ys, dxs, layer, top = run('type: "Split"', [x], dys, num_tops=3)
    for y in ys:
        np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(dxs[0], dys[0] + dys[1] + dys[2])
    assert all(np.shares_memory(t.data, top[0].data) for t in top)


def test_split_no_propagate_down_leaves_bottom_diff():
    layer, bottom, top = build_layer('type: "Split"', [rand(3)], num_tops=2)
    bottom[0].diff[...] = 7
    layer.Backward(top, [False], bottom)
    assert (bottom[0].diff == 7).all()


def test_split_follows_bottom_reshape():
    layer, bottom, top = build_layer('type: "Split"', [rand(2, 3)], num_tops=2)
    bottom[0].reshape(4, 5)
    bottom[0].data[...] = rand(4, 5, seed=3)
    layer.Forward(bottom, top)
    for t in top:
        np.testing.assert_array_equal(t.data, bottom[0].data)


def test_split_follows_new_bottom_memory_of_the_same_shape():
    # the reshape is skipped when nothing changed; a bottom that now views other memory (as
    # after a Flatten's share_data) is a change, though its shape is the same
    layer, bottom, top = build_layer('type: "Split"', [rand(2, 3)], num_tops=2)
    layer.Forward(bottom, top)
    other = Blob((2, 3), dtype=np.float64)
    other.data[...] = rand(2, 3, seed=5)
    bottom[0].share_data(other)
    layer.Forward(bottom, top)
    for t in top:
        np.testing.assert_array_equal(t.data, other.data)
        t.data[0, 0] = 7.0
        assert other.data[0, 0] == 7.0


def test_split_in_place_is_an_error():
    b = Blob((2, 3), dtype=np.float64)
    layer = create_layer(make_layer_param('name: "s" type: "Split"'))
    with pytest.raises(LayerSetupError, match="in-place"):
        layer.SetUp([b], [b])


# -- Silence ------------------------------------------------------------------------------------

@pytest.mark.parametrize("nbottom", [1, 2])
def test_silence_gradient(nbottom):
    check_gradient('type: "Silence"', [rand(2, 3, seed=s) for s in range(nbottom)], num_tops=0)


def test_silence_zeroes_only_propagated_diffs():
    layer, bottom, top = build_layer('type: "Silence"', [rand(2, 3), rand(4)], num_tops=0)
    layer.Forward(bottom, top)
    for b in bottom:
        b.diff[...] = 5
    layer.Backward(top, [True, False], bottom)
    assert (bottom[0].diff == 0).all() and (bottom[1].diff == 5).all()


def test_silence_needs_a_bottom_and_no_top():
    setup_error('type: "Silence"', [], "at least 1 bottom", num_tops=0)
    setup_error('type: "Silence"', [rand(2)], "exactly 0 top", num_tops=1)


# -- Concat -------------------------------------------------------------------------------------

CONCAT_CASES = [
    ("", [(2, 2, 3), (2, 4, 3)], 1),
    ("concat_param { axis: 0 }", [(1, 3), (2, 3), (3, 3)], 0),
    ("concat_param { axis: -1 }", [(2, 3, 1), (2, 3, 2)], 2),
    ("concat_param { concat_dim: 2 }", [(2, 1, 2), (2, 1, 3)], 2),
]


@pytest.mark.parametrize("param,shapes,axis", CONCAT_CASES)
def test_concat_gradient(param, shapes, axis):
    check_gradient('type: "Concat" ' + param, [rand(*s, seed=i) for i, s in enumerate(shapes)])


@pytest.mark.parametrize("param,shapes,axis", CONCAT_CASES)
def test_concat_forward_backward(param, shapes, axis):
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    want = np.concatenate(xs, axis=axis)
    dy = rand(*want.shape, seed=9)
    ys, dxs, _, _ = run('type: "Concat" ' + param, xs, [dy])
    np.testing.assert_array_equal(ys[0], want)
    splits = np.cumsum([s[axis] for s in shapes])[:-1]
    for dx, part in zip(dxs, np.split(dy, splits, axis=axis)):
        np.testing.assert_array_equal(dx, part)


def test_concat_single_bottom_shares_memory():
    x = rand(2, 3)
    check_gradient('type: "Concat"', [x])
    layer, bottom, top = build_layer('type: "Concat"', [x])
    layer.Forward(bottom, top)
    assert np.shares_memory(top[0].data, bottom[0].data)
    np.testing.assert_array_equal(top[0].data, x)


@pytest.mark.parametrize("param,shapes,match", [
    ("", [(2, 2, 3), (2, 4, 4)], "same shape except at concat axis"),
    ("concat_param { axis: 0 }", [(2, 3), (2, 4)], "same shape except"),
    ("", [(2, 2, 3), (2, 2)], "same number of axes"),
    ("concat_param { axis: 3 }", [(2, 2, 3), (2, 2, 3)], "out of range"),
    ("concat_param { axis: -4 }", [(2, 2, 3), (2, 2, 3)], "out of range"),
    ("concat_param { concat_dim: 3 }", [(2, 2, 3), (2, 2, 3)], "concat_dim 3 is out of range"),
    ("concat_param { axis: 1 concat_dim: 1 }", [(2, 2), (2, 2)], "not both"),
])
def test_concat_errors(param, shapes, match):
    setup_error('type: "Concat" ' + param, [rand(*s) for s in shapes], match)


# -- Slice --------------------------------------------------------------------------------------

SLICE_CASES = [
    ("slice_param { slice_point: 1 slice_point: 3 }", (2, 5, 2), 1, [1, 3]),
    ("slice_param { axis: 0 }", (4, 3), 0, 2),
    ("slice_param { axis: -1 }", (2, 3, 6), 2, 3),
    ("slice_param { slice_dim: 0 slice_point: 2 }", (3, 2), 0, [2]),
]


def _ntop(points):
    return points if isinstance(points, int) else len(points) + 1


@pytest.mark.parametrize("param,shape,axis,points", SLICE_CASES)
def test_slice_gradient(param, shape, axis, points):
    check_gradient('type: "Slice" ' + param, [rand(*shape)], num_tops=_ntop(points))


@pytest.mark.parametrize("param,shape,axis,points", SLICE_CASES)
def test_slice_forward_backward(param, shape, axis, points):
    x = rand(*shape)
    want = np.split(x, points, axis=axis)
    dys = [rand(*w.shape, seed=i + 1) for i, w in enumerate(want)]
    ys, dxs, _, _ = run('type: "Slice" ' + param, [x], dys, num_tops=_ntop(points))
    for y, w in zip(ys, want):
        np.testing.assert_array_equal(y, w)
    np.testing.assert_array_equal(dxs[0], np.concatenate(dys, axis=axis))


def test_slice_single_top_shares_memory():
    check_gradient('type: "Slice"', [rand(2, 3)], num_tops=1)
    layer, bottom, top = build_layer('type: "Slice"', [rand(2, 3)], num_tops=1)
    assert np.shares_memory(top[0].data, bottom[0].data)


def test_slice_point_at_axis_end_gives_an_empty_top():
    # Caffe only requires strictly increasing points; the last part may be empty.
    ys, dxs, _, _ = run('type: "Slice" slice_param { slice_point: 3 }', [rand(2, 3)],
                        [rand(2, 3), np.zeros((2, 0))], num_tops=2)
    assert ys[1].shape == (2, 0)


@pytest.mark.parametrize("param,shape,ntop,match", [
    ("slice_param { slice_point: 3 slice_point: 1 }", (2, 5), 3, "strictly increasing"),
    ("slice_param { slice_point: 0 }", (2, 5), 2, "strictly increasing"),
    ("slice_param { slice_point: 6 }", (2, 5), 2, "beyond the slice axis size 5"),
    ("slice_param { slice_point: 2 }", (2, 5), 3, "need one less than the tops"),
    ("", (2, 5), 2, "evenly divide"),
    ("slice_param { axis: 2 }", (2, 5), 2, "out of range"),
    ("slice_param { slice_dim: 2 }", (2, 5), 2, "slice_dim 2 is out of range"),
    ("slice_param { axis: 1 slice_dim: 1 }", (2, 4), 2, "not both"),
])
def test_slice_errors(param, shape, ntop, match):
    setup_error('type: "Slice" ' + param, [rand(*shape)], match, num_tops=ntop)


# -- Eltwise ------------------------------------------------------------------------------------

def distinct(n, shape, seed=0):
    """n arrays whose values are all distinct and at least 0.1 apart (no MAX ties)."""
    size = int(np.prod(shape))
    vals = np.random.RandomState(seed).permutation(n * size) * 0.1 - 0.05 * n * size
    return [v.reshape(shape) for v in np.split(vals, n)]


@pytest.mark.parametrize("param,n", [
    ("operation: SUM", 2),
    ("operation: SUM coeff: 1.5 coeff: -0.7 coeff: 0.3", 3),
    ("operation: PROD", 2),
    ("operation: PROD", 3),
    ("operation: PROD stable_prod_grad: false", 3),
    ("operation: MAX", 2),
    ("operation: MAX", 3),
])
def test_eltwise_gradient(param, n):
    if "MAX" in param:
        xs = distinct(n, (2, 3, 2))
    else:
        xs = [rand(2, 3, 2, seed=i) + (1.5 if i % 2 else -1.5) for i in range(n)]
    check_gradient('type: "Eltwise" eltwise_param { %s }' % param, xs)


def test_eltwise_sum_and_prod_formulas():
    a, b, c = (rand(3, 4, seed=s) for s in range(3))
    dy = rand(3, 4, seed=7)
    ys, dxs, _, _ = run('type: "Eltwise"', [a, b, c], [dy])  # default: SUM, coeff 1
    np.testing.assert_allclose(ys[0], a + b + c)
    for dx in dxs:
        np.testing.assert_array_equal(dx, dy)
    spec = 'type: "Eltwise" eltwise_param { coeff: 2 coeff: -1 coeff: 0.5 }'
    ys, dxs, _, _ = run(spec, [a, b, c], [dy])
    np.testing.assert_allclose(ys[0], 2 * a - b + 0.5 * c)
    np.testing.assert_allclose(dxs[1], -dy)
    ys, dxs, _, _ = run('type: "Eltwise" eltwise_param { operation: PROD }', [a, b, c], [dy])
    np.testing.assert_allclose(ys[0], a * b * c)
    np.testing.assert_allclose(dxs[0], dy * b * c)
    spec = 'type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }'
    ys, dxs, _, _ = run(spec, [a, b, c], [dy])
    np.testing.assert_allclose(dxs[2], dy * ys[0] / c)


def test_eltwise_prod_stable_grad_handles_zero_bottoms():
    a, b = np.array([0.0, 2.0]), np.array([3.0, 0.0])
    ys, dxs, _, _ = run('type: "Eltwise" eltwise_param { operation: PROD }', [a, b], [[1, 1]])
    np.testing.assert_array_equal(dxs[0], b)
    np.testing.assert_array_equal(dxs[1], a)


def test_eltwise_max_tie_rules():
    # Caffe: bottom 1 wins a tie with bottom 0 (a > b ? a : b); a later bottom must be strictly
    # greater than the running max, so bottom 2 never wins a tie.
    a = np.array([1.0, 1.0, 3.0, 0.0, 5.0])
    b = np.array([1.0, 2.0, 1.0, 0.0, 4.0])
    c = np.array([1.0, 2.0, 3.0, 0.5, 5.0])
    dy = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    ys, dxs, _, _ = run('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c], [dy])
    np.testing.assert_array_equal(ys[0], [1, 2, 3, 0.5, 5])
    np.testing.assert_array_equal(dxs[0], [0, 0, 30, 0, 50])
    np.testing.assert_array_equal(dxs[1], [10, 20, 0, 0, 0])
    np.testing.assert_array_equal(dxs[2], [0, 0, 0, 40, 0])


@pytest.mark.parametrize("param,shapes,match", [
    ("coeff: 1 coeff: 2", [(2, 3)] * 3, "one coefficient per bottom"),
    ("operation: PROD coeff: 1 coeff: 2", [(2, 3)] * 2, "only takes coefficients for SUM"),
    ("operation: MAX", [(2, 3), (3, 2)], "same shape"),
    ("", [(2, 3)], "at least 2 bottom"),
])
def test_eltwise_errors(param, shapes, match):
    setup_error('type: "Eltwise" eltwise_param { %s }' % param, [rand(*s) for s in shapes],
                match)


# -- Tile ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis,tiles,shape", [(1, 3, (2, 3, 2)), (0, 2, (2, 3)), (-1, 4, (2, 3)),
                                              (1, 1, (2, 2))])
def test_tile_gradient_and_formula(axis, tiles, shape):
    spec = 'type: "Tile" tile_param { axis: %d tiles: %d }' % (axis, tiles)
    check_gradient(spec, [rand(*shape)])
    x = rand(*shape)
    want = np.concatenate([x] * tiles, axis=axis)
    dy = rand(*want.shape, seed=4)
    ys, dxs, _, _ = run(spec, [x], [dy])
    np.testing.assert_array_equal(ys[0], want)
    np.testing.assert_allclose(dxs[0], sum(np.split(dy, tiles, axis=axis)))


def test_tile_default_axis_is_1():
    ys, _, _, _ = run('type: "Tile" tile_param { tiles: 2 }', [rand(2, 3, 4)])
    assert ys[0].shape == (2, 6, 4)


@pytest.mark.parametrize("param,match", [("tile_param { tiles: 0 }", "must be positive"),
                                         ("", "must be positive"),
                                         ("tile_param { tiles: 2 axis: 3 }", "out of range")])
def test_tile_errors(param, match):
    setup_error('type: "Tile" ' + param, [rand(2, 3, 4)], match)


# -- Reduction ----------------------------------------------------------------------------------

def reduce_ref(x, op, axis, coeff):
    r = x.reshape(x.shape[:axis] + (-1,))
    f = {"SUM": r.sum(-1), "ASUM": np.abs(r).sum(-1), "SUMSQ": (r * r).sum(-1),
         "MEAN": r.mean(-1)}[op]
    return coeff * f


def reduce_grad_ref(x, op, axis, coeff, dy):
    d = np.asarray(dy).reshape(x.shape[:axis] + (1,) * (x.ndim - axis)) * coeff
    n = int(np.prod(x.shape[axis:]))
    return {"SUM": d + 0 * x, "ASUM": d * np.sign(x), "SUMSQ": 2 * d * x, "MEAN": d / n + 0 * x}[op]


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, -2.0), (2, 0.5), (-1, 1.0)])
def test_reduction(op, axis, coeff):
    spec = 'type: "Reduction" reduction_param { operation: %s axis: %d coeff: %g }' % (
        op, axis, coeff)
    x = rand(2, 3, 4) + np.where(rand(2, 3, 4, seed=5) > 0, 0.2, -0.2)  # away from |x| kink
    check_gradient(spec, [x])
    ax = axis % 3
    dy = rand(*x.shape[:ax], seed=3) if ax else np.float64(0.7)
    ys, dxs, _, _ = run(spec, [x], [dy])
    assert ys[0].shape == x.shape[:ax]
    np.testing.assert_allclose(ys[0], reduce_ref(x, op, ax, coeff), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs[0], reduce_grad_ref(x, op, ax, coeff, dy), rtol=1e-12)


def test_reduction_defaults_sum_all_to_scalar():
    x = rand(2, 3)
    ys, _, _, _ = run('type: "Reduction"', [x])
    assert ys[0].shape == ()
    np.testing.assert_allclose(ys[0], x.sum())


def test_reduction_asum_gradient_is_zero_at_zero():
    spec = 'type: "Reduction" reduction_param { operation: ASUM axis: 1 }'
    _, dxs, _, _ = run(spec, [np.array([[0.0, -2.0, 3.0]])], [[2.0]])
    np.testing.assert_array_equal(dxs[0], [[0, -2, 2]])


@pytest.mark.parametrize("axis", [3, -4])
def test_reduction_axis_out_of_range(axis):
    setup_error('type: "Reduction" reduction_param { axis: %d }' % axis, [rand(2, 3, 4)],
                "out of range")


# -- ArgMax -------------------------------------------------------------------------------------

def argmax_ref(x, k):
    """Caffe's order along the last axis: sort (value, index) pairs descending."""
    out = np.empty(x.shape[:-1] + (k,), dtype=np.int64)
    for pos in np.ndindex(*x.shape[:-1]):
        pairs = sorted(((x[pos][j], j) for j in range(x.shape[-1])), reverse=True)
        out[pos] = [j for _, j in pairs[:k]]
    return out


def test_argmax_ties_rank_the_larger_index_first():
    x = np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0]])
    ys, _, _, _ = run('type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }', [x])
    assert ys[0].shape == (1, 2, 4)
    np.testing.assert_array_equal(ys[0][0, 0], [4, 2, 1, 5])
    np.testing.assert_array_equal(ys[0][0, 1], [3, 3, 3, 2])
    ys, _, _, _ = run('type: "ArgMax"', [x])
    np.testing.assert_array_equal(ys[0].ravel(), [4])


@pytest.mark.parametrize("k", [1, 3])
def test_argmax_no_axis_over_each_item(k):
    x = np.round(rand(3, 2, 2, 2) * 2)  # integers: many ties
    ys, _, _, _ = run('type: "ArgMax" argmax_param { top_k: %d }' % k, [x])
    assert ys[0].shape == (3, 1, k, 1)
    np.testing.assert_array_equal(ys[0].reshape(3, k), argmax_ref(x.reshape(3, -1), k))
    ys, _, _, _ = run('type: "ArgMax" argmax_param { top_k: %d out_max_val: true }' % k, [x])
    assert ys[0].shape == (3, 2, k, 1)
    flat = x.reshape(3, -1)
    idx = argmax_ref(flat, k)
    np.testing.assert_array_equal(ys[0][:, 0].reshape(3, k), idx)
    np.testing.assert_array_equal(ys[0][:, 1].reshape(3, k), np.take_along_axis(flat, idx, 1))


def test_argmax_no_axis_shapes():
    for shape, want in [((4,), (4, 1, 1)), ((4, 5), (4, 1, 1)), ((2, 3, 1, 1, 2), (2, 1, 1, 1, 1))]:
        ys, _, _, _ = run('type: "ArgMax"', [rand(*shape)])
        assert ys[0].shape == want


@pytest.mark.parametrize("axis,k,maxval", [(1, 2, False), (2, 1, True), (-1, 3, False),
                                           (0, 2, True)])
def test_argmax_along_axis(axis, k, maxval):
    x = np.round(rand(3, 4, 5) * 2)
    spec = 'type: "ArgMax" argmax_param { axis: %d top_k: %d out_max_val: %s }' % (
        axis, k, "true" if maxval else "false")
    ys, _, _, _ = run(spec, [x])
    moved = np.moveaxis(x, axis, -1)
    idx = argmax_ref(moved, k)
    want = np.take_along_axis(moved, idx, -1) if maxval else idx
    np.testing.assert_array_equal(ys[0], np.moveaxis(want, -1, axis))


def test_argmax_has_no_backward():
    layer, bottom, top = build_layer('type: "ArgMax"', [rand(2, 3)])
    with pytest.raises(NotImplementedError):
        layer.Backward(top, [True], bottom)


@pytest.mark.parametrize("param,shape,match", [
    ("argmax_param { top_k: 7 }", (2, 2, 3), "top_k 7 must be at most the size 6"),
    ("argmax_param { top_k: 4 axis: 1 }", (2, 3), "top_k 4 must be at most the size 3"),
    ("argmax_param { top_k: 0 }", (2, 3), "top_k must not be less than 1"),
    ("argmax_param { axis: 2 }", (2, 3), "out of range"),
])
def test_argmax_errors(param, shape, match):
    setup_error('type: "ArgMax" ' + param, [rand(*shape)], match)


# -- BatchReindex -------------------------------------------------------------------------------

@pytest.mark.parametrize("idx", [[3, 0, 0, 2, 3, 3], [1.0], [0, 1, 2, 3]])
def test_batch_reindex_gradient(idx):
    check_gradient('type: "BatchReindex"', [rand(4, 3, 2), np.array(idx, float)])


def test_batch_reindex_formula():
    x = rand(4, 3)
    idx = np.array([2.9, 0.0, 2.0, 3.5])  # static_cast<int>: 2, 0, 2, 3
    dy = rand(4, 3, seed=2)
    ys, dxs, layer, _ = run('type: "BatchReindex"', [x, idx], [dy], propagate_down=[True, False])
    np.testing.assert_array_equal(ys[0], x[[2, 0, 2, 3]])
    want = np.zeros_like(x)
    want[2] = dy[0] + dy[2]
    want[0], want[3] = dy[1], dy[3]
    np.testing.assert_allclose(dxs[0], want)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


def test_batch_reindex_empty_index():
    ys, dxs, _, _ = run('type: "BatchReindex"', [rand(3, 2), np.zeros(0)], [np.zeros((0, 2))],
                        propagate_down=[True, False])
    assert ys[0].shape == (0, 2) and (dxs[0] == 0).all()


@pytest.mark.parametrize("idx,match", [([0, 4], r"outside the batch \[0, 4\)"),
                                       ([-0.5, 1], "outside the batch"),
                                       ([np.nan], "outside the batch")])
def test_batch_reindex_bad_index_values(idx, match):
    setup_error('type: "BatchReindex"', [rand(4, 2), np.array(idx)], match)


def test_batch_reindex_errors():
    setup_error('type: "BatchReindex"', [rand(4, 2), np.zeros((2, 1))], "must be 1-D")
    layer, bottom, top = build_layer('type: "BatchReindex"', [rand(4, 2), np.zeros(2)])
    layer.Forward(bottom, top)
    with pytest.raises(LayerSetupError, match="index bottom"):
        layer.Backward(top, [True, True], bottom)


# -- Filter -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sel", [[1, 0, 1, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]])
def test_filter_gradient(sel, monkeypatch):
    # The checker sizes its top weights right after SetUp, where Caffe's first Reshape keeps
    # every item; let SetUp's reshape read the selector already (same forward/backward code).
    setup = FilterLayer.setup

    def setup_selecting(self, bottom, top):
        setup(self, bottom, top)
        self._first_reshape = False
    monkeypatch.setattr(FilterLayer, "setup", setup_selecting)
    check_gradient('type: "Filter"', [rand(5, 3, 2), rand(5, 2, seed=1), np.array(sel, float)],
                   num_tops=2)


def test_filter_formula():
    a, b = rand(5, 3), rand(5, 2, 2, seed=1)
    sel = np.array([0.0, 2.0, 0.0, -1.0, 0.0]).reshape(5, 1, 1)  # nonzero keeps; singleton axes
    dys = [rand(2, 3, seed=2), rand(2, 2, 2, seed=3)]
    ys, dxs, layer, _ = run('type: "Filter"', [a, b, sel], dys, propagate_down=[True, True, False],
                            num_tops=2)
    np.testing.assert_array_equal(ys[0], a[[1, 3]])
    np.testing.assert_array_equal(ys[1], b[[1, 3]])
    want = np.zeros_like(a)
    want[[1, 3]] = dys[0]
    np.testing.assert_array_equal(dxs[0], want)
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(1)


def test_filter_first_reshape_keeps_every_item():
    layer, bottom, top = build_layer('type: "Filter"', [rand(4, 2), np.array([1.0, 0, 0, 0])])
    assert top[0].shape == (4, 2)  # Caffe's first Reshape, before any selector is read
    layer.Forward(bottom, top)
    assert top[0].shape == (1, 2)


def test_filter_empty_selection():
    ys, dxs, _, _ = run('type: "Filter"', [rand(3, 2), np.zeros(3)], [np.zeros((0, 2))],
                        propagate_down=[True, False])
    assert ys[0].shape == (0, 2) and (dxs[0] == 0).all()


def test_filter_errors():
    setup_error('type: "Filter"', [rand(3, 2), np.zeros((3, 2))], "singletons")
    setup_error('type: "Filter"', [rand(3, 2), np.zeros(4)], "same 0th dimension")
    setup_error('type: "Filter"', [rand(3, 2), rand(3, 1), np.ones(3)], "one top per", num_tops=1)
    layer, bottom, top = build_layer('type: "Filter"', [rand(3, 2), np.ones(3)])
    layer.Forward(bottom, top)
    with pytest.raises(LayerSetupError, match="selector"):
        layer.Backward(top, [True, True], bottom)


# -- Parameter ----------------------------------------------------------------------------------

PARAM_SPEC = 'type: "Parameter" parameter_param { shape { dim: 3 dim: 4 } }'


def test_parameter_gradient():
    check_gradient(PARAM_SPEC, [], params=[rand(3, 4)])


def test_parameter_top_is_the_blob():
    layer, bottom, top = build_layer(PARAM_SPEC, [])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3, 4)
    assert (layer.blobs[0].data == 0).all()  # no filler: Caffe zero-fills
    assert layer.param_propagate_down == [True]
    layer.blobs[0].data[...] = rand(3, 4)
    layer.Forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, layer.blobs[0].data)
    assert np.shares_memory(top[0].data, layer.blobs[0].data)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 2
    layer.Backward(top, [], bottom)
    assert (layer.blobs[0].diff == 3).all()  # param diffs accumulate


def test_parameter_keeps_stored_blobs():
    param = make_layer_param(PARAM_SPEC)
    stored = rand(3, 4)
    bp = param.blobs.add()
    bp.shape.dim.extend([3, 4])
    bp.data.extend(stored.ravel().tolist())
    layer, bottom, top = build_layer(param, [])
    layer.Forward(bottom, top)
    np.testing.assert_allclose(top[0].data, stored, rtol=1e-6)
    param.blobs[0].shape.dim[:] = [5]
    del param.blobs[0].data[5:]
    with pytest.raises(LayerSetupError, match="does not fit"):
        build_layer(param, [])


def test_parameter_takes_no_bottom():
    setup_error(PARAM_SPEC, [rand(2)], "exactly 0 bottom")


def test_split_bottom_growing_within_its_old_buffer():
    # The bottom's buffer (10) is larger than the top's own diff buffer (4) when the top is set
    # up; growing the bottom to 6 must still give the tops a diff of the new size.
    bottom = [Blob((10,), dtype=np.float64)]
    bottom[0].reshape(4)
    layer = create_layer(make_layer_param('name: "s" type: "Split"'))
    tops = [Blob(dtype=np.float64), Blob(dtype=np.float64)]
    layer.SetUp(bottom, tops)
    bottom[0].reshape(6)
    bottom[0].data[...] = np.arange(6)
    layer.Forward(bottom, tops)
    dys = [rand(6, seed=1), rand(6, seed=2)]
    for t, d in zip(tops, dys):
        assert t.diff.shape == (6,)
        t.diff[...] = d
        np.testing.assert_array_equal(t.data, np.arange(6))
    layer.Backward(tops, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dys[0] + dys[1])
