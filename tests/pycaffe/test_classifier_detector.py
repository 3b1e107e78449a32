"""caffe.Classifier and caffe.Detector on a small deploy net with known weights."""
import numpy as np
import pytest

import caffe

DEPLOY = """name: 'tiny'
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
  inner_product_param { num_output: 5 } }
layer { name: 'prob' type: 'Softmax' bottom: 'ip' top: 'prob' }
"""

MEAN = np.array([0.3, 0.2, 0.1], dtype=np.float32) * 255


def save_tiny_model(tmp_path, seed):
    """DEPLOY with random weights saved beside it: (prototxt path, caffemodel path, net)."""
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    net = caffe.Net(str(model), caffe.TEST)
    rs = np.random.RandomState(seed)
    net.params["ip"][0].data[...] = rs.randn(5, 108) * 0.01
    net.params["ip"][1].data[...] = rs.randn(5)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    return str(model), str(weights), net


@pytest.fixture
def files(tmp_path):
    model, weights, net = save_tiny_model(tmp_path, 3)
    return model, weights, net.params["ip"][0].data.copy(), net.params["ip"][1].data.copy()


def net_probs(w, b, chw_batch):
    z = chw_batch.reshape(len(chw_batch), -1) @ w.T + b
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def prep(hwc):
    """transpose to CHW, RGB -> BGR, x255, minus the per-channel mean."""
    return hwc.transpose(2, 0, 1)[::-1] * 255.0 - MEAN[:, None, None]


def make_classifier(files, **kw):
    model, weights, _, _ = files
    return caffe.Classifier(model, weights, image_dims=(8, 8), mean=MEAN, raw_scale=255,
                            channel_swap=(2, 1, 0), **kw)


def test_classifier_setup(files):
    clf = make_classifier(files)
    assert isinstance(clf, caffe.Net) and clf.inputs == ["data"]
    assert list(clf.crop_dims) == [6, 6] and tuple(clf.image_dims) == (8, 8)
    assert clf.transformer.transpose["data"] == (2, 0, 1)
    assert clf.transformer.raw_scale["data"] == 255


def test_classifier_oversample_averages_ten_crops(files):
    _, _, w, b = files
    clf = make_classifier(files)
    rs = np.random.RandomState(0)
    images = [rs.rand(8, 8, 3).astype(np.float32), rs.rand(12, 9, 3).astype(np.float32)]
    pred = clf.predict(images)
    assert pred.shape == (2, 5)
    for i, im in enumerate(images):
        im = caffe.io.resize_image(im, (8, 8))
        boxes = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]
        crops = [im[y:y + 6, x:x + 6] for y, x in boxes]
        crops += [c[:, ::-1] for c in crops]
        expect = net_probs(w, b, np.array([prep(c) for c in crops])).mean(0)
        np.testing.assert_allclose(pred[i], expect, rtol=1e-4, atol=1e-6)


def test_classifier_center_crop(files):
    _, _, w, b = files
    clf = make_classifier(files)
    im = np.random.RandomState(1).rand(8, 8, 3).astype(np.float32)
    pred = clf.predict([im] * 5, oversample=False)          # 5 inputs, batch of 4: padded
    expect = net_probs(w, b, prep(im[1:7, 1:7])[None])[0]
    assert pred.shape == (5, 5)
    for p in pred:
        np.testing.assert_allclose(p, expect, rtol=1e-4, atol=1e-6)


def save_png(path, arr):
    from PIL import Image
    Image.fromarray(arr).save(path)
    return str(path)


def test_detector_windows(files, tmp_path):
    model, weights, w, b = files
    rgb = np.random.RandomState(2).randint(0, 256, (20, 30, 3)).astype(np.uint8)
    path = save_png(tmp_path / "img.png", rgb)
    det = caffe.Detector(model, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    windows = np.array([[0, 0, 6, 6], [2, 5, 14, 29]])
    out = det.detect_windows([(path, windows)])
    assert [d["filename"] for d in out] == [path, path]
    img = rgb / 255.0
    for d, (y0, x0, y1, x1) in zip(out, windows):
        crop = caffe.io.resize_image(img[y0:y1, x0:x1].astype(np.float32), (6, 6))
        expect = net_probs(w, b, prep(crop)[None])[0]
        np.testing.assert_array_equal(d["window"], [y0, x0, y1, x1])
        np.testing.assert_allclose(d["prediction"], expect, rtol=1e-4, atol=1e-6)


def test_detector_context_pad(files, tmp_path):
    model, weights, _, _ = files
    img = np.full((20, 20, 3), 255, np.uint8)
    path = save_png(tmp_path / "white.png", img)
    det = caffe.Detector(model, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0),
                         context_pad=1)
    assert list(det.crop_dims) == [6, 6, 3]
    np.testing.assert_allclose(det.crop_mean.reshape(-1), MEAN[::-1] / 255)   # RGB, [0, 1]
    crop = det.crop(np.ones((20, 20, 3), np.float32), np.array([0, 0, 10, 10]))
    assert crop.shape == (6, 6, 3)
    # the context above and left of the image is filled with the mean
    np.testing.assert_allclose(crop[0, 0], MEAN[::-1] / 255, rtol=1e-6)
    np.testing.assert_allclose(crop[-1, -1], 1.0, rtol=1e-6)
    assert len(det.detect_windows([(path, np.array([[0, 0, 10, 10]]))])) == 1


def test_detector_selective_search_needs_module(files):
    model, weights, _, _ = files
    det = caffe.Detector(model, weights)
    with pytest.raises(ImportError, match="selective_search"):
        det.detect_selective_search(["x.jpg"])
