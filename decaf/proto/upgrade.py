"""Upgrading old Caffe nets and solvers to the current format (Caffe's upgrade_proto.cpp).

Nets (:func:`upgrade_net_as_needed`, applied in Caffe's order):

1. V0 -> V1: ``layers { layer { type: "conv" ... } }`` (see :mod:`decaf.proto.upgrade_v0`).
2. Data transformation: V1 Data/ImageData/WindowData layers' scale, mean_file, crop_size and
   mirror move into ``transform_param``.
3. V1 -> V2: ``layers { type: CONVOLUTION blobs_lr: 1 ... }`` becomes
   ``layer { type: "Convolution" param { lr_mult: 1 } ... }``; blobs are copied as stored.
4. Net-level ``input`` + ``input_shape``/``input_dim`` become a first layer
   ``layer { name: "input" type: "Input" top: ... input_param { shape ... } }``.
5. BatchNorm layers declaring three ``param`` entries (the old way to freeze its statistics)
   get ``lr_mult: 0 decay_mult: 0`` on each.

Solvers (:func:`upgrade_solver_as_needed`): the ``solver_type`` enum becomes the ``type`` string.

Everything works in place on the given message and logs what it did as glog lines with Caffe's
``upgrade_proto.cpp:<line>`` (so ``GLOG_minloglevel`` silences the notes, as in Caffe).
"""
from .. import glog
from ..errors import PrototxtError
from . import caffe_pb2
from .upgrade_v0 import (net_needs_v0_to_v1_upgrade, upgrade_v0_layer_parameter,  # noqa: F401
                         upgrade_v0_layer_type, upgrade_v0_net, upgrade_v0_padding_layers)

U = "upgrade_proto.cpp"   # the notes carry Caffe's source lines, as upgrade_proto.cpp logs them

_V1 = caffe_pb2.V1LayerParameter

# V1 LayerType enum -> the type string of the current format.
V1_LAYER_TYPES = {
    _V1.NONE: "",
    _V1.ABSVAL: "AbsVal",
    _V1.ACCURACY: "Accuracy",
    _V1.ARGMAX: "ArgMax",
    _V1.BNLL: "BNLL",
    _V1.CONCAT: "Concat",
    _V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    _V1.CONVOLUTION: "Convolution",
    _V1.DECONVOLUTION: "Deconvolution",
    _V1.DATA: "Data",
    _V1.DROPOUT: "Dropout",
    _V1.DUMMY_DATA: "DummyData",
    _V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    _V1.ELTWISE: "Eltwise",
    _V1.EXP: "Exp",
    _V1.FLATTEN: "Flatten",
    _V1.HDF5_DATA: "HDF5Data",
    _V1.HDF5_OUTPUT: "HDF5Output",
    _V1.HINGE_LOSS: "HingeLoss",
    _V1.IM2COL: "Im2col",
    _V1.IMAGE_DATA: "ImageData",
    _V1.INFOGAIN_LOSS: "InfogainLoss",
    _V1.INNER_PRODUCT: "InnerProduct",
    _V1.LRN: "LRN",
    _V1.MEMORY_DATA: "MemoryData",
    _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    _V1.MVN: "MVN",
    _V1.POOLING: "Pooling",
    _V1.POWER: "Power",
    _V1.RELU: "ReLU",
    _V1.SIGMOID: "Sigmoid",
    _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    _V1.SILENCE: "Silence",
    _V1.SOFTMAX: "Softmax",
    _V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    _V1.SPLIT: "Split",
    _V1.SLICE: "Slice",
    _V1.TANH: "TanH",
    _V1.WINDOW_DATA: "WindowData",
    _V1.THRESHOLD: "Threshold",
}

# The per-type sub-messages a V1 layer can carry; each has the same name in LayerParameter.
V1_PARAM_FIELDS = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
)

_SHARE_MODE = {_V1.STRICT: caffe_pb2.ParamSpec.STRICT,
               _V1.PERMISSIVE: caffe_pb2.ParamSpec.PERMISSIVE}

# V1 data layers whose own scale/mean_file/crop_size/mirror move to transform_param.
_DATA_LAYERS = ((_V1.DATA, "data_param"), (_V1.IMAGE_DATA, "image_data_param"),
                (_V1.WINDOW_DATA, "window_data_param"))
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


# -- what needs upgrading ------------------------------------------------------------------------

def net_needs_v1_to_v2_upgrade(net_param):
    return len(net_param.layers) > 0


def net_needs_data_upgrade(net_param):
    """True when a V1 data layer still sets transformation fields in its own parameter."""
    for layer in net_param.layers:
        for layer_type, field in _DATA_LAYERS:
            if layer.type == layer_type:
                sub = getattr(layer, field)
                if any(sub.HasField(name) for name in _TRANSFORM_FIELDS):
                    return True
    return False


def net_needs_input_upgrade(net_param):
    return len(net_param.input) > 0


def net_needs_batch_norm_upgrade(net_param):
    return any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net_param.layer)


def net_needs_upgrade(net_param):
    """True when ``net_param`` uses any deprecated format (V0, V1, data fields, inputs,
    three-param BatchNorm)."""
    return (net_needs_v0_to_v1_upgrade(net_param) or net_needs_v1_to_v2_upgrade(net_param)
            or net_needs_data_upgrade(net_param) or net_needs_input_upgrade(net_param)
            or net_needs_batch_norm_upgrade(net_param))


# -- the upgrades --------------------------------------------------------------------------------

def upgrade_net_data_transformation(net_param):
    """Move scale/mean_file/crop_size/mirror of V1 data layers into transform_param."""
    for layer in net_param.layers:
        for layer_type, field in _DATA_LAYERS:
            if layer.type != layer_type:
                continue
            sub = getattr(layer, field)
            for name in _TRANSFORM_FIELDS:
                if sub.HasField(name):
                    setattr(layer.transform_param, name, getattr(sub, name))
                    sub.ClearField(name)


def upgrade_v1_layer_type(layer_type):
    """The type string for a V1 LayerType enum value (CONVOLUTION -> "Convolution")."""
    try:
        return V1_LAYER_TYPES[layer_type]
    except KeyError:
        raise PrototxtError("Unknown V1LayerParameter layer type: %r" % layer_type) from None


def upgrade_v1_layer_parameter(v1, layer):
    """Fill the LayerParameter ``layer`` from the V1LayerParameter ``v1``.

    Returns False when ``v1`` still nests a V0 layer (ignored), True otherwise.
    """
    layer.Clear()
    compatible = True
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        layer.type = upgrade_v1_layer_type(v1.type)
    for blob in v1.blobs:
        layer.blobs.add().CopyFrom(blob)

    # Per-blob settings become ParamSpecs, created as far as the longest list needs.
    def spec(i):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = _SHARE_MODE[mode]
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for field in V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    if v1.HasField("layer"):
        glog.error("Input NetParameter has V0 layer -- ignoring.")
        compatible = False
    return compatible


def upgrade_v1_net(v1_net_param, source="<net>"):
    """A NetParameter with ``layer`` entries from one with V1 ``layers``.

    Returns (net, fully_compatible).  Everything but the layers is copied as is.
    """
    if len(v1_net_param.layer) > 0:
        raise PrototxtError(
            "Refusing to upgrade inconsistent NetParameter input; the definition includes both "
            "'layer' and 'layers' fields. The current format defines 'layer' fields with string "
            "type like layer { type: 'Layer' ... } and not layers { type: LAYER ... }. Manually "
            "switch the definition to 'layer' format to continue.", filename=source)
    net = caffe_pb2.NetParameter()
    net.CopyFrom(v1_net_param)
    net.ClearField("layers")
    net.ClearField("layer")
    compatible = True
    for i, v1 in enumerate(v1_net_param.layers):
        if not upgrade_v1_layer_parameter(v1, net.layer.add()):
            glog.error("Upgrade of input layer %d failed." % i)
            compatible = False
    return net, compatible


def upgrade_net_input(net_param, source="<net>"):
    """Replace the net-level ``input``/``input_shape``/``input_dim`` fields by an Input layer
    named "input", placed first.  Inputs without any shape (old weights files) are just
    dropped."""
    n = len(net_param.input)
    has_shape = len(net_param.input_shape) > 0
    has_dim = len(net_param.input_dim) > 0
    if has_shape or has_dim:
        if has_shape and len(net_param.input_shape) != n:
            raise PrototxtError("%d input blobs but %d input_shape entries: give one shape per "
                                "input" % (n, len(net_param.input_shape)), filename=source)
        if not has_shape and len(net_param.input_dim) != 4 * n:
            raise PrototxtError("%d input blobs but %d input_dim values: give four (num, "
                                "channels, height, width) per input"
                                % (n, len(net_param.input_dim)), filename=source)
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, blob in enumerate(net_param.input):
            layer.top.append(blob)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net_param.input_shape[i])
            else:
                shape.dim.extend(net_param.input_dim[4 * i:4 * i + 4])
        # Put it first, ahead of the layers that read its tops.
        layers = [layer]
        for old in net_param.layer:
            copy = caffe_pb2.LayerParameter()
            copy.CopyFrom(old)
            layers.append(copy)
        net_param.ClearField("layer")
        net_param.layer.extend(layers)
    net_param.ClearField("input")
    net_param.ClearField("input_shape")
    net_param.ClearField("input_dim")


def upgrade_net_batch_norm(net_param):
    """Set lr_mult and decay_mult to 0 on the three params of old-style BatchNorm layers
    (their statistics are not learned by gradient); other ParamSpec settings are kept."""
    for layer in net_param.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


def _replace(net_param, new):
    net_param.Clear()
    net_param.CopyFrom(new)


def upgrade_net_as_needed(net_param, source="<net>"):
    """Upgrade ``net_param`` in place to the current format; ``source`` names it in messages.

    Returns True when everything was carried over, False when some old setting had no
    equivalent (logged, as Caffe logs it, and dropped).
    """
    success = True
    if net_needs_v0_to_v1_upgrade(net_param):
        glog.info("Attempting to upgrade input file specified using deprecated "
                  "V0LayerParameter: " + source, U + ":26")
        new, ok = upgrade_v0_net(net_param, source)
        _replace(net_param, new)
        if ok:
            glog.info("Successfully upgraded file specified using deprecated V0LayerParameter",
                      U + ":34")
        else:
            success = False
            glog.error("Warning: had one or more problems upgrading V0NetParameter to "
                       "NetParameter (see above); continuing anyway.", U + ":31")
        glog.warning("Note that future Caffe releases will not support V0NetParameter; use "
                     "./build/tools/upgrade_net_proto_text for prototxt and "
                     "./build/tools/upgrade_net_proto_binary for model weights upgrade this and "
                     "any other net protos to the new format.", U + ":37")
    if net_needs_data_upgrade(net_param):
        glog.info("Attempting to upgrade input file specified using deprecated transformation "
                  "parameters: " + source, U + ":44")
        upgrade_net_data_transformation(net_param)
        glog.info("Successfully upgraded file specified using deprecated data transformation "
                  "parameters.", U + ":47")
        glog.warning("Note that future Caffe releases will only support transform_param "
                     "messages for transformation fields.", U + ":49")
    if net_needs_v1_to_v2_upgrade(net_param):
        glog.info("Attempting to upgrade input file specified using deprecated "
                  "V1LayerParameter: " + source, U + ":53")
        new, ok = upgrade_v1_net(net_param, source)
        _replace(net_param, new)
        if ok:
            glog.info("Successfully upgraded file specified using deprecated V1LayerParameter",
                      U + ":61")
        else:
            success = False
            glog.error("Warning: had one or more problems upgrading V1LayerParameter (see "
                       "above); continuing anyway.", U + ":58")
    if net_needs_input_upgrade(net_param):
        glog.info("Attempting to upgrade input file specified using deprecated input fields: "
                  + source, U + ":67")
        upgrade_net_input(net_param, source)
        glog.info("Successfully upgraded file specified using deprecated input fields.",
                  U + ":70")
        glog.warning("Note that future Caffe releases will only support input layers and not "
                     "input fields.", U + ":72")
    if net_needs_batch_norm_upgrade(net_param):
        glog.info("Attempting to upgrade batch norm layers using deprecated params: " + source,
                  U + ":77")
        upgrade_net_batch_norm(net_param)
        glog.info("Successfully upgraded batch norm layers using deprecated params.", U + ":80")
    return success


# -- solvers -------------------------------------------------------------------------------------

def solver_needs_type_upgrade(solver_param):
    return solver_param.HasField("solver_type")


def upgrade_solver_type(solver_param, source="<solver>"):
    """Turn the deprecated ``solver_type`` enum into the ``type`` string (in place).

    Caffe refuses a solver that sets both; here both are accepted when they name the same
    solver (``solver_type`` is then dropped) and refused when they differ.  Returns False when
    there was nothing to upgrade.
    """
    if not solver_param.HasField("solver_type"):
        glog.error("Warning: solver type already up to date.")
        return False
    name = SOLVER_TYPES.get(solver_param.solver_type)
    if name is None:
        raise PrototxtError("Unknown SolverParameter solver_type: %d"
                            % solver_param.solver_type, filename=source)
    if solver_param.HasField("type") and solver_param.type != name:
        raise PrototxtError(
            "Failed to upgrade solver: old solver_type field (enum) %s and new type field "
            "(string) %r are both specified and disagree"
            % (caffe_pb2.SolverParameter.SolverType.Name(solver_param.solver_type),
               solver_param.type), filename=source)
    solver_param.type = name
    solver_param.ClearField("solver_type")
    return True


def upgrade_solver_as_needed(solver_param, source="<solver>"):
    """Upgrade ``solver_param`` in place; returns True on success."""
    if not solver_needs_type_upgrade(solver_param):
        return True
    glog.info("Attempting to upgrade input file specified using deprecated 'solver_type' field "
              "(enum)': " + source, U + ":1080")
    if not upgrade_solver_type(solver_param, source):
        glog.error("Warning: had one or more problems upgrading SolverType (see above).",
                   U + ":1084")
        return False
    glog.info("Successfully upgraded file specified using deprecated 'solver_type' field (enum) "
              "to 'type' field (string).", U + ":1087")
    glog.warning("Note that future Caffe releases will only support 'type' field (string) for "
                 "a solver's type.", U + ":1089")
    return True
