"""Solvers against BVLC Caffe's trajectories (golden solvers/), plus the update rules and
learning-rate policies against their formulas written out here in plain numpy."""
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

from decaf import glog as log, solvers
from decaf.errors import SolverError
from decaf.proto import caffe_pb2
from decaf.solver import AdaGradSolver, RMSPropSolver, SGDSolver, get_solver
from decaf.solver_state import read_solver_state
from decaf.testing.golden import chdir, require_golden


def solver_cases():
    root = os.path.join(require_golden(), "solvers")
    names = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "case.json")))
    if not names:
        raise FileNotFoundError("no golden solver cases under %s" % root)
    return names


def case_dir(name):
    return os.path.join(require_golden(), "solvers", name)


def replay(name, capture=None):
    """Replay a golden case as its README says; returns (solver, case, data, per-step lr)."""
    d = case_dir(name)
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    data = np.load(os.path.join(d, "data.npz"))
    if capture is not None:
        log.set_stream(capture)
    try:
        with chdir(d):
            solver = get_solver("solver.prototxt")
            solver.net.copy_trained_layers_from("init.caffemodel")
            lrs, steps = [], []
            for s in range(case["steps"]):
                solver.net.blobs["data"].data[...] = data["data.%d" % s]
                solver.net.blobs["label"].data[...] = data["label.%d" % s]
                lrs.append(solver.lr)
                solver.step(1)
                steps.append({"loss": float(solver.net.blobs["loss"].data),
                              "params": {k: solver.net.params[k.split(".")[1]]
                                         [int(k.split(".")[2])].data.copy()
                                         for k in data.files
                                         if k.startswith("param.") and k.endswith(".%d" % s)}})
    finally:
        log.set_stream(None)
    return solver, case, data, lrs, steps


@pytest.fixture(scope="module")
def replays():
    cache = {}

    def get(name):
        if name not in cache:
            buf = io.StringIO()
            cache[name] = replay(name, buf) + (buf.getvalue(),)
        return cache[name]
    return get


@pytest.mark.parametrize("name", solver_cases())
def test_trajectory(name, replays):
    solver, case, data, lrs, steps = replays(name)[:5]
    assert type(solver).type == case["solver_type"]
    for s, step in enumerate(steps):
        np.testing.assert_allclose(lrs[s], data["lr.%d" % s], rtol=1e-6, err_msg="lr.%d" % s)
        np.testing.assert_allclose(step["loss"], data["loss.%d" % s], atol=case["atol"],
                                   rtol=case["rtol"], err_msg="loss.%d" % s)
        assert step["params"], "no param keys for step %d" % s
        for key, got in step["params"].items():
            np.testing.assert_allclose(got, data[key], atol=case["atol"], rtol=case["rtol"],
                                       err_msg=key)
    assert solver.iter == case["steps"]


@pytest.mark.parametrize("name", solver_cases())
def test_history_matches_final_solverstate(name, replays):
    solver, case = replays(name)[:2]
    it, learned, current_step, history = read_solver_state(
        os.path.join(case_dir(name), "final.solverstate"))
    assert it == solver.iter == case["steps"]
    assert learned == case["solverstate_learned_net"]
    assert current_step == solver.current_step
    assert len(history) == len(solver.history)
    assert solver.net.learnable_param_names == case["learnable_params"]
    for i, (want, got) in enumerate(zip(history, solver.history)):
        np.testing.assert_allclose(got.data, want.reshape(got.shape), atol=case["atol"],
                                   rtol=case["rtol"], err_msg="history %d" % i)


@pytest.mark.parametrize("name", solver_cases())
def test_log_lines_match_caffe(name, replays):
    """Our lr / loss / clipping / multistep lines carry Caffe's numbers (glog prefix removed)."""
    case, text = replays(name)[1], replays(name)[5]
    prefix = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")
    ours = [prefix.sub("", line) for line in text.splitlines() if prefix.match(line)]
    with open(os.path.join(case_dir(name), "caffe_log_lines.txt")) as f:
        caffe = [line.rstrip("\n") for line in f if line.strip()]

    def pick(lines, pattern):
        rx = re.compile(pattern)
        return [[float(x) for x in m.groups()] for m in map(rx.search, lines) if m]
    for pattern in (r"Iteration \d+, lr = (\S+)$",
                    r"Train net output #0: loss = (\S+) \(\* 1 = (\S+) loss\)",
                    r"L2 norm (\S+) > (\S+)\) by scale factor (\S+)$",
                    r"MultiStep Status: Iteration (\d+), step = (\d+)"):
        want, got = pick(caffe, pattern), pick(ours, pattern)
        assert len(got) == len(want), pattern
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=pattern)
    lr_lines = [l for l in ours if re.match(r"Iteration \d+, lr = ", l)]
    assert lr_lines == [l.split(": ", 1)[-1] for l in caffe if ", lr = " in l]


@pytest.mark.parametrize("name", solver_cases())
def test_restore_final_solverstate(name, tmp_path):
    """Caffe's own final.solverstate restores: iter, current_step, history and its weights."""
    d = case_dir(name)
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    shutil.copy(os.path.join(d, "final.caffemodel"), tmp_path / case["solverstate_learned_net"])
    shutil.copy(os.path.join(d, "final.solverstate"), tmp_path / "final.solverstate")
    with chdir(d):
        solver = get_solver("solver.prototxt")
    with chdir(str(tmp_path)):      # Caffe resolves learned_net against the working directory
        solver.restore("final.solverstate")
    it, _, current_step, history = read_solver_state(os.path.join(d, "final.solverstate"))
    assert (solver.iter, solver.current_step) == (it, current_step) == (case["steps"], current_step)
    for want, got in zip(history, solver.history):
        np.testing.assert_array_equal(got.data, want.reshape(got.shape))
    final = caffe_pb2.NetParameter()
    with open(os.path.join(d, "final.caffemodel"), "rb") as f:
        final.ParseFromString(f.read())
    for layer in final.layer:
        for i, bp in enumerate(layer.blobs):
            np.testing.assert_array_equal(solver.net.params[layer.name][i].data.ravel(),
                                          np.asarray(bp.data, np.float32))


def test_restore_finds_weights_next_to_state(tmp_path):
    d = case_dir("sgd_momentum")
    shutil.copy(os.path.join(d, "final.caffemodel"), tmp_path / "snap_iter_12.caffemodel")
    shutil.copy(os.path.join(d, "final.solverstate"), tmp_path / "final.solverstate")
    with chdir(d):
        solver = get_solver("solver.prototxt")
        solver.restore(str(tmp_path / "final.solverstate"))   # learned_net not in the cwd
    assert solver.iter == 12


def test_restore_rejects_wrong_history_length(tmp_path):
    d = case_dir("adam")                     # 12 history blobs
    shutil.copy(os.path.join(d, "final.caffemodel"), tmp_path / "snap_iter_12.caffemodel")
    shutil.copy(os.path.join(d, "final.solverstate"), tmp_path / "final.solverstate")
    with chdir(case_dir("sgd_momentum")):
        solver = get_solver("solver.prototxt")   # SGD keeps 6
    before = [p.data.copy() for p in solver.net.learnable_params]
    with pytest.raises(SolverError, match="Incorrect length of history"):
        solver.restore(str(tmp_path / "final.solverstate"))
    assert solver.iter == 0                  # nothing was changed
    for b, p in zip(before, solver.net.learnable_params):
        np.testing.assert_array_equal(b, p.data)


# -- learning-rate policies, independently -----------------------------------------------------

def _param(**kw):
    p = caffe_pb2.SolverParameter(base_lr=0.1, **kw)
    return p


@pytest.mark.parametrize("kw,formula", [
    (dict(lr_policy="fixed"), lambda it: 0.1),
    (dict(lr_policy="step", gamma=0.3, stepsize=7), lambda it: 0.1 * 0.3 ** (it // 7)),
    (dict(lr_policy="exp", gamma=0.97), lambda it: 0.1 * 0.97 ** it),
    (dict(lr_policy="inv", gamma=1e-3, power=0.75), lambda it: 0.1 * (1 + 1e-3 * it) ** -0.75),
    (dict(lr_policy="poly", power=2.0, max_iter=50), lambda it: 0.1 * (1 - it / 50) ** 2),
    (dict(lr_policy="sigmoid", gamma=0.2, stepsize=20),
     lambda it: 0.1 / (1 + np.exp(-0.2 * (it - 20)))),
])
def test_lr_policy_formula(kw, formula):
    p = _param(**kw)
    for it in range(0, 50, 3):
        rate, _ = solvers.learning_rate(p, it)
        assert isinstance(rate, np.float32)
        np.testing.assert_allclose(rate, formula(it), rtol=2e-6, err_msg="iter %d" % it)


def test_multistep_moves_one_step_per_call():
    p = _param(lr_policy="multistep", gamma=0.5)
    p.stepvalue.extend([2, 3, 5])
    lines, cs, rates = [], 0, []
    for it in range(7):
        rate, cs = solvers.learning_rate(p, it, cs, lines.append)
        rates.append(float(rate))
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.025, 0.025, 0.0125, 0.0125])
    assert lines == ["MultiStep Status: Iteration 2, step = 1",
                     "MultiStep Status: Iteration 3, step = 2",
                     "MultiStep Status: Iteration 5, step = 3"]
    # restored late (current_step 0 at iter 6): Caffe catches up one stepvalue per call
    assert solvers.learning_rate(p, 6, 0)[1] == 1


def test_unknown_lr_policy_and_bad_settings():
    with pytest.raises(SolverError, match="Unknown learning rate policy"):
        solvers.learning_rate(_param(lr_policy="cosine"), 0)
    with pytest.raises(SolverError, match="stepsize"):
        solvers.learning_rate(_param(lr_policy="step", gamma=0.1), 0)


# -- update rules, independently -----------------------------------------------------------------

def _arrays(seed, n=3, shape=(4, 5)):
    rs = np.random.RandomState(seed)
    return [rs.randn(*shape).astype(np.float32) for _ in range(n)]


def test_sgd_and_nesterov_rules():
    g, h, _ = _arrays(0)
    diff, hist = g.copy(), h.copy()
    solvers.sgd_update(diff, hist, 0.1, 0.9)
    np.testing.assert_allclose(hist, 0.9 * h + 0.1 * g, rtol=1e-6)
    np.testing.assert_array_equal(diff, hist)
    diff, hist, upd = g.copy(), h.copy(), np.empty_like(g)
    solvers.nesterov_update(diff, hist, 0.1, 0.9, upd)
    h_new = 0.9 * h + 0.1 * g
    np.testing.assert_allclose(hist, h_new, rtol=1e-6)
    np.testing.assert_allclose(diff, 1.9 * h_new - 0.9 * h, rtol=1e-5, atol=1e-6)


def test_adaptive_rules():
    g, h, h2 = _arrays(1)
    h, h2 = h * h, h2 * h2
    buf, tmp = np.empty_like(g), np.empty_like(g)
    diff, hist = g.copy(), h.copy()
    solvers.adagrad_update(diff, hist, 0.05, 1e-8, buf)
    np.testing.assert_allclose(hist, h + g * g, rtol=1e-6)
    np.testing.assert_allclose(diff, 0.05 * g / (np.sqrt(h + g * g) + 1e-8), rtol=1e-5)
    diff, hist = g.copy(), h.copy()
    solvers.rmsprop_update(diff, hist, 0.05, 0.9, 1e-8, buf)
    v = 0.9 * h + 0.1 * g * g
    np.testing.assert_allclose(hist, v, rtol=1e-5)
    np.testing.assert_allclose(diff, 0.05 * g / (np.sqrt(v) + 1e-8), rtol=1e-5)
    diff, a, b = g.copy(), h.copy(), h2.copy()
    solvers.adadelta_update(diff, a, b, 1.0, 0.95, 1e-6, buf, tmp)
    eg = 0.95 * h + 0.05 * g * g
    step = g * np.sqrt((h2 + 1e-6) / (eg + 1e-6))
    np.testing.assert_allclose(a, eg, rtol=1e-5)
    np.testing.assert_allclose(b, 0.95 * h2 + 0.05 * step * step, rtol=1e-5)
    np.testing.assert_allclose(diff, step, rtol=1e-5)
    diff, m, v = g.copy(), h.copy() * 0.1, h2.copy()
    m0, v0 = m.copy(), v.copy()
    solvers.adam_update(diff, m, v, 0.01, 0.9, 0.999, 1e-8, 3, tmp)
    m1, v1 = 0.9 * m0 + 0.1 * g, 0.999 * v0 + 0.001 * g * g
    corr = np.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3)
    np.testing.assert_allclose(diff, 0.01 * corr * m1 / (np.sqrt(v1) + 1e-8), rtol=1e-5, atol=1e-9)


def test_regularize_clip_normalize():
    g, w, _ = _arrays(2)
    tmp = np.empty_like(g)
    d = g.copy()
    solvers.regularize(d, w, 0.02, "L2", tmp)
    np.testing.assert_allclose(d, g + 0.02 * w, rtol=1e-6)
    d = g.copy()
    solvers.regularize(d, w, 0.02, "L1", tmp)
    np.testing.assert_allclose(d, g + 0.02 * np.sign(w), rtol=1e-6)
    d = g.copy()
    solvers.regularize(d, w, 0.0, "bogus", tmp)      # no decay: nothing to do (Caffe)
    np.testing.assert_array_equal(d, g)
    with pytest.raises(SolverError, match="Unknown regularization type"):
        solvers.regularize(d, w, 0.1, "L3", tmp)
    d = g.copy()
    solvers.normalize(d, 4)
    np.testing.assert_allclose(d, g / 4, rtol=1e-7)
    a, b = g.copy(), w.copy()
    norm = np.sqrt((g.astype(np.float64) ** 2).sum() + (w.astype(np.float64) ** 2).sum())
    lines = []
    scale = solvers.clip_gradients([a, b], 0.5, lines.append)
    np.testing.assert_allclose(scale, 0.5 / norm, rtol=1e-5)
    np.testing.assert_allclose(a, g * 0.5 / norm, rtol=1e-5)
    assert re.match(r"Gradient clipping: scaling down gradients \(L2 norm \S+ > 0\.5\) by scale "
                    r"factor \S+$", lines[0])
    assert solvers.clip_gradients([a, b], 100.0) == 1.0
    assert solvers.clip_gradients([a, b], -1) == 1.0


def test_update_rules_do_not_allocate():
    """The hot path writes into caller buffers: the arrays keep their identity and memory."""
    g, h, h2 = _arrays(3)
    buf, tmp = np.empty_like(g), np.empty_like(g)
    arrays = [g, h, h2, buf, tmp]
    ptrs = [a.ctypes.data for a in arrays]
    solvers.sgd_update(g, h, 0.1, 0.9)
    solvers.nesterov_update(g, h, 0.1, 0.9, buf)
    solvers.adam_update(g, h, np.abs(h2), 0.1, 0.9, 0.99, 1e-8, 1, tmp)
    solvers.adadelta_update(g, np.abs(h), np.abs(h2), 0.1, 0.9, 1e-6, buf, tmp)
    assert [a.ctypes.data for a in arrays] == ptrs
    assert all(a.dtype == np.float32 for a in arrays)


# -- solver construction checks ----------------------------------------------------------------

def _case_param(name="sgd_momentum", **kw):
    from decaf.solver import read_solver_param
    with chdir(case_dir(name)):
        p = read_solver_param("solver.prototxt")
        net = caffe_pb2.NetParameter()
        from decaf.proto import io as pio
        net.CopyFrom(pio.read_net_param("train.prototxt"))
    p.ClearField("net")
    p.net_param.CopyFrom(net)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize("cls", [AdaGradSolver, RMSPropSolver])
def test_momentum_refused(cls):
    with pytest.raises(SolverError, match="Momentum cannot be used with"):
        cls(_case_param(momentum=0.9))


def test_solver_type_selection_and_errors():
    p = _case_param()
    p.type = "Adam"
    assert type(get_solver(p)).__name__ == "AdamSolver"
    p.type = "Adamax"
    with pytest.raises(SolverError, match="Unknown solver type"):
        get_solver(p)
    p = _case_param()
    p.ClearField("type")
    p.solver_type = caffe_pb2.SolverParameter.NESTEROV      # deprecated enum is upgraded
    assert type(get_solver(p)).__name__ == "NesterovSolver"
    with pytest.raises(SolverError, match="Unknown regularization type"):
        SGDSolver(_case_param(regularization_type="L3"))
    with pytest.raises(SolverError, match="exactly one train net"):
        p = _case_param()
        p.train_net = "x.prototxt"
        SGDSolver(p)
