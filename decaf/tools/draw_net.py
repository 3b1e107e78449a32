"""``decaf draw_net``: pycaffe's ``python/draw_net.py``, a picture of a net's graph.

    decaf draw_net [--rankdir LR] [--phase ALL|TRAIN|TEST] [--display_lrm] NET.prototxt OUT.png

The output format is the file's extension (png, pdf, svg, ... need Graphviz's ``dot``;
``.raw`` writes the DOT source). Needs pydot (``pip install decaf[draw]``).
"""
import argparse
import sys

from ..data.cli import UsageError, argparse_help, run_tool, wants_help
from ..proto import caffe_pb2


def _parser():
    parser = argparse.ArgumentParser(prog="decaf draw_net",
                                     description="Draw a graph of the net architecture.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input_net_proto_file", help="Input network prototxt file")
    parser.add_argument("output_image_file", help="Output image file")
    parser.add_argument("--rankdir", default="LR",
                        help="One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., "
                             "horizontal), or another valid dot option; see "
                             "http://www.graphviz.org/doc/info/attrs.html#k:rankdir")
    parser.add_argument("--phase", default="ALL",
                        help="Which network phase to draw: can be TRAIN, TEST, or ALL.  If ALL, "
                             "then all layers are drawn regardless of phase.")
    parser.add_argument("--display_lrm", action="store_true",
                        help="Use this flag to visualize the learning rate multiplier, when "
                             "non-zero, for the learning layers (Convolution, Deconvolution, "
                             "InnerProduct).")
    return parser


def parse_args(argv):
    """pycaffe's arguments; ``-help`` (gflags' spelling) is taken as ``--help``."""
    return _parser().parse_args(argparse_help(argv))


def _run(argv):
    from .. import draw
    from ..proto import io as pio
    if wants_help(argv):
        print(_parser().format_help().rstrip("\n"))
        return 0
    try:
        args = parse_args(argv)
    except SystemExit as e:        # argparse printed its message (usage error: code 2)
        return e.code if isinstance(e.code, int) else 1
    phases = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}
    if args.phase not in phases:
        raise UsageError("Unknown phase: %s (use TRAIN, TEST or ALL)" % args.phase)
    net = pio.read_text(args.input_net_proto_file, caffe_pb2.NetParameter())
    print("Drawing net to %s" % args.output_image_file)
    draw.draw_net_to_file(net, args.output_image_file, args.rankdir, phases[args.phase],
                          args.display_lrm)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool(_run, argv, _parser().format_usage().rstrip("\n"))


if __name__ == "__main__":
    sys.exit(main())
