"""GraphBuilder: the ONNX nodes, constants and value names of one export.

Every value name is unique (ONNX graphs are in SSA form); ``op`` adds a node of the default
domain and returns its output names; ``const`` adds an initializer. The opset decides how a few
operators take their arguments (ReduceMean's ``axes`` is an input from opset 18 on).
"""
import numpy as np


class GraphBuilder:
    """Collects nodes and initializers; ``onnx`` is the lazily imported module."""

    def __init__(self, onnx, opset, dynamic_batch=False):
        self.onnx, self.opset, self.dynamic_batch = onnx, int(opset), bool(dynamic_batch)
        self.nodes, self.initializers = [], []
        self.used = set()
        self._consts = {}

    def fresh(self, base):
        """A new value name derived from ``base``."""
        name, i = base, 1
        while name in self.used:
            name = "%s_%d" % (base, i)
            i += 1
        self.used.add(name)
        return name

    def const(self, value, base="const", dtype=np.float32):
        """An initializer holding ``value`` (cast to ``dtype``); small ones are shared."""
        arr = np.asarray(value, dtype=dtype)
        arr = np.ascontiguousarray(arr).reshape(arr.shape)   # keeps a 0-d scalar 0-d
        key = None
        if arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values, base="shape"):
        return self.const(np.asarray(values, np.int64).reshape(-1), base, np.int64)

    def op(self, op_type, inputs, outputs=None, base=None, n_out=1, **attrs):
        """Add node ``op_type``; ``outputs`` are names (claimed here) or made from ``base``.
        Returns the list of output names. Attributes that are None are left out."""
        if outputs is None:
            outputs = [self.fresh("%s/%s" % (base or op_type, i) if n_out > 1 else
                                  (base or op_type)) for i in range(n_out)]
        else:
            for o in outputs:
                if o:
                    self.used.add(o)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), list(outputs), name=self.fresh("node/" + (base or op_type)),
            **attrs))
        return list(outputs)

    def op1(self, op_type, inputs, out=None, base=None, **attrs):
        """``op`` with one output, returned as a name."""
        return self.op(op_type, inputs, [out] if out else None, base, **attrs)[0]

    # -- opset-dependent spellings ---------------------------------------------------------
    def reduce(self, op_type, x, axes, keepdims=1, out=None, base=None):
        """ReduceSum/Mean/L1/SumSquare/Max over ``axes``: ``axes`` is an input from opset 18 on
        (13 for ReduceSum), an attribute before."""
        axes = [int(a) for a in axes]
        as_input = self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13)
        if as_input:
            return self.op1(op_type, [x, self.ints(axes, "axes")], out, base, keepdims=keepdims)
        return self.op1(op_type, [x], out, base, axes=axes, keepdims=keepdims)

    def split(self, x, sizes, axis, outputs):
        """Split ``x`` along ``axis`` into pieces of ``sizes`` (an input from opset 13)."""
        if self.opset >= 13:
            return self.op("Split", [x, self.ints(sizes, "split")], outputs, axis=int(axis))
        return self.op("Split", [x], outputs, axis=int(axis), split=[int(s) for s in sizes])

    def reshape(self, x, shape, out=None, base=None, keep_batch=True):
        """Reshape ``x`` to the static ``shape``; with a dynamic batch the first dimension
        is copied from ``x`` (0) when ``keep_batch``."""
        shape = [int(d) for d in shape]
        if self.dynamic_batch and keep_batch and shape:
            shape[0] = 0
        return self.op1("Reshape", [x, self.ints(shape)], out, base)

    def slice(self, x, starts, ends, axes, out=None, base=None, steps=None):
        ins = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")]
        if steps is not None:
            ins.append(self.ints(steps, "steps"))
        return self.op1("Slice", ins, out, base)

    def scalar_mul(self, x, value, out=None, base=None):
        """x * value, or x itself (via Identity when ``out`` is asked for) when value is 1."""
        if value == 1:
            return self.op1("Identity", [x], out, base) if out else x
        return self.op1("Mul", [x, self.const(value)], out, base)
