"""Run by test_pycaffe_mpi.py under ``mpirun -np K``: trains ``solver`` for 10 iterations the
way pycaffe's python/train.py does with caffe.NCCL, once with the layer-wise reduce (one bucket
per layer) and once with a single all-reduce after backward, and saves every rank's weights.

    python pycaffe_driver.py solver.prototxt out_dir
"""
import json
import os
import sys

import numpy as np

import caffe
from decaf import parallel
from decaf.solver import read_solver_param


def main(solver_path, out):
    world = parallel.world()
    size, rank = caffe.solver_count(), caffe.solver_rank()
    assert (size, rank) == (world.size, world.rank), (size, rank, world)
    assert size == int(os.environ["OMPI_COMM_WORLD_SIZE"])
    info = {}
    for mode, layer_wise, bucket_bytes in (("layerwise", True, 1), ("once", False, 1 << 20)):
        param = read_solver_param(solver_path)
        param.layer_wise_reduce = layer_wise
        solver = caffe.get_solver(param)
        if mode == "layerwise":         # before bcast: this rank's own fillers (seed + rank)
            np.save(os.path.join(out, "init_rank%d.npy" % rank),
                    solver.net.params["conv"][0].data)
        comm = parallel.MPI(solver, bucket_bytes=bucket_bytes)
        comm.bcast()
        solver.add_callback(comm)
        if solver.param.layer_wise_reduce:
            solver.net.after_backward(comm)
        solver.step(10)
        np.savez(os.path.join(out, "%s_rank%d.npz" % (mode, rank)),
                 **{"%s_%d" % (name, i): b.data for name, blobs in solver.net.params.items()
                    for i, b in enumerate(blobs)})
        info[mode] = dict(buckets=len(comm.buckets), stats=comm.stats.as_dict())
    with open(os.path.join(out, "info_rank%d.json" % rank), "w") as f:
        json.dump(dict(info, size=size, rank=rank), f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
