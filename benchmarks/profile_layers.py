"""Per-layer CPU time (ms / iteration) of a benchmark net: forward and backward of each layer
and the solver update, min and median over repeats (the sum of the minima is optimistic: in a
real iteration the layers evict each other's data from the caches; the medians are closer to
it).  ``python benchmarks/profile_layers.py cifar10_quick [iterations]`` (set
OPENBLAS_NUM_THREADS=1 for the one-thread profile)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(name="cifar10_quick", iters=20):
    import numpy as np
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
    fw, bw = [[] for _ in range(n)], [[] for _ in range(n)]
    upd = []
    clock = time.process_time
    for _ in range(int(iters)):
        for i in range(n):
            t = clock()
            net.layers[i].Forward(net.bottom_vecs[i], net.top_vecs[i])
            fw[i].append(clock() - t)
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward[i]:
                t = clock()
                net.layers[i].Backward(net.top_vecs[i], net._bottom_need_backward[i],
                                       net.bottom_vecs[i])
                bw[i].append(clock() - t)
        t = clock()
        solver.apply_update()
        upd.append(clock() - t)
        for p in net.learnable_params:
            p.diff[...] = 0

    def stat(f, times):
        return f(times) * 1e3 if times else 0.0

    print("%-8s %-16s %15s %15s" % ("layer", "type", "fwd min / med", "bwd min / med"))
    for i, layer in enumerate(net.layers):
        print("%-8s %-16s %7.2f %7.2f %7.2f %7.2f" % (
            layer.name, layer.type, stat(min, fw[i]), stat(np.median, fw[i]),
            stat(min, bw[i]), stat(np.median, bw[i])))
    tot_min = sum(stat(min, t) for t in fw + bw) + stat(min, upd)
    tot_med = sum(stat(np.median, t) for t in fw + bw) + stat(np.median, upd)
    print("update %.2f / %.2f   total %.1f ms (minima), %.1f ms (medians)"
          % (stat(min, upd), stat(np.median, upd), tot_min, tot_med))


if __name__ == "__main__":
    main(*sys.argv[1:3])
