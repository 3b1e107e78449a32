"""``decaf explain_update``: one training iteration of a solver, taken apart parameter by parameter.

    decaf explain_update SOLVER.prototxt [-weights W[,W2...] | -snapshot S.solverstate]
                         [-inputs X.npz] [-level N] [-stage a,b] [-gpu N] [-verbose]

Builds the solver's train net (test nets are left out), loads ``-weights`` (or restores
``-snapshot``), and runs one real ``solver.step(1)``: forward/backward on the net's own data,
then ``SGDSolver.apply_update``. The solver's ``update_observer`` hook looks at the diff and the
history blobs between Caffe's steps (ClipGradients, Normalize, Regularize,
ComputeUpdateValue, Net::Update); nothing of the update is computed here, so the numbers are
those of training, for any of the six solver types. Prints one row per learnable parameter
(Caffe's order, named ``layer.i``) with L2 norms, and a legend. A net whose data comes from
``Input`` layers gets its arrays from ``-inputs X.npz`` (keys: the input blob names).
"""
import sys

import numpy as np

from .. import glog as log
from ..data.cli import UsageError, parse_solver_tool_args, run_tool

USAGE = ("Explain one solver update, parameter by parameter\n"
         "Usage:\n"
         "    decaf explain_update SOLVER.prototxt [FLAGS]\n"
         "Flags:\n"
         "    -weights (weights to start from, separated by ',') type: string default: \"\"\n"
         "    -snapshot (a solver state to resume from) type: string default: \"\"\n"
         "    -inputs (.npz with one array per net input blob) type: string default: \"\"\n"
         "    -level (train net level) type: int32 default: 0\n"
         "    -stage (train net stages, separated by ',') type: string default: \"\"\n"
         "    -gpu (device id) type: string default: \"\"\n"
         "    -verbose (keep the solver's INFO log lines) type: bool default: false")

# what each solver keeps in its history blobs (history_sets of them per parameter)
HISTORY_NAMES = {"SGD": ("momentum",), "Nesterov": ("momentum",), "AdaGrad": ("sum_g2",),
                 "RMSProp": ("mean_g2",), "AdaDelta": ("mean_g2", "mean_dx2"),
                 "Adam": ("m", "v")}


def l2(x):
    """The L2 norm of an array (numpy or cupy), accumulated in float64."""
    flat = x.reshape(-1).astype("float64")
    return float(flat.dot(flat)) ** 0.5


class UpdateRecorder:
    """``solver.update_observer`` that records, per learnable parameter, the norms between the
    steps of SGDSolver::ApplyUpdate (and, with keep_steps, a copy of each final step)."""

    def __init__(self, solver, keep_steps=False):
        self.solver, self.keep_steps = solver, keep_steps
        self.rows, self.rate, self.raw_total = [], None, None
        self._saved = None

    def _history_norms(self, i):
        n = len(self.solver.net.learnable_params)
        return [l2(self.solver.history[k * n + i].data) for k in range(self.solver.history_sets)]

    def __call__(self, stage, i, rate):
        s = self.solver
        params = s.net.learnable_params
        if stage == "gradients":
            self.rate = rate
            raw = [l2(p.diff) for p in params]
            self.raw_total = float(np.sqrt(np.sum(np.square(raw))))
            self.rows = [{"raw": r} for r in raw]
            return
        if stage == "updated":
            return
        row, diff = self.rows[i], params[i].diff
        if stage == "clipped":
            row.update(w=l2(params[i].data), clipped=l2(diff), hist_before=self._history_norms(i))
        elif stage == "normalized":
            row["grad"] = l2(diff)
            self._saved = diff.copy()
        elif stage == "regularized":
            row["decay"] = l2(diff - self._saved)   # what Regularize added, as it added it
            self._saved = None
        elif stage == "computed":
            row["hist_after"] = self._history_norms(i)
            row["step"] = l2(diff)
            if self.keep_steps:
                row["step_array"] = diff.copy()


def _local_rates(solver, rate):
    """(lr_mult, decay_mult, local_rate, local_decay) per parameter, from the solver's own
    local_rate() and the net's multipliers."""
    net, p = solver.net, solver.param
    out = []
    for i in range(len(net.learnable_params)):
        decay_mult = float(net.params_weight_decay[i])
        out.append((float(net.params_lr[i]), decay_mult, float(solver.local_rate(i, rate)),
                    float(np.float32(p.weight_decay) * np.float32(decay_mult))))
    return out


def explain(solver, keep_steps=False):
    """Run one ``solver.step(1)`` with an UpdateRecorder attached; returns a dict: iter (the
    iteration explained), rate, loss, raw_total, clip, rows (one dict per learnable param:
    name, shape, lr_mult, decay_mult, local_rate, local_decay and the norms)."""
    recorder = UpdateRecorder(solver, keep_steps)
    it = solver.iter
    previous = solver.update_observer
    solver.update_observer = recorder
    try:
        solver.step(1)
    finally:
        solver.update_observer = previous
    if recorder.rate is None:
        raise UsageError("the solver did not reach its update (stopped before the step)")
    net = solver.net
    for row, name, p, mults in zip(recorder.rows, net.learnable_param_names,
                                   net.learnable_params, _local_rates(solver, recorder.rate)):
        row.update(name=name, shape=tuple(p.shape), lr_mult=mults[0], decay_mult=mults[1],
                   local_rate=mults[2], local_decay=mults[3])
    return {"iter": it, "rate": float(recorder.rate), "loss": float(solver.smoothed_loss),
            "raw_total": recorder.raw_total, "clip": float(solver.param.clip_gradients),
            "rows": recorder.rows, "type": solver.type,
            "history_names": HISTORY_NAMES.get(solver.type, tuple(
                "h%d" % k for k in range(solver.history_sets)))}


def _g(x):
    return "%.4g" % x


def table(result):
    """The aligned table: a header line, then one line per parameter."""
    hist = result["history_names"]
    head = ["param", "shape", "lr_mult", "decay_mult", "local_rate", "|w|", "|grad|", "|decay|"]
    for h in hist:
        head += ["|%s| before" % h, "|%s| after" % h]
    head += ["|step|", "|step|/|w|"]
    lines = [head]
    for r in result["rows"]:
        cells = [r["name"], "x".join(map(str, r["shape"])) or "scalar", _g(r["lr_mult"]),
                 _g(r["decay_mult"]), _g(r["local_rate"]), _g(r["w"]), _g(r["grad"]),
                 _g(r["decay"])]
        for before, after in zip(r["hist_before"], r["hist_after"]):
            cells += [_g(before), _g(after)]
        cells += [_g(r["step"]), _g(r["step"] / r["w"]) if r["w"] else "-"]
        lines.append(cells)
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if k < 2 else c.rjust(w)
                             for k, (c, w) in enumerate(zip(line, widths))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


HISTORY_LEGEND = {
    "SGD": "|momentum| is the history blob h (h = momentum * h + local_rate * diff)",
    "Nesterov": "|momentum| is the history blob h (h' = momentum * h + local_rate * diff; the "
                "step is (1 + momentum) h' - momentum h)",
    "AdaGrad": "|sum_g2| is the history blob: the running sum of squared diffs",
    "RMSProp": "|mean_g2| is the history blob: rms_decay-weighted mean of squared diffs",
    "AdaDelta": "|mean_g2| and |mean_dx2| are history[i] and history[P + i]: momentum-weighted "
                "means of squared diffs and of squared updates",
    "Adam": "|m| and |v| are history[i] and history[P + i]: the first and second moments "
            "(beta1 = momentum, beta2 = momentum2, t = iter + 1)",
}


def legend(result):
    text = (
        "Legend (Caffe's SGDSolver::ApplyUpdate; every |x| is an L2 norm over the whole blob): "
        "lr is the lr_policy's rate at this iteration and local_rate = lr * lr_mult. |w| is the "
        "parameter data before the update. |grad| is the parameter diff that backward "
        "accumulated (over iter_size passes), after ClipGradients and after Normalize "
        "(diff /= iter_size). |decay| is what Regularize added to that diff: local_decay * w "
        "for L2 or local_decay * sign(w) for L1, with local_decay = weight_decay * decay_mult. "
        "The history columns are the solver's history blobs before and after "
        "ComputeUpdateValue; %s. |step| is the diff ComputeUpdateValue leaves, which "
        "Net::Update subtracts from the data (w -= step); |step|/|w| is the relative change."
        % HISTORY_LEGEND.get(result["type"], "they are this solver's history blobs"))
    return _wrap(text, 100)


def _wrap(text, width):
    import textwrap
    return textwrap.wrap(text, width)


def report(result, param):
    """Every line the tool prints."""
    clip = result["clip"]
    lines = ["%s solver, iteration %d: loss = %s, lr = %s (lr_policy \"%s\"), weight_decay %s "
             "(%s), iter_size %d" % (result["type"], result["iter"], _g(result["loss"]),
                                     _g(result["rate"]), param.lr_policy, _g(param.weight_decay),
                                     param.regularization_type, param.iter_size)]
    if clip >= 0:
        total = result["raw_total"]
        lines.append("clip_gradients %s: global |diff| = %s, %s" % (
            _g(clip), _g(total), "scaled by %s" % _g(clip / total) if total > clip
            else "not clipped"))
    lines += [""] + table(result) + [""] + legend(result)
    return lines


def build_solver(path, flags):
    """The solver of ``path`` with its train net only, weights or snapshot loaded."""
    from ..solver import get_solver, read_solver_param
    from .cli import get_gpus, get_stages, use_device
    param = read_solver_param(path)
    for field in ("test_net", "test_net_param", "test_iter", "test_state"):
        param.ClearField(field)
    param.test_interval = 0
    param.snapshot = 0
    param.train_state.level = flags["level"]
    param.train_state.stage.extend(get_stages(flags["stage"]))
    if flags["snapshot"] and flags["weights"]:
        raise UsageError("Give a snapshot or weights but not both.")
    if flags["weights"]:
        del param.weights[:]
        param.weights.append(flags["weights"])
    use_device(get_gpus(flags["gpu"])[:1], "Use GPU with device ID")
    solver = get_solver(param)
    if not hasattr(solver, "history"):
        raise UsageError("solver type %s has no update to explain" % param.type)
    if flags["snapshot"]:
        solver.restore(flags["snapshot"])
    return solver


def feed_inputs(net, path):
    """Fill the net's input blobs from an .npz file whose keys are their names; returns the
    names of the inputs left unfed (they keep zeros)."""
    if not path:
        return list(net.inputs)
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError("cannot read -inputs %s: %s" % (path, e)) from None
    missing = [n for n in net.inputs if n not in arrays.files]
    if missing:
        raise UsageError("%s has no array for net input(s) %s (it has: %s)"
                         % (path, ", ".join(missing), ", ".join(arrays.files)))
    for name in net.inputs:
        blob = net.blobs[name]
        blob.reshape(arrays[name].shape)
        blob.data[...] = blob.xp.asarray(arrays[name])
    net.reshape()
    return []


SPEC = {"weights": "", "snapshot": "", "inputs": "", "level": 0, "stage": "", "gpu": "",
        "verbose": False, "help": False}


def _run(argv):
    parsed = parse_solver_tool_args(argv, SPEC, __doc__, USAGE)
    if parsed is None:
        return 0
    flags, solver_file = parsed
    level = log.min_level()
    if not flags["verbose"]:
        log.init_log(max(level, log.WARNING))
    try:
        solver = build_solver(solver_file, flags)
        unfed = feed_inputs(solver.net, flags["inputs"])
        if unfed:
            log.warning("net inputs %s are not filled by a data layer: they hold zeros"
                        % ", ".join(unfed), "explain_update.py")
        result = explain(solver)
    finally:
        log.init_log(level)
    for line in report(result, solver.param):
        print(line)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
