"""LeNet on MNIST against BVLC Caffe (golden lenet_mnist/): the first SGD step to float32
precision, the 50-step loss trajectory and the final weights and momentum within case.json's
tolerances (the trajectory is chaotic: see the golden README)."""
import gzip
import json
import os

import numpy as np
import pytest

from decaf import glog as log
from decaf.proto import caffe_pb2
from decaf.solver import get_solver
from decaf.solver_state import read_solver_state
from decaf.testing.golden import chdir, require_golden


def lenet_dir():
    return os.path.join(require_golden(), "lenet_mnist")


def mnist(n):
    """The first n training images (float32, pixel * 1/256, N x 1 x 28 x 28) and labels."""
    # the repository's copy of MNIST (data/mnist), the same files the golden run read
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mnist")
    with gzip.open(os.path.join(root, "train-images-idx3-ubyte.gz")) as f:
        head = np.frombuffer(f.read(16), ">u4")
        assert head[0] == 2051
        pixels = np.frombuffer(f.read(n * 784), np.uint8)
    with gzip.open(os.path.join(root, "train-labels-idx1-ubyte.gz")) as f:
        assert np.frombuffer(f.read(8), ">u4")[0] == 2049
        labels = np.frombuffer(f.read(n), np.uint8)
    return (pixels.reshape(n, 1, 28, 28).astype(np.float32) * np.float32(0.00390625),
            labels.astype(np.float32))


def read_caffemodel(path):
    p = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        p.ParseFromString(f.read())
    return {(l.name, i): np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim))
            for l in p.layer for i, b in enumerate(l.blobs)}


@pytest.fixture(scope="module")
def run():
    d = lenet_dir()
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    data = np.load(os.path.join(d, "data.npz"))
    bs, steps = case["batch_size"], case["steps"]
    images, labels = mnist(case["first_image"] + bs * steps)
    images, labels = images[case["first_image"]:], labels[case["first_image"]:]
    old = log.min_level()
    log.init_log(1)
    try:
        with chdir(d):
            solver = get_solver("solver.prototxt")
            solver.net.copy_trained_layers_from("init.caffemodel")
            losses, lrs, biases, iter1 = [], [], [], None
            for s in range(steps):
                np.testing.assert_array_equal(labels[s * bs:(s + 1) * bs], data["label.%d" % s])
                solver.net.blobs["data"].data[...] = images[s * bs:(s + 1) * bs]
                solver.net.blobs["label"].data[...] = labels[s * bs:(s + 1) * bs]
                lrs.append(solver.lr)
                solver.step(1)
                losses.append(float(solver.net.blobs["loss"].data))
                biases.append((solver.net.params["conv1"][1].data.copy(),
                               solver.net.params["ip2"][1].data.copy()))
                if s == 0:
                    iter1 = {(n, i): b.data.copy() for n, bl in solver.net.params.items()
                             for i, b in enumerate(bl)}
    finally:
        log.init_log(old)
    return dict(case=case, data=data, solver=solver, losses=losses, lrs=lrs, biases=biases,
                iter1=iter1)


def test_first_step_matches_iter1(run):
    case = run["case"]
    want = read_caffemodel(os.path.join(lenet_dir(), "iter1.caffemodel"))
    assert set(want) == set(run["iter1"])
    for key, w in want.items():
        np.testing.assert_allclose(run["iter1"][key], w, atol=case["iter1_atol"],
                                   rtol=case["iter1_rtol"], err_msg=str(key))


def test_loss_and_lr_trajectory(run):
    case, data = run["case"], run["data"]
    for s, loss in enumerate(run["losses"]):
        rtol = case["loss_rtol_first_20"] if s < 20 else case["loss_rtol"]
        np.testing.assert_allclose(loss, data["loss.%d" % s], rtol=rtol, err_msg="loss.%d" % s)
        np.testing.assert_allclose(run["lrs"][s], data["lr.%d" % s], rtol=1e-6)
        conv1_b, ip2_b = run["biases"][s]
        np.testing.assert_allclose(conv1_b, data["param.conv1.1.%d" % s], atol=case["final_atol"],
                                   rtol=case["final_rtol"])
        np.testing.assert_allclose(ip2_b, data["param.ip2.1.%d" % s], atol=case["final_atol"],
                                   rtol=case["final_rtol"])


def test_final_weights_and_history(run):
    case, solver = run["case"], run["solver"]
    want = read_caffemodel(os.path.join(lenet_dir(), "final.caffemodel"))
    for (name, i), w in want.items():
        np.testing.assert_allclose(solver.net.params[name][i].data, w, atol=case["final_atol"],
                                   rtol=case["final_rtol"], err_msg="%s.%d" % (name, i))
    it, learned, _, history = read_solver_state(os.path.join(lenet_dir(), "final.solverstate"))
    assert it == solver.iter == case["steps"]
    assert learned == case["solverstate_learned_net"]
    assert solver.net.learnable_param_names == case["learnable_params"]
    for h, ours in zip(history, solver.history):
        np.testing.assert_allclose(ours.data, h.reshape(ours.shape), atol=case["final_atol"],
                                   rtol=case["final_rtol"])
