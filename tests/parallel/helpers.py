"""Shared pieces of the multi-rank tests: a small LMDB, a small conv net, and ``mpirun``.

Every multi-rank run is ``mpirun --allow-run-as-root --oversubscribe -np K python -m decaf ...``
in a subprocess (CI installs Open MPI: .ci/run). A missing mpirun or mpi4py fails the test
with the installation command: these tests never skip.
"""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from decaf.data.datum import array_to_datum
from decaf.data.db import open_db
from decaf.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 120


def mpirun():
    """The mpirun executable (fails the test when Open MPI or mpi4py is missing)."""
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.fail("mpirun not found: install Open MPI (apt-get install openmpi-bin "
                    "libopenmpi-dev), as .ci/run does")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.fail("mpi4py is missing: pip install -e '.[test]' (or decaf[mpi])")
    return exe


def env():
    """The environment of a run: one BLAS/Numba thread per rank, mpirun allowed as root."""
    e = dict(os.environ)
    e.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
             NUMBA_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
             OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
             GLOG_logtostderr="1", PYTHONPATH=ROOT + os.pathsep + e.get("PYTHONPATH", ""))
    for name in ("DECAF_MPI", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"):
        e.pop(name, None)   # the test process itself is never a rank
    return e


def mpi_command(k, *args):
    return [mpirun(), "--allow-run-as-root", "--oversubscribe", "-np", str(k),
            sys.executable] + list(args)


def run(cmd, cwd, timeout=TIMEOUT, check=True):
    """Run ``cmd``; returns (returncode, stdout + stderr). With ``check``, a failure fails the
    test with the output."""
    p = subprocess.run(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    out = p.stdout.decode(errors="replace")
    if check and p.returncode != 0:
        pytest.fail("%s exited with %d:\n%s" % (" ".join(cmd), p.returncode, out[-6000:]))
    return p.returncode, out


def train(k, solver, cwd, *extra, check=True):
    """``decaf train -solver solver`` on k ranks (k == 0: no mpirun at all)."""
    args = ["-m", "decaf", "train", "-solver", str(solver)] + list(extra)
    cmd = mpi_command(k, *args) if k else [sys.executable] + args
    return run(cmd, cwd, check=check)


# -- data and nets ----------------------------------------------------------------------------

def make_lmdb(path, n, seed=0, shape=(1, 8, 8)):
    """n Datum records: uint8 images and labels 0..9 from RandomState(seed)."""
    rs = np.random.RandomState(seed)
    images = rs.randint(0, 256, size=(n,) + shape).astype(np.uint8)
    labels = rs.randint(0, 10, size=n)
    with open_db("lmdb", str(path), "new") as db:
        with db.writer() as w:
            for i in range(n):
                w.put(b"%08d" % i, array_to_datum(images[i], int(labels[i])).SerializeToString())
    return str(path)


NET = """name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 }
        data_param { source: "%(train_db)s" batch_size: %(batch)d backend: LMDB } }
%(test_layer)s
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3
          weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool" top: "ip1"
        inner_product_param { num_output: 16 weight_filler { type: "xavier" }
          bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

TEST_LAYER = """layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 }
        data_param { source: "%s" batch_size: 8 backend: LMDB } }"""

SOLVER = """net: "%(net)s"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 7
display: 1
max_iter: %(max_iter)d
iter_size: %(iter_size)d
random_seed: 1701
snapshot_prefix: "%(prefix)s"
%(extra)s
"""


def write_solver(d, name, train_db, batch, max_iter=20, iter_size=1, test_db=None, extra="",
                 net=NET):
    """Write ``d/name.prototxt`` (solver) and ``d/name_net.prototxt``; returns the solver path.
    With ``test_db``: a TEST net on it (test_iter 2, test_interval 10)."""
    d = str(d)
    net_path = os.path.join(d, name + "_net.prototxt")
    with open(net_path, "w") as f:
        f.write(net % dict(train_db=train_db, batch=batch,
                           test_layer=TEST_LAYER % test_db if test_db else ""))
    if test_db:
        extra += "\ntest_iter: 2\ntest_interval: 10\n"
    solver_path = os.path.join(d, name + ".prototxt")
    with open(solver_path, "w") as f:
        f.write(SOLVER % dict(net=net_path, max_iter=max_iter, iter_size=iter_size,
                              prefix=os.path.join(d, name), extra=extra))
    return solver_path


def read_weights(path):
    """{layer name: [arrays]} of a binary .caffemodel."""
    param = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        param.ParseFromString(f.read())
    return {layer.name: [np.array(b.data, np.float32) for b in layer.blobs]
            for layer in param.layer if len(layer.blobs)}


def assert_weights_close(got, want, rtol=1e-5):
    """Every blob equal within rtol relative to the blob's largest magnitude."""
    assert sorted(got) == sorted(want)
    for name in want:
        for a, b in zip(got[name], want[name]):
            scale = float(np.abs(b).max()) or 1.0
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=name)


def log_lines(out, pattern):
    """The glog messages of ``out`` matching ``pattern`` (regex on the message)."""
    msgs = [m.group(1) for m in re.finditer(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\] (.*)$", out,
                                            re.M)]
    return [m for m in msgs if re.search(pattern, m)]
