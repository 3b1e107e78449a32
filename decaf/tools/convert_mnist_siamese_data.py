"""``decaf convert_mnist_siamese_data``: Caffe's examples/siamese/convert_mnist_siamese_data.cpp.

    convert_mnist_siamese_data [FLAGS] input_image_file input_label_file output_db_file
      -backend (leveldb, as Caffe's tool, or lmdb) type: string default: "leveldb"
      -seed (the pair generator's seed; -1: a fresh random one) type: int32 default: -1

Writes one Datum per image: a random pair (i, j) of images as 2 channels (rows x cols each:
image i, then image j), label 1 when both have the same digit, else 0, under the keys
``"%08d"``; the IDX files may be gzipped. An existing output database is never overwritten.

Randomness: Caffe draws ``i = caffe_rng_rand() % N`` then ``j = caffe_rng_rand() % N`` from its
boost::mt19937, seeded from /dev/urandom (so its pairs differ on every run). Here the same
draws come from the same generator (NumPy's MT19937 gives boost's raw 32-bit outputs for a
seed): with ``-seed S`` the pairs are those of a Caffe run after ``Caffe::set_random_seed(S)``;
without it they are random, as in Caffe.
"""
import os
import sys

import numpy as np

from .. import glog as log
from ..data.cli import UsageError, parse_flags, run_tool
from ..data.db import open_db
from ..data.mnist import load_mnist
from ..errors import DecafError

W = "convert_mnist_siamese_data.cpp"

USAGE = ("This script converts the MNIST dataset to the leveldb format used\n"
         "by caffe to train a siamese network.\n"
         "Usage:\n"
         "    convert_mnist_data input_image_file input_label_file output_db_file\n"
         "The MNIST dataset could be downloaded at\n"
         "    http://yann.lecun.com/exdb/mnist/\n"
         "You should gunzip them after downloading.\n"
         "Flags:\n"
         "    -backend (leveldb, as Caffe's tool, or lmdb) type: string default: \"leveldb\"\n"
         "    -seed (the pair generator's seed; -1: a fresh random one) type: int32 "
         "default: -1")


def mt19937_uint32(seed, count):
    """The first ``count`` outputs of boost::mt19937(seed) (== std::mt19937), as uint32."""
    rs = np.random.RandomState(seed & 0xFFFFFFFF)
    return rs.randint(0, 2 ** 32, size=count, dtype=np.uint64).astype(np.uint32)


def siamese_pairs(num_items, seed):
    """(i, j) index arrays as Caffe draws them: i = rand() % N, j = rand() % N per item."""
    draws = mt19937_uint32(seed, 2 * num_items).astype(np.int64) % num_items
    return draws[0::2], draws[1::2]


def siamese_records(images, labels, first, second):
    """(key, serialized Datum) pairs exactly as convert_mnist_siamese_data writes them."""
    from ..proto import caffe_pb2
    _, rows, cols = images.shape
    datum = caffe_pb2.Datum(channels=2, height=rows, width=cols)
    for item, (i, j) in enumerate(zip(first, second)):
        datum.data = images[i].tobytes() + images[j].tobytes()
        datum.label = 1 if labels[i] == labels[j] else 0
        yield b"%08d" % item, datum.SerializeToString()


def convert_siamese(image_file, label_file, db_path, backend="leveldb", seed=-1):
    """Write the pair database; returns the number of records."""
    images, labels = load_mnist(image_file, label_file)
    if os.path.exists(db_path):
        raise DecafError("Failed to open leveldb %s. Is it already existing?" % db_path)
    if seed < 0:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    n, rows, cols = images.shape
    first, second = siamese_pairs(n, seed)
    log.info("A total of %d items." % n, W)
    log.info("Rows: %d Cols: %d" % (rows, cols), W)
    with open_db(backend, db_path, "new") as db:
        with db.writer(1000) as w:
            for key, value in siamese_records(images, labels, first, second):
                w.put(key, value)
    return n


def _run(argv):
    flags, args = parse_flags(argv, {"backend": "leveldb", "seed": -1})
    if len(args) != 3:
        raise UsageError("expected input_image_file input_label_file output_db_file, got %d "
                         "arguments" % len(args))
    convert_siamese(args[0], args[1], args[2], backend=flags["backend"], seed=flags["seed"])
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
