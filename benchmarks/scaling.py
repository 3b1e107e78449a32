"""Data-parallel scaling over MPI on this machine: LeNet and CIFAR-10 quick at 1 and 2 ranks.

    python benchmarks/scaling.py                          # both nets, 1 and 2 ranks, 3 rounds
    python benchmarks/scaling.py --nets lenet --ranks 1 2 3 --rounds 1

Each measurement is one ``mpirun -np R`` run (R = 1: a plain process, no MPI) of the worker
below: Caffe's example net and solver (benchmarks/nets.py: Input layers fed with synthetic
batches through on_start, the prototxt batch per rank), one BLAS thread per rank, the gradient
all-reduce of decaf.parallel attached as ``decaf train`` does (layer-wise buckets, and for
R > 1 also ``layer_wise_reduce: false``, one all-reduce after backward). Warm-up iterations are
not timed; the timed part starts and ends on a barrier. Reported: iterations/s (per rank: every
rank does one iteration per step), images/s (all ranks), the time per iteration the root spent
in all-reduce code (packing, starting, waiting, unpacking) and how much of it was waiting after
backward, and the weak-scaling efficiency it/s(R) / it/s(1). Medians over the rounds.

Writes benchmarks/scaling.json; docs/SCALING.md uses the figures for its model.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import nets  # noqa: E402  (benchmarks/nets.py)

ITERS = {"lenet": (10, 100), "cifar10_quick": (3, 20)}     # (warm-up, timed)
ALLREDUCE_BYTES = (4096, 582_312, 1_724_320, 16 << 20)    # tiny, CIFAR quick, LeNet, 16 MB

# -- the written model (docs/SCALING.md): python benchmarks/scaling.py --model -----------------
# (name, learnable parameters, compute ms per step and where that figure comes from)
MODEL_NETS = (
    ("LeNet (batch 64)", 431_080, 15.0, "measured: 66.7 it/s, 1 thread (RESULTS.md)"),
    ("CIFAR-10 quick (batch 100)", 145_578, 96.2, "measured: 10.4 it/s, 1 thread (RESULTS.md)"),
    ("ResNet-50 (batch 32)", 25_600_000, 351.0,
     "estimated: 32 x 24.6 GFLOP at 32 cores x 70 GFLOP/s"),
)
NODES = (8, 16, 32, 64, 128, 256)
LINKS_GBIT = (10, 25, 100)
ALPHA_S = 10e-6          # latency of one ring step (a message on the wire and through MPI)


def ring_allreduce_s(nbytes, nodes, gbit, alpha=ALPHA_S):
    """Ring all-reduce: 2(N-1)/N * bytes / bandwidth + 2(N-1) * alpha."""
    return 2.0 * (nodes - 1) / nodes * nbytes / (gbit * 1e9 / 8) + 2 * (nodes - 1) * alpha


def model_rows():
    rows = []
    for name, params, compute_ms, source in MODEL_NETS:
        nbytes = 4 * params
        tc = compute_ms / 1e3
        for gbit in LINKS_GBIT:
            for n in NODES:
                t = ring_allreduce_s(nbytes, n, gbit)
                rows.append(dict(net=name, bytes=nbytes, compute_ms=compute_ms, source=source,
                                 gbit=gbit, nodes=n, allreduce_ms=1e3 * t,
                                 efficiency=tc / (tc + t)))   # nothing hidden behind backward
    return rows


def model_table(rows):
    lines = ["| net | MB/step | compute ms | link | " + " | ".join("N=%d" % n for n in NODES)
             + " |", "| --- | ---: | ---: | --- |" + " ---: |" * len(NODES)]
    for name, _, _, _ in MODEL_NETS:
        for gbit in LINKS_GBIT:
            cells = [r for r in rows if r["net"] == name and r["gbit"] == gbit]
            lines.append("| %s | %.2f | %.0f | %d Gb/s | %s |" % (
                name, cells[0]["bytes"] / 1e6, cells[0]["compute_ms"], gbit, " | ".join(
                    "%.0f%% (%.3g ms)" % (100 * c["efficiency"], c["allreduce_ms"])
                    for c in cells)))
    return "\n".join(lines)


def worker(name, layer_wise, warmup, iters):
    """One rank's run: prints a JSON line (the root's figures) on rank 0."""
    from decaf import glog, parallel
    from decaf.solver import get_solver
    w = parallel.world()
    glog.init_log(level=1)
    param = nets.solver_param(name)
    param.layer_wise_reduce = layer_wise
    solver = get_solver(param)
    batches = nets.synthetic_batches(name, seed=w.rank)
    data, label = solver.net.blobs["data"], solver.net.blobs["label"]
    state = {"i": 0}

    def feed():
        d, l = batches[state["i"] % len(batches)]
        data.data[...] = d
        label.data[...] = l
        state["i"] += 1

    solver.add_callback(feed, None)
    sync = parallel.attach(solver)
    solver.step(warmup)
    sync.stats.reset()
    if w.comm is not None:
        w.comm.Barrier()
    start, done = time.perf_counter(), iters
    solver.step(iters)
    if w.comm is not None:
        w.comm.Barrier()
    wall = time.perf_counter() - start
    st = sync.stats
    if w.root:
        print("RESULT " + json.dumps(dict(
            net=name, ranks=w.size, layer_wise=layer_wise, iters=done, wall_s=wall,
            it_s=done / wall, images_s=done * w.size * nets.NETS[name]["batch"] / wall,
            allreduce_ms=1e3 * st.allreduce_s / max(st.steps, 1),
            wait_ms=1e3 * st.wait_s / max(st.steps, 1),
            mbytes=st.bytes / max(st.steps, 1) / 1e6, buckets=len(sync.buckets))), flush=True)


def allreduce_worker(nbytes, reps=30):
    """The all-reduce alone: median ms of Allreduce(nbytes of float32) over the ranks."""
    import numpy as np
    from decaf import parallel
    from mpi4py import MPI
    w = parallel.world()
    buf = np.ones(max(nbytes // 4, 1), np.float32)
    times = []
    for _ in range(reps + 3):
        w.comm.Barrier()
        t = time.perf_counter()
        w.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times.append(time.perf_counter() - t)
    if w.root:
        print("RESULT " + json.dumps(dict(bytes=nbytes, ranks=w.size,
                                          ms=1e3 * statistics.median(times[3:]))), flush=True)


def _run(cmd):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         check=False).stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit("run failed: %s\n%s" % (" ".join(cmd), out[-3000:]))


def _mpi(ranks, args):
    return [shutil.which("mpirun") or "mpirun", "--allow-run-as-root", "--oversubscribe",
            "-np", str(ranks), sys.executable, os.path.abspath(__file__)] + args


def measure(name, ranks, layer_wise):
    warmup, iters = ITERS[name]
    args = ["--worker", name, "--warmup", str(warmup), "--iters", str(iters)] + \
        ([] if layer_wise else ["--once"])
    if ranks == 1:
        return _run([sys.executable, os.path.abspath(__file__)] + args)
    return _run(_mpi(ranks, args))


def summarize(runs):
    keys = sorted({(r["net"], r["ranks"], r["layer_wise"]) for r in runs},
                  key=lambda k: (k[0], k[1], not k[2]))
    rows = []
    for key in keys:
        group = [r for r in runs if (r["net"], r["ranks"], r["layer_wise"]) == key]
        med = {f: statistics.median(r[f] for r in group)
               for f in ("it_s", "images_s", "allreduce_ms", "wait_ms", "mbytes")}
        rows.append(dict(net=key[0], ranks=key[1], layer_wise=key[2], rounds=len(group),
                         buckets=group[0]["buckets"], **med))
    for row in rows:
        base = [r for r in rows if r["net"] == row["net"] and r["ranks"] == 1]
        row["efficiency"] = row["it_s"] / base[0]["it_s"] if base else None
    return rows


def table(rows):
    lines = ["| net | ranks | reduce | it/s | images/s | all-reduce ms/it | of it waiting "
             "| MB/it | efficiency |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for r in rows:
        how = "-" if r["ranks"] == 1 else ("layer-wise, %d bucket%s" % (
            r["buckets"], "" if r["buckets"] == 1 else "s")
                                           if r["layer_wise"] else "once after backward")
        lines.append("| %s | %d | %s | %.1f | %.0f | %.2f | %.2f | %.3f | %s |" % (
            r["net"], r["ranks"], how, r["it_s"], r["images_s"], r["allreduce_ms"],
            r["wait_ms"], r["mbytes"], "%.2f" % r["efficiency"] if r["efficiency"] else "-"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(ITERS), choices=list(ITERS))
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "scaling.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--allreduce-bytes", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--model", action="store_true",
                    help="print the 8-256 node model of docs/SCALING.md and exit")
    a = ap.parse_args(argv)
    if a.model:
        print(model_table(model_rows()))
        return None
    if a.worker:
        return worker(a.worker, not a.once, a.warmup, a.iters)
    if a.allreduce_bytes:
        return allreduce_worker(a.allreduce_bytes)
    runs = []
    for rnd in range(a.rounds):
        for name in a.nets:
            for ranks in a.ranks:
                for layer_wise in ([True] if ranks == 1 else [True, False]):
                    r = measure(name, ranks, layer_wise)
                    r["round"] = rnd
                    runs.append(r)
                    print("round %d %-13s ranks %d %-10s %.1f it/s, all-reduce %.2f ms/it"
                          % (rnd, name, ranks, "layer-wise" if layer_wise else "once",
                             r["it_s"], r["allreduce_ms"]), flush=True)
    rows = summarize(runs)
    alone = [_run(_mpi(2, ["--allreduce-bytes", str(n)])) for n in ALLREDUCE_BYTES]
    with open(a.out, "w") as f:
        json.dump(dict(machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                                    python=platform.python_version(),
                                    load=os.getloadavg()),
                       runs=runs, summary=rows, allreduce_alone=alone), f, indent=1)
    print(table(rows))
    print("\nAll-reduce alone, 2 ranks: " + ", ".join(
        "%s bytes %.3f ms" % (r["bytes"], r["ms"]) for r in alone))


if __name__ == "__main__":
    main()
