"""Train decaf and PyTorch (CPU) side by side on Caffe's LeNet and CIFAR-10 quick nets.

    python benchmarks/run.py                       # both nets, 1 and 2 threads, 5 rounds
    python benchmarks/run.py --nets lenet --threads 1 --rounds 3

Every measurement is one training run in its own subprocess (so peak memory is per run and
thread settings take effect before NumPy / PyTorch load): OPENBLAS_NUM_THREADS, OMP_NUM_THREADS
and MKL_NUM_THREADS are set, and PyTorch also gets torch.set_num_threads.  Runs are interleaved
(decaf, PyTorch, decaf, PyTorch, ... with the order swapped every round), warm-up iterations are
not timed, and the reported numbers are medians over the rounds; the decaf / PyTorch ratio is
the median of the per-round ratios, which is what to trust on a shared, noisy machine.

Writes benchmarks/results.json (every run) and benchmarks/RESULTS.md (the table).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import nets  # noqa: E402  (benchmarks/nets.py)

DEFAULT_ITERS = {"lenet": (20, 200), "cifar10_quick": (4, 30)}   # (warm-up, timed at most)
SECONDS = 6.0     # a timed run also stops after this long (in whole steps of STEP iterations)
STEP = {"lenet": 10, "cifar10_quick": 2}


# -- workers: one training run each, printing one JSON line ------------------------------------

def _peak_rss_mb():
    import resource
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2 ** 20


def _timed(step, warmup, iters, chunk, seconds):
    """Run ``warmup`` untimed iterations, then up to ``iters`` timed ones (in steps of
    ``chunk``, stopping early after ``seconds``): (iterations, wall s, cpu s)."""
    step(warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < iters:
        n = min(chunk, iters - done)
        step(n)
        done += n
        if time.perf_counter() - wall > seconds:
            break
    return done, time.perf_counter() - wall, time.process_time() - cpu


def work_decaf(name, warmup, iters):
    import decaf
    from decaf import glog
    from decaf.solver import get_solver
    glog.init_log(level=1)               # warnings and up: no per-layer setup lines
    solver = get_solver(nets.solver_param(name))
    batches = nets.synthetic_batches(name)
    data, label = solver.net.blobs["data"], solver.net.blobs["label"]
    state = {"i": 0}

    def feed():                          # the next batch, as a data layer would provide it
        d, l = batches[state["i"] % len(batches)]
        data.data[...] = d
        label.data[...] = l
        state["i"] += 1

    solver.add_callback(feed, None)
    done, wall, cpu = _timed(solver.step, warmup, iters, STEP[name], SECONDS)
    return dict(framework="decaf", version=getattr(decaf, "__version__", "?"), iters=done,
                wall_s=wall, cpu_s=cpu, loss=float(solver.smoothed_loss))


def _torch_model(name, torch):
    nn = torch.nn
    if name == "lenet":
        model = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Flatten(), nn.Linear(800, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):     # Caffe's xavier filler, zero bias
                fan_in = m.weight[0].numel()
                bound = (3.0 / fan_in) ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)
        return model
    model = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    stds = iter([1e-4, 1e-2, 1e-2, 0.1, 0.1])               # the prototxt's gaussian fillers
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, next(stds))
            nn.init.zeros_(m.bias)
    return model


def work_torch(name, warmup, iters, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _torch_model(name, torch)
    sp = nets.solver_param(name)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    base_lr = sp.base_lr
    opt = torch.optim.SGD([{"params": weights, "lr": base_lr},
                           {"params": biases, "lr": 2 * base_lr}],     # lr_mult 2 on biases
                          lr=base_lr, momentum=sp.momentum, weight_decay=sp.weight_decay)
    if sp.lr_policy == "inv":
        gamma, power = sp.gamma, sp.power
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda it: (1.0 + gamma * it) ** (-power))
    else:
        sched = None
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = [(torch.from_numpy(d), torch.from_numpy(l).long())
               for d, l in nets.synthetic_batches(name)]
    state = {"i": 0, "loss": 0.0}

    def step(n):
        for _ in range(n):
            x, y = batches[state["i"] % len(batches)]
            state["i"] += 1
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        state["loss"] = float(loss)

    done, wall, cpu = _timed(step, warmup, iters, STEP[name], SECONDS)
    return dict(framework="pytorch", version=torch.__version__, iters=done, wall_s=wall,
                cpu_s=cpu, loss=state["loss"], threads_torch=torch.get_num_threads())


def worker(args):
    warmup, iters = args.warmup, args.iters
    if args.worker == "decaf":
        res = work_decaf(args.net, warmup, iters)
    else:
        res = work_torch(args.net, warmup, iters, args.threads[0])
    res.update(net=args.net, threads=args.threads[0], warmup=warmup,
               its=res["iters"] / res["wall_s"], peak_rss_mb=_peak_rss_mb())
    print("RESULT " + json.dumps(res))


# -- the orchestrator ---------------------------------------------------------------------------

def run_one(framework, name, threads, warmup, iters, timeout=900):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("GLOG_minloglevel", "1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--nets", name,
           "--threads", str(threads), "--warmup", str(warmup), "--iters", str(iters)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("%s run failed (exit %d):\n%s" % (framework, proc.returncode,
                                                         proc.stderr[-3000:]))


def _median(values):
    return statistics.median(values) if values else None


def summarize(runs, flops):
    rows = []
    keys = sorted({(r["net"], r["threads"]) for r in runs},
                  key=lambda k: (list(nets.NETS).index(k[0]), k[1]))
    for name, threads in keys:
        sel = [r for r in runs if r["net"] == name and r["threads"] == threads]
        d = [r for r in sel if r["framework"] == "decaf"]
        t = [r for r in sel if r["framework"] == "pytorch"]
        ratios = [a["its"] / b["its"] for a, b in zip(
            sorted(d, key=lambda r: r["round"]), sorted(t, key=lambda r: r["round"]))]
        row = dict(net=name, threads=threads, rounds=len(ratios),
                   decaf_its=_median([r["its"] for r in d]),
                   pytorch_its=_median([r["its"] for r in t]),
                   ratio=_median(ratios), ratio_min=min(ratios) if ratios else None,
                   ratio_max=max(ratios) if ratios else None,
                   decaf_rss_mb=_median([r["peak_rss_mb"] for r in d]),
                   pytorch_rss_mb=_median([r["peak_rss_mb"] for r in t]),
                   gflop_per_iter=flops[name] / 1e9)
        for fw in ("decaf", "pytorch"):
            if row[fw + "_its"]:
                row[fw + "_gflops"] = row[fw + "_its"] * flops[name] / 1e9
        rows.append(row)
    return rows


def markdown(rows, meta):
    def f(v, fmt):
        return fmt % v if v is not None else "-"
    lines = [
        "| net | threads | decaf it/s | PyTorch it/s | decaf / PyTorch (min-max) | "
        "decaf GFLOP/s | PyTorch GFLOP/s | decaf peak RSS MB | PyTorch peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append("| %s | %d | %s | %s | **%s** (%s-%s) | %s | %s | %s | %s |" % (
            r["net"], r["threads"], f(r["decaf_its"], "%.1f"), f(r["pytorch_its"], "%.1f"),
            f(r["ratio"], "%.2fx"), f(r["ratio_min"], "%.2f"), f(r["ratio_max"], "%.2f"),
            f(r.get("decaf_gflops"), "%.1f"), f(r.get("pytorch_gflops"), "%.1f"),
            f(r["decaf_rss_mb"], "%.0f"), f(r["pytorch_rss_mb"], "%.0f")))
    head = ["# decaf vs PyTorch (CPU): training throughput", "",
            "Command: `%s` (see benchmarks/README.md; where the time goes, what each "
            "optimisation gained and what is still missing: benchmarks/NOTES.md)"
            % meta["command"].strip(), "",
            "Machine: %s, %s CPUs, Python %s, NumPy %s, PyTorch %s. %s" % (
                meta["machine"], meta["cpus"], meta["python"], meta["numpy"], meta["torch"],
                meta["date"]), "",
            "One iteration = forward + backward + SGD update (Caffe's solver settings: momentum, "
            "weight decay, lr policy, lr_mult 2 on biases). Medians of %d interleaved rounds, "
            "each run in its own process; warm-up not timed. GFLOP/s counts the conv / "
            "inner-product GEMM FLOPs of forward + backward (%s). Peak RSS = "
            "`ru_maxrss` of the run's process." % (
                meta["rounds"], ", ".join("%s %.3f GFLOP/iter" % (k, v / 1e9)
                                          for k, v in meta["flops"].items())), ""]
    return "\n".join(head + lines) + "\n"


def orchestrate(args):
    names, threads = args.nets, args.threads
    from decaf import glog
    from decaf.net import Net
    glog.init_log(level=1)
    flops = {n: nets.flops_per_iteration(Net(nets.train_net_param(n))) for n in names}
    runs = []
    for rnd in range(args.rounds):
        for name in names:
            warmup, iters = DEFAULT_ITERS[name]
            warmup = args.warmup if args.warmup is not None else warmup
            iters = args.iters if args.iters is not None else iters
            for t in threads:
                order = ["decaf", "pytorch"] if rnd % 2 == 0 else ["pytorch", "decaf"]
                for fw in order:
                    if fw not in args.frameworks:
                        continue
                    res = run_one(fw, name, t, warmup, iters)
                    res["round"] = rnd
                    runs.append(res)
                    print("round %d  %-14s %d thread(s)  %-8s %7.2f it/s  %6.0f MB" % (
                        rnd, name, t, fw, res["its"], res["peak_rss_mb"]), flush=True)
    rows = summarize(runs, flops)
    import numpy
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    meta = dict(command=" ".join(["python benchmarks/run.py"] + sys.argv[1:]),
                machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                python=platform.python_version(), numpy=numpy.__version__, torch=torch_version,
                date=time.strftime("%Y-%m-%d"), rounds=args.rounds, flops=flops)
    with open(args.json, "w") as fh:
        json.dump(dict(meta=meta, summary=rows, runs=runs), fh, indent=1)
    md = markdown(rows, meta)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(md)
    print()
    print(md)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="lenet,cifar10_quick",
                    type=lambda s: [n for n in s.split(",") if n])
    ap.add_argument("--threads", default="1,2",
                    type=lambda s: [int(t) for t in s.split(",") if t])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--frameworks", default="decaf,pytorch", type=lambda s: s.split(","))
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--markdown", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the markdown table from the existing --json file, run nothing")
    ap.add_argument("--worker", choices=["decaf", "pytorch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.report_only:
        with open(args.json) as fh:
            saved = json.load(fh)
        md = markdown(saved["summary"], saved["meta"])
        with open(args.markdown, "w") as fh:
            fh.write(md)
        print(md)
        return
    for n in args.nets:
        if n not in nets.NETS:
            ap.error("unknown net %r (known: %s)" % (n, ", ".join(nets.NETS)))
    if args.worker:
        args.net = args.nets[0]
        if args.warmup is None or args.iters is None:
            w, i = DEFAULT_ITERS[args.net]
            args.warmup = w if args.warmup is None else args.warmup
            args.iters = i if args.iters is None else args.iters
        worker(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
