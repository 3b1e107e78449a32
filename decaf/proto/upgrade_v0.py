"""V0 -> V1 net upgrade: Caffe's UpgradeV0Net and its helpers (upgrade_proto.cpp).

A V0 net wraps each layer's settings in ``layers { layer { type: "conv" ... } }``: one flat
V0LayerParameter with a string type.  The upgrade produces V1 layers
(``layers { type: CONVOLUTION convolution_param { ... } }``), which
:func:`decaf.proto.upgrade.upgrade_v1_net` then turns into current ``layer`` entries.
Separate "padding" layers are folded into the pad of the convolution or pooling layer that
consumes them.
"""
import logging

from ..errors import PrototxtError
from . import caffe_pb2

log = logging.getLogger("decaf.proto")

_V1 = caffe_pb2.V1LayerParameter

# V0 string type -> V1 enum, exactly the names Caffe's UpgradeV0LayerType knows.
V0_LAYER_TYPES = {
    "accuracy": _V1.ACCURACY,
    "bnll": _V1.BNLL,
    "concat": _V1.CONCAT,
    "conv": _V1.CONVOLUTION,
    "data": _V1.DATA,
    "dropout": _V1.DROPOUT,
    "euclidean_loss": _V1.EUCLIDEAN_LOSS,
    "flatten": _V1.FLATTEN,
    "hdf5_data": _V1.HDF5_DATA,
    "hdf5_output": _V1.HDF5_OUTPUT,
    "im2col": _V1.IM2COL,
    "images": _V1.IMAGE_DATA,
    "infogain_loss": _V1.INFOGAIN_LOSS,
    "innerproduct": _V1.INNER_PRODUCT,
    "lrn": _V1.LRN,
    "multinomial_logistic_loss": _V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": _V1.POOLING,
    "relu": _V1.RELU,
    "sigmoid": _V1.SIGMOID,
    "softmax": _V1.SOFTMAX,
    "softmax_loss": _V1.SOFTMAX_LOSS,
    "split": _V1.SPLIT,
    "tanh": _V1.TANH,
    "window_data": _V1.WINDOW_DATA,
}

# V0 field -> {V0 layer type: (V1 sub-message, its field)}.  Which V0 settings are meaningful
# for which layer type, and where the V1 format keeps them.  A V0 field set on a layer type not
# listed is reported and dropped (Caffe: "Unknown parameter X for layer type T").
_PER_TYPE = [
    ("num_output", {"conv": ("convolution_param", "num_output"),
                    "innerproduct": ("inner_product_param", "num_output")}),
    ("biasterm", {"conv": ("convolution_param", "bias_term"),
                  "innerproduct": ("inner_product_param", "bias_term")}),
    ("weight_filler", {"conv": ("convolution_param", "weight_filler"),
                       "innerproduct": ("inner_product_param", "weight_filler")}),
    ("bias_filler", {"conv": ("convolution_param", "bias_filler"),
                     "innerproduct": ("inner_product_param", "bias_filler")}),
    ("pad", {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")}),
    ("kernelsize", {"conv": ("convolution_param", "kernel_size"),
                    "pool": ("pooling_param", "kernel_size")}),
    ("group", {"conv": ("convolution_param", "group")}),
    ("stride", {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")}),
    ("pool", {"pool": ("pooling_param", "pool")}),
    ("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio")}),
    ("local_size", {"lrn": ("lrn_param", "local_size")}),
    ("alpha", {"lrn": ("lrn_param", "alpha")}),
    ("beta", {"lrn": ("lrn_param", "beta")}),
    ("k", {"lrn": ("lrn_param", "k")}),
    ("source", {"data": ("data_param", "source"),
                "hdf5_data": ("hdf5_data_param", "source"),
                "images": ("image_data_param", "source"),
                "window_data": ("window_data_param", "source"),
                "infogain_loss": ("infogain_loss_param", "source")}),
    ("scale", None),      # None: every layer type, into transform_param (see _TRANSFORM)
    ("meanfile", None),
    ("batchsize", {"data": ("data_param", "batch_size"),
                   "hdf5_data": ("hdf5_data_param", "batch_size"),
                   "images": ("image_data_param", "batch_size"),
                   "window_data": ("window_data_param", "batch_size")}),
    ("cropsize", None),
    ("mirror", None),
    ("rand_skip", {"data": ("data_param", "rand_skip"),
                   "images": ("image_data_param", "rand_skip")}),
    ("shuffle_images", {"images": ("image_data_param", "shuffle")}),
    ("new_height", {"images": ("image_data_param", "new_height")}),
    ("new_width", {"images": ("image_data_param", "new_width")}),
    ("concat_dim", {"concat": ("concat_param", "concat_dim")}),
    ("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold")}),
    ("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold")}),
    ("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction")}),
    ("det_context_pad", {"window_data": ("window_data_param", "context_pad")}),
    ("det_crop_mode", {"window_data": ("window_data_param", "crop_mode")}),
    ("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None)}),
]

# V0 fields that go to transform_param whatever the layer type.
_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size",
              "mirror": "mirror"}

# V0 PoolMethod -> PoolingParameter PoolMethod (same names).
_POOL = {caffe_pb2.V0LayerParameter.MAX: caffe_pb2.PoolingParameter.MAX,
         caffe_pb2.V0LayerParameter.AVE: caffe_pb2.PoolingParameter.AVE,
         caffe_pb2.V0LayerParameter.STOCHASTIC: caffe_pb2.PoolingParameter.STOCHASTIC}


def _is_repeated(field):
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6.x; `label` before that
    return flag if flag is not None else field.label == field.LABEL_REPEATED


def net_needs_v0_to_v1_upgrade(net_param):
    """True when any V1 ``layers`` entry nests a V0 ``layer``."""
    return any(layer.HasField("layer") for layer in net_param.layers)


def upgrade_v0_layer_type(type_name):
    """The V1 LayerType enum value for a V0 type string ("conv" -> CONVOLUTION)."""
    try:
        return V0_LAYER_TYPES[type_name]
    except KeyError:
        raise PrototxtError("Unknown V0 layer type: %r" % type_name) from None


def upgrade_v0_padding_layers(param, source="<net>"):
    """A copy of the V0 net ``param`` without its "padding" layers, each folded into the pad of
    the conv/pool layer that reads it (that layer then reads the padding layer's input)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layers[:]
    last_top = {name: -1 for name in param.input}  # blob -> index of the layer writing it
    for i, connection in enumerate(param.layers):
        v0 = connection.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(connection)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_top:
                raise PrototxtError("Unknown blob input %s to layer %d" % (blob, j),
                                    filename=source)
            top_idx = last_top[blob]
            if top_idx == -1:
                continue
            src = param.layers[top_idx]
            if src.layer.type != "padding":
                continue
            # Caffe only defines this for a single-input conv or pool layer reading a
            # single-input, single-output padding layer.
            if v0.type not in ("conv", "pool"):
                raise PrototxtError("Padding layer input to non-convolutional / non-pooling "
                                    "layer type %s" % v0.type, filename=source)
            if len(connection.bottom) != 1:
                raise PrototxtError("Conv Layer takes a single blob as input.", filename=source)
            if len(src.bottom) != 1:
                raise PrototxtError("Padding Layer takes a single blob as input.",
                                    filename=source)
            if len(src.top) != 1:
                raise PrototxtError("Padding Layer produces a single blob as output.",
                                    filename=source)
            target = out.layers[len(out.layers) - 1]
            target.layer.pad = src.layer.pad
            target.bottom[j] = src.bottom[0]
        for blob in connection.top:
            last_top[blob] = i
    return out


def upgrade_v0_layer_parameter(v0_connection, layer_param):
    """Fill the V1 layer ``layer_param`` from the V0 connection ``v0_connection``.

    Returns False when some V0 setting had no V1 equivalent for the layer's type (it is
    logged and dropped), True otherwise.
    """
    layer_param.Clear()
    compatible = True
    layer_param.bottom.extend(v0_connection.bottom)
    layer_param.top.extend(v0_connection.top)
    if not v0_connection.HasField("layer"):
        return compatible
    v0 = v0_connection.layer
    if v0.HasField("name"):
        layer_param.name = v0.name
    type_name = v0.type
    if v0.HasField("type"):
        layer_param.type = upgrade_v0_layer_type(type_name)
    for blob in v0.blobs:
        layer_param.blobs.add().CopyFrom(blob)
    layer_param.blobs_lr.extend(v0.blobs_lr)
    layer_param.weight_decay.extend(v0.weight_decay)
    for field, targets in _PER_TYPE:
        if not v0.HasField(field):
            continue
        value = getattr(v0, field)
        if targets is None:
            setattr(layer_param.transform_param, _TRANSFORM[field], value)
            continue
        if type_name not in targets:
            log.error("Unknown parameter %s for layer type %s", field, type_name)
            compatible = False
            continue
        sub_name, sub_field = targets[type_name]
        sub = getattr(layer_param, sub_name)
        if sub_field is None:  # the whole message
            sub.CopyFrom(value)
            continue
        if field == "pool":
            value = _POOL[value]
        target_desc = sub.DESCRIPTOR.fields_by_name[sub_field]
        if target_desc.message_type is not None:
            getattr(sub, sub_field).CopyFrom(value)
        elif _is_repeated(target_desc):
            getattr(sub, sub_field).append(value)
        else:
            setattr(sub, sub_field, value)
    return compatible


def upgrade_v0_net(v0_net_param, source="<net>"):
    """A V1 NetParameter (``layers`` with enum types) from the V0 net ``v0_net_param``.

    Returns (net, fully_compatible).  As Caffe, only the name, the layers, the inputs
    (``input``, ``input_dim``) and ``force_backward`` are carried over.
    """
    v0 = upgrade_v0_padding_layers(v0_net_param, source)
    net = caffe_pb2.NetParameter()
    compatible = True
    if v0.HasField("name"):
        net.name = v0.name
    for connection in v0.layers:
        compatible &= upgrade_v0_layer_parameter(connection, net.layers.add())
    net.input.extend(v0.input)
    net.input_dim.extend(v0.input_dim)
    if v0.HasField("force_backward"):
        net.force_backward = v0.force_backward
    return net, compatible
