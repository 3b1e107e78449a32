"""decaf.proto: the Caffe schema, prototxt/binary I/O and the format upgrades.

Field numbers and defaults are checked against BVLC Caffe's caffe.proto (master) and SSD's
(weiliu89/caffe, ssd branch); the upgrades against the outputs of Caffe's own
upgrade_net_proto_text / upgrade_net_proto_binary / upgrade_solver_proto_text tools in the
golden data.
"""
import glob
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from decaf.errors import DecafError, MissingFileError, PrototxtError, TruncatedFileError
from decaf.proto import caffe_pb2, io, upgrade

from decaf.testing.data import GOLDEN_DIR as GOLDEN, MODELS_DIR, model_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPGRADE = os.path.join(GOLDEN, "formats", "upgrade")


@pytest.fixture(scope="module")
def golden():
    # The golden data is required: a missing directory is a failure, not a skip.
    assert os.path.isdir(GOLDEN), "golden data not found at %s" % GOLDEN
    return GOLDEN


@pytest.fixture(scope="module")
def models():
    # the models folder of the repository, plus res10 from its test-extra package
    assert os.path.isdir(MODELS_DIR), "real models not found at %s" % MODELS_DIR
    return MODELS_DIR


def number(msg_cls, field):
    return msg_cls.DESCRIPTOR.fields_by_name[field].number


# -- the schema ----------------------------------------------------------------------------------

@pytest.mark.parametrize("msg_cls, field, num", [
    (caffe_pb2.BlobShape, "dim", 1),
    (caffe_pb2.BlobProto, "num", 1), (caffe_pb2.BlobProto, "width", 4),
    (caffe_pb2.BlobProto, "data", 5), (caffe_pb2.BlobProto, "diff", 6),
    (caffe_pb2.BlobProto, "shape", 7), (caffe_pb2.BlobProto, "double_data", 8),
    (caffe_pb2.BlobProto, "double_diff", 9),
    (caffe_pb2.Datum, "data", 4), (caffe_pb2.Datum, "float_data", 6),
    (caffe_pb2.Datum, "encoded", 7),
    (caffe_pb2.FillerParameter, "variance_norm", 8), (caffe_pb2.FillerParameter, "sparse", 7),
    (caffe_pb2.NetParameter, "name", 1), (caffe_pb2.NetParameter, "layers", 2),
    (caffe_pb2.NetParameter, "input", 3), (caffe_pb2.NetParameter, "input_dim", 4),
    (caffe_pb2.NetParameter, "force_backward", 5), (caffe_pb2.NetParameter, "state", 6),
    (caffe_pb2.NetParameter, "debug_info", 7), (caffe_pb2.NetParameter, "input_shape", 8),
    (caffe_pb2.NetParameter, "layer", 100),
    (caffe_pb2.SolverParameter, "train_net", 1), (caffe_pb2.SolverParameter, "test_iter", 3),
    (caffe_pb2.SolverParameter, "base_lr", 5), (caffe_pb2.SolverParameter, "lr_policy", 8),
    (caffe_pb2.SolverParameter, "solver_mode", 17), (caffe_pb2.SolverParameter, "random_seed", 20),
    (caffe_pb2.SolverParameter, "net", 24), (caffe_pb2.SolverParameter, "net_param", 25),
    (caffe_pb2.SolverParameter, "regularization_type", 29),
    (caffe_pb2.SolverParameter, "solver_type", 30), (caffe_pb2.SolverParameter, "delta", 31),
    (caffe_pb2.SolverParameter, "test_initialization", 32),
    (caffe_pb2.SolverParameter, "average_loss", 33), (caffe_pb2.SolverParameter, "stepvalue", 34),
    (caffe_pb2.SolverParameter, "clip_gradients", 35),
    (caffe_pb2.SolverParameter, "iter_size", 36),
    (caffe_pb2.SolverParameter, "snapshot_format", 37),
    (caffe_pb2.SolverParameter, "rms_decay", 38), (caffe_pb2.SolverParameter, "momentum2", 39),
    (caffe_pb2.SolverParameter, "type", 40),
    (caffe_pb2.SolverParameter, "layer_wise_reduce", 41),
    (caffe_pb2.SolverParameter, "weights", 42),
    (caffe_pb2.SolverState, "iter", 1), (caffe_pb2.SolverState, "learned_net", 2),
    (caffe_pb2.SolverState, "history", 3), (caffe_pb2.SolverState, "current_step", 4),
    (caffe_pb2.NetStateRule, "not_stage", 5), (caffe_pb2.ParamSpec, "share_mode", 2),
    (caffe_pb2.ParamSpec, "lr_mult", 3), (caffe_pb2.ParamSpec, "decay_mult", 4),
    (caffe_pb2.LayerParameter, "phase", 10), (caffe_pb2.LayerParameter, "loss_weight", 5),
    (caffe_pb2.LayerParameter, "param", 6), (caffe_pb2.LayerParameter, "blobs", 7),
    (caffe_pb2.LayerParameter, "include", 8), (caffe_pb2.LayerParameter, "exclude", 9),
    (caffe_pb2.LayerParameter, "propagate_down", 11),
    (caffe_pb2.LayerParameter, "transform_param", 100),
    (caffe_pb2.LayerParameter, "loss_param", 101),
    (caffe_pb2.LayerParameter, "accuracy_param", 102),
    (caffe_pb2.LayerParameter, "convolution_param", 106),
    (caffe_pb2.LayerParameter, "data_param", 107),
    (caffe_pb2.LayerParameter, "inner_product_param", 117),
    (caffe_pb2.LayerParameter, "pooling_param", 121),
    (caffe_pb2.LayerParameter, "python_param", 130),
    (caffe_pb2.LayerParameter, "prelu_param", 131), (caffe_pb2.LayerParameter, "spp_param", 132),
    (caffe_pb2.LayerParameter, "log_param", 134),
    (caffe_pb2.LayerParameter, "tile_param", 138),
    (caffe_pb2.LayerParameter, "batch_norm_param", 139),
    (caffe_pb2.LayerParameter, "elu_param", 140), (caffe_pb2.LayerParameter, "bias_param", 141),
    (caffe_pb2.LayerParameter, "scale_param", 142),
    (caffe_pb2.LayerParameter, "input_param", 143),
    (caffe_pb2.LayerParameter, "crop_param", 144),
    (caffe_pb2.LayerParameter, "parameter_param", 145),
    (caffe_pb2.LayerParameter, "recurrent_param", 146),
    (caffe_pb2.LayerParameter, "swish_param", 147),
    (caffe_pb2.LayerParameter, "clip_param", 148),
    # SSD
    (caffe_pb2.LayerParameter, "permute_param", 202),
    (caffe_pb2.LayerParameter, "prior_box_param", 203),
    (caffe_pb2.LayerParameter, "detection_output_param", 204),
    (caffe_pb2.LayerParameter, "norm_param", 206),
    (caffe_pb2.DetectionOutputParameter, "keep_top_k", 7),
    (caffe_pb2.DetectionOutputParameter, "variance_encoded_in_target", 8),
    (caffe_pb2.DetectionOutputParameter, "save_file", 12),
    (caffe_pb2.PriorBoxParameter, "offset", 13), (caffe_pb2.PriorBoxParameter, "step_w", 12),
    # param sub-messages
    (caffe_pb2.ConvolutionParameter, "stride", 6), (caffe_pb2.ConvolutionParameter, "dilation", 18),
    (caffe_pb2.ConvolutionParameter, "force_nd_im2col", 17),
    (caffe_pb2.PoolingParameter, "round_mode", 13), (caffe_pb2.PoolingParameter, "pad", 4),
    (caffe_pb2.ConcatParameter, "axis", 2), (caffe_pb2.SliceParameter, "axis", 3),
    (caffe_pb2.InfogainLossParameter, "axis", 2), (caffe_pb2.LossParameter, "normalization", 3),
    (caffe_pb2.DummyDataParameter, "shape", 6), (caffe_pb2.DataParameter, "prefetch", 10),
    (caffe_pb2.ImageDataParameter, "root_folder", 12),
    (caffe_pb2.WindowDataParameter, "root_folder", 13),
    (caffe_pb2.V1LayerParameter, "layer", 1), (caffe_pb2.V1LayerParameter, "type", 5),
    (caffe_pb2.V1LayerParameter, "blobs_lr", 7), (caffe_pb2.V1LayerParameter, "weight_decay", 8),
    (caffe_pb2.V1LayerParameter, "include", 32), (caffe_pb2.V1LayerParameter, "loss_weight", 35),
    (caffe_pb2.V1LayerParameter, "transform_param", 36),
    (caffe_pb2.V1LayerParameter, "loss_param", 42), (caffe_pb2.V1LayerParameter, "param", 1001),
    (caffe_pb2.V1LayerParameter, "blob_share_mode", 1002),
    (caffe_pb2.V0LayerParameter, "k", 22), (caffe_pb2.V0LayerParameter, "blobs", 50),
    (caffe_pb2.V0LayerParameter, "det_context_pad", 58),
    (caffe_pb2.V0LayerParameter, "concat_dim", 65),
    (caffe_pb2.V0LayerParameter, "hdf5_output_param", 1001),
])
def test_field_numbers(msg_cls, field, num):
    assert number(msg_cls, field) == num


def test_field_types_and_labels():
    F = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["bottom"]
    assert F.is_repeated and F.type == F.TYPE_STRING
    solver = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
    assert solver["random_seed"].type == solver["random_seed"].TYPE_INT64
    assert solver["max_iter"].type == solver["max_iter"].TYPE_INT32
    assert solver["weights"].is_repeated
    blob = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert blob["num"].type == blob["num"].TYPE_INT32
    assert caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].type == blob["num"].TYPE_INT64
    clip = caffe_pb2.ClipParameter.DESCRIPTOR.fields_by_name
    assert clip["min"].is_required and clip["max"].is_required
    conv = caffe_pb2.ConvolutionParameter.DESCRIPTOR.fields_by_name
    assert conv["pad"].is_repeated and conv["kernel_size"].is_repeated
    assert not conv["pad_h"].is_repeated
    pool = caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_name
    assert not pool["kernel_size"].is_repeated
    code_type = caffe_pb2.DetectionOutputParameter.DESCRIPTOR.fields_by_name["code_type"]
    assert code_type.enum_type.full_name == "caffe.PriorBoxParameter.CodeType"


def test_packed_encoding():
    # BlobProto.data is packed: one length-delimited field 5 (tag 0x2a), as Caffe writes it.
    blob = caffe_pb2.BlobProto(data=[1.0, 2.0])
    assert blob.SerializeToString() == b"\x2a\x08" + np.array([1, 2], "<f4").tobytes()
    shape = caffe_pb2.BlobShape(dim=[2, 3])
    assert shape.SerializeToString() == b"\x0a\x02\x02\x03"


def test_defaults():
    f = caffe_pb2.FillerParameter()
    assert (f.type, f.value, f.min, f.max, f.mean, f.std, f.sparse) == ("constant", 0, 0, 1, 0, 1, -1)
    assert f.variance_norm == caffe_pb2.FillerParameter.FAN_IN
    assert caffe_pb2.ParamSpec().lr_mult == 1 and caffe_pb2.ParamSpec().decay_mult == 1
    s = caffe_pb2.SolverParameter()
    assert s.type == "SGD" and s.solver_type == caffe_pb2.SolverParameter.SGD
    assert s.solver_mode == caffe_pb2.SolverParameter.GPU
    assert s.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO
    assert s.regularization_type == "L2" and s.clip_gradients == -1 and s.iter_size == 1
    assert s.random_seed == -1 and s.average_loss == 1 and s.test_initialization
    assert s.snapshot_after_train and s.layer_wise_reduce
    assert np.float32(s.delta) == np.float32(1e-8)
    assert np.float32(s.momentum2) == np.float32(0.999)
    assert np.float32(s.rms_decay) == np.float32(0.99)
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    bn = caffe_pb2.BatchNormParameter()
    assert np.float32(bn.moving_average_fraction) == np.float32(0.999)
    assert np.float32(bn.eps) == np.float32(1e-5) and not bn.HasField("use_global_stats")
    p = caffe_pb2.PoolingParameter()
    assert p.pool == p.MAX and p.stride == 1 and p.round_mode == p.CEIL
    assert caffe_pb2.ConvolutionParameter().group == 1
    assert caffe_pb2.ConvolutionParameter().bias_term
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    lrn = caffe_pb2.LRNParameter()
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (5, 1, 0.75, 1)
    assert caffe_pb2.CropParameter().axis == 2
    assert caffe_pb2.ReshapeParameter().num_axes == -1
    assert caffe_pb2.ExpParameter().base == -1 and caffe_pb2.LogParameter().base == -1
    assert caffe_pb2.DataParameter().prefetch == 4
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.ImageDataParameter().batch_size == 1
    assert caffe_pb2.WindowDataParameter().crop_mode == "warp"
    assert caffe_pb2.EltwiseParameter().operation == caffe_pb2.EltwiseParameter.SUM
    assert caffe_pb2.HingeLossParameter().norm == caffe_pb2.HingeLossParameter.L1
    assert caffe_pb2.ReductionParameter().operation == caffe_pb2.ReductionParameter.SUM
    assert caffe_pb2.SwishParameter().beta == 1
    # SSD
    assert caffe_pb2.PriorBoxParameter().flip and not caffe_pb2.PriorBoxParameter().clip
    assert caffe_pb2.PriorBoxParameter().offset == 0.5
    assert np.float32(caffe_pb2.NonMaximumSuppressionParameter().nms_threshold) == np.float32(.3)
    assert caffe_pb2.NonMaximumSuppressionParameter().eta == 1
    d = caffe_pb2.DetectionOutputParameter()
    assert d.keep_top_k == -1 and d.share_location and d.code_type == caffe_pb2.PriorBoxParameter.CORNER
    n = caffe_pb2.NormalizeParameter()
    assert n.across_spatial and n.channel_shared and np.float32(n.eps) == np.float32(1e-10)
    # Extensions
    assert caffe_pb2.CenterLossParameter().axis == 1
    y = caffe_pb2.Yolov3LossParameter()
    assert (y.ignore_thresh, y.truth_thresh, y.max_boxes) == (0.5, 1, 90)


def test_enums():
    V1 = caffe_pb2.V1LayerParameter
    assert (V1.NONE, V1.ACCURACY, V1.CONVOLUTION, V1.DATA, V1.INNER_PRODUCT) == (0, 1, 4, 5, 14)
    assert (V1.POOLING, V1.RELU, V1.SOFTMAX_LOSS, V1.ELTWISE, V1.THRESHOLD) == (17, 18, 21, 25, 31)
    assert (V1.DUMMY_DATA, V1.SLICE, V1.MVN, V1.ABSVAL, V1.SILENCE) == (32, 33, 34, 35, 36)
    assert (V1.CONTRASTIVE_LOSS, V1.EXP, V1.DECONVOLUTION) == (37, 38, 39)
    assert len(V1.LayerType.values()) == 40
    assert (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    S = caffe_pb2.SolverParameter
    assert (S.SGD, S.NESTEROV, S.ADAGRAD, S.RMSPROP, S.ADADELTA, S.ADAM) == (0, 1, 2, 3, 4, 5)
    assert (S.HDF5, S.BINARYPROTO, S.CPU, S.GPU) == (0, 1, 0, 1)
    L = caffe_pb2.LossParameter
    assert (L.FULL, L.VALID, L.BATCH_SIZE, L.NONE) == (0, 1, 2, 3)
    assert (caffe_pb2.PoolingParameter.CEIL, caffe_pb2.PoolingParameter.FLOOR) == (0, 1)
    assert caffe_pb2.PoolingParameter.STOCHASTIC == 2
    assert (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2) == (1, 2)
    assert caffe_pb2.ReductionParameter.MEAN == 4
    assert (caffe_pb2.DataParameter.LEVELDB, caffe_pb2.DataParameter.LMDB) == (0, 1)
    assert caffe_pb2.ConvolutionParameter.CUDNN == 2
    P = caffe_pb2.PriorBoxParameter
    assert (P.CORNER, P.CENTER_SIZE, P.CORNER_SIZE) == (1, 2, 3)


def test_extension_numbers_do_not_collide():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert fields["center_loss_param"].number >= 10000
    assert fields["yolov3_loss_param"].number >= 10000
    numbers = [f.number for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields]
    assert len(numbers) == len(set(numbers))
    # BVLC's own layer-specific numbers stay below 200 (next free: 149).
    bvlc = [f.number for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields
            if f.number < 200]
    assert max(bvlc) == 148


def test_generated_module_is_up_to_date():
    # grpcio-tools (pinned in the test and dev extras) regenerates caffe_pb2.py identically
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "gen_proto.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- text and binary I/O -------------------------------------------------------------------------

def _sample_net():
    net = caffe_pb2.NetParameter(name="sample", force_backward=True)
    net.state.phase = caffe_pb2.TRAIN
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[2, 3, 8, 8])
    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.param.add(lr_mult=1, decay_mult=1)
    conv.param.add(lr_mult=2, decay_mult=0)
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    conv.convolution_param.weight_filler.type = "xavier"
    conv.include.add(phase=caffe_pb2.TRAIN, stage=["a"])
    conv.blobs.add(shape=caffe_pb2.BlobShape(dim=[2]), data=[0.1, -2.5])
    pool = net.layer.add(name="pool", type="Pooling", bottom=["conv"], top=["pool"])
    pool.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    pool.pooling_param.round_mode = caffe_pb2.PoolingParameter.FLOOR
    net.layer.add(name="clip", type="Clip", bottom=["pool"], top=["pool"]).clip_param.CopyFrom(
        caffe_pb2.ClipParameter(min=-1, max=1))
    return net


def test_text_round_trip(tmp_path):
    net = _sample_net()
    text = io.format_text(net)
    assert io.parse_text(text, caffe_pb2.NetParameter()) == net
    path = tmp_path / "net.prototxt"
    io.write_text(path, net)
    assert io.read_text(path, caffe_pb2.NetParameter()) == net
    assert io.read_net_param(str(path)) == net
    assert io.read_net_param(path) == net          # os.PathLike
    assert io.read_net_param(text) == net          # prototxt text
    assert io.read_net_param(net) == net           # a message: copied
    assert io.read_net_param(net) is not net
    assert os.listdir(tmp_path) == ["net.prototxt"]  # no temp files left behind


def test_binary_round_trip(tmp_path):
    net = _sample_net()
    path = tmp_path / "w.caffemodel"
    io.write_binary(path, net)
    assert path.read_bytes() == net.SerializeToString()
    assert io.read_binary(path, caffe_pb2.NetParameter) == net
    assert io.read_net_param_binary(str(path)) == net
    io.write_binary(path, caffe_pb2.NetParameter(name="again"))  # replaces
    assert io.read_binary(path, caffe_pb2.NetParameter).name == "again"
    assert os.listdir(tmp_path) == ["w.caffemodel"]


def test_crlf_and_comments():
    text = 'name: "x"\r\n# a comment\r\nlayer {\r\n  name: "a"  # trailing\r\n  type: "ReLU"\r\n}\r\n'
    net = io.parse_text(text, caffe_pb2.NetParameter())
    assert net.layer[0].type == "ReLU"


def _prototxts(*roots):
    out = []
    for root in roots:
        out += glob.glob(os.path.join(root, "**", "*.prototxt"), recursive=True)
    return sorted(out)


def test_all_golden_and_model_prototxts_parse(golden, models):
    paths = _prototxts(golden, models) + [model_path("res10_ssd_face", "deploy.prototxt")]
    assert len(paths) > 50
    for path in paths:
        if "solver" in os.path.basename(path):
            solver = io.read_solver_param(path)
            assert solver.HasField("type") or not solver.HasField("solver_type")
        else:
            net = io.read_net_param(path)
            # (A three-param BatchNorm still "needs" Caffe's idempotent BN upgrade.)
            assert not net.layers and not net.input and not net.input_dim, path
            assert not upgrade.net_needs_data_upgrade(net), path


def test_ssd_models_parse(models):
    res10 = io.read_net_param(model_path("res10_ssd_face", "deploy.prototxt"))
    types = {layer.type for layer in res10.layer}
    assert {"Normalize", "Permute", "PriorBox", "DetectionOutput", "Input"} <= types
    assert res10.layer[0].type == "Input"  # upgraded from input/input_shape
    det = [l for l in res10.layer if l.type == "DetectionOutput"][0].detection_output_param
    assert det.num_classes == 2 and det.nms_param.nms_threshold > 0
    wechat = io.read_net_param(model_path("wechat_qrcode", "detect.prototxt"))
    assert any(l.HasField("prior_box_param") for l in wechat.layer)
    assert any(l.HasField("permute_param") for l in wechat.layer)


def test_all_binaries_parse(golden, models):
    models_ = glob.glob(os.path.join(golden, "**", "*.caffemodel"), recursive=True)
    models_ += glob.glob(os.path.join(models, "**", "*.caffemodel"), recursive=True)
    models_.append(model_path("res10_ssd_face", "res10_300x300_ssd_iter_140000.caffemodel"))
    assert len(models_) >= 5
    for path in models_:
        net = io.read_net_param_binary(path)
        assert len(net.layer) > 0, path
    states = glob.glob(os.path.join(golden, "**", "*.solverstate"), recursive=True)
    assert states
    for path in states:
        state = io.read_binary(path, caffe_pb2.SolverState)
        assert state.iter > 0 and len(state.history) > 0
    for path in glob.glob(os.path.join(golden, "**", "*.binaryproto"), recursive=True):
        blob = io.read_binary(path, caffe_pb2.BlobProto)
        assert len(blob.data) > 0


def test_ssd_params_in_caffemodel_match_prototxt():
    # The res10 weights file is SSD's training net: its PriorBox/Normalize/Permute/
    # DetectionOutput layers carry their parameters at SSD's field numbers.
    weights = io.read_net_param_binary(
        model_path("res10_ssd_face", "res10_300x300_ssd_iter_140000.caffemodel"))
    deploy = io.read_net_param(model_path("res10_ssd_face", "deploy.prototxt"))
    by_name = {l.name: l for l in weights.layer}
    checked = 0
    for layer in deploy.layer:
        for field in ("prior_box_param", "norm_param", "permute_param", "detection_output_param"):
            if layer.HasField(field) and layer.name in by_name:
                assert getattr(by_name[layer.name], field) == getattr(layer, field), layer.name
                checked += 1
    assert checked >= 15
    norm = [l for l in weights.layer if l.type == "Normalize"][0]
    assert len(norm.blobs) == 1


# -- errors --------------------------------------------------------------------------------------

def _parse_error(text, filename="lenet.prototxt"):
    with pytest.raises(PrototxtError) as info:
        io.parse_text(text, caffe_pb2.NetParameter(), filename)
    return info.value


def test_syntax_error_names_file_line_column():
    err = _parse_error('name: "x"\nlayer {\n  name "a"\n}\n')
    assert str(err).startswith("lenet.prototxt:3:")
    assert (err.filename, err.line) == ("lenet.prototxt", 3) and err.column > 0
    assert 'Expected ":"' in str(err)


def test_unknown_field_with_suggestion():
    err = _parse_error('name: "x"\nlayer {\n  name: "a"\n    botom: "b"\n}\n')
    assert str(err) == ('lenet.prototxt:4:5: Message type "caffe.LayerParameter" has no field '
                        'named "botom". Did you mean \'bottom\'?')
    err = _parse_error("layerz { }")
    assert "Did you mean 'layer'?" in str(err)
    err = _parse_error("completely_unrelated_name: 1")
    assert "completely_unrelated_name" in str(err) and "Did you mean" not in str(err)


def test_bad_enum():
    err = _parse_error("layer {\n  pooling_param { pool: MAXX }\n}")
    assert str(err).startswith("lenet.prototxt:2:")
    assert "caffe.PoolingParameter.PoolMethod" in str(err) and "MAXX" in str(err)
    assert "Did you mean 'MAX'?" in str(err)
    assert "Did you mean 'AVE'?" in str(_parse_error("layer { pooling_param { pool: ave } }"))
    assert "TRAIN" in str(_parse_error("state { phase: TRIAN }"))


def test_wrong_value_type_and_duplicates():
    assert "Expected string" in str(_parse_error("layer { name: 3 }"))
    assert "multiple" in str(_parse_error('layer { name: "a" name: "b" }'))
    assert "out of range" in str(_parse_error("layer { convolution_param { num_output: -1 } }"))


def test_missing_required_field():
    err = _parse_error("layer { clip_param { min: 1 } }")
    assert "clip_param.max" in str(err) and str(err).startswith("lenet.prototxt: ")


def test_read_net_param_error_names_the_file(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('layer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(PrototxtError) as info:
        io.read_net_param(str(path))
    assert str(info.value).startswith(str(path) + ":3:3: ")
    assert "Did you mean 'type'?" in str(info.value)


def test_missing_file():
    with pytest.raises(MissingFileError) as info:
        io.read_net_param("/nonexistent/dir/net.prototxt")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DecafError)
    with pytest.raises(MissingFileError):
        io.read_binary("/nonexistent/w.caffemodel", caffe_pb2.NetParameter)


def test_truncated_caffemodel(golden, tmp_path):
    data = open(os.path.join(golden, "formats", "weights", "tiny_net.caffemodel"), "rb").read()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedFileError) as info:
        io.read_net_param_binary(str(path))
    assert str(info.value).startswith("file %s is truncated or not a NetParameter: " % path)
    # A text file is not a binary NetParameter either.
    with pytest.raises(TruncatedFileError):
        io.read_binary(os.path.join(UPGRADE, "v1_net.prototxt"), caffe_pb2.NetParameter)
    # Missing required fields in binary: not a valid message, as in Caffe.
    partial = caffe_pb2.NetParameter()
    partial.layer.add().clip_param.min = 1
    path.write_bytes(partial.SerializePartialToString())
    with pytest.raises(TruncatedFileError, match="clip_param.max"):
        io.read_binary(path, caffe_pb2.NetParameter)


# -- upgrades ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["v1_net", "v0_net", "v2_deprecated_input"])
def test_golden_net_upgrade(golden, case):
    src = os.path.join(UPGRADE, case + ".prototxt")
    original = io.read_text(src, caffe_pb2.NetParameter())
    assert upgrade.net_needs_upgrade(original)
    got = io.read_net_param(src)
    want = io.read_text(os.path.join(UPGRADE, case + ".upgraded.prototxt"),
                        caffe_pb2.NetParameter())
    assert got == want, io.format_text(got)
    again = caffe_pb2.NetParameter()
    again.CopyFrom(got)
    upgrade.upgrade_net_as_needed(again)
    assert again == got  # idempotent


def test_golden_solver_upgrade(golden):
    got = io.read_solver_param(os.path.join(UPGRADE, "old_solver.prototxt"))
    want = io.read_text(os.path.join(UPGRADE, "old_solver.upgraded.prototxt"),
                        caffe_pb2.SolverParameter())
    assert got == want
    assert got.type == "Nesterov" and not got.HasField("solver_type")


def test_golden_binary_upgrade(golden):
    got = io.read_net_param_binary(os.path.join(UPGRADE, "v1_net.caffemodel"))
    path = os.path.join(UPGRADE, "v1_net.upgraded.caffemodel")
    want = io.read_binary(path, caffe_pb2.NetParameter)
    assert got == want
    assert got.SerializeToString() == open(path, "rb").read()  # byte for byte
    expected = np.load(os.path.join(golden, "formats", "expected.npz"))
    layers = {l.name: l for l in got.layer}
    prefix = "upgrade.v1_upgraded_blob_dims."
    keys = [k for k in expected.files if k.startswith(prefix)]
    assert keys
    for key in keys:
        name, i = key[len(prefix):].rsplit(".", 1)
        blob = layers[name].blobs[int(i)]
        dims = list(blob.shape.dim) or [blob.num, blob.channels, blob.height, blob.width]
        assert dims == list(expected[key]), key
        values = expected["upgrade.v1.param.%s.%s" % (name, i)]
        np.testing.assert_array_equal(np.asarray(blob.data, np.float32), values.ravel())


def test_v1_data_transform_and_param_specs():
    text = """
    layers { name: "d" type: DATA top: "data" top: "label"
             data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m" mirror: true
                          crop_size: 3 } }
    layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"
             param: "w" param: "b" blob_share_mode: PERMISSIVE
             blobs_lr: 1 blobs_lr: 2 blobs_lr: 3 weight_decay: 0 loss_weight: 2
             inner_product_param { num_output: 3 }
             exclude { phase: TEST } }
    layers { type: NONE }
    """
    net = io.read_net_param(text)
    data, ip, none = net.layer
    assert data.type == "Data" and data.data_param.source == "db"
    assert not data.data_param.HasField("scale") and not data.data_param.HasField("mirror")
    t = data.transform_param
    assert (t.scale, t.mean_file, t.mirror, t.crop_size) == (0.5, "m", True, 3)
    assert ip.type == "InnerProduct" and [p.name for p in ip.param] == ["w", "b", ""]
    assert ip.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert [p.lr_mult for p in ip.param] == [1, 2, 3]
    assert ip.param[0].decay_mult == 0 and not ip.param[1].HasField("decay_mult")
    assert list(ip.loss_weight) == [2] and ip.exclude[0].phase == caffe_pb2.TEST
    assert none.type == "" and none.HasField("type")


def test_layer_and_layers_together_is_an_error():
    with pytest.raises(PrototxtError, match="both 'layer' and 'layers'"):
        io.read_net_param('layer { name: "a" } layers { name: "b" type: RELU }')


def test_v1_type_names_cover_the_enum():
    for value in caffe_pb2.V1LayerParameter.LayerType.values():
        name = upgrade.upgrade_v1_layer_type(value)
        assert isinstance(name, str)
    assert upgrade.upgrade_v1_layer_type(caffe_pb2.V1LayerParameter.SOFTMAX_LOSS) == \
        "SoftmaxWithLoss"
    assert upgrade.upgrade_v1_layer_type(caffe_pb2.V1LayerParameter.IM2COL) == "Im2col"


def test_v0_incompatible_setting_is_dropped(caplog):
    text = """input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
    layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "data" top: "r" }"""
    net = caffe_pb2.NetParameter()
    io.parse_text(text, net)
    with caplog.at_level(logging.ERROR, logger="decaf.proto"):
        assert upgrade.upgrade_net_as_needed(net) is False
    assert "Unknown parameter num_output for layer type relu" in caplog.text
    assert [l.type for l in net.layer] == ["Input", "ReLU"]


def test_v0_data_layer_and_padding_errors():
    text = """layers { layer { name: "d" type: "data" source: "db" batchsize: 8 cropsize: 5
                                 meanfile: "m" scale: 2 rand_skip: 3 } top: "data" }"""
    layer = io.read_net_param(text).layer[0]
    assert layer.type == "Data"
    assert (layer.data_param.source, layer.data_param.batch_size, layer.data_param.rand_skip) \
        == ("db", 8, 3)
    assert (layer.transform_param.crop_size, layer.transform_param.mean_file,
            layer.transform_param.scale) == (5, "m", 2)
    bad = """input: "x"
    layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }
    layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }"""
    with pytest.raises(PrototxtError, match="non-convolutional"):
        io.read_net_param(bad)
    with pytest.raises(PrototxtError, match="Unknown blob input"):
        io.read_net_param('layers { layer { name: "r" type: "relu" } bottom: "nope" top: "r" }')
    with pytest.raises(PrototxtError, match="Unknown V0 layer type"):
        io.read_net_param('layers { layer { name: "r" type: "frobnicate" } }')


def test_input_upgrade_variants():
    net = io.read_net_param('input: "a" input: "b" input_shape { dim: 1 } input_shape { dim: 2 '
                            'dim: 3 } layer { name: "r" type: "ReLU" bottom: "a" top: "a" }')
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1], [2, 3]]
    assert net.layer[1].name == "r" and not net.input and not net.input_shape
    # Inputs without shapes (old weights files): simply dropped.
    legacy = caffe_pb2.NetParameter(input=["data"])
    legacy.layer.add(name="r")
    upgrade.upgrade_net_as_needed(legacy)
    assert [l.name for l in legacy.layer] == ["r"] and not legacy.input
    with pytest.raises(PrototxtError, match="input_dim"):
        io.read_net_param('input: "a" input_dim: 1 input_dim: 2')


def test_batch_norm_upgrade_keeps_other_settings():
    net = io.read_net_param('layer { name: "bn" type: "BatchNorm" param { lr_mult: 3 name: "s" } '
                            'param { decay_mult: 2 } param { } }')
    specs = net.layer[0].param
    assert [(p.lr_mult, p.decay_mult) for p in specs] == [(0, 0)] * 3
    assert specs[0].name == "s"
    two = io.read_net_param('layer { name: "bn" type: "BatchNorm" param { lr_mult: 3 } }')
    assert two.layer[0].param[0].lr_mult == 3  # only the three-param form is upgraded


def test_solver_type_conflicts():
    for enum_name, string in [("SGD", "SGD"), ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                              ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")]:
        assert io.read_solver_param("solver_type: %s base_lr: 0.1" % enum_name).type == string
    same = io.read_solver_param('solver_type: ADAM type: "Adam"')
    assert same.type == "Adam" and not same.HasField("solver_type")
    with pytest.raises(PrototxtError, match="disagree"):
        io.read_solver_param('solver_type: ADAM type: "SGD"')
    plain = io.read_solver_param('type: "RMSProp"')
    assert plain.type == "RMSProp"
    assert upgrade.upgrade_solver_type(caffe_pb2.SolverParameter()) is False


def test_format_text_matches_caffe_layout(golden):
    # Caffe's upgraded files were printed by protobuf's TextFormat: same text as ours.
    for case in ("v1_net", "v0_net", "v2_deprecated_input"):
        path = os.path.join(UPGRADE, case + ".upgraded.prototxt")
        want = open(path).read()
        got = io.format_text(io.read_net_param(os.path.join(UPGRADE, case + ".prototxt")))
        assert got == want, case
    want = open(os.path.join(UPGRADE, "old_solver.upgraded.prototxt")).read()
    got = io.format_text(io.read_solver_param(os.path.join(UPGRADE, "old_solver.prototxt")))
    assert got == want
    assert text_format.MessageToString(caffe_pb2.NetParameter()) == ""
