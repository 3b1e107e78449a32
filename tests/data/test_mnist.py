"""Tests for decaf/data/mnist.py and the convert_mnist_data / compute_image_mean tools."""
import gzip
import os
import shutil

import numpy as np
import pytest

from decaf.data.db import open_db
from decaf.data.mnist import IDXError, load_images, load_labels, load_mnist, read_idx
from decaf.testing.golden import require_golden
from decaf.tools import compute_image_mean, convert_mnist_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST = os.path.join(ROOT, "data", "mnist")
DB_DIR = os.path.join(require_golden(), "formats", "db")
TINY = [os.path.join(DB_DIR, "images-idx3-ubyte"), os.path.join(DB_DIR, "labels-idx1-ubyte")]


def mnist(name):
    return os.path.join(MNIST, name)


def records(backend, path):
    with open_db(backend, path) as db:
        return list(db.cursor())


# -- the real MNIST files -------------------------------------------------------------------
def test_train_labels_and_pixel_mean():
    images, labels = load_mnist(mnist("train-images-idx3-ubyte.gz"),
                                mnist("train-labels-idx1-ubyte.gz"))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert round(float(images.mean()), 2) == 33.32


def test_test_labels():
    labels = load_labels(mnist("t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_convert_test_set_and_mean(tmp_path):
    out = str(tmp_path / "mnist_test_lmdb")
    rc = convert_mnist_data.main([mnist("t10k-images-idx3-ubyte.gz"),
                                  mnist("t10k-labels-idx1-ubyte.gz"), out])
    assert rc == 0
    images = load_images(mnist("t10k-images-idx3-ubyte.gz"))
    with open_db("lmdb", out) as db:
        assert len(db) == 10000
        cur = db.cursor()
        from decaf.data.datum import datum_to_array, parse_datum
        key, value = next(iter(cur))
        assert key == b"00000000"
        d = parse_datum(value)
        assert d.label == 7
        np.testing.assert_array_equal(datum_to_array(d)[0], images[0])
    mean_file = str(tmp_path / "mean.binaryproto")
    assert compute_image_mean.main([out, mean_file]) == 0
    from decaf.data.transformer import load_mean_file
    from decaf.proto import caffe_pb2
    from decaf.proto.io import read_binary
    proto = read_binary(mean_file, caffe_pb2.BlobProto)
    assert (proto.num, proto.channels, proto.height, proto.width) == (1, 1, 28, 28)
    assert not proto.HasField("shape")
    mean = load_mean_file(mean_file)
    np.testing.assert_allclose(mean[0, 0], images.astype(np.float64).mean(0), rtol=1e-6)


# -- byte-identical with Caffe's convert_mnist_data (golden formats/db) ----------------------
@pytest.mark.parametrize("flag", [None, "-backend=lmdb", "--backend=lmdb", "-backend lmdb"])
def test_convert_matches_caffe_lmdb(tmp_path, flag):
    out = str(tmp_path / "out")
    argv = TINY + [out]
    if flag:
        argv = flag.split() + argv
    assert convert_mnist_data.main(argv) == 0
    assert records("lmdb", out) == records("lmdb", os.path.join(DB_DIR, "mnist_tiny_lmdb"))


@pytest.mark.parametrize("flag", ["-backend=leveldb", "--backend", "-backend"])
def test_convert_matches_caffe_leveldb(tmp_path, flag):
    pytest.importorskip("plyvel")
    ref = tmp_path / "ref"
    shutil.copytree(os.path.join(DB_DIR, "mnist_tiny_leveldb"), ref)
    for f in ref.iterdir():
        f.chmod(0o644)
    ref.chmod(0o755)
    out = str(tmp_path / "out")
    argv = [flag] + ([] if "=" in flag else ["leveldb"]) + TINY + [out]
    assert convert_mnist_data.main(argv) == 0
    assert records("leveldb", out) == records("leveldb", str(ref))


def test_convert_accepts_flags_after_positionals(tmp_path):
    out = str(tmp_path / "out")
    assert convert_mnist_data.main(TINY + [out, "--backend=lmdb"]) == 0
    assert len(records("lmdb", out)) == 6


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert convert_mnist_data.main(TINY + [out]) == 0
    assert convert_mnist_data.main(TINY + [out]) == 1
    assert "already exists" in capsys.readouterr().err
    assert len(records("lmdb", out)) == 6


def test_convert_gzipped_input_same_records(tmp_path):
    gz = []
    for p in TINY:
        dst = tmp_path / (os.path.basename(p) + ".gz")
        with open(p, "rb") as f:
            dst.write_bytes(gzip.compress(f.read()))
        gz.append(str(dst))
    out = str(tmp_path / "out")
    assert convert_mnist_data.main(gz + [out]) == 0
    assert records("lmdb", out) == records("lmdb", os.path.join(DB_DIR, "mnist_tiny_lmdb"))


@pytest.mark.parametrize("argv, message", [
    ([], "expected 3 arguments"),
    (["-bogus=1", "a", "b", "c"], "unknown command line flag 'bogus'"),
    (["-backend"], "missing its argument"),
])
def test_convert_usage_errors(argv, message, capsys):
    assert convert_mnist_data.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Usage" in err


def test_convert_bad_backend(tmp_path, capsys):
    assert convert_mnist_data.main(["-backend=rocksdb"] + TINY + [str(tmp_path / "o")]) == 1
    assert "Unknown database backend" in capsys.readouterr().err


# -- IDX errors -------------------------------------------------------------------------------
def test_swapped_files_clear_magic_error(tmp_path, capsys):
    with pytest.raises(IDXError, match="Incorrect image file magic.*2049.*swapped"):
        load_images(TINY[1])
    assert convert_mnist_data.main([TINY[1], TINY[0], str(tmp_path / "o")]) == 1
    assert "magic" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_truncated_and_missing_files(tmp_path):
    with open(TINY[0], "rb") as f:
        raw = f.read()
    cut = tmp_path / "cut"
    cut.write_bytes(raw[:40])
    with pytest.raises(IDXError, match="truncated"):
        load_images(str(cut))
    with pytest.raises(IDXError, match="Unable to open file"):
        load_images(str(tmp_path / "missing"))
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match="too short"):
        read_idx(str(tmp_path / "tiny"))


def test_count_mismatch(tmp_path):
    with open(TINY[1], "rb") as f:
        raw = bytearray(f.read())
    raw[4:8] = (5).to_bytes(4, "big")
    bad = tmp_path / "labels"
    bad.write_bytes(bytes(raw[:8 + 5]))
    with pytest.raises(IDXError, match="6 images but .* 5 labels"):
        load_mnist(TINY[0], str(bad))


def test_read_idx_other_types(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    p = tmp_path / "ints"
    p.write_bytes(b"\x00\x00\x0c\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
                  + arr.tobytes())
    out = read_idx(str(p))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.int32 and out.dtype.isnative


def test_compute_image_mean_usage(capsys, tmp_path):
    assert compute_image_mean.main([]) == 1
    assert "Usage" in capsys.readouterr().err
    assert compute_image_mean.main([str(tmp_path / "missing")]) == 1
    assert "no such directory" in capsys.readouterr().err
