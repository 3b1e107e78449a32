"""decaf.kernels.reduce (lane-wise float64 sums) against plain float64 sums."""
import math

import numpy as np
import pytest

from decaf.kernels import reduce as rd


@pytest.mark.parametrize("n", [0, 1, 7, rd.LANES - 1, rd.LANES, rd.LANES + 1, 3 * rd.LANES + 5,
                               1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums(n, dtype):
    rs = np.random.RandomState(n)
    a = (rs.randn(n) * 5 + 3).astype(dtype)
    b = rs.randn(n).astype(dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert rd.row_sum(a) == pytest.approx(math.fsum(a64), rel=1e-12, abs=1e-12)
    p, t = rd.row_dot_sum(a, b)
    # the products are taken in the arrays' dtype (as Caffe's), then summed in float64
    assert p == pytest.approx(math.fsum((a * b).astype(np.float64)), rel=1e-10, abs=1e-10)
    assert t == pytest.approx(math.fsum(a64), rel=1e-12, abs=1e-12)
    shift = float(a64[0]) if n else 0.0
    s, q = rd.row_sum_sq(a, shift)
    assert s == pytest.approx(math.fsum(a64 - shift), rel=1e-10, abs=1e-10)
    assert q == pytest.approx(math.fsum((a64 - shift) ** 2), rel=1e-12, abs=1e-12)


def test_lanes_accumulate_across_rows():
    """Rows of different lengths (remainders land in the first lanes) into one set of lanes."""
    rs = np.random.RandomState(1)
    rows = [rs.randn(k) for k in (5, 64, 130, 1, 0, 77)]
    t, p, s = rd.lanes(), rd.lanes(), rd.lanes()
    for r in rows:
        rd.add_sum(r, t)
        rd.add_dot_sum(r, r[::-1].copy(), p, s)
    allv = np.concatenate(rows)
    assert rd.total(t) == pytest.approx(math.fsum(allv), rel=1e-12)
    assert rd.total(s) == pytest.approx(math.fsum(allv), rel=1e-12)
    assert rd.total(p) == pytest.approx(math.fsum(np.concatenate([r * r[::-1] for r in rows])),
                                        rel=1e-12)


def test_nonfinite_propagates():
    a = np.ones(200, np.float32)
    a[130] = np.nan
    assert math.isnan(rd.row_sum(a))
    a[130] = np.inf
    assert rd.row_sum(a) == np.inf
    a[3] = -np.inf
    assert math.isnan(rd.row_sum(a))
    p, t = rd.row_dot_sum(np.full(70, np.inf), np.zeros(70))
    assert math.isnan(p) and t == np.inf
