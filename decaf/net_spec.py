"""NetSpec: write nets in Python, pycaffe's ``caffe.net_spec`` (``caffe.layers``, ``caffe.params``).

    from caffe import layers as L, params as P
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    print(n.to_proto())

``L.<Type>(*bottoms, **params)`` is a layer of that type: keyword arguments go into the layer's
``<type>_param`` message when it has that field, else onto the LayerParameter itself
(``param=[dict(lr_mult=1)]``, ``loss_weight=...``, ``include=dict(phase=...)``); a keyword that
ends in ``param`` (``transform_param=dict(...)``) always goes onto the LayerParameter. Lists
fill repeated fields (a scalar fills a one-element list), dicts fill messages. ``ntop=k`` gives
k tops (0: the layer itself is returned), ``in_place=True`` makes the tops the bottoms.
Unnamed layers and blobs are named ``<Type><count>`` in the order ``to_proto`` meets them, as
pycaffe does, so the same script gives the same prototxt.
"""
from collections import Counter, OrderedDict

from .proto import caffe_pb2

# Layer types whose parameters live in a message not named after the type.
_PARAM_ALIASES = {"Deconvolution": "convolution"}


def param_name_dict():
    """{layer type name: parameter field stem}: 'Convolution' -> 'convolution', from the
    LayerParameter fields ``<stem>_param`` and their message types ``<Type>Parameter``."""
    layer = caffe_pb2.LayerParameter()
    names = {}
    for field in layer.DESCRIPTOR.fields:
        if not field.name.endswith("_param") or field.message_type is None:
            continue
        type_name = field.message_type.name
        if type_name.endswith("Parameter"):
            type_name = type_name[:-len("Parameter")]
        names[type_name] = field.name[:-len("_param")]
    return names


def to_proto(*tops):
    """A NetParameter with every layer needed to compute ``tops`` (blobs named automatically)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def _is_repeated(proto, name):
    return hasattr(getattr(proto, name), "extend")


def assign_proto(proto, name, val):
    """Set field ``name`` of ``proto`` from a Python value: lists fill repeated fields (dicts in
    a list add messages), dicts fill a message, anything else is assigned; a scalar given for a
    repeated field becomes a one-element list."""
    if _is_repeated(proto, name) and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        field = getattr(proto, name)
        if val and isinstance(val[0], dict):
            for item in val:
                sub = field.add()
                for k, v in item.items():
                    assign_proto(sub, k, v)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer (``fn``), the ``n``-th of its tops."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its input Tops and its parameters (``ntop`` and ``in_place`` taken
    out)."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError("%s input %d is not a Top (type is %s)"
                                % (type_name, index, type(inp)))
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _update(self, params):
        self.params.update(params)

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            self._assign(layer, k, v)
        layers[self] = layer

    def _assign(self, layer, k, v):
        if k.endswith("param"):  # generic *_param messages, and `param` (ParamSpec list)
            assign_proto(layer, k, v)
            return
        stem = _param_names.get(self.type_name) or _PARAM_ALIASES.get(self.type_name)
        if stem is not None:
            try:
                assign_proto(getattr(layer, stem + "_param"), k, v)
                return
            except AttributeError:
                pass
        assign_proto(layer, k, v)


class MissingTopError(AttributeError, KeyError):
    """A NetSpec has no top of that name (a KeyError, as in pycaffe, and an AttributeError, so
    that ``hasattr``, ``copy`` and ``pickle`` work)."""


class NetSpec:
    """Tops assigned as attributes (``n.conv1 = L.Convolution(...)``) name their blobs and
    layers; ``to_proto()`` gives the NetParameter with every layer needed for them."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise MissingTopError(name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.tops[item]

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name, params):
        self.tops[name]._update(params)

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``layers.Type(*bottoms, **params)``: a layer of type ``Type``. Returns its Top (one top),
    a tuple of Tops (ntop > 1) or the Function itself (ntop=0)."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        return layer_fn


class _ParamEnum:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, param_name):
        if param_name.startswith("__") and param_name.endswith("__"):
            raise AttributeError(param_name)
        return getattr(getattr(caffe_pb2, self._name + "Parameter"), param_name)


class Parameters:
    """``params.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX``: the enum values of
    ``<Type>Parameter`` messages."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _ParamEnum(name)


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
