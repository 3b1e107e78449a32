"""``decaf draw_net``: pycaffe's ``python/draw_net.py``, a picture of a net's graph.

    decaf draw_net [--rankdir LR] [--phase ALL|TRAIN|TEST] [--display_lrm] NET.prototxt OUT.png

The output format is the file's extension (png, pdf, svg, ... need Graphviz's ``dot``;
``.raw`` writes the DOT source). Needs pydot (``pip install decaf[draw]``).
"""
import argparse
import sys

from ..proto import caffe_pb2


def parse_args(argv):
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
    return parser.parse_args(argv)


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    from .. import draw
    from ..proto import io as pio
    args = parse_args(sys.argv[1:] if argv is None else argv)
    phases = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}
    if args.phase not in phases:
        raise ValueError("Unknown phase: " + args.phase)
    net = caffe_pb2.NetParameter()
    with open(args.input_net_proto_file) as f:
        pio.parse_text(f.read(), net, args.input_net_proto_file)
    print("Drawing net to %s" % args.output_image_file)
    draw.draw_net_to_file(net, args.output_image_file, args.rankdir, phases[args.phase],
                          args.display_lrm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
