"""Solvers through pycaffe's names: caffe.SGDSolver, caffe.get_solver, solve/step/iter,
apply_update, test_nets, snapshot files, nets outliving the solver."""
import os

import numpy as np
import pytest

import caffe

from .test_net import SIMPLE


@pytest.fixture
def solver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(SIMPLE)
    (tmp_path / "solver.prototxt").write_text(
        "net: 'net.prototxt' test_iter: 2 test_interval: 10 base_lr: 0.01 momentum: 0.9 "
        "weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75 display: 100 "
        "max_iter: 20 snapshot_after_train: false snapshot_prefix: 'model'")
    s = caffe.SGDSolver("solver.prototxt")
    for net in [s.net] + list(s.test_nets):
        net.blobs["label"].data[...] = np.random.randint(13, size=net.blobs["label"].data.shape)
    return s


def test_get_solver_builds_sgd(solver):
    other = caffe.get_solver("solver.prototxt")
    assert type(other).__name__ == "SGDSolver"
    assert len(other.test_nets) == 1


def test_solve_runs_max_iter(solver):
    assert solver.iter == 0
    solver.solve()
    assert solver.iter == 20


def test_step_and_callbacks(solver):
    seen = []
    solver.net.after_backward(lambda i: seen.append(i) if i == 0 else None)
    solver.step(3)
    assert solver.iter == 3 and seen == [0, 0, 0]


def test_apply_update_first_rate(solver):
    net = solver.net
    data = net.layers[1].blobs[0].data[...]
    data[...] = 0
    net.layers[1].blobs[0].diff[...] = 1
    solver.apply_update()
    # lr 0.01 at iteration 0; weight decay acts on data = 0
    np.testing.assert_allclose(data, -0.01, atol=1e-7)


def test_nets_outlive_solver(solver):
    nets = [solver.net] + list(solver.test_nets)
    del solver
    total = 0.0
    for net in nets:
        for ps in net.params.values():
            total += sum(float(p.data.sum() + p.diff.sum()) for p in ps)
        total += sum(float(b.data.sum()) for b in net.blobs.values())
    assert np.isfinite(total)


def test_test_net_shares_trained_weights(solver):
    solver.step(1)
    np.testing.assert_array_equal(solver.test_nets[0].params["conv"][0].data,
                                  solver.net.params["conv"][0].data)


def test_snapshot_files(solver):
    solver.snapshot()
    for fn in ("model_iter_0.caffemodel", "model_iter_0.solverstate"):
        assert os.path.isfile(fn)
