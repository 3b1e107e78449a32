"""Reading nets and weights, writing .caffemodel (binary NetParameter) and .caffemodel.h5.

Weights are matched by layer name, as Caffe's CopyTrainedLayersFrom does: source layers the
net lacks are skipped with Caffe's ``Ignoring source layer X`` INFO line; a blob-count or shape
mismatch is an error naming layer, blob and shapes.
"""
import os

import numpy as np

from .blob import proto_shape
from .errors import SnapshotError, WeightsError
from .proto import caffe_pb2


def load_net_param(model):
    """A fresh, upgraded NetParameter from a prototxt path or a NetParameter."""
    from .proto import io as pio
    return pio.read_net_param(model)


def load_weights_param(source):
    """A NetParameter holding weights, from a .caffemodel path or a NetParameter."""
    from .proto import io as pio
    if isinstance(source, caffe_pb2.NetParameter):
        return source
    return pio.read_net_param_binary(str(source))


def _shape_str(shape):
    return " ".join(str(d) for d in shape) + " (%d)" % int(np.prod(shape, dtype=np.int64))


def _ignoring(name, line):
    """Caffe's LOG(INFO) for a source layer the target net does not have."""
    from . import glog
    glog.info("Ignoring source layer " + name, "net.cpp:%d" % line)


def copy_from_param(net, param):
    """Caffe's CopyTrainedLayersFrom(NetParameter)."""
    layers = param.layer if len(param.layer) else []
    for src in layers:
        lid = net.layer_index.get(src.name)
        if lid is None:
            _ignoring(src.name, 744)
            continue
        target = net.layers[lid].blobs
        if len(target) != len(src.blobs):
            raise WeightsError("Incompatible number of blobs for layer %r: the net has %d, the "
                               "weights have %d" % (src.name, len(target), len(src.blobs)))
        for j, (blob, bp) in enumerate(zip(target, src.blobs)):
            if not blob.shape_equals(bp):
                raise WeightsError(
                    "Cannot copy param %d weights from layer %r; shape mismatch. Source param "
                    "shape is %s; target param shape is %s. To learn this layer's parameters from "
                    "scratch rather than copying from a saved net, rename the layer."
                    % (j, src.name, _shape_str(proto_shape(bp)), _shape_str(blob.shape)))
            blob.from_proto(bp, reshape=False)


def to_proto(net, write_diff=False):
    """Caffe's Net::ToProto: every layer's parameter with its blobs."""
    param = caffe_pb2.NetParameter()
    param.name = net.name
    for layer in net.layers:
        lp = param.layer.add()
        lp.CopyFrom(layer.layer_param)
        del lp.blobs[:]
        for blob in layer.blobs:
            lp.blobs.add().CopyFrom(blob.to_proto(write_diff))
    return param


def save(net, path, write_diff=False):
    from .proto import io as pio
    pio.write_binary(str(path), to_proto(net, write_diff))


def save_hdf5(net, path, write_diff=False):
    """Caffe's Net::ToHDF5: /data/<layer>/<i> for every layer (owned params only)."""
    import h5py
    from .backend import to_numpy
    from .proto import io as pio
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            diff = f.create_group("diff") if write_diff else None
            for lid, layer in enumerate(net.layers):
                g = data.create_group(net.layer_names[lid])
                gd = diff.create_group(net.layer_names[lid]) if write_diff else None
                for j, blob in enumerate(layer.blobs):
                    if net._param_owners[net._param_id_vecs[lid][j]] == -1:
                        g.create_dataset(str(j), data=to_numpy(blob.data))
                    if write_diff:
                        gd.create_dataset(str(j), data=to_numpy(blob.diff))
        pio.durable_replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, SnapshotError):
            raise pio.write_error(path, e) from None
        raise


def load_hdf5(net, path):
    """Caffe's CopyTrainedLayersFromHDF5. A file HDF5 cannot read (corrupt, truncated, not
    HDF5) or whose layout is not Caffe's is a WeightsError naming it."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError("cannot read HDF5 weights %s: %s" % (path, e)) from None
    try:
        with f:
            _load_hdf5_layers(net, f, path, h5py)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise WeightsError("cannot read HDF5 weights %s (corrupt or truncated?): %s"
                           % (path, e)) from None


def _load_hdf5_layers(net, f, path, h5py):
    data = f.get("data")
    if not isinstance(data, h5py.Group):
        raise WeightsError("%s has no /data group: not a Caffe HDF5 weights file" % path)
    for name, group in data.items():
        lid = net.layer_index.get(name)
        if lid is None:
            _ignoring(name, 799)
            continue
        if not isinstance(group, h5py.Group):
            raise WeightsError("%s: /data/%s is not a group of blobs" % (path, name))
        target = net.layers[lid].blobs
        if len(group) > len(target):
            raise WeightsError("Incompatible number of blobs for layer %r in %s" % (name, path))
        for j, blob in enumerate(target):
            if str(j) not in group:
                if net._param_owners[net._param_id_vecs[lid][j]] != -1:
                    continue
                raise WeightsError("Incompatible number of blobs for layer %r in %s"
                                   % (name, path))
            ds = group[str(j)]
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
                raise WeightsError("%s: /data/%s/%d is not a float dataset" % (path, name, j))
            if tuple(ds.shape) != blob.shape:       # checked before reading: no huge reads
                raise WeightsError("Cannot copy param %d weights from layer %r; shape mismatch. "
                                   "Source param shape is %s; target param shape is %s (in %s)."
                                   % (j, name, _shape_str(ds.shape), _shape_str(blob.shape),
                                      path))
            blob.data[...] = blob.xp.asarray(ds[...])
