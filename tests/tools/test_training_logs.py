"""``decaf parse_log`` and ``decaf plot_training_log`` (BVLC's tools/extra scripts in Python 3)
on a Caffe-format log (a LeNet run, as BVLC's caffe prints it) and on a log of ``decaf train``."""
import io
import os
import re
import shutil

import numpy as np
import pytest

from decaf import backend, glog as log
from decaf.tools import cli, parse_log, plot_training_log

HERE = os.path.dirname(os.path.abspath(__file__))
CAFFE_LOG = os.path.join(HERE, "data", "caffe_lenet.log")

# what BVLC's parse_log.py writes for that log (Seconds since "Solving LeNet" at 21:06:03.349702)
CAFFE_TRAIN = ("NumIters,Seconds,LearningRate,loss\r\n"
               "0.0,5.262688,0.01,2.42257\r\n"
               "100.0,10.44564,0.01,0.207118\r\n"
               "200.0,15.813558,0.00992565,0.137433\r\n")
CAFFE_TEST = ("NumIters,Seconds,LearningRate,accuracy,loss\r\n"
              "0.0,2.123263,0.00992565,0.1296,2.49735\r\n"
              "200.0,15.755023,0.00992565,0.9633,0.116224\r\n"
              "300.0,21.351889,0.00985258,0.9717,0.0869806\r\n")

NET = """
name: "TinyNet"
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
lr_policy: "step"
gamma: 0.5
stepsize: 4
display: 2
max_iter: 10
snapshot_prefix: "tiny"
random_seed: 3
solver_mode: CPU
"""


@pytest.fixture
def caffe_log(tmp_path):
    path = tmp_path / "lenet.log"
    shutil.copy(CAFFE_LOG, path)
    return str(path)


@pytest.fixture(scope="module")
def decaf_log(tmp_path_factory):
    """The log of ``decaf train`` on a tiny net, as written to a file."""
    d = tmp_path_factory.mktemp("train")
    (d / "net.prototxt").write_text(NET)
    (d / "solver.prototxt").write_text(SOLVER)
    cwd = os.getcwd()
    os.chdir(d)
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        backend.set_random_seed(1)
        assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    finally:
        log.set_stream(None)
        os.chdir(cwd)
    path = d / "tiny.log"
    path.write_text(buf.getvalue())
    return str(path)


def test_parse_caffe_log_as_bvlc(caffe_log, tmp_path, capsys):
    out = tmp_path / "csv"
    out.mkdir()
    assert cli.main(["parse_log", caffe_log, str(out), "--verbose"]) == 0
    assert (out / "lenet.log.train").read_bytes().decode() == CAFFE_TRAIN
    assert (out / "lenet.log.test").read_bytes().decode() == CAFFE_TEST
    assert "Wrote %s" % (out / "lenet.log.train") in capsys.readouterr().out


def test_delimiter_and_gflags_spelling(caffe_log, tmp_path):
    assert parse_log.main(["--delimiter", ";", caffe_log, str(tmp_path)]) == 0
    assert (tmp_path / "lenet.log.test").read_text().startswith(
        "NumIters;Seconds;LearningRate;accuracy;loss\n")
    assert parse_log.main(["-delimiter=\t", caffe_log, str(tmp_path)]) == 0
    assert "0.0\t5.262688\t0.01\t2.42257" in (tmp_path / "lenet.log.train").read_text()


def test_year_rollover_and_header_year(tmp_path):
    text = ("Log file created at: 2015/12/31 23:59:58\nRunning on machine: m\n"
            "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg\n"
            "I1231 23:59:58.000000  1 solver.cpp:279] Solving N\n"
            "I1231 23:59:59.500000  1 solver.cpp:228] Iteration 0, loss = 1\n"
            "I1231 23:59:59.600000  1 solver.cpp:244]     Train net output #0: loss = 1\n"
            "I0101 00:00:01.000000  1 solver.cpp:228] Iteration 10, loss = nan\n"
            "I0101 00:00:01.100000  1 solver.cpp:244]     Train net output #0: loss = nan\n")
    path = tmp_path / "x.log"
    path.write_text(text)
    train, test = parse_log.parse_log(str(path))
    assert [r["Seconds"] for r in train] == [1.6, 3.1]
    assert np.isnan(train[1]["loss"]) and test == []


def test_not_a_log(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        assert parse_log.main([str(path), str(tmp_path)]) == 1
        assert parse_log.main([str(path)]) == 1
    finally:
        log.set_stream(None)
    assert "not a Caffe or decaf training log" in buf.getvalue()
    assert "expected LOGFILE OUTPUT_DIR" in capsys.readouterr().err


def log_values(path, pattern):
    with open(path) as f:
        return [float(m.group(1)) for m in re.finditer(pattern, f.read())]


def test_parse_decaf_train_log(decaf_log):
    train, test = parse_log.parse_log(decaf_log)
    assert [r["NumIters"] for r in train] == [0, 2, 4, 6, 8]
    assert [r["loss"] for r in train] == log_values(decaf_log, r"Train net output #0: loss = (\S+)")
    assert [r["NumIters"] for r in test] == [0, 4, 8]
    assert [r["accuracy"] for r in test] == \
        log_values(decaf_log, r"Test net output #0: accuracy = (\S+)")
    # step policy (gamma 0.5 every 4: 0.05 0.05 0.025 0.025 0.0125 at 0 2 4 6 8); as in BVLC's
    # script a row takes the rate printed before its outputs, i.e. the previous display's
    assert [r["LearningRate"] for r in train] == [0.05, 0.05, 0.05, 0.025, 0.025]
    assert log_values(decaf_log, r"Iteration \d+, lr = (\S+)") == [0.05, 0.05, 0.025, 0.025,
                                                                   0.0125]
    seconds = [r["Seconds"] for r in train]
    assert seconds == sorted(seconds) and seconds[0] >= 0


@pytest.mark.parametrize("chart_type", range(8))
def test_all_eight_charts(chart_type, caffe_log, decaf_log, tmp_path):
    assert plot_training_log.chart_types()[chart_type] == [
        "Test accuracy  vs. Iters", "Test accuracy  vs. Seconds", "Test loss  vs. Iters",
        "Test loss  vs. Seconds", "Train learning rate  vs. Iters",
        "Train learning rate  vs. Seconds", "Train loss  vs. Iters",
        "Train loss  vs. Seconds"][chart_type]
    x, y = plot_training_log.chart_data(chart_type, caffe_log)
    column = {0: 3, 1: 3, 2: 4, 3: 4, 4: 2, 5: 2, 6: 3, 7: 3}[chart_type]
    table = CAFFE_TEST if chart_type < 4 else CAFFE_TRAIN
    rows = [[float(v) for v in line.split(",")] for line in table.splitlines()[1:]]
    assert y == [r[column] for r in rows]
    assert x == [r[chart_type % 2] for r in rows]
    png = tmp_path / "chart.png"
    assert cli.main(["plot_training_log", str(chart_type), str(png), caffe_log, decaf_log]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_arguments(caffe_log, tmp_path, capsys):
    assert plot_training_log.main(["-help"]) == 0
    assert "7: Train loss  vs. Seconds" in capsys.readouterr().out
    assert plot_training_log.main(["8", str(tmp_path / "a.png"), caffe_log]) == 1
    assert "8 is not a valid chart type." in capsys.readouterr().err
    assert plot_training_log.main(["0", str(tmp_path / "a.jpg"), caffe_log]) == 1
    assert plot_training_log.main(["0", str(tmp_path / "a.png"), "missing.log"]) == 1
    assert "Path does not exist: missing.log" in capsys.readouterr().err
