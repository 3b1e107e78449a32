"""GEMM programs: many same-shaped BLAS calls in one compiled loop, spread over Numba's threads.

A program is a list of ``cblas_?gemm`` calls of one shape (m, n, k, transposes, leading
dimensions), each with its own operand addresses and ``beta``, cut into *tasks*:

    for each task t (in parallel):          the tasks write disjoint results
        for each GEMM g of t (in order):    C_g = alpha * op(A_g) @ op(B_g) + beta_g * C_g

The convolution engines' per-output-row GEMMs (decaf.kernels.rowconv) run as programs, and so
does one large GEMM split into blocks of rows or columns of C (``gemm``).  With one pool
(decaf.kernels.threads.single_pool: Numba's OpenMP threads, OpenBLAS at one thread) each task
is a one-thread BLAS call on one of Numba's threads; otherwise (or on one thread) the program
runs serially on the calling thread, and OpenBLAS threads each call itself.  Either way a
program costs one Python call instead of one per GEMM (each ctypes call is ~6 us).  The tasks
are fixed by the caller, never by the thread count, so results do not depend on it.

The BLAS function is an argument (a ctypes function pointer, whose address Numba reads at
each call), so the compiled loop is cached like every other kernel.
"""
import numpy as np
from numba import prange

from . import cblas, threads
from .jit import kernel

# Programs below this many multiply-adds run serially (a parallel launch of OpenMP's pool
# costs a few microseconds; a 1 MFLOP GEMM takes ~10 us)
PARALLEL_MIN_MACS = 1 << 19
# ``gemm`` splits one call of at least this many multiply-adds into blocks over the threads
SPLIT_MIN_MACS = 1 << 21
# ... blocks of rows / columns of C a multiple of this (OpenBLAS's kernels' tile width)
SPLIT_ALIGN = 16
# ``transpose`` splits a 2-D transpose of at least this many elements over the threads
TRANSPOSE_SPLIT_MIN = 1 << 16


@kernel
def _program(f, ta, tb, k, alpha, lda, ldb, ldc, ptrs, betas, starts):
    for t in prange(starts.size - 1):
        for g in range(starts[t], starts[t + 1]):
            f(101, ta, tb, ptrs[g, 3], ptrs[g, 4], k, alpha, ptrs[g, 0], lda, ptrs[g, 1], ldb,
              betas[g], ptrs[g, 2], ldc)


@kernel
def _split(f, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count, size,
           rows):
    """One GEMM in blocks of ``size`` rows (``rows``) or columns of C, a block per task."""
    for p in prange((count + size - 1) // size):
        i0 = p * size
        span = min(size, count - i0)
        if rows:
            f(101, ta, tb, span, n, k, alpha, a + i0 * sa, lda, b, ldb, beta, c + i0 * sc, ldc)
        else:
            f(101, ta, tb, m, span, k, alpha, a, lda, b + i0 * sb, ldb, beta, c + i0 * sc, ldc)


@kernel
def _transpose_split(f, rows, cols, a, lda, sa, out, ldo, so, count, size, by_rows):
    """out = a.T (OpenBLAS's ``?omatcopy``) in blocks of ``size`` rows or columns of a."""
    for p in prange((count + size - 1) // size):
        i0 = p * size
        span = min(size, count - i0)
        if by_rows:
            f(101, 112, span, cols, 1.0, a + i0 * sa, lda, out + i0 * so, ldo)
        else:
            f(101, 112, rows, span, 1.0, a + i0 * sa, lda, out + i0 * so, ldo)


def run(dtype, ta, tb, m, n, k, alpha, lda, ldb, ldc, ptrs, betas, starts):
    """Run a program: ``ptrs`` (G, 3) int64 addresses of (A, B, C) per GEMM (or (G, 5) with
    each GEMM's own m and n last), ``betas`` (G,), ``starts`` (T + 1,) the first GEMM of each
    task (and G)."""
    dtype = np.dtype(dtype)
    ptrs = ptrs.reshape(-1, ptrs.shape[-1])
    if len(ptrs) == 0:
        return
    if ptrs.shape[1] == 3:
        full = np.empty((len(ptrs), 5), np.int64)
        full[:, :3], full[:, 3], full[:, 4] = ptrs, m, n
        ptrs = full
    betas = np.asarray(betas, dtype).reshape(-1)
    fn = _program.serial
    if (starts.size > 2 and threads.single_pool() and threads.get_num_threads() > 1
            and m * n * k * len(betas) >= PARALLEL_MIN_MACS):
        fn = _program.parallel
    fn(cblas.raw_gemm(dtype), ta, tb, k, dtype.type(alpha), lda, ldb, ldc, ptrs, betas, starts)


def parallel():
    """True where programs run on more than one thread (one pool, more than one thread)."""
    return threads.single_pool() and threads.get_num_threads() > 1


def grid(a, b, c, rows, cols=1):
    """Addresses of a rows x cols grid of GEMMs, GEMM (r, j) at ``base + r*step_r + j*step_j``
    for each of ``a``, ``b``, ``c`` = (base, step_r, step_j): an (rows, cols, 3) int64 array."""
    r = np.arange(rows, dtype=np.int64)[:, None]
    j = np.arange(cols, dtype=np.int64)[None, :]
    out = np.empty((rows, cols, 3), np.int64)
    for i, (base, sr, sj) in enumerate((a, b, c)):
        out[..., i] = base + r * sr + j * sj
    return out


def blocks(count, size):
    """Boundaries of ``count`` items in blocks of about ``size`` (at least 1 each)."""
    size = max(1, int(size))
    nblk = max(1, count // size)
    return np.linspace(0, count, nblk + 1).round().astype(np.int64)


class Shape:
    """GEMMs of one shape (``cblas_?gemm(ROW_MAJOR, ta, tb, m, n, k, alpha, ., lda, ., ldb, .,
    ., ldc)``), run as programs of three kinds over an (R, J, 3) grid of addresses (``grid``):
    R rows of work (a convolution's output rows), J GEMMs per row."""

    def __init__(self, dtype, ta, tb, m, n, k, lda, ldb, ldc, alpha=1.0):
        self.dtype, self.args = np.dtype(dtype), (ta, tb, m, n, k, alpha, lda, ldb, ldc)

    def _run(self, ptrs, betas, starts):
        ta, tb, m, n, k, alpha, lda, ldb, ldc = self.args
        run(self.dtype, ta, tb, m, n, k, alpha, lda, ldb, ldc, ptrs, betas, starts)

    def rows(self, ptrs, beta_first=0.0, beta_rest=1.0):
        """Each row its own task (rows write disjoint results): its J GEMMs in order, the first
        with ``beta_first``, the others with ``beta_rest`` (1: they accumulate)."""
        r, j = ptrs.shape[:2]
        betas = np.full((r, j), beta_rest, self.dtype)
        betas[:, 0] = beta_first
        self._run(ptrs, betas, np.arange(0, r * j + 1, j, dtype=np.int64))

    def accumulate(self, ptrs, bases, per_j=True):
        """Rows that accumulate into the same results (beta = 1): the rows cut into
        len(bases) blocks, block p's sums into its own copy of the results (C at ``bases[p]``
        instead of ``bases[0]``, which the grid's C addresses start from); one task per
        (block, j), or per block where the J GEMMs of a row overlap (``per_j`` False).  The
        caller adds the copies up."""
        r, j = ptrs.shape[:2]
        bounds = blocks(r, -(-r // len(bases)))
        parts = []
        for p in range(len(bounds) - 1):
            part = ptrs[bounds[p]:bounds[p + 1]].transpose(1, 0, 2).copy()
            part[..., 2] += bases[p] - bases[0]
            parts.append(part.reshape(-1, 3))
        sizes = np.repeat(np.diff(bounds), j) if per_j else np.diff(bounds) * j
        starts = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=starts[1:])
        self._run(np.concatenate(parts), np.ones(r * j, self.dtype), starts)

    def phased(self, ptrs, reach):
        """Rows r and r' write overlapping results when |r - r'| < ``reach`` (a kernel's rows
        over its stride): blocks of at least reach - 1 rows, the even blocks in parallel, then
        the odd ones, each block's GEMMs in order (beta = 1)."""
        r, j = ptrs.shape[:2]
        if reach <= 1:
            return self.rows(ptrs, 1.0)
        bounds = blocks(r, reach - 1)
        if len(bounds) < 4:          # fewer than two blocks per phase: one task
            bounds = np.array([0, r], np.int64)
        for phase in (0, 1):
            sel = np.arange(phase, len(bounds) - 1, 2)
            if sel.size == 0:
                continue
            part = np.concatenate([ptrs[bounds[b]:bounds[b + 1]].reshape(-1, 3) for b in sel])
            sizes = (bounds[sel + 1] - bounds[sel]) * j
            starts = np.zeros(len(sizes) + 1, np.int64)
            np.cumsum(sizes, out=starts[1:])
            self._run(part, np.ones(len(part), self.dtype), starts)

    def phased_blocks(self, rows, reach):
        """How many tasks ``phased`` runs at once (1: the rows are too few to keep apart)."""
        if reach <= 1:
            return rows
        return 1 if rows // (reach - 1) < 4 else rows // (reach - 1) // 2


def gemm(a, b, c, alpha=1.0, beta=0.0):
    """c = alpha * a @ b + beta * c (decaf.kernels.cblas.gemm), a large one split into blocks of
    rows (or columns) of c over the threads; False where cblas cannot take the arrays."""
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2 or b.shape[1] != c.shape[1] \
            or a.shape[0] != c.shape[0] or a.shape[1] != b.shape[0]:
        return cblas.gemm(a, b, c, alpha, beta)      # (False, or its shape error)
    m, n = c.shape
    k = a.shape[1]
    if not (threads.single_pool() and threads.get_num_threads() > 1
            and m * n * k >= SPLIT_MIN_MACS and type(c) is np.ndarray
            and a.dtype == c.dtype == b.dtype and cblas.available(c.dtype)
            and c.flags.writeable):
        return cblas.gemm(a, b, c, alpha, beta)
    oa, ob, oc = cblas.operand(a), cblas.operand(b), cblas.operand(c)
    if oa is None or ob is None or oc is None or oc[0] != cblas.NO_TRANS:
        return cblas.gemm(a, b, c, alpha, beta)       # (a column-major c: one call)
    ldc = oc[1]        # a window of a larger matrix too (a block of an image's output rows)
    it = c.itemsize
    rows = m >= n                   # blocks of rows of C (and of op(A)), else of columns
    count = m if rows else n
    size = -(-count // threads.get_num_threads())
    size = -(-size // SPLIT_ALIGN) * SPLIT_ALIGN
    sa = (oa[1] if oa[0] == cblas.NO_TRANS else 1) * it
    sb = (1 if ob[0] == cblas.NO_TRANS else ob[1]) * it
    _split.parallel(cblas.raw_gemm(c.dtype), oa[0], ob[0], m, n, k, c.dtype.type(alpha),
                    a.ctypes.data, oa[1], sa, b.ctypes.data, ob[1], sb, c.dtype.type(beta),
                    c.ctypes.data, ldc, (ldc if rows else 1) * it, count, size, rows)
    return True


def transpose(a, out):
    """out = a.T (decaf.kernels.cblas.transpose); from TRANSPOSE_SPLIT_MIN elements, where
    programs run in parallel, in one block per thread of the longer side of a (a copy: the
    values do not depend on the blocks)."""
    call = cblas.omatcopy(a, out) if a.size >= TRANSPOSE_SPLIT_MIN and parallel() else None
    if call is None:
        return cblas.transpose(a, out)
    fn, rows, cols, lda, ldo = call
    it = a.itemsize
    by_rows = rows >= cols
    count = rows if by_rows else cols
    size = -(-count // threads.get_num_threads())
    size = -(-size // SPLIT_ALIGN) * SPLIT_ALIGN     # whole cache lines of out per block
    sa, so = (lda * it, it) if by_rows else (it, ldo * it)
    _transpose_split.parallel(fn, rows, cols, a.ctypes.data, lda, sa, out.ctypes.data, ldo, so,
                              count, size, by_rows)
    return out
