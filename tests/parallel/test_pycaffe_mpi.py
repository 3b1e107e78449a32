"""decaf.parallel from Python, as pycaffe's train.py uses caffe.NCCL: solver_count/solver_rank
from the MPI world, bcast + add_callback + after_backward, on a net with shared weights (which
Caffe's layer-wise reduce refuses), one bucket per layer and one all-reduce after backward."""
import json
import os

import numpy as np

import caffe
from decaf import parallel
from decaf.solver import read_solver_param

from . import helpers as h

BATCH = 4
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pycaffe_driver.py")

# ip_a and ip_b share their weights ("shared_w", "shared_b"); ip_a comes first, so the shared
# gradient is complete after ip_a's backward
SHARED_NET = """name: "shared"
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 }
        data_param { source: "%(train_db)s" batch_size: %(batch)d backend: LMDB } }
%(test_layer)s
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool_max" type: "Pooling" bottom: "conv" top: "pool_max"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pool_ave" type: "Pooling" bottom: "conv" top: "pool_ave"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip_a" type: "InnerProduct" bottom: "pool_max" top: "ip_a"
        param { name: "shared_w" } param { name: "shared_b" lr_mult: 2 }
        inner_product_param { num_output: 12 weight_filler { type: "xavier" }
          bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "pool_ave" top: "ip_b"
        param { name: "shared_w" } param { name: "shared_b" lr_mult: 2 }
        inner_product_param { num_output: 12 weight_filler { type: "xavier" }
          bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip_a" bottom: "ip_b" top: "sum" }
layer { name: "relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "ip2" type: "InnerProduct" bottom: "sum" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def weights_after(solver_path, iters=10):
    solver = caffe.get_solver(solver_path)
    solver.step(iters)
    return {"%s_%d" % (n, i): b.data.copy() for n, blobs in solver.net.params.items()
            for i, b in enumerate(blobs)}


def close(got, want, rtol=1e-5):
    assert sorted(got) == sorted(want)
    for name in want:
        scale = float(np.abs(want[name]).max()) or 1.0
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=rtol * scale,
                                   err_msg=name)


def test_pycaffe_mpi_callbacks_with_shared_weights(tmp_path):
    k = 2
    db = h.make_lmdb(tmp_path / "db", 44, seed=5)
    many = h.write_solver(tmp_path, "many", db, BATCH, net=SHARED_NET)
    one = h.write_solver(tmp_path, "one", db, k * BATCH, net=SHARED_NET)
    h.run(h.mpi_command(k, DRIVER, many, str(tmp_path)), tmp_path)

    want = weights_after(one)           # this process: one solver, batch k * BATCH
    for mode in ("layerwise", "once"):
        ranks = [dict(np.load(tmp_path / ("%s_rank%d.npz" % (mode, r)))) for r in range(k)]
        for other in ranks[1:]:         # every rank applied the same updates, bit for bit
            for name in ranks[0]:
                assert np.array_equal(other[name], ranks[0][name]), (mode, name)
        close(ranks[0], want)
    # every solver seeds with random_seed + rank: rank r's fillers are those of seed 1701 + r
    for r in range(k):
        param = read_solver_param(one)
        param.random_seed = 1701 + r
        own = caffe.get_solver(param).net.params["conv"][0].data
        assert np.array_equal(np.load(tmp_path / ("init_rank%d.npy" % r)), own)
    assert not np.array_equal(np.load(tmp_path / "init_rank0.npy"),
                              np.load(tmp_path / "init_rank1.npy"))
    info = json.loads((tmp_path / "info_rank0.json").read_text())
    assert info["size"] == k and info["rank"] == 0
    # 1-byte buckets: one per group of parameters ready after the same layer
    # (ip2; ip_a for the shared pair, ip_b holding none of its own; conv)
    assert info["layerwise"]["buckets"] == 3
    assert info["once"]["buckets"] == 1
    for mode in ("layerwise", "once"):
        st = info[mode]["stats"]
        assert st["steps"] == 10
        n_params = sum(a.size for a in want.values()) - want["ip_b_0"].size - want["ip_b_1"].size
        assert st["bytes"] == 10 * 4 * n_params


def test_mpi_object_alone_is_a_no_op(tmp_path):
    db = h.make_lmdb(tmp_path / "db", 24, seed=6)
    path = h.write_solver(tmp_path, "alone", db, BATCH, net=SHARED_NET)
    want = weights_after(path, 5)
    assert caffe.solver_count() == 1 and caffe.solver_rank() == 0
    solver = caffe.get_solver(path)
    comm = parallel.MPI(solver)
    assert comm.size == 1 and comm.comm is None
    comm.bcast()
    solver.add_callback(comm)
    solver.net.after_backward(comm)
    solver.step(5)
    for n, blobs in solver.net.params.items():
        for i, b in enumerate(blobs):
            assert np.array_equal(b.data, want["%s_%d" % (n, i)])
    assert comm.stats.steps == 0

