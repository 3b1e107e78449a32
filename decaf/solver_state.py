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

from .errors import SolverError
from .proto import caffe_pb2


def learned_net_path(learned_net, state_file):
    """Caffe opens ``learned_net`` relative to the working directory; when it is not there,
    decaf also looks next to the state file (so a moved snapshot pair still restores)."""
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
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_solver_state(filename):
    """(iter, learned_net or "", current_step, [history arrays]) from either format."""
    if not os.path.isfile(filename):
        raise SolverError("solver state file not found: %s" % filename)
    if not filename.endswith(".h5"):
        from .proto import io as pio
        from .blob import blob_to_array
        state = pio.read_binary(filename, caffe_pb2.SolverState)
        return (state.iter, state.learned_net, state.current_step,
                [blob_to_array(h) for h in state.history])
    import h5py
    try:
        f = h5py.File(filename, "r")
    except OSError as e:
        raise SolverError("Couldn't open solver state file %s: %s" % (filename, e)) from None
    with f:
        for key in ("iter", "current_step", "history"):
            if key not in f:
                raise SolverError("%s is not a Caffe HDF5 solver state (no %r)" % (filename, key))
        name = f["learned_net"][()] if "learned_net" in f else b""
        name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
        hist = f["history"]
        missing = [i for i in range(len(hist)) if str(i) not in hist]
        if missing:
            raise SolverError("%s: history dataset %d is missing" % (filename, missing[0]))
        return (int(np.asarray(f["iter"][()]).reshape(-1)[0]), name,
                int(np.asarray(f["current_step"][()]).reshape(-1)[0]),
                [hist[str(i)][...] for i in range(len(hist))])
