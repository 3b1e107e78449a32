"""``decaf convert_mnist_data``: Caffe's examples/mnist/convert_mnist_data.

    convert_mnist_data [FLAGS] input_image_file input_label_file output_db_file
      -backend (The backend for storing the result) type: string default: "lmdb"

Writes one Datum per image under the keys "%08d", byte-identical with Caffe's tool. The IDX
files may be gzipped. An existing output database is never overwritten.
"""
import sys

from ..data.cli import UsageError, parse_flags, run_tool
from ..data.mnist import convert_mnist

USAGE = ("This script converts the MNIST dataset to\n"
         "the lmdb/leveldb format used by Caffe to load data.\n"
         "Usage:\n"
         "    convert_mnist_data [FLAGS] input_image_file input_label_file output_db_file\n"
         "The MNIST dataset could be downloaded at\n"
         "    http://yann.lecun.com/exdb/mnist/\n"
         "You should gunzip them after downloading,or directly use data/mnist/get_mnist.sh\n"
         "Flags:\n"
         "    -backend (The backend for storing the result) type: string default: \"lmdb\"")


def _run(argv):
    flags, args = parse_flags(argv, {"backend": "lmdb"})
    if len(args) != 3:
        raise UsageError("expected 3 arguments, got %d" % len(args))
    convert_mnist(args[0], args[1], args[2], backend=flags["backend"])
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name (default: sys.argv[1:]). Returns the
    exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
