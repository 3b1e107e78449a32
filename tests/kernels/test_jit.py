"""decaf.kernels.jit: every kernel is compiled serial and parallel; a call picks one by the
thread count and its size, and the two compilations give the same numbers."""
import numpy as np
import pytest

from decaf.kernels import conv, depthwise, eltwise, elementwise, jit, pooling, threads


@pytest.fixture
def two_threads():
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    yield threads.get_num_threads()
    threads.set_num_threads(before)


def _cases(rs):
    x = rs.standard_normal((2, 3, 9, 11)).astype(np.float32)
    w2 = rs.standard_normal((6, 1, 3, 3)).astype(np.float32)     # two outputs per channel
    e = np.empty(0, np.float32)
    col = np.empty((3 * 9, 9 * 11), np.float32)
    return [
        (conv.im2col_rows, lambda: (x, 1, 0, 9, 3, 3, 1, 1, 1, 1, 1, 1, 11, col), -1),
        (depthwise._depthwise_forward, lambda: (x, w2, e, False, 2, 1, 1, 1, 1, 1,
                                           np.empty((2, 6, 5, 11), np.float32), 2, e, e, e, e,
                                           False, False, False, True, np.float32(0.5)), 10),
        (elementwise.relu_forward, lambda: (x.ravel(), np.empty(x.size, np.float32),
                                            np.float32(0.1)), 1),
        (eltwise.sum2, lambda: (x.ravel(), np.float32(2), x.ravel()[::-1].copy(),
                                np.float32(-1), np.empty(x.size, np.float32), True,
                                np.float32(0)), 4),
        (pooling.max_forward, lambda: (x, 3, 3, 2, 2, 1, 1, np.empty((2, 3, 6, 7), np.float32),
                                       np.empty((2, 3, 6, 7), np.int32)), -2),
    ]


def test_serial_and_parallel_compilations_agree_bitwise(two_threads):
    rs = np.random.RandomState(0)
    for k, make, out in _cases(rs):
        a, b = make(), make()
        k.serial(*a)
        k.parallel(*b)
        outs = [out] if out != -2 else [-2, -1]
        for i in outs:
            np.testing.assert_array_equal(a[i], b[i], err_msg=k.__name__)


@pytest.mark.parametrize("one_pool", [False, True])
@pytest.mark.parametrize("k, limit", [(elementwise.relu_forward, "STREAMING_MIN_ELEMENTS"),
                                      (pooling.max_forward, "PARALLEL_MIN_ELEMENTS")])
def test_a_call_picks_parallel_only_for_large_work_on_several_threads(two_threads,
                                                                      monkeypatch, k, limit,
                                                                      one_pool):
    # streaming passes (ReLU, ...) have their own, higher size limit (NOTES, section 12);
    # with one OpenMP pool both limits are lower (NOTES, section 15)
    assert k.streaming == (limit == "STREAMING_MIN_ELEMENTS")
    assert jit.STREAMING_MIN_ELEMENTS > jit.PARALLEL_MIN_ELEMENTS
    assert jit.ONE_POOL_STREAMING_MIN_ELEMENTS > jit.ONE_POOL_PARALLEL_MIN_ELEMENTS
    monkeypatch.setattr(threads, "single_pool", lambda: one_pool)
    bar = getattr(jit, ("ONE_POOL_" if one_pool else "") + limit)
    picked = []
    monkeypatch.setattr(k, "serial", lambda *a: picked.append("serial"))
    monkeypatch.setattr(k, "parallel", lambda *a: picked.append("parallel"))
    small = np.zeros(bar - 1, np.float32)
    large = np.zeros(bar, np.float32)
    k(small, small, np.float32(0))
    k(large, large, np.float32(0))
    threads.set_num_threads(1)
    k(large, large, np.float32(0))
    assert picked == ["serial", "parallel", "serial"]


def test_serial_copy_keeps_its_own_name_and_cache_entry():
    k = conv.im2col_rows
    assert k.serial.py_func.__qualname__ == k.parallel.py_func.__qualname__ + "_serial"
    assert k.__doc__ == k.py_func.__doc__
