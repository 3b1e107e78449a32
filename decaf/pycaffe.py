"""What pycaffe adds to ``caffe.Net`` in Python (``python/caffe/pycaffe.py`` and ``_caffe.cpp``).

Importing this module attaches to :class:`decaf.net.Net`, as pycaffe itself does, whatever the
class does not define already:

- ``forward_all(blobs=None, **inputs)``, ``forward_backward_all(blobs=None, diffs=None, **kw)``
  and ``_batch(arrays)``: run arrays of any length through the net in batches of the net's
  batch size (the last batch zero-padded, the padding dropped from the results);
- ``set_input_arrays(data, labels)``: hand arrays to the net's first layer, a MemoryData layer;
- ``before_forward(fn)``, ``after_forward(fn)``, ``before_backward(fn)``, ``after_backward(fn)``:
  callbacks run with the layer index around every layer's Forward/Backward (Caffe's
  ``Net::Callback``), also during ``Solver.step``;
- pycaffe's low-level names: ``_forward(start, end)``, ``_backward(start, end)``,
  ``_top_ids(i)``, ``_bottom_ids(i)``, ``_inputs``, ``_outputs``, ``_set_input_arrays``.

It also defines ``has_nccl()`` (False: decaf has no NCCL) and ``NCCL`` (which refuses); the
data-parallel counterpart is :class:`decaf.parallel.MPI`. ``caffe.solver_count()`` and
``solver_rank()`` (decaf.backend) are the MPI world's under ``mpirun``.
"""
from itertools import zip_longest

import numpy as np

from . import backend
from .net import Net

_CALLBACK_KINDS = ("before_forward", "after_forward", "before_backward", "after_backward")


# -- batching ---------------------------------------------------------------------------------

def _batch_size(net):
    return next(iter(net.blobs.values())).shape[0]


def _net_batch(self, blobs):
    """Yield {name: batch} dicts of the net's batch size; the last one is zero-padded.
    No arrays: no batches (pycaffe under Python 2, where the generator simply ended)."""
    if not blobs:
        return
    num = len(next(iter(blobs.values())))
    batch_size = _batch_size(self)
    remainder = num % batch_size
    for b in range(num // batch_size):
        i = b * batch_size
        yield {name: blobs[name][i:i + batch_size] for name in blobs}
    if remainder > 0:
        padded = {}
        for name in blobs:
            arr = np.asarray(blobs[name])
            padding = np.zeros((batch_size - remainder,) + arr.shape[1:])
            padded[name] = np.concatenate([arr[-remainder:], padding])
        yield padded


def _host(a):
    return backend.to_numpy(a).copy()


def _collect(rows, value):
    """Append a batch's rows; a 0-d blob (a scalar loss) gives one value per batch."""
    value = _host(value)
    if value.ndim:
        rows.extend(value)
    else:
        rows.append(value)


def _drop_padding(arrays, num, pad):
    """Cut the ``pad`` padding rows off the arrays that hold one row per input row."""
    for name, arr in arrays.items():
        if pad and len(arr) == num + pad:
            arrays[name] = arr[:-pad]


def _net_forward_all(self, blobs=None, **kwargs):
    """Run the inputs in ``kwargs`` (arrays of any length) forward in batches.

    Returns {blob name: ndarray} for the outputs and ``blobs``, one row per input row."""
    all_outs = {out: [] for out in set(self.outputs + (blobs or []))}
    if not kwargs:  # nothing to batch: one forward of whatever the data layers give
        return {out: _host(v) for out, v in self.forward(blobs=blobs).items()}
    for batch in self._batch(kwargs):
        outs = self.forward(blobs=blobs, **batch)
        for out, out_blob in outs.items():
            _collect(all_outs[out], out_blob)
    for out in all_outs:
        all_outs[out] = np.asarray(all_outs[out])
    num = len(next(iter(kwargs.values())))
    _drop_padding(all_outs, num, -num % _batch_size(self))
    return all_outs


def _net_forward_backward_all(self, blobs=None, diffs=None, **kwargs):
    """Forward and backward in batches: ``kwargs`` holds input arrays (forward) and output diff
    arrays (backward); either may be left out (no output diffs: backward from the diffs the
    net holds, e.g. the loss weights). Returns ({blob: data}, {blob: diff})."""
    if not kwargs:  # nothing to batch: one pass over whatever the data layers give
        outs = self.forward(blobs=blobs)
        grads = self.backward(diffs=diffs)
        return ({k: _host(v) for k, v in outs.items()}, {k: _host(v) for k, v in grads.items()})
    all_outs = {out: [] for out in set(self.outputs + (blobs or []))}
    all_diffs = {diff: [] for diff in set(self.inputs + (diffs or []))}
    forward_batches = self._batch({i: kwargs[i] for i in self.inputs if i in kwargs})
    backward_batches = self._batch({o: kwargs[o] for o in self.outputs if o in kwargs})
    for fb, bb in zip_longest(forward_batches, backward_batches, fillvalue={}):
        batch_blobs = self.forward(blobs=blobs, **fb)
        batch_diffs = self.backward(diffs=diffs, **bb)
        for out, value in batch_blobs.items():
            _collect(all_outs[out], value)
        for diff, value in batch_diffs.items():
            _collect(all_diffs[diff], value)
    for out in all_outs:
        all_outs[out] = np.asarray(all_outs[out])
    for diff in all_diffs:
        all_diffs[diff] = np.asarray(all_diffs[diff])
    num = len(next(iter(kwargs.values())))
    pad = -num % _batch_size(self)
    _drop_padding(all_outs, num, pad)
    _drop_padding(all_diffs, num, pad)
    return all_outs, all_diffs


# -- MemoryData -------------------------------------------------------------------------------

def _check_memory_array(arr, what, shape):
    if arr.ndim != 4:
        raise RuntimeError("%s must be 4-d" % what)
    for axis, name in ((1, "channels"), (2, "height"), (3, "width")):
        if arr.shape[axis] != shape[axis - 1]:
            raise RuntimeError("%s has wrong number of %s (%d, expected %d)"
                               % (what, name, arr.shape[axis], shape[axis - 1]))


def _net_set_input_arrays(self, data, labels, layer=None):
    """Give ``data`` (N x C x H x W) and ``labels`` (N, or N x 1 x 1 x 1) to the MemoryData
    layer (the first layer, or the one named/indexed by ``layer``); N must be a multiple of its
    batch size. float32 C-contiguous arrays are used in place (not copied), as in Caffe."""
    index = 0 if layer is None else (layer if isinstance(layer, int) else self._index(layer))
    md = self.layers[index] if self.layers else None
    if md is None or getattr(md, "type", None) != "MemoryData":
        raise RuntimeError("set_input_arrays may only be called if the first layer is a "
                           "MemoryDataLayer")
    data, labels = np.asarray(data), np.asarray(labels)
    if labels.ndim == 1:
        labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
    _check_memory_array(data, "data array", md.chw)
    _check_memory_array(labels, "labels array", (1, 1, 1))
    if data.shape[0] != labels.shape[0]:
        raise RuntimeError("data and labels must have the same first dimension")
    if data.shape[0] % md.batch_size != 0:
        raise RuntimeError("first dimensions of input arrays must be a multiple of batch size")
    md.set_input_arrays(data, labels)


# -- callbacks --------------------------------------------------------------------------------

def _callbacks(net, kind):
    store = net.__dict__.setdefault("_pycaffe_callbacks", {k: [] for k in _CALLBACK_KINDS})
    return store[kind]


def _make_register(kind):
    def register(self, callback):
        if not callable(callback):
            raise TypeError("%s needs a callable taking the layer index" % kind)
        _callbacks(self, kind).append(callback)
    register.__name__ = kind
    register.__doc__ = ("Run ``callback(layer_index)`` %s each layer's %s (pycaffe's "
                        "``Net.%s``)." % (kind.split("_")[0], kind.split("_")[1], kind))
    return register


def _wrap_forward_from_to(original):
    def forward_from_to(self, start=0, end=None):
        cbs = self.__dict__.get("_pycaffe_callbacks")
        if not cbs or not (cbs["before_forward"] or cbs["after_forward"]):
            return original(self, start, end)
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            for cb in cbs["before_forward"]:
                cb(i)
            loss += original(self, i, i)
            for cb in cbs["after_forward"]:
                cb(i)
        return loss
    forward_from_to.__doc__ = original.__doc__
    forward_from_to._pycaffe_wrapped = True
    return forward_from_to


def _wrap_backward_from_to(original):
    def backward_from_to(self, start=None, end=0):
        cbs = self.__dict__.get("_pycaffe_callbacks")
        if not cbs or not (cbs["before_backward"] or cbs["after_backward"]):
            return original(self, start, end)
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            for cb in cbs["before_backward"]:
                cb(i)
            original(self, i, i)
            for cb in cbs["after_backward"]:
                cb(i)
    backward_from_to.__doc__ = original.__doc__
    backward_from_to._pycaffe_wrapped = True
    return backward_from_to


# -- pycaffe's low-level names ----------------------------------------------------------------

def _net_forward_range(self, start, end):
    return self.forward_from_to(start, end)


def _net_backward_range(self, start, end):
    self.backward_from_to(start, end)


def _net_top_ids(self, i):
    return list(self.top_ids[i])


def _net_bottom_ids(self, i):
    return list(self.bottom_ids[i])


def _net_input_ids(self):
    return list(self._input_ids)


def _net_output_ids(self):
    return [self._blob_index[n] for n in self.outputs]


_ADDITIONS = {
    "forward_all": _net_forward_all,
    "forward_backward_all": _net_forward_backward_all,
    "_batch": _net_batch,
    "set_input_arrays": _net_set_input_arrays,
    "_set_input_arrays": _net_set_input_arrays,
    "_forward": _net_forward_range,
    "_backward": _net_backward_range,
    "_top_ids": _net_top_ids,
    "_bottom_ids": _net_bottom_ids,
    "_inputs": property(_net_input_ids),
    "_outputs": property(_net_output_ids),
}
_ADDITIONS.update({kind: _make_register(kind) for kind in _CALLBACK_KINDS})


def attach(cls=Net):
    """Add the pycaffe methods to ``cls`` (those it does not define) and the layer callbacks to
    its forward_from_to / backward_from_to. Idempotent."""
    for name, value in _ADDITIONS.items():
        if name not in cls.__dict__ and not any(name in b.__dict__ for b in cls.__mro__[1:]):
            setattr(cls, name, value)
    if not getattr(cls.forward_from_to, "_pycaffe_wrapped", False) and \
            not getattr(cls, "_native_layer_callbacks", False):
        cls.forward_from_to = _wrap_forward_from_to(cls.forward_from_to)
        cls.backward_from_to = _wrap_backward_from_to(cls.backward_from_to)


attach()


# -- NCCL -------------------------------------------------------------------------------------

def has_nccl():
    """pycaffe's ``caffe.has_nccl()``: False, decaf has no NCCL multi-GPU training."""
    return False


_NO_NCCL = ("Multi-GPU execution not available - rebuild with USE_NCCL (decaf has no NCCL "
            "support; for data-parallel training on CPUs run under mpirun and use "
            "decaf.parallel.MPI(solver), which has the same bcast / add_callback / "
            "after_backward shape)")


class NCCL:
    """pycaffe's ``caffe.NCCL``. decaf has no NCCL: constructing one raises, as Caffe built
    without ``USE_NCCL`` does; :class:`decaf.parallel.MPI` is its MPI counterpart."""

    def __init__(self, solver, uid):
        raise RuntimeError(_NO_NCCL)

    @staticmethod
    def new_uid():
        raise RuntimeError(_NO_NCCL)

    def bcast(self):  # pragma: no cover - unreachable, __init__ raises
        raise RuntimeError("NCCL is not available")

    def run(self, gpus, restore):  # pragma: no cover
        raise RuntimeError("NCCL is not available")
