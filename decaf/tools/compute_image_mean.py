"""``decaf compute_image_mean``: Caffe's tools/compute_image_mean.

    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]
      -backend (The backend {leveldb, lmdb} containing the images) type: string default: "lmdb"

Averages every Datum of the database (encoded ones decoded natively) and writes the mean as a
BlobProto with Caffe's legacy fields num=1, channels, height, width (float ``data``). Prints
the per-channel mean values, as Caffe does.
"""
import sys

import numpy as np

from .. import glog as log
from ..data.cli import UsageError, parse_flags, run_tool
from ..data.datum import datum_to_array, parse_datum
from ..data.db import open_db
from ..errors import DecafError

W = "compute_image_mean.cpp"

USAGE = ("Compute the mean_image of a set of images given by a leveldb/lmdb\n"
         "Usage:\n"
         "    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n"
         "Flags:\n"
         "    -backend (The backend {leveldb, lmdb} containing the images) type: string "
         "default: \"lmdb\"")


def compute_mean(source, backend="lmdb"):
    """The mean image (1 x C x H x W float32) of a database, and the record count."""
    with open_db(backend, source, "r") as db:
        cur = db.cursor()
        if not cur.valid():
            raise DecafError("database %s is empty" % source)
        total, shape, count = None, None, 0
        while cur.valid():
            arr = datum_to_array(parse_datum(cur.value()))
            if shape is None:
                shape = arr.shape
                total = np.zeros(shape, np.float64)
                log.info("Starting iteration", W)
            elif arr.size != total.size:
                raise DecafError("Incorrect data field size %d (record %r; the first record "
                                 "has %d values)" % (arr.size, cur.key(), total.size))
            total += arr.reshape(shape)
            count += 1
            if count % 10000 == 0:
                log.info("Processed %d files." % count, W)
            cur.next()
        cur.close()
    if count % 10000 != 0:
        log.info("Processed %d files." % count, W)
    # Caffe sums in float32 (exact for byte images) and divides in float32
    mean = total.astype(np.float32) / np.float32(count)
    return mean.reshape((1,) + shape), count


def mean_to_blobproto(mean):
    """A BlobProto with legacy num/channels/height/width, as compute_image_mean writes."""
    from ..proto import caffe_pb2
    proto = caffe_pb2.BlobProto()
    proto.num, proto.channels, proto.height, proto.width = (int(d) for d in mean.shape)
    proto.data.extend(np.asarray(mean, np.float32).ravel().tolist())
    return proto


def _run(argv):
    flags, args = parse_flags(argv, {"backend": "lmdb"})
    if len(args) not in (1, 2):
        raise UsageError("expected INPUT_DB [OUTPUT_FILE], got %d arguments" % len(args))
    mean, _ = compute_mean(args[0], flags["backend"])
    if len(args) == 2:
        from ..proto.io import write_binary
        log.info("Write to %s" % args[1], W)
        write_binary(args[1], mean_to_blobproto(mean))
    channels = mean.shape[1]
    log.info("Number of channels: %d" % channels, W)
    for c in range(channels):
        value = log.fmt(mean[0, c].astype(np.float64).mean())
        log.info("mean_value channel [%d]: %s" % (c, value), W)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
