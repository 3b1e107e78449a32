"""Untrusted models: Python layers can be refused (DECAF_NO_PYTHON_LAYERS=1 or
caffe.set_python_layers_allowed(False)), and nothing in decaf ever unpickles."""
import ast
import os
import sys

import pytest

import caffe
from decaf.errors import UntrustedCodeError

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "py" type: "Python" bottom: "data" top: "out"
        python_param { module: "decaf_fuzz_never_imported" layer: "X" } }
"""
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = [os.path.join(REPO, "decaf"), os.path.join(REPO, "caffe")]


@pytest.fixture
def allowed_again():
    yield
    caffe.set_python_layers_allowed(True)


def test_environment_switch_refuses_python_layers(monkeypatch, allowed_again):
    monkeypatch.setenv("DECAF_NO_PYTHON_LAYERS", "1")
    caffe.set_python_layers_allowed(True)        # cannot override the environment
    with pytest.raises(UntrustedCodeError, match=r"Layer 'py' \(Python\): Python layers are "
                                                 r"switched off \(DECAF_NO_PYTHON_LAYERS"):
        caffe.Net(NET, caffe.TEST)
    assert "decaf_fuzz_never_imported" not in sys.modules


def test_pycaffe_switch_refuses_python_layers(monkeypatch, allowed_again):
    monkeypatch.delenv("DECAF_NO_PYTHON_LAYERS", raising=False)
    assert caffe.python_layers_allowed()
    caffe.set_python_layers_allowed(False)
    assert not caffe.python_layers_allowed()
    with pytest.raises(UntrustedCodeError, match=r"set_python_layers_allowed\(False\)"):
        caffe.Net(NET, caffe.TEST)
    caffe.set_python_layers_allowed(True)
    net = caffe.Net(NET.replace("decaf_fuzz_never_imported", "tests.pycaffe.pylayers")
                    .replace('layer: "X"', 'layer: "TimesTen"'), caffe.TEST)
    assert net.blobs["out"].data.shape == (2, 3)


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            yield node, (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))


def _sources():
    for package in PACKAGES:
        for root, _, files in os.walk(package):
            for name in files:
                if name.endswith(".py") and name != "caffe_pb2.py":
                    yield os.path.join(root, name)


def test_nothing_unpickles():
    """No module of decaf or caffe imports pickle (or its kin), and every np.load passes
    allow_pickle=False."""
    paths = list(_sources())
    assert len(paths) > 50
    for path in paths:
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                bad = [m for m in mods if m.split(".")[0] in ("pickle", "cPickle", "dill",
                                                               "joblib", "shelve", "marshal")]
                assert not bad, "%s:%d imports %s" % (path, node.lineno, bad)
        for call, fname in _calls(tree):
            if fname == "load" and isinstance(call.func, ast.Attribute) and \
                    getattr(call.func.value, "id", "") in ("np", "numpy"):
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("allow_pickle"), ast.Constant) and \
                    kw["allow_pickle"].value is False, \
                    "%s:%d: np.load without allow_pickle=False" % (path, call.lineno)
