"""``decaf train`` as a process: -sigint_effect / -sighup_effect (stop, snapshot, none) as Caffe's
SignalHandler has them, and snapshots that survive SIGKILL at any moment (a file with a final
name, ``*.caffemodel``, ``*.solverstate`` or their ``.h5`` variants, is always complete)."""
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from decaf.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINAL = re.compile(r"^(\w+)_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?$")

SLOW_LAYER = '''
import time
import caffe


class Sleep(caffe.Layer):
    """top = bottom, after sleeping param_str seconds (a training step that takes a while)."""

    def setup(self, bottom, top):
        self.seconds = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        time.sleep(self.seconds)
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff
'''

SIGNAL_NET = """
name: "SignalNet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "slow" type: "Python" bottom: "data" top: "slow"
        python_param { module: "slowlayer" layer: "Sleep" param_str: "0.01" } }
layer { name: "ip" type: "InnerProduct" bottom: "slow" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

MAX_ITER = 40


def env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, "."]), GLOG_minloglevel="0",
                PYTHONUNBUFFERED="1")


def start_train(cwd, flags=(), stderr=subprocess.PIPE):
    return subprocess.Popen([sys.executable, "-m", "decaf", "train", "-solver", "solver.prototxt"]
                            + list(flags), cwd=str(cwd), env=env(), stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


@pytest.fixture
def signal_dir(tmp_path):
    (tmp_path / "slowlayer.py").write_text(SLOW_LAYER)
    (tmp_path / "net.prototxt").write_text(SIGNAL_NET)
    return tmp_path


def write_solver(d, after_train):
    (d / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\ndisplay: 1\n'
        'max_iter: %d\nsnapshot_prefix: "snap"\nsnapshot_after_train: %s\nrandom_seed: 1\n'
        % (MAX_ITER, "true" if after_train else "false"))


def train_and_signal(d, flags, sig, after=3):
    """Start training, send ``sig`` once iteration ``after`` is displayed; (rc, log)."""
    proc = start_train(d, flags)
    seen, matched = [], False
    for line in proc.stderr:
        seen.append(line)
        if re.search(r"\] Iteration %d \(" % after, line):
            matched = True
            break
    if matched:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    text = "".join(seen) + err
    assert matched, text[-3000:]
    return proc.returncode, text


def snapshots(d):
    return sorted(int(FINAL.match(f).group(2)) for f in os.listdir(d)
                  if FINAL.match(f) and f.endswith(".caffemodel"))


# (signal, flags, effect, snapshot_after_train); the defaults are Caffe's: SIGINT stops,
# SIGHUP snapshots
CASES = [
    (signal.SIGINT, [], "stop", True),
    (signal.SIGINT, [], "stop", False),
    (signal.SIGINT, ["-sigint_effect", "snapshot"], "snapshot", False),
    (signal.SIGINT, ["-sigint_effect=none"], "none", False),
    (signal.SIGHUP, [], "snapshot", True),
    (signal.SIGHUP, ["-sighup_effect", "stop"], "stop", False),
    (signal.SIGHUP, ["--sighup_effect=none"], "none", True),
]


@pytest.mark.parametrize("sig,flags,effect,after_train", CASES,
                         ids=["%s-%s-%s" % (s.name, e, "after_train" if a else "no_after_train")
                              for s, _, e, a in CASES])
def test_signal_effects(signal_dir, sig, flags, effect, after_train):
    write_solver(signal_dir, after_train)
    rc, text = train_and_signal(signal_dir, flags, sig)
    assert rc == 0, text[-3000:]                           # a clean exit in every case
    assert text.rstrip().endswith("Optimization Done.")
    last = max(int(i) for i in re.findall(r"\] Iteration (\d+) \(", text))
    stopped = "Optimization stopped early." in text
    snaps = snapshots(signal_dir)
    if effect == "stop":
        assert stopped and 3 <= last < MAX_ITER - 1
        # Solve() writes the after-train snapshot before it reports the early stop
        assert snaps == ([last + 1] if after_train else [])
        assert not re.search(r"\] Iteration %d, loss = " % MAX_ITER, text)
    else:
        assert not stopped and last == MAX_ITER - 1
        assert re.search(r"\] Iteration %d, loss = " % MAX_ITER, text)
        final = [MAX_ITER] if after_train else []
        if effect == "snapshot":          # a snapshot where the signal came, training goes on
            assert len(snaps) == 1 + len(final) and 4 <= snaps[0] < MAX_ITER
            assert snaps[1:] == final
            assert re.search(r"Snapshotting to binary proto file snap_iter_%d\.caffemodel"
                             % snaps[0], text)
        else:
            assert snaps == final                  # the signal was caught and ignored


def test_snapshot_then_stop(signal_dir):
    """SIGHUP (snapshot) then SIGINT (stop) in one run: two snapshots, an early stop."""
    write_solver(signal_dir, False)
    proc = start_train(signal_dir)
    step = 0
    text = []
    for line in proc.stderr:
        text.append(line)
        if step == 0 and "] Iteration 3 (" in line:
            proc.send_signal(signal.SIGHUP)
            step = 1
        elif step == 1 and "Snapshotting solver state" in line:
            proc.send_signal(signal.SIGINT)
            step = 2
    proc.wait(timeout=60)
    text = "".join(text)
    assert proc.returncode == 0 and step == 2, text[-3000:]
    assert "Optimization stopped early." in text
    snaps = snapshots(signal_dir)
    assert len(snaps) == 1 and snaps[0] >= 4           # the stop itself writes none here
    last = max(int(i) for i in re.findall(r"\] Iteration (\d+) \(", text))
    assert last < MAX_ITER - 1


# -- SIGKILL while snapshots are written -------------------------------------------------------

CRASH_NET = """
name: "CrashNet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 256 } shape { dim: 2 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 384 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SHAPES = {"ip1": [(384, 256), (384,)], "ip2": [(3, 384), (3,)]}
HISTORY = [(384, 256), (384,), (3, 384), (3,)] * 2          # Adam: m then v


def check_model(path):
    """A complete weights file: every learnable layer, every blob with all its values."""
    if path.endswith(".h5"):
        import h5py
        with h5py.File(path, "r") as f:
            got = {name: [f["data"][name][str(i)].shape for i in range(len(f["data"][name]))]
                   for name in SHAPES}
            values = [f["data"][name][str(i)][...] for name in SHAPES
                      for i in range(len(SHAPES[name]))]
    else:
        from decaf.proto import io as pio
        from decaf.blob import blob_to_array
        param = pio.read_binary(path, caffe_pb2.NetParameter)
        layers = {l.name: l for l in param.layer}
        assert [l.name for l in param.layer] == ["data", "ip1", "ip2", "loss"], path
        values = [blob_to_array(b) for name in SHAPES for b in layers[name].blobs]
        got = {name: [blob_to_array(b).shape for b in layers[name].blobs] for name in SHAPES}
    assert got == SHAPES, path
    assert all(np.all(np.isfinite(v)) for v in values), path


def check_state(path, directory):
    from decaf.solver_state import read_solver_state
    it, learned, _, history = read_solver_state(path)
    assert [h.shape for h in history] == HISTORY, path
    assert it == int(FINAL.match(os.path.basename(path)).group(2)), path
    # the weights file is written (and renamed into place) before the state that names it
    assert os.path.basename(learned) == "snap_iter_%d.caffemodel%s" % (
        it, ".h5" if path.endswith(".h5") else ""), path
    assert os.path.isfile(os.path.join(directory, learned)), path


def check_directory(snap_dir, workdir, checked):
    """Check every final-named file that is new or changed since the last call; returns the
    names of the temporary files lying there."""
    temps = []
    for name in os.listdir(snap_dir):
        path = os.path.join(snap_dir, name)
        m = FINAL.match(name)
        if not m:
            assert name.endswith(".tmp") or ".tmp-" in name or name.endswith(".tempfile"), name
            assert not re.search(r"\.(caffemodel|solverstate)(\.h5)?$", name), name
            temps.append(name)
            continue
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if checked.get(path) == key:
            continue
        if m.group(3) == "caffemodel":
            check_model(path)
        else:
            check_state(path, workdir)
        checked[path] = key
    return temps


def test_sigkill_never_leaves_a_torn_snapshot(tmp_path):
    """20 training processes, each killed (SIGKILL) at a random moment while it snapshots at
    every iteration: every file carrying a final name loads completely."""
    rng = random.Random(20240611)
    dirs = {}
    for fmt in ("BINARYPROTO", "HDF5"):
        d = tmp_path / fmt
        (d / "snaps").mkdir(parents=True)
        (d / "net.prototxt").write_text(CRASH_NET)
        (d / "solver.prototxt").write_text(
            'net: "net.prototxt"\ntype: "Adam"\nbase_lr: 0.001\nmomentum: 0.9\n'
            'lr_policy: "fixed"\nmax_iter: 100000\nsnapshot: 1\nsnapshot_prefix: "snaps/snap"\n'
            'snapshot_format: %s\nrandom_seed: 1\n' % fmt)
        dirs[fmt] = d
    checked, temps_seen, kills = {}, set(), 0
    for n in range(20):
        fmt = ("BINARYPROTO", "HDF5")[n % 2]
        d = dirs[fmt]
        proc = start_train(d, stderr=subprocess.PIPE)
        for line in proc.stderr:                  # wait until it is snapshotting
            if "Snapshotting" in line:
                break
        time.sleep(rng.uniform(0.0, 0.35))
        proc.kill()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        temps = check_directory(str(d / "snaps"), str(d), checked)
        temps_seen.update((fmt, t) for t in temps)
    assert kills == 20
    # the kills did land inside writes (left-over temporary files), and files were written
    assert temps_seen, "no kill landed while a snapshot was being written"
    for fmt, d in dirs.items():
        names = [f for f in os.listdir(d / "snaps") if FINAL.match(f)]
        assert any(f.endswith(".solverstate" + (".h5" if fmt == "HDF5" else "")) for f in names)
    # the newest state of each format restores into a solver
    from decaf import glog as log
    from decaf.solver import get_solver
    from decaf.testing.golden import chdir
    for fmt, d in dirs.items():
        ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
        newest = max((f for f in os.listdir(d / "snaps") if f.endswith(ext) and FINAL.match(f)),
                     key=lambda f: int(FINAL.match(f).group(2)))
        level = log.min_level()
        log.init_log(log.WARNING)
        try:
            with chdir(str(d)):
                solver = get_solver("solver.prototxt")
                solver.restore("snaps/" + newest)
        finally:
            log.init_log(level)
        assert solver.iter == int(FINAL.match(newest).group(2))


@pytest.mark.parametrize("fmt", ["binary", "hdf5"])
def test_snapshot_files_reach_the_disk_before_their_rename(tmp_path, monkeypatch, fmt):
    """Every snapshot file is fsync'ed under its temporary name and only then renamed (a power
    loss leaves the old file or the whole new one), for the HDF5 files that h5py writes too."""
    from decaf import net_io, solver_state
    from decaf.net import Net
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    param = caffe_pb2.NetParameter()
    layer = param.layer.add(name="ip", type="InnerProduct", bottom=["x"], top=["y"])
    layer.inner_product_param.num_output = 2
    param.input.append("x")
    param.input_shape.add(dim=[1, 3])
    net = Net(param, caffe_pb2.TRAIN)
    model = str(tmp_path / ("m.caffemodel" + (".h5" if fmt == "hdf5" else "")))
    state = str(tmp_path / ("m.solverstate" + (".h5" if fmt == "hdf5" else "")))
    if fmt == "hdf5":
        net_io.save_hdf5(net, model)
    else:
        net_io.save(net, model)
    solver_state.write_solver_state(state, 3, model, 0, [np.zeros(2, np.float32)],
                                    hdf5=fmt == "hdf5")
    for target in (model, state):
        renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == target]
        assert len(renames) == 1, events
        tmp = events[renames[0]][1]
        synced = [i for i, e in enumerate(events)
                  if e[0] == "fsync" and os.path.basename(e[1]) == os.path.basename(tmp)]
        assert synced and synced[-1] < renames[0], events
        assert os.path.exists(target) and not os.path.exists(tmp)
