"""Python layers (type: "Python"): pycaffe's test_python_layer behaviours, and more."""
import sys
import textwrap

import numpy as np
import pytest

import caffe
from decaf.errors import LayerSetupError

MOD = "tests.pycaffe.pylayers"


def make_net(tmp_path, text, phase=caffe.TRAIN, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return caffe.Net(str(path), phase)


def py_layer(name, bottom, top, cls, extra="", module=MOD):
    bottoms = "".join(" bottom: '%s'" % b for b in bottom)
    tops = "".join(" top: '%s'" % t for t in top)
    return ("layer { type: 'Python' name: '%s'%s%s %s python_param { module: '%s' layer: '%s' } }\n"
            % (name, bottoms, tops, extra, module, cls))


def chain_net(tmp_path):
    text = "name: 'pythonnet' force_backward: true\n" \
           "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n"
    text += py_layer("one", ["data"], ["one"], "TimesTen")
    text += py_layer("two", ["one"], ["two"], "TimesTen")
    text += py_layer("three", ["two"], ["three"], "TimesTen")
    return make_net(tmp_path, text)


def test_python_in_layer_type_list():
    assert "Python" in caffe.layer_type_list()


def test_forward_chain(tmp_path):
    net = chain_net(tmp_path)
    net.blobs["data"].data[...] = 8
    net.forward()
    assert np.all(net.blobs["three"].data == 8000)


def test_backward_chain(tmp_path):
    net = chain_net(tmp_path)
    net.blobs["three"].diff[...] = 7
    net.backward()
    assert np.all(net.blobs["data"].diff == 7000)


def test_reshape_propagates(tmp_path):
    net = chain_net(tmp_path)
    net.blobs["data"].reshape(4, 4, 4, 4)
    net.forward()
    for blob in net.blobs.values():
        assert blob.data.shape == (4, 4, 4, 4)


def test_layer_type_and_param_str(tmp_path):
    text = "input: 'data' input_shape { dim: 2 dim: 3 }\n" \
           "layer { type: 'Python' name: 'mul10' bottom: 'data' top: 'mul10' python_param {" \
           " module: '%s' layer: 'Scaled' param_str: '10' } }\n" \
           "layer { type: 'Python' name: 'mul2' bottom: 'mul10' top: 'mul2' python_param {" \
           " module: '%s' layer: 'Scaled' param_str: '2' } }\n" % (MOD, MOD)
    net = make_net(tmp_path, "force_backward: true\n" + text)
    assert net.layer_dict["mul10"].type == "Python"
    assert net.layer_dict["mul10"].param_str == "10"
    assert net.layer_dict["mul2"].value == 2.0
    x = np.random.rand(2, 3).astype(np.float32)
    out = net.forward(data=x)
    np.testing.assert_allclose(out["mul2"], 20 * x, rtol=1e-6)
    net.blobs["mul2"].diff[...] = 1.5
    net.backward()
    np.testing.assert_allclose(net.blobs["data"].diff, 30.0)


def test_exception_in_setup_reaches_caller_unchanged(tmp_path):
    text = "input: 'data' input_shape { dim: 2 dim: 3 }\n" + \
        py_layer("layer", ["data"], ["top"], "SetupFails")
    with pytest.raises(KeyError, match="no such thing in setup") as info:
        make_net(tmp_path, text, caffe.TEST)
    assert any(tb.name == "setup" and tb.path.name == "pylayers.py"
               for tb in info.traceback)


def test_exception_in_forward_keeps_traceback(tmp_path):
    text = "input: 'data' input_shape { dim: 2 dim: 3 }\n" + \
        py_layer("layer", ["data"], ["top"], "ForwardFails")
    net = make_net(tmp_path, text, caffe.TEST)
    with pytest.raises(ZeroDivisionError, match="forward went wrong") as info:
        net.forward()
    assert info.traceback[-1].name == "forward"


def param_net(tmp_path, name="param.prototxt"):
    text = "name: 'pythonnet' force_backward: true\n" \
           "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n" + \
           py_layer("layer", ["data"], ["top"], "Bias")
    return make_net(tmp_path, text, name=name)


def test_add_blob_parameter_forward_backward(tmp_path):
    net = param_net(tmp_path)
    layer = net.layers[list(net._layer_names).index("layer")]
    assert len(layer.blobs) == 1 and layer.blobs[0].data.shape == (1,)
    assert net.params["layer"][0] is layer.blobs[0]
    net.blobs["data"].data[...] = 1
    net.forward()
    net.blobs["top"].diff[...] = 1
    net.backward()
    assert layer.blobs[0].data[0] == 0
    assert layer.blobs[0].diff[0] == 10 * 9 * 8


def test_add_blob_shapes():
    from decaf.layers.python_layer import BlobVec
    vec = BlobVec()
    vec.add_blob(2, 3)
    vec.add_blob()
    vec.add_blob([4, 1])
    assert [b.shape for b in vec] == [(2, 3), (), (4, 1)]
    assert all(b.data.dtype == np.float32 and not b.data.any() for b in vec)


def test_parameter_save_load_and_share(tmp_path):
    net = param_net(tmp_path)
    layer = net.layer_dict["layer"]
    layer.blobs[0].data[0] = 1
    model = str(tmp_path / "w.caffemodel")
    net.save(model)
    layer.blobs[0].data[0] = -1
    net.copy_from(model)
    assert layer.blobs[0].data[0] == 1
    net2 = param_net(tmp_path, "param2.prototxt")
    net2.share_with(net)
    assert net2.layer_dict["layer"].blobs[0].data[0] == 1
    net2.layer_dict["layer"].blobs[0].data[0] = 5  # shared memory
    assert layer.blobs[0].data[0] == 5
    net3 = caffe.Net(str(tmp_path / "param.prototxt"), caffe.TEST, weights=model)
    assert net3.layer_dict["layer"].blobs[0].data[0] == 1


def test_phase_attribute(tmp_path):
    text = "layer { type: 'Python' name: 'layer' top: 'phase' python_param {" \
           " module: '%s' layer: 'Phase' } }" % MOD
    for phase in (caffe.TRAIN, caffe.TEST):
        net = make_net(tmp_path, text, phase)
        assert net.forward()["phase"] == phase
        assert net.layers[0].phase == phase


def test_loss_weight_on_python_top(tmp_path):
    text = "force_backward: true\n" \
           "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n" \
           + py_layer("l2", ["x"], ["loss"], "HalfSumSquares", "loss_weight: 3")
    net = make_net(tmp_path, text)
    assert net.blob_loss_weights["loss"] == 3
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.blobs["x"].data[...] = x
    loss = net.forward_backward()
    np.testing.assert_allclose(loss, 3 * 0.5 * (x ** 2).sum(), rtol=1e-6)
    np.testing.assert_allclose(net.blobs["x"].diff, 3 * x, rtol=1e-6)


def test_no_blob_count_constraint(tmp_path):
    text = "input: 'a' input_shape { dim: 2 }\ninput: 'b' input_shape { dim: 3 }\n" + \
        py_layer("multi", ["a", "b"], ["c", "d"], "TwoInTwoOut") + \
        py_layer("data", [], ["n"], "Counter")
    net = make_net(tmp_path, text, caffe.TEST)
    out = net.forward(a=np.zeros(2), b=np.ones(3))
    np.testing.assert_array_equal(out["c"], [0, 0])
    np.testing.assert_array_equal(out["d"], [2, 2, 2])
    np.testing.assert_array_equal(out["n"], [0, 1, 2, 3])
    np.testing.assert_array_equal(net.forward(a=np.zeros(2), b=np.ones(3))["n"], [4, 5, 6, 7])


def test_module_found_in_current_directory(tmp_path, monkeypatch):
    (tmp_path / "cwd_layers_xyz.py").write_text(textwrap.dedent("""
        import caffe
        class Neg(caffe.Layer):
            def setup(self, bottom, top): pass
            def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
            def forward(self, bottom, top): top[0].data[...] = -bottom[0].data
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    text = "input: 'x' input_shape { dim: 3 }\n" + \
        py_layer("neg", ["x"], ["y"], "Neg", module="cwd_layers_xyz")
    net = make_net(tmp_path, text, caffe.TEST)
    np.testing.assert_array_equal(net.forward(x=np.array([1., 2., 3.]))["y"], [-1, -2, -3])
    sys.modules.pop("cwd_layers_xyz", None)


def test_missing_module_raises_import_error(tmp_path):
    text = "input: 'x' input_shape { dim: 3 }\n" + \
        py_layer("p", ["x"], ["y"], "X", module="no_such_module_for_decaf")
    with pytest.raises(ImportError, match="no_such_module_for_decaf"):
        make_net(tmp_path, text, caffe.TEST)


@pytest.mark.parametrize("cls, msg", [("Nope", "has no class 'Nope'"),
                                      ("NotALayer", "derived from caffe.Layer")])
def test_bad_class_is_a_setup_error(tmp_path, cls, msg):
    text = "input: 'x' input_shape { dim: 3 }\n" + py_layer("p", ["x"], ["y"], cls)
    with pytest.raises(LayerSetupError, match=msg):
        make_net(tmp_path, text, caffe.TEST)


def test_missing_python_param_is_a_setup_error(tmp_path):
    text = "input: 'x' input_shape { dim: 3 }\n" \
           "layer { type: 'Python' name: 'p' bottom: 'x' top: 'y' }"
    with pytest.raises(LayerSetupError, match="module"):
        make_net(tmp_path, text, caffe.TEST)


def test_multi_gpu_train_refused(tmp_path):
    text = "input: 'x' input_shape { dim: 3 }\n" + py_layer("p", ["x"], ["y"], "TimesTen")
    caffe.set_solver_count(2)
    try:
        with pytest.raises(LayerSetupError, match="Multi-GPU"):
            make_net(tmp_path, text, caffe.TRAIN)
        make_net(tmp_path, text, caffe.TEST)  # only TRAIN is refused
        caffe.set_multiprocess(True)
        make_net(tmp_path, text, caffe.TRAIN)  # train.py style multiprocess is fine
    finally:
        caffe.set_solver_count(1)
        caffe.set_multiprocess(False)


def test_solver_trains_python_parameter(tmp_path):
    net_text = "force_backward: true\n" \
        "layer { name: 'in' type: 'DummyData' top: 'x' dummy_data_param {" \
        " shape { dim: 4 dim: 3 } data_filler { type: 'constant' value: 1 } } }\n" + \
        py_layer("bias", ["x"], ["y"], "Bias") + \
        py_layer("loss", ["y"], ["loss"], "HalfSumSquares", "loss_weight: 1")
    (tmp_path / "net.prototxt").write_text(net_text)
    (tmp_path / "solver.prototxt").write_text(
        "net: '%s' base_lr: 0.01 lr_policy: 'fixed' max_iter: 5 display: 0 "
        "snapshot_after_train: false snapshot_prefix: '%s'"
        % (tmp_path / "net.prototxt", tmp_path / "snap"))
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    b = solver.net.layer_dict["bias"].blobs[0]
    solver.step(1)
    # loss = 0.5 * sum((1 + b)^2) over 12 values, d/db = 12 (1 + b) = 12 at b = 0
    np.testing.assert_allclose(b.data[0], -0.01 * 12, rtol=1e-5)


def test_missing_module_names_layer_module_and_cause(tmp_path):
    import subprocess
    from decaf.layers.python_layer import PythonLayerImportError
    text = "input: 'x' input_shape { dim: 3 }\n" + \
        py_layer("my_py", ["x"], ["y"], "X", module="no_such_module_for_decaf")
    with pytest.raises(PythonLayerImportError) as info:
        make_net(tmp_path, text, caffe.TEST)
    msg = str(info.value)
    assert "Layer 'my_py' (Python)" in msg and "python_param.module 'no_such_module_for_decaf'" \
        in msg and "No module named 'no_such_module_for_decaf'" in msg
    assert isinstance(info.value, LayerSetupError) and info.value.__cause__ is None
    assert info.value.__context__ is None           # one traceback, not two
    # a module that exists but fails on an import of its own says so
    (tmp_path / "needs_missing_dep_xyz.py").write_text("import missing_dep_for_decaf_xyz\n")
    sys.path.insert(0, str(tmp_path))
    try:
        text = "input: 'x' input_shape { dim: 3 }\n" + \
            py_layer("dep", ["x"], ["y"], "X", module="needs_missing_dep_xyz")
        with pytest.raises(PythonLayerImportError,
                           match="missing_dep_for_decaf_xyz.*raised while importing"):
            make_net(tmp_path, text, caffe.TEST)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("needs_missing_dep_xyz", None)
    # from a script: one traceback (no "During handling of the above exception")
    (tmp_path / "net.prototxt").write_text(
        "input: 'x' input_shape { dim: 3 }\n" +
        py_layer("my_py", ["x"], ["y"], "X", module="no_such_module_for_decaf"))
    proc = subprocess.run([sys.executable, "-c", "import caffe; caffe.Net('net.prototxt', 1)"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                          env=dict(__import__("os").environ, GLOG_minloglevel="2"))
    assert proc.returncode == 1
    assert proc.stderr.count("Traceback") == 1 and "During handling" not in proc.stderr
    assert "Layer 'my_py' (Python): cannot import python_param.module" in proc.stderr
