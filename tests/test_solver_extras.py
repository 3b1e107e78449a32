"""``decaf lr_schedule`` and ``decaf explain_update`` (the update made visible), and the
semantics of the ``decaf train`` / ``test`` / ``time`` flags -weights (several files),
-level, -stage, -iterations and -phase, as Caffe's tools/caffe.cpp has them.

Restoring Caffe's own snapshots is tested elsewhere: every golden solvers/*/final.solverstate in
tests/test_solvers.py (test_restore_final_solverstate: history bit for bit, iter,
current_step, weights) and the formats/snapshots BINARYPROTO and HDF5 files in
tests/test_solver_loop.py (test_restore_caffe_snapshots), with the resume test (2N steps ==
N + snapshot + restore in a new process + N, bit for bit, SGD and Adam) next to it.
"""
import io
import json
import os
import re

import numpy as np
import pytest
from google.protobuf import text_format

from decaf import backend, glog as log
from decaf.proto import caffe_pb2
from decaf.solver import get_solver
from decaf.testing.golden import chdir, require_golden
from decaf.tools import cli, explain_update, lr_schedule

NET = """
name: "ExplainNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 5 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.4 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "frozen" type: "InnerProduct" bottom: "ip1" top: "frozen"
        param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.4 }
                              bias_filler { type: "constant" value: 0.2 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "frozen" top: "ip2"
        param { lr_mult: 1 decay_mult: 2 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.4 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
NAMES = ["ip1.0", "ip1.1", "frozen.0", "frozen.1", "ip2.0", "ip2.1"]

TYPES = {
    "SGD": dict(momentum=0.9),
    "Nesterov": dict(momentum=0.9),
    "AdaGrad": dict(momentum=0.0, delta=1e-8),
    "RMSProp": dict(momentum=0.0, rms_decay=0.9, delta=1e-8),
    "AdaDelta": dict(base_lr=1.0, momentum=0.95, delta=1e-6),
    "Adam": dict(momentum=0.9, momentum2=0.999, delta=1e-8),
}


def batch(it):
    rs = np.random.RandomState(500 + it)
    return rs.randn(5, 6).astype(np.float32), rs.randint(0, 3, 5).astype(np.float32)


def tiny_solver(stype="SGD", **fields):
    p = caffe_pb2.SolverParameter(type=stype, base_lr=0.05, lr_policy="fixed", weight_decay=0.01,
                                  max_iter=100, display=0, random_seed=11,
                                  snapshot_after_train=False)
    p.net_param.CopyFrom(text_format.Parse(NET, caffe_pb2.NetParameter()))
    for k, v in {**TYPES[stype], **fields}.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    solver = get_solver(p)

    def feed():
        x, y = batch(solver.iter)
        solver.net.blobs["data"].data[...] = x
        solver.net.blobs["label"].data[...] = y
    solver.add_callback(feed)
    return solver


def quiet():
    """Drop INFO lines of a block (the solver logs its parameters at construction)."""
    class Quiet:
        def __enter__(self):
            self.level = log.min_level()
            log.init_log(log.WARNING)

        def __exit__(self, *exc):
            log.init_log(self.level)
    return Quiet()


# -- lr_schedule ---------------------------------------------------------------------------------

POLICIES = {
    "fixed": dict(),
    "step": dict(gamma=0.5, stepsize=7),
    "exp": dict(gamma=0.97),
    "inv": dict(gamma=0.05, power=0.75),
    "multistep": dict(gamma=0.5, stepvalue=[9, 4, 15, 200]),     # unsorted: Caffe catches up
    "poly": dict(power=1.5),
    "sigmoid": dict(gamma=0.3, stepsize=12),
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_lr_schedule_is_the_rate_training_uses(policy):
    """The plotted rates are, bit for bit, those apply_update received at every iteration."""
    n = 24
    with quiet():
        solver = tiny_solver(lr_policy=policy, max_iter=n, **POLICIES[policy])
    used = []
    solver.update_observer = lambda stage, i, rate: used.append(rate) if stage == "gradients" \
        else None
    solver.step(n)
    iters, rates, steps = lr_schedule.schedule(solver.param)
    assert len(iters) == n + 1 and iters[0] == 0 and iters[-1] == n
    assert rates.dtype == np.float32
    np.testing.assert_array_equal(rates[:n], np.array(used, np.float32))
    assert steps[n - 1] == solver.current_step


def test_lr_schedule_multistep_catch_up_and_summary():
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="multistep", gamma=0.5, max_iter=20)
    p.stepvalue.extend([9, 4, 15, 200])
    iters, rates, _ = lr_schedule.schedule(p)
    # stepvalue 9 is reached at 9; 4 is already passed, so Caffe moves one more step at 10
    assert lr_schedule.change_points(rates) == [9, 10, 15]
    np.testing.assert_allclose(rates[[0, 9, 10, 15, 20]], [0.1, 0.05, 0.025, 0.0125, 0.0125])
    lines = lr_schedule.summary(p, iters, rates)
    assert lines[0] == "lr_policy: multistep (base_lr 0.1, gamma 0.5, stepvalue [9, 4, 15, 200])"
    assert "lr at iteration 0: 0.1" in lines and "lr at iteration 20 (max_iter): 0.0125" in lines
    assert "steps at: 9 (-> 0.05), 10 (-> 0.025), 15 (-> 0.0125)" in lines
    assert "stepvalues after max_iter (never reached): 200" in lines


SOLVER_FILE = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "%s"
gamma: 0.1
stepsize: 100
power: 2
max_iter: 250
"""


@pytest.mark.parametrize("policy,want", [
    ("step", ["lr at iteration 250 (max_iter): 0.0001",
              "steps at: 100 (-> 0.001), 200 (-> 0.0001)"]),
    ("poly", ["lr at iteration 250 (max_iter): 0", "the rate changes at every iteration (poly)"]),
    ("sigmoid", ["midpoint (lr = base_lr / 2) at iteration stepsize = 100"]),
])
def test_lr_schedule_command_writes_png(policy, want, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "solver.prototxt").write_text(SOLVER_FILE % policy)
    assert cli.main(["lr_schedule", "solver.prototxt", "-o", "out.png", "-log"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lr_policy: %s (base_lr 0.01" % policy)
    lr0 = {"step": "0.01", "poly": "0.01", "sigmoid": "4.53979e-07"}[policy]
    assert out[1] == "lr at iteration 0: " + lr0
    for line in want:
        assert line in out
    assert out[-1] == "wrote out.png"
    head = (tmp_path / "out.png").read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
    # default output name, -max_iter override
    assert cli.main(["lr_schedule", "solver.prototxt", "-max_iter", "40"]) == 0
    out = capsys.readouterr().out
    assert "lr at iteration 40 (max_iter): " in out and (tmp_path / "solver_lr.png").is_file()


def test_lr_schedule_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nomax.prototxt").write_text('net: "n" base_lr: 0.1 lr_policy: "fixed"')
    (tmp_path / "bad.prototxt").write_text('net: "n" base_lr: 0.1 lr_policy: "cosine" max_iter: 5')
    (tmp_path / "nostep.prototxt").write_text('net: "n" base_lr: 0.1 lr_policy: "step" '
                                              'max_iter: 5')
    for argv, message in ((["nomax.prototxt"], "max_iter is 0"),
                          (["bad.prototxt"], "Unknown learning rate policy"),
                          (["nostep.prototxt"], "needs stepsize > 0"),
                          ([], "expected one SOLVER.prototxt"),
                          (["missing.prototxt"], "missing.prototxt")):
        assert lr_schedule.main(argv) == 1
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


# -- explain_update ------------------------------------------------------------------------------

@pytest.mark.parametrize("stype", sorted(TYPES))
def test_explain_step_is_the_parameter_change(stype):
    """The "final step" column is w_before - w_after of the real solver.step(1), and the step
    explained is bit for bit the step taken without the observer."""
    with quiet():
        solver = tiny_solver(stype)
        solver.step(3)                                   # non-zero history before
        before = [p.data.copy() for p in solver.net.learnable_params]
        result = explain_update.explain(solver, keep_steps=True)
        twin = tiny_solver(stype)
        twin.step(4)
    assert result["iter"] == 3 and solver.iter == 4 and solver.update_observer is None
    assert [r["name"] for r in result["rows"]] == NAMES == solver.net.learnable_param_names
    for row, w0, p in zip(result["rows"], before, solver.net.learnable_params):
        change = w0 - p.data
        np.testing.assert_allclose(change, row["step_array"], rtol=1e-6,
                                   atol=2e-7 * np.abs(w0).max(), err_msg=row["name"])
        np.testing.assert_allclose(row["step"], np.linalg.norm(change.astype(np.float64)),
                                   rtol=1e-5, atol=1e-7, err_msg=row["name"])
        np.testing.assert_allclose(row["w"], np.linalg.norm(w0.astype(np.float64)), rtol=1e-6)
        if row["lr_mult"] == 0:
            assert row["step"] == 0 and not np.any(change)
    for a, b in zip(solver.net.learnable_params, twin.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(solver.history, twin.history):
        np.testing.assert_array_equal(a.data, b.data)
    n_hist = 2 if stype in ("AdaDelta", "Adam") else 1
    assert all(len(r["hist_before"]) == len(r["hist_after"]) == n_hist for r in result["rows"])


def _one_pass_gradients(solver, it):
    """The gradient of one forward/backward pass of batch ``it`` on a copy of the train net."""
    from decaf.net import Net
    net = Net(solver.net.to_proto(), phase=caffe_pb2.TRAIN)
    x, y = batch(it)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y
    net.clear_param_diffs()
    net.forward_backward()
    return [p.diff.astype(np.float64) for p in net.learnable_params], \
        [p.data.astype(np.float64) for p in net.learnable_params]


@pytest.mark.parametrize("reg", ["L2", "L1"])
def test_explain_columns_mean_what_the_legend_says(reg):
    """From fresh history, SGD with iter_size 2 (same batch twice): grad = one pass's gradient
    (Normalize divided the sum by 2), decay = weight_decay * decay_mult * w (or sign(w)),
    momentum after = step = local_rate * (grad + decay)."""
    with quiet():
        solver = tiny_solver("SGD", iter_size=2, regularization_type=reg, base_lr=0.2)
    grads, weights = _one_pass_gradients(solver, 0)
    result = explain_update.explain(solver, keep_steps=True)
    assert result["rate"] == np.float32(0.2) and result["clip"] < 0
    mults = {"ip1.0": (1, 1), "ip1.1": (2, 0), "frozen.0": (0, 1), "frozen.1": (0, 1),
             "ip2.0": (1, 2), "ip2.1": (2, 0)}
    for row, g, w in zip(result["rows"], grads, weights):
        lr_mult, decay_mult = mults[row["name"]]
        assert (row["lr_mult"], row["decay_mult"]) == (lr_mult, decay_mult)
        np.testing.assert_allclose(row["local_rate"], 0.2 * lr_mult, rtol=1e-6)
        np.testing.assert_allclose(row["local_decay"], 0.01 * decay_mult, rtol=1e-6)
        np.testing.assert_allclose(row["grad"], np.linalg.norm(g), rtol=1e-5, atol=1e-9)
        term = 0.01 * decay_mult * (w if reg == "L2" else np.sign(w))
        np.testing.assert_allclose(row["decay"], np.linalg.norm(term), rtol=1e-5, atol=1e-9)
        assert row["hist_before"] == [0.0]
        want = 0.2 * lr_mult * np.linalg.norm(g + term)
        np.testing.assert_allclose(row["hist_after"][0], want, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(row["step"], want, rtol=1e-5, atol=1e-9)


def test_explain_adam_moments_and_clipping():
    with quiet():
        solver = tiny_solver("Adam", clip_gradients=0.05)
    grads, weights = _one_pass_gradients(solver, 0)
    result = explain_update.explain(solver)
    total = np.sqrt(sum((g ** 2).sum() for g in grads))
    assert total > 0.05
    np.testing.assert_allclose(result["raw_total"], total, rtol=1e-5)
    scale = 0.05 / total
    for row, g, w in zip(result["rows"], grads, weights):
        np.testing.assert_allclose(row["raw"], np.linalg.norm(g), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(row["grad"], scale * np.linalg.norm(g), rtol=1e-5, atol=1e-9)
        full = scale * g + row["local_decay"] * w       # the diff that reaches the update
        m_norm, v_norm = row["hist_after"]
        np.testing.assert_allclose(m_norm, 0.1 * np.linalg.norm(full), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(v_norm, 0.001 * np.linalg.norm(full ** 2), rtol=1e-4,
                                   atol=1e-12)
    lines = explain_update.report(result, solver.param)
    assert lines[1] == "clip_gradients 0.05: global |diff| = %s, scaled by %s" % (
        "%.4g" % total, "%.4g" % scale)


TRAIN_NET = """
name: "CliExplain"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 6 dim: 5 } shape { dim: 6 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


@pytest.mark.parametrize("stype,hist", [("SGD", ["momentum"]), ("Adam", ["m", "v"]),
                                        ("AdaDelta", ["mean_g2", "mean_dx2"]),
                                        ("AdaGrad", ["sum_g2"]), ("RMSProp", ["mean_g2"]),
                                        ("Nesterov", ["momentum"])])
def test_explain_update_command(stype, hist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(TRAIN_NET)
    fields = "\n".join("%s: %r" % kv for kv in TYPES[stype].items() if kv[0] != "base_lr")
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\ntype: "%s"\nbase_lr: 0.1\nlr_policy: "step"\ngamma: 0.5\n'
        'stepsize: 2\nweight_decay: 0.001\nmax_iter: 10\ntest_iter: 1\ntest_interval: 5\n'
        'snapshot: 1\nsnapshot_prefix: "nowhere/x"\nrandom_seed: 2\n%s\n' % (stype, fields))
    assert cli.main(["explain_update", "solver.prototxt"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(r"^%s solver, iteration 0: loss = \S+, lr = 0\.1 \(lr_policy \"step\"\), "
                    r"weight_decay 0\.001 \(L2\), iter_size 1$" % stype, out[0])
    header = out[2].split()
    assert header[:8] == ["param", "shape", "lr_mult", "decay_mult", "local_rate", "|w|",
                          "|grad|", "|decay|"]
    cols = [c for h in hist for c in ("|%s|" % h, "before", "|%s|" % h, "after")]
    assert header[8:] == cols + ["|step|", "|step|/|w|"]
    assert set(out[3]) == {"-", " "}
    rows = [line.split() for line in out[4:6]]
    assert [r[0] for r in rows] == ["ip.0", "ip.1"] and [r[1] for r in rows] == ["4x5", "4"]
    assert rows[1][2:4] == ["2", "0"] and rows[1][7] == "0"          # bias: decay_mult 0
    assert len({len(line) for line in out[2:6]}) <= 2                # aligned columns
    legend = " ".join(out[7:])
    assert legend.startswith("Legend (Caffe's SGDSolver::ApplyUpdate")
    for word in ("Normalize", "Regularize", "ComputeUpdateValue", "Net::Update", "lr_mult",
                 "decay_mult", "local_rate"):
        assert word in legend
    assert not os.path.exists("nowhere")          # no snapshot, no test net


def test_explain_update_weights_and_snapshot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(TRAIN_NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\ntype: "SGD"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\n'
        'max_iter: 3\nsnapshot_prefix: "s"\n')
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0          # s_iter_3.*
    capsys.readouterr()
    assert explain_update.main(["solver.prototxt", "-snapshot", "s_iter_3.solverstate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SGD solver, iteration 3: ")
    before = float(out[4].split()[8])
    assert before > 0                                      # restored momentum history
    assert explain_update.main(["solver.prototxt", "-weights", "s_iter_3.caffemodel"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SGD solver, iteration 0: ") and float(out[4].split()[8]) == 0
    from decaf.net import Net
    net = Net("net.prototxt", phase=caffe_pb2.TRAIN, weights="s_iter_3.caffemodel")
    w = net.params["ip"][0].data.astype(np.float64)
    np.testing.assert_allclose(float(out[4].split()[5]), np.linalg.norm(w), rtol=1e-3)
    assert explain_update.main(["solver.prototxt", "-weights", "a", "-snapshot", "b"]) == 1
    assert "not both" in capsys.readouterr().err
    assert explain_update.main(["solver.prototxt", "-inputs", "x.npz"]) == 1
    assert "cannot read -inputs x.npz" in capsys.readouterr().err
    np.savez("in.npz", other=np.zeros(3))
    (tmp_path / "inet.prototxt").write_text(NET)
    (tmp_path / "isolver.prototxt").write_text('net: "inet.prototxt"\nbase_lr: 0.1\n'
                                               'lr_policy: "fixed"\n')
    assert explain_update.main(["isolver.prototxt", "-inputs", "in.npz"]) == 1
    assert "in.npz has no array for net input(s) data, label" in capsys.readouterr().err


def test_explain_update_matches_caffe_first_step(tmp_path):
    """On Caffe's golden Adam case, the explained step lands on Caffe's parameters after step 0
    and reports Caffe's loss."""
    d = os.path.join(require_golden(), "solvers", "adam")
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    data = np.load(os.path.join(d, "data.npz"))
    np.savez(tmp_path / "in.npz", data=data["data.0"], label=data["label.0"])
    flags = dict(explain_update.SPEC, weights="init.caffemodel")
    with quiet(), chdir(d):
        solver = explain_update.build_solver("solver.prototxt", flags)
        assert explain_update.feed_inputs(solver.net, str(tmp_path / "in.npz")) == []
        result = explain_update.explain(solver)
    np.testing.assert_allclose(result["loss"], data["loss.0"], rtol=case["rtol"],
                               atol=case["atol"])
    for key in data.files:
        if key.startswith("param.") and key.endswith(".0"):
            layer, i = key.split(".")[1:3]
            np.testing.assert_allclose(solver.net.params[layer][int(i)].data, data[key],
                                       rtol=case["rtol"], atol=case["atol"], err_msg=key)
    assert [r["name"] for r in result["rows"]] == case["learnable_params"]


# -- the flags of decaf train / test / time --------------------------------------------------------

FLAG_NET = """
name: "FlagNet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc"
        include { phase: TEST } }
layer { name: "st_a" type: "Reduction" bottom: "ip2" top: "st_a" include { stage: "a" } }
layer { name: "st_b" type: "Reduction" bottom: "ip2" top: "st_b" include { stage: "b" } }
layer { name: "lvl2" type: "Reduction" bottom: "ip2" top: "lvl2" include { min_level: 2 } }
"""


@pytest.fixture
def flagdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(FLAG_NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 0\ntest_iter: 1\n'
        'test_interval: 1\ntest_initialization: false\nsnapshot_prefix: "snap"\nrandom_seed: 4\n'
        'train_state { level: 5 stage: "b" }\n')
    return tmp_path


def run_cli(argv):
    """``decaf <argv>`` in-process: (rc, log text, the solver it built or None)."""
    import decaf.solver as solver_module
    made = []
    real = solver_module.get_solver

    def capture(param, **kw):
        made.append(real(param, **kw))
        return made[-1]
    buf = io.StringIO()
    log.set_stream(buf)
    solver_module.get_solver = capture
    try:
        rc = cli.main(argv)
    finally:
        solver_module.get_solver = real
        log.set_stream(None)
        backend.set_mode_cpu()
    return rc, buf.getvalue(), (made[0] if made else None)


def write_weights(path, values, layers=("ip1", "ip2")):
    """A .caffemodel holding only ``layers``, every blob filled with values[layer]."""
    from decaf.net import Net
    net = Net("net.prototxt", phase=caffe_pb2.TRAIN)
    param = net.to_proto()
    keep = [l for l in param.layer if l.name in layers]
    del param.layer[:]
    for l in keep:
        for b in l.blobs:
            b.data[:] = [values[l.name]] * len(b.data)
        param.layer.add().CopyFrom(l)
    with open(path, "wb") as f:
        f.write(param.SerializeToString())


def layer_value(net, name):
    values = {float(v) for p in net.params[name] for v in np.unique(p.data)}
    assert len(values) == 1, values
    return values.pop()


def test_weights_flag_loads_files_in_order_later_ones_win(flagdir):
    write_weights("a.caffemodel", {"ip1": 1.0, "ip2": 2.0})
    write_weights("b.caffemodel", {"ip2": 3.0}, layers=("ip2",))
    rc, text, solver = run_cli(["train", "-solver", "solver.prototxt",
                                "-weights", "a.caffemodel,b.caffemodel"])
    assert rc == 0, text
    for net in [solver.net] + solver.test_nets:           # CopyLayers: train and test nets
        assert (layer_value(net, "ip1"), layer_value(net, "ip2")) == (1.0, 3.0)
    assert re.findall(r"Finetuning from (\S+)$", text, re.M) == \
        ["a.caffemodel", "b.caffemodel"] * 2
    # max_iter 0: the snapshot after training holds what was loaded
    from decaf.net import Net
    net = Net("net.prototxt", phase=caffe_pb2.TRAIN, weights="snap_iter_0.caffemodel")
    assert (layer_value(net, "ip1"), layer_value(net, "ip2")) == (1.0, 3.0)
    rc, _, solver = run_cli(["train", "-solver", "solver.prototxt",
                             "-weights", "b.caffemodel,a.caffemodel"])
    assert rc == 0 and (layer_value(solver.net, "ip1"), layer_value(solver.net, "ip2")) == (1, 2)
    # decaf test loads the list the same way (Caffe's test takes a single file)
    rc, text, _ = run_cli(["test", "-model", "net.prototxt", "-iterations", "1",
                           "-weights", "a.caffemodel,b.caffemodel"])
    assert rc == 0 and re.findall(r"Finetuning from (\S+)$", text, re.M) == \
        ["a.caffemodel", "b.caffemodel"]
    rc, text, _ = run_cli(["train", "-solver", "solver.prototxt", "-weights",
                           "a.caffemodel,missing.caffemodel"])
    assert rc == 1 and "missing.caffemodel" in text


def test_level_and_stage_flags_set_the_train_state_only(flagdir):
    names = lambda net: {n for n in net.layer_names if n in ("st_a", "st_b", "lvl2", "acc")}
    # Caffe's train() always sets train_state.level from -level (default 0), replacing the
    # solver file's level 5, and appends the -stage stages to the file's ("b")
    rc, text, solver = run_cli(["train", "-solver", "solver.prototxt"])
    assert rc == 0, text
    assert solver.param.train_state.level == 0 and list(solver.param.train_state.stage) == ["b"]
    assert names(solver.net) == {"st_b"}
    rc, _, solver = run_cli(["train", "-solver", "solver.prototxt", "-level", "2", "-stage", "a"])
    assert rc == 0 and names(solver.net) == {"st_a", "st_b", "lvl2"}
    assert names(solver.test_nets[0]) == {"acc"}          # test nets: test_state, not the flags
    rc, _, solver = run_cli(["train", "-solver", "solver.prototxt", "-level=1", "--stage=x,y"])
    assert rc == 0 and list(solver.param.train_state.stage) == ["b", "x", "y"]
    assert names(solver.net) == {"st_b"}


def test_iterations_and_phase_flags(flagdir):
    # train ignores -iterations (max_iter decides), with a warning
    rc, text, solver = run_cli(["train", "-solver", "solver.prototxt", "-iterations", "7"])
    assert rc == 0 and solver.iter == 0 and "-iterations is not used by train" in text
    write_weights("a.caffemodel", {"ip1": 0.1, "ip2": 0.2})
    # test: -iterations forward passes, TEST phase by default
    rc, text, _ = run_cli(["test", "-model", "net.prototxt", "-weights", "a.caffemodel",
                           "-iterations", "4"])
    assert rc == 0
    assert sorted(set(re.findall(r"\] Batch (\d+), ", text))) == ["0", "1", "2", "3"]
    assert set(re.findall(r"\] Batch \d+, (\w+) = ", text)) == {"acc", "loss"}
    assert "Running for 4 iterations." in text
    # time: TRAIN phase by default, -iterations timed passes, -phase TEST switches
    rc, text, _ = run_cli(["time", "-model", "net.prototxt", "-iterations", "3", "-level", "2"])
    assert rc == 0 and len(re.findall(r"Iteration: \d forward-backward time", text)) == 3
    assert re.search(r"\]       lvl2\tforward: ", text) and "\tforward: " in text
    assert not re.search(r"\]        acc\tforward: ", text)
    rc, text, _ = run_cli(["time", "-model", "net.prototxt", "-iterations", "1",
                           "-phase", "TEST", "-stage", "a"])
    assert rc == 0 and re.search(r"\]        acc\tforward: ", text)
    assert re.search(r"\]       st_a\tforward: ", text)
    assert "Testing for 1 iterations." in text
