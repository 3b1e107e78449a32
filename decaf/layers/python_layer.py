"""Python layers: ``type: "Python"`` runs a class written in Python, as pycaffe's PythonLayer.

``python_param { module: "m" layer: "C" param_str: "..." }`` imports module ``m`` (from
``sys.path``; the current directory is tried last when the import fails), instantiates
``m.C(layer_param)`` (``C`` subclasses ``caffe.Layer``, that is ``decaf.Layer``), and sets
``self.param_str`` and ``self.phase`` before ``setup``. The hooks are pycaffe's:
``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)``,
``backward(top, propagate_down, bottom)``. ``self.blobs.add_blob(*shape)`` adds a parameter blob.

Untrusted models: a Python layer runs code named by the model. ``DECAF_NO_PYTHON_LAYERS=1`` in
the environment, or ``caffe.set_python_layers_allowed(False)``, refuses every Python layer with
an UntrustedCodeError before anything is imported (the environment variable cannot be
overridden from Python).

A Python layer has no bottom/top count rule and no default loss weight (``loss_weight`` in the
prototxt works as for any layer). A module that cannot be imported is a
``PythonLayerImportError`` (a LayerSetupError and an ImportError) naming the layer, the module and
the import error; other exceptions raised by the Python code reach the caller unchanged.
"""
import importlib
import os
import sys

from .. import backend
from ..blob import Blob
from ..errors import LayerSetupError
from ..layer import Layer, register_layer


NO_PYTHON_LAYERS_ENV = "DECAF_NO_PYTHON_LAYERS"
_allowed = True


def set_python_layers_allowed(allowed=True):
    """Allow (default) or refuse Python layers in the nets built from now on."""
    global _allowed
    _allowed = bool(allowed)


def python_layers_allowed():
    """False when DECAF_NO_PYTHON_LAYERS is set (to 1/true/yes/on) or after
    set_python_layers_allowed(False)."""
    env = os.environ.get(NO_PYTHON_LAYERS_ENV, "").strip().lower()
    return _allowed and env not in ("1", "true", "yes", "on")


class BlobVec(list):
    """pycaffe's ``BlobVec``: the list of a layer's parameter blobs, plus ``add_blob``."""

    def add_blob(self, *shape):
        """Append a new zero-filled float32 blob of ``shape`` (pycaffe: ``add_blob(*shape)``)."""
        if len(shape) == 1 and not isinstance(shape[0], (int,)) and hasattr(shape[0], "__len__"):
            shape = tuple(shape[0])
        self.append(Blob(tuple(int(d) for d in shape), xp=backend.xp()))


class PythonLayerImportError(LayerSetupError, ImportError):
    """A Python layer whose ``python_param.module`` cannot be imported (also an ImportError)."""


def _import_module(name):
    """Import ``name`` from sys.path; when it is not found there, retry with the current
    directory (as pycaffe run from the model's folder finds it)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        missing = e.name or ""
        if not (name == missing or name.startswith(missing + ".")) or \
                cwd in sys.path or "" in sys.path:
            raise
    sys.path.append(cwd)       # outside the except block: a failure here is not chained
    return importlib.import_module(name)


def _import_user_module(where, module):
    """The user's module, or a PythonLayerImportError naming the layer, module and cause."""
    try:
        return _import_module(module)
    except ImportError as e:
        found = e.name is not None and not (module == e.name or module.startswith(e.name + "."))
        cause = "%s: %s" % (type(e).__name__, e)
        if found:   # the module exists but an import inside it failed
            cause += " (raised while importing %r)" % module
        else:
            cause += " (searched sys.path and the current directory %s)" % os.getcwd()
        err = PythonLayerImportError("%s: cannot import python_param.module %r: %s"
                                     % (where, module, cause))
        err.name = e.name
    raise err


@register_layer("Python")
class PythonLayer(Layer):
    """Python: top = C(bottom) for the user's class C = python_param.module.layer; its own
    forward/backward define the formula (diffs into bottom[i].diff where propagate_down[i])."""

    def __new__(cls, layer_param):
        if cls is not PythonLayer:  # a subclass used directly: an ordinary layer
            return super().__new__(cls)
        return _create_user_layer(layer_param)


def _create_user_layer(layer_param):
    from ..errors import LayerSetupError, UntrustedCodeError
    p = layer_param.python_param
    where = "Layer %r (Python)" % layer_param.name
    if not python_layers_allowed():
        raise UntrustedCodeError(
            "%s: Python layers are switched off (%s), so module %r is not imported; allow them "
            "only for models you trust" % (where, "%s is set" % NO_PYTHON_LAYERS_ENV
                                           if _allowed else "set_python_layers_allowed(False)",
                                           p.module))
    if not p.module or not p.layer:
        raise LayerSetupError("%s: python_param needs both 'module' and 'layer' (got module=%r, "
                              "layer=%r)" % (where, p.module, p.layer))
    if layer_param.phase == 0 and backend.solver_count() > 1 and \
            not backend._state.multiprocess:
        raise LayerSetupError("%s: PythonLayer does not support CLI Multi-GPU, use train.py"
                              % where)
    module = _import_user_module(where, p.module)
    cls = getattr(module, p.layer, None)
    if cls is None:
        raise LayerSetupError("%s: module %r (%s) has no class %r"
                              % (where, p.module, getattr(module, "__file__", "?"), p.layer))
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise LayerSetupError("%s: %s.%s must be a class derived from caffe.Layer"
                              % (where, p.module, p.layer))
    layer = cls(layer_param)
    layer.blobs = BlobVec(layer.blobs)
    layer.param_str = p.param_str
    layer.phase = int(layer_param.phase)
    try:
        layer.type = "Python"
    except AttributeError:  # the user's class made `type` read-only
        pass
    return layer
