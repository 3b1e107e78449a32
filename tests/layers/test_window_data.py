"""Tests for decaf/layers/window_data.py: Caffe's WindowData (R-CNN window sampler).

Exact crops are checked by pinning the random draws (WindowSource.draw) and loading batches
synchronously (prefetch_count 0); geometry cases are worked out by hand below."""
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

import decaf
import decaf.layers.window_data  # noqa: F401  (registers WindowData before decaf.layers does)
from decaf.blob import Blob
from decaf.data.datum import encode_image, resize_bilinear
from decaf.errors import DecafError, LayerSetupError
from decaf.io import array_to_blobproto
from decaf.layer import create_layer
from decaf.layers.window_data import (WindowDataLayer, WindowSource, crop_geometry,
                                      parse_window_file)
from decaf.proto import caffe_pb2
from decaf.proto.io import write_binary
from decaf.testing.gradient_check import make_layer_param

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
SIZES = [(20, 24), (12, 16), (10, 10)]  # H x W of im0, im1, im2

# fg (fg_threshold 0.5): [im0 (2,3,5,10) label 1, im0 (4,4,9,9) label 2, im1 (0,0,5,3) label 7,
# im2 (0,0,2,2) label 9]; bg (bg_threshold 0.3): [im0 (1,1,8,8), im1 (10,6,15,11), im2 (3,3,9,9)]
WINDOWS = """# 0
im0.png
3
20
24
5
1 0.9 2 3 5 10
2 0.5 4 4 9 9
3 0.4 0 0 3 3
4 0.3 0 0 3 3
5 0.1 1 1 8 8
# 1
im1.png
3
12
16
2
7 0.8 0 0 5 3
6 0.2 10 6 15 11
# 2 im2.png 3 10 10
2
9 1.0 0 0 2 2
8 0.0 3 3 9 9
"""


@pytest.fixture
def wdir(tmp_path):
    rs = np.random.RandomState(5)
    imgs = []
    for i, (h, w) in enumerate(SIZES):
        img = rs.randint(0, 256, size=(3, h, w)).astype(np.uint8)  # BGR, C x H x W
        (tmp_path / ("im%d.png" % i)).write_bytes(encode_image(img, "png"))
        imgs.append(img)
    (tmp_path / "windows.txt").write_text(WINDOWS)
    return tmp_path, imgs


@pytest.fixture
def pick(monkeypatch):
    """Every draw returns choice['index'] (mod the pool size) and choice['flip'] (when mirror
    is on); batches load synchronously so the choice can change between forwards."""
    choice = {"index": 0, "flip": False}
    monkeypatch.setattr(WindowDataLayer, "prefetch_count", 0)
    monkeypatch.setattr(WindowSource, "draw",
                        lambda self, n, mirror: (choice["index"] % n, choice["flip"] and mirror))
    return choice


def make(d, param="", transform="crop_size: 8", batch=1, fg_fraction=1.0, phase=TRAIN, ntop=2,
         source="windows.txt", dtype=np.float32):
    lp = make_layer_param(
        "name: 'data' type: 'WindowData' window_data_param { source: '%s' root_folder: '%s/' "
        "batch_size: %d fg_fraction: %r bg_threshold: 0.3 %s } transform_param { %s }"
        % (d / source, d, batch, fg_fraction, param, transform))
    lp.top.extend(["data", "label", "extra"][:ntop])
    layer = create_layer(lp, phase)
    top = [Blob(dtype=dtype) for _ in range(ntop)]
    layer.SetUp([], top)
    return layer, top


def forward(layer, top):
    layer.Forward([], top)
    return top[0].data.copy(), top[1].data.copy()


def warp(img, box, size):
    """Bilinear warp (OpenCV INTER_LINEAR geometry) of img[:, y1:y2+1, x1:x2+1] to size (h, w)."""
    x1, y1, x2, y2 = box
    hwc = img[:, y1:y2 + 1, x1:x2 + 1].transpose(1, 2, 0)
    return resize_bilinear(hwc, *size).transpose(2, 0, 1).astype(np.float32)


def c_round(v):
    return int(Decimal(float(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def reference(img, box, crop, pad, square, flip):
    """Caffe's window crop, written out independently (float32 like Caffe's Dtype)."""
    f = np.float32
    x1, y1, x2, y2 = box
    h, w = img.shape[1:]
    out = np.zeros((3, crop, crop), np.float32)
    if not (pad or square):
        out[...] = warp(img, box, (crop, crop))
        return out[:, :, ::-1] if flip else out
    cs = f(crop) / f(crop - 2 * pad)
    hw, hh = f((x2 - x1 + 1) / 2.0), f((y2 - y1 + 1) / 2.0)
    cx, cy = f(x1) + hw, f(y1) + hh
    if square:
        hw = hh = max(hw, hh)
    bx1, bx2 = c_round(cx - hw * cs), c_round(cx + hw * cs)
    by1, by2 = c_round(cy - hh * cs), c_round(cy + hh * cs)
    sx, sy = f(crop) / f(bx2 - bx1 + 1), f(crop) / f(by2 - by1 + 1)
    left, top_, right = max(0, -bx1), max(0, -by1), max(0, bx2 - (w - 1))
    cx1, cy1, cx2, cy2 = max(bx1, 0), max(by1, 0), min(bx2, w - 1), min(by2, h - 1)
    ph, pw = c_round(f(top_) * sy), c_round(f(right if flip else left) * sx)
    oh = min(c_round(f(cy2 - cy1 + 1) * sy), crop - ph)
    ow = min(c_round(f(cx2 - cx1 + 1) * sx), crop - pw)
    patch = warp(img, (cx1, cy1, cx2, cy2), (oh, ow))
    out[:, ph:ph + oh, pw:pw + ow] = patch[:, :, ::-1] if flip else patch
    return out


# -- parsing ------------------------------------------------------------------------------------
def test_parse_splits_by_thresholds_in_float32(wdir):
    d, _ = wdir
    images, fg, bg = parse_window_file(str(d / "windows.txt"), 0.5, 0.3, str(d) + "/")
    assert images == [(str(d / "im0.png"), 3, 20, 24), (str(d / "im1.png"), 3, 12, 16),
                      (str(d / "im2.png"), 3, 10, 10)]
    np.testing.assert_array_equal(fg.rows, [[0, 1, 2, 3, 5, 10], [0, 2, 4, 4, 9, 9],
                                            [1, 7, 0, 0, 5, 3], [2, 9, 0, 0, 2, 2]])
    # bg labels are forced to 0; overlap 0.4 (between) and 0.3 (not < float32 0.3) are dropped
    np.testing.assert_array_equal(bg.rows, [[0, 0, 1, 1, 8, 8], [1, 0, 10, 6, 15, 11],
                                            [2, 0, 3, 3, 9, 9]])
    _, fg2, bg2 = parse_window_file(str(d / "windows.txt"), 0.95, 0.45)
    assert fg2.rows[:, 1].tolist() == [9] and bg2.rows[:, 2].tolist() == [0, 0, 1, 10, 3]


# -- geometry, worked by hand -------------------------------------------------------------------
def test_crop_geometry_by_hand():
    # warp, no padding: the box itself, warped to crop x crop
    assert crop_geometry((2, 3, 5, 10), 20, 24, 8, 0, False, False) == ((2, 3, 5, 10), (8, 8),
                                                                         (0, 0))
    # square: half sizes (2, 4) -> (4, 4) about centre (4, 7): box x 0..8, y 3..11, 9/9 * 8
    assert crop_geometry((2, 3, 5, 10), 20, 24, 8, 0, True, False) == ((0, 3, 8, 11), (8, 8),
                                                                        (0, 0))
    # context_pad 1 (scale 8/6) at the top-left border: box -1..7 x -1..5 (9 x 7), clipped to
    # 0..7 x 0..5, warped to round(8 * 8/9) x round(6 * 8/7) = 7 x 7 at offset (1, 1)
    assert crop_geometry((0, 0, 5, 3), 12, 16, 8, 1, False, False) == ((0, 0, 7, 5), (7, 7),
                                                                        (1, 1))
    # mirrored: the horizontal offset is the (empty) right cut
    assert crop_geometry((0, 0, 5, 3), 12, 16, 8, 1, False, True) == ((0, 0, 7, 5), (7, 7),
                                                                       (1, 0))
    # context_pad 2 (scale 2): centre 1.5 +- 3 -> round(-1.5) = -2, round(4.5) = 5 (half away
    # from zero; banker's rounding would give 4)
    assert crop_geometry((0, 0, 2, 2), 10, 10, 8, 2, False, False) == ((0, 0, 5, 5), (6, 6),
                                                                        (2, 2))


# -- exact crops through the layer --------------------------------------------------------------
def test_warp_identity_is_the_raw_window(wdir, pick):
    d, imgs = wdir
    layer, top = make(d, transform="crop_size: 6")
    assert top[0].shape == (1, 3, 6, 6) and top[1].shape == (1,)
    pick["index"] = 1                       # im0 window 4..9 x 4..9: 6 x 6, no resampling
    data, label = forward(layer, top)
    np.testing.assert_array_equal(data[0], imgs[0][:, 4:10, 4:10])
    assert label.tolist() == [2]
    layer.close()


@pytest.mark.parametrize("param,expect", [
    ("", lambda img: warp(img, (2, 3, 5, 10), (8, 8))),
    ("crop_mode: 'square'", lambda img: warp(img, (0, 3, 8, 11), (8, 8))),
])
def test_warp_and_square(wdir, pick, param, expect):
    d, imgs = wdir
    layer, top = make(d, param)
    data, label = forward(layer, top)
    np.testing.assert_array_equal(data[0], expect(imgs[0]))
    assert label.tolist() == [1]
    layer.close()


@pytest.mark.parametrize("flip", [False, True])
def test_context_pad_at_border_and_mirror(wdir, pick, flip):
    d, imgs = wdir
    layer, top = make(d, "context_pad: 1", "crop_size: 8 mirror: true")
    pick.update(index=2, flip=flip)         # im1 window 0..5 x 0..3 at the top-left corner
    data, label = forward(layer, top)
    patch = warp(imgs[1], (0, 0, 7, 5), (7, 7))
    expect = np.zeros((3, 8, 8), np.float32)
    if flip:
        expect[:, 1:, :7] = patch[:, :, ::-1]
    else:
        expect[:, 1:, 1:] = patch
    np.testing.assert_array_equal(data[0], expect)
    assert label.tolist() == [7]
    layer.close()


@pytest.mark.parametrize("param,pad,square", [("", 0, False), ("crop_mode: 'square'", 0, True),
                                              ("context_pad: 2", 2, False),
                                              ("context_pad: 3 crop_mode: 'square'", 3, True)])
def test_every_window_matches_reference(wdir, pick, param, pad, square):
    d, imgs = wdir
    _, fg, bg = parse_window_file(str(d / "windows.txt"), 0.5, 0.3)
    for fraction, pool in ((1.0, fg), (0.0, bg)):
        layer, top = make(d, param, "crop_size: 9 mirror: true", fg_fraction=fraction)
        for k, row in enumerate(pool.rows):
            for flip in (False, True):
                pick.update(index=k, flip=flip)
                data, label = forward(layer, top)
                expect = reference(imgs[row[0]], row[2:], 9, pad, square, flip)
                np.testing.assert_array_equal(data[0], expect, err_msg="window %s" % row)
                assert label[0] == row[1]
        layer.close()


def test_mean_file_centre_by_width_and_scale(wdir, pick):
    d, imgs = wdir
    mean = np.random.RandomState(1).uniform(0, 255, size=(1, 3, 10, 12)).astype(np.float32)
    write_binary(str(d / "mean.binaryproto"), array_to_blobproto(mean))
    # transform_param.scale is ignored: Caffe scales by window_data_param.scale
    layer, top = make(d, "scale: 0.5 context_pad: 1",
                      "crop_size: 8 scale: 100 mean_file: '%s'" % (d / "mean.binaryproto"))
    pick["index"] = 2
    data, _ = forward(layer, top)
    # offset (12 - 8) / 2 = 2 for rows too (a centred row offset would be 1); the slot's
    # padded part stays 0, the window at (1, 1) meets mean rows/columns 3..9
    expect = np.zeros((3, 8, 8), np.float32)
    expect[:, 1:, 1:] = (warp(imgs[1], (0, 0, 7, 5), (7, 7)) - mean[0, :, 3:10, 3:10]) \
        * np.float32(0.5)
    np.testing.assert_array_equal(data[0], expect)
    layer.close()
    small = np.zeros((1, 3, 6, 6), np.float32)
    write_binary(str(d / "small.binaryproto"), array_to_blobproto(small))
    with pytest.raises(LayerSetupError, match="mean_file .*small.binaryproto is 3x6x6"):
        make(d, transform="crop_size: 8 mean_file: '%s'" % (d / "small.binaryproto"))


@pytest.mark.parametrize("values,per_channel", [("mean_value: 10 mean_value: 20 mean_value: 30",
                                                 [10, 20, 30]), ("mean_value: 7", [7, 7, 7])])
def test_mean_value_and_scale(wdir, pick, values, per_channel):
    d, imgs = wdir
    layer, top = make(d, "scale: 0.25", "crop_size: 6 " + values)
    pick["index"] = 1
    data, _ = forward(layer, top)
    mv = np.asarray(per_channel, np.float32)[:, None, None]
    expect = (imgs[0][:, 4:10, 4:10].astype(np.float32) - mv) * np.float32(0.25)
    np.testing.assert_array_equal(data[0], expect)
    layer.close()


def test_float64_top(wdir, pick):
    d, imgs = wdir
    layer, top = make(d, "context_pad: 1", dtype=np.float64)
    pick["index"] = 2
    data, _ = forward(layer, top)
    assert data.dtype == np.float64
    np.testing.assert_array_equal(data[0, :, 1:, 1:], warp(imgs[1], (0, 0, 7, 5), (7, 7)))
    layer.close()


# -- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,fraction,nfg", [(10, 0.25, 2), (10, 0.7, 7), (4, 0.0, 0),
                                                (3, 1.0, 3)])
def test_background_first_then_foreground(wdir, batch, fraction, nfg):
    d, _ = wdir
    decaf.set_random_seed(4)
    layer, top = make(d, batch=batch, fg_fraction=fraction)
    for _ in range(3):
        data, label = forward(layer, top)
        assert data.shape == (batch, 3, 8, 8) and label.shape == (batch,)
        assert (label[:batch - nfg] == 0).all()       # float32(10) * float32(0.7) = 7
        assert set(label[batch - nfg:].tolist()) <= {1, 2, 7, 9} and (label[batch - nfg:] > 0).all()
    layer.close()


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_random_sampling_and_mirror_in_both_phases(wdir, phase):
    d, imgs = wdir
    decaf.set_random_seed(3)
    plain = reference(imgs[2], (0, 0, 2, 2), 6, 0, False, False)
    for mirror in (True, False):
        layer, top = make(d, "fg_threshold: 0.85", "crop_size: 6 mirror: %s" % str(mirror).lower(),
                          batch=16, phase=phase)
        data, label = forward(layer, top)
        assert set(label.tolist()) == {1, 9}       # both foreground windows get drawn
        flips = {bool((x == plain[:, :, ::-1]).all()) for x in data[label == 9]}
        assert all((x == plain).all() or (x == plain[:, :, ::-1]).all() for x in data[label == 9])
        assert flips == ({False, True} if mirror else {False})
        layer.close()


def test_cache_images_keeps_decoded_images(wdir, pick):
    d, imgs = wdir
    layer, top = make(d, "cache_images: true context_pad: 1")
    for i in range(3):
        (d / ("im%d.png" % i)).unlink()      # cached at setup: the files are no longer needed
    pick["index"] = 2
    data, label = forward(layer, top)
    np.testing.assert_array_equal(data[0, :, 1:, 1:], warp(imgs[1], (0, 0, 7, 5), (7, 7)))
    layer.close()
    with pytest.raises(LayerSetupError, match="Could not open or find file .*im0.png"):
        make(d, "cache_images: true")


def test_legacy_window_data_param_fields(wdir, pick):
    d, imgs = wdir
    layer, top = make(d, "crop_size: 6", transform="")
    pick["index"] = 1
    data, _ = forward(layer, top)
    np.testing.assert_array_equal(data[0], imgs[0][:, 4:10, 4:10])
    layer.close()


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,line,match", [
    (WINDOWS.replace("1 0.9 2 3 5 10", "1 0.9 2 abc 5 10"), 7,
     "window 0 of image 0: expected y1 .integer., got 'abc'"),
    (WINDOWS.replace("6 0.2", "6 x.2"), 19, "window 1 of image 1: expected an overlap"),
    (WINDOWS.replace("# 1\n", "1\n"), 12, "expected '#' to start an image block, got '1'"),
    (WINDOWS.replace("# 2", "# 3"), 20, "image index 3 should be 2"),
    (WINDOWS.rsplit("\n", 2)[0], 22, "the file ends inside the windows of image 2"),
    (WINDOWS.replace("7 0.8", "0 0.8"), 18, "a foreground window .* class index > 0, got 0"),
    (WINDOWS + "# 3\nim0.png 3 20\n", 25, "the file ends where the image width"),
])
def test_malformed_window_file_names_file_and_line(wdir, text, line, match):
    d, _ = wdir
    (d / "bad.txt").write_text(text)
    with pytest.raises(LayerSetupError, match=r"bad.txt:%d: %s" % (line, match)):
        make(d, source="bad.txt")


def test_setup_errors(wdir):
    d, _ = wdir
    with pytest.raises(LayerSetupError, match="Failed to open window file .*nope.txt"):
        make(d, source="nope.txt")
    (d / "empty.txt").write_text(" \n")
    with pytest.raises(LayerSetupError, match="Window file .*empty.txt is empty"):
        make(d, source="empty.txt")
    (d / "im1.png").unlink()
    with pytest.raises(LayerSetupError, match="Could not open or find file .*im1.png .image 1"):
        make(d)
    with pytest.raises(LayerSetupError, match="crop_size must be positive"):
        make(d, transform="mirror: true")
    for ntop in (1, 3):
        with pytest.raises(LayerSetupError, match="exactly 2 top"):
            make(d, ntop=ntop)
    with pytest.raises(LayerSetupError, match="crop_mode must be 'warp' or 'square'"):
        make(d, "crop_mode: 'wrap'")
    with pytest.raises(LayerSetupError, match="context_pad 4 leaves nothing"):
        make(d, "context_pad: 4")
    with pytest.raises(LayerSetupError, match="no foreground windows but each batch needs 2"):
        make(d, "fg_threshold: 2", batch=2)
    with pytest.raises(LayerSetupError, match="batch_size must be positive"):
        make(d, batch=0)
    with pytest.raises(LayerSetupError, match="1 mean_value or as many as channels"):
        make(d, transform="crop_size: 8 mean_value: 1 mean_value: 2")


def test_window_outside_image_fails_at_forward_with_line(wdir, pick):
    d, _ = wdir
    (d / "out.txt").write_text(WINDOWS.replace("7 0.8 0 0 5 3", "7 0.8 12 0 17 3"))
    layer, top = make(d, source="out.txt")
    pick["index"] = 2                      # x2 = 17 in a 16-wide image, no padding to clip it
    with pytest.raises(DecafError, match=r"window 12 0 17 3 of image 1 .*16x12.*out.txt:18 "
                                         "does not fit"):
        layer.Forward([], top)
    layer.close()
    layer, top = make(d, "context_pad: 1", source="out.txt")  # padding clips it: fine
    layer.Forward([], top)
    layer.close()


def test_image_missing_at_load_time_is_reported(wdir, pick):
    d, _ = wdir
    layer, top = make(d)                   # checked at setup, then removed: read per batch
    (d / "im0.png").unlink()
    with pytest.raises(DecafError, match=r"image 0 of window file .*windows.txt: Could not open "
                                         "or find file .*im0.png"):
        layer.Forward([], top)
    layer.close()


def test_image_block_without_windows(wdir):
    d, _ = wdir
    (d / "zero.txt").write_text("# 0\nim0.png 3 20 24 0\n" + WINDOWS.replace("# 0", "# 1", 1)
                                .replace("# 1\nim1", "# 2\nim1").replace("# 2 im2", "# 3 im2"))
    images, fg, bg = parse_window_file(str(d / "zero.txt"), 0.5, 0.3)
    assert len(images) == 4 and fg.rows[:, 0].tolist() == [1, 1, 2, 3]
    assert bg.rows[:, 0].tolist() == [1, 2, 3]
