"""``decaf plot_training_log``: BVLC's tools/extra/plot_training_log.py.example, in Python 3.

    decaf plot_training_log CHART_TYPE OUTPUT.png LOG [LOG ...]

CHART_TYPE (Caffe's numbering):

    0: Test accuracy  vs. Iters          4: Train learning rate  vs. Iters
    1: Test accuracy  vs. Seconds        5: Train learning rate  vs. Seconds
    2: Test loss  vs. Iters              6: Train loss  vs. Iters
    3: Test loss  vs. Seconds            7: Train loss  vs. Seconds

One line per log (Caffe's or decaf's), labelled with the log's file name without ``.log``; the
title, axis labels and legend place are Caffe's; the PNG is drawn with matplotlib's Agg
canvas (no display needed). The data come from :mod:`decaf.tools.parse_log` instead of
parse_log.sh, so no data files are left in the current folder: "accuracy" is the test output
named ``accuracy`` (else the first whose name contains "acc"), "loss" the output named ``loss``
(else the first containing "loss"). Colours and markers follow a fixed cycle instead of
Caffe's random ones, and a log need not end in ``.log``.
"""
import os
import sys

from ..data.cli import UsageError, run_tool
from ..errors import DecafError
from .parse_log import parse_log

SEPARATOR = "  vs. "
X_FIELDS = {"Iters": "NumIters", "Seconds": "Seconds"}
Y_FIELDS = ["Test accuracy", "Test loss", "Train learning rate", "Train loss"]
MARKERS = ["o", "s", "^", "v", "D", "x", "+", "*", "p", "h"]


def chart_types():
    """Caffe's chart descriptions, in its order (y fields sorted, then Iters, Seconds)."""
    return ["%s%s%s" % (y, SEPARATOR, x) for y in Y_FIELDS for x in ("Iters", "Seconds")]


def usage():
    lines = ["Usage:",
             "    decaf plot_training_log chart_type[0-%d] /where/to/save.png "
             "/path/to/first.log ..." % (len(chart_types()) - 1),
             "Notes:",
             "    1. Supporting multiple logs.",
             "    2. Caffe's and decaf's logs (the glog lines of a training run).",
             "Supported chart types:"]
    lines += ["    %d: %s" % (i, c) for i, c in enumerate(chart_types())]
    return "\n".join(lines)


def _column(rows, kind, what, path):
    """The name of the output column for ``what`` ("accuracy", "loss", "learning rate")."""
    if what == "learning rate":
        return "LearningRate"
    names = [k for k in rows[0] if k not in ("NumIters", "Seconds", "LearningRate")]
    if what in names:
        return what
    key = "acc" if what == "accuracy" else what
    for name in names:
        if key in name.lower():
            return name
    raise DecafError("%s: no %s net output like %r (outputs: %s)"
                     % (path, kind.lower(), what, ", ".join(names) or "none"))


def chart_data(chart_type, path):
    """(x values, y values) of one log for the chart type."""
    y_field, x_field = chart_types()[chart_type].split(SEPARATOR)
    kind, what = y_field.split(" ", 1)
    train, test = parse_log(path)
    rows = train if kind == "Train" else test
    if not rows:
        raise DecafError("%s: no %s net output lines (\"%s net output #0: ...\"): not a "
                         "training log, or the run stopped before them" % (path, kind.lower(),
                                                                           kind))
    column = _column(rows, kind, what, path)
    return [r[X_FIELDS[x_field]] for r in rows], [r[column] for r in rows]


def _label(path):
    base = os.path.basename(path)
    return base[:-4] if base.endswith(".log") else base


def plot_chart(chart_type, png, logs):
    """Draw the chart of every log into ``png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    description = chart_types()[chart_type]
    y_field, x_field = description.split(SEPARATOR)
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for i, path in enumerate(logs):
        x, y = chart_data(chart_type, path)
        ax.plot(x, y, label=_label(path), marker=MARKERS[i % len(MARKERS)], linewidth=0.75)
    loss_like = "loss" in y_field or "learning rate" in y_field
    ax.legend(loc="upper right" if loss_like else "lower right", ncol=1)
    ax.set_title(description)
    ax.set_xlabel(x_field)
    ax.set_ylabel(y_field)
    fig.savefig(png)


def _run(argv):
    if len(argv) < 3:
        raise UsageError("expected CHART_TYPE OUTPUT.png LOG [LOG ...], got %d arguments"
                         % len(argv))
    try:
        chart_type = int(argv[0])
    except ValueError:
        chart_type = -1
    if not 0 <= chart_type < len(chart_types()):
        raise UsageError("%s is not a valid chart type." % argv[0])
    png, logs = argv[1], argv[2:]
    if not png.endswith(".png"):
        raise UsageError("Path must end with png: %s" % png)
    for path in logs:
        if not os.path.exists(path):
            raise UsageError("Path does not exist: %s" % path)
    plot_chart(chart_type, png, logs)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, usage())


if __name__ == "__main__":
    sys.exit(main())
