"""``decaf convert_cifar_data``: Caffe's examples/cifar10/convert_cifar_data.cpp.

    convert_cifar_data input_folder output_folder db_type

Reads the CIFAR-10 binary batches ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
``test_batch.bin`` (records of 1 label byte + 3072 pixel bytes: 1024 red, 1024 green, 1024 blue,
row-major 32 x 32) and writes ``output_folder/cifar10_train_<db_type>`` and
``output_folder/cifar10_test_<db_type>``: one Datum per image (channels 3, height 32, width 32,
the 3072 bytes as ``data``, the label) under the keys ``"%05d"`` (0, 1, ... in file order).

Byte-identical with Caffe's tool for the real batches (10000 records each). Unlike Caffe, a
batch of another size is read whole (with a warning) instead of reading past its end, and
wrong arguments give exit code 1 (Caffe prints the usage and exits 0).
"""
import os
import sys

import numpy as np

from .. import glog as log
from ..data.cli import UsageError, run_tool
from ..data.db import backend_name, open_db
from ..errors import DecafError

W = "convert_cifar_data.cpp"
SIZE, IMAGE_BYTES, BATCH_SIZE, TRAIN_BATCHES = 32, 3072, 10000, 5

USAGE = ("This script converts the CIFAR dataset to the leveldb format used\n"
         "by caffe to perform classification.\n"
         "Usage:\n"
         "    convert_cifar_data input_folder output_folder db_type\n"
         "Where the input folder should contain the binary batch files.\n"
         "The CIFAR dataset could be downloaded at\n"
         "    http://www.cs.toronto.edu/~kriz/cifar.html\n"
         "You should gunzip them after downloading.")


def read_batch(path, what):
    """(labels int8 N, pixels uint8 N x 3072) of a CIFAR-10 binary batch file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise DecafError("Check failed: data_file Unable to open %s (%s)" % (what, path)) from None
    if len(raw) % (IMAGE_BYTES + 1):
        raise DecafError("%s: %d bytes is not a whole number of CIFAR-10 records (1 label byte "
                         "+ %d pixel bytes each); the file is truncated or not a CIFAR-10 "
                         "binary batch" % (path, len(raw), IMAGE_BYTES))
    records = np.frombuffer(raw, np.uint8).reshape(-1, IMAGE_BYTES + 1)
    if records.shape[0] != BATCH_SIZE:
        log.warning("%s holds %d records (CIFAR-10 batches hold %d); converting all of them"
                    % (path, records.shape[0], BATCH_SIZE), W)
    # Caffe reads the label into a (signed) char
    return records[:, 0].view(np.int8), records[:, 1:]


def cifar_records(labels, pixels, first_key=0):
    """(key, serialized Datum) pairs as convert_cifar_data writes them."""
    from ..proto import caffe_pb2
    datum = caffe_pb2.Datum(channels=3, height=SIZE, width=SIZE)
    for i in range(labels.shape[0]):
        datum.label = int(labels[i])
        datum.data = pixels[i].tobytes()
        yield b"%05d" % (first_key + i), datum.SerializeToString()


def _new_db(db_type, path):
    if os.path.exists(path):
        raise DecafError("output database %s already exists; convert_cifar_data does not "
                         "overwrite it (remove it first)" % path)
    return open_db(db_type, path, "new")


def convert_dataset(input_folder, output_folder, db_type):
    """Write the train and test databases; returns their record counts."""
    backend = backend_name(db_type)
    counts = []
    log.info("Writing Training data", W + ":52")
    with _new_db(backend, os.path.join(output_folder, "cifar10_train_" + db_type)) as db:
        with db.writer(1000) as w:
            n = 0
            for fileid in range(1, TRAIN_BATCHES + 1):
                log.info("Training Batch %d" % fileid, W + ":55")
                path = os.path.join(input_folder, "data_batch_%d.bin" % fileid)
                labels, pixels = read_batch(path, "train file #%d" % fileid)
                for key, value in cifar_records(labels, pixels, n):
                    w.put(key, value)
                n += labels.shape[0]
    counts.append(n)
    log.info("Writing Testing data", W + ":75")
    labels, pixels = read_batch(os.path.join(input_folder, "test_batch.bin"), "test file")
    with _new_db(backend, os.path.join(output_folder, "cifar10_test_" + db_type)) as db:
        with db.writer(1000) as w:
            for key, value in cifar_records(labels, pixels):
                w.put(key, value)
    counts.append(labels.shape[0])
    return counts


def _run(argv):
    if len(argv) != 3:
        raise UsageError("expected input_folder output_folder db_type, got %d arguments"
                         % len(argv))
    convert_dataset(*argv)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
