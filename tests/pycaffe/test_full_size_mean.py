"""A full-size mean image (ImageNet's 3 x 256 x 256 for a 227 x 227 net): Transformer.set_mean
resizes it as BVLC's pycaffe does, so caffe.Classifier and Caffe's own python/classify.py work."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe

from .test_classifier_detector import net_probs, save_tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_set_mean_resizes_like_skimage():
    """skimage.transform.resize is affine-equivariant, so a mean a*x + b resizes to a*y + b for
    the stored (x, y = resize(x)) pair written by scikit-image itself."""
    ref = np.load(os.path.join(HERE, "data", "skimage_resize_ref.npz"))
    x, y = ref["in5"].astype(np.float64), ref["out5"].astype(np.float64)   # 16x16x3 -> 11x11x3
    t = caffe.io.Transformer({"data": (1, 3, 11, 11)})
    t.set_mean("data", x.transpose(2, 0, 1) * 255.0 + 10.0)
    np.testing.assert_allclose(t.mean["data"], y.transpose(2, 0, 1) * 255.0 + 10.0,
                               rtol=1e-5, atol=1e-3)


def test_set_mean_two_d_constant_and_channels():
    t = caffe.io.Transformer({"data": (2, 1, 4, 4), "rgb": (2, 3, 5, 5)})
    im = np.random.RandomState(0).rand(8, 8) * 50
    t.set_mean("data", im)                                  # H' x W' for one channel
    expect = caffe.io.resize_image(((im - im.min()) / np.ptp(im))[:, :, None], (4, 4))
    np.testing.assert_allclose(t.mean["data"], expect.transpose(2, 0, 1) * np.ptp(im) + im.min(),
                               rtol=1e-5)
    t.set_mean("rgb", np.full((3, 9, 9), 7.5))              # constant: no 0/0, as pycaffe has
    assert t.mean["rgb"].shape == (3, 5, 5) and np.all(t.mean["rgb"] == 7.5)
    with pytest.raises(ValueError, match="channels"):
        t.set_mean("rgb", np.zeros((1, 9, 9)))


def full_mean(seed=7, size=10):
    rs = np.random.RandomState(seed)
    return (rs.rand(3, size, size) * 60 + 80).astype(np.float32)


def test_classifier_with_full_size_mean(tmp_path):
    model, weights, net = save_tiny_model(tmp_path, 3)       # input 3 x 6 x 6
    w, b = net.params["ip"][0].data.copy(), net.params["ip"][1].data.copy()
    mean = full_mean()
    clf = caffe.Classifier(model, weights, image_dims=(8, 8), mean=mean, raw_scale=255,
                           channel_swap=(2, 1, 0))
    m6 = caffe.io.resize_image(((mean - mean.min()) / np.ptp(mean)).transpose(1, 2, 0), (6, 6))
    m6 = m6.transpose(2, 0, 1) * np.ptp(mean) + mean.min()
    im = np.random.RandomState(1).rand(8, 8, 3).astype(np.float32)
    pred = clf.predict([im], oversample=False)
    chw = im[1:7, 1:7].transpose(2, 0, 1)[::-1] * 255.0 - m6
    np.testing.assert_allclose(pred[0], net_probs(w, b, chw[None])[0], rtol=1e-4, atol=1e-6)


def test_bvlc_classify_py_runs_unchanged(tmp_path):
    from PIL import Image
    model, weights, _ = save_tiny_model(tmp_path, 4)
    mean_file = tmp_path / "mean.npy"
    np.save(str(mean_file), full_mean(size=12))               # 3 x 12 x 12 for a 6 x 6 input
    image = tmp_path / "cat.jpg"
    Image.fromarray(np.random.RandomState(2).randint(0, 256, (9, 11, 3)).astype(np.uint8)).save(
        str(image))
    out = tmp_path / "pred.npy"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLOG_minloglevel="1", OPENBLAS_NUM_THREADS="1")
    script = os.path.join(HERE, "data", "bvlc", "classify.py")
    proc = subprocess.run([sys.executable, script, str(image), str(out), "--model_def", model,
                           "--pretrained_model", weights, "--mean_file", str(mean_file),
                           "--images_dim", "8,8"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Classifying 1 inputs." in proc.stdout and "Saving results into" in proc.stdout
    clf = caffe.Classifier(model, weights, image_dims=(8, 8), mean=np.load(str(mean_file)),
                           raw_scale=255, channel_swap=(2, 1, 0))
    expect = clf.predict([caffe.io.load_image(str(image))])
    np.testing.assert_allclose(np.load(str(out)), expect, rtol=1e-5, atol=1e-7)
