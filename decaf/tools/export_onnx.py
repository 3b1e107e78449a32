"""``decaf export_onnx``: write a Caffe deploy net and its weights as an ONNX model.

    decaf export_onnx -model deploy.prototxt -weights W.caffemodel -o model.onnx
                      [-opset 17] [-dynamic_batch] [-prune_to BLOB]

The net is built in the TEST phase; the model uses standard ONNX operators only and passes
``onnx.checker`` (full check). Inputs and outputs are named as the net's blobs; -dynamic_batch
makes the first dimension symbolic ("N"); -prune_to exports the layers up to that blob.
See docs/ONNX.md for the layer mapping.
"""
import sys

from .. import glog as log
from ..data.cli import UsageError, parse_flags, run_tool

W = "export_onnx.cpp"

USAGE = ("Export a Caffe net to ONNX\n"
         "Usage:\n"
         "    export_onnx -model deploy.prototxt [-weights W.caffemodel] -o model.onnx\n"
         "Flags:\n"
         "    -model (The deploy net definition prototxt) type: string\n"
         "    -weights (The trained weights, .caffemodel or .caffemodel.h5) type: string\n"
         "    -o (The ONNX file to write) type: string\n"
         "    -opset (The ONNX opset of the default domain) type: int32 default: 17\n"
         "    -dynamic_batch (Make the batch dimension symbolic) type: bool default: false\n"
         "    -prune_to (Export the graph up to this blob only) type: string default: \"\"")


def _run(argv):
    from ..onnx import DEFAULT_OPSET, export_files
    flags, args = parse_flags(argv, {"model": "", "weights": "", "o": "",
                                     "opset": DEFAULT_OPSET, "dynamic_batch": False,
                                     "prune_to": "", "help": False})
    if flags["help"]:
        print(USAGE)
        return 0
    if args:
        raise UsageError("unexpected arguments: %s" % " ".join(args))
    if not flags["model"] or not flags["o"]:
        raise UsageError("-model and -o are required")
    model = export_files(flags["model"], flags["weights"] or None, flags["o"],
                         opset=flags["opset"], dynamic_batch=flags["dynamic_batch"],
                         prune_to=flags["prune_to"] or None)
    graph = model.graph
    log.info("Wrote %s: opset %d, %d nodes, inputs %s, outputs %s"
             % (flags["o"], flags["opset"], len(graph.node),
                ", ".join(i.name for i in graph.input), ", ".join(o.name for o in graph.output)),
             W)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
