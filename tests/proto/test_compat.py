"""Files written by other Caffe forks: unknown fields load (one warning names them), decaf's own
extension numbers meet no fork's, and a prototxt that names no backend reads LevelDB."""
import numpy as np
import pytest

from decaf.proto import caffe_pb2, compat, io
from decaf.solver_state import read_solver_state

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string_field(number, payload):
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _with_layer_field(param, number, payload, net_extra=b""):
    """The bytes of ``param`` with field ``number`` (a string) appended to every layer."""
    rest = caffe_pb2.NetParameter()
    rest.CopyFrom(param)
    del rest.layer[:]
    layers = b"".join(_string_field(100, lp.SerializeToString() + _string_field(number, payload))
                      for lp in param.layer)
    return rest.SerializeToString() + layers + net_extra


@pytest.fixture
def net_and_weights(tmp_path):
    import decaf
    decaf.set_random_seed(3)
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    net = decaf.Net(str(path), decaf.TEST)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    x = np.random.RandomState(0).randn(2, 3).astype(np.float32)
    net.blobs["data"].data[...] = x
    expected = net.forward()["prob"].copy()
    return path, weights, x, expected


@pytest.mark.parametrize("number", [10001, compat_number := 7071001])
def test_fork_field_in_every_layer_loads_with_one_warning(net_and_weights, tmp_path, capsys,
                                                          number):
    import decaf
    path, weights, x, expected = net_and_weights
    param = io.read_binary(str(weights), caffe_pb2.NetParameter)
    fork = tmp_path / "fork.caffemodel"
    fork.write_bytes(_with_layer_field(param, number, b"fork's own string \x00\xff",
                                       net_extra=_string_field(9999, b"x")))
    capsys.readouterr()
    net = decaf.Net(str(path), decaf.TEST, weights=str(fork))
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("W") and "fork" in line]
    assert len(warnings) == 1, err
    assert str(fork) in warnings[0]
    assert "caffe.NetParameter field 9999" in warnings[0]
    if number == 10001:
        assert "caffe.LayerParameter field 10001 (3 times)" in warnings[0]
    else:   # decaf's own yolov3_loss_param number holding a foreign string: dropped
        assert "LayerParameter field 7071001 (layer 'ip')" in warnings[0]
    net.blobs["data"].data[...] = x
    np.testing.assert_array_equal(net.forward()["prob"], expected)


def test_unknown_fields_are_kept_on_resave(net_and_weights, tmp_path):
    _, weights, _, _ = net_and_weights
    param = io.read_binary(str(weights), caffe_pb2.NetParameter)
    fork = tmp_path / "fork.caffemodel"
    fork.write_bytes(_with_layer_field(param, 10001, b"keep me"))
    again = tmp_path / "again.caffemodel"
    io.write_binary(str(again), io.read_binary(str(fork), caffe_pb2.NetParameter))
    assert again.read_bytes().count(_string_field(10001, b"keep me")) == 3


def test_solverstate_with_unknown_field_restores(tmp_path, capsys):
    state = caffe_pb2.SolverState(iter=7, learned_net="x.caffemodel", current_step=1)
    h = state.history.add()
    h.shape.dim.extend([2])
    h.data.extend([1.5, -2.0])
    path = tmp_path / "s.solverstate"
    path.write_bytes(state.SerializeToString() + _string_field(4242, b"fork"))
    capsys.readouterr()
    it, learned, step, hist = read_solver_state(str(path))
    assert (it, learned, step) == (7, "x.caffemodel", 1)
    np.testing.assert_array_equal(hist[0], [1.5, -2.0])
    assert "caffe.SolverState field 4242" in capsys.readouterr().err


def test_decaf_extension_numbers_meet_no_fork():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    ours = {name: fields[name].number for name in compat.DECAF_EXTENSIONS}
    assert ours == {"center_loss_param": 7071000, "yolov3_loss_param": 7071001}
    # SSD's fields stay at SSD's numbers (real SSD caffemodels carry them there)
    ssd = {n: fields[n].number for n in ("permute_param", "prior_box_param",
                                         "detection_output_param", "norm_param")}
    assert ssd == {"permute_param": 202, "prior_box_param": 203,
                   "detection_output_param": 204, "norm_param": 206}


def test_a_truncated_file_is_still_an_error(net_and_weights, tmp_path):
    from decaf.errors import TruncatedFileError
    _, weights, _, _ = net_and_weights
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(TruncatedFileError, match="bad.caffemodel"):
        io.read_binary(str(bad), caffe_pb2.NetParameter)


def test_real_ssd_model_keeps_ssd_numbers_and_names_ssd_fields(capsys):
    from decaf.testing.data import model_path
    path = model_path("res10_ssd_face", "res10_300x300_ssd_iter_140000.caffemodel")
    capsys.readouterr()
    net = io.read_binary(path, caffe_pb2.NetParameter)
    prior = [lp for lp in net.layer if lp.type == "PriorBox"]
    assert prior and all(lp.prior_box_param.min_size for lp in prior)   # field 203, as SSD's
    perm = [lp for lp in net.layer if lp.type == "Permute"]
    assert perm and list(perm[0].permute_param.order) == [0, 2, 3, 1]     # field 202
    norm = [lp for lp in net.layer if lp.type == "Normalize"]
    assert norm and norm[0].HasField("norm_param") and not norm[0].norm_param.across_spatial
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("W")]
    assert len(warnings) == 1 and "field 200 (SSD's annotated_data_param)" in warnings[0]
