"""Per-layer CPU time (ms) of a benchmark net, min and median over repeats.

    python benchmarks/profile_layers.py cifar10_quick [iterations]        # a training net
    python benchmarks/profile_layers.py --infer resnet50 [batch] [iterations]   # a deploy net

Training nets: forward and backward of each layer and the solver update per iteration.
Inference models (benchmarks/nets.py INFER): the forward of each layer, then the whole
``net.forward()`` (which runs the fused in-place chains of decaf/net_fuse.py) and the same with
fusion off.  Both end with the totals per layer type.  The sum of the minima is optimistic: in
a real iteration the layers evict each other's data from the caches; the medians are closer.
Set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS for the thread count; DECAF_SRC=<checkout> profiles
another version of decaf (e.g. the commit before a change) on the same nets.  Times are the
process's CPU time (all threads); PROFILE_WALL=1 takes wall-clock time instead (what to compare
between 1 and 2 threads: CPU time counts the second thread's work, and its spinning, too).
"""
import collections
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("DECAF_SRC") or os.path.dirname(HERE))
sys.path.insert(0, HERE)

CLOCK = time.perf_counter if os.environ.get("PROFILE_WALL") == "1" else time.process_time


def _stat(f, times):
    import numpy as np
    return {"min": min, "med": np.median}[f](times) * 1e3 if times else 0.0


def _by_type(net, columns):
    """Sum of each column's medians per layer type."""
    tot = collections.OrderedDict()
    for i, layer in enumerate(net.layers):
        row = tot.setdefault(layer.type, [0.0] * len(columns))
        for k, col in enumerate(columns):
            row[k] += _stat("med", col[i])
    print("\nper type (sum of medians, ms):")
    for t, row in sorted(tot.items(), key=lambda kv: -sum(kv[1])):
        print("  %-18s %s" % (t, "  ".join("%8.2f" % v for v in row)))


def train(name="cifar10_quick", iters=20):
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
    fw, bw, upd = [[] for _ in range(n)], [[] for _ in range(n)], []
    for _ in range(int(iters)):
        for i in range(n):
            t = CLOCK()
            net.layers[i].Forward(net.bottom_vecs[i], net.top_vecs[i])
            fw[i].append(CLOCK() - t)
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward[i]:
                t = CLOCK()
                net.layers[i].Backward(net.top_vecs[i], net._bottom_need_backward[i],
                                       net.bottom_vecs[i])
                bw[i].append(CLOCK() - t)
        t = CLOCK()
        solver.apply_update()
        upd.append(CLOCK() - t)
        for p in net.learnable_params:
            p.diff[...] = 0
    print("%-22s %-16s %15s %15s" % ("layer", "type", "fwd min / med", "bwd min / med"))
    for i, layer in enumerate(net.layers):
        print("%-22s %-16s %7.2f %7.2f %7.2f %7.2f" % (
            layer.name, layer.type, _stat("min", fw[i]), _stat("med", fw[i]),
            _stat("min", bw[i]), _stat("med", bw[i])))
    tot_min = sum(_stat("min", t) for t in fw + bw) + _stat("min", upd)
    tot_med = sum(_stat("med", t) for t in fw + bw) + _stat("med", upd)
    print("update %.2f / %.2f   total %.1f ms (minima), %.1f ms (medians)"
          % (_stat("min", upd), _stat("med", upd), tot_min, tot_med))
    _by_type(net, [fw, bw])


def infer(model="resnet50", batch=1, iters=10):
    import inference
    import decaf
    from decaf import glog
    glog.init_log(level=1)
    proto, weights, shape = inference.prepare(model, int(batch))
    net = decaf.Net(proto, decaf.TEST, weights=weights)
    blob = net.blobs[net.inputs[0]]
    blob.reshape(shape)
    net.reshape()
    blob.data[...] = inference.input_batch(model, shape)
    n = len(net.layers)
    fw, whole, plain = [[] for _ in range(n)], [], []
    fuse = getattr(net, "fuse_inference", None)
    net.forward()
    for _ in range(int(iters)):
        for i in range(n):
            t = CLOCK()
            net.layers[i].Forward(net.bottom_vecs[i], net.top_vecs[i])
            fw[i].append(CLOCK() - t)
        for flag, out in ((True, whole), (False, plain)):
            if fuse is not None:
                net.fuse_inference = flag
            t = CLOCK()
            net.forward()
            out.append(CLOCK() - t)
    print("%-28s %-16s %15s" % ("layer", "type", "fwd min / med"))
    for i, layer in enumerate(net.layers):
        print("%-28s %-16s %7.2f %7.2f" % (layer.name, layer.type, _stat("min", fw[i]),
                                           _stat("med", fw[i])))
    print("layers %.1f ms (sum of medians); net.forward() %.1f / %.1f ms (min / med), without "
          "fusion %.1f / %.1f" % (sum(_stat("med", t) for t in fw), _stat("min", whole),
                                  _stat("med", whole), _stat("min", plain), _stat("med", plain)))
    _by_type(net, [fw])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--infer":
        infer(*sys.argv[2:5])
    else:
        train(*sys.argv[1:3])
