"""The ``decaf`` command: Caffe's ``caffe`` tool (``tools/caffe.cpp``) with the same commands,
flags and log lines, plus the other tools of ``decaf/tools`` as subcommands.

    decaf train -solver solver.prototxt [-weights a.caffemodel,b.caffemodel | -snapshot s.solverstate]
    decaf test -model train_val.prototxt -weights w.caffemodel -iterations 100
    decaf time -model train_val.prototxt -iterations 10
    decaf device_query -gpu 0
    decaf convert_mnist_data images labels db      (any module decaf/tools/<name>.py with main(argv))

Flags are parsed as gflags does: ``-solver x``, ``-solver=x``, ``--solver=x``; booleans ``-flag``,
``-noflag``, ``-flag=false``; unknown flags are an error.
"""
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
import time as _time

import numpy as np

from .. import backend, glog as log
from ..errors import DecafError

try:
    from ..data.cli import UsageError, parse_flags
except ImportError:  # pragma: no cover - the data tools ship with decaf
    raise

W = "caffe.cpp"   # log lines carry Caffe's file name, so log parsers keyed on it keep working

FLAG_HELP = [
    ("gpu", "", "Optional; run in GPU mode on given device IDs separated by ','. Use '-gpu all' "
                "to run on all available GPUs."),
    ("solver", "", "The solver definition protocol buffer text file."),
    ("model", "", "The model definition protocol buffer text file."),
    ("phase", "", "Optional; network phase (TRAIN or TEST). Used by 'time' and 'test'."),
    ("level", 0, "Optional; network level."),
    ("stage", "", "Optional; network stages (not to be confused with phase), separated by ','."),
    ("snapshot", "", "Optional; the snapshot solver state to resume training."),
    ("weights", "", "Optional; the pretrained weights to initialize finetuning, separated by ','. "
                    "Cannot be set simultaneously with snapshot."),
    ("iterations", 50, "The number of iterations to run."),
    ("sigint_effect", "stop", "Optional; action to take when a SIGINT signal is received: "
                              "snapshot, stop or none."),
    ("sighup_effect", "snapshot", "Optional; action to take when a SIGHUP signal is received: "
                                  "snapshot, stop or none."),
]
GLOG_FLAGS = [
    ("logtostderr", bool, "Log messages go to stderr instead of logfiles."),
    ("alsologtostderr", bool, "Log messages go to stderr in addition to logfiles."),
    ("minloglevel", int, "Messages logged at a lower level than this don't actually get logged."),
    ("stderrthreshold", int, "Log messages at or above this level are copied to stderr."),
    ("log_dir", str, "Log files are written into this directory."),
]
COMMAND_HELP = [
    ("train", "train or finetune a model"),
    ("test", "score a model"),
    ("device_query", "show GPU diagnostic information"),
    ("time", "benchmark model execution time"),
]


def _flag_spec():
    spec = {name: default for name, default, _ in FLAG_HELP}
    spec.update({"help": False, "helpshort": False, "version": False, "v": 0})
    for name, kind, _ in GLOG_FLAGS:
        spec[name] = kind(getattr(log._cfg, name) or kind())
    return spec


def usage(with_flags=False):
    lines = ["decaf: command line brew (Caffe's `caffe` tool, in Python)",
             "usage: decaf <command> <args>", "", "commands:"]
    lines += ["  %-15s %s" % c for c in COMMAND_HELP]
    tools = tool_names()
    if tools:
        lines += ["", "tools (decaf <tool> -help for their flags):"]
        lines += ["  " + t for t in tools]
    if with_flags:
        lines += ["", "  Flags:"]
        lines += ["    -%s (%s) type: %s default: %r" % (n, h, type(d).__name__, d)
                  for n, d, h in FLAG_HELP]
    return "\n".join(lines)


# -- subcommands from decaf/tools ---------------------------------------------------------------

def tool_names():
    """Modules of decaf/tools (other than this one) that a user can run as subcommands."""
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(m.name for m in pkgutil.iter_modules([here])
                  if m.name not in ("cli", "__main__") and not m.name.startswith("_"))


def find_tool(name):
    """The module ``decaf.tools.<name>`` when it exists and has ``main(argv)``, else None."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or name in ("cli",):
        return None
    if importlib.util.find_spec("decaf.tools." + name) is None:
        return None
    module = importlib.import_module("decaf.tools." + name)
    return module if callable(getattr(module, "main", None)) else None


# -- shared helpers (caffe.cpp) -------------------------------------------------------------------

def get_gpus(flag):
    """-gpu: "" -> [], "all" -> every device, "0,1" -> [0, 1]."""
    if not flag:
        return []
    if flag == "all":
        if not backend.has_gpu():
            raise DecafError("-gpu all: no GPU is available (decaf needs CuPy and a CUDA device)")
        import cupy
        return list(range(cupy.cuda.runtime.getDeviceCount()))
    try:
        return [int(x) for x in flag.split(",") if x.strip() != ""]
    except ValueError:
        raise UsageError("-gpu takes device ids separated by ',' or 'all', got %r" % flag) from None


def use_device(gpus, what="Using GPUs"):
    """Set CPU or GPU mode from the device list, with Caffe's log lines."""
    if not gpus:
        log.info("Use CPU.", W + ":226")
        backend.set_mode_cpu()
        return
    if not backend.has_gpu():
        raise DecafError("GPU %s requested but no GPU is available (decaf needs CuPy and a CUDA "
                         "device); leave out -gpu to run on the CPU" % ",".join(map(str, gpus)))
    if len(gpus) > 1:
        raise DecafError("multi-GPU runs (-gpu %s) are not supported yet: give one device id"
                         % ",".join(map(str, gpus)))
    log.info("%s %s" % (what, ", ".join(map(str, gpus))), W + ":232")
    backend.set_device(gpus[0])
    backend.set_mode_gpu()


def get_phase(flag, default):
    from ..proto import caffe_pb2
    if not flag:
        return default
    if flag in ("TRAIN", "TEST"):
        return getattr(caffe_pb2, flag)
    raise UsageError("phase must be \"TRAIN\" or \"TEST\", got %r" % flag)


def get_stages(flag):
    return [s for s in flag.split(",") if s] if flag else []


def _sync():
    if backend.mode() == backend.GPU:
        import cupy
        cupy.cuda.Device().synchronize()


# -- commands -------------------------------------------------------------------------------------

def train(flags):
    """Train or finetune a model (caffe.cpp train()). Under ``mpirun -np K`` / ``srun``, K
    ranks train together (decaf.parallel); a rank that fails ends the whole job."""
    from .. import parallel
    world = parallel.world()
    with parallel.abort_on_error(world):
        return _train(flags, world)


def _train(flags, world):
    from ..solver import get_solver, read_solver_param, _check_effect
    if not flags["solver"]:
        raise UsageError("Need a solver definition to train.")
    if flags["snapshot"] and flags["weights"]:
        raise UsageError("Give a snapshot to resume training or weights to finetune but not both.")
    sigint = _check_effect("sigint_effect", flags["sigint_effect"])
    sighup = _check_effect("sighup_effect", flags["sighup_effect"])
    if flags["iterations"] != 50:
        log.warning("-iterations is not used by train (set max_iter in the solver)", W + ":180")
    param = read_solver_param(flags["solver"])
    param.train_state.level = flags["level"]
    param.train_state.stage.extend(get_stages(flags["stage"]))
    gpu_flag = flags["gpu"]
    if not gpu_flag and param.HasField("solver_mode") and param.solver_mode == param.GPU:
        if backend.has_gpu():
            gpu_flag = str(param.device_id)
        else:
            log.warning("solver_mode is GPU but no GPU is available (decaf needs CuPy and a CUDA "
                        "device): training on the CPU", W + ":205")
    gpus = get_gpus(gpu_flag)
    if gpus and world.size > 1:
        raise DecafError("-gpu with %d MPI ranks: MPI training runs on the CPU (multi-GPU "
                         "training needs NCCL, which decaf does not have); leave out -gpu"
                         % world.size)
    use_device(gpus)
    if gpus:
        param.device_id = gpus[0]
    if world.size > 1:
        log.info("Training with %d MPI ranks (%s): solver_count %d, the prototxt batch is per "
                 "rank" % (world.size, world.library or "MPI", world.size), W + ":222")
    if flags["snapshot"]:
        del param.weights[:]
    elif flags["weights"]:
        del param.weights[:]
        param.weights.append(flags["weights"])
    solver = get_solver(param, source=flags["solver"])
    solver.sigint_effect, solver.sighup_effect = sigint, sighup
    if flags["snapshot"]:
        log.info("Resuming from " + flags["snapshot"], W + ":255")
        solver.restore(flags["snapshot"])
    sync = None
    if world.size > 1:
        from ..parallel import attach
        sync = attach(solver)
    log.info("Starting Optimization", W + ":262")
    solver.solve()
    if sync is not None and sync.stats.steps:
        st = sync.stats
        log.info("All-reduce: %s ms per iteration (%s ms of it after backward), %s MB sent"
                 % (log.fmt(st.allreduce_s * 1e3 / st.steps), log.fmt(st.wait_s * 1e3 / st.steps),
                    log.fmt(st.bytes / st.steps / 1e6)), "parallel.cpp:0")
    log.info("Optimization Done.", W + ":274")
    return 0


def _fmt_loss(weight, value):
    return " (* %s = %s loss)" % (log.fmt(weight), log.fmt(np.float32(weight * value))) \
        if weight else ""


def test(flags):
    """Score a model: mean of every output over -iterations forward passes (caffe.cpp test())."""
    from ..net import Net
    from ..proto import caffe_pb2
    from ..solver import load_net_weights
    if not flags["model"]:
        raise UsageError("Need a model definition to score.")
    if not flags["weights"]:
        raise UsageError("Need model weights to score.")
    gpus = get_gpus(flags["gpu"])
    use_device(gpus[:1], "Use GPU with device ID")
    net = Net(flags["model"], phase=get_phase(flags["phase"], caffe_pb2.TEST),
              level=flags["level"], stages=get_stages(flags["stage"]))
    load_net_weights(net, flags["weights"])
    n = flags["iterations"]
    log.info("Running for %d iterations." % n, W + ":306")
    scores, ids, loss = [], [], np.float32(0)
    weights = net.blob_loss_weights
    for i in range(n):
        loss += np.float32(net.forward_loss())
        idx = 0
        for j, (name, blob) in enumerate(zip(net.outputs, net.output_blobs)):
            for v in backend.to_numpy(blob.data).reshape(-1).astype(np.float32):
                if i == 0:
                    scores.append(v)
                    ids.append(j)
                else:
                    scores[idx] += v
                idx += 1
                log.info("Batch %d, %s = %s" % (i, name, log.fmt(v)), W + ":328")
    log.info("Loss: %s" % log.fmt(loss / np.float32(max(n, 1))), W + ":333")
    for score, j in zip(scores, ids):
        name = net.outputs[j]
        mean = np.float32(score / np.float32(n))
        log.info("%s = %s%s" % (name, log.fmt(mean),
                                _fmt_loss(np.float32(weights.get(name, 0)), mean)), W + ":346")
    return 0


def _timed_backward(net, i):
    """Layer i's Backward as ``caffe time`` calls it: on every layer, with the net's
    bottom_need_backward (so a deploy net's weight gradients are computed and timed). A layer
    that has no backward at all, where the net needs none, is skipped (Caffe would abort)."""
    try:
        net.layers[i].Backward(net.top_vecs[i], net.bottom_need_backward(i), net.bottom_vecs[i])
    except NotImplementedError:
        if net.layer_need_backward[i]:
            raise


def time(flags):
    """Benchmark forward and backward, per layer and in total (caffe.cpp time())."""
    from ..net import Net
    from ..proto import caffe_pb2
    if not flags["model"]:
        raise UsageError("Need a model definition to time.")
    phase = get_phase(flags["phase"], caffe_pb2.TRAIN)
    use_device(get_gpus(flags["gpu"])[:1], "Use GPU with device ID")
    net = Net(flags["model"], phase=phase, level=flags["level"],
              stages=get_stages(flags["stage"]))
    log.info("Performing Forward", W + ":370")
    log.info("Initial loss: %s" % log.fmt(net.forward_loss()), W + ":375")
    log.info("Performing Backward", W + ":376")
    net.backward_from_to()
    n = flags["iterations"]
    layers = net.layers
    fwd, bwd = np.zeros(len(layers)), np.zeros(len(layers))
    log.info("*** Benchmark begins ***", W + ":383")
    log.info("Testing for %d iterations." % n, W + ":384")
    total_start = _time.perf_counter()
    forward_time = backward_time = 0.0
    for j in range(n):
        iter_start = _time.perf_counter()
        for i, layer in enumerate(layers):
            t = _time.perf_counter()
            layer.Forward(net.bottom_vecs[i], net.top_vecs[i])
            _sync()
            fwd[i] += _time.perf_counter() - t
        forward_time += _time.perf_counter() - iter_start
        back_start = _time.perf_counter()
        for i in range(len(layers) - 1, -1, -1):   # every layer, needed or not, as Caffe
            t = _time.perf_counter()
            _timed_backward(net, i)
            _sync()
            bwd[i] += _time.perf_counter() - t
        backward_time += _time.perf_counter() - back_start
        log.info("Iteration: %d forward-backward time: %s ms."
                 % (j + 1, log.fmt((_time.perf_counter() - iter_start) * 1e3)), W + ":412")
    total_ms = (_time.perf_counter() - total_start) * 1e3
    per = max(n, 1)
    log.info("Average time per layer: ", W + ":414")
    for i, name in enumerate(net.layer_names):
        log.info("%10s\tforward: %s ms." % (name, log.fmt(fwd[i] * 1e3 / per)), W + ":417")
        log.info("%10s\tbackward: %s ms." % (name, log.fmt(bwd[i] * 1e3 / per)), W + ":420")
    log.info("Average Forward pass: %s ms." % log.fmt(forward_time * 1e3 / per), W + ":424")
    log.info("Average Backward pass: %s ms." % log.fmt(backward_time * 1e3 / per), W + ":426")
    log.info("Average Forward-Backward: %s ms." % log.fmt(total_ms / per), W + ":428")
    log.info("Total Time: %s ms." % log.fmt(total_ms), W + ":429")
    log.info("*** Benchmark ends ***", W + ":430")
    return 0


_DEVICE_FIELDS = [
    ("Major revision number", "major"), ("Minor revision number", "minor"), ("Name", "name"),
    ("Total global memory", "totalGlobalMem"), ("Total shared memory per block",
                                                "sharedMemPerBlock"),
    ("Total registers per block", "regsPerBlock"), ("Warp size", "warpSize"),
    ("Maximum memory pitch", "memPitch"), ("Maximum threads per block", "maxThreadsPerBlock"),
    ("Maximum dimension of block", "maxThreadsDim"), ("Maximum dimension of grid", "maxGridSize"),
    ("Clock rate", "clockRate"), ("Total constant memory", "totalConstMem"),
    ("Texture alignment", "textureAlignment"),
    ("Concurrent copy and execution", "deviceOverlap"),
    ("Number of multiprocessors", "multiProcessorCount"),
    ("Kernel execution timeout", "kernelExecTimeoutEnabled"),
]


def device_query(flags):
    """Print the properties of the -gpu devices (Caffe::DeviceQuery)."""
    if not flags["gpu"]:
        raise UsageError("Need a device ID to query (-gpu 0, or -gpu all).")
    log.info("Querying GPUs " + flags["gpu"], W + ":143")
    gpus = get_gpus(flags["gpu"])
    if not backend.has_gpu():
        raise DecafError("no GPU is available (decaf needs CuPy and a CUDA device)")
    import cupy
    for dev in gpus:
        prop = cupy.cuda.runtime.getDeviceProperties(dev)
        log.info("Device id:                     %d" % dev, "common.cpp:178")
        for label, key in _DEVICE_FIELDS:
            v = prop.get(key, "?")
            if isinstance(v, bytes):
                v = v.decode(errors="replace")
            if key in ("deviceOverlap", "kernelExecTimeoutEnabled"):
                v = "Yes" if v else "No"
            if isinstance(v, (tuple, list)):
                v = ", ".join(str(x) for x in v)
            log.info("%-31s%s" % (label + ":", v), "common.cpp:179")
    return 0


COMMANDS = {"train": train, "test": test, "time": time, "device_query": device_query}


def _apply_glog_flags(flags):
    for name, _, _ in GLOG_FLAGS:
        setattr(log._cfg, name, flags[name])


def main(argv=None):
    """Entry point of the ``decaf`` console script; ``argv`` excludes the program name.
    Returns the exit code (0 on success, 1 on a usage error or a failed run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    log.install_logging_handler()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        tool = find_tool(argv[0])
        if tool is not None:
            return tool.main(argv[1:]) or 0
    try:
        flags, positional = parse_flags(argv, _flag_spec())
    except UsageError as e:
        print("ERROR: %s\n\n%s" % (e, usage()), file=sys.stderr)
        return 1
    if flags["help"] or flags["helpshort"]:
        print(usage(with_flags=True))
        return 0
    if flags["version"]:
        from .. import __version__
        print("decaf version " + __version__)
        return 0
    _apply_glog_flags(flags)
    if not positional:
        print(usage(), file=sys.stderr)
        return 1
    command = positional[0]
    if command not in COMMANDS:
        tool = find_tool(command)
        if tool is not None:       # glog flags came before the tool name: hand the rest over
            rest = list(argv)
            rest.remove(command)
            return tool.main(rest) or 0
        print("ERROR: Unknown action: %s\n\n%s" % (command, usage()), file=sys.stderr)
        return 1
    if len(positional) != 1:
        print("ERROR: unexpected arguments: %s\n\n%s" % (" ".join(positional[1:]), usage()),
              file=sys.stderr)
        return 1
    try:
        return COMMANDS[command](flags)
    except UsageError as e:
        print("ERROR: %s\n\n%s" % (e, usage()), file=sys.stderr)
        return 1
    except DecafError as e:
        log.log_exception(e)      # F line with the file:line that raised it
        return 1


if __name__ == "__main__":
    sys.exit(main())
