"""Per-layer CPU time (ms / iteration) of a benchmark net: forward and backward of each layer
and the solver update, min over repeats.  ``python benchmarks/profile_layers.py cifar10_quick``
(set OPENBLAS_NUM_THREADS=1 for the one-thread profile)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(name="cifar10_quick", iters=20):
    import nets
    from decaf import glog
    from decaf.solver import get_solver
    glog.init_log(level=1)
    solver = get_solver(nets.solver_param(name))
    net = solver.net
    d, l = nets.synthetic_batches(name)[0]
    net.blobs["data"].data[...] = d
    net.blobs["label"].data[...] = l
    n = len(net.layers)
    fw, bw = [1e9] * n, [1e9] * n
    upd = 1e9
    clock = time.process_time
    for _ in range(iters):
        for i in range(n):
            t = clock()
            net.layers[i].Forward(net.bottom_vecs[i], net.top_vecs[i])
            fw[i] = min(fw[i], clock() - t)
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward[i]:
                t = clock()
                net.layers[i].Backward(net.top_vecs[i], net._bottom_need_backward[i],
                                       net.bottom_vecs[i])
                bw[i] = min(bw[i], clock() - t)
        t = clock()
        solver.apply_update()
        upd = min(upd, clock() - t)
        for p in net.learnable_params:
            p.diff[...] = 0
    bw = [0 if b == 1e9 else b for b in bw]
    for i, layer in enumerate(net.layers):
        print("%-8s %-12s fwd %7.2f  bwd %7.2f" % (layer.name, layer.type, fw[i] * 1e3,
                                                   bw[i] * 1e3))
    print("update %.2f   total %.1f ms" % (upd * 1e3, (sum(fw) + sum(bw) + upd) * 1e3))


if __name__ == "__main__":
    main(*sys.argv[1:2])
