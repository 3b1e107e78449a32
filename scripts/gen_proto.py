#!/usr/bin/env python
"""Regenerate decaf/proto/caffe_pb2.py from decaf/proto/caffe.proto.

Usage:  python scripts/gen_proto.py [--check]

Uses the protoc bundled with grpcio-tools (``grpc_tools.protoc``), so no system protoc is
needed.  The .proto is compiled under the name ``caffe.proto`` (package ``caffe``), as
pycaffe's own caffe_pb2 is.  With ``--check`` nothing is written: the exit status says
whether the committed caffe_pb2.py is what the current caffe.proto generates.
"""
import argparse
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(REPO, "decaf", "proto")
PROTO_FILE = "caffe.proto"
OUTPUT = os.path.join(PROTO_DIR, "caffe_pb2.py")


def generate(out_dir):
    """Compile caffe.proto into ``out_dir``; return the path of the generated module."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("gen_proto: grpcio-tools is not installed (pip install grpcio-tools)")
    args = ["grpc_tools.protoc", "-I" + PROTO_DIR, "--python_out=" + out_dir, PROTO_FILE]
    status = protoc.main(args)
    if status != 0:
        sys.exit("gen_proto: protoc failed on %s (exit %d)" % (os.path.join(PROTO_DIR, PROTO_FILE),
                                                             status))
    return os.path.join(out_dir, "caffe_pb2.py")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that caffe_pb2.py is up to date")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="decaf-proto-")
    try:
        generated = generate(tmp)
        with open(generated, "rb") as f:
            new = f.read()
        if args.check:
            old = b""
            if os.path.exists(OUTPUT):
                with open(OUTPUT, "rb") as f:
                    old = f.read()
            if old != new:
                print("gen_proto: %s is out of date; run python scripts/gen_proto.py" % OUTPUT)
                return 1
            print("gen_proto: %s is up to date" % OUTPUT)
            return 0
        # Write next to the target, then rename: never leave a half-written module.
        fd, staging = tempfile.mkstemp(dir=PROTO_DIR, prefix=".caffe_pb2.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(new)
        os.replace(staging, OUTPUT)
        print("gen_proto: wrote %s" % os.path.relpath(OUTPUT, REPO))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
