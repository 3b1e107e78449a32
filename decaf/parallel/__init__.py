"""Data-parallel training over MPI (mpi4py), with Caffe's multi-GPU semantics.

    mpirun -np 4 decaf train -solver solver.prototxt        # or: srun -n 4 decaf train ...

Every rank builds the same solver; ``solver_count()`` / ``solver_rank()`` are the MPI world's
(:mod:`decaf.parallel.launcher`). The root's weights are broadcast once; after every backward the
gradients are summed over the ranks and scaled by 1/solver_count before the update
(:class:`MPI`, Caffe's NCCL callback); Data and HDF5Data layers keep record i only on rank
i % solver_count (TEST nets read everything); the prototxt batch is per rank; every solver seeds
with random_seed + rank; only the root logs, tests and snapshots; a rank that fails ends the job.

From Python, as pycaffe's ``python/train.py`` does with ``caffe.NCCL``::

    from decaf import parallel
    solver = caffe.get_solver("solver.prototxt")     # under mpirun: one rank of the world
    comm = parallel.MPI(solver)
    comm.bcast()
    solver.add_callback(comm)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(comm)
    solver.step(1000)

(``parallel.attach(solver)`` does those four lines.) NCCL on GPUs is not here: ``caffe.NCCL``
refuses with its error, as Caffe built without USE_NCCL.
"""
from .launcher import World, MPIError, world, abort_on_error, report_failure  # noqa: F401
from .mpi import MPI, Stats, attach, DEFAULT_BUCKET_BYTES  # noqa: F401

__all__ = ["World", "MPIError", "world", "abort_on_error", "report_failure", "MPI", "Stats",
           "attach", "DEFAULT_BUCKET_BYTES"]
