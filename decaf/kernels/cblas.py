"""``cblas_?gemm``, ``cblas_?axpy`` (and OpenBLAS's ``?omatcopy`` transpose) of the BLAS NumPy
itself uses, called through ctypes.

Caffe's ``caffe_cpu_gemm`` takes any leading dimensions and ``beta``; NumPy's ``matmul`` takes
neither (it always overwrites its output, and copies operands whose rows are not evenly spaced
the way it wants).  The convolution engine needs both: GEMMs whose operands and results are
strided windows of a larger buffer (``lda``, ``ldb``, ``ldc`` bigger than the row length) and
accumulation in place (``beta = 1``).  Calling the OpenBLAS that NumPy already loaded keeps one
BLAS and one thread pool in the process, whatever OPENBLAS_NUM_THREADS says.

The library is found among the shared objects the process has mapped (NumPy's wheels bundle
``libscipy_openblas64_``, whose symbols carry a ``scipy_`` prefix and a ``64_`` suffix and take
64-bit integers; a system OpenBLAS exports plain ``cblas_sgemm``).  A symbol is used only when
its integer width is known (the ``64_`` suffix, or OpenBLAS's own config string) and a small
self-test against NumPy passes; otherwise ``available()`` is False and callers keep their NumPy
form.  ``DECAF_CBLAS=0`` in the environment turns it off.
"""
import ctypes
import os

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

_STATE = {}


def _mapped_blas_libraries():
    """Paths of the BLAS NumPy uses: the one its wheel bundles (numpy.libs, numpy/.dylibs), else
    the BLAS-looking system libraries this process has mapped.  Libraries other packages bundle
    (SciPy's own OpenBLAS, with its own thread pool) are never taken."""
    paths = []
    numpy_pkg = os.path.dirname(os.path.abspath(np.__file__))
    for d in (numpy_pkg + ".libs", os.path.join(numpy_pkg, ".dylibs")):
        if os.path.isdir(d):
            paths += [os.path.join(d, name) for name in sorted(os.listdir(d))
                      if "blas" in name.lower()]
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                path = parts[5].strip()
                name = os.path.basename(path).lower()
                if ("blas" in name and ".so" in name and "cpython" not in name
                        and "site-packages" not in path and "dist-packages" not in path
                        and path not in paths):
                    paths.append(path)
    except OSError:                                   # not Linux: the bundled one only
        pass
    return paths


def _int_type(lib, prefix, suffix):
    """ctypes integer of the BLAS interface, or None when it cannot be told."""
    if suffix == "64_":
        return ctypes.c_int64
    for name in (prefix + "openblas_get_config" + suffix, "openblas_get_config"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            config = fn() or b""
            return ctypes.c_int64 if b"USE64BITINT" in config else ctypes.c_int
    return None


def _typed(fn, argtypes):
    """``fn`` as a function pointer of its own prototype class.  The compiled loops take these
    as arguments (decaf.kernels.gemm), and Numba's dispatcher keys its fast type lookup on an
    argument's Python class: the functions of one library share one class, so a kernel given
    ``?omatcopy`` after ``?gemm`` (or dgemm after sgemm) was typed through the slow path at
    every call (~350 us)."""
    return ctypes.CFUNCTYPE(None, *argtypes)(ctypes.cast(fn, ctypes.c_void_p).value)


def _bind(lib):
    for prefix in ("scipy_", ""):
        for suffix in ("64_", ""):
            names = ["%scblas_%s%s" % (prefix, f, suffix)
                     for f in ("sgemm", "dgemm", "saxpy", "daxpy")]
            fns = [getattr(lib, n, None) for n in names]
            if any(f is None for f in fns):
                continue
            itype = _int_type(lib, prefix, suffix)
            if itype is None:
                continue
            p = ctypes.c_void_p
            real = (ctypes.c_float, ctypes.c_double)
            gemms = [_typed(fn, [ctypes.c_int, ctypes.c_int, ctypes.c_int, itype, itype, itype,
                                 r, p, itype, p, itype, r, p, itype])
                     for fn, r in zip(fns[:2], real)]
            fns = gemms + [_typed(fn, [itype, r, p, itype, p, itype])
                           for fn, r in zip(fns[2:], real)]
            # OpenBLAS's out-of-place transpose (an extension; absent elsewhere: None)
            omat = [getattr(lib, "%scblas_%s%s" % (prefix, f, suffix), None)
                    for f in ("somatcopy", "domatcopy")]
            omat = [None if fn is None else
                    _typed(fn, [ctypes.c_int, ctypes.c_int, itype, itype, r, p, itype, p, itype])
                    for fn, r in zip(omat, real)]
            _bind_threads(lib, prefix, suffix)
            return {np.dtype(np.float32): (fns[0], fns[2], omat[0]),
                    np.dtype(np.float64): (fns[1], fns[3], omat[1])}
    return None


def _bind_threads(lib, prefix, suffix):
    """OpenBLAS's ``openblas_set/get_num_threads`` of the same library (decaf.kernels.threads)."""
    for verb, restype in (("set", None), ("get", ctypes.c_int)):
        fn = getattr(lib, "%sopenblas_%s_num_threads%s" % (prefix, verb, suffix), None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int] if verb == "set" else []
            fn.restype = restype
        _STATE[verb + "_threads"] = fn


def _self_test(fns):
    rng = np.random.RandomState(0)
    for dtype, (gemm, axpy, omat) in fns.items():
        big = rng.standard_normal((9, 11)).astype(dtype)
        a = big[1:6, 2:9]                       # 5 x 7, lda 11
        b = rng.standard_normal((6, 7)).astype(dtype).T[:, 1:5]   # 7 x 4, transposed storage
        c = rng.standard_normal((5, 8)).astype(dtype)
        want = c.copy()
        want[:, 2:6] += 2 * (a @ b)
        gemm(ROW_MAJOR, NO_TRANS, TRANS, 5, 4, 7, 2.0, a.ctypes.data, 11, b.ctypes.data, 7,
             1.0, c[:, 2:].ctypes.data, 8)
        if not np.allclose(c, want, rtol=1e-4, atol=1e-4):
            return False
        x, y = rng.standard_normal(6).astype(dtype), rng.standard_normal(6).astype(dtype)
        want = y + 0.5 * x
        axpy(6, 0.5, x.ctypes.data, 1, y.ctypes.data, 1)
        if not np.allclose(y, want, rtol=1e-5, atol=1e-5):
            return False
        if omat is not None:
            t = np.zeros((7, 5), dtype)
            omat(ROW_MAJOR, TRANS, 5, 7, 1.0, a.ctypes.data, 11, t.ctypes.data, 5)
            if not np.array_equal(t, a.T):
                fns[dtype] = (gemm, axpy, None)
    return True


def _load():
    if os.environ.get("DECAF_CBLAS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    for path in _mapped_blas_libraries():
        try:
            fns = _bind(ctypes.CDLL(path))
        except OSError:
            continue
        if fns is not None and _self_test(fns):
            return fns
    return None


def _functions():
    if "fns" not in _STATE:
        try:
            _STATE["fns"] = _load()
        except Exception:              # pragma: no cover - an odd platform: keep NumPy's forms
            _STATE["fns"] = None
    return _STATE["fns"]


def set_num_threads(n):
    """Size NumPy's OpenBLAS pool (``openblas_set_num_threads``); False where not bound."""
    _functions()
    fn = _STATE.get("set_threads")
    if fn is None:
        return False
    fn(int(n))
    return True


def get_num_threads():
    """Threads of NumPy's OpenBLAS pool, or None where not bound."""
    _functions()
    fn = _STATE.get("get_threads")
    return None if fn is None else int(fn())


def available(dtype=np.float32):
    """True when ``gemm``/``axpy`` run for arrays of ``dtype`` (float32 or float64)."""
    fns = _functions()
    return fns is not None and np.dtype(dtype) in fns


def raw_gemm(dtype):
    """The bound ``cblas_?gemm`` for ``dtype`` (row-major calls with raw pointers), or None."""
    fns = _functions()
    entry = fns.get(np.dtype(dtype)) if fns else None
    return entry[0] if entry else None


def omatcopy(a, out):
    """(``?omatcopy``, rows, cols, lda, ldo) for out = a.T with OpenBLAS's out-of-place
    transpose: 2-D NumPy arrays, rows evenly spaced, unit inner stride; None where it cannot."""
    fns = _functions()
    entry = fns.get(out.dtype) if fns and type(out) is np.ndarray else None
    rows, cols = a.shape
    if (entry is not None and entry[2] is not None and type(a) is np.ndarray
            and a.dtype == out.dtype and out.shape == (cols, rows) and rows and cols
            and a.strides[1] == a.itemsize and out.strides[1] == out.itemsize
            and a.strides[0] >= cols * a.itemsize and out.strides[0] >= rows * out.itemsize
            and out.flags.writeable):
        return entry[2], rows, cols, a.strides[0] // a.itemsize, out.strides[0] // out.itemsize
    return None


def transpose(a, out):
    """out = a.T for 2-D NumPy arrays (rows evenly spaced, unit inner stride), with OpenBLAS's
    ``?omatcopy`` (about twice NumPy's transposing copy); NumPy's copy where it is missing."""
    call = omatcopy(a, out)
    if call is None:
        out[...] = a.T
        return out
    fn, rows, cols, lda, ldo = call
    fn(ROW_MAJOR, TRANS, rows, cols, 1.0, a.ctypes.data, lda, out.ctypes.data, ldo)
    return out


def _operand(m):
    """(transposed flag, leading dimension) of a 2-D NumPy operand for a row-major call."""
    it = m.itemsize
    rows, cols = m.shape
    s0, s1 = m.strides
    if cols == 1:
        s1 = it
    if rows == 1:
        s0 = max(cols, 1) * it if s1 == it else it
    if s1 == it and s0 % it == 0 and s0 // it >= max(cols, 1):
        return NO_TRANS, s0 // it
    if s0 == it and s1 % it == 0 and s1 // it >= max(rows, 1):
        return TRANS, s1 // it
    return None


operand = _operand


def gemm(a, b, c, alpha=1.0, beta=0.0):
    """c = alpha * a @ b + beta * c for 2-D NumPy arrays, in place, with their strides.

    Each array needs one unit stride (a row-major or transposed strided view); returns False,
    doing nothing, when BLAS cannot take them as they are (the caller then uses NumPy).
    """
    fns = _functions()
    if (fns is None or type(c) is not np.ndarray or c.dtype not in fns
            or a.dtype != c.dtype or b.dtype != c.dtype or a.ndim != 2 or b.ndim != 2
            or c.ndim != 2 or not c.flags.writeable):
        return False
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or c.shape != (m, n):
        raise ValueError("gemm: shapes %s @ %s -> %s do not match" % (a.shape, b.shape, c.shape))
    if m == 0 or n == 0:
        return True
    oc = _operand(c)
    if oc is None:
        return False
    if oc[0] == TRANS:                       # column-major c: compute c^T = b^T a^T
        a, b, m, n = b.T, a.T, n, m
    oa, ob = _operand(a), _operand(b)
    if oa is None or ob is None:
        return False
    if k == 0:
        c *= beta
        return True
    fns[c.dtype][0](ROW_MAJOR, oa[0], ob[0], m, n, k, alpha, a.ctypes.data, oa[1],
                    b.ctypes.data, ob[1], beta, c.ctypes.data, oc[1])
    return True


def axpy(alpha, x, y):
    """y += alpha * x for contiguous NumPy arrays of the same size, in place; False if not."""
    fns = _functions()
    if (fns is None or type(y) is not np.ndarray or type(x) is not np.ndarray
            or y.dtype not in fns or x.dtype != y.dtype or x.size != y.size
            or not (x.flags.c_contiguous and y.flags.c_contiguous) or not y.flags.writeable):
        return False
    if y.size:
        fns[y.dtype][1](y.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
    return True
