"""``decaf convert_cifar_data`` and ``decaf convert_mnist_siamese_data``: Caffe's keys and
byte-exact Datum records, from synthetic CIFAR-10 batches and a truncated copy of MNIST."""
import gzip
import io
import os
import re
import struct

import numpy as np
import pytest

from decaf import glog as log
from decaf.data.db import open_db
from decaf.data.mnist import load_images, load_labels
from decaf.tools import cli, convert_cifar_data, convert_mnist_siamese_data as siamese

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST = os.path.join(ROOT, "data", "mnist")


def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def datum_bytes(channels, height, width, data, label):
    """Caffe's Datum on the wire: channels (1), height (2), width (3), data (4), label (5)."""
    return (b"\x08" + varint(channels) + b"\x10" + varint(height) + b"\x18" + varint(width) +
            b"\x22" + varint(len(data)) + data + b"\x28" + varint(label))


def read_db(backend, path):
    with open_db(backend, path) as db:
        return list(db.cursor())


@pytest.fixture
def logbuf():
    buf = io.StringIO()
    log.set_stream(buf)
    yield buf
    log.set_stream(None)


# -- CIFAR-10 ----------------------------------------------------------------------------------

def write_batch(path, labels, rng):
    pixels = rng.randint(0, 256, size=(len(labels), 3072)).astype(np.uint8)
    raw = np.concatenate([np.asarray(labels, np.uint8)[:, None], pixels], axis=1)
    path.write_bytes(raw.tobytes())
    return pixels


@pytest.mark.parametrize("db_type", ["lmdb", "leveldb"])
def test_cifar_records_are_caffes(tmp_path, db_type, logbuf):
    rng = np.random.RandomState(3)
    src = tmp_path / "cifar-10-batches-bin"
    src.mkdir()
    train = []
    for b in range(1, 6):
        labels = [(b + k) % 10 for k in range(3)]
        train += list(zip(labels, write_batch(src / ("data_batch_%d.bin" % b), labels, rng)))
    test = list(zip([9, 0], write_batch(src / "test_batch.bin", [9, 0], rng)))
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["convert_cifar_data", str(src), str(out), db_type]) == 0
    for name, expect in (("cifar10_train_", train), ("cifar10_test_", test)):
        recs = read_db(db_type, str(out / (name + db_type)))
        assert [k for k, _ in recs] == [b"%05d" % i for i in range(len(expect))]
        for (_, value), (label, pixels) in zip(recs, expect):
            assert value == datum_bytes(3, 32, 32, pixels.tobytes(), label)
    text = logbuf.getvalue()
    assert re.search(r"^I\d{4} .* convert_cifar_data\.cpp:52\] Writing Training data$", text, re.M)
    assert "Training Batch 5" in text and "Writing Testing data" in text
    assert "holds 3 records (CIFAR-10 batches hold 10000)" in text


def test_cifar_bad_input(tmp_path, logbuf, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "data_batch_1.bin").write_bytes(b"\x01" * 3000)      # not whole records
    assert convert_cifar_data.main([str(src), str(tmp_path), "lmdb"]) == 1
    assert re.search(r"^F\d{4} .*\] .*data_batch_1\.bin: 3000 bytes is not a whole number of "
                     r"CIFAR-10 records", logbuf.getvalue(), re.M)
    assert convert_cifar_data.main([str(src)]) == 1
    assert "Usage:\n    convert_cifar_data input_folder output_folder db_type" in \
        capsys.readouterr().err
    assert convert_cifar_data.main(["-help"]) == 0
    assert "convert_cifar_data input_folder output_folder db_type" in capsys.readouterr().out


# -- siamese MNIST -----------------------------------------------------------------------------

def test_generator_is_boost_mt19937():
    # the C++ standard fixes the 10000th output of a default-seeded (5489) mt19937
    assert siamese.mt19937_uint32(5489, 10000)[-1] == 4123659995


@pytest.fixture
def mnist_subset(tmp_path):
    """The first 20 test images and labels of the repository's MNIST, as plain IDX files."""
    images = load_images(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))[:20]
    labels = load_labels(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))[:20]
    img, lab = tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte"
    img.write_bytes(struct.pack(">IIII", 2051, 20, 28, 28) + images.tobytes())
    with gzip.open(str(lab), "wb") as f:                    # gzipped files are read too
        f.write(struct.pack(">II", 2049, 20) + labels.tobytes())
    return str(img), str(lab), images, labels


def test_siamese_pairs_and_records(mnist_subset, tmp_path, logbuf):
    img, lab, images, labels = mnist_subset
    out = str(tmp_path / "pairs_leveldb")
    assert cli.main(["convert_mnist_siamese_data", "-seed", "7", img, lab, out]) == 0
    raw = siamese.mt19937_uint32(7, 40)
    first, second = raw[0::2] % 20, raw[1::2] % 20
    recs = read_db("leveldb", out)
    assert [k for k, _ in recs] == [b"%08d" % i for i in range(20)]
    same = 0
    for (_, value), i, j in zip(recs, first, second):
        label = int(labels[i] == labels[j])
        same += label
        assert value == datum_bytes(2, 28, 28, images[i].tobytes() + images[j].tobytes(), label)
    assert 0 < same < 20           # both labels occur
    assert "A total of 20 items." in logbuf.getvalue()
    assert "Rows: 28 Cols: 28" in logbuf.getvalue()


def test_siamese_seed_repeats_and_db_is_not_overwritten(mnist_subset, tmp_path, logbuf):
    img, lab, _, _ = mnist_subset
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert siamese.main(["-seed=11", "-backend", "lmdb", img, lab, a]) == 0
    assert siamese.main(["-seed=11", "-backend", "lmdb", img, lab, b]) == 0
    assert read_db("lmdb", a) == read_db("lmdb", b)
    assert siamese.main([img, lab, a]) == 1
    assert "Is it already existing?" in logbuf.getvalue()
