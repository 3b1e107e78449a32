"""Caffe's learning-rate policies and per-parameter update rules (``sgd_solver.cpp`` & co).

One solver step (``SGDSolver::ApplyUpdate``) is, for the learnable params in Caffe's order::

    rate = learning_rate(param, iter)        # the lr_policy
    clip_gradients(diffs, clip)              # one global L2 norm over every diff
    for each param i:
        normalize(diff_i, iter_size)         # diff /= iter_size
        regularize(...)                      # diff += weight_decay * decay_mult * w   (L2)
                                             # diff += weight_decay * decay_mult * sign(w) (L1)
        <rule>_update(diff_i, history, rate * lr_mult_i, ...)   # diff becomes the step
    net.update()                             # w -= diff

Every function works in place on float32 (or float64) arrays of numpy or cupy with ``out=``
arguments and caller-owned scratch buffers (Caffe's ``update_`` / ``temp_`` blobs), so a step
allocates nothing. Scalars are cast to the array's dtype first, as Caffe computes them in
``Dtype``.
"""
import math

import numpy as np

from . import backend
from .kernels.blas import axpy
from .errors import SolverError

# -- learning-rate policies -------------------------------------------------------------------

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def _f32(x):
    return np.float32(x)


def learning_rate(param, it, current_step=0, log_fn=None):
    """Caffe's ``GetLearningRate`` at iteration ``it``: returns ``(rate, current_step)``.

    fixed     base_lr
    step      base_lr * gamma ^ floor(it / stepsize)
    exp       base_lr * gamma ^ it
    inv       base_lr * (1 + gamma * it) ^ (-power)
    multistep base_lr * gamma ^ k, k = stepvalues passed (k moves at most one per call, as Caffe)
    poly      base_lr * (1 - it / max_iter) ^ power
    sigmoid   base_lr / (1 + exp(-gamma * (it - stepsize)))

    Computed as Caffe does: float32 operands, ``pow``/``exp`` in double, result rounded to
    float32. ``current_step`` is the solver state kept by step/multistep (``SolverState``);
    ``log_fn`` receives Caffe's "MultiStep Status" line when the multistep position moves.
    """
    policy = param.lr_policy
    base_lr, gamma, power = _f32(param.base_lr), _f32(param.gamma), _f32(param.power)
    it = int(it)
    if policy == "fixed":
        return _f32(base_lr), current_step
    if policy == "step":
        _require(param.stepsize > 0, "lr_policy \"step\" needs stepsize > 0")
        _require(gamma >= 0, "lr_policy \"step\" needs gamma >= 0")
        current_step = it // param.stepsize
        return _f32(float(base_lr) * float(gamma) ** current_step), current_step
    if policy == "exp":
        _require(gamma >= 0, "lr_policy \"exp\" needs gamma >= 0")
        return _f32(float(base_lr) * float(gamma) ** it), current_step
    if policy == "inv":
        _require(gamma >= 0, "lr_policy \"inv\" needs gamma >= 0")
        base = _f32(1) + gamma * _f32(it)
        return _f32(float(base_lr) * float(base) ** -float(power)), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
            if log_fn is not None:
                log_fn("MultiStep Status: Iteration %d, step = %d" % (it, current_step))
        _require(gamma >= 0, "lr_policy \"multistep\" needs gamma >= 0")
        return _f32(float(base_lr) * float(gamma) ** current_step), current_step
    if policy == "poly":
        _require(param.max_iter > 0, "lr_policy \"poly\" needs max_iter > 0")
        frac = _f32(1) - _f32(it) / _f32(param.max_iter)
        return _f32(float(base_lr) * float(frac) ** float(power)), current_step
    if policy == "sigmoid":
        _require(gamma >= 0, "lr_policy \"sigmoid\" needs gamma >= 0")
        _require(param.stepsize > 0, "lr_policy \"sigmoid\" needs stepsize > 0")
        z = -gamma * (_f32(it) - _f32(param.stepsize))
        return _f32(base_lr * (_f32(1) / (_f32(1) + _f32(math.exp(float(z)))))), current_step
    raise SolverError("Unknown learning rate policy: %r (one of %s)"
                      % (policy, ", ".join(LR_POLICIES)))


def _require(cond, msg):
    if not cond:
        raise SolverError(msg)


# -- gradient preparation ---------------------------------------------------------------------

def clip_gradients(diffs, clip, log_fn=None):
    """ClipGradients: if the global L2 norm of all ``diffs`` exceeds ``clip`` (>= 0), scale
    every diff by ``clip / norm``. Returns the scale factor applied (1.0 when none)."""
    if clip < 0 or not diffs:
        return 1.0
    dtype = diffs[0].dtype.type
    sumsq = dtype(0)
    for d in diffs:
        flat = d.reshape(-1)
        sumsq = dtype(sumsq + dtype(flat.dot(flat)))
    norm = dtype(math.sqrt(float(sumsq)))
    clip = dtype(clip)
    if norm > clip:
        scale = dtype(clip / norm)
        if log_fn is not None:
            from .glog import fmt
            log_fn("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s"
                   % (fmt(norm), fmt(clip), fmt(scale)))
        for d in diffs:
            backend.get_array_module(d).multiply(d, scale, out=d)
        return float(scale)
    return 1.0


def normalize(diff, iter_size):
    """Normalize: diff *= 1 / iter_size (the accumulated gradient of iter_size passes)."""
    if iter_size != 1:
        xp = backend.get_array_module(diff)
        xp.multiply(diff, diff.dtype.type(1.0 / iter_size), out=diff)


def regularize(diff, data, local_decay, reg_type, temp):
    """Regularize: L2 ``diff += local_decay * w``; L1 ``diff += local_decay * sign(w)``.
    ``local_decay = weight_decay * decay_mult``; nothing happens when it is 0."""
    if not local_decay:
        return
    xp = backend.get_array_module(diff)
    local_decay = diff.dtype.type(local_decay)
    if reg_type == "L2":
        if axpy(local_decay, data, diff):           # Caffe's caffe_axpy: one pass
            return
        xp.multiply(data, local_decay, out=temp)
    elif reg_type == "L1":
        xp.sign(data, out=temp)
        xp.multiply(temp, local_decay, out=temp)
    else:
        raise SolverError("Unknown regularization type: %r (use \"L2\" or \"L1\")" % reg_type)
    xp.add(diff, temp, out=diff)


# -- update rules: each turns diff (the gradient) into the step w -= diff ----------------------

def sgd_update(diff, history, local_rate, momentum):
    """SGD: history = momentum * history + local_rate * diff;  diff = history."""
    xp = backend.get_array_module(diff)
    t = diff.dtype.type
    xp.multiply(history, t(momentum), out=history)
    if not axpy(t(local_rate), diff, history):      # history += local_rate * diff
        xp.multiply(diff, t(local_rate), out=diff)
        xp.add(history, diff, out=history)
    xp.copyto(diff, history)


def nesterov_update(diff, history, local_rate, momentum, update):
    """Nesterov: h' = momentum * h + local_rate * diff;  diff = (1 + momentum) h' - momentum h."""
    xp = backend.get_array_module(diff)
    t = diff.dtype.type
    update[...] = history                               # h, kept to step back
    sgd_update(diff, history, local_rate, momentum)     # history = h', diff = h'
    xp.multiply(history, t(1) + t(momentum), out=diff)
    xp.multiply(update, t(momentum), out=update)
    xp.subtract(diff, update, out=diff)


def adagrad_update(diff, history, local_rate, delta, update):
    """AdaGrad: history += diff^2;  diff = local_rate * diff / (sqrt(history) + delta)."""
    xp = backend.get_array_module(diff)
    t = diff.dtype.type
    xp.multiply(diff, diff, out=update)
    xp.add(history, update, out=history)
    xp.sqrt(history, out=update)
    xp.add(update, t(delta), out=update)
    xp.divide(diff, update, out=update)
    xp.multiply(update, t(local_rate), out=diff)


def rmsprop_update(diff, history, local_rate, rms_decay, delta, update):
    """RMSProp: history = rms_decay * history + (1 - rms_decay) * diff^2;
    diff = local_rate * diff / (sqrt(history) + delta)."""
    xp = backend.get_array_module(diff)
    t = diff.dtype.type
    rms_decay = t(rms_decay)
    xp.multiply(diff, diff, out=update)
    xp.multiply(update, t(1) - rms_decay, out=update)
    xp.multiply(history, rms_decay, out=history)
    xp.add(history, update, out=history)
    xp.sqrt(history, out=update)
    xp.add(update, t(delta), out=update)
    xp.divide(diff, update, out=update)
    xp.multiply(update, t(local_rate), out=diff)


def adadelta_update(diff, hist_grad, hist_update, local_rate, momentum, delta, update, temp):
    """AdaDelta (momentum = decay rate):
    hist_grad = m * hist_grad + (1 - m) * diff^2
    step = diff * sqrt((hist_update + delta) / (hist_grad + delta))
    hist_update = m * hist_update + (1 - m) * step^2;   diff = local_rate * step."""
    xp = backend.get_array_module(diff)
    t = diff.dtype.type
    m, delta = t(momentum), t(delta)
    xp.multiply(diff, diff, out=update)
    xp.multiply(update, t(1) - m, out=update)
    xp.multiply(hist_grad, m, out=hist_grad)
    xp.add(hist_grad, update, out=hist_grad)
    xp.add(hist_update, delta, out=update)
    xp.add(hist_grad, delta, out=temp)
    xp.divide(update, temp, out=update)
    xp.sqrt(update, out=update)
    xp.multiply(diff, update, out=diff)
    xp.multiply(diff, diff, out=update)
    xp.multiply(update, t(1) - m, out=update)
    xp.multiply(hist_update, m, out=hist_update)
    xp.add(hist_update, update, out=hist_update)
    xp.multiply(diff, t(local_rate), out=diff)


def adam_correction(beta1, beta2, t):
    """sqrt(1 - beta2^t) / (1 - beta1^t), in double as Caffe's pow(float, int), then float32."""
    b1, b2 = float(np.float32(beta1)), float(np.float32(beta2))
    return np.float32(math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))


def adam_update(diff, m, v, local_rate, beta1, beta2, delta, t, temp):
    """Adam (t = iter + 1): m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    diff = local_rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta)."""
    xp = backend.get_array_module(diff)
    ty = diff.dtype.type
    b1, b2 = ty(beta1), ty(beta2)
    xp.multiply(m, b1, out=m)
    xp.multiply(diff, ty(1) - b1, out=temp)
    xp.add(m, temp, out=m)
    xp.multiply(diff, diff, out=temp)
    xp.multiply(temp, ty(1) - b2, out=temp)
    xp.multiply(v, b2, out=v)
    xp.add(v, temp, out=v)
    xp.sqrt(v, out=temp)
    xp.add(temp, ty(delta), out=temp)
    xp.divide(m, temp, out=temp)
    xp.multiply(temp, ty(local_rate) * ty(adam_correction(beta1, beta2, t)), out=diff)
