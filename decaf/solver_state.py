"""Caffe's solver state files (``SnapshotSolverState`` / ``RestoreSolverState``).

* binary (``<prefix>_iter_N.solverstate``): a ``SolverState`` message: ``iter``, ``learned_net``
  (the weights file written with it), ``current_step`` (step/multistep position) and one
  ``history`` BlobProto per history blob.
* HDF5 (``<prefix>_iter_N.solverstate.h5``): int32 datasets ``iter`` and ``current_step`` of
  shape (1,), a null-terminated fixed-length string ``learned_net``, and group ``history`` with
  float datasets ``"0"``, ``"1"``, ...

Files are written to a temporary name in the target directory and renamed.
"""
import os

import numpy as np

from . import memory
from .errors import BlobProtoError, SnapshotError, SolverError
from .proto import caffe_pb2


def learned_net_path(learned_net, state_file):
    """Caffe opens ``learned_net`` relative to the working directory; when it is not there,
    decaf also looks next to the state file (so a moved snapshot pair still restores)."""
    if "\x00" in learned_net:
        raise SolverError("solver state %s names a weights file with a NUL byte in it: %r"
                          % (state_file, learned_net))
    if os.path.exists(learned_net) or os.path.isabs(learned_net):
        return learned_net
    here = os.path.dirname(os.path.abspath(state_file))
    for candidate in (os.path.join(here, learned_net),
                      os.path.join(here, os.path.basename(learned_net))):
        if os.path.exists(candidate):
            return candidate
    raise SolverError("the weights file %r named by solver state %s was not found (looked in "
                      "the working directory and next to the state file)"
                      % (learned_net, state_file))


def write_solver_state(filename, it, learned_net, current_step, history, hdf5=False):
    """Caffe's SolverState file (atomically). Binary: a SolverState message. HDF5: int32 (1,)
    datasets iter and current_step, a fixed-length string learned_net, history/<i> float32."""
    from .proto import io as pio
    if not hdf5:
        from .blob import Blob
        state = caffe_pb2.SolverState(iter=it, learned_net=learned_net, current_step=current_step)
        for arr in history:
            b = Blob(arr.shape, dtype=arr.dtype, xp=np)
            b.data[...] = arr
            state.history.add().CopyFrom(b.to_proto())
        pio.write_binary(filename, state)
        return
    import h5py
    tmp = "%s.tmp-%d" % (filename, os.getpid())
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.array([it], np.int32))
            raw = learned_net.encode("utf-8")       # as H5LTmake_dataset_string writes it
            tid = h5py.h5t.C_S1.copy()
            tid.set_size(len(raw) + 1)
            tid.set_strpad(h5py.h5t.STR_NULLTERM)
            d = h5py.h5d.create(f.id, b"learned_net", tid, h5py.h5s.create(h5py.h5s.SCALAR))
            d.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype="S%d" % (len(raw) + 1)))
            f.create_dataset("current_step", data=np.array([current_step], np.int32))
            g = f.create_group("history")
            for i, arr in enumerate(history):
                g.create_dataset(str(i), data=arr)
        pio.durable_replace(tmp, filename)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, SnapshotError):
            raise pio.write_error(filename, e) from None
        raise


def read_solver_state(filename):
    """(iter, learned_net or "", current_step, [history arrays]) from either format; a file
    that is not a readable solver state is a SolverError naming it."""
    if not os.path.isfile(filename):
        raise SolverError("solver state file not found: %s" % filename)
    if not filename.endswith(".h5"):
        from .proto import io as pio
        from .blob import blob_to_array
        state = pio.read_binary(filename, caffe_pb2.SolverState)
        history = []
        for i, h in enumerate(state.history):
            try:
                history.append(blob_to_array(h))
            except BlobProtoError as e:
                raise SolverError("%s: history blob %d: %s" % (filename, i, e)) from None
        return state.iter, state.learned_net, state.current_step, history
    import h5py
    try:
        f = h5py.File(filename, "r")
    except OSError as e:
        raise SolverError("Couldn't open solver state file %s: %s" % (filename, e)) from None
    try:
        with f:
            return _read_hdf5_state(f, filename, h5py)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
        raise SolverError("Couldn't read solver state file %s (corrupt or truncated?): %s"
                          % (filename, e)) from None


def _scalar_int(f, key, filename, h5py):
    d = f[key]
    if not isinstance(d, h5py.Dataset) or d.dtype.kind not in "iu" or d.size != 1:
        raise SolverError("%s: %r must be a single integer" % (filename, key))
    return int(np.asarray(d[()]).reshape(-1)[0])


def _read_hdf5_state(f, filename, h5py):
    for key in ("iter", "current_step", "history"):
        if key not in f:
            raise SolverError("%s is not a Caffe HDF5 solver state (no %r)" % (filename, key))
    name = f["learned_net"][()] if "learned_net" in f else b""
    if isinstance(name, np.ndarray) and name.size == 1:
        name = name.reshape(-1)[0]
    if isinstance(name, np.bytes_):
        name = bytes(name)
    if not isinstance(name, (bytes, str)):
        raise SolverError("%s: 'learned_net' must be a string" % filename)
    name = name.decode("utf-8") if isinstance(name, bytes) else name
    hist = f["history"]
    if not isinstance(hist, h5py.Group):
        raise SolverError("%s: 'history' must be a group of datasets" % filename)
    missing = [i for i in range(len(hist)) if str(i) not in hist]
    if missing:
        raise SolverError("%s: history dataset %d is missing" % (filename, missing[0]))
    arrays = []
    for i in range(len(hist)):
        d = hist[str(i)]
        if not isinstance(d, h5py.Dataset) or d.dtype.kind != "f":
            raise SolverError("%s: history/%d must be a float dataset" % (filename, i))
        memory.check(int(np.prod(d.shape, dtype=np.int64)) * d.dtype.itemsize,
                     "history dataset %d of %s (shape %s)" % (i, filename, d.shape))
        arrays.append(d[...])
    return (_scalar_int(f, "iter", filename, h5py), name,
            _scalar_int(f, "current_step", filename, h5py), arrays)
