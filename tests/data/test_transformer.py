"""Tests for decaf/data/transformer.py (Caffe's DataTransformer) and the golden mean files."""
import os

import numpy as np
import pytest

import decaf
from decaf.data.datum import array_to_datum, encode_image
from decaf.data.transformer import DataTransformer, TransformError, load_mean_file
from decaf.proto import caffe_pb2
from decaf.proto.io import write_binary
from decaf.testing.golden import require_golden

FORMATS = os.path.join(require_golden(), "formats")
TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def tparam(**kw):
    p = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            p.mean_value.extend(v)
        else:
            setattr(p, k, v)
    return p


def images(n=3, c=2, h=5, w=6, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, c, h, w)).astype(np.uint8)


def write_mean(tmp_path, arr, legacy=True):
    proto = caffe_pb2.BlobProto()
    if legacy:
        proto.num, proto.channels, proto.height, proto.width = arr.shape
    else:
        proto.shape.dim.extend(arr.shape)
    proto.data.extend(arr.ravel().tolist())
    path = str(tmp_path / "mean.binaryproto")
    write_binary(path, proto)
    return path


# -- golden mean files --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mean_shape", "mean_legacy", "mean_rgb"])
def test_golden_mean_files(name):
    want = np.load(os.path.join(FORMATS, "expected.npz"))["mean." + name]
    got = load_mean_file(os.path.join(FORMATS, "mean", name + ".binaryproto"))
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    t = DataTransformer(tparam(mean_file=os.path.join(FORMATS, "mean", name + ".binaryproto")),
                        TEST)
    np.testing.assert_array_equal(t.mean, want[0])


# -- forward formula ------------------------------------------------------------------------------
def ref_transform(x, scale, mean=None, mean_values=None, offsets=None, crop=0, mirror=None):
    """Caffe's per-pixel loop, written out with plain indexing (float32 arithmetic)."""
    n, c, h, w = x.shape
    oh, ow = (crop, crop) if crop else (h, w)
    out = np.zeros((n, c, oh, ow), np.float32)
    for i in range(n):
        ho, wo = offsets[i] if offsets is not None else (0, 0)
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    v = np.float32(x[i, ch, ho + y, wo + xx])
                    if mean is not None:
                        v = v - mean[ch, ho + y, wo + xx]
                    elif mean_values is not None:
                        v = v - np.float32(mean_values[ch if len(mean_values) > 1 else 0])
                    dst = ow - 1 - xx if mirror is not None and mirror[i] else xx
                    out[i, ch, y, dst] = v * np.float32(scale)
    return out


def test_scale_only_exact():
    x = images()
    got = DataTransformer(tparam(scale=0.00390625), TRAIN).transform(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref_transform(x, 0.00390625))


def test_mean_file_then_scale_exact(tmp_path):
    x = images()
    mean = (np.random.RandomState(1).rand(2, 5, 6) * 200).astype(np.float32)
    path = write_mean(tmp_path, mean[None])
    got = DataTransformer(tparam(scale=0.37, mean_file=path), TEST).transform(x)
    np.testing.assert_array_equal(got, ref_transform(x, 0.37, mean=mean))


@pytest.mark.parametrize("values", [[10.5], [3.0, 200.25]])
def test_mean_values_exact(values):
    x = images()
    got = DataTransformer(tparam(scale=2.0, mean_value=values), TRAIN).transform(x)
    np.testing.assert_array_equal(got, ref_transform(x, 2.0, mean_values=values))


def test_center_crop_at_test_uses_uncropped_mean(tmp_path):
    x = images(h=7, w=6)
    mean = np.random.RandomState(2).rand(2, 7, 6).astype(np.float32) * 50
    path = write_mean(tmp_path, mean[None], legacy=False)
    got = DataTransformer(tparam(crop_size=4, mean_file=path), TEST).transform(x)
    # centre: ((7 - 4) // 2, (6 - 4) // 2) = (1, 1)
    np.testing.assert_array_equal(got, ref_transform(x, 1.0, mean=mean, offsets=[(1, 1)] * 3,
                                                     crop=4))


def find_window(out, img, crop):
    """(h_off, w_off, mirrored) of an output inside an image (None if absent)."""
    c, h, w = img.shape
    for ho in range(h - crop + 1):
        for wo in range(w - crop + 1):
            win = img[:, ho:ho + crop, wo:wo + crop].astype(np.float32)
            if np.array_equal(out, win):
                return ho, wo, False
            if np.array_equal(out, win[:, :, ::-1]):
                return ho, wo, True
    return None


def test_random_crop_and_mirror_at_train():
    x = np.random.RandomState(4).permutation(40 * 2 * 6 * 7).astype(np.float32).reshape(40, 2, 6, 7)
    got = DataTransformer(tparam(crop_size=3, mirror=True), TRAIN).transform(x)
    assert got.shape == (40, 2, 3, 3)
    found = [find_window(got[i], x[i], 3) for i in range(40)]
    assert all(f is not None for f in found)
    assert len({f[:2] for f in found}) > 5          # offsets vary per image
    assert {f[2] for f in found} == {True, False}   # both coins come up
    assert max(f[0] for f in found) <= 3 and max(f[1] for f in found) <= 4


def test_mirror_applies_at_test_too():
    x = np.random.RandomState(5).rand(30, 1, 2, 4).astype(np.float32)
    got = DataTransformer(tparam(mirror=True), TEST).transform(x)
    flipped = [np.array_equal(got[i], x[i, :, :, ::-1]) for i in range(30)]
    same = [np.array_equal(got[i], x[i]) for i in range(30)]
    assert all(a or b for a, b in zip(flipped, same))
    assert any(flipped) and any(same)


def test_mirror_with_mean_indexes_source_pixel(tmp_path):
    x = images(n=20, c=1, h=3, w=5)
    mean = np.arange(15, dtype=np.float32).reshape(1, 3, 5)
    path = write_mean(tmp_path, mean[None])
    got = DataTransformer(tparam(mirror=True, mean_file=path), TEST).transform(x)
    for i in range(20):
        plain = ref_transform(x[i:i + 1], 1.0, mean=mean)[0]
        flip = ref_transform(x[i:i + 1], 1.0, mean=mean, mirror=[True])[0]
        assert np.array_equal(got[i], plain) or np.array_equal(got[i], flip)


def test_random_draws_repeat_with_seed():
    x = images(n=10, h=8, w=8)
    outs = []
    for _ in range(2):
        decaf.set_random_seed(42)
        outs.append(DataTransformer(tparam(crop_size=5, mirror=True), TRAIN).transform(x))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_float64_output():
    x = images()
    got = DataTransformer(tparam(scale=0.1), TRAIN, dtype=np.float64).transform(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, x * 0.1)


def test_transform_into_out_buffer():
    x = images()
    out = np.empty((3, 2, 5, 6), np.float32)
    assert DataTransformer(tparam(), TEST).transform(x, out=out) is out
    np.testing.assert_array_equal(out, x)


# -- Datum input ----------------------------------------------------------------------------------
def test_datums_uint8_and_float():
    x = images(n=2)
    datums = [array_to_datum(x[0], 1), array_to_datum(x[1].astype(np.float32) + 0.5, 2)]
    t = DataTransformer(tparam(scale=0.5), TEST)
    assert t.infer_shape(datums[0]) == [1, 2, 5, 6]
    got = t.transform_datums(datums)
    np.testing.assert_array_equal(got[0], x[0] * np.float32(0.5))
    np.testing.assert_array_equal(got[1], (x[1] + np.float32(0.5)) * np.float32(0.5))


def test_crop_allows_different_sizes():
    a = images(n=1, c=1, h=5, w=5)[0]
    b = images(n=1, c=1, h=7, w=9, seed=1)[0]
    got = DataTransformer(tparam(crop_size=3), TEST).transform([a, b])
    np.testing.assert_array_equal(got[0], a[:, 1:4, 1:4])
    np.testing.assert_array_equal(got[1], b[:, 2:5, 3:6])


def encoded_datum(chw, ext="png"):
    d = caffe_pb2.Datum(data=encode_image(chw, ext), encoded=True, label=3)
    return d


def test_encoded_datums_native_color_gray():
    bgr = images(n=1, c=3, h=4, w=5)[0]
    d = encoded_datum(bgr)
    np.testing.assert_array_equal(DataTransformer(tparam(), TEST).transform_datums([d])[0], bgr)
    assert DataTransformer(tparam(force_gray=True), TEST).infer_shape(d) == [1, 1, 4, 5]
    gray = encoded_datum(bgr[:1])
    assert DataTransformer(tparam(force_color=True), TEST).infer_shape(gray) == [1, 3, 4, 5]
    assert DataTransformer(tparam(), TEST).infer_shape(gray) == [1, 1, 4, 5]
    with pytest.raises(TransformError, match="both force_color and force_gray"):
        DataTransformer(tparam(force_color=True, force_gray=True), TEST).transform_datums([d])


# -- Caffe's Transform(Blob*, Blob*): one draw per batch -------------------------------------------
def test_transform_batch_one_draw():
    x = np.random.RandomState(6).rand(6, 2, 6, 6).astype(np.float32)
    t = DataTransformer(tparam(crop_size=4, mirror=True, mean_value=[0.25], scale=3.0), TRAIN)
    got = t.transform_batch(x)
    assert got.shape == (6, 2, 4, 4)
    matches = [(ho, wo, flip) for ho in range(3) for wo in range(3) for flip in (False, True)
               if np.array_equal(got, ref_transform(x, 3.0, mean_values=[0.25],
                                                    offsets=[(ho, wo)] * 6, crop=4,
                                                    mirror=[flip] * 6))]
    assert len(matches) == 1  # the same window and flip for every image of the batch


# -- errors ---------------------------------------------------------------------------------------
def test_mean_file_and_mean_value_conflict(tmp_path):
    path = write_mean(tmp_path, np.zeros((1, 2, 5, 6), np.float32))
    with pytest.raises(TransformError, match="Cannot specify mean_file and mean_value"):
        DataTransformer(tparam(mean_file=path, mean_value=[1.0]), TEST)


def test_missing_mean_file(tmp_path):
    with pytest.raises(TransformError, match="cannot load mean_file.*no such file"):
        DataTransformer(tparam(mean_file=str(tmp_path / "nope.binaryproto")), TEST)


def test_mean_file_shape_mismatch(tmp_path):
    path = write_mean(tmp_path, np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(TransformError, match="2x4x4.*2x5x6"):
        DataTransformer(tparam(mean_file=path), TEST).transform(images())


def test_wrong_number_of_mean_values():
    with pytest.raises(TransformError, match="Specify either 1 mean_value or as many as "
                                             "channels: 2"):
        DataTransformer(tparam(mean_value=[1, 2, 3]), TEST).transform(images())


def test_crop_larger_than_image():
    with pytest.raises(TransformError, match="crop_size 9 is larger than the 5x6 image"):
        DataTransformer(tparam(crop_size=9), TEST).transform(images())


def test_different_sizes_without_crop():
    a, b = images(n=1)[0], images(n=1, h=4)[0]
    with pytest.raises(TransformError, match="different sizes"):
        DataTransformer(tparam(), TEST).transform([a, b])
