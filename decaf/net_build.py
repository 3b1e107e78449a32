"""Turning a NetParameter into the list of layers Caffe actually builds.

``filter_net`` applies the include/exclude NetStateRules (phase, level, stage);
``insert_splits`` adds a Split layer wherever a blob feeds several layers (or feeds a layer and
is also a loss), so that each consumer gets its own diff and the Split sums them on backward.
"""
from .errors import NetError
from .proto import caffe_pb2


def state_meets_rule(state, rule):
    """Caffe's StateMeetsRule: every condition the rule sets must hold for the state."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param):
    """A copy of ``param`` keeping only the layers whose rules admit ``param.state``."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetError("Layer %r: specify either include rules or exclude rules; not both."
                           % layer.name)
        included = not len(layer.include)
        if any(state_meets_rule(param.state, r) for r in layer.exclude):
            included = False
        if any(state_meets_rule(param.state, r) for r in layer.include):
            included = True
        if included:
            out.layer.add().CopyFrom(layer)
    return out


def split_layer_name(layer_name, blob_name, blob_idx):
    return "%s_%s_%d_split" % (blob_name, layer_name, blob_idx)


def split_blob_name(layer_name, blob_name, blob_idx, split_idx):
    return "%s_%s_%d_split_%d" % (blob_name, layer_name, blob_idx, split_idx)


def _split_layer(layer_name, blob_name, blob_idx, count, loss_weight):
    sp = caffe_pb2.LayerParameter()
    sp.name = split_layer_name(layer_name, blob_name, blob_idx)
    sp.type = "Split"
    sp.bottom.append(blob_name)
    for k in range(count):
        sp.top.append(split_blob_name(layer_name, blob_name, blob_idx, k))
        if loss_weight:
            sp.loss_weight.append(loss_weight if k == 0 else 0.0)
    return sp


def insert_splits(param):
    """Caffe's InsertSplits (insert_splits.cpp), same layer and blob names."""
    last_top = {}          # blob name -> (layer index, top index) of its latest producer
    source_of = {}         # (layer, bottom index) -> producing (layer, top index)
    uses = {}              # (layer, top index) -> number of consumers (+1 for a loss use)
    loss_of = {}
    layer_names = [l.name for l in param.layer]
    for i, name in enumerate(param.input):
        last_top[name] = (-1, i)
    for i, layer in enumerate(param.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_top:
                raise NetError("Unknown bottom blob %r (layer %r, bottom index %d): no layer "
                               "before it produces it" % (blob, layer.name, j))
            src = last_top[blob]
            source_of[(i, j)] = src
            uses[src] = uses.get(src, 0) + 1
        for j, blob in enumerate(layer.top):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            src = last_top[layer.top[j]]
            loss_of[src] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                uses[src] = uses.get(src, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    done = {}
    for i, name in enumerate(param.input):
        if uses.get((-1, i), 0) > 1:
            out.layer.add().CopyFrom(_split_layer("input", name, i, uses[(-1, i)], 0))
    for i, layer in enumerate(param.layer):
        lp = out.layer.add()
        lp.CopyFrom(layer)
        for j, blob in enumerate(layer.bottom):
            src = source_of[(i, j)]
            if uses.get(src, 0) > 1:
                owner = "input" if src[0] == -1 else layer_names[src[0]]
                k = done.get(src, 0)
                lp.bottom[j] = split_blob_name(owner, blob, src[1], k)
                done[src] = k + 1
        for j, blob in enumerate(layer.top):
            n = uses.get((i, j), 0)
            if n > 1:
                w = loss_of.get((i, j), 0.0)
                out.layer.add().CopyFrom(_split_layer(layer.name, blob, j, n, w))
                if w:
                    del lp.loss_weight[:]
                    # the Split carries the loss; its consumers are numbered from 1
                done[(i, j)] = 1 if w else 0
    return out
