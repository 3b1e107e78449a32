"""GEMM helpers shared by the layers: Caffe's ``caffe_cpu_gemm`` with ``beta = 1``.

NumPy's ``matmul`` always overwrites its output (BLAS ``beta = 0``). Caffe accumulates parameter
gradients with ``beta = 1``; doing that as ``c += a @ b`` costs a temporary and an extra pass over
``c``.  Two BLAS take ``beta`` and write into ``c`` in place:

* SciPy's wrappers, over the OpenBLAS SciPy ships.  That library keeps its own thread pool, and
  two pools of spinning threads on the same cores slow every call down many times over, so it is
  used only when OpenBLAS is configured for one thread (OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or
  OMP_NUM_THREADS = 1, read in OpenBLAS's order, or a single CPU).  It is the first choice then:
  on the narrow weight-gradient shapes of convolutions (K x 32 results) it runs 5-15 % faster
  than the OpenBLAS NumPy bundles (benchmarks/NOTES.md).
* the cblas of NumPy's own OpenBLAS (decaf.kernels.cblas: any strides, one thread pool), at any thread
  count.

Otherwise (and for CuPy arrays) the product is computed and added.
"""
import os

import numpy as np

from . import cblas, gemm as programs

try:  # BLAS with beta = 1 accumulates without a temporary
    from scipy.linalg import blas as _scipy_blas
except Exception:  # pragma: no cover - scipy is optional
    _scipy_blas = None


def blas_threads():
    """The thread count OpenBLAS takes from the environment (all CPUs when unset)."""
    for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            n = int(os.environ.get(var, "0"))
        except ValueError:
            n = 0
        if n > 0:
            return n
    return os.cpu_count() or 1


_blas = _scipy_blas if blas_threads() == 1 else None
# decaf.kernels.cblas (NumPy's own BLAS) where SciPy's is not used; set False to keep to SciPy / NumPy
_use_cblas = True
HAVE_BETA_GEMM = cblas.available(np.float32) or _blas is not None


def _f_operand(m):
    """``m`` as a Fortran-ordered operand for BLAS: (array, transposed flag), or None."""
    if m.T.flags.f_contiguous:      # m is C-contiguous: m^T is the Fortran array, transposed
        return m.T, False
    if m.flags.f_contiguous:
        return m, True
    return None


def can_accumulate(a, b, c):
    """True when ``gemm_accumulate(a, b, c)`` runs as a single in-place BLAS call."""
    if (_blas is None and _use_cblas and type(c) is np.ndarray and c.flags.c_contiguous
            and c.size > 0 and cblas.available(c.dtype) and a.dtype == c.dtype
            and b.dtype == c.dtype and (a.flags.c_contiguous or a.flags.f_contiguous)
            and (b.flags.c_contiguous or b.flags.f_contiguous)):
        return True
    return (_blas is not None and type(c) is np.ndarray and c.flags.c_contiguous
            and c.dtype in (np.float32, np.float64) and a.dtype == c.dtype
            and b.dtype == c.dtype and c.size > 0
            and (a.flags.c_contiguous or a.flags.f_contiguous)
            and (b.flags.c_contiguous or b.flags.f_contiguous))


def gemm_accumulate(a, b, c):
    """c += a @ b for 2-D arrays, in place (Caffe's gemm with beta = 1).

    NumPy float32/float64 arrays go through BLAS ?gemm with beta = 1 (no temporary); other
    arrays (CuPy, odd strides) compute the product, then add it.  With decaf.kernels.cblas any operands
    with one unit stride each are taken in place, strided windows of bigger buffers included.
    """
    if (_blas is None and _use_cblas and type(c) is np.ndarray
            and programs.gemm(a, b, c, 1.0, 1.0)):
        return c
    if can_accumulate(a, b, c):
        gemm = _blas.sgemm if c.dtype == np.float32 else _blas.dgemm
        # Row-major c (m x n) is column-major c^T, and c^T += b^T a^T. Hand BLAS each operand
        # as a Fortran-ordered view, transposed by the flag where needed, so nothing is copied.
        op_a, trans_a = _f_operand(b)
        op_b, trans_b = _f_operand(a)
        out = gemm(1.0, op_a, op_b, beta=1.0, c=c.T, trans_a=trans_a, trans_b=trans_b,
                   overwrite_c=True)
        if not np.shares_memory(out, c):  # pragma: no cover - BLAS worked on a copy
            c[...] = out.T
        return c
    xp = _array_module(c)
    c += xp.matmul(a, b)
    return c


def matmul(a, b, out):
    """out = a @ b (NumPy's ``matmul(a, b, out=out)``, batched over a leading axis too); on
    more than one thread of one pool a large NumPy product is split over the threads
    (decaf.kernels.gemm), since OpenBLAS then runs one thread."""
    if type(out) is not np.ndarray:
        _array_module(out).matmul(a, b, out=out)
        return out
    # below the split bar one call of OpenBLAS's own (through NumPy: no ctypes set-up)
    if (_use_cblas and out.ndim >= 2 and programs.parallel()
            and out.shape[-1] * out.shape[-2] * a.shape[-1] >= programs.SPLIT_MIN_MACS):
        if out.ndim == 2 and programs.gemm(a, b, out):
            return out
        if out.ndim == 3 and a.ndim == b.ndim == 3 and all(
                programs.gemm(a[i], b[i], out[i]) for i in range(out.shape[0])):
            return out
    np.matmul(a, b, out=out)
    return out


def _array_module(a):
    from ..backend import get_array_module
    return get_array_module(a)


def axpy(a, x, y):
    """y += a * x in place with BLAS ?axpy (one pass, no temporary), as Caffe's caffe_axpy.

    Returns False, doing nothing, when BLAS cannot take the arrays (no SciPy, CuPy, other
    dtypes, non-contiguous): the caller then uses its NumPy form.
    """
    if _blas is None and _use_cblas and cblas.axpy(a, x, y):
        return True
    if (_blas is None or type(y) is not np.ndarray or type(x) is not np.ndarray
            or y.dtype not in (np.float32, np.float64) or x.dtype != y.dtype
            or not (x.flags.c_contiguous and y.flags.c_contiguous) or x.size != y.size
            or y.size == 0):
        return False
    fn = _blas.saxpy if y.dtype == np.float32 else _blas.daxpy
    flat = y.reshape(-1)
    out = fn(x.reshape(-1), flat, a=a)
    if not np.shares_memory(out, y):  # pragma: no cover - BLAS worked on a copy
        flat[...] = out
    return True
