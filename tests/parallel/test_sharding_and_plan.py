"""In one process, no MPI: the data layers' sharding for solver_count > 1 (Caffe's Skip()),
the gradient bucket plan, and how the MPI world is detected."""
import io
import sys

import h5py
import numpy as np
import pytest

from decaf import backend, glog as log
from decaf.blob import Blob
from decaf.layer import create_layer
from decaf.net import Net
from decaf.parallel import buckets, launcher as world_mod
from decaf.proto import caffe_pb2
from decaf.testing.gradient_check import make_layer_param


TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


@pytest.fixture
def solvers():
    """solver_count / rank as set here, restored afterwards."""
    saved = (backend._state.solver_count, backend._state.solver_rank)

    def set_(count, rank):
        backend.set_solver_count(count)
        backend.set_solver_rank(rank)
    yield set_
    backend._state.solver_count, backend._state.solver_rank = saved


def make(spec, phase, ntop=2):
    lp = make_layer_param(spec)
    lp.name = "data"
    lp.top.extend(["data", "label"][:ntop])
    layer = create_layer(lp, phase)
    top = [Blob() for _ in lp.top]
    layer.SetUp([], top)
    return layer, top


def labels_read(layer, top, n_batches):
    got = []
    for _ in range(n_batches):
        layer.Forward([], top)
        got.extend(int(v) for v in top[1].data)
    return got


def label_db(tmp_path, n):
    from decaf.data.datum import array_to_datum
    from decaf.data.db import open_db
    with open_db("lmdb", str(tmp_path / "db"), "new") as db:
        with db.writer() as w:
            for i in range(n):
                w.put(b"%08d" % i, array_to_datum(np.zeros((1, 2, 2), np.uint8), i)
                      .SerializeToString())
    return str(tmp_path / "db")


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_data_layer_keeps_record_i_on_rank_i_mod_count(tmp_path, solvers, rank):
    solvers(3, rank)
    spec = "type: 'Data' data_param { source: '%s' batch_size: 3 backend: LMDB }" % \
        label_db(tmp_path, 7)
    layer, top = make(spec, TRAIN)
    offsets = [o for o in range(30) if o % 3 == rank][:9]      # offsets run on across passes
    assert labels_read(layer, top, 3) == [o % 7 for o in offsets]
    layer.close()
    layer, top = make(spec, TEST)                             # TEST never skips
    assert labels_read(layer, top, 3) == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    layer.close()


def test_hdf5_data_shards_train_only(tmp_path, solvers):
    solvers(2, 1)
    with h5py.File(str(tmp_path / "a.h5"), "w") as f:
        f.create_dataset("data", data=np.arange(5, dtype=np.float32)[:, None])
        f.create_dataset("label", data=np.arange(5, dtype=np.float32))
    (tmp_path / "list.txt").write_text(str(tmp_path / "a.h5"))
    spec = "type: 'HDF5Data' hdf5_data_param { source: '%s' batch_size: 2 }" % \
        (tmp_path / "list.txt")
    assert labels_read(*make(spec, TRAIN), 3) == [1, 3, 0, 2, 4, 1]   # offsets 1, 3, 5, ...
    assert labels_read(*make(spec, TEST), 3) == [0, 1, 2, 3, 4, 0]


def test_image_data_warns_that_it_does_not_shard(tmp_path, solvers):
    from decaf.data.datum import encode_image
    (tmp_path / "a.png").write_bytes(encode_image(np.zeros((3, 2, 2), np.uint8), "png"))
    (tmp_path / "list.txt").write_text("a.png 3\n")
    spec = ("type: 'ImageData' image_data_param { source: '%s' root_folder: '%s/' "
            "batch_size: 2 }" % (tmp_path / "list.txt", tmp_path))
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        solvers(2, 0)
        layer, top = make(spec, TRAIN)
        assert labels_read(layer, top, 1) == [3, 3]
        layer.close()
        assert "does not shard" in buf.getvalue()
        solvers(1, 0)
        buf.truncate(0)
        make(spec, TRAIN)[0].close()
        assert "does not shard" not in buf.getvalue()
    finally:
        log.set_stream(None)


SHARED = """name: "plan"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" }
        param { name: "b" } inner_product_param { num_output: 3 } }
layer { name: "c" type: "InnerProduct" bottom: "a" top: "c"
        inner_product_param { num_output: 300 } }
layer { name: "b" type: "InnerProduct" bottom: "c" top: "b" param { name: "w2" }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "d" type: "InnerProduct" bottom: "b" top: "d" param { name: "w" }
        param { name: "b" } inner_product_param { num_output: 3 } }
"""


def test_bucket_plan_follows_backward_and_shared_weights():
    """Layer indices: in 0, a 1, c 2, b 3, d 4; d shares a's parameters."""
    from decaf.proto.io import read_net_param
    net = Net(read_net_param(SHARED), phase=TRAIN)
    names = net.learnable_param_names                 # a.0 a.1 c.0 c.1 b.0
    assert buckets.ready_layers(net) == [1, 1, 2, 2, 3]
    assert buckets.shares_weights(net)
    plan = buckets.plan(net, 1)                       # one bucket per ready layer
    assert [b.trigger for b in plan] == [3, 2, 1]
    assert [[names[i] for i in b.indices] for b in plan] == [["b.0"], ["c.0", "c.1"],
                                                             ["a.0", "a.1"]]
    big = buckets.plan(net, 4 * 1000)                 # b + c reach 4 kB, then a
    assert [b.trigger for b in big] == [2, 1]
    whole = buckets.plan(net, float("inf"))
    assert len(whole) == 1 and whole[0].trigger == 1
    assert whole[0].nbytes == 4 * sum(p.count for p in net.learnable_params)
    # pack / unpack_scaled move the diffs through the flat buffer
    for i, p in enumerate(net.learnable_params):
        p.diff[...] = i + 1
    b = whole[0]
    b.pack(net.learnable_params)
    b.buffer *= 2
    b.unpack_scaled(net.learnable_params, np.float32(0.25))
    for i, p in enumerate(net.learnable_params):
        assert np.all(p.diff == np.float32((i + 1) * 2 * 0.25))


def test_no_sharing_detected_in_a_plain_net():
    from decaf.proto.io import read_net_param
    net = Net(read_net_param(SHARED.split('layer { name: "d"')[0]), phase=TRAIN)
    assert not buckets.shares_weights(net)
    assert buckets.ready_layers(net) == [1, 1, 2, 2, 3]


# -- the world ------------------------------------------------------------------------------

def test_world_alone_without_a_launcher(monkeypatch):
    for name in world_mod.LAUNCHER_VARS + ("DECAF_MPI",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)     # never imported without a launcher
    w = world_mod._detect()
    assert (w.size, w.rank, w.comm) == (1, 0, None) and w.root


def test_world_disabled_by_decaf_mpi_0(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("DECAF_MPI", "0")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert world_mod._detect().size == 1


def test_world_launcher_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DECAF_MPI", raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(world_mod.MPIError, match=r"pip install decaf\[mpi\]"):
        world_mod._detect()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")       # a launcher, but one process
    assert world_mod._detect().size == 1


def test_abort_on_error_alone_lets_exceptions_through():
    with pytest.raises(ValueError):
        with world_mod.abort_on_error(world_mod.World()):
            raise ValueError("alone: no abort")
