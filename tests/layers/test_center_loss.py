"""Tests of CenterLoss (decaf/layers/center_loss.py): caffe-face's forward, the feature gradient
(float64 numerical check), the centre update rule against the seed's formula on explicit
numbers, the solver moving the centres, and setup errors. No golden data: CenterLoss is not a
BVLC layer."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.proto import caffe_pb2
from decaf.testing.gradient_check import build_layer, check_gradient

SPEC = ('type: "CenterLoss" center_loss_param { num_output: %d %s '
        'center_filler { type: "gaussian" std: 1 } }')


def run(spec, x, y, centers=None, loss_weight=1.0, propagate_down=(True, False)):
    layer, bottom, top = build_layer(spec, [x, y], params=None if centers is None else [centers])
    layer.Forward(bottom, top)
    layer.blobs[0].diff[...] = 0
    top[0].diff[...] = loss_weight
    layer.Backward(top, list(propagate_down), bottom)
    return layer, float(top[0].data), bottom[0].diff.copy(), layer.blobs[0].diff.copy()


# -- forward ------------------------------------------------------------------------------------

@pytest.mark.parametrize("M,K,N", [(5, 2, 3), (8, 4, 10), (1, 3, 2)])
def test_forward_matches_formula(M, K, N):
    rs = np.random.RandomState(M + K)
    x = rs.standard_normal((M, K))
    y = rs.randint(0, N, M).astype(float)
    c = rs.standard_normal((N, K))
    _, loss, _, _ = run(SPEC % (N, ""), x, y, c)
    expect = sum(np.sum((x[i] - c[int(y[i])]) ** 2) for i in range(M)) / (2 * M)
    assert loss == pytest.approx(expect, rel=1e-12)


def test_forward_axis_flattens_trailing_axes():
    rs = np.random.RandomState(3)
    x = rs.standard_normal((4, 2, 3))
    y = np.array([0, 1, 1, 0], float)
    c = rs.standard_normal((2, 6))
    _, loss, _, _ = run(SPEC % (2, "axis: 1"), x, y, c)
    d = x.reshape(4, 6) - c[y.astype(int)]
    assert loss == pytest.approx(np.sum(d ** 2) / 8, rel=1e-12)


def test_label_shape_n111_is_accepted():
    x = np.ones((3, 2))
    y = np.zeros((3, 1, 1, 1))
    _, loss, _, _ = run(SPEC % (2, ""), x, y, np.zeros((2, 2)))
    assert loss == pytest.approx(3 * 2 / 6)


def test_centres_created_with_filler_shape_and_dtype():
    layer, _, _ = build_layer(SPEC % (7, ""), [np.zeros((4, 3)), np.zeros(4)])
    assert layer.blobs[0].shape == (7, 3)
    assert layer.blobs[0].dtype == np.float64
    assert layer.param_propagate_down == [True]
    layer32, _, _ = build_layer(SPEC % (7, ""), [np.zeros((4, 3)), np.zeros(4)],
                                dtype=np.float32)
    assert layer32.blobs[0].dtype == np.float32


# -- backward to the features -----------------------------------------------------------------

@pytest.mark.parametrize("M,K,N", [(6, 2, 3), (5, 3, 10), (2, 1, 1)])
def test_feature_gradient(M, K, N):
    rs = np.random.RandomState(M * K)
    x = rs.standard_normal((M, K))
    y = rs.randint(0, N, M).astype(float)
    # the centre "diff" is caffe-face's update rule, not dL/dc: only the features are checked
    check_gradient(SPEC % (N, ""), [x, y], check_params=False)


def test_feature_gradient_4d_bottom():
    rs = np.random.RandomState(1)
    x = rs.standard_normal((3, 2, 2, 1))
    check_gradient(SPEC % (2, ""), [x, np.array([1, 0, 1.])], check_params=False)


def test_feature_gradient_is_scaled_by_loss_weight():
    rs = np.random.RandomState(2)
    x, c = rs.standard_normal((4, 2)), rs.standard_normal((3, 2))
    y = np.array([0, 2, 2, 1.])
    _, _, dx, _ = run(SPEC % (3, ""), x, y, c, loss_weight=0.25)
    np.testing.assert_allclose(dx, 0.25 * (x - c[y.astype(int)]) / 4, rtol=1e-12)


# -- the centre update (seed 003 / caffe-face) -------------------------------------------------

def test_centre_diff_explicit_example():
    # 3 classes, 2-D features; class 0 has two samples, class 1 one, class 2 none
    x = np.array([[1., 2.], [3., 0.], [-1., 1.]])
    y = np.array([0., 0., 1.])
    c = np.array([[0., 0.], [1., 1.], [5., 5.]])
    _, _, _, dc = run(SPEC % (3, ""), x, y, c, loss_weight=0.01)
    # class 0: ((c0 - x0) + (c0 - x1)) / (1 + 2) = ((-1, -2) + (-3, 0)) / 3
    # class 1: (c1 - x2) / (1 + 1) = (2, 0) / 2;  class 2: no sample -> 0
    expect = np.array([[-4. / 3, -2. / 3], [1., 0.], [0., 0.]])
    np.testing.assert_allclose(dc, expect, rtol=1e-12)   # not scaled by the loss weight


@pytest.mark.parametrize("M,K,N", [(7, 2, 3), (16, 5, 10)])
def test_centre_diff_matches_seed_loops(M, K, N):
    rs = np.random.RandomState(N)
    x, c = rs.standard_normal((M, K)), rs.standard_normal((N, K))
    y = rs.randint(0, N, M).astype(float)
    _, _, _, dc = run(SPEC % (N, ""), x, y, c)
    expect = np.zeros((N, K))
    for n in range(N):            # the seed's loop, written out
        count, var = 0, np.zeros(K)
        for m in range(M):
            if int(y[m]) == n:
                count += 1
                var -= x[m] - c[n]
        expect[n] += var / (count + 1.0)
    np.testing.assert_allclose(dc, expect, rtol=1e-12, atol=1e-15)


def test_centre_diff_accumulates():
    x = np.array([[1., 0.]])
    layer, bottom, top = build_layer(SPEC % (1, ""), [x, np.zeros(1)], params=[np.zeros((1, 2))])
    layer.Forward(bottom, top)
    layer.blobs[0].diff[...] = 10
    layer.Backward(top, [True, False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, [[10 - 0.5, 10]])


def test_solver_moves_centres_towards_class_means():
    import decaf
    net_text = """
    layer { name: "in" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 4 dim: 2 } shape { dim: 4 } } }
    layer { name: "cl" type: "CenterLoss" bottom: "x" bottom: "y" top: "loss"
            loss_weight: 0.001
            param { lr_mult: 0.5 decay_mult: 0 }
            center_loss_param { num_output: 2 center_filler { type: "constant" value: 0 } } }
    """
    sp = caffe_pb2.SolverParameter(type="SGD", base_lr=1.0, lr_policy="fixed", max_iter=200,
                                   display=0, snapshot_after_train=False)
    sp.net_param.CopyFrom(_parse(net_text))
    solver = decaf.get_solver(sp)
    net = solver.net
    net.blobs["x"].data[...] = [[2, 0], [4, 0], [0, 3], [0, 3]]
    net.blobs["y"].data[...] = [0, 0, 1, 1]
    solver.step(1)
    # one SGD step, lr 1 x lr_mult 0.5, not scaled by the loss weight 0.001:
    # c0 -= 0.5 (2 (0 - 3)) / 3 -> (1, 0);  c1 -= 0.5 (2 (0 - (0, 3))) / 3 -> (0, 1)
    np.testing.assert_allclose(net.params["cl"][0].data, [[1, 0], [0, 1]], rtol=1e-6)
    solver.step(100)
    np.testing.assert_allclose(net.params["cl"][0].data, [[3, 0], [0, 3]], atol=1e-5)


def _parse(text):
    from google.protobuf import text_format
    return text_format.Parse(text, caffe_pb2.NetParameter())


# -- errors ---------------------------------------------------------------------------------------

def test_error_num_output_missing():
    with pytest.raises(LayerSetupError, match="num_output"):
        build_layer('type: "CenterLoss"', [np.zeros((2, 2)), np.zeros(2)])


def test_error_label_count():
    with pytest.raises(LayerSetupError, match="one label per sample"):
        build_layer(SPEC % (3, ""), [np.zeros((4, 2)), np.zeros(3)])


def test_error_label_out_of_range():
    layer, bottom, top = build_layer(SPEC % (3, ""), [np.zeros((2, 2)), np.array([0., 3.])])
    with pytest.raises(LayerSetupError, match="not in \\[0, 3\\)"):
        layer.Forward(bottom, top)


def test_error_bad_axis():
    with pytest.raises(LayerSetupError, match="axis"):
        build_layer(SPEC % (3, "axis: 3"), [np.zeros((2, 2)), np.zeros(2)])


def test_error_loaded_centres_wrong_shape():
    p = caffe_pb2.LayerParameter()
    from google.protobuf import text_format
    text_format.Parse(SPEC % (3, ""), p)
    b = p.blobs.add()
    b.shape.dim.extend([2, 2])
    b.data.extend([0.0] * 4)
    with pytest.raises(LayerSetupError, match="centre blob has shape"):
        build_layer(p, [np.zeros((2, 2)), np.zeros(2)])


def test_error_backward_to_labels():
    layer, bottom, top = build_layer(SPEC % (2, ""), [np.zeros((2, 2)), np.zeros(2)])
    layer.Forward(bottom, top)
    with pytest.raises(LayerSetupError, match="label"):
        layer.Backward(top, [True, True], bottom)


def test_error_feature_size_changes():
    layer, bottom, top = build_layer(SPEC % (2, ""), [np.zeros((2, 2)), np.zeros(2)])
    bottom[0].reshape((2, 3))
    with pytest.raises(LayerSetupError, match="K = 2"):
        layer.Forward(bottom, top)
