"""The pycaffe LeNet tutorial script runs (reduced) and produces its two figures."""
import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_lenet_tutorial_learns_and_plots(tmp_path):
    path = os.path.join(ROOT, "examples", "pycaffe", "lenet_tutorial.py")
    spec = importlib.util.spec_from_file_location("lenet_tutorial", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    loss, acc = mod.main(["--iters", "60", "--test-interval", "20", "--test-batches", "10",
                          "--out", str(tmp_path)])
    assert np.mean(loss[-10:]) < 0.5 * np.mean(loss[:5])
    assert acc[0] < 0.3 and acc[-1] > 0.7
    for name in ("lenet_loss_accuracy.png", "lenet_conv1_filters.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "lenet_auto_train.prototxt") as f:
        text = f.read()
    assert 'type: "SoftmaxWithLoss"' in text and "scale: 0.00392156" in text
