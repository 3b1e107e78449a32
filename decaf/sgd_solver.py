"""The SGD family of solvers (Caffe's ``sgd_solver.cpp``, ``nesterov_solver.cpp``,
``adagrad_solver.cpp``, ``rmsprop_solver.cpp``, ``adadelta_solver.cpp``, ``adam_solver.cpp``).

``SGDSolver.apply_update`` is Caffe's ``SGDSolver::ApplyUpdate``: the lr policy, gradient
clipping, then per parameter Normalize, Regularize, ComputeUpdateValue, and ``net.update()``
(data -= diff).  Each rule's arithmetic is a function of :mod:`decaf.solvers`; the training
loop is :class:`decaf.solver.Solver`.
"""
import os

from . import backend, glog as log, solvers
from .blob import Blob
from .errors import SolverError
from .proto import caffe_pb2
from .solver import Solver, _f32
from .solver_state import learned_net_path, read_solver_state, write_solver_state


# -- the SGD family (sgd_solver.cpp, nesterov_solver.cpp, adagrad_solver.cpp, ...) -----------------

class SGDSolver(Solver):
    """Stochastic gradient descent with momentum: history = m*history + lr*diff; w -= history."""

    type = "SGD"
    history_sets = 1          # AdaDelta and Adam keep two history blobs per parameter
    update_observer = None    # callable(stage, param_index, rate): see _observed_update

    def __init__(self, param, source=None):
        super().__init__(param, source)
        self.check_settings()
        self.pre_solve()

    def check_settings(self):
        if self.param.regularization_type not in ("L1", "L2"):
            raise SolverError("Unknown regularization type: %r (use \"L2\" or \"L1\")"
                              % self.param.regularization_type)

    def pre_solve(self):
        """Allocate history (zeros) and the scratch buffers Caffe calls update_ and temp_."""
        params = self.net.learnable_params
        self.history = [Blob(p.shape, dtype=p.dtype, xp=p.xp)
                        for _ in range(self.history_sets) for p in params]
        self.update_buffers = [p.xp.zeros(p.shape, p.dtype) for p in params]
        self.temp_buffers = [p.xp.zeros(p.shape, p.dtype) for p in params]

    @property
    def lr(self):
        """The learning rate the policy gives at the current iteration (no side effects)."""
        return float(solvers.learning_rate(self.param, self.iter, self.current_step)[0])

    def get_learning_rate(self):
        rate, self.current_step = solvers.learning_rate(
            self.param, self.iter, self.current_step, lambda m: log.info(m, "sgd_solver.cpp:61"))
        return rate

    def apply_update(self):
        """SGDSolver::ApplyUpdate: rate, ClipGradients, then per param Normalize, Regularize,
        ComputeUpdateValue; finally net.update() (w -= diff). ``update_observer``, when set,
        is called with ("gradients", None, rate) before ClipGradients, at every per-param step
        (see _observed_update) and with ("updated", None, rate) after net.update()."""
        rate = self.get_learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %s" % (self.iter, log.fmt(rate)), "sgd_solver.cpp:107")
        params = self.net.learnable_params
        watch = self.update_observer
        if watch is not None:
            watch("gradients", None, rate)
        solvers.clip_gradients([p.diff for p in params], self.param.clip_gradients,
                               lambda msg: log.info(msg, "sgd_solver.cpp:92"))
        for i in range(len(params)):
            if watch is not None:
                self._observed_update(watch, i, rate)
                continue
            self.normalize(i)
            self.regularize(i)
            self.compute_update_value(i, rate)
        self.net.update()
        if watch is not None:
            watch("updated", None, rate)

    def _observed_update(self, watch, i, rate):
        """apply_update's per-param steps with ``watch(stage, i, rate)`` called before them
        ("clipped": the diff after ClipGradients) and after each ("normalized", "regularized",
        "computed": the diff is then the step Net::Update subtracts). Set
        ``solver.update_observer`` to see them (``decaf explain_update``); with it None, as
        by default, apply_update does not call this."""
        watch("clipped", i, rate)
        self.normalize(i)
        watch("normalized", i, rate)
        self.regularize(i)
        watch("regularized", i, rate)
        self.compute_update_value(i, rate)
        watch("computed", i, rate)

    def normalize(self, i):
        solvers.normalize(self.net.learnable_params[i].diff, self.param.iter_size)

    def regularize(self, i):
        p = self.net.learnable_params[i]
        local_decay = _f32(self.param.weight_decay) * _f32(self.net.params_weight_decay[i])
        solvers.regularize(p.diff, p.data, local_decay, self.param.regularization_type,
                           self.temp_buffers[i])

    def local_rate(self, i, rate):
        return _f32(rate) * _f32(self.net.params_lr[i])

    def compute_update_value(self, i, rate):
        solvers.sgd_update(self.net.learnable_params[i].diff, self.history[i].data,
                           self.local_rate(i, rate), self.param.momentum)

    # -- solver state -------------------------------------------------------------------------
    def snapshot_solver_state(self, model_filename):
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        filename = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        log.info("Snapshotting solver state to %s file %s" % ("HDF5" if hdf5 else "binary proto",
                                                               filename), "sgd_solver.cpp:273")
        write_solver_state(filename, self.iter, model_filename, self.current_step,
                           [backend.to_numpy(h.data) for h in self.history], hdf5)

    def restore(self, state_file):
        """Resume from a ``.solverstate`` (binary) or ``.solverstate.h5`` file: iter,
        current_step, history, and the weights file it names (``learned_net``)."""
        state_file = os.fspath(state_file)
        it, learned_net, current_step, saved = read_solver_state(state_file)
        if len(saved) != len(self.history):
            raise SolverError("Incorrect length of history blobs in %s: %d saved, this %s solver "
                              "keeps %d" % (state_file, len(saved), self.type, len(self.history)))
        names = self.net.learnable_param_names
        for i, (h, arr) in enumerate(zip(self.history, saved)):
            if arr.size != h.count:
                raise SolverError("%s: history blob %d has %d values, parameter %s has %d"
                                  % (state_file, i, arr.size, names[i % len(names)], h.count))
        if learned_net:
            self.net.copy_trained_layers_from(learned_net_path(learned_net, state_file))
        log.info("SGDSolver: restoring history", "sgd_solver.cpp:329")
        for h, arr in zip(self.history, saved):
            h.data[...] = h.xp.asarray(arr.reshape(h.shape))
        self.iter, self.current_step = it, current_step


class NesterovSolver(SGDSolver):
    """Nesterov: h' = m h + lr diff;  step = (1 + m) h' - m h."""

    type = "Nesterov"

    def compute_update_value(self, i, rate):
        solvers.nesterov_update(self.net.learnable_params[i].diff, self.history[i].data,
                                self.local_rate(i, rate), self.param.momentum,
                                self.update_buffers[i])


class AdaGradSolver(SGDSolver):
    """AdaGrad: history += diff^2;  step = lr diff / (sqrt(history) + delta)."""

    type = "AdaGrad"

    def check_settings(self):
        super().check_settings()
        if self.param.momentum != 0:
            raise SolverError("Momentum cannot be used with AdaGrad (momentum is %g; set it to 0)"
                              % self.param.momentum)

    def compute_update_value(self, i, rate):
        solvers.adagrad_update(self.net.learnable_params[i].diff, self.history[i].data,
                               self.local_rate(i, rate), self.param.delta, self.update_buffers[i])


class RMSPropSolver(SGDSolver):
    """RMSProp: h = d h + (1 - d) diff^2;  step = lr diff / (sqrt(h) + delta), d = rms_decay."""

    type = "RMSProp"

    def check_settings(self):
        super().check_settings()
        if self.param.momentum != 0:
            raise SolverError("Momentum cannot be used with RMSProp (momentum is %g; set it to 0)"
                              % self.param.momentum)
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError("rms_decay should lie between 0 and 1 (got %g)" % self.param.rms_decay)

    def compute_update_value(self, i, rate):
        solvers.rmsprop_update(self.net.learnable_params[i].diff, self.history[i].data,
                               self.local_rate(i, rate), self.param.rms_decay, self.param.delta,
                               self.update_buffers[i])


class AdaDeltaSolver(SGDSolver):
    """AdaDelta: history[i] = mean of diff^2, history[P + i] = mean of step^2 (momentum = decay)."""

    type = "AdaDelta"
    history_sets = 2

    def compute_update_value(self, i, rate):
        n = len(self.net.learnable_params)
        solvers.adadelta_update(self.net.learnable_params[i].diff, self.history[i].data,
                                self.history[n + i].data, self.local_rate(i, rate),
                                self.param.momentum, self.param.delta, self.update_buffers[i],
                                self.temp_buffers[i])


class AdamSolver(SGDSolver):
    """Adam: history[i] = m (beta1 = momentum), history[P + i] = v (beta2 = momentum2), t = iter+1."""

    type = "Adam"
    history_sets = 2

    def compute_update_value(self, i, rate):
        n = len(self.net.learnable_params)
        p = self.param
        solvers.adam_update(self.net.learnable_params[i].diff, self.history[i].data,
                            self.history[n + i].data, self.local_rate(i, rate), p.momentum,
                            p.momentum2, p.delta, self.iter + 1, self.temp_buffers[i])
