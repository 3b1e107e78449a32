"""Tests for decaf/data/db.py (LMDB/LevelDB), decaf/data/datum.py and the golden formats/db."""
import os
import shutil

import numpy as np
import pytest

from decaf.data import datum as dt
from decaf.data.db import DBError, open_db
from decaf.errors import DecafError
from decaf.proto import caffe_pb2
from decaf.testing.golden import require_golden

FORMATS = os.path.join(require_golden(), "formats")
DB_DIR = os.path.join(FORMATS, "db")


@pytest.fixture(scope="module")
def expected():
    return np.load(os.path.join(FORMATS, "expected.npz"))


def leveldb_copy(tmp_path):
    pytest.importorskip("plyvel")
    dst = tmp_path / "mnist_tiny_leveldb"
    shutil.copytree(os.path.join(DB_DIR, "mnist_tiny_leveldb"), dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    dst.chmod(0o755)
    return str(dst)


def read_all(backend, path):
    with open_db(backend, path, "r") as db:
        cur = db.cursor()
        out = list(cur)
        cur.close()
    return out


# -- golden databases written by Caffe's convert_mnist_data ---------------------------------
def check_golden_records(records, expected):
    images, labels = expected["db.images"], expected["db.labels"]
    assert [k for k, _ in records] == [b"%08d" % i for i in range(len(images))]
    for i, (_, value) in enumerate(records):
        d = dt.parse_datum(value)
        assert (d.channels, d.height, d.width) == (1,) + images.shape[1:]
        assert d.label == labels[i] and not d.encoded
        np.testing.assert_array_equal(dt.datum_to_array(d)[0], images[i])


def test_golden_lmdb_records(expected):
    check_golden_records(read_all("lmdb", os.path.join(DB_DIR, "mnist_tiny_lmdb")), expected)


def test_golden_leveldb_records(expected, tmp_path):
    check_golden_records(read_all("leveldb", leveldb_copy(tmp_path)), expected)


def test_lmdb_len_and_enum_backend():
    with open_db(caffe_pb2.DataParameter.LMDB, os.path.join(DB_DIR, "mnist_tiny_lmdb")) as db:
        assert len(db) == 6


# -- cursor ---------------------------------------------------------------------------------
@pytest.fixture(params=["lmdb", "leveldb"])
def backend(request):
    if request.param == "leveldb":
        pytest.importorskip("plyvel")
    return request.param


def test_cursor_key_order_and_wrap(backend, tmp_path):
    path = str(tmp_path / "db")
    with open_db(backend, path, "new") as db:
        txn = db.transaction()
        for i in (3, 0, 2, 1):  # insertion order differs from key order
            txn.put("%08d" % i, b"v%d" % i)
        txn.commit()
    with open_db(backend, path, "r") as db:
        cur = db.cursor()
        seen = []
        for _ in range(6):
            seen.append(cur.key())
            wrapped = cur.advance()
        assert seen == [b"%08d" % i for i in (0, 1, 2, 3, 0, 1)]
        assert not wrapped
        assert cur.value() == b"v2"
        cur.next()
        cur.next()
        assert not cur.valid()
        cur.seek_to_first()
        assert cur.valid() and cur.key() == b"00000000"
        cur.close()


def test_writer_commits_every_n(backend, tmp_path):
    path = str(tmp_path / "db")
    with open_db(backend, path, "new") as db:
        with db.writer(records_per_commit=3) as w:
            for i in range(7):
                w.put(b"%08d" % i, b"x" * i)
                if i == 2:  # the first 3 are committed and visible
                    assert [k for k, _ in db.cursor()] == [b"%08d" % j for j in range(3)]
        assert len(db) == 7
    assert read_all(backend, path) == [(b"%08d" % i, b"x" * i) for i in range(7)]


def test_lmdb_map_size_grows(tmp_path):
    path = str(tmp_path / "db")
    with open_db("lmdb", path, "new", map_size=64 * 1024) as db:
        txn = db.transaction()
        for i in range(200):
            txn.put(b"%08d" % i, bytes([i % 256]) * 4096)  # ~800 KiB >> 64 KiB map
        txn.commit()
        assert db.env.info()["map_size"] > 64 * 1024
    recs = read_all("lmdb", path)
    assert len(recs) == 200 and recs[5][1] == bytes([5]) * 4096


def test_new_refuses_existing(backend, tmp_path):
    path = str(tmp_path / "db")
    open_db(backend, path, "new").close()
    with pytest.raises(DBError, match="already exists"):
        open_db(backend, path, "new")


def test_write_mode_appends(backend, tmp_path):
    path = str(tmp_path / "db")
    with open_db(backend, path, "w") as db:
        with db.writer() as w:
            w.put("a", b"1")
    with open_db(backend, path, "w") as db:
        with db.writer() as w:
            w.put("b", b"2")
    assert read_all(backend, path) == [(b"a", b"1"), (b"b", b"2")]


def test_read_only_refuses_writes(tmp_path):
    with open_db("lmdb", os.path.join(DB_DIR, "mnist_tiny_lmdb"), "r") as db:
        with pytest.raises(DBError, match="read-only"):
            db.transaction()


@pytest.mark.parametrize("backend_name", ["lmdb", "leveldb"])
def test_missing_db_is_a_clear_error(backend_name, tmp_path):
    if backend_name == "leveldb":
        pytest.importorskip("plyvel")
    with pytest.raises(DBError, match="no such directory"):
        open_db(backend_name, str(tmp_path / "nope"), "r")


def test_bad_backend_and_mode():
    with pytest.raises(DBError, match="Unknown database backend"):
        open_db("rocksdb", "x")
    with pytest.raises(DBError, match="Unknown database mode"):
        open_db("lmdb", "x", "append")


def test_leveldb_without_plyvel_says_how_to_install(monkeypatch, tmp_path):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "plyvel":
            raise ImportError("no plyvel")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DBError, match="pip install plyvel"):
        open_db("leveldb", str(tmp_path / "x"), "w")


def test_lmdb_shared_read_env(tmp_path):
    """Two readers of one LMDB in a process share the environment; closing one keeps the other."""
    a = open_db("lmdb", os.path.join(DB_DIR, "mnist_tiny_lmdb"))
    b = open_db("lmdb", os.path.join(DB_DIR, "mnist_tiny_lmdb"))
    assert a.env is b.env
    a.close()
    assert len(list(b.cursor())) == 6
    b.close()


# -- Datum ------------------------------------------------------------------------------------
def test_array_to_datum_uint8_and_float():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = dt.array_to_datum(arr, label=7)
    assert (d.channels, d.height, d.width, d.label, d.encoded) == (2, 3, 4, 7, False)
    assert d.data == arr.tobytes() and len(d.float_data) == 0
    np.testing.assert_array_equal(dt.datum_to_array(d), arr)
    f = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    d = dt.array_to_datum(f)
    assert not d.data and not d.HasField("label")
    out = dt.datum_to_array(d)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, f.astype(np.float32))
    assert dt.datum_to_array(d, dtype=float).dtype == np.float64


def test_array_to_datum_rejects_non_3d():
    with pytest.raises(DecafError, match="3-D"):
        dt.array_to_datum(np.zeros((2, 2)))


def test_datum_size_mismatch_is_an_error():
    d = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(DecafError, match="3 data bytes"):
        dt.datum_to_array(d)


def test_parse_garbage_is_an_error():
    with pytest.raises(DecafError, match="not a serialized Datum"):
        dt.parse_datum(b"\xff\xff\xff\xff")


def bgr_image():
    rs = np.random.RandomState(3)
    return rs.randint(0, 256, size=(3, 5, 7)).astype(np.uint8)  # C x H x W, BGR


def test_encoded_png_decodes_to_bgr():
    from PIL import Image
    import io
    chw = bgr_image()
    rgb = chw[::-1].transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    d = caffe_pb2.Datum(data=buf.getvalue(), encoded=True, label=1)
    np.testing.assert_array_equal(dt.datum_to_array(d), chw)
    np.testing.assert_array_equal(dt.decode_datum(d, color=True), chw)
    gray = dt.decode_datum(d, color=False)
    assert gray.shape == (1, 5, 7)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    ref = 0.299 * r + 0.587 * g + 0.114 * b
    assert np.abs(gray[0] - ref).max() <= 1.0


def test_encode_image_round_trip_png():
    chw = bgr_image()
    np.testing.assert_array_equal(dt.decode_image(dt.encode_image(chw, "png")), chw)
    g = chw[:1]
    out = dt.decode_image(dt.encode_image(g, "png"))
    assert out.shape == (1, 5, 7)
    np.testing.assert_array_equal(out, g)


def test_gray_png_decodes_native_as_one_channel():
    g = bgr_image()[:1]
    d = caffe_pb2.Datum(data=dt.encode_image(g, "png"), encoded=True)
    assert dt.datum_to_array(d).shape == (1, 5, 7)
    assert dt.decode_datum(d, color=True).shape == (3, 5, 7)


def test_decode_garbage_is_an_error():
    with pytest.raises(dt.ImageError, match="could not decode"):
        dt.decode_image(b"not an image")


def test_resize_bilinear_matches_opencv_geometry():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    # 2x downscale with half-pixel centres averages 2x2 blocks
    out = dt.resize_bilinear(img, 2, 2)
    ref = img.reshape(2, 2, 2, 2).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.rint(ref))
    # upscale: border pixels clamp, interior interpolates at (i + 0.5) / 2 - 0.5
    row = np.array([[0, 100]], np.uint8)
    np.testing.assert_array_equal(dt.resize_bilinear(row, 1, 4), [[0, 25, 75, 100]])
    color = np.zeros((4, 4, 3), np.uint8)
    assert dt.resize_bilinear(color, 3, 5).shape == (3, 5, 3)
