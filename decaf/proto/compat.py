"""Binary messages written by other Caffe forks: unknown fields and decaf's own extensions.

A fork's .caffemodel or .solverstate may carry fields this schema does not declare. As Caffe and
OpenCV do, they are skipped: protobuf keeps them as unknown fields (so a re-save writes them back
unchanged) and :func:`warn_unknown_fields` logs ONE warning naming them (message type, field
number, how many times).

decaf's own LayerParameter extensions (``DECAF_EXTENSIONS``: center_loss_param,
yolov3_loss_param) sit at numbers no known fork uses; should a file still carry something else
there, the bytes do not parse as our message. :func:`parse_with_fallback` then re-reads the file
with those fields declared as plain ``bytes``, keeps each one that does parse as ours, and drops
the others (reported in the same warning), so that such a file loads instead of failing.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields

from . import caffe_pb2

DECAF_EXTENSIONS = ("center_loss_param", "yolov3_loss_param")

_TYPE_STRING, _TYPE_MESSAGE = 9, 11  # FieldDescriptor.TYPE_STRING / TYPE_MESSAGE
_fallback_pool = None
# Fields of known forks that decaf does not declare, named in the warning.
KNOWN_FOREIGN = {
    ("caffe.LayerParameter", 200): "SSD's annotated_data_param",
    ("caffe.LayerParameter", 201): "SSD's multibox_loss_param",
    ("caffe.LayerParameter", 205): "SSD's detection_evaluate_param",
    ("caffe.LayerParameter", 207): "SSD's video_data_param",
    # numbers only one fork read for docs/COMPAT.md uses
    ("caffe.LayerParameter", 156): "Intel Caffe's mn_grad_compress_param",
    ("caffe.LayerParameter", 158): "Intel Caffe's quantization_param",
    ("caffe.LayerParameter", 160): "PSPNet's scale_param",
    ("caffe.LayerParameter", 161): "PSPNet's bias_param",
    ("caffe.LayerParameter", 162): "PSPNet's batch_reduction_param",
    ("caffe.LayerParameter", 163): "PSPNet's interp_param",
    ("caffe.LayerParameter", 164): "PSPNet's seg_accuracy_param",
    ("caffe.LayerParameter", 211): "MobileNet-YOLO's relu6_param",
    ("caffe.LayerParameter", 600): "MobileNet-YOLO's region_loss_param",
    ("caffe.LayerParameter", 601): "MobileNet-YOLO's yolo_detection_output_param",
    ("caffe.LayerParameter", 602): "MobileNet-YOLO's yolov3_detection_output_param",
    ("caffe.LayerParameter", 603): "MobileNet-YOLO's yolov3_param",
    ("caffe.LayerParameter", 604): "MobileNet-YOLO's yolo_seg_param",
    ("caffe.LayerParameter", 605): "MobileNet-YOLO's segmentation_evaluate_param",
    ("caffe.LayerParameter", 6801): "NVIDIA Caffe's detectnet_groundtruth_param",
    ("caffe.LayerParameter", 6802): "NVIDIA Caffe's detectnet_augmentation_param",
    ("caffe.LayerParameter", 8266711): "Fast R-CNN's roi_pooling_param",
    ("caffe.LayerParameter", 8266712): "Fast R-CNN's smooth_l1_loss_param",
}


def _fallback_class(msg_cls):
    """``msg_cls`` from a copy of the schema where decaf's extensions are ``bytes`` fields."""
    global _fallback_pool
    if _fallback_pool is None:
        fdp = descriptor_pb2.FileDescriptorProto()
        caffe_pb2.DESCRIPTOR.CopyToProto(fdp)
        for m in fdp.message_type:
            if m.name == "LayerParameter":
                for f in m.field:
                    if f.name in DECAF_EXTENSIONS:
                        f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        f.ClearField("type_name")
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _fallback_pool = pool
    desc = _fallback_pool.FindMessageTypeByName(msg_cls.DESCRIPTOR.full_name)
    return message_factory.GetMessageClass(desc)


def _submessages(msg):
    """Every message nested in ``msg`` (depth first, ``msg`` included)."""
    stack = [msg]
    while stack:
        m = stack.pop()
        yield m
        for field, value in m.ListFields():
            if field.type != _TYPE_MESSAGE:
                continue
            if field.is_repeated:
                stack.extend(value)
            else:
                stack.append(value)


def parse_with_fallback(data, msg_cls):
    """(message, dropped) for bytes that do not parse as ``msg_cls`` only because a decaf
    extension field holds something else; ``dropped`` lists "LayerParameter field N (layer
    'x')" for each field skipped. Raises the DecodeError of the fallback parse otherwise."""
    loose = _fallback_class(msg_cls).FromString(data)
    dropped = []
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for m in _submessages(loose):
        if m.DESCRIPTOR.full_name != "caffe.LayerParameter":
            continue
        for name in DECAF_EXTENSIONS:
            if not m.HasField(name):
                continue
            sub_cls = getattr(caffe_pb2, fields[name].message_type.name)
            try:
                sub_cls.FromString(getattr(m, name))
            except Exception:  # noqa: BLE001 (any failure: not our message)
                m.ClearField(name)
                dropped.append("LayerParameter field %d (layer %r)"
                               % (fields[name].number, m.name))
    return msg_cls.FromString(loose.SerializeToString()), dropped


def first_invalid_string(msg):
    """The name ("caffe.LayerParameter.name") of the first string field whose bytes are not
    UTF-8 (protobuf hands those back as bytes), or None."""
    for m in _submessages(msg):
        for field, value in m.ListFields():
            if field.type != _TYPE_STRING:
                continue
            values = value if field.is_repeated else [value]
            if any(isinstance(v, bytes) for v in values):
                return field.full_name
    return None


def unknown_field_summary(msg):
    """{"caffe.Type field N": count} over every unknown field in ``msg`` and its submessages."""
    seen = {}
    for m in _submessages(msg):
        try:
            fields = unknown_fields.UnknownFieldSet(m)
        except Exception:  # noqa: BLE001 (a protobuf without the API: nothing to name)
            return seen
        for f in fields:
            known = KNOWN_FOREIGN.get((m.DESCRIPTOR.full_name, f.field_number))
            key = "%s field %d%s" % (m.DESCRIPTOR.full_name, f.field_number,
                                     " (%s)" % known if known else "")
            seen[key] = seen.get(key, 0) + 1
    return seen


def warn_unknown_fields(msg, name, dropped=()):
    """Log one warning naming the unknown fields of ``msg`` (read from file ``name``)."""
    seen = unknown_field_summary(msg)
    parts = ["%s (%d times)" % (k, n) if n > 1 else k for k, n in sorted(seen.items())]
    text = ""
    if parts:
        text = "skipped fields decaf does not know (another Caffe fork's?), kept as they are " \
               "on re-save: " + ", ".join(parts)
    if dropped:
        text += ("; " if text else "") + "dropped fields that are not decaf's extension of the " \
                "same number: " + ", ".join(dropped)
    if text:
        from .. import glog
        glog.warning("%s: %s" % (name, text), where="io.cpp:0")
    return parts + list(dropped)
