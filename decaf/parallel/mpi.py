"""Data-parallel SGD over MPI: Caffe's ``NCCL`` callback (``parallel.cpp``) on mpi4py.

Used as pycaffe's ``caffe.NCCL`` is in ``python/train.py``::

    comm = decaf.parallel.MPI(solver)     # every rank, after building (and restoring) the solver
    comm.bcast()                          # the root's weights to every rank
    solver.add_callback(comm)             # on_start / on_gradients_ready
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(comm)   # comm(layer): reduce as soon as a layer is done
    solver.step(n)

The semantics are Caffe's: after backward and before ApplyUpdate every gradient is summed over
the ranks and scaled by 1/solver_count, so every rank applies the same update (the all-reduce
gives every rank the same sum). With ``layer_wise_reduce`` (the default) the gradients travel in
buckets (:mod:`decaf.parallel.buckets`) as soon as the backward of their layers is done, with a
non-blocking ``Iallreduce`` that later layers' hooks keep progressing; ``on_gradients_ready``
waits for the rest. Caffe refuses layer-wise reduce for nets with shared weights (a CHECK);
decaf reduces a shared parameter once, after the backward of the lowest layer that holds it.
With ``iter_size`` > 1 the buckets go during the last of the iter_size backward passes only
(Caffe reduces in every pass, which gives the same sum at iter_size times the traffic).
"""
import time

import numpy as np

from .. import glog as log
from .buckets import plan, shares_weights
from .launcher import MPIError, import_mpi, world

DEFAULT_BUCKET_BYTES = 1 << 20    # 1 MiB: several buckets even for LeNet, few calls for big nets
_ACTIONS = ("none", "snapshot", "stop")   # decaf.solver's NONE, SNAPSHOT, STOP, weakest first


class Stats:
    """Seconds spent in communication by this rank, and what it sent."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.launch_s = 0.0     # packing + starting the bucket all-reduces during backward
        self.wait_s = 0.0       # on_gradients_ready: waiting, unpacking and scaling
        self.bcast_s = 0.0
        self.steps = 0
        self.bytes = 0          # gradient bytes all-reduced (per rank, per direction)

    @property
    def allreduce_s(self):
        return self.launch_s + self.wait_s

    def as_dict(self):
        return dict(launch_s=self.launch_s, wait_s=self.wait_s, allreduce_s=self.allreduce_s,
                    bcast_s=self.bcast_s, steps=self.steps, bytes=self.bytes)


class MPI:
    """The gradient all-reduce of ``solver`` over ``comm`` (default: the MPI world).

    ``bcast()``, ``on_start()``, ``on_gradients_ready()`` and ``comm(layer)`` (the net's
    after_backward callback) are Caffe's NCCL methods; ``stats`` counts the time spent."""

    def __init__(self, solver, comm=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.solver = solver
        self.net = solver.net
        self.params = self.net.learnable_params
        if comm is None:
            comm = world().comm
        self.comm = comm
        self.size = comm.Get_size() if comm is not None else 1
        self.rank = comm.Get_rank() if comm is not None else 0
        for p in self.params if self.size > 1 else ():
            if p.xp is not np:
                raise MPIError("MPI training runs on the CPU: parameter blobs of net %r live on "
                               "a GPU (leave out -gpu / set_mode_gpu with mpirun)" % self.net.name)
        self._MPI = import_mpi() if self.size > 1 else None
        self.scale = np.float32(1.0 / self.size)   # Caffe: (Dtype) 1.0 / solver_count
        self.layer_wise = bool(solver.param.layer_wise_reduce)
        self.buckets = plan(self.net, bucket_bytes if self.layer_wise else float("inf"))
        self._by_trigger = {}
        for b in self.buckets:
            self._by_trigger.setdefault(b.trigger, []).append(b)
        self._lowest = min(self._by_trigger) if self._by_trigger else 0
        self._passes = 0
        self._pending = []
        self._agreed = []
        self.stats = Stats()
        if self.size > 1:
            solver._requested_action = self._requested_action   # signals: decided together
            self._log_plan()

    def _log_plan(self):
        total = sum(b.nbytes for b in self.buckets)
        if not self.layer_wise:
            how = "one all-reduce after backward"
        else:
            how = "layer-wise, %d bucket%s (%s)" % (
                len(self.buckets), "" if len(self.buckets) == 1 else "s",
                ", ".join("%.3g MB" % (b.nbytes / 1e6) for b in self.buckets))
            if shares_weights(self.net):
                how += "; shared parameters go after the backward of their lowest layer"
        log.info("All-reducing %.4g MB of gradients per iteration over %d ranks: %s"
                 % (total / 1e6, self.size, how), "parallel.cpp:0")

    # -- Caffe's NCCL surface -------------------------------------------------------------------
    def bcast(self):
        """The root's learnable parameters to every rank (NCCL::Broadcast)."""
        if self.size == 1 or not self.params:
            return
        t = time.perf_counter()
        for b in self.buckets:
            if self.rank == 0:
                for i, off in zip(b.indices, b.offsets):
                    d = self.params[i].data
                    b.buffer[off:off + d.size] = d.reshape(-1)
            self.comm.Bcast(b.buffer, root=0)
            for i, off in zip(b.indices, b.offsets):
                d = self.params[i].data
                d[...] = b.buffer[off:off + d.size].reshape(d.shape)
        self.stats.bcast_s += time.perf_counter() - t

    def on_start(self):
        """Before an iteration's forward/backward: a new count of backward passes."""
        self._passes = 0
        if self._pending:       # launched outside solver.step: finish, keep nothing
            self._MPI.Request.Waitall([b.request for b in self._pending])
            self._pending = []
        for b in self.buckets:
            b.request, b.sent = None, False

    def __call__(self, layer):
        """Net after_backward callback (NCCL::run(layer)): start the buckets completed by
        layer ``layer``'s backward, during the last of the iter_size passes."""
        if self.size == 1 or not self.layer_wise:
            return
        last_pass = self._passes >= self.solver.param.iter_size - 1
        if layer == self._lowest:
            self._passes += 1
        if not last_pass:
            return
        t = time.perf_counter()
        for b in self._by_trigger.get(layer, ()):
            if not b.sent:
                self._launch(b)
        self._progress()
        self.stats.launch_s += time.perf_counter() - t

    run = __call__

    def on_gradients_ready(self):
        """After backward, before ApplyUpdate: every gradient summed over the ranks and scaled
        by 1/solver_count (buckets not started yet are started now)."""
        if self.size == 1:
            return
        t = time.perf_counter()
        if self.layer_wise:
            for b in self.buckets:
                if not b.sent:
                    self._launch(b)
            for b in self._pending:
                b.request.Wait()
                self._finish(b)
            self._pending = []
        else:
            for b in self.buckets:
                b.pack(self.params)
                self.comm.Allreduce(self._MPI.IN_PLACE, b.buffer, op=self._MPI.SUM)
                self.stats.bytes += b.nbytes
                b.unpack_scaled(self.params, self.scale)
        for b in self.buckets:
            b.sent = False
        self._agree_on_signals()
        self.stats.steps += 1
        self.stats.wait_s += time.perf_counter() - t

    # -- signals -----------------------------------------------------------------------------
    def _agree_on_signals(self):
        """A SIGINT / SIGHUP reaches the ranks one by one: once per iteration the ranks take the
        strongest request any of them has (stop > snapshot > none), so that they all stop at
        the same iteration (a rank stopping alone would leave the others in the all-reduce).
        The solver acts on it after the update, as on a signal of its own."""
        s = self.solver
        if not self._signals_possible():   # the same on every rank: no signal handlers
            return
        local = type(s)._requested_action(s)
        code = np.array([_ACTIONS.index(local)], np.int32)
        self.comm.Allreduce(self._MPI.IN_PLACE, code, op=self._MPI.MAX)
        self._agreed.append(_ACTIONS[int(code[0])])

    def _signals_possible(self):
        s = self.solver
        return any(e not in (None, "none") for e in (s.sigint_effect, s.sighup_effect))

    def _requested_action(self):
        """The solver's _requested_action while this object is attached: the agreed one."""
        return self._agreed.pop(0) if self._agreed else _ACTIONS[0]

    # -- buckets -----------------------------------------------------------------------------
    def _launch(self, b):
        b.pack(self.params)
        b.request = self.comm.Iallreduce(self._MPI.IN_PLACE, b.buffer, op=self._MPI.SUM)
        b.sent = True
        self.stats.bytes += b.nbytes
        self._pending.append(b)

    def _finish(self, b):
        b.request = None
        b.unpack_scaled(self.params, self.scale)

    def _progress(self):
        """Let MPI move the pending all-reduces on (no progress thread in most MPIs); unpack
        the finished ones while backward goes on."""
        still = []
        for b in self._pending:
            if b.request.Test():
                self._finish(b)
            else:
                still.append(b)
        self._pending = still

    def __repr__(self):
        return "decaf.parallel.MPI(rank %d of %d, %d buckets%s)" % (
            self.rank, self.size, len(self.buckets), ", layer-wise" if self.layer_wise else "")


def attach(solver, comm=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
    """What ``caffe train`` does with several solvers: broadcast the root's weights, add the
    all-reduce to the solver's callbacks and (layer_wise_reduce) to the net's after_backward.
    Returns the MPI object."""
    from .. import pycaffe  # noqa: F401  (Net.after_backward)
    sync = MPI(solver, comm, bucket_bytes)
    sync.bcast()
    solver.add_callback(sync)
    if sync.size > 1 and sync.layer_wise:
        solver.net.after_backward(sync)
    return sync
