"""The MPI world this process runs in: how many solvers train, and which one this is.

``mpirun -np K decaf train ...`` (Open MPI, MPICH, Intel MPI) and Slurm's ``srun`` start K
processes; each finds its rank here through mpi4py's ``COMM_WORLD`` (size and rank), whatever
the launcher. mpi4py is imported only when a launcher left its mark in the environment
(``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``, ``PMIX_RANK``, ``SLURM_PROCID``, ...), so a plain
``decaf train`` never initialises MPI. ``DECAF_MPI=0`` turns the detection off, ``DECAF_MPI=1``
asks mpi4py even without such a mark.

With K > 1, :func:`world` also does what Caffe does for a solver that is not the root: its INFO
lines are dropped (warnings and errors stay); and an exception that reaches the top ends the
whole job (``MPI_Abort``) after a FATAL line naming the rank, so that a failing rank never
leaves the others waiting in an all-reduce.
"""
import os
import sys
import traceback

from .. import glog as log
from ..errors import DecafError

LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK",
                 "MV2_COMM_WORLD_SIZE", "SLURM_PROCID")
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


class MPIError(DecafError):
    """MPI is wanted but cannot be used (mpi4py missing, a launcher/MPI mismatch)."""


class World:
    """``size`` processes, this one ``rank``; ``comm`` is mpi4py's COMM_WORLD (None alone)."""

    def __init__(self, size=1, rank=0, comm=None, library=""):
        self.size, self.rank, self.comm, self.library = int(size), int(rank), comm, library

    @property
    def root(self):
        return self.rank == 0

    def abort(self, code=1):
        """End every process of the job (MPI_Abort); alone: exit."""
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
        sys.exit(code)   # pragma: no cover - Abort does not return

    def __repr__(self):
        return "World(size=%d, rank=%d%s)" % (self.size, self.rank,
                                             ", %s" % self.library if self.library else "")


_world = None


def _hinted_size():
    for name in SIZE_VARS:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            continue
    return None


def _launched():
    flag = os.environ.get("DECAF_MPI", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return any(v in os.environ for v in LAUNCHER_VARS)


def import_mpi():
    """mpi4py's MPI module (initialising MPI), or a clear MPIError."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MPIError("this process was started by an MPI launcher but mpi4py cannot be "
                       "imported (%s): pip install decaf[mpi] (it needs an MPI library such as "
                       "Debian's openmpi-bin libopenmpi-dev)" % e) from None
    return MPI


def _detect():
    if not _launched():
        return World()
    try:
        MPI = import_mpi()
    except MPIError:
        hinted = _hinted_size()
        if hinted is not None and hinted > 1:
            raise
        return World()
    comm = MPI.COMM_WORLD
    w = World(comm.Get_size(), comm.Get_rank(), comm,
              MPI.Get_library_version().split(",")[0].strip())
    steps = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    if w.size == 1 and steps.isdigit() and int(steps) > 1:
        log.warning("srun started %s tasks but MPI sees one process: each task trains alone. "
                    "Launch with srun --mpi=pmix (or pmi2), or with mpirun" % steps,
                    "parallel.cpp")
    return w


def world():
    """The World of this process (detected once). With several ranks, non-root ranks log
    warnings and errors only, and an uncaught exception aborts the job (see module doc)."""
    global _world
    if _world is None:
        w = _detect()
        _world = w
        if w.size > 1:
            _configure_rank(w)
    return _world


def _configure_rank(w):
    if not w.root:
        log._cfg.minloglevel = max(log._cfg.minloglevel, log.WARNING)
    previous = sys.excepthook

    def abort_hook(kind, value, tb):
        if kind is KeyboardInterrupt or kind is SystemExit:
            return previous(kind, value, tb)
        report_failure(w, value, tb)
        w.abort(1)
    sys.excepthook = abort_hook


def report_failure(w, exc, tb=None):
    """Log ``exc`` as the failure of rank w.rank (a FATAL glog line, and the traceback when
    ``exc`` is not one of decaf's own errors)."""
    what = str(exc) if isinstance(exc, DecafError) else "%s: %s" % (type(exc).__name__, exc)
    if not isinstance(exc, DecafError):
        detail = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
        sys.stderr.write("[rank %d] %s" % (w.rank, detail))
    log._emit(log.FATAL, "rank %d of %d failed: %s" % (w.rank, w.size, what), "parallel.cpp:0")
    try:
        sys.stderr.flush()
    except Exception:  # pragma: no cover
        pass


class abort_on_error:
    """``with abort_on_error(w): ...``: an exception inside ends the whole job (MPI_Abort)
    after being logged with the rank; alone (w.size == 1) exceptions pass through."""

    def __init__(self, w=None):
        self.w = w

    def __enter__(self):
        self.w = self.w or world()
        return self.w

    def __exit__(self, kind, value, tb):
        if kind is None or self.w.size <= 1:
            return False
        if kind is SystemExit and value.code in (0, None):
            return False
        report_failure(self.w, value, tb)
        self.w.abort(1)
        return False   # pragma: no cover


def _reset_for_tests():
    global _world
    _world = None
