"""One thread policy for the two pools decaf runs on: Numba's kernels and NumPy's OpenBLAS.

The count: OMP_NUM_THREADS, else NUMBA_NUM_THREADS, else OPENBLAS_NUM_THREADS, else every CPU
this process may run on (as PyTorch does), divided among the MPI ranks on this machine (Open
MPI's OMPI_COMM_WORLD_LOCAL_SIZE, MPICH's MPI_LOCALNRANKS).  ``apply()`` (run once by ``import
decaf``) sets it.  Two pools that spin while idle on the same cores slow each other down many
times over (two spinning pools on two cores made LeNet 3.6x slower, benchmarks/NOTES.md), so
one of two arrangements is taken:

* **one pool** (Numba's ``omp`` threading layer, where the system's libgomp loads): Numba's
  OpenMP pool runs every parallel loop, and OpenBLAS stays at one thread.  The GEMMs decaf
  runs in parallel are split or batched by decaf.kernels.gemm over Numba's threads, each part a
  one-thread BLAS call.  OpenMP's workers wake in 2-15 us where ``workqueue``'s take 110-190
  (NOTES section 15), which is what makes per-layer parallel loops pay on small layers.
* **two pools, one at a time** (``workqueue``, when libgomp is missing or
  NUMBA_THREADING_LAYER asks for it): its idle workers sleep, and OpenBLAS threads each GEMM
  itself with the same count.

``set_num_threads`` changes the count at run time; OpenBLAS's is given through
``openblas_set_num_threads`` of the library NumPy loaded (decaf.kernels.cblas).
Numba's pool size is fixed when Numba starts: NUMBA_NUM_THREADS is set (if unset) before the
first import of Numba, to the CPU count, so that ``set_num_threads`` can go up to it.
"""
import glob
import importlib.util
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


def local_ranks():
    """MPI processes started on this machine (1 outside mpirun)."""
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"):
        try:
            n = int(os.environ.get(var, "0"))
        except ValueError:
            n = 0
        if n > 0:
            return n
    return 1


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
    return max(1, cpu_count() // local_ranks())


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
    os.environ.setdefault("NUMBA_THREADING_LAYER", "omp" if _omp_loads() else "workqueue")


def _omp_loads():
    """Numba's OpenMP pool is installed and the libgomp it links against loads."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.submodule_search_locations:
        return False
    pools = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "np", "ufunc",
                                   "omppool*"))
    if not pools:
        return False
    import ctypes
    for name in ("libgomp.so.1", "libgomp.1.dylib", "libomp.dylib"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def single_pool():
    """True when Numba's OpenMP pool is the only one (OpenBLAS at one thread, see above)."""
    if "single" not in _STATE:
        _STATE["single"] = os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower() == "omp"
    return _STATE["single"]


def set_num_threads(n):
    """Run Numba's kernels and OpenBLAS's GEMMs on ``n`` threads (clipped to Numba's pool)."""
    import numba
    from . import cblas
    n = max(1, int(n))
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    cblas.set_num_threads(1 if single_pool() else n)
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
        import numba        # (imported before decaf, Numba read its environment without ours)
        numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
        set_num_threads(default_threads())
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forked)
    return _STATE["threads"]


def _forked():
    """In a child forked from a decaf process everything runs on one thread: GNU OpenMP's
    pool does not survive a fork (Numba aborts the child at its first parallel loop), and a
    child of a multi-process data pipeline should not take every core again."""
    if single_pool():
        _STATE["threads"] = 1


_prepare_numba()
