"""Tests for decaf/layers/data.py: Input, DummyData, Data, MemoryData, HDF5Data, HDF5Output,
ImageData. Data layers have no backward, so there is no gradient check here."""
import gc
import os
import shutil
import threading

import h5py
import numpy as np
import pytest

import decaf
from decaf.blob import Blob
from decaf.data.datum import array_to_datum, encode_image
from decaf.data.db import open_db
from decaf.errors import DecafError, LayerSetupError
from decaf.layer import create_layer
from decaf.proto import caffe_pb2
from decaf.proto.io import read_net_param
from decaf.testing import golden
from decaf.testing.gradient_check import make_layer_param

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
FORMATS = os.path.join(golden.require_golden(), "formats")


@pytest.fixture(scope="module")
def expected():
    return np.load(os.path.join(FORMATS, "expected.npz"))


def make(spec, ntop=2, phase=TEST, dtype=np.float32, bottom=()):
    lp = spec if isinstance(spec, caffe_pb2.LayerParameter) else make_layer_param(spec)
    if not lp.name:
        lp.name = "data"
    if not len(lp.top):
        lp.top.extend(["data", "label"][:ntop] if ntop <= 2 else ["t%d" % i for i in range(ntop)])
    layer = create_layer(lp, phase)
    top = [Blob(dtype=dtype) for _ in lp.top]
    layer.SetUp(list(bottom), top)
    return layer, top


def net_layer(path):
    return read_net_param(path).layer


# -- golden layer cases ------------------------------------------------------------------------
@pytest.mark.parametrize("name", golden.layer_cases(types=["Input", "DummyData"]))
def test_golden(name):
    golden.assert_layer_case(name)


def test_golden_cases_cover_input_and_dummy_data():
    types = {golden.load_case(n)["layer_type"] for n in golden.layer_cases(types=["Input",
                                                                                 "DummyData"])}
    assert types == {"Input", "DummyData"}


# -- Input --------------------------------------------------------------------------------------
def test_input_one_shape_for_all_tops_and_reshape_is_noop():
    layer, top = make("type: 'Input' input_param { shape { dim: 2 dim: 3 } }", ntop=3)
    assert [t.shape for t in top] == [(2, 3)] * 3
    top[0].reshape(5, 1)             # the caller may reshape an input blob ...
    top[0].data[...] = 7
    layer.Forward([], top)           # ... and forward keeps its shape and values
    assert top[0].shape == (5, 1) and (top[0].data == 7).all()


def test_input_no_shape_and_errors():
    layer, top = make("type: 'Input'", ntop=1)
    assert top[0].shape == ()
    with pytest.raises(LayerSetupError, match="once per top blob.*3 tops vs. 2 shapes"):
        make("type: 'Input' input_param { shape { dim: 1 } shape { dim: 2 } }", ntop=3)
    with pytest.raises(LayerSetupError, match="exactly 0 bottom"):
        make("type: 'Input' input_param { shape { dim: 1 } }", ntop=1, bottom=[Blob((1,))])


# -- DummyData -----------------------------------------------------------------------------------
def test_dummy_constant_filled_once_at_setup():
    layer, top = make("type: 'DummyData' dummy_data_param { data_filler { type: 'constant' "
                      "value: 2.5 } shape { dim: 2 dim: 2 } }", ntop=2)
    assert all((t.data == 2.5).all() for t in top)
    top[0].data[...] = -1            # Caffe never refills a constant top
    layer.Forward([], top)
    assert (top[0].data == -1).all()


def test_dummy_default_filler_is_zero_and_legacy_dims():
    layer, top = make("type: 'DummyData' dummy_data_param { num: 2 channels: 3 channels: 1 "
                      "height: 4 width: 5 }", ntop=2)
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (2, 1, 4, 5)
    assert not top[0].data.any()


def test_dummy_random_filler_refills_every_forward():
    layer, top = make("type: 'DummyData' dummy_data_param { data_filler { type: 'constant' "
                      "value: 1 } data_filler { type: 'gaussian' std: 1 } shape { dim: 3 dim: 4 }"
                      " }", ntop=2)
    assert not top[1].data.any()     # non-constant tops are not filled at setup
    layer.Forward([], top)
    first = top[1].data.copy()
    layer.Forward([], top)
    assert first.std() > 0.3 and not np.array_equal(first, top[1].data)
    assert (top[0].data == 1).all()


@pytest.mark.parametrize("param, message", [
    ("data_filler { type: 'constant' } data_filler { type: 'constant' } "
     "data_filler { type: 'constant' } shape { dim: 1 }", "Number of data fillers"),
    ("shape { dim: 1 } shape { dim: 2 } shape { dim: 3 }", "Must specify 'shape' once"),
    ("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1", "Both shape and legacy"),
    ("num: 1 channels: 1 height: 1", "Must specify 'width' once"),
    ("data_filler { type: 'gausian' } shape { dim: 1 }", "Unknown filler type 'gausian'"),
])
def test_dummy_errors(param, message):
    with pytest.raises(LayerSetupError, match=message):
        make("type: 'DummyData' dummy_data_param { %s }" % param, ntop=2)


# -- Data: golden LMDB / LevelDB -----------------------------------------------------------------
def run_data_case(backend, workdir, expected):
    with golden.chdir(workdir):
        lp = net_layer("data_%s.prototxt" % backend)[0]
        layer, top = make(lp, phase=TEST)
        assert top[0].shape == (4, 1, 6, 7) and top[1].shape == (4,)
        for k in range(2):
            layer.Forward([], top)
            np.testing.assert_array_equal(top[0].data, expected["db.%s.data.%d" % (backend, k)])
            np.testing.assert_array_equal(top[1].data, expected["db.%s.label.%d" % (backend, k)])
        layer.close()


def test_data_golden_lmdb(expected):
    run_data_case("lmdb", os.path.join(FORMATS, "db"), expected)


def test_data_golden_leveldb(expected, tmp_path):
    pytest.importorskip("plyvel")
    for part in ("db", "mean"):
        shutil.copytree(os.path.join(FORMATS, part), tmp_path / part)
    for root, dirs, files in os.walk(tmp_path):
        for n in dirs + files:
            os.chmod(os.path.join(root, n), 0o755)
    run_data_case("leveldb", str(tmp_path / "db"), expected)


# -- Data: behaviour -------------------------------------------------------------------------------
def make_db(path, arrays, labels, backend="lmdb"):
    with open_db(backend, str(path), "new") as db:
        with db.writer() as w:
            for i, (a, l) in enumerate(zip(arrays, labels)):
                w.put(b"%08d" % i, array_to_datum(a, int(l)).SerializeToString())
    return str(path)


def data_spec(source, batch, extra="", transform="", backend="LMDB"):
    return ("type: 'Data' data_param { source: '%s' batch_size: %d backend: %s %s } %s"
            % (source, batch, backend, extra, transform))


@pytest.fixture
def small_db(tmp_path):
    arrays = np.random.RandomState(0).randint(0, 256, size=(5, 3, 4, 4)).astype(np.uint8)
    return make_db(tmp_path / "db", arrays, range(10, 15)), arrays


@pytest.mark.parametrize("prefetch", [0, 1, 4])
def test_data_order_wraps_and_labels(small_db, prefetch):
    path, arrays = small_db
    layer, top = make(data_spec(path, 3, "prefetch: %d" % prefetch))
    seen = []
    for _ in range(4):
        layer.Forward([], top)
        seen.append(top[1].data.copy())
        idx = (top[1].data.astype(int) - 10)
        np.testing.assert_array_equal(top[0].data, arrays[idx])
    assert np.concatenate(seen).tolist() == [10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11]
    layer.close()


def test_data_single_top_float64_and_deprecated_scale(small_db):
    path, arrays = small_db
    layer, top = make(data_spec(path, 2, "scale: 0.5"), ntop=1, dtype=np.float64)
    layer.Forward([], top)
    assert top[0].dtype == np.float64 and top[0].shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(top[0].data, arrays[:2] * 0.5)
    layer.close()


def test_data_train_crop_mirror_repeat_with_seed(small_db):
    path, _ = small_db
    runs = []
    for _ in range(2):
        decaf.set_random_seed(7)
        layer, top = make(data_spec(path, 5, transform="transform_param { crop_size: 2 "
                                    "mirror: true }"), phase=TRAIN)
        out = []
        for _ in range(3):
            layer.Forward([], top)
            out.append(top[0].data.copy())
        layer.close()
        runs.append(np.stack(out))
    assert runs[0].shape == (3, 5, 3, 2, 2)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_data_encoded_records(tmp_path):
    bgr = np.random.RandomState(1).randint(0, 256, size=(2, 3, 4, 5)).astype(np.uint8)
    path = str(tmp_path / "enc")
    with open_db("lmdb", path, "new") as db:
        with db.writer() as w:
            for i in range(2):
                d = caffe_pb2.Datum(data=encode_image(bgr[i], "png"), encoded=True, label=i)
                w.put(b"%08d" % i, d.SerializeToString())
    layer, top = make(data_spec(path, 2))
    layer.Forward([], top)
    np.testing.assert_array_equal(top[0].data, bgr)
    layer.close()
    layer, top = make(data_spec(path, 2, transform="transform_param { force_gray: true }"))
    assert top[0].shape == (2, 1, 4, 5)
    layer.close()


def test_data_prefetch_thread_overlaps_and_stops(small_db):
    path, _ = small_db
    layer, top = make(data_spec(path, 2, "prefetch: 3"))
    assert layer.prefetcher.alive
    thread = layer.prefetcher._thread
    assert thread in threading.enumerate() and thread.daemon
    layer.Forward([], top)
    layer.close()
    assert not layer.prefetcher.alive and thread not in threading.enumerate()
    layer.close()  # idempotent


def test_data_thread_stops_when_layer_is_collected(small_db):
    path, _ = small_db
    layer, top = make(data_spec(path, 2))
    prefetcher = layer.prefetcher
    del layer
    gc.collect()
    assert not prefetcher.alive


@pytest.mark.parametrize("spec, message", [
    ("type: 'Data' data_param { batch_size: 2 backend: LMDB }", "source is not set"),
    ("type: 'Data' data_param { source: '/nonexistent/db' batch_size: 2 backend: LMDB }",
     "cannot read data_param.source '/nonexistent/db' \\(backend LMDB\\).*no such directory"),
])
def test_data_setup_errors(spec, message):
    with pytest.raises(LayerSetupError, match=message):
        make(spec)


def test_data_more_setup_errors(small_db, tmp_path):
    path, _ = small_db
    with pytest.raises(LayerSetupError, match="batch_size must be positive"):
        make("type: 'Data' data_param { source: '%s' backend: LMDB }" % path)
    with pytest.raises(LayerSetupError, match="mean_file.*no such file"):
        make(data_spec(path, 2, transform="transform_param { mean_file: 'nope.binaryproto' }"))
    with pytest.raises(LayerSetupError, match="crop_size 9 is larger"):
        make(data_spec(path, 2, transform="transform_param { crop_size: 9 }"))
    with pytest.raises(LayerSetupError, match="at most 2 top"):
        make(data_spec(path, 2), ntop=3)
    empty = str(tmp_path / "empty")
    open_db("lmdb", empty, "new").close()
    with pytest.raises(LayerSetupError, match="is empty"):
        make(data_spec(empty, 2))


def test_data_bad_record_reported_at_forward(tmp_path):
    path = str(tmp_path / "db")
    with open_db("lmdb", path, "new") as db:
        with db.writer() as w:
            w.put(b"0", array_to_datum(np.zeros((1, 2, 2), np.uint8), 0).SerializeToString())
            w.put(b"1", array_to_datum(np.zeros((1, 3, 3), np.uint8), 1).SerializeToString())
    layer, top = make(data_spec(path, 2, "prefetch: 1"))
    with pytest.raises(DecafError, match="different sizes"):
        layer.Forward([], top)
    layer.close()


# -- MemoryData ----------------------------------------------------------------------------------
MEM = "type: 'MemoryData' memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }"


def test_memory_data_serves_rows_and_wraps():
    layer, top = make(MEM)
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([0, 1, 2, 3], np.float32)
    layer.set_input_arrays(data, labels)
    for k in (0, 1, 0):
        layer.Forward([], top)
        np.testing.assert_array_equal(top[0].data, data[2 * k:2 * k + 2])
        np.testing.assert_array_equal(top[1].data, labels[2 * k:2 * k + 2])


def test_memory_data_reset_and_datums():
    layer, top = make(MEM + " transform_param { scale: 2 }")
    datums = [array_to_datum(np.full((1, 2, 3), i, np.uint8), i) for i in range(2)]
    layer.add_datum_vector(datums)
    with pytest.raises(DecafError, match="consumed"):
        layer.add_datum_vector(datums)
    layer.Forward([], top)
    np.testing.assert_array_equal(top[0].data[:, 0, 0, 0], [0, 2])
    layer.add_datum_vector(datums)  # consumed: may add again
    layer.reset(np.ones((2, 1, 2, 3), np.float32), np.zeros(2, np.float32), 2)
    layer.Forward([], top)
    assert (top[0].data == 1).all()


@pytest.mark.parametrize("data, labels, message", [
    (np.zeros((3, 1, 2, 3)), np.zeros(3), "multiple of batch size"),
    (np.zeros((2, 1, 2, 3)), np.zeros(4), "same first dimension"),
    (np.zeros((2, 2, 2, 3)), np.zeros(2), "channels x height x width"),
    (np.zeros((2, 6)), np.zeros(2), "4-d"),
])
def test_memory_data_input_errors(data, labels, message):
    layer, top = make(MEM)
    with pytest.raises(DecafError, match=message):
        layer.set_input_arrays(data, labels)


def test_memory_data_setup_and_forward_errors():
    with pytest.raises(LayerSetupError, match="must be specified and positive"):
        make("type: 'MemoryData' memory_data_param { batch_size: 2 channels: 1 height: 2 }")
    layer, top = make(MEM)
    with pytest.raises(DecafError, match="needs to be initialized"):
        layer.Forward([], top)


# -- HDF5Data / HDF5Output (golden formats/hdf5) -------------------------------------------------
def test_hdf5_data_golden_in_order_and_wraps(expected):
    with golden.chdir(os.path.join(FORMATS, "hdf5")):
        layer, top = make(net_layer("read_hdf5.prototxt")[0])
        for k in range(3):
            layer.Forward([], top)
            np.testing.assert_array_equal(top[0].data, expected["hdf5.read.data.%d" % k])
            np.testing.assert_array_equal(top[1].data, expected["hdf5.read.label.%d" % k])


def test_hdf5_output_golden(expected, tmp_path):
    with golden.chdir(os.path.join(FORMATS, "hdf5")):
        layers = net_layer("write_hdf5.prototxt")
    out_lp = layers[2]
    bottom = []
    for key in ("hdf5.data", "hdf5.label"):
        b = Blob(expected[key].shape)
        b.data[...] = expected[key]
        bottom.append(b)
    with golden.chdir(str(tmp_path)):
        layer = create_layer(out_lp, TEST)
        layer.SetUp(bottom, [])
        assert os.path.exists("written.h5")
        layer.Forward(bottom, [])
        with pytest.raises(LayerSetupError, match="writes them once"):
            layer.Forward(bottom, [])
    with h5py.File(str(tmp_path / "written.h5"), "r") as got, \
            h5py.File(os.path.join(FORMATS, "hdf5", "written.h5"), "r") as want:
        assert sorted(got) == sorted(want) == ["data", "label"]
        for name in want:
            assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name][()], want[name][()])


def test_hdf5_output_errors(tmp_path):
    lp = "type: 'HDF5Output' bottom: 'a' bottom: 'b' hdf5_output_param { file_name: '%s' }" \
         % (tmp_path / "o.h5")
    with pytest.raises(LayerSetupError, match="same batch size"):
        make(lp, ntop=0, bottom=[Blob((2, 3)), Blob((3,))])
    with pytest.raises(LayerSetupError, match="exactly 2 bottom"):
        make(lp, ntop=0, bottom=[Blob((2, 3))])
    with pytest.raises(LayerSetupError, match="legacy 4-D"):
        make(lp, ntop=0, bottom=[Blob((2, 1, 1, 1, 1)), Blob((2,))])


def write_h5(path, **arrays):
    with h5py.File(str(path), "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def test_hdf5_data_several_files_and_shuffle(tmp_path):
    write_h5(tmp_path / "a.h5", x=np.arange(3, dtype=np.float64)[:, None] * [1, 1], y=np.arange(3))
    write_h5(tmp_path / "b.h5", x=np.arange(3, 5, dtype=np.float64)[:, None] * [1, 1],
             y=np.arange(3, 5))
    (tmp_path / "list.txt").write_text("%s\n%s\n" % (tmp_path / "a.h5", tmp_path / "b.h5"))
    spec = ("type: 'HDF5Data' top: 'x' top: 'y' hdf5_data_param { source: '%s' batch_size: 4 %s }")
    layer, top = make(spec % (tmp_path / "list.txt", ""))
    assert top[0].shape == (4, 2) and top[1].shape == (4,)
    got = []
    for _ in range(3):
        layer.Forward([], top)
        np.testing.assert_array_equal(top[0].data[:, 0], top[1].data)
        got.extend(top[1].data.tolist())
    assert got == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    layer, top = make(spec % (tmp_path / "list.txt", "shuffle: true"))
    got = []
    for _ in range(5):
        layer.Forward([], top)
        got.extend(top[1].data.tolist())
    epochs = [sorted(got[i:i + 5]) for i in range(0, 20, 5)]
    assert all(e == [0, 1, 2, 3, 4] for e in epochs)
    assert got[:15] != [0, 1, 2, 3, 4] * 3


def test_hdf5_data_errors(tmp_path):
    write_h5(tmp_path / "a.h5", data=np.zeros((2, 3)))
    (tmp_path / "list.txt").write_text(str(tmp_path / "a.h5"))
    (tmp_path / "empty.txt").write_text("\n")
    spec = "type: 'HDF5Data' hdf5_data_param { source: '%s' batch_size: 1 } %s"
    with pytest.raises(LayerSetupError, match="Failed to find HDF5 dataset 'label'"):
        make(spec % (tmp_path / "list.txt", ""))
    with pytest.raises(LayerSetupError, match="does not transform"):
        make(spec % (tmp_path / "list.txt", "transform_param { scale: 2 }"), ntop=1)
    with pytest.raises(LayerSetupError, match="Failed to open source file"):
        make(spec % (tmp_path / "nope.txt", ""), ntop=1)
    with pytest.raises(LayerSetupError, match="at least 1 HDF5 filename"):
        make(spec % (tmp_path / "empty.txt", ""), ntop=1)


# -- ImageData -----------------------------------------------------------------------------------
@pytest.fixture
def image_dir(tmp_path):
    rs = np.random.RandomState(2)
    imgs = rs.randint(0, 256, size=(3, 3, 4, 6)).astype(np.uint8)  # BGR, C x H x W
    names = []
    for i, img in enumerate(imgs):
        name = "im %d.png" % i  # a space in the path: the label follows the LAST space
        (tmp_path / name).write_bytes(encode_image(img, "png"))
        names.append(name)
    (tmp_path / "list.txt").write_text("".join("%s %d\n" % (n, 5 + i) for i, n in enumerate(names)))
    return tmp_path, imgs


def image_spec(d, extra="", transform="", batch=2):
    return ("type: 'ImageData' image_data_param { source: '%s' root_folder: '%s/' batch_size: %d "
            "%s } %s" % (d / "list.txt", d, batch, extra, transform))


def test_image_data_bgr_in_order_and_wraps(image_dir):
    d, imgs = image_dir
    layer, top = make(image_spec(d))
    assert top[0].shape == (2, 3, 4, 6) and top[1].shape == (2,)
    layer.Forward([], top)
    np.testing.assert_array_equal(top[0].data, imgs[:2])
    np.testing.assert_array_equal(top[1].data, [5, 6])
    layer.Forward([], top)
    np.testing.assert_array_equal(top[0].data, imgs[[2, 0]])
    np.testing.assert_array_equal(top[1].data, [7, 5])
    layer.close()


def test_image_data_gray_resize_and_transform(image_dir):
    d, imgs = image_dir
    layer, top = make(image_spec(d, "is_color: false new_height: 2 new_width: 3",
                                 "transform_param { scale: 0.5 mean_value: 1 }"))
    assert top[0].shape == (2, 1, 2, 3)
    layer.Forward([], top)
    assert ((top[0].data >= -0.5) & (top[0].data <= 127.5)).all()
    layer.close()


def test_image_data_shuffle_covers_every_image(image_dir):
    d, imgs = image_dir
    layer, top = make(image_spec(d, "shuffle: true", batch=3))
    layer.Forward([], top)
    assert sorted(top[1].data.tolist()) == [5, 6, 7]
    layer.close()


def test_image_data_errors(image_dir):
    d, _ = image_dir
    with pytest.raises(LayerSetupError, match="new_height and new_width"):
        make(image_spec(d, "new_height: 2"))
    with pytest.raises(LayerSetupError, match="exactly 2 top"):
        make(image_spec(d), ntop=1)
    (d / "bad.txt").write_text("missing.png 1\n")
    with pytest.raises(LayerSetupError, match="Could not open or find file"):
        make(image_spec(d).replace("list.txt", "bad.txt"))
