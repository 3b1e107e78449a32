"""Export a decaf Net to an ONNX model of standard operators (the default domain only).

The layers are walked in the net's order; each layer's registered emitter writes its nodes.
Values are named as Caffe's blobs: a blob written in place by several layers (conv1 -> bn_conv1
-> scale_conv1 -> conv1_relu) is called ``conv1`` after its last writer and
``conv1/<layer>`` before. Inputs come from the Input layers (and upgraded ``input:`` fields),
outputs are the net's outputs (or the ``prune_to`` blob).
"""
from ..errors import DecafError
from .graph import GraphBuilder
from .registry import EMITTERS, Ctx, supported_types

DEFAULT_OPSET = 17
MIN_OPSET = 13
# the types whose top shape depends on the data (ONNX output dims left symbolic)
DATA_DEPENDENT = {"DetectionOutput", "Filter"}


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is a dependency
        raise DecafError("ONNX export needs the 'onnx' package: pip install onnx") from e
    return onnx


def _unsupported(net, i):
    lp = net.layers[i].layer_param
    return DecafError("ONNX export: layer %r has type %s, which cannot be exported (%s). "
                      "Supported types: %s" % (lp.name, lp.type, _why(lp.type),
                                              ", ".join(supported_types())))


def _why(type_name):
    if type_name == "Python":
        return "Python layers run arbitrary code"
    if type_name.endswith("Loss") or type_name in ("Accuracy",):
        return "loss and accuracy layers belong to a train net; export the deploy net"
    if type_name.endswith("Data") or type_name == "WindowData":
        return "data layers read files; export a deploy net with Input layers"
    return "no ONNX mapping"


def _layer_range(net, prune_to):
    """Indices of the layers to export and the output blob names."""
    tops, bottoms = _names(net, net.top_ids), _names(net, net.bottom_ids)
    if prune_to is None:
        return list(range(len(net.layers))), list(net.outputs)
    writers = [i for i, t in enumerate(tops) if prune_to in t]
    if not writers and prune_to not in net.inputs:
        raise DecafError("ONNX export: -prune_to %r names no blob of the net (blobs: %s)"
                         % (prune_to, ", ".join(net.blobs)))
    last = writers[-1] if writers else -1
    need, keep = {prune_to}, []
    for i in range(last, -1, -1):
        if set(tops[i]) & need:
            keep.append(i)
            need |= set(bottoms[i])
    return sorted(keep), [prune_to]


def _names(net, ids):
    return [[net._blob_names[j] for j in row] for row in ids]


def _value_info(onnx, name, shape, dynamic_batch, data_dependent=False):
    dims = list(shape)
    if data_dependent:
        dims = [None] * len(dims)
    elif dynamic_batch and dims:
        dims[0] = "N"
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def build_graph(net, opset=DEFAULT_OPSET, dynamic_batch=False, prune_to=None):
    """The ONNX ModelProto of ``net`` (a decaf Net), unchecked."""
    from . import emitters  # noqa: F401  (fills the registry)
    onnx = _onnx()
    if int(opset) < MIN_OPSET:
        raise DecafError("ONNX export: opset %d is too old (use %d or newer)" % (opset, MIN_OPSET))
    g = GraphBuilder(onnx, opset, dynamic_batch)
    order, outputs = _layer_range(net, prune_to)
    tops, bottoms = _names(net, net.top_ids), _names(net, net.bottom_ids)
    last_writer = {}
    for i in order:
        for t in tops[i]:
            last_writer[t] = i
    current = {}      # Caffe blob name -> current ONNX value name
    shapes = {n: tuple(b.shape) for n, b in net.blobs.items()}
    inputs = []
    for name in net.inputs:
        g.used.add(name)
        current[name] = name
        inputs.append(_value_info(onnx, name, shapes[name], dynamic_batch))
    for name in net.inputs:      # an input written in place: every version gets a new name
        last_writer.pop(name, None)
    for t in last_writer:
        g.used.add(t)
    dynamic = set()   # blobs whose shape depends on the data (after DetectionOutput, Filter)
    for i in order:
        layer = net.layers[i]
        lp = layer.layer_param
        if lp.type == "Input":
            continue
        emit = EMITTERS.get(lp.type)
        if emit is None:
            raise _unsupported(net, i)
        bnames, tnames = bottoms[i], tops[i]
        bottom = [current[b] for b in bnames]
        top = [t if last_writer.get(t) == i else g.fresh("%s/%s" % (t, lp.name)) for t in tnames]
        emit(Ctx(g, layer, bottom, top, [shapes[b] for b in bnames],
                 [shapes[t] for t in tnames]))
        current.update(zip(tnames, top))
        if lp.type in DATA_DEPENDENT or dynamic.intersection(bnames):
            dynamic.update(tnames)
    outs = _outputs(onnx, g, net, outputs, current, shapes, dynamic)
    if not outs:
        raise DecafError("ONNX export: net %r has no output blob (every top is consumed or "
                         "silenced); name one with prune_to" % net.name)
    graph = onnx.helper.make_graph(g.nodes, net.name or "decaf", inputs, outs, g.initializers)
    model = onnx.helper.make_model(graph, producer_name="decaf",
                                   opset_imports=[onnx.helper.make_opsetid("", int(opset))])
    model.ir_version = min(model.ir_version, _ir_version(onnx, opset))
    return model


def _outputs(onnx, g, net, outputs, current, shapes, dynamic):
    """The graph outputs. An input rewritten in place keeps its name for the graph input, so
    its output is the last version; a pruned blob written again later gets an Identity."""
    outs = []
    for blob in outputs:
        v = current[blob]
        name = v if blob in net.inputs else blob
        if name != v:
            g.op1("Identity", [v], name)
        outs.append(_value_info(onnx, name, shapes[blob], g.dynamic_batch, blob in dynamic))
    return outs


def _ir_version(onnx, opset):
    try:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", int(opset))])
    except Exception:  # pragma: no cover - older onnx
        return 8


def export(net, path=None, opset=DEFAULT_OPSET, dynamic_batch=False, prune_to=None,
           check=True):
    """Export ``net`` to ONNX; writes ``path`` when given; returns the ModelProto.
    ``check`` runs ``onnx.checker.check_model(model, full_check=True)``."""
    onnx = _onnx()
    model = build_graph(net, opset, dynamic_batch, prune_to)
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise DecafError("ONNX export: the model does not pass onnx.checker: %s" % e) from e
    if path is not None:
        onnx.save(model, str(path))
    return model


def export_files(model, weights=None, path=None, **kwargs):
    """Export the deploy net ``model`` (prototxt) with ``weights`` (caffemodel), TEST phase."""
    from ..net import Net
    net = Net(model, phase="TEST", weights=weights)
    return export(net, path, **kwargs)


