"""``import caffe`` -> decaf. A thin alias so pycaffe scripts run unchanged.

``caffe.X`` is decaf's object itself (not a copy), and ``caffe.<module>`` (``caffe.proto``,
``caffe.proto.caffe_pb2``, ``caffe.io``, ``caffe.net_spec``, ``caffe.draw``...) is the very
module ``decaf.<module>``: an import hook maps the names.
"""
import importlib
import importlib.abc
import importlib.util
import sys

import decaf as _decaf

_ALIASES = {"pycaffe": "decaf", "_caffe": "decaf"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``caffe.a.b`` as the already-importable ``decaf.a.b``."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        rest = fullname[len(__name__) + 1:]
        head, _, tail = rest.partition(".")
        target_name = _ALIASES.get(head, "decaf." + head) + ("." + tail if tail else "")
        if importlib.util.find_spec(target_name) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(target_name))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

for _name in _decaf.__all__:
    globals()[_name] = getattr(_decaf, _name)

from decaf.net_spec import layers, params, NetSpec, to_proto  # noqa: E402,F401  (caffe.layers is NetSpec's L)
from decaf import io  # noqa: E402,F401
from decaf import proto  # noqa: E402,F401  (caffe.proto is decaf.proto)
sys.modules[__name__ + ".proto"] = proto
sys.modules[__name__ + ".proto.caffe_pb2"] = proto.caffe_pb2

__version__ = _decaf.__version__
