"""Tests for decaf/layers/loss.py: Accuracy, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss,
MultinomialLogisticLoss, ContrastiveLoss (and the shared normalization helpers)."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, forward

TYPES = ["Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
         "MultinomialLogisticLoss", "ContrastiveLoss"]
MODES = ["FULL", "VALID", "BATCH_SIZE", "NONE"]


# -- golden ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", golden.layer_cases(types=TYPES))
def test_golden(name):
    golden.assert_layer_case(name)


def test_golden_cases_cover_every_type():
    covered = {golden.load_case(n)["layer_type"] for n in golden.layer_cases(types=TYPES)}
    assert covered == set(TYPES)


def run(spec, bottoms, pd=None, top_diff=None, num_tops=None):
    """Forward + backward (loss weight from SetUp unless top_diff); returns (layer, bottom, top)."""
    layer, bottom, top = build_layer(spec, bottoms, num_tops=num_tops)
    layer.Forward(bottom, top)
    if top_diff is not None:
        top[0].diff[...] = top_diff
    if pd is not None:
        layer.Backward(top, pd, bottom)
    return layer, bottom, top


# -- Accuracy -------------------------------------------------------------------------------------
def ref_accuracy(scores, label, top_k=1, axis=1, ignore=None):
    s = np.moveaxis(scores, axis, -1)
    s = s.reshape(-1, s.shape[-1])
    lab = label.reshape(-1).astype(int)
    nclass = s.shape[1]
    hit, seen = np.zeros(nclass), np.zeros(nclass)
    correct = count = 0
    for row, k in zip(s, lab):
        if ignore is not None and k == ignore:
            continue
        rank = sum(1 for v in row if v >= row[k]) - 1  # classes ranked at or above the true one
        seen[k] += 1
        count += 1
        if rank < top_k:
            correct += 1
            hit[k] += 1
    per_class = np.where(seen == 0, 0, hit / np.maximum(seen, 1))
    return (correct / count if count else 0.0), per_class


def acc_spec(top_k=None, axis=None, ignore=None, per_class=False):
    fields = " ".join(f for f in ["top_k: %d" % top_k if top_k else "",
                                  "axis: %d" % axis if axis is not None else "",
                                  "ignore_label: %d" % ignore if ignore is not None else ""] if f)
    s = 'type: "Accuracy" bottom: "s" bottom: "l" top: "acc"'
    s += ' top: "per_class"' if per_class else ""
    return s + (" accuracy_param { %s }" % fields if fields else "")


@pytest.mark.parametrize("top_k", [1, 2, 4])
@pytest.mark.parametrize("ignore", [None, 1])
def test_accuracy_vs_reference(top_k, ignore):
    rs = np.random.RandomState(1)
    scores = rs.randint(0, 3, size=(12, 4)).astype(float)  # many ties
    label = rs.randint(0, 4, size=12).astype(float)
    _, (acc, per) = forward(acc_spec(top_k, ignore=ignore, per_class=True), [scores, label])
    want, want_per = ref_accuracy(scores, label, top_k, ignore=ignore)
    assert float(acc) == pytest.approx(want)
    np.testing.assert_allclose(per, want_per)


def test_accuracy_ties_count_against():
    scores = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    label = np.array([0.0, 0.0, 2.0])
    _, (acc,) = forward(acc_spec(), [scores, label])
    assert float(acc) == 0.0  # every row has another class scoring >= the true one
    _, (acc2,) = forward(acc_spec(top_k=2), [scores, label])
    assert float(acc2) == pytest.approx(2 / 3)  # row 3: three-way tie, rank 2 >= top_k


def test_accuracy_spatial_axis_and_per_class_zero_for_absent():
    rs = np.random.RandomState(2)
    scores = rs.randn(2, 3, 4, 5)  # classes on axis 2
    label = rs.randint(0, 3, size=(2, 3, 5)).astype(float)
    label[label == 3] = 0
    label[:] = np.where(label == 1, 0, label)  # class 1 and 3 never appear
    _, (acc, per) = forward(acc_spec(axis=2, per_class=True), [scores, label])
    want, want_per = ref_accuracy(scores, label, axis=2)
    assert float(acc) == pytest.approx(want)
    np.testing.assert_allclose(per, want_per)
    assert per[1] == 0 and per[3] == 0 and per.shape == (4,)


def test_accuracy_all_ignored_is_zero():
    _, (acc, per) = forward(acc_spec(ignore=0, per_class=True),
                            [np.random.randn(3, 2), np.zeros(3)])
    assert float(acc) == 0.0 and np.all(per == 0)


def test_accuracy_errors():
    with pytest.raises(LayerSetupError, match="top_k"):
        build_layer(acc_spec(top_k=4), [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(LayerSetupError, match="number of labels must match"):
        build_layer(acc_spec(), [np.zeros((2, 3, 2)), np.zeros(3)])
    with pytest.raises(LayerSetupError, match="accuracy_param.axis"):
        build_layer(acc_spec(axis=3), [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(LayerSetupError, match=r"not in \[0, 3\)"):
        forward(acc_spec(), [np.zeros((2, 3)), np.array([0.0, 3.0])])
    layer, bottom, top = build_layer(acc_spec(), [np.zeros((2, 3)), np.zeros(2)])
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    layer.Backward(top, [False, False], bottom)  # nothing asked: fine
    with pytest.raises(LayerSetupError, match="no backward"):
        layer.Backward(top, [True, False], bottom)


# -- EuclideanLoss --------------------------------------------------------------------------------
EUCLID = 'type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"'


@pytest.mark.parametrize("sa,sb", [((4, 3), (4, 3)), ((2, 3, 2), (2, 6)), ((3,), (3,))])
def test_euclidean_gradient_both_bottoms(sa, sb):
    rs = np.random.RandomState(3)
    check_gradient(EUCLID, [rs.randn(*sa), rs.randn(*sb)])


def test_euclidean_forward_backward_with_loss_weight():
    rs = np.random.RandomState(4)
    a, b = rs.randn(5, 2, 3), rs.randn(5, 2, 3)
    layer, bottom, top = run(EUCLID + " loss_weight: 3", [a, b], pd=[True, True])
    assert float(top[0].data) == pytest.approx(((a - b) ** 2).sum() / 5 / 2, rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, 3 * (a - b) / 5, rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, -3 * (a - b) / 5, rtol=1e-12)
    assert layer.allow_force_backward(1)


def test_euclidean_errors():
    with pytest.raises(LayerSetupError, match="same dimension"):
        build_layer(EUCLID, [np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(LayerSetupError, match="first dimension"):
        build_layer(EUCLID, [np.zeros((2, 3)), np.zeros((3, 2))])
    with pytest.raises(LayerSetupError, match="exactly 2 bottom"):
        build_layer(EUCLID, [np.zeros((2, 3))])


# -- SigmoidCrossEntropyLoss ----------------------------------------------------------------------
def sce_spec(ignore=None, mode=None, normalize=None):
    lp = " ".join(f for f in ["ignore_label: %d" % ignore if ignore is not None else "",
                              "normalization: %s" % mode if mode else "",
                              "normalize: %s" % str(normalize).lower() if normalize is not None
                              else ""] if f)
    s = 'type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss"'
    return s + (" loss_param { %s }" % lp if lp else "")


def ref_sce(x, t, ignore=None, mode="BATCH_SIZE"):
    keep = np.ones(x.shape, bool) if ignore is None else (t.astype(int) != ignore)
    s = 1 / (1 + np.exp(-x))
    elem = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    n = ref_norm(mode, x.shape[0], x.size // x.shape[0], keep.sum())
    return (elem * keep).sum() / n, (s - t) * keep / n


def ref_norm(mode, outer, inner, valid):
    return max(1.0, {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode])


def sce_inputs(rs, shape, ignore=None):
    x = rs.randn(*shape) * 2
    t = rs.rand(*shape)
    if ignore is not None:
        t[rs.rand(*shape) < 0.3] = ignore
    return x, t


@pytest.mark.parametrize("mode", MODES + [None])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)])
def test_sce_gradient_with_ignore(mode, shape):
    x, t = sce_inputs(np.random.RandomState(5), shape, ignore=-1)
    check_gradient(sce_spec(-1, mode), [x, t])


@pytest.mark.parametrize("mode", MODES)
def test_sce_forward_backward_vs_reference(mode):
    x, t = sce_inputs(np.random.RandomState(6), (3, 4, 2), ignore=-1)
    _, bottom, top = run(sce_spec(-1, mode), [x, t], pd=[True, False])
    loss, grad = ref_sce(x, t, -1, mode)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("normalize,expect", [(None, "BATCH_SIZE"), (True, "VALID"),
                                              (False, "BATCH_SIZE")])
def test_sce_default_and_legacy_normalize(normalize, expect):
    x, t = sce_inputs(np.random.RandomState(7), (4, 5), ignore=-1)
    _, (loss,) = forward(sce_spec(-1, normalize=normalize), [x, t])
    assert float(loss) == pytest.approx(ref_sce(x, t, -1, expect)[0], rel=1e-12)


def test_sce_stable_for_large_inputs():
    x = np.array([[80.0, -80.0, 0.0]], np.float32)
    t = np.array([[0.0, 1.0, 1.0]], np.float32)
    layer, bottom, top = build_layer(sce_spec(), [x, t], dtype=np.float32)
    layer.Forward(bottom, top)
    assert float(top[0].data) == pytest.approx(160 + np.log(2), rel=1e-6)


def test_sce_all_ignored():
    x = np.random.RandomState(8).randn(2, 3)
    _, bottom, top = run(sce_spec(-1, "VALID"), [x, -np.ones((2, 3))], pd=[True, False])
    assert float(top[0].data) == 0 and np.all(bottom[0].diff == 0)


def test_sce_errors():
    with pytest.raises(LayerSetupError, match="same count"):
        build_layer(sce_spec(), [np.zeros((2, 3)), np.zeros((2, 4))])
    layer, bottom, top = run(sce_spec(), [np.zeros((2, 3)), np.zeros((2, 3))])
    with pytest.raises(LayerSetupError, match="label"):
        layer.Backward(top, [True, True], bottom)


# -- HingeLoss ------------------------------------------------------------------------------------
def hinge_spec(norm=None):
    s = 'type: "HingeLoss" bottom: "x" bottom: "label" top: "loss"'
    return s + (" hinge_loss_param { norm: %s }" % norm if norm else "")


def hinge_inputs(rs, n, c):
    x = rs.uniform(-2, 2, size=(n, c))
    x[np.abs(np.abs(x) - 1) < 0.05] += 0.2  # keep away from the hinge kink |x| = 1
    return x, rs.randint(0, c, size=n).astype(float)


def ref_hinge(x, label, norm="L1"):
    n = x.shape[0]
    t = -np.ones_like(x.reshape(n, -1))
    t[np.arange(n), label.astype(int)] = 1
    m = np.maximum(0, 1 - t * x.reshape(n, -1))
    if norm == "L2":
        return (m ** 2).sum() / n, (-2 * t * m / n).reshape(x.shape)
    return m.sum() / n, (-t * (m > 0) / n).reshape(x.shape)


@pytest.mark.parametrize("norm", [None, "L1", "L2"])
@pytest.mark.parametrize("n,c", [(4, 3), (3, 5)])
def test_hinge_gradient(norm, n, c):
    check_gradient(hinge_spec(norm), list(hinge_inputs(np.random.RandomState(9), n, c)))


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_forward_backward_vs_reference(norm):
    x, lab = hinge_inputs(np.random.RandomState(10), 5, 4)
    x4 = x.reshape(5, 2, 2, 1)
    _, bottom, top = run(hinge_spec(norm), [x4, lab], pd=[True, False], top_diff=0.5)
    loss, grad = ref_hinge(x4, lab, norm)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, 0.5 * grad, rtol=1e-12)


def test_hinge_errors():
    with pytest.raises(LayerSetupError, match="one label per item"):
        build_layer(hinge_spec(), [np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(LayerSetupError, match=r"not in \[0, 3\)"):
        forward(hinge_spec(), [np.zeros((2, 3)), np.array([0.0, 3.0])])


# -- MultinomialLogisticLoss ----------------------------------------------------------------------
MLL = 'type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "loss"'


def mll_inputs(rs, n, c):
    p = rs.uniform(0.05, 1, size=(n, c))
    return p / p.sum(axis=1, keepdims=True), rs.randint(0, c, size=n).astype(float)


@pytest.mark.parametrize("n,c", [(4, 3), (2, 5)])
def test_mll_gradient(n, c):
    check_gradient(MLL, list(mll_inputs(np.random.RandomState(11), n, c)))


def test_mll_forward_backward_with_clamp():
    p = np.array([[0.2, 0.8], [0.0, 1.0], [0.5, 0.5]])
    lab = np.array([1.0, 0.0, 0.0]).reshape(3, 1, 1, 1)
    _, bottom, top = run(MLL + " loss_weight: 2", [p, lab], pd=[True, False])
    want = -(np.log(0.8) + np.log(1e-20) + np.log(0.5)) / 3
    assert float(top[0].data) == pytest.approx(want, rel=1e-12)
    grad = np.zeros_like(p)
    grad[0, 1], grad[1, 0], grad[2, 0] = -2 / 3 / 0.8, -2 / 3 / 1e-20, -2 / 3 / 0.5
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-12)


def test_mll_errors():
    with pytest.raises(LayerSetupError, match="one value per item"):
        build_layer(MLL, [np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(LayerSetupError, match=r"not in \[0, 3\)"):
        forward(MLL, [np.ones((2, 3)), np.array([-1.0, 0.0])])


# -- ContrastiveLoss ------------------------------------------------------------------------------
def contrastive_spec(margin=None, legacy=None):
    f = " ".join(x for x in ["margin: %g" % margin if margin is not None else "",
                             "legacy_version: %s" % str(legacy).lower() if legacy is not None
                             else ""] if x)
    s = 'type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "sim" top: "loss"'
    return s + (" contrastive_loss_param { %s }" % f if f else "")


def ref_contrastive(a, b, sim, margin=1.0, legacy=False):
    n = a.shape[0]
    d = (a - b).reshape(n, -1)
    dsq = (d ** 2).sum(1)
    loss, coef = 0.0, np.zeros(n)
    for i in range(n):
        if int(sim[i]):
            loss += dsq[i]
            coef[i] = 1
        elif legacy:
            loss += max(margin - dsq[i], 0)
            coef[i] = -1.0 if margin - dsq[i] > 0 else 0
        else:
            dist = np.sqrt(dsq[i])
            loss += max(margin - dist, 0) ** 2
            coef[i] = -(margin - dist) / (dist + 1e-4) if margin - dist > 0 else 0
    g = (coef[:, None] * d / n).reshape(a.shape)
    return loss / n / 2, g, -g


def contrastive_inputs(rs, n, c, margin, legacy):
    """Pairs whose distance (or squared distance) stays away from the margin kink."""
    a = rs.randn(n, c, 1, 1) * 0.5
    b = a + rs.randn(n, c, 1, 1) * 0.5
    d = (a - b).reshape(n, -1)
    dist = (d ** 2).sum(1) if legacy else np.sqrt((d ** 2).sum(1))
    scale = np.where(np.abs(dist - margin) < 0.1, 1.5, 1.0)
    b = a - d.reshape(a.shape) * scale[:, None, None, None]
    sim = (np.arange(n) % 2).astype(float).reshape(n, 1, 1, 1)
    return a, b, sim


@pytest.mark.parametrize("legacy", [None, False, True])
@pytest.mark.parametrize("margin", [1.0, 2.5])
def test_contrastive_gradient(legacy, margin):
    inputs = contrastive_inputs(np.random.RandomState(12), 6, 3, margin, legacy)
    # Caffe's non-legacy gradient divides by (d + 1e-4), not d: relative error ~1e-4 / d.
    layer = check_gradient(contrastive_spec(margin, legacy), list(inputs),
                           rtol=1e-4 if legacy else 2e-3)
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(1)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_forward_backward_vs_reference(legacy):
    rs = np.random.RandomState(13)
    a, b = rs.randn(5, 4) * 0.4, rs.randn(5, 4) * 0.4
    sim = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    _, bottom, top = run(contrastive_spec(1.5, legacy), [a, b, sim], pd=[True, True, False],
                         top_diff=1.3)
    loss, ga, gb = ref_contrastive(a, b, sim, 1.5, legacy)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, 1.3 * ga, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bottom[1].diff, 1.3 * gb, rtol=1e-12, atol=1e-15)


def test_contrastive_beyond_margin_has_no_loss():
    a, b = np.zeros((2, 2)), np.array([[3.0, 0.0], [0.0, 4.0]])
    _, bottom, top = run(contrastive_spec(), [a, b, np.zeros(2)], pd=[True, True, False])
    assert float(top[0].data) == 0 and np.all(bottom[0].diff == 0)


def test_contrastive_errors():
    z = np.zeros
    with pytest.raises(LayerSetupError, match="exactly 3 bottom"):
        build_layer(contrastive_spec(), [z((2, 3)), z((2, 3))])
    with pytest.raises(LayerSetupError, match="same shape"):
        build_layer(contrastive_spec(), [z((2, 3)), z((2, 4)), z(2)])
    with pytest.raises(LayerSetupError, match="N x C"):
        build_layer(contrastive_spec(), [z((2, 3, 2)), z((2, 3, 2)), z(2)])
    with pytest.raises(LayerSetupError, match="one value per pair"):
        build_layer(contrastive_spec(), [z((2, 3)), z((2, 3)), z((2, 2))])
    layer, bottom, top = run(contrastive_spec(), [z((2, 3)), z((2, 3)), z(2)])
    with pytest.raises(LayerSetupError, match="similarity"):
        layer.Backward(top, [True, True, True], bottom)
