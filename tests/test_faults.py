"""Faults: a full disk during a snapshot keeps the previous snapshot and says "no space left"
with the path; a data source that vanishes mid-training stops with a clear error."""
import errno
import os
import shutil

import numpy as np
import pytest

import decaf
from decaf.data.datum import array_to_datum, encode_image
from decaf.data.db import open_db
from decaf.errors import DecafError, SnapshotError
from decaf.layers.data import BasePrefetchingDataLayer

SOLVER = """
net_param {
  layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "y" top: "loss" }
}
base_lr: 0.1 lr_policy: "fixed" max_iter: 10 snapshot_prefix: "%s" snapshot_format: %s
"""


def _full_disk(monkeypatch):
    real = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)
    return real


@pytest.mark.parametrize("fmt, ext", [("BINARYPROTO", ""), ("HDF5", ".h5")])
def test_full_disk_keeps_the_previous_snapshot(tmp_path, monkeypatch, fmt, ext):
    solver = decaf.get_solver(SOLVER % (tmp_path / "snap", fmt))
    solver.step(1)
    solver.snapshot()
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    assert sorted(before) == ["snap_iter_1.caffemodel" + ext, "snap_iter_1.solverstate" + ext]
    solver.step(1)
    _full_disk(monkeypatch)
    with pytest.raises(SnapshotError) as info:
        solver.snapshot()
    msg = str(info.value)
    assert "no space left on device" in msg and str(tmp_path / "snap_iter_2.caffemodel") in msg
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    after = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    assert after == before          # the old pair untouched, no partial or temporary file


def test_full_disk_when_replacing_a_file_keeps_it(tmp_path, monkeypatch):
    from decaf.proto import caffe_pb2, io
    path = tmp_path / "w.caffemodel"
    io.write_binary(str(path), caffe_pb2.NetParameter(name="old"))
    _full_disk(monkeypatch)
    with pytest.raises(SnapshotError, match="no space left on device"):
        io.write_binary(str(path), caffe_pb2.NetParameter(name="new"))
    monkeypatch.undo()
    assert io.read_binary(str(path), caffe_pb2.NetParameter).name == "old"
    assert os.listdir(tmp_path) == ["w.caffemodel"]


def _images(d, n):
    lines = []
    for i in range(n):
        img = np.full((3, 4, 5), i, np.uint8)
        (d / ("im%d.png" % i)).write_bytes(encode_image(img, "png"))
        lines.append("im%d.png %d" % (i, i))
    (d / "list.txt").write_text("\n".join(lines) + "\n")


def test_image_removed_mid_training_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(BasePrefetchingDataLayer, "prefetch_count", 0)   # read on demand
    _images(tmp_path, 3)
    net = decaf.Net('layer { name: "d" type: "ImageData" top: "data" top: "label" '
                    'image_data_param { source: "%s" root_folder: "%s/" batch_size: 1 } }'
                    % (tmp_path / "list.txt", tmp_path), decaf.TRAIN)
    net.forward()
    os.remove(tmp_path / "im2.png")
    net.forward()
    with pytest.raises(DecafError, match=r"Layer 'd' \(ImageData\): reading .*list.txt: .*im2.png"):
        net.forward()


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_database_removed_mid_training(tmp_path, backend):
    """An open database whose files are deleted either keeps serving the records it has open
    (LMDB maps them) or stops with a clear error; never a bare exception."""
    with open_db(backend, str(tmp_path / "db"), "new") as db, db.writer() as txn:
        for i in range(50):
            txn.put(b"%08d" % i, array_to_datum(np.full((1, 2, 2), i, np.uint8), i)
                    .SerializeToString())
    net = decaf.Net('layer { name: "d" type: "Data" top: "data" top: "label" data_param { '
                    'source: "%s" batch_size: 4 backend: %s prefetch: 1 } }'
                    % (tmp_path / "db", backend.upper()), decaf.TRAIN)
    net.forward()
    shutil.rmtree(tmp_path / "db")
    try:
        for _ in range(30):
            labels = net.forward()["label"]
            assert labels.shape == (4,)
    except DecafError as e:
        assert "Layer 'd' (Data)" in str(e) and str(tmp_path / "db") in str(e)
    finally:
        net.layers[0].close()
