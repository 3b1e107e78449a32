"""Shared checks of the ONNX export: run the exported model in onnxruntime and compare it with
decaf's own forward (relative error = max |ort - decaf| / max |decaf| per output blob)."""
import numpy as np

import decaf
import decaf.onnx

REL = 1e-5


def session(model):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def run_ort(model, feeds):
    """{output name: array} of the model on ``feeds``."""
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def rel_err(got, want):
    want = np.asarray(want, np.float64)
    scale = float(np.abs(want).max()) if want.size else 0.0
    diff = float(np.abs(np.asarray(got, np.float64) - want).max()) if want.size else 0.0
    return diff / scale if scale else diff


def assert_close(name, got, want, rel=REL):
    assert got.shape == want.shape, "%s: onnxruntime shape %s, decaf %s" % (name, got.shape,
                                                                          want.shape)
    err = rel_err(got, want)
    assert err <= rel, "%s: relative error %.3g > %g" % (name, err, rel)
    return err


def net_from_text(text, phase=decaf.TEST):
    from decaf.proto import caffe_pb2
    from decaf.proto.io import parse_text
    param = caffe_pb2.NetParameter()
    parse_text(text, param, "<test net>")
    return decaf.Net(param, phase)


def make_net(layers, inputs, phase=decaf.TEST):
    """A deploy net: one Input layer per (name, shape) of ``inputs``, then ``layers`` (text)."""
    text = "".join('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (n, n, " ".join("dim: %d" % d for d in s)) for n, s in inputs.items())
    return net_from_text(text + layers, phase)


def randomize(net, rng):
    """Random parameters: N(0, 1) blobs; BatchNorm variances positive, scale factor 1.5."""
    for layer in net.layers:
        for b in layer.blobs:
            b.data[...] = rng.randn(*b.shape)
        if layer.type == "BatchNorm":
            layer.blobs[1].data[...] = np.abs(layer.blobs[1].data) + 0.5
            layer.blobs[2].data[...] = 1.5


def check_net(net, feeds=None, rng=None, rel=REL, **export_kw):
    """Export ``net``, run both on ``feeds`` (random N(0, 1) inputs by default) and compare
    every output. Returns ({output: relative error}, model, ort outputs)."""
    rng = rng or np.random.RandomState(0)
    if feeds is None:
        feeds = {n: rng.randn(*net.blobs[n].shape).astype(np.float32) for n in net.inputs}
    model = decaf.onnx.export(net, **export_kw)
    got = run_ort(model, feeds)
    net.forward(**feeds)
    errs = {}
    for name, arr in got.items():
        errs[name] = assert_close(name, arr, net.blobs[name].data, rel)
    return errs, model, got


def assert_same_detections(got, want, rel=REL):
    """The same detection rows: equal image ids and labels, scores and boxes within ``rel`` of
    the largest magnitude; rows whose scores agree within that tolerance may swap places."""
    assert got.shape == want.shape, "detections: %s rows from onnxruntime, %s from decaf" % (
        got.shape, want.shape)
    g, w = got.reshape(-1, 7).astype(np.float64), want.reshape(-1, 7).astype(np.float64)
    tol = rel * max(float(np.abs(w).max()), 1.0)
    used = np.zeros(len(w), bool)
    worst = 0.0
    for i, row in enumerate(g):
        ok = (~used) & (w[:, 0] == row[0]) & (w[:, 1] == row[1]) & \
            (np.abs(w[:, 2:] - row[2:]).max(axis=1) <= tol)
        near = np.flatnonzero(ok & (np.abs(np.arange(len(w)) - i) <= 8))
        assert len(near), "detection row %d %s has no match in decaf's output" % (i, row)
        j = near[np.argmin(np.abs(near - i))]
        used[j] = True
        worst = max(worst, float(np.abs(w[j] - row).max()))
    return worst / max(float(np.abs(w).max()), 1.0)
