"""Replay the golden reference cases written by BVLC Caffe (``tests/golden``).

A layer case is replayed as the golden README says: build the layer under test from
``net.prototxt``, load ``weights.caffemodel``, write ``bottom.*``, forward, compare ``top.*``;
then write ``top_diff.*``, zero the param diffs, backward with the case's propagate_down and
compare ``bottom_diff.*``, ``param_diff.*`` and ``param.*``.
"""
import contextlib
import json
import os

import numpy as np

from ..blob import Blob
from ..layer import create_layer
from ..proto import caffe_pb2
from .data import GOLDEN_DIR, require_golden  # noqa: F401


def layer_cases(types=None):
    """Names of the golden layer cases, optionally only those of the given layer types."""
    root = os.path.join(require_golden(), "layers")
    names = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "case.json")))
    if types is None:
        return names
    return [n for n in names if load_case(n)["layer_type"] in types]


def case_dir(name):
    return os.path.join(require_golden(), "layers", name)


def load_case(name):
    with open(os.path.join(case_dir(name), "case.json")) as f:
        return json.load(f)


@contextlib.contextmanager
def chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _read_net(path):
    from google.protobuf import text_format
    with open(path) as f:
        return text_format.Parse(f.read(), caffe_pb2.NetParameter())


def run_layer_case(name):
    """Replay one case. Returns a list of (key, got, want) and the case dict."""
    d = case_dir(name)
    case = load_case(name)
    data = np.load(os.path.join(d, "data.npz"), allow_pickle=False)
    phase = caffe_pb2.TRAIN if case["phase"] == "TRAIN" else caffe_pb2.TEST
    results = []
    with chdir(d):
        net = _read_net("net.prototxt")
        lp = next(l for l in net.layer if l.name == case["layer_name"])
        lp.phase = phase
        bottom = []
        for b in case["bottoms"]:
            blob = Blob(data["bottom." + b].shape)
            blob.data[...] = data["bottom." + b]
            bottom.append(blob)
        top = [Blob() for _ in case["tops"]]
        layer = create_layer(lp, phase)
        layer.SetUp(bottom, top)
        if case.get("has_weights"):
            with open("weights.caffemodel", "rb") as f:
                wnet = caffe_pb2.NetParameter.FromString(f.read())
            wl = next(l for l in wnet.layer if l.name == case["layer_name"])
            assert len(wl.blobs) == len(layer.blobs), "param blob count differs"
            for blob, bp in zip(layer.blobs, wl.blobs):
                blob.from_proto(bp, reshape=False)
        layer.Forward(bottom, top)
        for t, blob in zip(case["tops"], top):
            results.append(("top." + t, blob.data.copy(), data["top." + t]))
        for i, blob in enumerate(layer.blobs):
            key = "param_after_forward.%s.%d" % (case["layer_name"], i)
            if key in data:
                results.append((key, blob.data.copy(), data[key]))
        if case.get("backward"):
            for p in layer.blobs:
                p.diff[...] = 0
            for t, blob in zip(case["tops"], top):
                blob.diff[...] = data["top_diff." + t]
            pd = [bool(case["propagate_down"].get(b, False)) for b in case["bottoms"]]
            layer.Backward(top, pd, bottom)
            for b, blob, flag in zip(case["bottoms"], bottom, pd):
                if flag and ("bottom_diff." + b) in data:
                    results.append(("bottom_diff." + b, blob.diff.copy(), data["bottom_diff." + b]))
            for i, blob in enumerate(layer.blobs):
                for prefix, arr in (("param_diff", blob.diff), ("param", blob.data)):
                    key = "%s.%s.%d" % (prefix, case["layer_name"], i)
                    if key in data:
                        results.append((key, arr.copy(), data[key]))
    return results, case


def assert_layer_case(name):
    """Replay and assert every compared array is within the case's tolerances."""
    results, case = run_layer_case(name)
    atol, rtol = case["atol"], case["rtol"]
    for key, got, want in results:
        assert got.shape == want.shape, "%s: %s shape %s, Caffe %s" % (name, key, got.shape, want.shape)
        ok = np.isclose(got, want, atol=atol, rtol=rtol)
        if not ok.all():
            j = int(np.flatnonzero(~ok.reshape(-1))[0])
            raise AssertionError("%s: %s differs from Caffe at %d of %d elements (first at flat %d: "
                                 "got %r, Caffe %r; atol %g rtol %g)"
                                 % (name, key, int((~ok).sum()), ok.size, j, got.reshape(-1)[j],
                                    want.reshape(-1)[j], atol, rtol))
    return results
