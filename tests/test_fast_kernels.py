"""Tests of the BLAS helpers (decaf.kernels.blas, decaf.kernels.cblas), the thread policy
(decaf.kernels.threads) and the in-place SGD update, against NumPy in float64, with every
fallback switch exercised.  The compiled kernels are tested in tests/kernels/."""
import itertools

import numpy as np
import pytest

from decaf import solvers
from decaf.kernels import blas, threads


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


# -- BLAS helpers and the SGD update -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy(dtype):
    x, y = rand(3, 4).astype(dtype), rand(3, 4, seed=1).astype(dtype)
    want = y + dtype(0.5) * x
    if blas.HAVE_BETA_GEMM:
        assert blas.axpy(dtype(0.5), x, y)
        np.testing.assert_allclose(y, want, rtol=1e-6)
    assert not blas.axpy(dtype(0.5), x.T, y.T.copy().T)     # not contiguous: caller's job


@pytest.mark.parametrize("with_blas", ["scipy", "cblas", "none"])
def test_sgd_update_and_regularize_in_place(monkeypatch, with_blas):
    if with_blas != "scipy":
        monkeypatch.setattr(blas, "_blas", None)
    if with_blas == "none":
        monkeypatch.setattr(blas, "_use_cblas", False)
    w = rand(5, 3).astype(np.float32)
    g = rand(5, 3, seed=1).astype(np.float32)
    h = rand(5, 3, seed=2).astype(np.float32)
    want_g = g + np.float32(0.004) * w
    want_h = np.float32(0.9) * h + np.float32(0.01) * want_g
    solvers.regularize(g, w, 0.004, "L2", np.empty_like(g))
    np.testing.assert_allclose(g, want_g, rtol=1e-6)
    solvers.sgd_update(g, h, 0.01, 0.9)
    np.testing.assert_allclose(h, want_h, rtol=1e-6)
    np.testing.assert_array_equal(g, h)


# -- decaf.kernels.cblas: NumPy's own BLAS through ctypes ----------------------------------------------

def test_cblas_binds_numpys_blas():
    """The wheel's OpenBLAS is found and bound (a failure here means every fast path below
    silently falls back to NumPy: the speed claims of benchmarks/ would not hold)."""
    from decaf.kernels import cblas
    assert cblas.available(np.float32) and cblas.available(np.float64)
    assert not any("scipy.libs" in p for p in cblas._mapped_blas_libraries())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb,tc", list(itertools.product([False, True], repeat=3)))
def test_cblas_gemm_strided_operands(dtype, ta, tb, tc):
    """c = alpha a @ b + beta c on windows of larger buffers (lda, ldb, ldc > row length),
    transposed views and a column-major c, exactly as NumPy computes it."""
    from decaf.kernels import cblas
    big_a, big_b = rand(9, 12).astype(dtype), rand(12, 10, seed=1).astype(dtype)
    a = big_a[1:6, 2:9] if not ta else np.ascontiguousarray(big_a[2:9, 1:6]).T  # 5 x 7
    b = big_b[2:9, 3:7] if not tb else big_b.T[3:7, 2:9].T
    store = rand(8, 9, seed=2).astype(dtype)
    c = store[1:6, 2:6] if not tc else store.T.copy()[2:6, 1:6].T
    want = 0.5 * c + 2.0 * (a.astype(np.float64) @ b.astype(np.float64))
    before = store.copy()
    assert cblas.gemm(a, b, c, alpha=2.0, beta=0.5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)
    if not tc:                                   # nothing outside the window was touched
        mask = np.ones(store.shape, bool)
        mask[1:6, 2:6] = False
        np.testing.assert_array_equal(store[mask], before[mask])


def test_cblas_declines_what_blas_cannot_take():
    from decaf.kernels import cblas
    a, b = rand(4, 6), rand(6, 3)
    c = np.zeros((8, 3))[::2]                    # every other row: ldc = 6, still BLAS's
    assert cblas.gemm(a, b, c) and np.allclose(c, a @ b)
    c2 = np.zeros((4, 6))[:, ::2]                # no unit stride at all
    assert not cblas.gemm(a, b, c2) and not c2.any()
    assert not cblas.gemm(a.astype(np.float32), b, np.zeros((4, 3)))   # mixed dtypes
    with pytest.raises(ValueError):
        cblas.gemm(a, b, np.zeros((4, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cblas_transpose_and_axpy(dtype):
    from decaf.kernels import cblas
    a = rand(7, 11).astype(dtype)[1:6, 2:10]     # strided rows
    out = np.empty((8, 5), dtype)
    cblas.transpose(a, out)
    np.testing.assert_array_equal(out, a.T)
    x, y = rand(10).astype(dtype), rand(10, seed=1).astype(dtype)
    want = y + dtype(0.25) * x
    assert cblas.axpy(0.25, x, y)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    assert not cblas.axpy(0.25, x[::2], y[:5])   # not contiguous


def test_cblas_off_keeps_numpy_forms(monkeypatch):
    """With no BLAS bound (DECAF_CBLAS=0, or an unknown library) every helper declines and the
    convolution engine takes its NumPy layout."""
    from decaf.kernels import cblas
    monkeypatch.setitem(cblas._STATE, "fns", None)
    assert not cblas.available(np.float32) and cblas.raw_gemm(np.float32) is None
    a, b, c = rand(3, 4), rand(4, 2), np.zeros((3, 2))
    assert not cblas.gemm(a, b, c) and not c.any()
    out = np.empty((4, 3))
    cblas.transpose(a, out)                      # NumPy's copy
    np.testing.assert_array_equal(out, a.T)
    monkeypatch.setattr(blas, "_blas", None)
    c = rand(3, 2, seed=5)
    want = c + a @ b
    blas.gemm_accumulate(a, b, c)               # the convolution's dW += dY col^T
    np.testing.assert_allclose(c, want, rtol=1e-12)


def test_cblas_env_switch_disables_binding(monkeypatch):
    from decaf.kernels import cblas
    monkeypatch.setenv("DECAF_CBLAS", "0")
    assert cblas._load() is None
    monkeypatch.setenv("DECAF_CBLAS", "1")
    assert cblas._load() is not None


@pytest.mark.parametrize("env,want", [
    ({"OMP_NUM_THREADS": "3", "NUMBA_NUM_THREADS": "5", "OPENBLAS_NUM_THREADS": "7"}, 3),
    ({"NUMBA_NUM_THREADS": "5", "OPENBLAS_NUM_THREADS": "7"}, 5),
    ({"OPENBLAS_NUM_THREADS": "7"}, 7),
    ({"OMP_NUM_THREADS": "junk"}, None),                 # not a count: all CPUs
    # the pool size an importing parent process set is not a count
    ({"NUMBA_NUM_THREADS": "4", "DECAF_NUMBA_POOL_SIZE": "4", "OPENBLAS_NUM_THREADS": "1"}, 1),
    ({}, None),
])
def test_thread_count_from_the_environment(monkeypatch, env, want):
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "DECAF_NUMBA_POOL_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert threads._from_environment() == (want or threads.cpu_count())


def test_set_num_threads_reaches_numba_and_openblas():
    import numba
    from decaf.kernels import cblas
    before = threads.get_num_threads()
    try:
        assert threads.set_num_threads(1) == 1
        assert numba.get_num_threads() == 1
        if cblas.get_num_threads() is not None:
            assert cblas.get_num_threads() == 1
        top = numba.config.NUMBA_NUM_THREADS          # clipped to Numba's pool
        assert threads.set_num_threads(top + 5) == top == numba.get_num_threads()
        assert threads.get_num_threads() == top
    finally:
        threads.set_num_threads(before)
