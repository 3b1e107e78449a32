"""Mode (CPU/GPU), device, the array module `xp` and the process-wide random generator.

One idiom serves both devices: ``xp = get_array_module(x)`` is ``numpy`` for host arrays and
``cupy`` for device arrays, so a layer is written once against ``xp``.
"""
import numpy as np

try:  # CuPy is an optional extra (pip install decaf[gpu])
    import cupy as _cupy
except Exception:  # pragma: no cover - no GPU here
    _cupy = None

CPU, GPU = 0, 1


class _State:
    mode = CPU
    device = 0
    rng = np.random.RandomState()
    seed = None
    solver_count = None   # None until set or first asked: then the MPI world's (1 alone)
    solver_rank = None
    multiprocess = False


_state = _State()


def get_array_module(*arrays):
    """numpy, or cupy when any argument is a cupy array."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def xp():
    """The array module of the current mode (numpy on the CPU, cupy on the GPU)."""
    return _cupy if (_state.mode == GPU and _cupy is not None) else np


def has_gpu():
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def set_mode_cpu():
    _state.mode = CPU


def set_mode_gpu():
    if not has_gpu():
        raise RuntimeError("set_mode_gpu: no GPU available (install CuPy: pip install decaf[gpu])")
    _state.mode = GPU


def mode():
    return _state.mode


def set_device(device_id):
    _state.device = int(device_id)
    if _cupy is not None and has_gpu():
        _cupy.cuda.Device(int(device_id)).use()


def set_random_seed(seed):
    """Seed every random draw decaf makes (fillers, dropout, shuffling)."""
    _state.seed = int(seed)
    _state.rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)


def rng():
    """The process-wide numpy RandomState."""
    return _state.rng


def _from_world():
    """solver_count / solver_rank not set: take them from the MPI world (decaf.parallel)."""
    from .parallel.launcher import world
    w = world()
    if _state.solver_count is None:
        _state.solver_count = w.size
    if _state.solver_rank is None:
        _state.solver_rank = w.rank
    if w.size > 1:
        _state.multiprocess = True   # one process per rank, as pycaffe's train.py


def solver_count():
    """Caffe::solver_count(): how many solvers train together (the MPI world's size unless
    set_solver_count was called)."""
    if _state.solver_count is None:
        _from_world()
    return _state.solver_count


def set_solver_count(n):
    _state.solver_count = int(n)


def solver_rank():
    """Caffe::solver_rank(): this solver's rank (the MPI rank unless set_solver_rank)."""
    if _state.solver_rank is None:
        _from_world()
    return _state.solver_rank


def root_solver():
    """Caffe::root_solver(): rank 0 logs, tests and snapshots."""
    return solver_rank() == 0


def set_solver_rank(r):
    _state.solver_rank = int(r)


def set_multiprocess(flag):
    _state.multiprocess = bool(flag)


def to_numpy(a):
    """A host (NumPy) copy-or-view of an array of either device."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)
