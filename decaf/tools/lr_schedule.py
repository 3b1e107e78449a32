"""``decaf lr_schedule``: plot the learning rate a solver will use, iteration by iteration.

    decaf lr_schedule SOLVER.prototxt [-o lr.png] [-max_iter N] [-log]

The rates come from :func:`decaf.solvers.learning_rate`, the very function ``SGDSolver`` calls
at every iteration, called in order from iteration 0 to ``max_iter`` with the policy state
(``current_step``) carried from call to call as training carries it, so what is drawn is what
training uses (multistep's one-stepvalue-per-iteration catch-up included). Prints a short
summary (policy, the rate at iteration 0 and at max_iter, where the rate steps) and writes the
plot as a PNG (matplotlib, Agg canvas; default ``<solver name>_lr.png`` in the current
directory).
"""
import os
import sys

import numpy as np

from .. import glog as log, solvers
from ..data.cli import UsageError, parse_solver_tool_args, run_tool

USAGE = ("Plot the learning rate schedule of a solver\n"
         "Usage:\n"
         "    decaf lr_schedule SOLVER.prototxt [FLAGS]\n"
         "Flags:\n"
         "    -o (output PNG file; default <solver name>_lr.png) type: string default: \"\"\n"
         "    -max_iter (iterations to plot; default the solver's max_iter) type: int32 "
         "default: 0\n"
         "    -log (logarithmic learning-rate axis) type: bool default: false")

# the SolverParameter fields each policy reads (for the summary and the plot title)
POLICY_FIELDS = {"fixed": (), "step": ("gamma", "stepsize"), "exp": ("gamma",),
                 "inv": ("gamma", "power"), "multistep": ("gamma", "stepvalue"),
                 "poly": ("power", "max_iter"), "sigmoid": ("gamma", "stepsize")}


def schedule(param, max_iter=None, current_step=0):
    """(iterations 0..max_iter, float32 rates, current_step per iteration): the rate
    ``learning_rate`` gives at every iteration, called in order as the solver calls it."""
    n = int(param.max_iter if max_iter is None else max_iter)
    if n <= 0:
        raise UsageError("max_iter is %d: give the solver a max_iter > 0 or pass -max_iter N" % n)
    rates = np.empty(n + 1, np.float32)
    steps = np.empty(n + 1, np.int64)
    for it in range(n + 1):
        rates[it], current_step = solvers.learning_rate(param, it, current_step)
        steps[it] = current_step
    return np.arange(n + 1), rates, steps


def change_points(rates):
    """Iterations where the rate differs from the previous iteration's."""
    return (np.flatnonzero(rates[1:] != rates[:-1]) + 1).tolist()


def _fmt(x):
    return "%.6g" % float(x)


def _settings(param):
    parts = ["base_lr " + _fmt(param.base_lr)]
    for name in POLICY_FIELDS.get(param.lr_policy, ()):
        value = getattr(param, name)
        if name == "stepvalue":
            parts.append("stepvalue [%s]" % ", ".join(str(v) for v in value))
        else:
            parts.append("%s %s" % (name, _fmt(value)))
    return ", ".join(parts)


def summary(param, iters, rates):
    """The lines printed by the tool."""
    policy, n = param.lr_policy, int(iters[-1])
    changes = change_points(rates)
    lines = ["lr_policy: %s (%s)" % (policy, _settings(param)),
             "lr at iteration 0: %s" % _fmt(rates[0]),
             "lr at iteration %d (max_iter): %s" % (n, _fmt(rates[-1])),
             "lr range: %s .. %s" % (_fmt(rates.min()), _fmt(rates.max()))]
    if policy in ("step", "multistep"):
        shown = ", ".join("%d (-> %s)" % (c, _fmt(rates[c])) for c in changes[:12])
        more = " ... (%d in all)" % len(changes) if len(changes) > 12 else ""
        lines.append("steps at: %s%s" % (shown or "none before max_iter", more))
        if policy == "multistep":
            late = [v for v in param.stepvalue if v > n]
            if late:
                lines.append("stepvalues after max_iter (never reached): %s"
                             % ", ".join(map(str, late)))
    elif policy == "sigmoid":
        lines.append("midpoint (lr = base_lr / 2) at iteration stepsize = %d" % param.stepsize)
    elif policy != "fixed":
        lines.append("the rate changes at every iteration (%s)" % policy)
    return lines


def plot(param, iters, rates, path, logscale=False):
    """Write the schedule as a PNG (matplotlib's Agg canvas: no display, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("lr_schedule needs matplotlib (pip install matplotlib)") from None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = rates.astype(np.float64)
    if logscale:
        y = np.where(y > 0, y, np.nan)      # a log axis cannot show lr = 0 (poly's end)
        ax.set_yscale("log")
    ax.plot(iters, y, color="tab:blue", linewidth=1.5, drawstyle="steps-post"
            if param.lr_policy in ("fixed", "step", "multistep") else "default")
    changes = change_points(rates) if param.lr_policy in ("step", "multistep") else []
    for c in changes[:50]:
        ax.axvline(c, color="tab:gray", linestyle=":", linewidth=0.8)
    if param.lr_policy == "sigmoid":
        ax.axvline(param.stepsize, color="tab:gray", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, max(int(iters[-1]), 1))
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title("lr_policy \"%s\": %s" % (param.lr_policy, _settings(param)), fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _run(argv):
    from ..solver import read_solver_param
    parsed = parse_solver_tool_args(argv, {"o": "", "max_iter": 0, "log": False, "help": False},
                                    __doc__, USAGE)
    if parsed is None:
        return 0
    flags, solver_file = parsed
    level = log.min_level()
    log.init_log(max(level, log.WARNING))     # no "snapshot_prefix was not specified" noise
    try:
        param = read_solver_param(solver_file)
    finally:
        log.init_log(level)
    iters, rates, _ = schedule(param, flags["max_iter"] or None)
    for line in summary(param, iters, rates):
        print(line)
    out = flags["o"] or os.path.splitext(os.path.basename(solver_file))[0] + "_lr.png"
    plot(param, iters, rates, out, flags["log"])
    print("wrote " + out)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
