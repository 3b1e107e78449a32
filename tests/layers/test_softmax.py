"""Tests for decaf/layers/softmax.py: Softmax, SoftmaxWithLoss, InfogainLoss."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.proto import caffe_pb2
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward

TYPES = ["Softmax", "SoftmaxWithLoss", "InfogainLoss"]
FLT_MIN = np.finfo(np.float32).tiny


# -- golden ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", golden.layer_cases(types=TYPES))
def test_golden(name):
    golden.assert_layer_case(name)


def test_golden_cases_cover_every_type():
    covered = {golden.load_case(n)["layer_type"] for n in golden.layer_cases(types=TYPES)}
    assert covered == set(TYPES)


# -- independent references -----------------------------------------------------------------------
def ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ref_class_first(x, axis):
    """x moved to (outer, C, inner)."""
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis]))
    return x.reshape(outer, x.shape[axis], -1)


def ref_normalizer(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, n)


def ref_swl(x, label, axis=1, ignore=None, mode="VALID"):
    """Loss and d(loss)/dx of SoftmaxWithLoss written loop by loop (loss weight 1)."""
    p3 = ref_class_first(ref_softmax(x, axis), axis)
    lab = label.reshape(p3.shape[0], p3.shape[2]).astype(int)
    grad = p3.copy()
    loss, count = 0.0, 0
    for i in range(p3.shape[0]):
        for j in range(p3.shape[2]):
            if ignore is not None and lab[i, j] == ignore:
                grad[i, :, j] = 0
                continue
            loss -= np.log(max(p3[i, lab[i, j], j], FLT_MIN))
            grad[i, lab[i, j], j] -= 1
            count += 1
    norm = ref_normalizer(mode, p3.shape[0], p3.shape[2], count)
    return loss / norm, (grad / norm).reshape(x.shape)


def swl_spec(axis=None, ignore=None, mode=None, normalize=None, extra=""):
    lp = []
    if ignore is not None:
        lp.append("ignore_label: %d" % ignore)
    if mode is not None:
        lp.append("normalization: %s" % mode)
    if normalize is not None:
        lp.append("normalize: %s" % ("true" if normalize else "false"))
    s = 'type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" ' + extra
    if axis is not None:
        s += " softmax_param { axis: %d }" % axis
    if lp:
        s += " loss_param { %s }" % " ".join(lp)
    return s


def labels_for(rs, shape, axis, num_classes, ignore=None, frac_ignored=0.3):
    axis = axis % len(shape)
    lshape = shape[:axis] + shape[axis + 1:]
    lab = rs.randint(0, num_classes, size=lshape).astype(np.float64)
    if ignore is not None:
        lab[rs.rand(*lshape) < frac_ignored] = ignore
    return lab


# -- Softmax --------------------------------------------------------------------------------------
SOFTMAX_SHAPES = [((4, 5), 1), ((2, 3, 2, 3), 1), ((2, 3, 4), 2), ((2, 4, 3), -1), ((3, 2, 4), 0)]


@pytest.mark.parametrize("shape,axis", SOFTMAX_SHAPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_softmax_gradient(shape, axis, inplace):
    x = np.random.RandomState(3).randn(*shape)
    check_gradient('type: "Softmax" softmax_param { axis: %d }' % axis, [x], inplace=inplace)


@pytest.mark.parametrize("shape,axis", SOFTMAX_SHAPES)
def test_softmax_forward(shape, axis):
    x = np.random.RandomState(4).randn(*shape) * 3
    _, (y,) = forward('type: "Softmax" softmax_param { axis: %d }' % axis, [x])
    np.testing.assert_allclose(y, ref_softmax(x, axis), rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-12)


def test_softmax_stable_for_huge_inputs():
    x = np.array([[1000.0, 999.0, -1000.0], [-1e30, 0.0, 1e30]], np.float32)
    _, (y,) = forward('type: "Softmax"', [x], dtype=np.float32)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[0], ref_softmax(x[:1].astype(np.float64), 1)[0], rtol=1e-6)
    np.testing.assert_allclose(y[1], [0, 0, 1], atol=1e-7)


def test_softmax_inplace_forward_matches():
    x = np.random.RandomState(5).randn(2, 3, 4)
    _, (y,) = forward('type: "Softmax"', [x], inplace=True)
    np.testing.assert_allclose(y, ref_softmax(x, 1), rtol=1e-12)


def test_softmax_float32_keeps_dtype():
    x = np.random.RandomState(6).randn(3, 4).astype(np.float32)
    layer, bottom, top = build_layer('type: "Softmax"', [x], dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[0].data.dtype == np.float32


@pytest.mark.parametrize("spec,shape,match", [
    ('type: "Softmax" softmax_param { axis: 3 }', (2, 3), "softmax_param.axis"),
    ('type: "Softmax" softmax_param { axis: -4 }', (2, 3, 4), "softmax_param.axis"),
])
def test_softmax_bad_axis(spec, shape, match):
    with pytest.raises(LayerSetupError, match=match):
        build_layer(spec, [np.zeros(shape)])


def test_softmax_bottom_count():
    with pytest.raises(LayerSetupError, match="exactly 1 bottom"):
        build_layer('type: "Softmax"', [np.zeros((2, 3)), np.zeros((2, 3))])


# -- SoftmaxWithLoss ------------------------------------------------------------------------------
SWL_CASES = [((5, 4), 1), ((2, 3, 2, 2), 1), ((2, 3, 4), 2), ((2, 2, 3), -1), ((2, 2, 3), 0)]
MODES = ["FULL", "VALID", "BATCH_SIZE", "NONE"]


@pytest.mark.parametrize("shape,axis", SWL_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_swl_gradient_ignore(shape, axis, mode):
    rs = np.random.RandomState(7)
    x = rs.randn(*shape)
    c = shape[axis]
    lab = labels_for(rs, shape, axis, c, ignore=1)
    check_gradient(swl_spec(axis, 1, mode), [x, lab])


@pytest.mark.parametrize("normalize", [True, False, None])
def test_swl_gradient_no_ignore(normalize):
    rs = np.random.RandomState(8)
    x = rs.randn(3, 4, 2)
    check_gradient(swl_spec(normalize=normalize), [x, labels_for(rs, x.shape, 1, 4)])


def test_swl_gradient_with_prob_top():
    rs = np.random.RandomState(9)
    x = rs.randn(3, 4)
    spec = swl_spec() + ' top: "prob"'
    check_gradient(spec, [x, labels_for(rs, x.shape, 1, 4)], top_weights=[1.7, None])


@pytest.mark.parametrize("shape,axis", SWL_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_swl_forward_backward_vs_reference(shape, axis, mode):
    rs = np.random.RandomState(10)
    x = rs.randn(*shape) * 2
    lab = labels_for(rs, shape, axis, shape[axis], ignore=0)
    layer, bottom, top = build_layer(swl_spec(axis, 0, mode), [x, lab])
    loss = layer.Forward(bottom, top)
    want_loss, want_grad = ref_swl(x, lab, axis, 0, mode)
    np.testing.assert_allclose(top[0].data, want_loss, rtol=1e-12)
    assert loss == pytest.approx(want_loss, rel=1e-12)  # loss weight 1
    layer.Backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, want_grad, rtol=1e-10, atol=1e-14)


def test_swl_spatial_valid_counts_non_ignored():
    rs = np.random.RandomState(11)
    x = rs.randn(2, 3, 2, 2)
    lab = np.array([[[0, 2], [2, 1]], [[2, 2], [2, 0]]], float)  # 3 of 8 counted
    _, (loss,) = forward(swl_spec(ignore=2), [x, lab])
    p = ref_softmax(x, 1)
    want = -(np.log(p[0, 0, 0, 0]) + np.log(p[0, 1, 1, 1]) + np.log(p[1, 0, 1, 1])) / 3
    assert float(loss) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_swl_all_ignored_clamps_normalizer(mode):
    x = np.random.RandomState(12).randn(2, 3, 2)
    lab = np.full((2, 2), 1.0)
    layer, bottom, top = build_layer(swl_spec(ignore=1, mode=mode), [x, lab])
    layer.Forward(bottom, top)
    assert float(top[0].data) == 0.0
    bottom[0].diff[...] = 7
    layer.Backward(top, [True, False], bottom)
    assert np.all(bottom[0].diff == 0)


@pytest.mark.parametrize("normalize,mode,expect", [
    (True, None, "VALID"), (False, None, "BATCH_SIZE"), (None, None, "VALID"),
    (False, "FULL", "FULL"), (True, "NONE", "NONE")])
def test_swl_legacy_normalize_rule(normalize, mode, expect):
    rs = np.random.RandomState(13)
    x = rs.randn(2, 3, 4)
    lab = labels_for(rs, x.shape, 1, 3, ignore=2, frac_ignored=0.5)
    _, (loss,) = forward(swl_spec(ignore=2, mode=mode, normalize=normalize), [x, lab])
    assert float(loss) == pytest.approx(ref_swl(x, lab, 1, 2, expect)[0], rel=1e-12)


def test_swl_loss_weight_scales_loss_and_gradient():
    rs = np.random.RandomState(14)
    x = rs.randn(4, 3)
    lab = labels_for(rs, x.shape, 1, 3)
    layer, bottom, top = build_layer(swl_spec(extra="loss_weight: 2.5"), [x, lab])
    loss = layer.Forward(bottom, top)
    want_loss, want_grad = ref_swl(x, lab)
    assert float(top[0].diff) == 2.5  # Caffe keeps the loss weight in the top diff
    assert loss == pytest.approx(2.5 * want_loss, rel=1e-12)
    layer.Backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, 2.5 * want_grad, rtol=1e-10)


def test_swl_prob_top_and_float32():
    rs = np.random.RandomState(15)
    x = rs.randn(3, 4, 2).astype(np.float32)
    lab = labels_for(rs, x.shape, 1, 4)
    layer, bottom, top = build_layer(swl_spec() + ' top: "prob"', [x, lab], dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[1].shape == x.shape and top[1].data.dtype == np.float32
    np.testing.assert_allclose(top[1].data, ref_softmax(x.astype(np.float64), 1), rtol=1e-5)
    assert layer.loss_weights[:2] in ([1.0], [1.0, 0.0])


def test_swl_flt_min_clamp():
    x = np.array([[0.0, -1000.0]], np.float32)
    _, (loss,) = forward(swl_spec(), [x, np.array([1.0])], dtype=np.float32)
    assert float(loss) == pytest.approx(-np.log(FLT_MIN), rel=1e-6)


def test_swl_labels_truncate_like_c():
    rs = np.random.RandomState(16)
    x = rs.randn(2, 3)
    _, (a,) = forward(swl_spec(), [x, np.array([1.9, 2.2])])
    _, (b,) = forward(swl_spec(), [x, np.array([1.0, 2.0])])
    assert float(a) == float(b)


def test_swl_label_count_mismatch():
    with pytest.raises(LayerSetupError, match="number of labels must match"):
        build_layer(swl_spec(), [np.zeros((2, 3, 2)), np.zeros((2, 3))])


def test_swl_first_dim_mismatch():
    with pytest.raises(LayerSetupError, match="first dimension"):
        build_layer(swl_spec(axis=2), [np.zeros((2, 3, 4)), np.zeros((3, 2))])


@pytest.mark.parametrize("label", [3.0, -1.0, 7.0])
def test_swl_label_out_of_range(label):
    with pytest.raises(LayerSetupError, match=r"not in \[0, 3\)"):
        forward(swl_spec(), [np.zeros((2, 3)), np.array([0.0, label])])


def test_swl_out_of_range_ignore_label_is_fine():
    _, (loss,) = forward(swl_spec(ignore=-1), [np.zeros((2, 3)), np.array([0.0, -1.0])])
    assert float(loss) == pytest.approx(np.log(3), rel=1e-12)


def test_swl_bad_axis_and_counts():
    with pytest.raises(LayerSetupError, match="softmax_param.axis"):
        build_layer(swl_spec(axis=4), [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(LayerSetupError, match="at most 2 top"):
        build_layer(swl_spec() + ' top: "p" top: "q"', [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(LayerSetupError, match="exactly 2 bottom"):
        build_layer(swl_spec(), [np.zeros((2, 3))])


def test_swl_refuses_label_backward():
    layer, bottom, top = build_layer(swl_spec(), [np.zeros((2, 3)), np.zeros(2)])
    layer.Forward(bottom, top)
    assert not layer.allow_force_backward(1)
    with pytest.raises(LayerSetupError, match="label"):
        layer.Backward(top, [True, True], bottom)


# -- InfogainLoss ---------------------------------------------------------------------------------
def ref_infogain(x, label, H, axis=1, ignore=None, mode="VALID"):
    p3 = ref_class_first(ref_softmax(x, axis), axis)
    lab = label.reshape(p3.shape[0], p3.shape[2]).astype(int)
    grad = np.zeros_like(p3)
    loss, count = 0.0, 0
    for i in range(p3.shape[0]):
        for j in range(p3.shape[2]):
            k = lab[i, j]
            if ignore is not None and k == ignore:
                continue
            loss -= np.dot(H[k], np.log(np.maximum(p3[i, :, j], 1e-20)))
            grad[i, :, j] = p3[i, :, j] * H[k].sum() - H[k]
            count += 1
    norm = ref_normalizer(mode, p3.shape[0], p3.shape[2], count)
    return loss / norm, (grad / norm).reshape(x.shape)


def infogain_spec(source=None, axis=None, ignore=None, mode=None, three=True):
    s = 'type: "InfogainLoss" bottom: "x" bottom: "label" %s top: "loss"' % (
        'bottom: "H"' if three else "")
    if source is not None or axis is not None:
        s += " infogain_loss_param { %s %s }" % (
            'source: "%s"' % source if source is not None else "",
            "axis: %d" % axis if axis is not None else "")
    lp = ("ignore_label: %d " % ignore if ignore is not None else "") + \
        ("normalization: %s" % mode if mode is not None else "")
    if lp:
        s += " loss_param { %s }" % lp
    return s


def write_blobproto(path, arr):
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend(arr.shape)
    proto.data.extend(np.asarray(arr, np.float32).ravel().tolist())
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("shape,axis", [((4, 3), 1), ((2, 3, 2, 2), 1), ((2, 2, 3), 2)])
@pytest.mark.parametrize("mode", MODES)
def test_infogain_gradient_three_bottoms(shape, axis, mode):
    rs = np.random.RandomState(17)
    x = rs.randn(*shape)
    c = shape[axis]
    H = rs.rand(c, c)
    lab = labels_for(rs, shape, axis, c, ignore=0)
    layer = check_gradient(infogain_spec(axis=axis, ignore=0, mode=mode), [x, lab, H])
    assert not layer.allow_force_backward(2)


def test_infogain_gradient_from_source(tmp_path, monkeypatch):
    rs = np.random.RandomState(18)
    H = rs.rand(4, 4).astype(np.float32)
    write_blobproto(tmp_path / "H.binaryproto", H.reshape(1, 1, 4, 4))
    monkeypatch.chdir(tmp_path)
    x = rs.randn(3, 4)
    check_gradient(infogain_spec(source="H.binaryproto", three=False),
                   [x, labels_for(rs, x.shape, 1, 4)])


@pytest.mark.parametrize("mode", MODES)
def test_infogain_forward_backward_vs_reference(mode):
    rs = np.random.RandomState(19)
    x = rs.randn(2, 3, 2, 2) * 2
    H = rs.rand(3, 3)
    lab = labels_for(rs, x.shape, 1, 3, ignore=2)
    layer, bottom, top = build_layer(infogain_spec(ignore=2, mode=mode), [x, lab, H])
    layer.Forward(bottom, top)
    want_loss, want_grad = ref_infogain(x, lab, H, 1, 2, mode)
    np.testing.assert_allclose(top[0].data, want_loss, rtol=1e-12)
    layer.Backward(top, [True, False, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, want_grad, rtol=1e-10, atol=1e-14)


def test_infogain_identity_equals_softmax_with_loss():
    rs = np.random.RandomState(20)
    x = rs.randn(5, 4)
    lab = labels_for(rs, x.shape, 1, 4)
    _, (a,) = forward(infogain_spec(), [x, lab, np.eye(4)])
    _, (b,) = forward(swl_spec(), [x, lab])
    assert float(a) == pytest.approx(float(b), rel=1e-12)


def test_infogain_all_ignored_and_prob_top():
    x = np.random.RandomState(21).randn(2, 3)
    spec = infogain_spec(ignore=1) + ' top: "prob"'
    _, (loss, prob) = forward(spec, [x, np.array([1.0, 1.0]), np.ones((3, 3))])
    assert float(loss) == 0.0
    np.testing.assert_allclose(prob, ref_softmax(x, 1), rtol=1e-12)


def test_infogain_source_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, lab = np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(LayerSetupError, match="source must be specified"):
        build_layer(infogain_spec(three=False), [x, lab])
    with pytest.raises(LayerSetupError, match="cannot read infogain matrix file 'missing.bin'"):
        build_layer(infogain_spec(source="missing.bin", three=False), [x, lab])
    write_blobproto(tmp_path / "H.bin", np.eye(3).reshape(1, 1, 3, 3))
    (tmp_path / "cut.bin").write_bytes((tmp_path / "H.bin").read_bytes()[:-5])
    with pytest.raises(LayerSetupError, match="not a valid BlobProto"):
        build_layer(infogain_spec(source="cut.bin", three=False), [x, lab])
    write_blobproto(tmp_path / "H2.bin", np.eye(2))
    with pytest.raises(LayerSetupError, match="must be 3 x 3"):
        build_layer(infogain_spec(source="H2.bin", three=False), [x, lab])


def test_infogain_bad_inputs():
    x, lab = np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(LayerSetupError, match="must be 3 x 3"):
        build_layer(infogain_spec(), [x, lab, np.eye(2)])
    with pytest.raises(LayerSetupError, match="normalize is deprecated"):
        build_layer(infogain_spec() + " loss_param { normalize: true }", [x, lab, np.eye(3)])
    with pytest.raises(LayerSetupError, match="number of labels must match"):
        build_layer(infogain_spec(), [x, np.zeros((2, 2)), np.eye(3)])
    with pytest.raises(LayerSetupError, match=r"not in \[0, 3\)"):
        forward(infogain_spec(), [x, np.array([0.0, 5.0]), np.eye(3)])
    layer, bottom, top = build_layer(infogain_spec(), [x, lab, np.eye(3)])
    layer.Forward(bottom, top)
    with pytest.raises(LayerSetupError, match="infogain matrix input"):
        layer.Backward(top, [True, False, True], bottom)
