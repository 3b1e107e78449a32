"""decaf's LayerParameter numbers against the fork numbers recorded in fork_fields.py (read from
the forks' caffe.proto; docs/COMPAT.md has the table)."""
import pytest

from decaf.proto import caffe_pb2, compat

from .fork_fields import FORKS, numbers
from .test_compat import _varint   # the tests' own wire encoder, shared

LAYER = caffe_pb2.LayerParameter.DESCRIPTOR
# protobuf's scalar type names, as a fork's .proto spells them
_SCALAR = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 8: "bool", 9: "string",
           12: "bytes", 13: "uint32"}

# decaf fields a fork declares under the same name at another number, each for a stated reason
KNOWN_RENUMBERED = {
    # caffe-face's 147 is BVLC's swish_param; decaf's CenterLoss moved to its extension range
    ("wuyuebupt/caffe-face@11abb2ce", "center_loss_param"): (147, 7071000),
    # PSPNet predates BVLC's ScaleLayer/BiasLayer and numbered its own copies; BVLC's win
    ("hszhao/PSPNet@88d0b3ee", "scale_param"): (160, 142),
    ("hszhao/PSPNet@88d0b3ee", "bias_param"): (161, 141),
    # a version of SSD's repository that is not its ssd branch; 206 is the number NVIDIA,
    # Intel and MobileNet-YOLO carry, and the one decaf uses
    ("weiliu89/caffe@1d74defc", "norm_param"): (145, 206),
}

# BVLC numbers that a fork gave to another field: decaf keeps BVLC's meaning there. A model of
# such a fork that carries the field still parses (a different wire type is kept as unknown)
KNOWN_BVLC_CLASHES = {
    "weiliu89/caffe@1d74defc": {145, 146},
    "NVIDIA/caffe@6e8194f7": {145, 146, 147, 148},
    "intel/caffe@02756436": {147, 148},
    "alexgkendall/caffe-segnet@03d1e9f1": {137, 138},
    "xmyqsh/deeplab-v2@ad6cca84": {147, 148},
    "hszhao/PSPNet@88d0b3ee": {137, 140},
    "wuyuebupt/caffe-face@11abb2ce": {147},
}


def _type_name(field):
    if field.message_type is not None:
        return field.message_type.name
    if field.enum_type is not None:
        return field.enum_type.name
    return _SCALAR[field.type]


def test_every_recorded_fork_is_nonempty_and_numbers_are_valid():
    assert len(FORKS) == 10
    for fork, rec in FORKS.items():
        assert rec["bvlc"] and rec["own"], fork
        assert not rec["bvlc"] & set(rec["own"]), fork
        assert all(100 <= n < 2 ** 29 for n in numbers(fork)), fork


@pytest.mark.parametrize("fork", sorted(FORKS))
def test_decaf_extension_numbers_are_used_by_no_fork(fork):
    ours = {LAYER.fields_by_name[name].number for name in compat.DECAF_EXTENSIONS}
    assert ours == {7071000, 7071001}
    # every number decaf declares above BVLC's and SSD's ranges is an extension
    assert {f.number for f in LAYER.fields if f.number >= 1000} == ours
    assert not ours & numbers(fork)


@pytest.mark.parametrize("fork", sorted(FORKS))
def test_bvlc_numbers_a_fork_keeps_have_decafs_meaning(fork):
    # the numbers recorded as BVLC's are declared by decaf with BVLC's name at that number
    declared = {f.number for f in LAYER.fields}
    assert FORKS[fork]["bvlc"] <= declared


def test_shared_names_have_the_same_number_and_type():
    mismatched = {}
    for fork, rec in FORKS.items():
        for number, (name, type_name) in rec["own"].items():
            field = LAYER.fields_by_name.get(name)
            if field is None:
                continue
            if field.number != number:
                mismatched[(fork, name)] = (number, field.number)
            else:
                assert _type_name(field) == type_name, (fork, name)
    assert mismatched == KNOWN_RENUMBERED


def test_decafs_fork_fields_are_confirmed_by_a_read_fork():
    # the SSD fields decaf declares sit where a fork that was read puts them
    bvlc_tip = set(range(100, 149))
    extra = [f for f in LAYER.fields if f.number >= 100 and f.number not in bvlc_tip
             and f.name not in compat.DECAF_EXTENSIONS]
    assert sorted(f.name for f in extra) == ["detection_output_param", "norm_param",
                                             "permute_param", "prior_box_param"]
    for field in extra:
        seen = [fork for fork, rec in FORKS.items()
                if rec["own"].get(field.number) == (field.name, _type_name(field))]
        assert seen, field.name


def test_bvlc_numbers_reused_by_forks_are_exactly_the_known_ones():
    clashes = {}
    for fork, rec in FORKS.items():
        hit = {n for n, (name, _) in rec["own"].items()
               if n in LAYER.fields_by_number and LAYER.fields_by_number[n].name != name}
        if hit:
            clashes[fork] = hit
    assert clashes == KNOWN_BVLC_CLASHES




def test_nvcaffe_type_fields_at_bvlc_numbers_parse_as_unknown():
    # NVIDIA/caffe@6e8194f7 writes forward_type..backward_math (enums) at 145-148 and
    # cudnn_math_override at 150: varints where decaf has messages (145-148)
    raw = _varint((1 << 3) | 2) + _varint(4) + b"conv"
    for number in (145, 146, 147, 148, 150):
        raw += _varint(number << 3) + _varint(2)
    layer = caffe_pb2.LayerParameter.FromString(raw)
    assert layer.name == "conv"
    assert not any(layer.HasField(n) for n in ("parameter_param", "recurrent_param",
                                               "swish_param", "clip_param"))
    assert set(compat.unknown_field_summary(layer)) == {
        "caffe.LayerParameter field %d" % n for n in (145, 146, 147, 148, 150)}
    assert layer.SerializeToString() == raw


def test_foreign_field_labels_match_the_recorded_forks():
    for (msg, number), label in compat.KNOWN_FOREIGN.items():
        if msg != "caffe.LayerParameter":
            continue
        assert number not in LAYER.fields_by_number, label
        names = {rec["own"][number][0] for rec in FORKS.values() if number in rec["own"]}
        assert len(names) == 1 and label.endswith("'s " + names.pop()), (number, label)


def test_a_fast_rcnn_layer_is_named_in_the_warning():
    raw = _varint((1 << 3) | 2) + _varint(4) + b"rois"
    raw += _varint((8266711 << 3) | 2) + _varint(2) + _varint(1 << 3) + _varint(7)
    layer = caffe_pb2.LayerParameter.FromString(raw)
    assert compat.unknown_field_summary(layer) == {
        "caffe.LayerParameter field 8266711 (Fast R-CNN's roi_pooling_param)": 1}
