"""Cases the fuzzers found, each fixed at its root: kept as plain tests."""
import h5py
import numpy as np
import pytest

import decaf
from decaf.errors import DecafError, SolverError, TruncatedFileError, WeightsError
from decaf.proto import caffe_pb2, io
from decaf.solver_state import learned_net_path, read_solver_state


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_a_batch_of_zero_images_builds_and_runs(kind):
    net = decaf.Net('force_backward: true layer { name: "x" type: "Input" top: "x" input_param '
                    '{ shape { dim: 0 dim: 3 dim: 6 dim: 6 } } } layer { name: "c" type: "%s" '
                    'bottom: "x" top: "c" convolution_param { num_output: 2 kernel_size: 3 } } '
                    'layer { name: "b" type: "BatchNorm" bottom: "c" top: "b" }' % kind,
                    decaf.TEST)
    assert net.forward()["b"].shape[:2] == (0, 2)
    net.backward()


def test_solverstate_history_that_does_not_fill_its_shape(tmp_path):
    state = caffe_pb2.SolverState(iter=1)
    h = state.history.add()
    h.shape.dim.append(12)
    h.data.extend([1, 2, 3, 4])
    path = tmp_path / "s.solverstate"
    path.write_bytes(state.SerializeToString())
    with pytest.raises(SolverError, match=r"s\.solverstate: history blob 0: .*4 data values"):
        read_solver_state(str(path))


def test_learned_net_with_a_nul_byte():
    with pytest.raises(SolverError, match="NUL byte"):
        learned_net_path("w\x00.caffemodel", "s.solverstate")


def test_string_field_that_is_not_utf8(tmp_path):
    raw = caffe_pb2.NetParameter(name="ab").SerializeToString().replace(b"ab", b"\xe5\x01")
    path = tmp_path / "w.caffemodel"
    path.write_bytes(raw)
    with pytest.raises(TruncatedFileError, match=r"w\.caffemodel.*caffe\.NetParameter\.name is "
                                                 r"not UTF-8"):
        io.read_binary(str(path), caffe_pb2.NetParameter)


@pytest.mark.parametrize("datasets, message", [
    ({"data": np.ones((0, 2), np.float32), "label": np.ones((0,), np.float32)}, "has no rows"),
    ({"data": np.ones((2, 2), np.complex64), "label": np.ones((2,), np.float32)},
     "complex64 data"),
    ({"data": np.ones((2, 2), "S3"), "label": np.ones((2,), np.float32)}, "|S3 data"),
])
def test_hdf5_data_sources_with_wrong_contents(tmp_path, monkeypatch, datasets, message):
    monkeypatch.chdir(tmp_path)
    with h5py.File("f.h5", "w") as f:
        for name, arr in datasets.items():
            f.create_dataset(name, data=arr)
    (tmp_path / "list.txt").write_bytes(b"f.h5\n")
    with pytest.raises(DecafError, match=r"Layer 'h' \(HDF5Data\).*%s" % message.replace("|", r"\|")):
        decaf.Net('layer { name: "h" type: "HDF5Data" top: "data" top: "label" '
                  'hdf5_data_param { source: "list.txt" batch_size: 1 } }', decaf.TEST)


def test_hdf5_source_list_that_is_not_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_bytes(b"f\xff.h5\n")
    with pytest.raises(DecafError, match="list.txt' is not a text list"):
        decaf.Net('layer { name: "h" type: "HDF5Data" top: "data" top: "label" '
                  'hdf5_data_param { source: "list.txt" batch_size: 1 } }', decaf.TEST)


def test_image_list_errors_name_file_and_line(tmp_path):
    from decaf.data.prefetch import read_image_list
    (tmp_path / "l.txt").write_bytes(b"a.png 1\nb.png x\n")
    with pytest.raises(DecafError, match=r"l\.txt:2: line 'b.png x'"):
        read_image_list(str(tmp_path / "l.txt"))
    (tmp_path / "l.txt").write_bytes(b"a\xff.png 1\n")
    with pytest.raises(DecafError, match="not UTF-8"):
        read_image_list(str(tmp_path / "l.txt"))


def test_nul_in_image_path():
    from decaf.data.datum import ImageError, read_image
    with pytest.raises(ImageError, match="NUL byte"):
        read_image("a\x00.png")


def test_corrupt_hdf5_weights_name_the_file(tmp_path):
    from decaf.testing.data import GOLDEN_DIR
    import os
    src = os.path.join(GOLDEN_DIR, "formats", "weights")
    with open(os.path.join(src, "tiny_net.caffemodel.h5"), "rb") as f:
        data = f.read()
    path = tmp_path / "w.caffemodel.h5"
    path.write_bytes(data[:len(data) // 2])
    net = decaf.Net(os.path.join(src, "tiny_net.prototxt"), decaf.TEST)
    with pytest.raises(WeightsError, match=str(path)):
        net.copy_from(str(path))


def _lmdb_with_many_pages(path):
    from decaf.data.db import open_db
    with open_db("lmdb", str(path), "new") as db, db.writer() as txn:
        for i in range(600):                     # small records: many leaves, branch pages
            txn.put(b"small%06d" % i, b"x" * (i % 50))
        for i in range(5):                       # big records: overflow pages
            txn.put(b"big%d" % i, bytes([i]) * 20000)


def test_lmdb_page_check_accepts_real_databases_and_refuses_corrupt_ones(tmp_path):
    import os
    from decaf.data.db import DBError, open_db
    _lmdb_with_many_pages(tmp_path / "db")
    with open_db("lmdb", str(tmp_path / "db"), "r") as db:
        values = [v for _, v in db.cursor()]
    assert len(values) == 605 and values[0] == bytes([0]) * 20000
    data = (tmp_path / "db" / "data.mdb").read_bytes()
    os.makedirs(tmp_path / "short")
    (tmp_path / "short" / "data.mdb").write_bytes(data[:len(data) - 4096])
    with pytest.raises(DBError, match="short is truncated or corrupt"):
        open_db("lmdb", str(tmp_path / "short"), "r")
    os.makedirs(tmp_path / "bad")
    bad = bytearray(data)
    bad[2 * 4096 + 16:2 * 4096 + 18] = b"\xff\x0f"   # the first node of page 2 points away
    (tmp_path / "bad" / "data.mdb").write_bytes(bytes(bad))
    with pytest.raises(DBError, match="bad is corrupt: page 2"):
        open_db("lmdb", str(tmp_path / "bad"), "r")


INPUT = 'layer { name: "in" type: "Input" top: "in" input_param { shape { %s } } } '


@pytest.mark.parametrize("text, error, message", [
    (INPUT % "dim: 2 dim: 3" + 'layer { name: "a" type: "ReLU" bottom: "b" top: "a" } '
     'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }', "NetError",
     r"Unknown bottom blob 'b' \(layer 'a'"),                                     # a cycle
    (INPUT % "dim: 2" + 'layer { name: "r" type: "ReLU" bottom: "nowhere" top: "r" }',
     "NetError", "Unknown bottom blob 'nowhere'"),
    (INPUT % "dim: 2" + 'layer { name: "e" type: "EuclideanLoss" bottom: "in" top: "e" }',
     "LayerSetupError", r"Layer 'e'.*2 bottom"),                               # wrong count
    (INPUT % "dim: 2 dim: -3", "ShapeMismatchError", r"Layer 'in' \(Input\).*negative"),
    (INPUT % "dim: 0 dim: 3" + 'layer { name: "ip" type: "InnerProduct" bottom: "in" '
     'top: "ip" inner_product_param { num_output: 2 } }', None, None),          # 0 builds
    (INPUT % "dim: 999999999 dim: 999999999", "OutOfMemoryError",
     r"Largest layers: layer 'in'"),
])
def test_net_builder_errors_name_the_layer(text, error, message):
    import decaf.errors as errors
    if error is None:
        decaf.Net(text, decaf.TEST)
        return
    with pytest.raises(getattr(errors, error), match=message):
        decaf.Net(text, decaf.TEST)


def test_blob_shape_beyond_numpy_limits_even_with_a_zero():
    from decaf.blob import Blob
    from decaf.errors import ShapeMismatchError
    with pytest.raises(ShapeMismatchError, match="too large"):
        Blob((0, 5, 999999999, 999999999))


def test_datum_with_negative_size():
    from decaf.data.datum import datum_to_array
    with pytest.raises(DecafError, match="negative size"):
        datum_to_array(caffe_pb2.Datum(channels=-1, height=0, width=0, data=b""))


def test_softmax_of_a_scalar_blob_is_a_layer_error():
    with pytest.raises(DecafError, match=r"Layer 's' \(Softmax\).*has no axes"):
        decaf.Net('layer { name: "in" type: "Input" top: "in" input_param { shape { } } } '
                  'layer { name: "s" type: "Softmax" bottom: "in" top: "s" '
                  'softmax_param { axis: 0 } }', decaf.TEST)


def test_exp_with_an_overflowing_shift_is_inf_as_in_caffe():
    net = decaf.Net('layer { name: "in" type: "Input" top: "in" input_param { shape { dim: 1 } } '
                    '} layer { name: "e" type: "Exp" bottom: "in" top: "e" exp_param { shift: '
                    '999999999 } }', decaf.TEST)
    assert net.layers[1].outer_scale == float("inf")


def test_filler_errors_and_empty_blobs():
    from decaf.blob import Blob
    from decaf.filler import fill
    with pytest.raises(DecafError, match="std must not be negative"):
        fill(Blob((2, 2)), caffe_pb2.FillerParameter(type="gaussian", std=-1))
    for kind in ("xavier", "msra", "gaussian", "positive_unitball", "uniform"):
        fill(Blob((0, 3)), caffe_pb2.FillerParameter(type=kind))   # nothing to fill
    with pytest.raises(DecafError, match=r"Layer 'ip' \(InnerProduct\).*std must not be"):
        decaf.Net('layer { name: "in" type: "Input" top: "in" input_param { shape { dim: 1 '
                  'dim: 2 } } } layer { name: "ip" type: "InnerProduct" bottom: "in" top: "ip" '
                  'inner_product_param { num_output: 2 weight_filler { type: "gaussian" '
                  'std: -1 } } }', decaf.TEST)


def test_mean_reduction_over_an_empty_axis_builds():
    net = decaf.Net('layer { name: "in" type: "Input" top: "in" input_param { shape { dim: 2 '
                    'dim: 0 } } } layer { name: "r" type: "Reduction" bottom: "in" top: "r" '
                    'reduction_param { operation: MEAN axis: 1 } }', decaf.TEST)
    assert net.layers[1].coeff == float("inf")
