"""The Solver loop (Caffe's Solver::Step / Solve / Test / Snapshot / Restore): display lines,
smoothed loss, testing, test nets and states, callbacks, snapshots (names, formats, atomic
writes), restoring Caffe's snapshot files, signals, and resume equivalence across processes."""
import io
import os
import re
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from decaf import glog as log
from decaf.errors import SolverError
from decaf.proto import caffe_pb2
from decaf.solver import SGDSolver, get_solver
from decaf.solver_state import read_solver_state
from decaf.testing.golden import chdir, require_golden

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ ([\w.]+):\d+\] (.*)$")

NET = """
name: "LoopNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 4 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""


def batch(it, n=6):
    rs = np.random.RandomState(1000 + it)
    return rs.randn(n, 4).astype(np.float32), rs.randint(0, 3, n).astype(np.float32)


def make_solver(tmp_path=None, net=NET, cls=get_solver, feed=True, **fields):
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", momentum=0.9,
                                  weight_decay=0.001, max_iter=6, display=0, random_seed=7,
                                  snapshot_after_train=False, solver_mode=caffe_pb2.SolverParameter.CPU)
    p.net_param.CopyFrom(text_format.Parse(net, caffe_pb2.NetParameter()))
    if tmp_path is not None:
        p.snapshot_prefix = str(tmp_path / "snap")
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        elif hasattr(v, "CopyFrom"):
            getattr(p, k).CopyFrom(v)
        else:
            setattr(p, k, v)
    solver = cls(p)
    if feed:
        feed_batches(solver)
    for t in solver.test_nets:
        x, y = batch(-1)
        t.blobs["data"].data[...] = x
        t.blobs["label"].data[...] = y
    return solver


def feed_batches(solver):
    def on_start():
        x, y = batch(solver.iter)
        solver.net.blobs["data"].data[...] = x
        solver.net.blobs["label"].data[...] = y
    solver.add_callback(on_start, None)


class Capture:
    """Log lines of a block, as (severity, file, message)."""

    def __enter__(self):
        self.buf = io.StringIO()
        log.set_stream(self.buf)
        return self

    def __exit__(self, *exc):
        log.set_stream(None)

    @property
    def lines(self):
        out = []
        for line in self.buf.getvalue().splitlines():
            m = PREFIX.match(line)
            if m:
                out.append(m.groups())
            else:       # glog prefixes a multi-line message (the parameter dumps) once
                assert out, "not a glog line: %r" % line
                out[-1] = out[-1][:2] + (out[-1][2] + "\n" + line,)
        return out

    def messages(self, pattern):
        rx = re.compile(pattern)
        return [rx.search(msg) for _, _, msg in self.lines if rx.search(msg)]


# -- display, smoothed loss, lr lines ------------------------------------------------------

def test_display_smoothed_loss_and_lr_lines():
    solver = make_solver(display=2, average_loss=3, max_iter=8)
    losses = []
    solver.add_callback(None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    with Capture() as cap:
        solver.solve()
    shown = cap.messages(r"^Iteration (\d+) \((\S+) iter/s, (\S+)s/2 iters\), loss = (\S+)$")
    assert [int(m.group(1)) for m in shown] == [0, 2, 4, 6]
    for m in shown:
        it = int(m.group(1))
        window = losses[max(0, it - 2):it + 1]
        np.testing.assert_allclose(float(m.group(4)), np.mean(window), rtol=2e-5)
    outputs = cap.messages(r"^    Train net output #0: loss = (\S+) \(\* 1 = (\S+) loss\)$")
    assert len(outputs) == 4
    for m, it in zip(outputs, [0, 2, 4, 6]):
        np.testing.assert_allclose(float(m.group(1)), losses[it], rtol=2e-5)
    lrs = [(f, m) for _, f, m in cap.lines if ", lr = " in m]
    assert lrs == [("sgd_solver.cpp", "Iteration %d, lr = 0.1" % i) for i in (0, 2, 4, 6)]
    # after max_iter: a forward-only pass joins the smoothing window
    final = cap.messages(r"^Iteration 8, loss = (\S+)$")
    assert len(final) == 1
    msgs = [m for _, _, m in cap.lines]
    assert msgs[0] == "Solving LoopNet" and msgs[1] == "Learning Rate Policy: fixed"
    assert msgs[-1] == "Optimization Done."
    assert {f for _, f, m in cap.lines if m.startswith("Iteration ")} <= {"solver.cpp",
                                                                          "sgd_solver.cpp"}


def test_iter_size_averages_losses_and_gradients():
    a = make_solver(iter_size=1, max_iter=1, display=1)
    b = make_solver(iter_size=3, max_iter=1, display=1)
    with Capture() as cap:
        a.step(1)
        b.step(1)
    shown = [float(m.group(1)) for m in cap.messages(r"loss = (\S+)$")]
    np.testing.assert_allclose(shown[0], shown[1], rtol=1e-6)   # same batch: same mean loss
    np.testing.assert_allclose(a.net.params["ip"][0].data, b.net.params["ip"][0].data, rtol=1e-5)


# -- testing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("init", [True, False])
def test_test_schedule_and_output_lines(init):
    solver = make_solver(test_iter=[2], test_interval=3, max_iter=6, test_initialization=init,
                         test_compute_loss=True)
    with Capture() as cap:
        solver.solve()
    tested = [int(m.group(1)) for m in cap.messages(r"^Iteration (\d+), Testing net \(#0\)$")]
    assert tested == ([0, 3, 6] if init else [3, 6])
    test_net = solver.test_nets[0]
    out = test_net.forward()
    acc = cap.messages(r"^    Test net output #\d: accuracy = (\S+)$")
    loss = cap.messages(r"^    Test net output #\d: loss = (\S+) \(\* 1 = (\S+) loss\)$")
    assert len(acc) == len(loss) == len(tested)
    np.testing.assert_allclose(float(acc[-1].group(1)), out["accuracy"], rtol=1e-5)
    np.testing.assert_allclose(float(loss[-1].group(1)), out["loss"], rtol=1e-5)
    np.testing.assert_allclose(float(cap.messages(r"^Test loss: (\S+)$")[-1].group(1)),
                               out["loss"], rtol=1e-5)
    assert not test_net.layer_index.get("acc") is None and "acc" not in solver.net.layer_index


def test_outputs_are_numbered_in_caffes_order():
    """Caffe's net outputs come from a std::set of blob names: sorted, so accuracy is #0."""
    solver = make_solver(test_iter=[1], test_interval=1, max_iter=1)
    with Capture() as cap:
        solver.test_all()
    assert [m.group(1) for m in cap.messages(r"^    Test net output #\d: (\w+) = ")] == \
        ["accuracy", "loss"]


STAGED = NET + """
layer { name: "only_a" type: "Reduction" bottom: "ip" top: "ra" include { stage: "a" } }
layer { name: "only_b" type: "Reduction" bottom: "ip" top: "rb" include { stage: "b" } }
layer { name: "deep" type: "Reduction" bottom: "ip" top: "rd" include { min_level: 2 } }
"""


def test_several_test_nets_with_states_and_train_state():
    states = [caffe_pb2.NetState(stage=["a"]), caffe_pb2.NetState(stage=["b"], level=3)]
    solver = make_solver(net=STAGED, test_iter=[1, 2], test_interval=2, max_iter=2,
                         test_state=states, train_state=caffe_pb2.NetState(stage=["b"]))
    assert [t.phase for t in solver.test_nets] == [caffe_pb2.TEST, caffe_pb2.TEST]
    assert "only_a" in solver.test_nets[0].layer_index and "deep" not in solver.test_nets[0].layer_index
    assert "only_b" in solver.test_nets[1].layer_index and "deep" in solver.test_nets[1].layer_index
    assert solver.net.phase == caffe_pb2.TRAIN and "only_b" in solver.net.layer_index
    with Capture() as cap:
        solver.solve()
    assert [m.group(0) for m in cap.messages(r"Testing net \(#\d\)")] == \
        ["Testing net (#0)", "Testing net (#1)"] * 2
    # test nets share the train net's weights
    assert solver.test_nets[1].params["ip"][0].data is not None
    np.testing.assert_array_equal(solver.test_nets[1].params["ip"][0].data,
                                  solver.net.params["ip"][0].data)


def test_test_net_param_plus_generic_net():
    p_test = text_format.Parse(NET, caffe_pb2.NetParameter())
    solver = make_solver(test_net_param=[p_test], test_iter=[1, 1], test_interval=5)
    assert len(solver.test_nets) == 2


@pytest.mark.parametrize("fields,match", [
    (dict(test_iter=[1]), "test_interval"),
    (dict(test_iter=[1], test_interval=2, test_state=[caffe_pb2.NetState(), caffe_pb2.NetState()]),
     "test_state"),
    (dict(average_loss=0), "average_loss"),
])
def test_bad_test_settings(fields, match):
    with pytest.raises(SolverError, match=match):
        make_solver(**fields)


def test_test_iter_needed_for_each_test_net():
    p_test = text_format.Parse(NET, caffe_pb2.NetParameter())
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", test_interval=1)
    p.train_net_param.CopyFrom(p_test)
    p.test_net_param.add().CopyFrom(p_test)
    with pytest.raises(SolverError, match="test_iter must be specified"):
        SGDSolver(p)


# -- callbacks, seeds, weights ------------------------------------------------------------------

def test_callbacks_run_at_caffes_points():
    solver = make_solver(iter_size=2, max_iter=3)
    events = []
    w = solver.net.params["ip"][0]

    def ready():
        events.append(("ready", solver.iter, bool(np.any(w.diff != 0))))
        events.append(("data", w.data.copy()))

    class Both:
        def on_start(self):
            events.append(("start", solver.iter))

        def on_gradients_ready(self):
            pass
    solver.add_callback(Both())
    solver.add_callback(None, ready)
    before = w.data.copy()
    solver.step(3)
    starts = [e for e in events if e[0] == "start"]
    assert starts == [("start", 0), ("start", 1), ("start", 2)]   # once per iteration
    assert [e for e in events if e[0] == "ready"] == [("ready", i, True) for i in range(3)]
    np.testing.assert_array_equal(events[2][1], before)            # before the update


def test_random_seed_and_weights_field(tmp_path):
    a, b = make_solver(random_seed=5), make_solver(random_seed=5)
    c = make_solver(random_seed=6)
    np.testing.assert_array_equal(a.net.params["ip"][0].data, b.net.params["ip"][0].data)
    assert not np.array_equal(a.net.params["ip"][0].data, c.net.params["ip"][0].data)
    a.net.save(str(tmp_path / "w.caffemodel"))
    with Capture() as cap:
        d = make_solver(random_seed=6, weights=[str(tmp_path / "w.caffemodel")],
                        test_iter=[1], test_interval=10)
    np.testing.assert_array_equal(d.net.params["ip"][0].data, a.net.params["ip"][0].data)
    np.testing.assert_array_equal(d.test_nets[0].params["ip"][0].data, a.net.params["ip"][0].data)
    assert len(cap.messages(r"^Finetuning from .*w\.caffemodel$")) == 2


# -- snapshots -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshot_names_and_contents(tmp_path, fmt):
    solver = make_solver(tmp_path, snapshot=2, max_iter=5, snapshot_after_train=True,
                         snapshot_format=getattr(caffe_pb2.SolverParameter, fmt))
    with Capture() as cap:
        solver.solve()
    ext = (".caffemodel", ".solverstate") if fmt == "BINARYPROTO" else \
        (".caffemodel.h5", ".solverstate.h5")
    want = sorted("snap_iter_%d%s" % (i, e) for i in (2, 4, 5) for e in ext)
    assert sorted(os.listdir(tmp_path)) == want           # no temporary files left behind
    it, learned, _, history = read_solver_state(str(tmp_path / ("snap_iter_5" + ext[1])))
    assert it == 5 and learned == str(tmp_path / ("snap_iter_5" + ext[0]))
    for h, ours in zip(history, solver.history):
        np.testing.assert_array_equal(h.reshape(ours.shape), ours.data)
    fresh = make_solver()
    fresh.net.copy_trained_layers_from(learned)
    np.testing.assert_array_equal(fresh.net.params["ip"][0].data, solver.net.params["ip"][0].data)
    kind = "binary proto" if fmt == "BINARYPROTO" else "HDF5"
    assert len(cap.messages("^Snapshotting to %s file .*snap_iter_4%s$" % (kind, ext[0]))) == 1
    assert len(cap.messages("^Snapshotting solver state to %s file .*_iter_4%s$"
                            % (kind, ext[1]))) == 1


def test_snapshot_diff(tmp_path):
    solver = make_solver(tmp_path, snapshot_diff=True)
    solver.step(1)
    solver.snapshot()
    p = caffe_pb2.NetParameter()
    with open(tmp_path / "snap_iter_1.caffemodel", "rb") as f:
        p.ParseFromString(f.read())
    ip = [l for l in p.layer if l.name == "ip"][0]
    assert len(ip.blobs[0].diff) == ip.blobs[0].shape.dim[0] * ip.blobs[0].shape.dim[1]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshot_is_atomic(tmp_path, monkeypatch, fmt):
    solver = make_solver(tmp_path, snapshot_format=getattr(caffe_pb2.SolverParameter, fmt))
    solver.step(2)
    solver.snapshot()
    names = sorted(os.listdir(tmp_path))
    old = {n: (tmp_path / n).read_bytes() for n in names}
    solver.net.params["ip"][0].data[...] += 1
    solver.history[0].data[...] += 1

    def broken(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        solver.snapshot()
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == names          # no torn or temporary files
    assert {n: (tmp_path / n).read_bytes() for n in names} == old


def test_snapshot_prefix_checks_and_defaults(tmp_path):
    with pytest.raises(SolverError, match="Cannot write to snapshot prefix"):
        make_solver(snapshot=1, snapshot_prefix=str(tmp_path / "missing" / "x"))
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(NET)
    (tmp_path / "solver.prototxt").write_text('net: "%s" base_lr: 0.1 lr_policy: "fixed"' % net_file)
    s = get_solver(str(tmp_path / "solver.prototxt"))
    assert s.param.snapshot_prefix == str(tmp_path / "solver")
    os.mkdir(tmp_path / "snaps")
    (tmp_path / "s2.prototxt").write_text('net: "%s" base_lr: 0.1 lr_policy: "fixed" '
                                          'snapshot_prefix: "%s"' % (net_file, tmp_path / "snaps"))
    assert get_solver(str(tmp_path / "s2.prototxt")).param.snapshot_prefix == \
        str(tmp_path / "snaps" / "s2")


# -- Caffe's snapshot files (formats/snapshots) ----------------------------------------------------

@pytest.mark.parametrize("run", ["sgd_binaryproto", "sgd_hdf5", "adam_binaryproto", "adam_hdf5"])
def test_restore_caffe_snapshots(run, tmp_path):
    root = os.path.join(require_golden(), "formats")
    exp = np.load(os.path.join(root, "expected.npz"))
    d = os.path.join(root, "snapshots", run)
    kind = run.split("_")[0]
    state = [f for f in os.listdir(d) if ".solverstate" in f][0]
    with chdir(d):
        solver = get_solver("solver.prototxt")
        solver.restore(state)
    assert solver.iter == int(exp["snapshots.%s.iter" % kind])
    assert solver.current_step == int(exp["snapshots.%s.current_step" % kind])
    for i, h in enumerate(solver.history):
        np.testing.assert_array_equal(h.data, exp["snapshots.%s.history.%d" % (kind, i)])
    for key in exp.files:
        if key.startswith("snapshots.%s.param." % run):
            layer, i = key.split(".")[3:5]
            np.testing.assert_array_equal(solver.net.params[layer][int(i)].data, exp[key])
    # our snapshot of the same state has Caffe's layout
    solver.param.snapshot_prefix = str(tmp_path / kind)
    solver.snapshot()
    ours = str(tmp_path / ("%s_iter_3%s" % (kind, state[state.index(".solverstate"):])))
    if run.endswith("hdf5"):
        with h5py.File(os.path.join(d, state), "r") as cf, h5py.File(ours, "r") as of:
            assert _h5_layout(cf) == _h5_layout(of)
        with h5py.File(os.path.join(d, state.replace("solverstate", "caffemodel")), "r") as cf, \
                h5py.File(ours.replace("solverstate", "caffemodel"), "r") as of:
            assert _h5_layout(cf) == _h5_layout(of)
    else:
        theirs, mine = caffe_pb2.SolverState(), caffe_pb2.SolverState()
        with open(os.path.join(d, state), "rb") as f:
            theirs.ParseFromString(f.read())
        with open(ours, "rb") as f:
            mine.ParseFromString(f.read())
        theirs.learned_net = mine.learned_net = ""
        assert theirs == mine


def _h5_layout(f):
    out = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            t = obj.id.get_type()
            size = t.get_size() if name != "learned_net" else "string"
            out.append((name, obj.shape, obj.dtype.kind, size))
        else:
            out.append((name, "group"))
    f.visititems(visit)
    return sorted(out, key=str)


# -- signals -------------------------------------------------------------------------------------

def test_sigint_stop_and_sighup_snapshot(tmp_path):
    solver = make_solver(tmp_path, max_iter=20, snapshot_after_train=True)
    solver.sigint_effect, solver.sighup_effect = "stop", "snapshot"

    def on_start():
        if solver.iter == 2:
            os.kill(os.getpid(), signal.SIGHUP)
        if solver.iter == 5:
            os.kill(os.getpid(), signal.SIGINT)
    solver.add_callback(on_start)
    before = signal.getsignal(signal.SIGINT)
    with Capture() as cap:
        solver.solve()
    assert solver.iter == 6                                 # stopped after iteration 5
    assert cap.messages("^Optimization stopped early.$")
    assert sorted(os.listdir(tmp_path)) == ["snap_iter_3.caffemodel", "snap_iter_3.solverstate",
                                            "snap_iter_6.caffemodel", "snap_iter_6.solverstate"]
    assert signal.getsignal(signal.SIGINT) is before       # handlers only during solve
    solver.sigint_effect = "bogus"
    with pytest.raises(SolverError, match="Invalid signal effect"):
        solver.solve()


# -- resume equivalence ----------------------------------------------------------------------

RESUME = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from decaf import glog as log
    log.init_log(2)
    import test_solver_loop as t
    from decaf.proto import caffe_pb2
    solver = t.make_solver(None, type={type!r}, max_iter=100)
    solver.restore({state!r})
    solver.step({n})
    np.savez({out!r}, *[p.data for p in solver.net.learnable_params],
             *[h.data for h in solver.history])
""")


@pytest.mark.parametrize("stype", ["SGD", "Adam"])
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_in_new_process_is_bit_exact(tmp_path, stype, fmt):
    n = 4
    straight = make_solver(tmp_path, type=stype, max_iter=100)
    straight.step(2 * n)
    half = make_solver(tmp_path, type=stype, max_iter=100,
                       snapshot_format=getattr(caffe_pb2.SolverParameter, fmt))
    half.step(n)
    half.snapshot()
    state = str(tmp_path / ("snap_iter_%d.solverstate%s" % (n, ".h5" if fmt == "HDF5" else "")))
    script = tmp_path / "resume.py"
    out = str(tmp_path / "resumed.npz")
    script.write_text(RESUME.format(root=ROOT, tests=os.path.join(ROOT, "tests"), type=stype,
                                    state=state, n=n, out=out))
    subprocess.run([sys.executable, str(script)], check=True, cwd=str(tmp_path))
    got = np.load(out)
    want = [p.data for p in straight.net.learnable_params] + [h.data for h in straight.history]
    assert len(got.files) == len(want)
    for i, w in enumerate(want):
        np.testing.assert_array_equal(got["arr_%d" % i], w)
