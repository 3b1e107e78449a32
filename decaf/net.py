"""Net: a DAG of layers over blobs, built from a NetParameter exactly as Caffe's Net::Init.

Build order: filter by NetState rules -> insert Split layers -> for each layer connect bottoms,
create tops (in-place when a top names its bottom), SetUp, collect params (sharing by ParamSpec
name) -> decide which layers need backward (pruning, propagate_down, force_backward).
Forward runs the layers in order and sums the weighted losses; backward runs them in reverse.
"""
import os
from collections import OrderedDict

import numpy as np

from . import backend, memory
from .blob import Blob, shape_epoch
from .errors import DecafError, NetError, OutOfMemoryError, ShapeMismatchError, WeightsError
from .layer import create_layer, forward_backward_pass
from .net_build import filter_net, insert_splits
from .proto import caffe_pb2
from . import net_io
from . import net_fuse


def _log(msg, line):
    from . import glog
    glog.info(msg, where="net.cpp:%d" % line)


def _shape_str(shape):
    """Caffe's Blob::shape_string: "64 1 28 28 (50176)", "(1)" for a scalar."""
    return "".join("%d " % d for d in shape) + "(%d)" % int(np.prod(shape, dtype=np.int64))


def _naming_layer(err, lp):
    """``err`` raised while adding layer ``lp``, its message naming the layer when it does not
    yet (a blob's shape error, say); a bare MemoryError becomes an OutOfMemoryError."""
    if not isinstance(err, DecafError):
        return OutOfMemoryError("Layer %r (%s): out of memory while setting it up (%s)"
                                % (lp.name, lp.type, err))
    msg = str(err)
    if repr(lp.name) in msg or ('"%s"' % lp.name) in msg:
        return err
    try:
        named = type(err)("Layer %r (%s): %s" % (lp.name, lp.type, msg))
    except Exception:  # noqa: BLE001 (an error class with another signature)
        named = NetError("Layer %r (%s): %s" % (lp.name, lp.type, msg))
    return named


class Net:
    """pycaffe's ``caffe.Net``: ``Net(model, phase, level=0, stages=None, weights=None)``.

    ``model`` is a prototxt path or a NetParameter. The legacy ``Net(model, weights, phase)``
    form is accepted too. With ``phase=None`` the NetParameter's own ``state`` is used.
    """

    def __init__(self, model, *args, phase=None, level=None, stages=None, weights=None):
        args = list(args)
        if args and isinstance(args[0], (str, os.PathLike)) and \
                str(args[0]).upper() not in ("TRAIN", "TEST"):
            weights = args.pop(0)            # legacy Net(model, weights, phase)
        for name in ("phase", "level", "stages", "weights"):
            if args:
                value = args.pop(0)
                if name == "phase":
                    phase = value
                elif name == "level":
                    level = value
                elif name == "stages":
                    stages = value
                else:
                    weights = value
        if args:
            raise TypeError("Net(model, phase, level=0, stages=None, weights=None): too many arguments")
        if isinstance(phase, str):
            phase = getattr(caffe_pb2, phase.upper())
        param = net_io.load_net_param(model)
        if phase is not None:
            param.state.phase = int(phase)
        if level is not None:
            param.state.level = int(level)
        if stages is not None:
            del param.state.stage[:]
            param.state.stage.extend(stages)
        self._init(param)
        if weights is not None:
            self.copy_from(weights)

    # -- construction ----------------------------------------------------------------------
    def _init(self, in_param):
        self.phase = in_param.state.phase
        filtered = filter_net(in_param)
        from .proto.io import format_text
        _log("Initializing net from parameters: \n" + format_text(filtered), 53)
        param = insert_splits(filtered)
        self.param = param
        self.name = param.name
        self.layers, self.layer_names = [], []
        self._blobs, self._blob_names, self._blob_index = [], [], {}
        self.bottom_vecs, self.top_vecs, self.bottom_ids, self.top_ids = [], [], [], []
        self._blob_need_backward, self._bottom_need_backward, self.layer_need_backward = [], [], []
        self._blob_loss_weights = []
        self._input_ids = []
        self._params, self._param_owners, self._param_layer_indices = [], [], []
        self._param_names_index, self._param_id_vecs = {}, []
        self.learnable_params, self.learnable_param_ids = [], []
        self.learnable_param_names = []
        self.params_lr, self.params_weight_decay = [], []
        self.has_params_lr, self.has_params_decay = [], []
        available = OrderedDict()
        with memory.budget("net %r" % param.name):
            for layer_id, lp in enumerate(param.layer):
                if not lp.HasField("phase"):
                    lp.phase = self.phase
                memory.set_owner(lp.name)
                try:
                    self._add_layer(layer_id, lp, available)
                except (DecafError, MemoryError) as e:
                    raise _naming_layer(e, lp) from None
                memory.reserve_scratch(self.layers[-1])
        self._prune_backward(param)
        for layer, need in zip(self.layers, self.layer_need_backward):
            layer.needs_backward = need     # False: Backward never runs (no copies kept for it)
        self.fuse_inference = net_fuse.enabled_by_default()
        self._fusion = None
        self._settled = None      # shape_epoch() after a full forward that changed no blob
        self._mark_quiet_outputs()
        self._backward_fusion = None
        self._stable_epoch = None
        self._output_names = sorted(available)   # Caffe keeps them in a std::set
        for name in self._output_names:
            _log("This network produces output " + name, 242)
        self._share_weights()
        self.layer_index = {n: i for i, n in enumerate(self.layer_names)}
        _log("Network initialization done.", 255)

    def _add_layer(self, layer_id, lp, available):
        if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
            raise NetError("Layer %r: propagate_down param must be specified either 0 or "
                           "bottom_size times (%d given, %d bottoms)"
                           % (lp.name, len(lp.propagate_down), len(lp.bottom)))
        layer = create_layer(lp, lp.phase)
        self.layers.append(layer)
        self.layer_names.append(lp.name)
        _log("Creating Layer " + lp.name, 84)
        bottoms, bids, bneed = [], [], []
        need_backward = False
        for j, name in enumerate(lp.bottom):
            if name not in available:
                raise NetError("Unknown bottom blob %r (layer %r, bottom index %d)"
                               % (name, lp.name, j))
            bid = available.pop(name)
            _log("%s <- %s" % (lp.name, name), 408)
            pd = lp.propagate_down[j] if len(lp.propagate_down) else True
            bneed.append(self._blob_need_backward[bid] and pd)
            need_backward |= self._blob_need_backward[bid]
            bottoms.append(self._blobs[bid])
            bids.append(bid)
        tops, tids = [], []
        top_names = list(lp.top)
        if layer.auto_top_blobs:
            needed = max(layer.min_top, layer.exact_num_top)
            while len(top_names) < needed:
                top_names.append(None)
        for j, name in enumerate(top_names):
            tid = self._append_top(lp, j, name, available)
            tops.append(self._blobs[tid])
            tids.append(tid)
            if lp.type == "Input":
                self._input_ids.append(tid)
        self.bottom_vecs.append(bottoms)
        self.bottom_ids.append(bids)
        self.top_vecs.append(tops)
        self.top_ids.append(tids)
        _log("Setting up " + lp.name, 122)
        layer.SetUp(bottoms, tops)
        for j, tid in enumerate(tids):
            w = layer.loss(j)
            self._blob_loss_weights[tid] = w
            _log("Top shape: " + _shape_str(self._blobs[tid].shape), 129)
            if w:
                _log("    with loss weight %g" % w, 137)
        n_blobs = len(layer.blobs)
        if len(lp.param) > n_blobs:
            raise NetError("Too many params specified for layer %r (%d param specs, %d param blobs)"
                           % (lp.name, len(lp.param), n_blobs))
        layer.param_propagate_down = [True] * n_blobs
        self._param_id_vecs.append([])
        for k in range(n_blobs):
            spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
            pneed = spec.lr_mult != 0
            need_backward |= pneed
            layer.param_propagate_down[k] = pneed
            self._append_param(layer_id, k)
        self.layer_need_backward.append(need_backward)
        self._bottom_need_backward.append(bneed)
        if need_backward:
            for tid in tids:
                self._blob_need_backward[tid] = True

    def _append_top(self, lp, j, name, available):
        if name is not None and name in self._blob_index and \
                j < len(lp.bottom) and lp.bottom[j] == name:
            _log("%s -> %s (in-place)" % (lp.name, name), 380)
            tid = self._blob_index[name]
        elif name is not None and name in self._blob_index:
            raise NetError("Top blob %r produced by multiple sources (layer %r)" % (name, lp.name))
        else:
            if name is not None:
                _log("%s -> %s" % (lp.name, name), 394)
            tid = len(self._blobs)
            self._blobs.append(Blob())
            self._blob_names.append(name if name is not None else "(automatic)")
            self._blob_need_backward.append(False)
            self._blob_loss_weights.append(0.0)
            if name is not None:
                self._blob_index[name] = tid
        if name is not None:
            available[name] = tid
        return tid

    def _append_param(self, layer_id, k):
        lp = self.layers[layer_id].layer_param
        name = lp.param[k].name if k < len(lp.param) else ""
        spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
        net_id = len(self._params)
        blob = self.layers[layer_id].blobs[k]
        self._params.append(blob)
        self._param_id_vecs[layer_id].append(net_id)
        self._param_layer_indices.append((layer_id, k))
        if not name or name not in self._param_names_index:
            self._param_owners.append(-1)
            if name:
                self._param_names_index[name] = net_id
            self.learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(blob)
            self.learnable_param_names.append("%s.%d" % (lp.name, k))
            self.has_params_lr.append(spec.HasField("lr_mult"))
            self.has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner_id = self._param_names_index[name]
        self._param_owners.append(owner_id)
        olayer, ok = self._param_layer_indices[owner_id]
        owner = self.layers[olayer].blobs[ok]
        permissive = k < len(lp.param) and lp.param[k].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if (permissive and blob.count != owner.count) or (not permissive and blob.shape != owner.shape):
            raise ShapeMismatchError(
                "Cannot share param %r owned by layer %r with layer %r; %s mismatch. Owner layer "
                "param shape is %s; sharing layer shape is %s"
                % (name, self.layer_names[olayer], lp.name, "count" if permissive else "shape",
                   _shape_str(owner.shape), _shape_str(blob.shape)))
        lid = self.learnable_param_ids[owner_id]
        self.learnable_param_ids.append(lid)
        for has, value, store, what in ((spec.HasField("lr_mult"), spec.lr_mult, self.params_lr, "lr_mult"),
                                        (spec.HasField("decay_mult"), spec.decay_mult,
                                         self.params_weight_decay, "decay_mult")):
            flags = self.has_params_lr if what == "lr_mult" else self.has_params_decay
            if not has:
                continue
            if flags[lid] and store[lid] != value:
                raise NetError("Shared param %r has mismatched %s (layer %r)" % (name, what, lp.name))
            flags[lid], store[lid] = True, value

    def _prune_backward(self, param):
        under_loss, skip_backp = set(), set()
        for lid in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[lid]
            contributes, skip = False, True
            for j, tid in enumerate(self.top_ids[lid]):
                name = self._blob_names[tid]
                if layer.loss(j) or name in under_loss:
                    contributes = True
                if name not in skip_backp:
                    skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[lid] and skip:
                self.layer_need_backward[lid] = False
                self._bottom_need_backward[lid] = [False] * len(self.bottom_ids[lid])
            if not contributes:
                self.layer_need_backward[lid] = False
            for j, bid in enumerate(self.bottom_ids[lid]):
                name = self._blob_names[bid]
                if contributes:
                    under_loss.add(name)
                else:
                    self._bottom_need_backward[lid][j] = False
                if not self._bottom_need_backward[lid][j]:
                    skip_backp.add(name)
            _log("%s %s backward computation." % (self.layer_names[lid], "needs"
                                                 if self.layer_need_backward[lid] else "does not need"),
                 226 if self.layer_need_backward[lid] else 224)
        if param.force_backward:
            for lid, layer in enumerate(self.layers):
                self.layer_need_backward[lid] = True
                for j, bid in enumerate(self.bottom_ids[lid]):
                    self._bottom_need_backward[lid][j] = \
                        self._bottom_need_backward[lid][j] or layer.allow_force_backward(j)
                    self._blob_need_backward[bid] = \
                        self._blob_need_backward[bid] or self._bottom_need_backward[lid][j]
                layer.param_propagate_down = [True] * len(layer.blobs)

    def _share_weights(self):
        for i, owner in enumerate(self._param_owners):
            if owner >= 0:
                self._params[i].share_data(self._params[owner])
                self._params[i].share_diff(self._params[owner])

    # -- pycaffe surface -------------------------------------------------------------------
    @property
    def blobs(self):
        return OrderedDict(zip(self._blob_names, self._blobs))

    @property
    def params(self):
        return OrderedDict((n, l.blobs) for n, l in zip(self.layer_names, self.layers) if l.blobs)

    @property
    def layer_dict(self):
        return OrderedDict(zip(self.layer_names, self.layers))

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def _layer_names(self):
        return list(self.layer_names)

    @property
    def _blob_names_list(self):
        return list(self._blob_names)

    blob_names = property(lambda self: list(self._blob_names))
    inputs = property(lambda self: [self._blob_names[i] for i in self._input_ids])
    outputs = property(lambda self: list(self._output_names))
    output_blobs = property(lambda self: [self._blobs[self._blob_index[n]] for n in self._output_names])
    input_blobs = property(lambda self: [self._blobs[i] for i in self._input_ids])

    @property
    def top_names(self):
        return OrderedDict((n, [self._blob_names[t] for t in ids])
                           for n, ids in zip(self.layer_names, self.top_ids))

    @property
    def bottom_names(self):
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self.layer_names, self.bottom_ids))

    def bottom_need_backward(self, layer_id):
        return list(self._bottom_need_backward[layer_id])

    def blob_need_backward(self, name):
        return self._blob_need_backward[self._blob_index[name]]

    # -- forward / backward ----------------------------------------------------------------
    def _index(self, layer_name):
        if layer_name not in self.layer_index:
            raise NetError("Net %r has no layer named %r" % (self.name, layer_name))
        return self.layer_index[layer_name]

    def forward_from_to(self, start=0, end=None):
        """Caffe's ForwardFromTo: each layer's Reshape, then Forward.  The reshapes that depend
        on shapes alone (``Layer.shape_only_reshape``) are skipped while no blob has changed
        shape or memory since a full forward that changed none (``blob.shape_epoch``): they
        would do nothing."""
        end = len(self.layers) - 1 if end is None else end
        chains = self._fusion_plan() if self.fuse_inference else {}
        epoch = shape_epoch()
        settled = epoch == self._settled
        loss = 0.0
        i = start
        while i <= end:
            last = chains.get(i)
            if last is not None and last <= end and net_fuse.run(self, i, last, settled):
                i = last + 1                 # in-place chain in one pass (decaf/net_fuse.py)
                continue
            layer, bottom, top = self.layers[i], self.bottom_vecs[i], self.top_vecs[i]
            if settled and layer.shape_only_reshape:
                layer.forward(bottom, top)
                if layer.loss_weights:
                    loss += layer.weighted_loss(top)
            else:
                loss += layer.Forward(bottom, top)
            i += 1
        if start == 0 and end == len(self.layers) - 1:
            self._settled = epoch if shape_epoch() == epoch else None
        return loss

    def _mark_quiet_outputs(self):
        """Blobs no layer reads and only layers with a data-dependent reshape write (e.g.
        DetectionOutput's top, reshaped to its count every forward) do not move shape_epoch:
        no skipped reshape depends on them."""
        read = {id(b) for bottoms in self.bottom_vecs for b in bottoms}
        for layer, tops in zip(self.layers, self.top_vecs):
            for t in tops:
                if id(t) in read or layer.shape_only_reshape:
                    read.add(id(t))
        for tops in self.top_vecs:
            for t in tops:
                t.quiet = id(t) not in read

    def _fusion_plan(self):
        if self._fusion is None:
            self._fusion = net_fuse.plan(self)
        return self._fusion

    def backward_from_to(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        chains = self._backward_fusion_plan() if self.fuse_inference else {}
        i = start
        while i >= end:
            head = chains.get(i)
            if head is not None and head >= end and net_fuse.run_backward(self, head, i):
                i = head - 1                 # a training chain's backward in one pass
                continue
            if self.layer_need_backward[i]:
                self.layers[i].Backward(self.top_vecs[i], self._bottom_need_backward[i],
                                        self.bottom_vecs[i])
            i -= 1

    def _backward_fusion_plan(self):
        if self._backward_fusion is None:
            self._backward_fusion = net_fuse.backward_plan(self)
        return self._backward_fusion

    def forward_loss(self):
        """Caffe's Net::Forward(&loss): run every layer, return the total weighted loss."""
        return self.forward_from_to(0, len(self.layers) - 1)

    def forward_backward(self):
        """Caffe's Net::ForwardBackward.  Nothing outside the net runs between the two, so
        layers with a stable bottom may keep what their forward derived from it (a
        convolution's bordered image) for their backward (decaf.layer.forward_backward_pass)."""
        epoch = shape_epoch()
        if self._stable_epoch != epoch:
            self._mark_stable_bottoms()
            self._stable_epoch = epoch
        with forward_backward_pass() as pass_:
            loss = self.forward_loss()
            if shape_epoch() != epoch:
                pass_.cancel()
            self.backward_from_to()
        return loss

    def _mark_stable_bottoms(self):
        """``layer.stable_bottom``: no later layer's top shares memory with its bottoms' data
        (an in-place layer after it on its bottom, or on a Split top sharing it), and no
        Python layer, which may write any blob, in the net."""
        python = any(layer.type == "Python" for layer in self.layers)
        for i, layer in enumerate(self.layers):
            layer.stable_bottom = not python and layer.xp is np and not any(
                np.may_share_memory(t.data, b.data) for b in self.bottom_vecs[i]
                for tops in self.top_vecs[i + 1:] for t in tops)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe forward: set inputs from kwargs, run [start, end], return the outputs."""
        blobs = list(blobs or [])
        start_ind = self._index(start) if start is not None else 0
        if end is not None:
            end_ind = self._index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise NetError("Input blob arguments %s do not match net inputs %s"
                               % (sorted(kwargs), sorted(self.inputs)))
            for name, value in kwargs.items():
                self._set_array(name, value, "data", "Input is not batch sized")
        self.forward_from_to(start_ind, end_ind)
        return {o: self.blobs[o].data for o in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe backward: set output diffs from kwargs, run [start, end] in reverse."""
        diffs = list(diffs or [])
        start_ind = self._index(start) if start is not None else len(self.layers) - 1
        if end is not None:
            end_ind = self._index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise NetError("Top diff arguments %s do not match net outputs %s"
                               % (sorted(kwargs), sorted(self.outputs)))
            for name, value in kwargs.items():
                self._set_array(name, value, "diff", "Diff is not batch sized")
        self.backward_from_to(start_ind, end_ind)
        return {o: self.blobs[o].diff for o in outputs}

    def _set_array(self, name, value, which, msg):
        blob = self._blobs[self._blob_index[name]]
        value = np.asarray(value)
        if blob.num_axes and (value.ndim == 0 or value.shape[0] != blob.shape[0]):
            raise ShapeMismatchError("%s: blob %r has shape %s, got an array of shape %s"
                                     % (msg, name, blob.shape, value.shape))
        try:
            getattr(blob, which)[...] = value
        except ValueError:
            raise ShapeMismatchError("blob %r has shape %s; cannot take an array of shape %s"
                                     % (name, blob.shape, value.shape)) from None

    def reshape(self):
        for layer, bottom, top in zip(self.layers, self.bottom_vecs, self.top_vecs):
            layer.reshape(bottom, top)

    # -- solver-facing ---------------------------------------------------------------------
    def update(self):
        """Caffe's Net::Update: data -= diff for every learnable parameter."""
        for p in self.learnable_params:
            p.update()

    def clear_param_diffs(self):
        for p in self.learnable_params:
            p.diff[...] = 0

    def share_trained_layers_with(self, other):
        """Share every parameter blob with the same-named layer of ``other`` (test nets)."""
        for lid, layer in enumerate(other.layers):
            name = other.layer_names[lid]
            if name not in self.layer_index or not layer.blobs:
                continue
            target = self.layers[self.layer_index[name]].blobs
            if len(target) != len(layer.blobs):
                raise WeightsError("Incompatible number of blobs for layer %r" % name)
            for t, s in zip(target, layer.blobs):
                if t.shape != s.shape:
                    raise WeightsError("Cannot share param of layer %r: shape %s vs %s"
                                       % (name, s.shape, t.shape))
                t.share_data(s)

    share_with = share_trained_layers_with

    # -- weights ---------------------------------------------------------------------------
    def copy_trained_layers_from(self, source):
        """Load weights by layer name from a .caffemodel, .caffemodel.h5 or NetParameter."""
        if isinstance(source, (str, os.PathLike)) and str(source).endswith(".h5"):
            return net_io.load_hdf5(self, str(source))
        param = net_io.load_weights_param(source)
        try:
            net_io.copy_from_param(self, param)
        except ShapeMismatchError as e:    # a BlobProto whose data does not fill its shape
            if not isinstance(source, (str, os.PathLike)):
                raise
            raise WeightsError("weights file %s: %s" % (os.fspath(source), e)) from None

    def copy_from(self, weights):
        """pycaffe copy_from; several comma-separated files are loaded in order."""
        if isinstance(weights, str) and "," in weights:
            for w in weights.split(","):
                self.copy_trained_layers_from(w)
            return
        self.copy_trained_layers_from(weights)

    def to_onnx(self, path=None, **kwargs):
        """Export to ONNX (``decaf.onnx.export``: opset, dynamic_batch, prune_to, check)."""
        from .onnx import export
        return export(self, path, **kwargs)

    def to_proto(self, write_diff=False):
        return net_io.to_proto(self, write_diff)

    def save(self, path, write_diff=False):
        net_io.save(self, path, write_diff)

    def save_hdf5(self, path, write_diff=False):
        net_io.save_hdf5(self, path, write_diff)

    def load_hdf5(self, path):
        net_io.load_hdf5(self, path)

    def __repr__(self):
        return "Net(%r, %d layers, phase %s)" % (self.name, len(self.layers),
                                                 caffe_pb2.Phase.Name(self.phase))
