"""Solver: Caffe's training loop (``solver.cpp``); the SGD family is :mod:`decaf.sgd_solver`.

``Solver.step`` is Caffe's ``Solver::Step``, per iteration::

    clear param diffs; test every test_interval (at 0 only with test_initialization)
    on_start callbacks; loss = mean of iter_size forward/backward passes; smoothed loss
    display every `display` iterations; on_gradients_ready callbacks
    apply_update()  (rate, ClipGradients, per param Normalize, Regularize, ComputeUpdateValue,
                     net.update()); iter += 1; snapshot every `snapshot` iterations / on signal

The update rules themselves are the small functions of :mod:`decaf.solvers` (called by
:mod:`decaf.sgd_solver`).  Snapshots are Caffe's files: ``<prefix>_iter_N.caffemodel`` +
``.solverstate`` (binary protobuf) or ``.caffemodel.h5`` + ``.solverstate.h5``; each is written
to a temporary name and renamed.
"""
import os
import signal
import time

import numpy as np

from . import backend, glog as log
from .errors import MissingFileError, SolverError
from .proto import caffe_pb2

NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"
_EFFECTS = (NONE, STOP, SNAPSHOT)


def _f32(x):
    return np.float32(x)


def read_solver_param(source):
    """A SolverParameter from a path, prototxt text or message, upgraded as Caffe's
    ``ReadSolverParamsFromTextFileOrDie`` (solver_type -> type, snapshot_prefix defaulting)."""
    from .proto import io as pio
    param = pio.read_solver_param(source)
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        _upgrade_snapshot_prefix(os.fspath(source), param)
    return param


def _upgrade_snapshot_prefix(path, param):
    """No snapshot_prefix: the solver file's path without extension; a directory: dir/stem."""
    stem = os.path.splitext(path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
        log.info("snapshot_prefix was not specified and is set to " + stem,
                 "upgrade_proto.cpp:1104")
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
        log.info("snapshot_prefix is a directory and is set to " + param.snapshot_prefix,
                 "upgrade_proto.cpp:1108")


def _check_effect(name, value):
    if value is not None and value not in _EFFECTS:
        raise SolverError("Invalid signal effect \"%s\" was specified for %s (use stop, "
                          "snapshot or none)" % (value, name))
    return value


class Solver:
    """Caffe's Solver. ``Solver(param)``: a solver prototxt path or a SolverParameter."""

    type = None

    def __init__(self, param, source=None):
        if source is None and isinstance(param, (str, os.PathLike)):
            source = os.fspath(param)
        self.source = source           # the solver file, when known (for error messages)
        param = read_solver_param(param)
        self.param = param
        self.callbacks = []
        self.sigint_effect = None      # "stop" / "snapshot" / "none"; None: no handler
        self.sighup_effect = None
        self.requested_early_exit = False
        self._pending_signals = []
        self.losses, self.smoothed_loss = [], _f32(0)
        self.iter = self.current_step = self._iterations_last = 0
        self._init(param)

    # -- construction (Solver::Init) ---------------------------------------------------------
    def _init(self, param):
        from .proto import io as pio
        rank = backend.solver_rank()   # first: the MPI world (root-only logging) is known now
        log.info("Initializing solver from parameters: \n" + pio.format_text(param),
                 "solver.cpp:45")
        if param.average_loss < 1:
            raise SolverError("average_loss should be non-negative (got %d)" % param.average_loss)
        self._check_snapshot_write_permissions()
        if param.random_seed >= 0:
            backend.set_random_seed(param.random_seed + rank)
        self.net = self._init_train_net(param)
        self.test_nets = self._init_test_nets(param)
        log.info("Solver scaffolding done.", "solver.cpp:57")

    def _init_train_net(self, param):
        fields = ("net", "net_param", "train_net", "train_net_param")
        given = [f for f in fields if param.HasField(f)]
        if len(given) != 1:
            raise SolverError("SolverParameter must specify exactly one train net using one of "
                              "these fields: %s (got %s)" % (", ".join(fields),
                                                             ", ".join(given) or "none"))
        which = given[0]
        if which.endswith("_param"):
            log.info("Creating training net specified in %s." % which, "solver.cpp:87")
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(param, which))
        else:
            log.info("Creating training net from %s file: %s" % (which, getattr(param, which)),
                     "solver.cpp:102")
            net_param = self._read_net(getattr(param, which), which)
        state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(param.train_state)
        net_param.state.CopyFrom(state)
        net = self._build_net(net_param)
        for weights in param.weights:
            load_net_weights(net, weights)
        return net

    def _init_test_nets(self, param):
        generic = [f for f in ("net_param", "net") if param.HasField(f)]
        if len(generic) > 1:
            raise SolverError("Both net_param and net file may not be specified.")
        n_specific = len(param.test_net_param) + len(param.test_net)
        n_iter = len(param.test_iter)
        if (generic and n_iter < n_specific) or (not generic and n_iter != n_specific):
            raise SolverError("test_iter must be specified for each test network (%d test nets, "
                              "%d test_iter)" % (n_specific, n_iter))
        n_total = n_iter if generic else n_specific
        if len(param.test_state) and len(param.test_state) != n_total:
            raise SolverError("test_state must be unspecified or specified once per test net "
                              "(%d test nets, %d test_state)" % (n_total, len(param.test_state)))
        if n_total and param.test_interval <= 0:
            raise SolverError("test_interval must be > 0 when there are test nets (test_iter "
                              "given %d times)" % n_iter)
        sources = []
        for p in param.test_net_param:
            sources.append(("test_net_param", p))
        for path in param.test_net:
            sources.append(("test_net file: " + path, self._read_net(path, "test_net")))
        for _ in range(n_total - n_specific):
            if param.HasField("net_param"):
                sources.append(("net_param", param.net_param))
            else:
                sources.append(("net file: " + param.net, self._read_net(param.net, "net")))
        nets = []
        for i, (source, p) in enumerate(sources):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p)
            state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
            state.MergeFrom(net_param.state)
            if len(param.test_state):
                state.MergeFrom(param.test_state[i])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s" % (i, source), "solver.cpp:190")
            net = self._build_net(net_param)
            for weights in param.weights:
                load_net_weights(net, weights)
            nets.append(net)
        return nets

    def _read_net(self, path, field):
        """The NetParameter of the solver's ``field`` (net / train_net / test_net) file; a
        missing file says which field of which solver named it, and how it was resolved."""
        from .proto import io as pio
        try:
            return pio.read_net_param(path)
        except MissingFileError as e:
            solver = " of solver %s" % self.source if self.source else ""
            msg = "%s (the path comes from the '%s' field%s; a relative path is resolved from " \
                  "the current directory %s, as in Caffe)" % (e, field, solver, os.getcwd())
            if self.source and not os.path.isabs(path):
                beside = os.path.join(os.path.dirname(self.source), path)
                if os.path.isfile(beside):
                    msg += "; %s exists: run from the solver's folder or give that path" % beside
            raise MissingFileError(msg) from None

    @staticmethod
    def _build_net(net_param):
        from .net import Net
        return Net(net_param)

    def _check_snapshot_write_permissions(self):
        if not self.param.snapshot or not backend.root_solver():   # only the root snapshots
            return
        if not self.param.HasField("snapshot_prefix"):
            raise SolverError("In solver params, snapshot is specified but snapshot_prefix is not")
        probe = self.snapshot_filename(".tempfile")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError:
            raise SolverError("Cannot write to snapshot prefix '%s'.  Make sure that the "
                              "directory exists and is writable." % self.param.snapshot_prefix
                              ) from None

    # -- pycaffe surface ----------------------------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's ``add_callback(on_start, on_gradients_ready)`` (either may be None), or one
        object with ``on_start()`` and ``on_gradients_ready()`` methods (Caffe's Callback)."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self.callbacks.append((on_start, on_gradients_ready))

    def share_weights(self, net):
        """Make ``net`` use the train net's parameters (pycaffe ``solver.share_weights``)."""
        net.share_trained_layers_with(self.net)

    # -- the loop -----------------------------------------------------------------------------
    def solve(self, resume_file=None):
        """Caffe's Solver::Solve: (restore,) step to max_iter, final snapshot/display/test."""
        log.info("Solving " + self.net.name, "solver.cpp:293")
        log.info("Learning Rate Policy: " + self.param.lr_policy, "solver.cpp:294")
        self.requested_early_exit = False
        with self._signal_handlers():
            if resume_file:
                log.info("Restoring previous solver status from %s" % resume_file,
                         "solver.cpp:301")
                self.restore(resume_file)
            start_iter = self.iter
            self.step(self.param.max_iter - self.iter)
            p = self.param
            if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0) \
                    and backend.root_solver():
                self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.", "solver.cpp:318")
            return
        if not backend.root_solver():   # several solvers: the root displays and tests
            return
        if p.display and self.iter % p.display == 0:
            loss = _f32(self.net.forward_loss())
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s" % (self.iter, log.fmt(self.smoothed_loss)),
                     "solver.cpp:331")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.", "solver.cpp:336")

    def step(self, iters):
        """Run ``iters`` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self.losses, self.smoothed_loss = [], _f32(0)
        self._iterations_last = self.iter
        timer = time.perf_counter()
        root = backend.root_solver()   # several solvers: only the root tests and snapshots
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization) and root:
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self.callbacks:
                if on_start is not None:
                    on_start()
            display = p.display and self.iter % p.display == 0
            if hasattr(self.net, "debug_info"):
                self.net.debug_info = bool(display and p.debug_info)
            loss = _f32(0)
            for _ in range(p.iter_size):
                loss += _f32(self.net.forward_backward())
            loss /= _f32(p.iter_size)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - self._iterations_last) / (lapse or 1.0)
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s"
                         % (self.iter, log.fmt(per_s), log.fmt(lapse), p.display,
                            log.fmt(self.smoothed_loss)), "solver.cpp:239")
                timer = time.perf_counter()
                self._iterations_last = self.iter
                self._log_outputs(self.net, "Train", "solver.cpp:258")
            for _, on_gradients_ready in self.callbacks:
                if on_gradients_ready is not None:
                    on_gradients_ready()
            self.apply_update()
            self.iter += 1
            request = self._requested_action()
            if ((p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT) and root:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _update_smoothed_loss(self, loss, start_iter, average_loss):
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            n = len(self.losses)
            self.smoothed_loss = _f32((self.smoothed_loss * _f32(n - 1) + loss) / _f32(n))
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss = _f32(self.smoothed_loss +
                                      (loss - self.losses[idx]) / _f32(average_loss))
            self.losses[idx] = loss

    @staticmethod
    def _log_outputs(net, kind, where, scores=None):
        """``    Train net output #k: name = v (* w = w*v loss)``, one line per output value."""
        weights = net.blob_loss_weights
        k = 0
        for j, (name, blob) in enumerate(zip(net.outputs, net.output_blobs)):
            values = scores[j] if scores is not None else \
                backend.to_numpy(blob.data).reshape(-1).astype(np.float32)
            w = _f32(weights.get(name, 0.0))
            for v in values:
                extra = " (* %s = %s loss)" % (log.fmt(w), log.fmt(_f32(w * v))) if w else ""
                log.info("    %s net output #%d: %s = %s%s" % (kind, k, name, log.fmt(v), extra),
                         where)
                k += 1

    # -- testing ------------------------------------------------------------------------------
    def test_all(self):
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id=0):
        """Caffe's Solver::Test: mean of every test net output over test_iter forward passes."""
        log.info("Iteration %d, Testing net (#%d)" % (self.iter, test_net_id), "solver.cpp:351")
        test_net = self.test_nets[test_net_id]
        test_net.share_trained_layers_with(self.net)
        n_iter = self.param.test_iter[test_net_id]
        loss, scores = _f32(0), None
        for _ in range(n_iter):
            request = self._requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                break
            iter_loss = _f32(test_net.forward_loss())
            if self.param.test_compute_loss:
                loss += iter_loss
            result = [backend.to_numpy(b.data).reshape(-1).astype(np.float32)
                      for b in test_net.output_blobs]
            if scores is None:
                scores = [r.copy() for r in result]
            else:
                for s, r in zip(scores, result):
                    s += r
        if self.requested_early_exit:
            log.info("Test interrupted.", "solver.cpp:385")
            return
        if self.param.test_compute_loss:
            log.info("Test loss: %s" % log.fmt(loss / _f32(n_iter)), "solver.cpp:397")
        if scores is not None:
            scores = [s / _f32(n_iter) for s in scores]
            self._log_outputs(test_net, "Test", "solver.cpp:418", scores)

    # -- signals ------------------------------------------------------------------------------
    def _requested_action(self):
        """The action a pending SIGINT / SIGHUP asks for (Caffe's GetRequestedAction)."""
        while self._pending_signals:
            sig = self._pending_signals.pop(0)
            effect = self.sigint_effect if sig == signal.SIGINT else self.sighup_effect
            if effect and effect != NONE:
                return effect
        return NONE

    def _signal_handlers(self):
        return _SignalScope(self)

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return "%s_iter_%d%s" % (self.param.snapshot_prefix, self.iter, extension)

    def snapshot(self):
        """Write the weights and the solver state (Caffe's Solver::Snapshot)."""
        write_diff = self.param.snapshot_diff
        if self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            model_filename = self.snapshot_filename(".caffemodel.h5")
            log.info("Snapshotting to HDF5 file " + model_filename, "solver.cpp:473")
            self.net.save_hdf5(model_filename, write_diff=write_diff)
        else:
            model_filename = self.snapshot_filename(".caffemodel")
            log.info("Snapshotting to binary proto file " + model_filename, "solver.cpp:464")
            self.net.save(model_filename, write_diff=write_diff)
        self.snapshot_solver_state(model_filename)
        return model_filename

    def snapshot_solver_state(self, model_filename):
        raise NotImplementedError

    def restore(self, state_file):
        raise NotImplementedError

    # -- the update: subclasses -----------------------------------------------------------------
    def apply_update(self):
        raise NotImplementedError


class _SignalScope:
    """Installs SIGINT/SIGHUP handlers for the duration of ``solve`` when effects are set."""

    def __init__(self, solver):
        self.solver, self.old = solver, {}

    def __enter__(self):
        s = self.solver
        wanted = [(signal.SIGINT, _check_effect("sigint_effect", s.sigint_effect))]
        if hasattr(signal, "SIGHUP"):
            wanted.append((signal.SIGHUP, _check_effect("sighup_effect", s.sighup_effect)))
        for sig, effect in wanted:
            if effect is None:
                continue
            try:
                self.old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: no handlers, as without effects
                pass
        return self

    def _handle(self, signum, frame):
        self.solver._pending_signals.append(signum)

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return False


def load_net_weights(net, model_list):
    """Caffe's LoadNetWeights: comma-separated weights files, loaded in order."""
    for name in model_list.split(","):
        name = name.strip()
        if name:
            log.info("Finetuning from " + name, "solver.cpp:39")
            net.copy_trained_layers_from(name)


# the SGD family subclasses Solver (above): decaf/sgd_solver.py
from .sgd_solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: E402
                         NesterovSolver, RMSPropSolver, SGDSolver)

SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                     AdaDeltaSolver, AdamSolver)}


def solver_class(type_name):
    if type_name not in SOLVERS:
        raise SolverError("Unknown solver type: %r (known types: %s)"
                          % (type_name, ", ".join(SOLVERS)))
    return SOLVERS[type_name]


def get_solver(param, source=None):
    """pycaffe's ``caffe.get_solver``: the solver class named by the file's ``type``.
    ``source``: the solver file ``param`` was read from, for error messages."""
    if source is None and isinstance(param, (str, os.PathLike)):
        source = os.fspath(param)
    param = read_solver_param(param)
    return solver_class(param.type)(param, source=source)
