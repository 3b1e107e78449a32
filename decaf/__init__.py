"""decaf: Caffe, in Python. NumPy on the CPU, CuPy on a GPU, Caffe's files and numbers.

The public face follows pycaffe: ``decaf.Net``, ``decaf.SGDSolver``, ``decaf.TRAIN``... and the
``caffe`` alias package re-exports exactly these objects, so ``import caffe`` scripts run.
"""
__version__ = "1.0.0"

from .kernels import threads as _threads
_threads.apply()    # one thread count for Numba's kernels and OpenBLAS (decaf.kernels.threads)

from .backend import (set_mode_cpu, set_mode_gpu, set_device, set_random_seed,  # noqa: F401
                      solver_count, set_solver_count, solver_rank, set_solver_rank,
                      set_multiprocess)
from .proto.caffe_pb2 import TRAIN, TEST  # noqa: F401
from .blob import Blob  # noqa: F401
from .layer import Layer, register_layer, layer_type_list, create_layer  # noqa: F401
from .net import Net  # noqa: F401
from . import pycaffe as _pycaffe  # noqa: F401,E402  (forward_all, set_input_arrays, callbacks)
from .pycaffe import has_nccl, NCCL  # noqa: F401,E402
from .net_spec import NetSpec, to_proto, params  # noqa: F401,E402
from .timer import Timer  # noqa: F401,E402
from . import io  # noqa: F401,E402

_LAZY = {"Classifier": "classifier", "Detector": "detector", "init_log": "glog", "log": "glog",
         "Solver": "solver", "SGDSolver": "solver", "NesterovSolver": "solver",
         "AdaGradSolver": "solver", "RMSPropSolver": "solver", "AdaDeltaSolver": "solver",
         "AdamSolver": "solver", "get_solver": "solver",
         "set_python_layers_allowed": "layers.python_layer",
         "python_layers_allowed": "layers.python_layer"}


def __getattr__(name):
    """Import the heavier modules (solvers, tools) on first use."""
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module("." + _LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError("module 'decaf' has no attribute %r" % name)

__all__ = ["__version__", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
           "solver_count", "set_solver_count", "solver_rank", "set_solver_rank",
           "set_multiprocess", "TRAIN", "TEST", "Blob", "Layer", "register_layer",
           "layer_type_list", "create_layer", "Net", "Solver", "SGDSolver", "NesterovSolver",
           "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver", "get_solver",
           "init_log", "log", "has_nccl", "NCCL", "NetSpec", "to_proto", "params", "Timer", "io",
           "Classifier", "Detector", "set_python_layers_allowed", "python_layers_allowed"]
