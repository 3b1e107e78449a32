"""GEMM programs (decaf.kernels.gemm) and the one-pool thread policy (decaf.kernels.threads):
programs against NumPy's products, run on two threads with the parallel bar at 0, so that a
race between tasks would show as a wrong sum; the row engine's parallel paths against the
column engine in float64."""
import numpy as np
import pytest

from decaf.kernels import cblas, gemm, rowconv, threads
from decaf.kernels.im2col import conv_output_shape
from decaf.layers import conv as conv_mod

pytestmark = pytest.mark.skipif(not cblas.available(np.float64),
                                reason="decaf.kernels.cblas did not bind NumPy's BLAS")


@pytest.fixture
def parallel(monkeypatch):
    """Programs in parallel on two threads whatever their size (one pool, as with OpenMP)."""
    monkeypatch.setattr(threads, "single_pool", lambda: True)
    monkeypatch.setattr(gemm, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(gemm, "SPLIT_MIN_MACS", 0)
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    assert gemm.parallel()
    yield
    threads.set_num_threads(before)


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def test_grid_addresses():
    p = gemm.grid((100, 10, 1), (200, 0, 3), (300, 5, 0), 2, 3)
    assert p.shape == (2, 3, 3) and p.dtype == np.int64
    assert p[1, 2].tolist() == [100 + 10 + 2, 200 + 6, 300 + 5]


@pytest.mark.parametrize("m,k,n", [(37, 11, 5), (5, 11, 37), (64, 33, 64), (1, 7, 90),
                                   (90, 7, 1)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_split_gemm_is_blas_bit_for_bit(parallel, m, k, n, ta, tb, beta):
    """Blocks of rows (m >= n) or columns of C, each one BLAS call: the same values as one
    call, bit for bit, for every transpose and a result that accumulates."""
    for dtype in (np.float32, np.float64):
        a = rand(k, m).T if ta else rand(m, k)
        b = rand(n, k, seed=1).T if tb else rand(k, n, seed=1)
        a, b = a.astype(dtype), b.astype(dtype)
        c0 = rand(m, n, seed=2).astype(dtype)
        want, got = c0.copy(), c0.copy()
        assert cblas.gemm(a, b, want, 0.5, beta)
        assert gemm.gemm(a, b, got, 0.5, beta)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, 0.5 * (a.astype(np.float64) @ b) + beta * c0,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m,k,n", [(37, 11, 5), (5, 11, 37), (64, 33, 64), (1, 7, 90)])
def test_split_gemm_into_a_window(parallel, monkeypatch, m, k, n):
    """C a window of a larger matrix (ldc > n: an image's block of output rows): split in
    blocks over the threads too, the same values as one call, nothing outside the window."""
    calls = []
    real = gemm._split.parallel
    monkeypatch.setattr(gemm._split, "parallel", lambda *args: (calls.append(1), real(*args)))
    for dtype in (np.float32, np.float64):
        a, b = rand(m, k).astype(dtype), rand(k, n, seed=1).astype(dtype)
        big = rand(m + 2, n + 7, seed=2).astype(dtype)
        want, got = big.copy(), big.copy()
        assert cblas.gemm(a, b, want[1:m + 1, 3:n + 3], 1.0, 1.0)
        assert gemm.gemm(a, b, got[1:m + 1, 3:n + 3], 1.0, 1.0)
        np.testing.assert_array_equal(got, want)
    assert len(calls) == 2
    if m == 1:             # (a one-row window is row-major whatever its strides say)
        return
    # a column-major window: one cblas call (its transposed form), the same values
    c = rand(n + 3, m, seed=3).T[:, :n]
    assert gemm.gemm(rand(m, k), rand(k, n, seed=1), c)
    np.testing.assert_allclose(c, rand(m, k) @ rand(k, n, seed=1), rtol=1e-12)
    assert len(calls) == 2


def test_split_gemm_declines_and_checks_like_cblas(parallel):
    a, b = rand(4, 3), rand(3, 5)
    with pytest.raises(ValueError):
        gemm.gemm(a, rand(4, 5), np.empty((4, 5)))
    assert gemm.gemm(a.astype(np.float32), b.astype(np.float32), np.empty((4, 5))) is False


def _program_inputs(rows, cols, seed=0):
    a = rand(rows, cols, 4, 3, seed=seed)          # A[r, j]: 4 x 3
    b = rand(rows, cols, 3, 5, seed=seed + 1)      # B[r, j]: 3 x 5
    return a, b


def _grid(a, b, c_base, c_row, c_col):
    it = a.itemsize
    ptrs = np.empty(a.shape[:2] + (3,), np.int64)
    for r in range(a.shape[0]):
        for j in range(a.shape[1]):
            ptrs[r, j] = (a[r, j].ctypes.data, b[r, j].ctypes.data,
                          c_base + (r * c_row + j * c_col) * it)
    return ptrs


def test_rows_program(parallel):
    """One task per row, J GEMMs accumulating into the row's own result."""
    a, b = _program_inputs(9, 3)
    c = np.full((9, 4, 5), np.nan)
    shape = gemm.Shape(np.float64, cblas.NO_TRANS, cblas.NO_TRANS, 4, 5, 3, 3, 5, 5)
    for _ in range(20):
        shape.rows(_grid(a, b, c.ctypes.data, 20, 0), 0.0)
        np.testing.assert_allclose(c, np.einsum("rjmk,rjkn->rmn", a, b), rtol=1e-12)


@pytest.mark.parametrize("rows", [1, 2, 7, 16])
def test_accumulate_program(parallel, rows):
    """Every row adds into the same C_j: blocks of rows into their own copies, then added
    (GEMMs of 32 x 64 x 16, long enough for two tasks on one C_j to race)."""
    m, n, k = 32, 64, 16
    a, b = rand(rows, 3, m, k, seed=3), rand(rows, 3, k, n, seed=4)
    acc = np.ones((2, 3, m, n))           # two accumulators of C_0..C_2
    shape = gemm.Shape(np.float64, cblas.NO_TRANS, cblas.NO_TRANS, m, n, k, k, n, n)
    want = 1 + np.einsum("rjmk,rjkn->jmn", a, b)
    for _ in range(10):
        acc[0], acc[1] = 1, 0
        shape.accumulate(_grid(a, b, acc[0].ctypes.data, 0, m * n),
                         [acc[0].ctypes.data, acc[1].ctypes.data])
        np.testing.assert_allclose(acc[0] + acc[1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows,reach", [(16, 3), (9, 2), (5, 5), (12, 1), (3, 4)])
def test_phased_program_keeps_overlapping_rows_apart(parallel, rows, reach):
    """Row r adds into result rows r .. r + reach - 1 (a data gradient's overlap): the
    phases must never run two overlapping rows at once (a race loses a sum).  The GEMMs are
    large enough (32 x 64 x 16 per result row) for two tasks to overlap in time."""
    m, n, k = 32, 64, 16
    a = rand(rows, 2, m * reach, k, seed=7)
    b = rand(rows, 2, k, n, seed=8)
    shape = gemm.Shape(np.float64, cblas.NO_TRANS, cblas.NO_TRANS, m * reach, n, k, k, n, n)
    want = np.zeros((rows + reach, m, n))
    for r in range(rows):
        for j in range(2):
            want[r:r + reach] += (a[r, j] @ b[r, j]).reshape(reach, m, n)
    for _ in range(20):
        c = np.zeros((rows + reach, m, n))
        shape.phased(_grid(a, b, c.ctypes.data, m * n, 0), reach)
        np.testing.assert_allclose(c, want, rtol=1e-12, atol=1e-12)
    assert shape.phased_blocks(16, 3) == 4 and shape.phased_blocks(8, 5) == 1


PARALLEL_CONV = [  # num, channels, (H, W), num_output, kernel, stride, pad, group
    (4, 16, (12, 6), 5, (3, 3), (1, 1), (1, 1), 1),     # shifted, phased data gradient
    (4, 16, (8, 8), 6, (5, 5), (1, 1), (0, 0), 1),      # oh = 4: the data gradient in halves
    (3, 8, (9, 7), 4, (3, 3), (2, 1), (1, 1), 2),       # row buffer, groups, stride 2
    (3, 4, (10, 5), 6, (5, 3), (1, 1), (2, 1), 1),      # row buffer, kh = 5
    (2, 3, (9, 9), 8, (3, 3), (1, 1), (1, 1), 1),       # direct: a first layer over RGB
    (1, 3, (9, 8), 8, (3, 3), (2, 1), (1, 1), 1),       # direct at batch 1: rows in parallel
    (1, 4, (7, 7), 6, (3, 3), (1, 1), (1, 1), 2),       # ... and groups
]


@pytest.mark.parametrize("batch_inner", [True, False])
@pytest.mark.parametrize("args", PARALLEL_CONV)
def test_row_engine_in_parallel_matches_the_column_engine(parallel, monkeypatch, args,
                                                          batch_inner):
    if args[4][0] * args[1] // args[-1] < rowconv.SHIFT_MIN_ROWS:
        monkeypatch.setattr(rowconv, "SHIFT_MIN_ROWS", 1)
    num, c, spatial, m, kernel, stride, pad, group = args
    geom = (kernel, stride, pad, (1, 1))
    out = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
    row = rowconv.RowConv(np, np.float64, num, c, spatial, m, geom, group, out,
                          batch_inner=batch_inner)
    ref = conv_mod._GemmConv(np, np.float64, num, (c,) + spatial, m, geom, group, out)
    x, w = rand(num, c, *spatial), rand(m, c // group, *kernel, seed=2)
    b, dy = rand(m, seed=3), rand(num, m, *out, seed=4)

    def run(engine, want_x=True):
        y = np.empty((num, m) + out)
        engine.forward(x, w, b, y)
        dw, db = np.full_like(w, 0.5), np.full_like(b, 0.25)
        dx = np.full_like(x, 7.0) if want_x else None
        engine.backward(dy, x, w, dw, db, dx)
        return y, dw, db, dx

    want, want_nox = run(ref), run(ref, False)
    for _ in range(10):
        for got, exp in zip(run(row), want):
            np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-10)
        for got, exp in zip(run(row, False)[:3], want_nox[:3]):   # blocked weight gradient
            np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-10)


def test_one_pool_keeps_openblas_at_one_thread():
    import numba
    before = threads.get_num_threads()
    try:
        threads.set_num_threads(2)
        if threads.single_pool():
            assert numba.threading_layer() == "omp"
            if cblas.get_num_threads() is not None:
                assert cblas.get_num_threads() == 1
        elif cblas.get_num_threads() is not None:
            assert cblas.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        threads.set_num_threads(before)


def test_mpi_ranks_share_the_cpus(monkeypatch):
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "DECAF_NUMBA_POOL_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    assert threads.local_ranks() == 2
    assert threads._from_environment() == max(1, threads.cpu_count() // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")           # an explicit count wins
    assert threads._from_environment() == 3


def _child_work(queue):
    from decaf.kernels import elementwise
    x = np.arange(1 << 20, dtype=np.float32) - (1 << 19)
    y = np.empty_like(x)
    elementwise.relu_forward(x, y, np.float32(0))      # large: parallel in the parent
    queue.put((threads.get_num_threads(), float(y.sum())))


def test_a_forked_child_runs_on_one_thread():
    """GNU OpenMP's pool does not survive fork (Numba aborts the child at its first parallel
    loop): a forked child runs decaf's kernels serially."""
    import multiprocessing
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    try:
        x = np.ones(1 << 20, np.float32)
        from decaf.kernels import elementwise
        elementwise.relu_forward(x, np.empty_like(x), np.float32(0))   # the pool is running
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child_work, args=(queue,))
        proc.start()
        proc.join(120)
        assert proc.exitcode == 0
        count, total = queue.get(timeout=5)
        assert total == float(sum(range(1, 1 << 19)))
        assert count == (1 if threads.single_pool() else 2)
    finally:
        threads.set_num_threads(before)


@pytest.mark.parametrize("args", [
    (3, 4, (9, 8), 6, (3, 3), (1, 1), (1, 1), 1),
    (2, 6, (7, 7), 8, (3, 3), (2, 2), (1, 1), 2),
    (2, 8, (6, 6), 16, (1, 1), (1, 1), (0, 0), 1),
])
@pytest.mark.parametrize("per_image", [False, True])
def test_column_engine_with_split_gemms(parallel, args, per_image):
    """The im2col engine's GEMMs split over two threads (blas.matmul, conv._gemm) against the
    same engine on one thread, forward and both gradients."""
    num, c, spatial, m, kernel, stride, pad, group = args
    geom = (kernel, stride, pad, (1, 1))
    out = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
    x, w = rand(num, c, *spatial), rand(m, c // group, *kernel, seed=2)
    b, dy = rand(m, seed=3), rand(num, m, *out, seed=4)

    def run():
        eng = conv_mod._GemmConv(np, np.float64, num, (c,) + spatial, m, geom, group, out,
                                 image_by_image=per_image)
        assert eng.per_image == per_image
        y = np.empty((num, m) + out)
        eng.forward(x, w, b, y)
        dw, db, dx = np.full_like(w, 0.5), np.full_like(b, 0.25), np.full_like(x, 7.0)
        eng.backward(dy, x, w, dw, db, dx)
        return y, dw, db, dx

    two = run()
    threads.set_num_threads(1)
    one = run()
    for a, e in zip(two, one):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 70), (70, 3), (37, 37), (1, 40), (40, 1), (33, 17)])
def test_transpose_in_blocks(parallel, monkeypatch, dtype, shape):
    """gemm.transpose over two threads, blocks of the longer side (rows or columns of a) into
    strided windows, equal to a.T bit for bit; below the bar and on one thread cblas's call."""
    monkeypatch.setattr(gemm, "TRANSPOSE_SPLIT_MIN", 0)
    monkeypatch.setattr(gemm, "SPLIT_ALIGN", 4)          # several blocks even of small arrays
    calls = []
    real = gemm._transpose_split.parallel
    monkeypatch.setattr(gemm._transpose_split, "parallel",
                        lambda *args: (calls.append(args[-3:]), real(*args)))
    rows, cols = shape
    big = rand(rows + 2, cols + 5).astype(dtype)
    a = big[1:rows + 1, 2:cols + 2]                       # lda = cols + 5
    out_big = np.full((cols + 1, rows + 3), -1.0, dtype)
    out = out_big[:cols, 1:rows + 1]                      # ldo = rows + 3
    assert gemm.transpose(a, out) is out
    np.testing.assert_array_equal(out, a.T)
    np.testing.assert_array_equal(out_big[cols], -1.0)    # nothing outside the window
    np.testing.assert_array_equal(out_big[:, 0], -1.0)
    np.testing.assert_array_equal(out_big[:, rows + 1:], -1.0)
    count, size, by_rows = calls[-1]
    assert by_rows == (rows >= cols) and count == max(rows, cols) and size % 4 == 0
    threads.set_num_threads(1)                            # one thread: one call, no blocks
    calls.clear()
    out[...] = 0
    gemm.transpose(a, out)
    np.testing.assert_array_equal(out, a.T)
    assert not calls


def test_bound_functions_keep_the_fast_dispatch(monkeypatch):
    """Each bound BLAS function has a ctypes class of its own, so that the compiled loops that
    take them as arguments find their compiled versions on Numba's fast path whatever the
    order of calls (sgemm, omatcopy, dgemm); one shared class sent every call but the first
    kind through the dispatcher's typing (~350 us a call)."""
    fns = [cblas.raw_gemm(np.float32), cblas.raw_gemm(np.float64)]
    a32, a64 = np.ones((4, 4), np.float32), np.ones((4, 4), np.float64)
    omat = [cblas.omatcopy(a, np.empty_like(a)) for a in (a32, a64)]
    fns += [c[0] for c in omat if c is not None]
    assert len({type(f) for f in fns}) == len(fns)

    def program(a):
        ptrs = np.array([[a.ctypes.data, a.ctypes.data, a.ctypes.data, 4, 4]], np.int64)
        gemm._program.serial(cblas.raw_gemm(a.dtype), cblas.NO_TRANS, cblas.NO_TRANS, 4,
                             a.dtype.type(0.0), 4, 4, 4, ptrs, np.ones(1, a.dtype),
                             np.array([0, 1], np.int64))

    def transpose(a):
        gemm._transpose_split.serial(cblas.omatcopy(a, a)[0], 4, 4, a.ctypes.data, 4,
                                     4 * a.itemsize, a.ctypes.data + 0, 4, a.itemsize, 4, 4,
                                     True)
    for f in (program, transpose):          # every compiled version present
        for a in (a32, a64):
            f(a.copy())
    slow = []
    for d in (gemm._program.serial, gemm._transpose_split.serial):
        real = d._compile_for_args
        monkeypatch.setattr(d, "_compile_for_args",
                            lambda *args, _r=real, **kw: (slow.append(1), _r(*args, **kw))[1])
    for f in (program, transpose, program, transpose):
        for a in (a32, a64):
            f(a.copy())
    assert not slow
