"""One thread policy for the two pools decaf runs on: Numba's kernels and NumPy's OpenBLAS.

The count: OMP_NUM_THREADS, else NUMBA_NUM_THREADS, else OPENBLAS_NUM_THREADS, else every CPU
this process may run on (as PyTorch does).  ``apply()`` (run once by ``import decaf``) gives
both pools that count.  They never run at the same time (a layer calls a kernel or BLAS, one
after the other), and they must not burn each other's cores while idle:

* Numba uses its ``workqueue`` threading layer (unless NUMBA_THREADING_LAYER says otherwise):
  its idle workers sleep, where OpenMP's spin (two spinning pools on two cores made LeNet 3.6x
  slower, benchmarks/NOTES.md).
* OpenBLAS gets the count through ``openblas_set_num_threads`` of the library NumPy loaded
  (decaf.kernels.cblas), so that a later change (``set_num_threads``) reaches both pools.

Numba's pool size is fixed when Numba starts: NUMBA_NUM_THREADS is set (if unset) before the
first import of Numba, to the CPU count, so that ``set_num_threads`` can go up to it.
"""
import os

_STATE = {}
_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# NUMBA_NUM_THREADS as decaf set it (the pool size): child processes inherit it, and must not
# read it as a user's count
_OWN_POOL = "DECAF_NUMBA_POOL_SIZE"


def cpu_count():
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):       # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _from_environment():
    for var in _VARS:
        value = os.environ.get(var, "").strip()
        if var == "NUMBA_NUM_THREADS" and value and value == os.environ.get(_OWN_POOL):
            continue
        try:
            n = int(value or 0)
        except ValueError:
            n = 0
        if n > 0:
            return n
    return cpu_count()


def default_threads():
    """The thread count from the environment as it was when decaf started (see above)."""
    if "default" not in _STATE:
        _STATE["default"] = _from_environment()
    return _STATE["default"]


def _prepare_numba():
    """Environment Numba reads at its first import: pool size and threading layer (read the
    user's count first: NUMBA_NUM_THREADS set here is the pool's size, not the policy)."""
    count = default_threads()
    if "NUMBA_NUM_THREADS" not in os.environ:
        os.environ["NUMBA_NUM_THREADS"] = os.environ[_OWN_POOL] = str(max(cpu_count(), count))
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


def set_num_threads(n):
    """Run Numba's kernels and OpenBLAS's GEMMs on ``n`` threads (clipped to Numba's pool)."""
    import numba
    from . import cblas
    n = max(1, int(n))
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    cblas.set_num_threads(n)
    _STATE["threads"] = n
    return n


def get_num_threads():
    """The count last given by ``set_num_threads`` / ``apply`` (the default before)."""
    n = _STATE.get("threads")          # (every kernel call asks: no default computed then)
    return default_threads() if n is None else n


def apply():
    """The policy, once per process: both pools at ``default_threads()``."""
    if "applied" not in _STATE:
        _STATE["applied"] = True
        _prepare_numba()
        set_num_threads(default_threads())
    return _STATE["threads"]


_prepare_numba()
