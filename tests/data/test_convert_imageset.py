"""Tests for decaf/tools/convert_imageset.py, compute_image_mean on images, and decaf/data/cli.py."""
import numpy as np
import pytest

from decaf.data.cli import UsageError, parse_flags
from decaf.data.datum import datum_to_array, decode_datum, encode_image, parse_datum
from decaf.data.db import open_db
from decaf.tools import compute_image_mean, convert_imageset


@pytest.fixture
def image_set(tmp_path):
    rs = np.random.RandomState(0)
    imgs = rs.randint(0, 256, size=(4, 3, 5, 6)).astype(np.uint8)  # BGR C x H x W
    (tmp_path / "imgs").mkdir()
    lines = []
    for i, img in enumerate(imgs):
        name = "imgs/a %d.png" % i
        (tmp_path / name).write_bytes(encode_image(img, "png"))
        lines.append("%s %d" % (name, i % 2))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, imgs


def records(path, backend="lmdb"):
    with open_db(backend, str(path)) as db:
        return [(k, parse_datum(v)) for k, v in db.cursor()]


def test_raw_keys_labels_and_bgr(image_set):
    d, imgs = image_set
    out = d / "db"
    assert convert_imageset.main([str(d) + "/", str(d / "list.txt"), str(out)]) == 0
    recs = records(out)
    assert [k for k, _ in recs] == [b"%08d_imgs/a %d.png" % (i, i) for i in range(4)]
    for i, (_, datum) in enumerate(recs):
        assert datum.label == i % 2 and not datum.encoded and datum.HasField("encoded")
        np.testing.assert_array_equal(datum_to_array(datum), imgs[i])


def test_gray_resize_check_size(image_set):
    d, imgs = image_set
    out = d / "db"
    argv = ["-gray", "--resize_height=3", "-resize_width", "4", "-check_size",
            str(d) + "/", str(d / "list.txt"), str(out)]
    assert convert_imageset.main(argv) == 0
    datum = records(out)[0][1]
    assert (datum.channels, datum.height, datum.width) == (1, 3, 4)


def test_encoded_keeps_file_bytes_or_reencodes(image_set):
    d, imgs = image_set
    assert convert_imageset.main(["-encoded", str(d) + "/", str(d / "list.txt"),
                                  str(d / "enc")]) == 0
    datum = records(d / "enc")[1][1]
    assert datum.encoded and datum.data == (d / "imgs/a 1.png").read_bytes()
    np.testing.assert_array_equal(decode_datum(datum), imgs[1])
    # Caffe keeps the file's own bytes whenever no resize is asked and the extension matches,
    # even with -gray (a gray read has 1 channel, so "(channels == 3) == is_color" holds)
    assert convert_imageset.main(["-encode_type=png", "-gray", str(d) + "/",
                                  str(d / "list.txt"), str(d / "enc2")]) == 0
    datum = records(d / "enc2")[0][1]
    assert datum.encoded and datum.data == (d / "imgs/a 0.png").read_bytes()
    # with a resize the image is re-encoded from the (gray) pixels
    assert convert_imageset.main(["-encode_type=png", "-gray", "-resize_height=3",
                                  "-resize_width=4", str(d) + "/", str(d / "list.txt"),
                                  str(d / "enc3")]) == 0
    datum = records(d / "enc3")[0][1]
    assert datum.encoded and decode_datum(datum).shape == (1, 3, 4)


def test_shuffle_keeps_every_image(image_set):
    d, _ = image_set
    assert convert_imageset.main(["-shuffle", str(d) + "/", str(d / "list.txt"),
                                  str(d / "db")]) == 0
    keys = [k for k, _ in records(d / "db")]
    assert sorted(k.split(b"_", 1)[1] for k in keys) == [b"imgs/a %d.png" % i for i in range(4)]


def test_unreadable_image_is_skipped_and_mean(image_set):
    d, imgs = image_set
    with open(d / "list.txt", "a") as f:
        f.write("imgs/missing.png 1\n")
    assert convert_imageset.main([str(d) + "/", str(d / "list.txt"), str(d / "db")]) == 0
    assert len(records(d / "db")) == 4
    mean_file = str(d / "mean.binaryproto")
    assert compute_image_mean.main(["-backend", "lmdb", str(d / "db"), mean_file]) == 0
    from decaf.data.transformer import load_mean_file
    np.testing.assert_allclose(load_mean_file(mean_file)[0], imgs.mean(0), rtol=1e-6)


def test_existing_db_and_usage(image_set, capsys):
    d, _ = image_set
    argv = [str(d) + "/", str(d / "list.txt"), str(d / "db")]
    assert convert_imageset.main(argv) == 0
    assert convert_imageset.main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert convert_imageset.main(argv[:2]) == 1
    assert "Usage" in capsys.readouterr().err


# -- gflags-style parsing ----------------------------------------------------------------------
SPEC = {"gray": False, "backend": "lmdb", "resize_width": 0, "scale": 1.0}


@pytest.mark.parametrize("argv, flags, positional", [
    (["a", "-gray", "b"], {"gray": True}, ["a", "b"]),
    (["--gray=false", "-nogray"], {"gray": False}, []),
    (["-gray=true", "--backend", "leveldb"], {"gray": True, "backend": "leveldb"}, []),
    (["-resize_width=7", "--scale=0.5", "x"], {"resize_width": 7, "scale": 0.5}, ["x"]),
    (["--", "-gray"], {}, ["-gray"]),
])
def test_parse_flags(argv, flags, positional):
    got, pos = parse_flags(argv, SPEC)
    want = dict(SPEC)
    want.update(flags)
    assert got == want and pos == positional


@pytest.mark.parametrize("argv, message", [
    (["-colour"], "unknown command line flag 'colour'"),
    (["-resize_width=big"], "illegal value 'big'"),
    (["-gray=maybe"], "illegal value 'maybe'"),
    (["-backend"], "missing its argument"),
])
def test_parse_flags_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_flags(argv, SPEC)
