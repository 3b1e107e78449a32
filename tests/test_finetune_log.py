"""Fine-tuning shows which layers keep their initialisation: every source layer the target net
lacks gets Caffe's ``Ignoring source layer X`` INFO line (Net::CopyTrainedLayersFrom), through
Net(weights=...), net.copy_from, .caffemodel.h5 weights and ``decaf train -weights``."""
import io
import re

import numpy as np
import pytest

import caffe
from decaf import backend, glog as log
from decaf.tools import cli

SOURCE = """name: "src"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
"""
# fine-tuned net: keeps ip1 and data, replaces ip2 by a new layer, drops relu
TARGET = """name: "dst"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 4 } shape { dim: 2 }
                           data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 3 } }
layer { name: "ip2_new" type: "InnerProduct" bottom: "ip1" top: "out"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }
"""
LINE = re.compile(r"^I\d{4} [\d:.]+ +\d+ net\.cpp:(\d+)\] Ignoring source layer (\S+)$", re.M)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "src.prototxt").write_text(SOURCE)
    (tmp_path / "dst.prototxt").write_text(TARGET)
    src = caffe.Net(str(tmp_path / "src.prototxt"), caffe.TEST)
    src.save(str(tmp_path / "src.caffemodel"))
    src.save_hdf5(str(tmp_path / "src.caffemodel.h5"))
    return tmp_path, src.params["ip1"][0].data.copy()


def captured(fn):
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        result = fn()
    finally:
        log.set_stream(None)
    return result, buf.getvalue()


@pytest.mark.parametrize("weights", ["src.caffemodel", "src.caffemodel.h5"])
def test_copy_from_logs_each_ignored_layer(files, weights):
    d, ip1 = files
    net, text = captured(lambda: caffe.Net(str(d / "dst.prototxt"), caffe.TRAIN,
                                           weights=str(d / weights)))
    ignored = [name for _, name in LINE.findall(text)]
    # the binary proto lists layers in net order, HDF5 by name (as Caffe iterates each)
    assert sorted(ignored) == ["ip2", "relu"]
    np.testing.assert_array_equal(net.params["ip1"][0].data, ip1)   # the kept layer is copied
    _, text = captured(lambda: net.copy_from(str(d / weights)))
    assert sorted(name for _, name in LINE.findall(text)) == ["ip2", "relu"]


def test_train_weights_flag_logs_ignored_layers(files, monkeypatch, capsys):
    d, _ = files
    (d / "solver.prototxt").write_text('net: "dst.prototxt"\nbase_lr: 0.01\nmax_iter: 1\n'
                                       'lr_policy: "fixed"\nsnapshot_after_train: false\n')
    monkeypatch.chdir(d)
    try:
        rc, text = captured(lambda: cli.main(["train", "-solver", "solver.prototxt",
                                              "-weights", "src.caffemodel"]))
    finally:
        backend.set_mode_cpu()
    assert rc == 0, text
    after = text[text.index("Finetuning from src.caffemodel"):]
    assert [name for _, name in LINE.findall(after)] == ["relu", "ip2"]
    assert {line for line, _ in LINE.findall(after)} == {"744"}
