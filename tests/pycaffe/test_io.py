"""caffe.io: BlobProto/Datum conversion, the Transformer, load_image, resize_image, oversample."""
import os

import numpy as np
import pytest

import caffe

HERE = os.path.dirname(os.path.abspath(__file__))


# -- BlobProto ---------------------------------------------------------------------------------

def test_blobproto_legacy_shape():
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 100)
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 10, 10
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == (1, 1, 10, 10) and arr.dtype == np.float64


def test_blobproto_shape_and_diff():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = caffe.io.array_to_blobproto(x, diff=-x)
    assert list(blob.shape.dim) == [2, 3] and not blob.HasField("num")
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), x)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), -x)


def test_blobproto_without_shape():
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend([1.0] * 100)
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(blob)
    scalar = caffe.proto.caffe_pb2.BlobProto()
    scalar.data.append(123)
    assert caffe.io.blobproto_to_array(scalar) == 123


def test_blobprotovector_roundtrip():
    arrays = [np.random.rand(2, 3, 4, 5), np.random.rand(7)]
    s = caffe.io.arraylist_to_blobprotovector_str(arrays)
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    for a, b in zip(arrays, back):
        np.testing.assert_allclose(a, b, rtol=1e-6)   # stored as float32


# -- Datum -------------------------------------------------------------------------------------

def test_datum_uint8_and_float():
    u = np.random.randint(0, 255, size=(3, 4, 5)).astype(np.uint8)
    d = caffe.io.array_to_datum(u, label=7)
    assert (d.channels, d.height, d.width, d.label) == (3, 4, 5, 7) and len(d.data) == 60
    back = caffe.io.datum_to_array(d)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, u)
    f = np.random.rand(2, 3, 4)
    df = caffe.io.array_to_datum(f)
    assert len(df.float_data) == 24 and not df.HasField("label")
    back = caffe.io.datum_to_array(df)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, f, rtol=1e-6)


def test_datum_label_makes_it_bigger_and_bad_shape():
    d1 = caffe.io.array_to_datum(np.ones((10, 10, 3)), label=1)
    d2 = caffe.io.array_to_datum(np.ones((10, 10, 3)))
    assert len(d1.SerializeToString()) > len(d2.SerializeToString())
    with pytest.raises(ValueError):
        caffe.io.array_to_datum(np.ones((10, 10)))


# -- Transformer -------------------------------------------------------------------------------

def make_transformer(shape=(1, 3, 4, 5)):
    t = caffe.io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_formula():
    img = np.random.rand(4, 5, 3).astype(np.float32)
    keep = img.copy()
    out = make_transformer().preprocess("data", img)
    expect = (img.transpose(2, 0, 1)[::-1] * 255.0 - np.array([10, 20, 30])[:, None, None]) * 0.5
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, expect, rtol=1e-5)
    np.testing.assert_array_equal(img, keep)           # the caller's image is not modified


def test_deprocess_inverts_preprocess():
    t = make_transformer()
    img = np.random.rand(4, 5, 3).astype(np.float32)
    np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", img)), img, atol=1e-5)


def test_preprocess_resizes_to_input():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    out = t.preprocess("data", np.random.rand(8, 10, 3))
    assert out.shape == (3, 4, 5)


def test_elementwise_mean_and_checks():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    mean = np.random.rand(3, 4, 5)
    t.set_mean("data", mean)
    t.set_transpose("data", (2, 0, 1))
    img = np.random.rand(4, 5, 3).astype(np.float32)
    np.testing.assert_allclose(t.preprocess("data", img), img.transpose(2, 0, 1) - mean,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        t.set_mean("data", np.random.rand(4, 8, 8))    # a mean of another size must fit K
    with pytest.raises(ValueError, match="invalid"):
        t.set_mean("data", np.random.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="channels"):
        t.set_mean("data", np.random.rand(4))
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.set_raw_scale("nope", 1)
    with pytest.raises(Exception, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))


# -- images ------------------------------------------------------------------------------------

def save(path, arr, mode=None):
    from PIL import Image
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return str(path)


GRAY_W = np.array([0.2125, 0.7154, 0.0721])


def test_load_image_rgb(tmp_path):
    rgb = np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    path = save(tmp_path / "a.png", rgb)
    img = caffe.io.load_image(path)
    assert img.shape == (5, 7, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img, (rgb / 255.0).astype(np.float32))
    gray = caffe.io.load_image(path, color=False)
    assert gray.shape == (5, 7, 1)
    np.testing.assert_allclose(gray[:, :, 0], (rgb / 255.0) @ GRAY_W, rtol=1e-6)


def test_load_image_gray_rgba_palette_16bit(tmp_path):
    rs = np.random.RandomState(1)
    g = rs.randint(0, 256, (4, 6)).astype(np.uint8)
    img = caffe.io.load_image(save(tmp_path / "g.png", g))
    assert img.shape == (4, 6, 3)
    np.testing.assert_array_equal(img[:, :, 1], (g / 255.0).astype(np.float32))
    assert caffe.io.load_image(str(tmp_path / "g.png"), color=False).shape == (4, 6, 1)
    rgba = rs.randint(0, 256, (3, 4, 4)).astype(np.uint8)
    path = save(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(caffe.io.load_image(path),
                                  (rgba[:, :, :3] / 255.0).astype(np.float32))
    f = rgba / 255.0                                      # gray: alpha-blended on white
    blended = (1 - f[:, :, 3:]) + f[:, :, 3:] * f[:, :, :3]
    np.testing.assert_allclose(caffe.io.load_image(path, color=False)[:, :, 0],
                               blended @ GRAY_W, rtol=1e-6)
    from PIL import Image
    pal = Image.fromarray(rs.randint(0, 256, (5, 5, 3)).astype(np.uint8)).convert("P")
    pal.save(str(tmp_path / "p.png"))
    expect = np.asarray(pal.convert("RGB")) / 255.0
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "p.png")), expect, rtol=1e-6)
    g16 = rs.randint(0, 65536, (3, 3)).astype(np.uint16)
    Image.fromarray(g16).save(str(tmp_path / "g16.png"))
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "g16.png"))[:, :, 0],
                               g16 / 65535.0, rtol=1e-6)


def test_resize_matches_scikit_image():
    """Reference outputs of skimage.transform.resize(order=1), recorded with scikit-image."""
    ref = np.load(os.path.join(HERE, "data", "skimage_resize_ref.npz"))
    n = len([k for k in ref.files if k.startswith("in")])
    assert n >= 8
    for i in range(n):
        im, new = ref["in%d" % i], tuple(ref["new%d" % i])
        out = caffe.io.resize_image(im, new)
        assert out.shape == new + im.shape[2:] and out.dtype == np.float32
        lo, hi = im.min(), im.max()
        expect = ref["out%d" % i]
        # pycaffe scales to [0, 1] around skimage; skimage ran on the raw array here
        np.testing.assert_allclose(out, expect, atol=2e-6 * max(1.0, hi - lo))


def test_resize_scales_range_and_constant():
    im = np.random.rand(6, 8, 3).astype(np.float32) * 200 - 50
    out = caffe.io.resize_image(im, (3, 4))
    assert out.min() >= im.min() - 1e-4 and out.max() <= im.max() + 1e-4
    const = np.full((5, 5, 1), 7.0, np.float32)
    np.testing.assert_array_equal(caffe.io.resize_image(const, (2, 9)), np.full((2, 9, 1), 7.0))


def test_resize_other_channel_counts_match_scipy_zoom():
    ndimage = pytest.importorskip("scipy.ndimage")
    im = np.random.rand(10, 12, 5)
    out = caffe.io.resize_image(im, (6, 17))
    expect = ndimage.zoom(im, (6 / 10, 17 / 12, 1), order=1)
    np.testing.assert_allclose(out, expect, atol=1e-6)


def test_resize_other_orders_use_scipy():
    pytest.importorskip("scipy.ndimage")
    im = np.random.rand(8, 8, 3)
    assert caffe.io.resize_image(im, (4, 5), interp_order=0).shape == (4, 5, 3)
    assert caffe.io.resize_image(im, (12, 5), interp_order=3).shape == (12, 5, 3)


def test_oversample_crops():
    im = np.arange(6 * 8 * 2, dtype=np.float32).reshape(6, 8, 2)
    crops = caffe.io.oversample([im, im + 1000], (4, 4))
    assert crops.shape == (20, 4, 4, 2)
    np.testing.assert_array_equal(crops[0], im[:4, :4])
    np.testing.assert_array_equal(crops[1], im[:4, 4:])
    np.testing.assert_array_equal(crops[2], im[2:, :4])
    np.testing.assert_array_equal(crops[3], im[2:, 4:])
    np.testing.assert_array_equal(crops[4], im[1:5, 2:6])
    np.testing.assert_array_equal(crops[5], im[:4, :4][:, ::-1])
    np.testing.assert_array_equal(crops[9], im[1:5, 2:6][:, ::-1])
    np.testing.assert_array_equal(crops[14], im[1:5, 2:6] + 1000)
