"""Export a decaf Net to ONNX (standard operators only), with Caffe's numbers.

    import decaf
    net = decaf.Net("deploy.prototxt", decaf.TEST, weights="w.caffemodel")
    decaf.onnx.export(net, "model.onnx")           # or net.to_onnx("model.onnx")

``export(net, path=None, opset=17, dynamic_batch=False, prune_to=None, check=True)`` returns
the ModelProto; ``export_files(prototxt, caffemodel, path, ...)`` builds the TEST net first;
``supported_types()`` lists the Caffe layer types that have an ONNX mapping (docs/ONNX.md).
The ``onnx`` package is imported only when an export runs.
"""
from .export import DEFAULT_OPSET, export, export_files  # noqa: F401
from .registry import register_emitter  # noqa: F401


def supported_types():
    """The Caffe layer types that export to ONNX, sorted."""
    from . import emitters  # noqa: F401
    from .registry import supported_types as types
    return types()
