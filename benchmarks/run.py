"""decaf side by side with PyTorch (CPU training) and OpenCV dnn (CPU inference), one command.

    python benchmarks/run.py                 # everything: 3 training nets, 4 inference models,
                                             # 1 and 2 threads, batch 1 and 16, 5 rounds
    python benchmarks/run.py --quick         # development: one short round, 1 thread, batch 1
    python benchmarks/run.py --nets lenet --models none --threads 1 --rounds 3

Training (``--nets``): Caffe's LeNet, CIFAR-10 quick and a CIFAR ResNet-20 (benchmarks/nets.py)
against the equivalent PyTorch models.  Inference (``--models``, ``--batches``): TEST-phase
forward of the res10 SSD face detector, the WeChat QR detector and super-resolution model and a
ResNet-50 deploy net (random weights) against OpenCV's dnn module reading the same Caffe files.

Every measurement is one run in its own subprocess (so peak memory is per run and thread
settings take effect before NumPy / Numba / PyTorch / OpenCV load): OMP_NUM_THREADS,
NUMBA_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set, PyTorch also gets
torch.set_num_threads and OpenCV cv2.setNumThreads.  Runs are interleaved (decaf first, then the
other framework, the order swapped every round), warm-up iterations are not timed, and the
reported numbers are medians over the rounds; a ratio is the median of the per-round ratios
(decaf's speed / the other's: > 1 means decaf is faster), which is what to trust on a shared,
noisy machine.

Writes benchmarks/results.json (every run) and benchmarks/RESULTS.md (the tables).
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
import inference  # noqa: E402  (benchmarks/inference.py)

DEFAULT_ITERS = {"lenet": (20, 200), "cifar10_quick": (4, 30),       # (warm-up, timed at most)
                 "cifar10_resnet20": (4, 60)}
QUICK_ITERS = {"lenet": (5, 30), "cifar10_quick": (1, 4), "cifar10_resnet20": (1, 6)}
SECONDS = 6.0     # a timed run also stops after this long (in whole steps of STEP iterations)
STEP = {"lenet": 10, "cifar10_quick": 2, "cifar10_resnet20": 2}
INFER_ITERS = (3, 200)          # inference: warm-up forwards, timed forwards at most
INFER_SECONDS = 4.0


# -- workers: one training run each, printing one JSON line ------------------------------------

def _peak_rss_mb():
    """This process's peak resident memory: VmHWM (Linux; reset by exec, where ru_maxrss keeps
    the high-water mark of the orchestrator that forked the worker), else ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
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


def work_decaf(name, warmup, iters, seconds=SECONDS):
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
    done, wall, cpu = _timed(solver.step, warmup, iters, STEP[name], seconds)
    return dict(framework="decaf", version=getattr(decaf, "__version__", "?"), iters=done,
                wall_s=wall, cpu_s=cpu, loss=float(solver.smoothed_loss))


def work_torch(name, warmup, iters, threads, seconds=SECONDS):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nets.torch_model(name, torch)
    model.train()
    sp = nets.solver_param(name)
    opt = torch.optim.SGD(nets.torch_param_groups(name, model, sp), lr=sp.base_lr,
                          momentum=sp.momentum)
    factor = nets.torch_lr_lambda(sp)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor) if factor is not None else None
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
        state["loss"] = float(loss.detach())

    done, wall, cpu = _timed(step, warmup, iters, STEP[name], seconds)
    return dict(framework="pytorch", version=torch.__version__, iters=done, wall_s=wall,
                cpu_s=cpu, loss=state["loss"], threads_torch=torch.get_num_threads())


def worker(args):
    seconds = args.seconds
    if args.worker in ("decaf", "pytorch"):
        warmup, iters = args.warmup, args.iters
        if args.worker == "decaf":
            res = work_decaf(args.net, warmup, iters, seconds)
        else:
            res = work_torch(args.net, warmup, iters, args.threads[0], seconds)
        res.update(net=args.net, its=res["iters"] / res["wall_s"])
    else:
        shape = tuple(int(d) for d in args.shape.split(","))
        common = (args.model, args.proto, args.weights, shape, args.warmup, args.iters, seconds)
        if args.worker == "decaf-infer":
            res = inference.work_decaf(*common)
        else:
            res = inference.work_opencv(*common, args.threads[0])
        res.update(model=args.model, batch=shape[0], ms=1e3 * res["wall_s"] / res["iters"])
    res.update(threads=args.threads[0], warmup=args.warmup, peak_rss_mb=_peak_rss_mb())
    print("RESULT " + json.dumps(res))


# -- the orchestrator ---------------------------------------------------------------------------

def run_one(cmd_args, threads, timeout=900):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("GLOG_minloglevel", "1")
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(threads)] + cmd_args
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("%s failed (exit %d):\n%s" % (" ".join(cmd_args), proc.returncode,
                                                     proc.stderr[-3000:]))


def _median(values):
    return statistics.median(values) if values else None


def _pair(sel, key, mine, other, speed):
    """Medians of ``key`` for both frameworks and the median of the per-round speed ratios
    (decaf / other for a rate, other / decaf for a time)."""
    d = sorted((r for r in sel if r["framework"] == mine), key=lambda r: r["round"])
    t = sorted((r for r in sel if r["framework"] == other), key=lambda r: r["round"])
    ratios = [(a[key] / b[key]) if speed else (b[key] / a[key]) for a, b in zip(d, t)]
    return dict(rounds=len(ratios), decaf=_median([r[key] for r in d]),
                other=_median([r[key] for r in t]), ratio=_median(ratios),
                ratio_min=min(ratios) if ratios else None,
                ratio_max=max(ratios) if ratios else None,
                decaf_rss_mb=_median([r["peak_rss_mb"] for r in d]),
                other_rss_mb=_median([r["peak_rss_mb"] for r in t]))


def summarize(runs, flops):
    rows = []
    train = [r for r in runs if "net" in r]
    keys = sorted({(r["net"], r["threads"]) for r in train},
                  key=lambda k: (list(nets.NETS).index(k[0]), k[1]))
    for name, threads in keys:
        sel = [r for r in train if r["net"] == name and r["threads"] == threads]
        p = _pair(sel, "its", "decaf", "pytorch", True)
        row = dict(kind="train", net=name, threads=threads, rounds=p["rounds"],
                   decaf_its=p["decaf"], pytorch_its=p["other"], ratio=p["ratio"],
                   ratio_min=p["ratio_min"], ratio_max=p["ratio_max"],
                   decaf_rss_mb=p["decaf_rss_mb"], pytorch_rss_mb=p["other_rss_mb"],
                   gflop_per_iter=flops[name] / 1e9)
        for fw in ("decaf", "pytorch"):
            if row[fw + "_its"]:
                row[fw + "_gflops"] = row[fw + "_its"] * flops[name] / 1e9
        rows.append(row)
    infer = [r for r in runs if "model" in r]
    keys = sorted({(r["model"], r["batch"], r["threads"]) for r in infer},
                  key=lambda k: (list(nets.INFER).index(k[0]), k[1], k[2]))
    for model, batch, threads in keys:
        sel = [r for r in infer if (r["model"], r["batch"], r["threads"]) == (model, batch, threads)]
        p = _pair(sel, "ms", "decaf", "opencv", False)
        rows.append(dict(kind="infer", model=model, batch=batch, threads=threads,
                         rounds=p["rounds"], decaf_ms=p["decaf"], opencv_ms=p["other"],
                         ratio=p["ratio"], ratio_min=p["ratio_min"], ratio_max=p["ratio_max"],
                         decaf_rss_mb=p["decaf_rss_mb"], opencv_rss_mb=p["other_rss_mb"]))
    return rows


def _f(v, fmt):
    return fmt % v if v is not None else "-"


def markdown(rows, meta):
    lines = [
        "## Training (forward + backward + SGD update), iterations / s", "",
        "| net | threads | decaf it/s | PyTorch it/s | decaf / PyTorch (min-max) | "
        "decaf GFLOP/s | PyTorch GFLOP/s | decaf peak RSS MB | PyTorch peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.get("kind", "train") != "train":
            continue
        lines.append("| %s | %d | %s | %s | **%s** (%s-%s) | %s | %s | %s | %s |" % (
            r["net"], r["threads"], _f(r["decaf_its"], "%.1f"), _f(r["pytorch_its"], "%.1f"),
            _f(r["ratio"], "%.2fx"), _f(r["ratio_min"], "%.2f"), _f(r["ratio_max"], "%.2f"),
            _f(r.get("decaf_gflops"), "%.1f"), _f(r.get("pytorch_gflops"), "%.1f"),
            _f(r["decaf_rss_mb"], "%.0f"), _f(r["pytorch_rss_mb"], "%.0f")))
    lines += [
        "", "## Inference (TEST-phase forward of a deploy net), ms / forward", "",
        "| model | batch | threads | decaf ms | OpenCV ms | decaf speed / OpenCV (min-max) | "
        "decaf peak RSS MB | OpenCV peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.get("kind") != "infer":
            continue
        lines.append("| %s | %d | %d | %s | %s | **%s** (%s-%s) | %s | %s |" % (
            r["model"], r["batch"], r["threads"], _f(r["decaf_ms"], "%.1f"),
            _f(r["opencv_ms"], "%.1f"), _f(r["ratio"], "%.2fx"), _f(r["ratio_min"], "%.2f"),
            _f(r["ratio_max"], "%.2f"), _f(r["decaf_rss_mb"], "%.0f"),
            _f(r["opencv_rss_mb"], "%.0f")))
    head = ["# decaf vs PyTorch (CPU training) and OpenCV dnn (CPU inference)", "",
            "Command: `%s` (see benchmarks/README.md; where the time goes, what each "
            "optimisation gained and what is still missing: benchmarks/NOTES.md)"
            % meta["command"].strip(), "",
            "Machine: %s, %s CPUs, Python %s, NumPy %s, Numba %s, PyTorch %s, OpenCV %s. %s"
            % (meta["machine"], meta["cpus"], meta["python"], meta["numpy"],
               meta.get("numba", "?"), meta["torch"], meta.get("opencv", "?"), meta["date"]), "",
            "Medians of %d interleaved rounds, each run in its own process; warm-up not timed; "
            "ratios are decaf's speed over the other framework's (> 1: decaf faster), median of "
            "the per-round ratios. Training: Caffe's solver settings (momentum, weight decay, "
            "lr policy, lr_mult); GFLOP/s counts the conv / inner-product GEMM FLOPs of forward "
            "+ backward (%s). Peak RSS = the run's process's VmHWM." % (
                meta["rounds"], ", ".join("%s %.3f GFLOP/iter" % (k, v / 1e9)
                                          for k, v in meta["flops"].items())), ""]
    return "\n".join(head + lines) + "\n"


def _versions():
    out = {}
    import numpy
    out["numpy"] = numpy.__version__
    for mod, key in (("torch", "torch"), ("cv2", "opencv"), ("numba", "numba")):
        try:
            out[key] = __import__(mod).__version__
        except ImportError:
            out[key] = "not installed"
    return out


def _train_runs(args, rnd, runs):
    for name in args.nets:
        warmup, iters = (QUICK_ITERS if args.quick else DEFAULT_ITERS)[name]
        warmup = args.warmup if args.warmup is not None else warmup
        iters = args.iters if args.iters is not None else iters
        for t in args.threads:
            order = ["decaf", "pytorch"] if rnd % 2 == 0 else ["pytorch", "decaf"]
            for fw in order:
                if fw not in args.frameworks:
                    continue
                res = run_one(["--worker", fw, "--nets", name, "--warmup", str(warmup),
                               "--iters", str(iters), "--seconds", str(args.seconds)], t)
                res["round"] = rnd
                runs.append(res)
                print("round %d  %-16s %d thread(s)  %-8s %7.2f it/s  %6.0f MB" % (
                    rnd, name, t, fw, res["its"], res["peak_rss_mb"]), flush=True)


def _infer_runs(args, rnd, runs, prepared):
    warmup, iters = INFER_ITERS
    for model in args.models:
        for batch in args.batches:
            proto, weights, shape = prepared[(model, batch)]
            for t in args.threads:
                order = ["decaf", "opencv"] if rnd % 2 == 0 else ["opencv", "decaf"]
                for fw in order:
                    if fw not in args.frameworks:
                        continue
                    res = run_one(["--worker", fw + "-infer" if fw == "decaf" else fw,
                                   "--model", model, "--proto", proto, "--weights", weights,
                                   "--shape", ",".join(map(str, shape)),
                                   "--warmup", str(warmup), "--iters", str(iters),
                                   "--seconds", str(args.infer_seconds)], t)
                    res["round"] = rnd
                    runs.append(res)
                    print("round %d  %-14s batch %2d  %d thread(s)  %-7s %8.1f ms  %6.0f MB" % (
                        rnd, model, batch, t, fw, res["ms"], res["peak_rss_mb"]), flush=True)


def _cpu_model():
    """The CPU's model name (/proc/cpuinfo) and architecture: ratios depend on the CPU (the
    same VM kind has run on an AVX-512 Xeon and on an AMD EPYC, benchmarks/NOTES.md 18)."""
    arch = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "%s (%s)" % (line.split(":", 1)[1].strip(), arch)
    except OSError:
        pass
    return platform.processor() or arch


def orchestrate(args):
    from decaf import glog
    from decaf.net import Net
    glog.init_log(level=1)
    flops = {n: nets.flops_per_iteration(Net(nets.train_net_param(n))) for n in args.nets}
    prepared = {(m, b): inference.prepare(m, b) for m in args.models for b in args.batches}
    runs = []
    meta = dict(command=" ".join(["python benchmarks/run.py"] + sys.argv[1:]),
                machine=_cpu_model(), cpus=os.cpu_count(),
                python=platform.python_version(), date=time.strftime("%Y-%m-%d"),
                rounds=args.rounds, flops=flops, **_versions())
    for rnd in range(args.rounds):
        _train_runs(args, rnd, runs)
        _infer_runs(args, rnd, runs, prepared)
        meta["rounds"] = rnd + 1
        md = _write(args, runs, flops, meta)      # after every round: a cut-short run keeps
    print()                                       # its finished rounds
    print(md)


def _write(args, runs, flops, meta):
    rows = summarize(runs, flops)
    md = markdown(rows, meta)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(meta=meta, summary=rows, runs=runs), fh, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(md)
    return md


def _list(s):
    return [] if s in ("", "none") else [v for v in s.split(",") if v]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(nets.NETS), type=_list,
                    help="training nets (none: skip training)")
    ap.add_argument("--models", default=",".join(nets.INFER), type=_list,
                    help="inference models (none: skip inference)")
    ap.add_argument("--batches", default="1,16", type=lambda s: [int(b) for b in _list(s)])
    ap.add_argument("--threads", default="1,2",
                    type=lambda s: [int(t) for t in s.split(",") if t])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=SECONDS,
                    help="a timed training run stops after this long")
    ap.add_argument("--infer-seconds", type=float, default=INFER_SECONDS)
    ap.add_argument("--frameworks", default="decaf,pytorch,opencv", type=_list)
    ap.add_argument("--quick", action="store_true",
                    help="development: 1 round, 1 thread, batch 1, short runs; writes no files "
                         "unless --json / --markdown are given")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the markdown tables from the existing --json file, run nothing")
    ap.add_argument("--worker", choices=["decaf", "pytorch", "decaf-infer", "opencv"],
                    help=argparse.SUPPRESS)
    for hidden in ("--model", "--proto", "--weights", "--shape"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        args.rounds = 1 if "--rounds" not in given else args.rounds
        args.threads = [1] if "--threads" not in given else args.threads
        args.batches = [1] if "--batches" not in given else args.batches
        args.seconds = 1.5 if "--seconds" not in given else args.seconds
        args.infer_seconds = 1.0 if "--infer-seconds" not in given else args.infer_seconds
    elif not args.worker:
        args.json = args.json or os.path.join(HERE, "results.json")
        args.markdown = args.markdown or os.path.join(HERE, "RESULTS.md")
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
    for m in args.models:
        if m not in nets.INFER:
            ap.error("unknown model %r (known: %s)" % (m, ", ".join(nets.INFER)))
    if args.worker:
        if args.worker in ("decaf", "pytorch"):
            args.net = args.nets[0]
            w, i = DEFAULT_ITERS[args.net]
            args.warmup = w if args.warmup is None else args.warmup
            args.iters = i if args.iters is None else args.iters
        worker(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
