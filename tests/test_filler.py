"""Fillers, as Caffe's filler.hpp defines them (statistics on large blobs, exact formulas)."""
import math
import os

import numpy as np
import pytest
from google.protobuf import text_format

from decaf import set_random_seed
from decaf.blob import Blob
from decaf.errors import DecafError
from decaf.filler import fill
from decaf.proto import caffe_pb2
from decaf.testing.golden import GOLDEN_DIR


def filler(text):
    return text_format.Parse(text, caffe_pb2.FillerParameter())


def filled(shape, text):
    b = Blob(shape)
    fill(b, filler(text))
    return b.data


def test_constant():
    assert np.all(filled((3, 4), 'type: "constant" value: 2.5') == 2.5)
    assert np.all(filled((3,), "") == 0)          # default filler: constant 0


def test_uniform_range():
    d = filled((100, 100), 'type: "uniform" min: -2 max: 3')
    assert d.min() >= -2 and d.max() <= 3
    assert d.mean() == pytest.approx(0.5, abs=0.05)


def test_gaussian_moments():
    d = filled((200, 100), 'type: "gaussian" mean: 1 std: 0.5')
    assert d.mean() == pytest.approx(1, abs=0.02) and d.std() == pytest.approx(0.5, abs=0.02)


def test_gaussian_sparse_keeps_about_sparse_nonzeros_per_row():
    d = filled((50, 400), 'type: "gaussian" std: 1 sparse: 10')
    # non-zero probability sparse / num_outputs, num_outputs = shape[0]
    assert (d != 0).mean() == pytest.approx(10 / 50, abs=0.02)


def test_positive_unitball_rows_sum_to_one():
    d = filled((7, 3, 2, 2), 'type: "positive_unitball"')
    assert np.all(d >= 0)
    np.testing.assert_allclose(d.reshape(7, -1).sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("norm,n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 40 * 5 * 5),
                                    ("AVERAGE", (3 * 25 + 40 * 25) / 2)])
def test_xavier_bounds_and_variance(norm, n):
    d = filled((40, 3, 5, 5), 'type: "xavier" variance_norm: %s' % norm)
    scale = math.sqrt(3.0 / n)
    assert np.abs(d).max() <= scale
    assert d.var() == pytest.approx(1.0 / n, rel=0.1)


@pytest.mark.parametrize("norm,n", [("FAN_IN", 20 * 9), ("FAN_OUT", 64 * 9)])
def test_msra_std(norm, n):
    d = filled((64, 20, 3, 3), 'type: "msra" variance_norm: %s' % norm)
    assert d.std() == pytest.approx(math.sqrt(2.0 / n), rel=0.05)


def test_bilinear_formula():
    d = filled((2, 1, 4, 4), 'type: "bilinear"')
    f = math.ceil(4 / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    expect = np.array([[(1 - abs(x / f - c)) * (1 - abs(y / f - c)) for x in range(4)]
                       for y in range(4)])
    np.testing.assert_allclose(d[1, 0], expect, rtol=1e-6)


def test_bilinear_matches_caffes_weights():
    # golden deconv_bilinear: Caffe's own bilinear filler wrote weights.caffemodel
    path = os.path.join(GOLDEN_DIR, "layers", "deconv_bilinear", "weights.caffemodel")
    with open(path, "rb") as f:
        net = caffe_pb2.NetParameter.FromString(f.read())
    bp = next(l for l in net.layer if l.blobs).blobs[0]
    want = np.asarray(bp.data, np.float32).reshape(tuple(bp.shape.dim))
    b = Blob(want.shape)
    fill(b, filler('type: "bilinear"'))
    np.testing.assert_array_equal(b.data, want)


def test_seed_repeats():
    set_random_seed(5)
    a = filled((10,), 'type: "gaussian"').copy()
    set_random_seed(5)
    np.testing.assert_array_equal(a, filled((10,), 'type: "gaussian"'))


def test_unknown_filler_and_sparse_misuse_are_errors():
    with pytest.raises(DecafError, match="Unknown filler type 'gausian'"):
        filled((2,), 'type: "gausian"')
    with pytest.raises(DecafError, match="Sparsity not supported"):
        filled((2, 2), 'type: "xavier" sparse: 3')
