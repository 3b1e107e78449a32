"""A solver whose net file is missing says which field of which solver named the path, and how a
relative path was resolved (from the current directory, as in Caffe)."""
import io
import os

import pytest

import caffe
from decaf import backend, glog as log
from decaf.errors import MissingFileError
from decaf.tools import cli

NET = """name: "n"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """sub/solver.prototxt names net.prototxt, which lies in sub/; we run from tmp_path."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "net.prototxt").write_text(NET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("field", ["net", "train_net"])
def test_missing_net_file_names_field_and_solver(layout, field):
    (layout / "sub" / "solver.prototxt").write_text(
        '%s: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n' % field)
    with pytest.raises(MissingFileError) as info:
        caffe.SGDSolver(os.path.join("sub", "solver.prototxt"))
    msg = str(info.value)
    assert msg.startswith("net.prototxt: no such file")
    assert "the '%s' field of solver %s" % (field, os.path.join("sub", "solver.prototxt")) in msg
    assert "current directory %s" % layout in msg
    assert "%s exists" % os.path.join("sub", "net.prototxt") in msg


def test_missing_test_net_file(layout):
    (layout / "sub" / "solver.prototxt").write_text(
        'train_net: "sub/net.prototxt"\ntest_net: "missing_test.prototxt"\ntest_iter: 1\n'
        'test_interval: 1\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n')
    with pytest.raises(MissingFileError, match="missing_test.prototxt: no such file.*'test_net' "
                                               "field of solver"):
        caffe.get_solver(os.path.join("sub", "solver.prototxt"))


def test_train_command_names_the_solver_file(layout, capsys):
    (layout / "sub" / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n')
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        rc = cli.main(["train", "-solver", "sub/solver.prototxt"])
    finally:
        log.set_stream(None)
        backend.set_mode_cpu()
    text = buf.getvalue() + capsys.readouterr().err
    assert rc != 0
    assert "the 'net' field of solver sub/solver.prototxt" in text
