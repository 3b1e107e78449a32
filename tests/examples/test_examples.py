"""The examples in their --quick form, each in a temporary directory, with the qualitative result
each one exists to show: center loss tightens the 2-D MNIST features (examples/center_loss), the
tiny YOLOv3 finds the rectangles (examples/yolo), the LSTM beats "predict the last value"
(examples/lstm). Each runs as a subprocess on one BLAS thread (about 1.5, 1 and 0.2 minutes on
one core)."""
import json
import os
import subprocess
import sys

import pytest
from google.protobuf import text_format

from decaf.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(script, out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--quick",
                           "--out", str(out), *extra], cwd=str(out), env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f), proc.stdout


def read_net(path):
    with open(path) as f:
        return text_format.Parse(f.read(), caffe_pb2.NetParameter())


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_center_loss_tightens_features(tmp_path):
    results, stdout = run_example("center_loss/mnist_center_loss.py", tmp_path)
    soft, center = results[0], results[-1]
    assert soft["lam"] == 0 and center["lam"] > 0
    # intra/inter is scale-free: the centre term also shrinks the features, which alone would
    # lower intra but not the ratio
    assert center["ratio"] < 0.85 * soft["ratio"], results
    assert center["intra"] < 0.5 * soft["intra"], results
    assert soft["accuracy"] > 0.8 and center["accuracy"] >= soft["accuracy"] - 0.02, results
    for r in results:
        assert_png(r["plot"])
    net = read_net(tmp_path / ("train_lambda_%g.prototxt" % center["lam"]))
    cl = [l for l in net.layer if l.type == "CenterLoss"][0]
    assert list(cl.loss_weight) == [pytest.approx(center["lam"])] and cl.param[0].decay_mult == 0
    assert "intra/inter" in stdout


def test_tiny_yolo_finds_rectangles(tmp_path):
    res, stdout = run_example("yolo/train_tiny_yolo.py", tmp_path)
    # chance is near 0: a box must hit a 8-30 px rectangle with IoU >= .5 and the right colour
    assert res["recall"] > 0.6, res
    assert res["mAP50"] > 0.6, res
    assert_png(tmp_path / "detections.png")
    types = [l.type for l in read_net(tmp_path / "train.prototxt").layer]
    assert types[-1] == "Yolov3Loss"
    assert [l.type for l in read_net(tmp_path / "deploy.prototxt").layer][-1] == \
        "Yolov3Detection"
    assert "mAP@0.5" in stdout


def test_lstm_beats_last_value(tmp_path):
    res, stdout = run_example("lstm/lstm_sine.py", tmp_path)
    assert res["mse"] < 0.5 * res["mse_last_value"], res
    assert_png(tmp_path / "lstm_sine.png")
    for name in ("train.prototxt", "deploy.prototxt"):
        net = read_net(tmp_path / name)
        assert "LSTM" in [l.type for l in net.layer]
        for layer in net.layer:   # BVLC's LayerParameter fields only (all below 200)
            assert all(f.number < 200 for f, _ in layer.ListFields()), layer
    lstm = [l for l in read_net(tmp_path / "train.prototxt").layer if l.type == "LSTM"][0]
    assert list(lstm.bottom) == ["data", "cont"]
    assert "last value" in stdout
