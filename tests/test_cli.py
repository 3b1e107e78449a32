"""The ``decaf`` command (Caffe's ``caffe`` tool): gflags-style flags, train / test / time /
device_query, tool dispatch, and logs that BVLC's tools/extra/parse_log.py can read."""
import datetime
import importlib.machinery
import io
import os
import re
import subprocess
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from decaf import backend, glog as log
from decaf.data.cli import UsageError, parse_flags
from decaf.tools import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOG = re.compile(r"^([IWEF])(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) +(\d+) ([\w.]+):(\d+)\] ")

NET = """
name: "CliNet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 8 dim: 5 } shape { dim: 8 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""

SOLVER = """net: "net.prototxt"
test_iter: 2
test_interval: 4
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 4
display: 2
max_iter: 10
snapshot: 5
snapshot_prefix: "snaps/cli"
random_seed: 3
solver_mode: CPU
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    (tmp_path / "snaps").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_main(argv, capsys):
    """Run ``decaf <argv>`` in-process; returns (rc, log text, stderr text)."""
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        rc = cli.main(argv)
    finally:
        log.set_stream(None)
        backend.set_mode_cpu()
    return rc, buf.getvalue(), capsys.readouterr().err


# -- flags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,key,value", [
    (["-solver", "s.prototxt"], "solver", "s.prototxt"),
    (["-solver=s.prototxt"], "solver", "s.prototxt"),
    (["--solver=s.prototxt"], "solver", "s.prototxt"),
    (["--solver", "s.prototxt"], "solver", "s.prototxt"),
    (["-iterations", "7"], "iterations", 7),
    (["-iterations=7"], "iterations", 7),
    (["-alsologtostderr"], "alsologtostderr", True),
    (["-noalsologtostderr"], "alsologtostderr", False),
    (["-logtostderr=false"], "logtostderr", False),
    (["-logtostderr=1"], "logtostderr", True),
    ([], "sigint_effect", "stop"),
    ([], "sighup_effect", "snapshot"),
    ([], "iterations", 50),
    ([], "level", 0),
])
def test_flag_forms(argv, key, value):
    flags, positional = parse_flags(["train"] + argv, cli._flag_spec())
    assert positional == ["train"]
    assert flags[key] == value and type(flags[key]) is type(value)


@pytest.mark.parametrize("argv,message", [
    (["train", "-bogus"], "unknown command line flag 'bogus'"),
    (["train", "-iterations=many"], "illegal value 'many'"),
    (["train", "-solver"], "missing its argument"),
    (["train", "-logtostderr=maybe"], "illegal value 'maybe'"),
])
def test_bad_flags_print_error_and_usage(argv, message, capsys):
    rc, _, err = run_main(argv, capsys)
    assert rc == 1
    assert message in err and "usage: decaf <command> <args>" in err


def test_usage_unknown_action_and_help(capsys):
    rc, _, err = run_main([], capsys)
    assert rc == 1 and "commands:" in err and "train" in err
    rc, _, err = run_main(["fly"], capsys)
    assert rc == 1 and "Unknown action: fly" in err
    assert cli.main(["-help"]) == 0
    out = capsys.readouterr().out
    assert "-sigint_effect" in out and "convert_mnist_data" in out


@pytest.mark.parametrize("argv,message", [
    (["train"], "Need a solver definition to train."),
    (["train", "-solver", "s", "-snapshot", "a", "-weights", "b"],
     "Give a snapshot to resume training or weights to finetune but not both."),
    (["train", "-solver", "solver.prototxt", "-sigint_effect", "explode"],
     "Invalid signal effect \"explode\""),
    (["test", "-model", "net.prototxt"], "Need model weights to score."),
    (["time"], "Need a model definition to time."),
    (["device_query"], "Need a device ID to query"),
])
def test_command_checks(argv, message, capsys, workdir):
    rc, text, err = run_main(argv, capsys)
    assert rc == 1
    assert message in err + text


def test_missing_gpu_is_a_clear_error(capsys, workdir):
    if backend.has_gpu():
        pytest.skip("a GPU is present")
    rc, text, err = run_main(["time", "-model", "net.prototxt", "-gpu", "0"], capsys)
    assert rc == 1 and "no GPU is available" in text


def test_tool_dispatch(monkeypatch):
    calls = []
    fake = types.ModuleType("decaf.tools.fake_tool")
    fake.__spec__ = importlib.machinery.ModuleSpec("decaf.tools.fake_tool", None)
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "decaf.tools.fake_tool", fake)
    assert cli.main(["fake_tool", "in.idx", "out_db", "-backend=leveldb"]) == 0
    assert calls == [["in.idx", "out_db", "-backend=leveldb"]]
    assert cli.find_tool("convert_mnist_data") is not None
    assert cli.find_tool("../etc") is None and cli.find_tool("no_such_tool") is None


# -- the commands ------------------------------------------------------------------------------

def test_train_test_time_in_process(capsys, workdir):
    rc, text, _ = run_main(["train", "-solver", "solver.prototxt"], capsys)
    assert rc == 0, text
    msgs = [GLOG.sub("", l) for l in text.splitlines()]
    assert "Starting Optimization" in msgs and msgs[-1] == "Optimization Done."
    assert sorted(os.listdir("snaps")) == ["cli_iter_10.caffemodel", "cli_iter_10.solverstate",
                                           "cli_iter_5.caffemodel", "cli_iter_5.solverstate"]
    # resume from the snapshot: iterations continue from 5
    rc, text, _ = run_main(["train", "-solver", "solver.prototxt",
                            "-snapshot", "snaps/cli_iter_5.solverstate"], capsys)
    assert rc == 0
    assert "Resuming from snaps/cli_iter_5.solverstate" in text
    its = [int(m) for m in re.findall(r"\] Iteration (\d+) \(", text)]
    assert its == [6, 8]
    # finetune from weights
    rc, text, _ = run_main(["train", "-solver", "solver.prototxt",
                            "-weights", "snaps/cli_iter_10.caffemodel"], capsys)
    assert rc == 0 and "Finetuning from snaps/cli_iter_10.caffemodel" in text
    # score
    rc, text, _ = run_main(["test", "-model", "net.prototxt", "-weights",
                            "snaps/cli_iter_10.caffemodel", "-iterations", "3"], capsys)
    assert rc == 0
    batches = re.findall(r"caffe\.cpp:\d+\] Batch (\d+), (\w+) = (\S+)$", text, re.M)
    assert sorted((b, n) for b, n, _ in batches) == [(str(i), n) for i in range(3)
                                                     for n in ("accuracy", "loss")]
    for name in ("accuracy", "loss"):
        mean = np.mean([float(v) for _, n, v in batches if n == name])
        m = re.search(r"caffe\.cpp:\d+\] %s = (\S+)(.*)$" % name, text, re.M)
        np.testing.assert_allclose(float(m.group(1)), mean, rtol=1e-5)
        assert m.group(2) == ("" if name == "accuracy" else " (* 1 = %s loss)" % m.group(1))
    assert re.search(r"caffe\.cpp:\d+\] Loss: \S+$", text, re.M)
    # time
    rc, text, _ = run_main(["time", "-model", "net.prototxt", "-iterations", "2"], capsys)
    assert rc == 0
    for name in ("data", "ip", "loss"):
        assert re.search(r"\] +%s\tforward: [\d.e+-]+ ms\.$" % name, text, re.M)
        assert re.search(r"\] +%s\tbackward: [\d.e+-]+ ms\.$" % name, text, re.M)
    assert re.search(r"\]       data\tforward: ", text)            # setw(10), right aligned
    for line in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward",
                 "Total Time"):
        assert re.search(r"\] %s: [\d.e+-]+ ms\.$" % line, text, re.M), line
    assert len(re.findall(r"Iteration: \d forward-backward time: \S+ ms\.", text)) == 2


# -- parse_log.py compatibility ----------------------------------------------------------------
# The facts of BVLC tools/extra/parse_log.py (+ extract_seconds.py): lines are scanned from the
# first one that matches 'Iteration (\d+)'; the start time is the timestamp of the first line
# containing 'Solving'; timestamps are read from the first two whitespace-separated fields
# ('Immdd' and 'hh:mm:ss.ffffff'); rows are keyed by iteration, with columns NumIters, Seconds,
# LearningRate (from 'lr = <number>') and one per 'Train net output #k: <name> = <value>' or
# 'Test net output #k: <name> = <value>'; a row is complete when it has as many columns as the
# first row.

RX_ITER = re.compile(r"Iteration (\d+)")
RX_TRAIN = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
RX_TEST = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
RX_LR = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def line_time(line, year):
    fields = line.split()
    month, day = int(fields[0][1:3]), int(fields[0][3:])
    clock, frac = fields[1].rsplit(".", 1)
    h, m, s = (int(x) for x in clock.split(":"))
    return datetime.datetime(year, month, day, h, m, s, int(frac))


def parse_log_like_caffe(text):
    year = datetime.datetime.now().year
    lines = text.splitlines()
    start = next(line_time(l, year) for l in lines if "Solving" in l)
    tables = {"train": ([], [None]), "test": ([], [None])}
    iteration, lr = -1, float("nan")
    for line in lines:
        m = RX_ITER.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        seconds = (line_time(line, year) - start).total_seconds()
        m = RX_LR.search(line)
        if m:
            lr = float(m.group(1))
        for kind, rx in (("train", RX_TRAIN), ("test", RX_TEST)):
            rows, cur = tables[kind]
            m = rx.search(line)
            if m:
                if cur[0] is None or cur[0]["NumIters"] != iteration:
                    if cur[0] is not None:
                        rows.append(cur[0])
                    cur[0] = OrderedDict(NumIters=iteration, Seconds=seconds, LearningRate=lr)
                cur[0][m.group(2)] = float(m.group(3))
            if cur[0] is not None and rows and len(cur[0]) == len(rows[0]):
                rows.append(cur[0])
                cur[0] = None
    out = {}
    for kind, (rows, cur) in tables.items():
        if cur[0] is not None:
            rows.append(cur[0])       # the script drops an unfinished last row; keep it here
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
        out[kind] = rows
    return out


def test_train_log_parses_with_parse_log_rules(workdir):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="0")
    proc = subprocess.run([sys.executable, "-m", "decaf", "train", "--solver=solver.prototxt"],
                          cwd=str(workdir), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stderr                       # glog writes to stderr
    assert proc.stdout == ""
    # every line is a glog line, except the continuation lines of the multi-line solver and net
    # parameter dumps at start-up (glog prefixes a message once), all before "Solving"
    start = text.index("] Solving ")
    head, body = text[:start].splitlines(), text[start:].splitlines()[1:]
    assert all(GLOG.match(l) for l in body), [l for l in body if not GLOG.match(l)][:3]
    assert GLOG.match(head[0]) and "Initializing solver from parameters: " in text
    lines = [l for l in text.splitlines() if GLOG.match(l)]
    assert len({GLOG.match(l).group(8) for l in lines}) == 1     # one thread id
    files = {GLOG.match(l).group(9) for l in lines}
    assert {"solver.cpp", "sgd_solver.cpp", "caffe.cpp", "net.cpp"} <= files
    tables = parse_log_like_caffe(text)
    train, test = tables["train"], tables["test"]
    assert [r["NumIters"] for r in train] == [0, 2, 4, 6, 8]
    assert all(set(r) == {"NumIters", "Seconds", "LearningRate", "loss"} for r in train)
    # step policy: 0.05 * 0.5^floor(it/4). Caffe prints "Iteration N, lr" after N's outputs, so
    # parse_log gives each row the previous display's rate (row 0 copies row 1's)
    assert [r["LearningRate"] for r in train] == [0.05, 0.05, 0.05, 0.025, 0.025]
    lrs = [float(x) for x in re.findall(r"sgd_solver\.cpp:\d+\] Iteration \d+, lr = (\S+)$",
                                        text, re.M)]
    assert lrs == [0.05, 0.05, 0.025, 0.025, 0.0125]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert [r["NumIters"] for r in test] == [0, 4, 8]          # 10 % 4 != 0: no final test
    assert all(set(r) == {"NumIters", "Seconds", "LearningRate", "accuracy", "loss"} for r in test)
    assert all(0 <= r["accuracy"] <= 1 for r in test)
    secs = [r["Seconds"] for r in train]
    assert secs == sorted(secs) and secs[0] >= 0
    assert re.search(r"\] Iteration 0 \([\d.e+-]+ iter/s, [\d.e+-]+s/2 iters\), loss = ", text)
    assert re.search(r"\] Iteration 10, loss = [\d.e+-]+$", text, re.M)
    assert "Snapshotting to binary proto file snaps/cli_iter_5.caffemodel" in text


def test_phase_level_and_stage_flags(capsys, workdir):
    staged = NET + """
layer { name: "extra" type: "Reduction" bottom: "ip" top: "extra" include { stage: "deploy" } }
layer { name: "deep" type: "Reduction" bottom: "ip" top: "deep" include { min_level: 2 } }
"""
    (workdir / "staged.prototxt").write_text(staged)
    rc, _, _ = run_main(["train", "-solver", "solver.prototxt"], capsys)
    assert rc == 0
    args = ["test", "-model", "staged.prototxt", "-weights", "snaps/cli_iter_10.caffemodel",
            "-iterations", "1"]
    outputs = lambda text: sorted(set(re.findall(r"\] Batch 0, (\w+) = ", text)))
    assert outputs(run_main(args, capsys)[1]) == ["accuracy", "loss"]
    assert outputs(run_main(args + ["-phase", "TRAIN"], capsys)[1]) == ["loss"]
    assert outputs(run_main(args + ["-stage", "deploy,other"], capsys)[1]) == \
        ["accuracy", "extra", "loss"]
    assert outputs(run_main(args + ["-level=2"], capsys)[1]) == ["accuracy", "deep", "loss"]
    rc, text, _ = run_main(["time", "-model", "staged.prototxt", "-iterations", "1",
                            "-phase", "TEST", "-stage", "deploy"], capsys)
    assert rc == 0 and re.search(r"\]      extra\tforward: ", text)
    rc, _, err = run_main(args + ["-phase", "VAL"], capsys)
    assert rc == 1 and "phase must be" in err


# -- every tool's -help, F lines --------------------------------------------------------------

def _tool_main(argv):
    """cli.main; argparse tools end --help with SystemExit(0), as when run from a shell."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("tool", cli.tool_names())
@pytest.mark.parametrize("spelling", ["-help", "--help", "-helpshort"])
def test_every_tool_prints_its_usage_for_help(tool, spelling, capsys):
    assert _tool_main([tool, spelling]) == 0
    out, err = capsys.readouterr()
    assert "usage" in out.lower() and len(out.splitlines()) >= 1
    assert "unknown command line flag" not in out + err and "error:" not in err


def test_fatal_line_names_the_raising_source_line(capsys, workdir):
    rc, text, _ = run_main(["train", "-solver", "missing_solver.prototxt"], capsys)
    assert rc == 1
    (line,) = [l for l in text.splitlines() if l.startswith("F")]
    m = GLOG.match(line)
    filename, lineno = m.group(9), int(m.group(10))
    assert (filename, lineno) != ("caffe.cpp", 0) and filename.endswith(".py")
    assert "missing_solver.prototxt" in line
    import decaf
    matches = [os.path.join(d, filename) for d, _, files in os.walk(os.path.dirname(
        decaf.__file__)) if filename in files]
    lines = []
    for path in matches:                    # decaf/io.py and decaf/proto/io.py share a name
        with open(path) as f:
            lines.append(f.read().splitlines()[lineno - 1])
    assert any("raise" in l for l in lines)
