"""The readers under fuzz: each turns a seed file from the repository into mutated cases and runs
one case (in a fresh working directory) the way a user's command would read it.

A case is a dict: ``reader`` (name), ``files`` ({relative path: bytes} written before the run),
``main`` (the file the reader opens; a clear error must name it) and reader-specific ``spec``.
"""
import glob
import os
import random

import numpy as np

from . import mutate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED_DIRS = [os.path.join(REPO, d) for d in ("examples", "tests/golden", "tests/models/data")]
FORMATS = os.path.join(REPO, "tests", "golden", "formats")


def _find(*patterns):
    out = []
    for d in SEED_DIRS:
        for p in patterns:
            out.extend(glob.glob(os.path.join(d, "**", p), recursive=True))
    return sorted(set(out))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _close_layers(net):
    for layer in getattr(net, "layers", []):
        close = getattr(layer, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 (closing after a failure: best effort)
                pass


def _build_and_forward(prototxt, forwards=2):
    import decaf
    net = decaf.Net(prototxt, decaf.TEST)
    try:
        for _ in range(forwards):
            net.forward()
    finally:
        _close_layers(net)


class Reader:
    """A reader: ``seeds()`` (real files), ``case(rng)`` (one mutated case), ``run(case)``."""

    name = "?"

    def seeds(self):
        return []

    def case(self, rng):
        raise NotImplementedError

    def run(self, case):
        raise NotImplementedError


# -- text ----------------------------------------------------------------------------------------

def _is_message(path, cls_name, fields):
    from google.protobuf import text_format
    from decaf.proto import caffe_pb2
    msg = getattr(caffe_pb2, cls_name)()
    try:
        text_format.Parse(_read(path).decode("utf-8"), msg)
    except Exception:  # noqa: BLE001 (not this kind of file)
        return False
    return any(msg.HasField(f) if not msg.DESCRIPTOR.fields_by_name[f].is_repeated
               else len(getattr(msg, f)) for f in fields)


class NetPrototxt(Reader):
    """Mutated net prototxts (every real one in the repository), built as decaf.Net(TEST)."""

    name = "prototxt_net"

    def seeds(self):
        return [p for p in _find("*.prototxt")
                if _is_message(p, "NetParameter", ("layer", "layers"))]

    def case(self, rng, seeds):
        text = mutate.mutate_text(_read(rng.choice(seeds)), rng)
        return {"files": {"net.prototxt": text}, "main": "net.prototxt"}

    def run(self, case):
        import decaf
        net = decaf.Net("net.prototxt", decaf.TEST)
        _close_layers(net)


class SolverPrototxt(Reader):
    """Mutated solver prototxts, read and upgraded as ``decaf train -solver`` reads them."""

    name = "prototxt_solver"

    def seeds(self):
        return [p for p in _find("*.prototxt")
                if _is_message(p, "SolverParameter", ("base_lr", "net", "type", "solver_type"))]

    def case(self, rng, seeds):
        text = mutate.mutate_text(_read(rng.choice(seeds)), rng)
        return {"files": {"solver.prototxt": text}, "main": "solver.prototxt"}

    def run(self, case):
        from decaf.solver import read_solver_param
        read_solver_param("solver.prototxt")


# -- binary protobuf -----------------------------------------------------------------------------

def _weight_pairs(ext):
    """(net prototxt, weights file) pairs from the repository."""
    pairs = [(os.path.join(FORMATS, "weights", "tiny_net.prototxt"),
              os.path.join(FORMATS, "weights", "tiny_net" + ext))]
    for kind in ("sgd", "adam"):
        d = os.path.join(FORMATS, "snapshots", "%s_%s" % (kind, "hdf5" if ext.endswith("h5")
                                                           else "binaryproto"))
        pairs.append((os.path.join(FORMATS, "snapshots", "tiny_train.prototxt"),
                      os.path.join(d, "%s_iter_3%s" % (kind, ext))))
    if ext == ".caffemodel":
        pairs.append((os.path.join(FORMATS, "upgrade", "v1_net.prototxt"),
                      os.path.join(FORMATS, "upgrade", "v1_net.caffemodel")))
        wechat = os.path.join(REPO, "tests", "models", "data", "wechat_qrcode")
        pairs.append((os.path.join(wechat, "sr.prototxt"), os.path.join(wechat, "sr.caffemodel")))
    return [p for p in pairs if os.path.exists(p[0]) and os.path.exists(p[1])]


class Weights(Reader):
    """Mutated weights, copied into their (unmutated) net as ``Net(..., weights=...)`` does."""

    def __init__(self, ext, name):
        self.ext, self.name = ext, name

    def seeds(self):
        return _weight_pairs(self.ext)

    def case(self, rng, seeds):
        proto, weights = rng.choice(seeds)
        main = "w" + self.ext
        return {"files": {"net.prototxt": _read(proto),
                          main: mutate.mutate_binary(_read(weights), rng)}, "main": main}

    def run(self, case):
        import decaf
        net = decaf.Net("net.prototxt", decaf.TEST)
        net.copy_from(case["main"])


class SolverState(Reader):
    """Mutated solver states (binary and HDF5), read as Solver.restore reads them."""

    def __init__(self, pattern, name):
        self.pattern, self.name = pattern, name

    def seeds(self):
        return [p for p in _find(self.pattern) if p.endswith(self.pattern[1:])]

    def case(self, rng, seeds):
        main = "s" + self.pattern[1:]
        return {"files": {main: mutate.mutate_binary(_read(rng.choice(seeds)), rng)},
                "main": main}

    def run(self, case):
        from decaf.solver_state import read_solver_state
        read_solver_state(case["main"])


class BinaryProto(Reader):
    """Mutated mean files (.binaryproto), read as transform_param.mean_file is."""

    name = "binaryproto"

    def seeds(self):
        return _find("*.binaryproto")

    def case(self, rng, seeds):
        return {"files": {"mean.binaryproto": mutate.mutate_binary(_read(rng.choice(seeds)), rng)},
                "main": "mean.binaryproto"}

    def run(self, case):
        from decaf.data.transformer import load_mean_file
        load_mean_file("mean.binaryproto")


# -- databases of Datum --------------------------------------------------------------------------

def _datum_records():
    import lmdb
    src = os.path.join(FORMATS, "db", "mnist_tiny_lmdb")
    env = lmdb.open(src, readonly=True, lock=False)     # the repository's copy stays untouched
    try:
        with env.begin() as txn:
            return [bytes(v) for _, v in txn.cursor()]
    finally:
        env.close()


def _corrupt_datum(value, rng):
    """A Datum record made wrong: bytes mutated, sizes that do not match, garbage encoded."""
    from decaf.proto import caffe_pb2
    kind = rng.randrange(5)
    try:
        d = caffe_pb2.Datum.FromString(value)
    except Exception:  # noqa: BLE001 (already corrupted by an earlier round)
        kind, d = 0, None
    if kind == 0:
        return mutate.mutate_binary(value, rng)
    if kind == 1:
        field = rng.choice(("channels", "height", "width"))
        setattr(d, field, rng.choice((0, 1, 3, 999999999, 2 ** 31 - 1)))
    elif kind == 2:
        d.encoded = True
        d.data = mutate.mutate_binary(_png_bytes(rng), rng) if rng.random() < 0.7 else d.data
    elif kind == 3:
        d.ClearField("data")
        d.float_data.extend([rng.random() for _ in range(rng.choice((0, 1, 7)))])
    else:
        d.data = d.data[:rng.randrange(len(d.data) + 1)]
    return d.SerializeToString()


def _png_bytes(rng, size=None):
    from decaf.data.datum import encode_image
    h, w = size or (rng.randint(1, 12), rng.randint(1, 12))
    arr = np.random.RandomState(rng.randrange(2 ** 31)).randint(0, 256, (3, h, w)).astype(np.uint8)
    return encode_image(arr, rng.choice(("png", "jpg")))


DATA_NET = """layer { name: "d" type: "Data" top: "data" top: "label"
  transform_param { %s }
  data_param { source: "db" batch_size: %d backend: %s } }"""


class DatumDB(Reader):
    """A database whose Datum records are corrupted, read by a Data layer for a few batches."""

    def __init__(self, backend):
        self.backend, self.name = backend, "%s_datum" % backend

    def seeds(self):
        return _datum_records()

    def case(self, rng, seeds):
        records = list(seeds[:rng.randint(1, len(seeds))])
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            i = rng.randrange(len(records))
            records[i] = _corrupt_datum(records[i], rng)
        transform = rng.choice(("", "crop_size: 3", "crop_size: 50", "scale: 0.5",
                                "mean_value: 1 mean_value: 2", "force_color: true"))
        net = DATA_NET % (transform, rng.choice((1, 2, 4, 999)), self.backend.upper())
        return {"files": {"net.prototxt": net.encode()}, "main": "db", "spec": records}

    def run(self, case):
        from decaf.data.db import open_db
        with open_db(self.backend, "db", "new") as db, db.writer() as txn:
            for i, value in enumerate(case["spec"]):
                txn.put(b"%08d" % i, value)
        _build_and_forward("net.prototxt")


class DatumDBFiles(Reader):
    """A real database whose files are corrupted (bytes of the LevelDB log, manifest or
    CURRENT; LMDB's data.mdb), read by a Data layer."""

    def __init__(self, backend):
        self.backend, self.name = backend, "%s_file" % backend

    def seeds(self):
        d = os.path.join(FORMATS, "db", "mnist_tiny_%s" % self.backend)
        return [{n: _read(os.path.join(d, n)) for n in os.listdir(d) if n != "lock.mdb"}]

    def case(self, rng, seeds):
        files = dict(seeds[0])
        target = rng.choice(sorted(n for n in files if files[n]))
        files[target] = mutate.mutate_binary(files[target], rng)
        net = DATA_NET % ("", rng.choice((1, 4)), self.backend.upper())
        out = {"db/" + n: data for n, data in files.items()}
        out["net.prototxt"] = net.encode()
        return {"files": out, "main": "db"}

    def run(self, case):
        _build_and_forward("net.prototxt", forwards=3)


# -- files named by lists ------------------------------------------------------------------------

DTYPES = ("float32", "float64", "int32", "uint8", "int64", "bool", "float16", "S3", "complex64")


def hdf5_spec(rng):
    """Files with datasets of random dims (0 included) and dtypes, and a list naming them (some
    missing, some lines mutated)."""
    files = []
    for k in range(rng.randint(1, 3)):
        n = rng.choice((0, 1, 2, 5, 5))
        datasets = {}
        names = [t for t in ("data", "label") if rng.random() < 0.85]
        for name in names + (["other"] if rng.random() < 0.3 else []):
            dims = [rng.choice((n, n, 0, 1, 3))] + [rng.choice((0, 1, 2, 3))
                                                    for _ in range(rng.randint(0, 3))]
            datasets[name] = (dims, rng.choice(DTYPES if rng.random() < 0.3 else DTYPES[:2]))
        files.append(("f%d.h5" % k, datasets))
    names = [f for f, _ in files] + (["missing.h5"] if rng.random() < 0.2 else [])
    listing = "\n".join(names).encode()
    if rng.random() < 0.3:
        listing = mutate.mutate_text(listing, rng)
    return files, listing


def write_hdf5_files(files):
    import h5py
    for fname, datasets in files:
        with h5py.File(fname, "w") as f:
            for name, (dims, dtype) in datasets.items():
                f.create_dataset(name, data=np.ones(dims, dtype=dtype))


HDF5_NET = """layer { name: "h" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "list.txt" batch_size: %d shuffle: %s } }"""


class HDF5Data(Reader):
    """HDF5Data sources with wrong dims or dtypes and lists naming missing files."""

    name = "hdf5_data"

    def seeds(self):
        return [None]

    def case(self, rng, seeds, spec=None):
        files, listing = spec or hdf5_spec(rng)
        net = HDF5_NET % (rng.choice((1, 2, 3)), rng.choice(("true", "false")))
        return {"files": {"list.txt": listing, "net.prototxt": net.encode()},
                "main": "list.txt", "spec": files}

    def run(self, case):
        write_hdf5_files(case["spec"])
        _build_and_forward("net.prototxt")


IMAGE_NET = """layer { name: "i" type: "ImageData" top: "data" top: "label"
  transform_param { %s }
  image_data_param { source: "list.txt" batch_size: %d new_height: %d new_width: %d
                     is_color: %s shuffle: %s } }"""


class ImageData(Reader):
    """Image lists (mutated lines, missing files) over good, garbage and truncated images."""

    name = "image_data"

    def seeds(self):
        return [None]

    def case(self, rng, seeds):
        files, lines = {}, []
        for k in range(rng.randint(1, 4)):
            name = "im%d.%s" % (k, rng.choice(("png", "jpg")))
            data = _png_bytes(rng)
            if rng.random() < 0.3:
                data = mutate.mutate_binary(data, rng)
            if rng.random() < 0.9:
                files[name] = data
            lines.append("%s %d" % (name, rng.randint(0, 9)))
        listing = "\n".join(lines).encode()
        if rng.random() < 0.4:
            listing = mutate.mutate_text(listing, rng)
        files["list.txt"] = listing
        new = rng.choice((0, 0, 5, 1))
        net = IMAGE_NET % (rng.choice(("", "crop_size: 4", "crop_size: 99")),
                           rng.choice((1, 2, 5)), new, new if rng.random() < 0.9 else 0,
                           rng.choice(("true", "false")), rng.choice(("true", "false")))
        files["net.prototxt"] = net.encode()
        return {"files": files, "main": "list.txt"}

    def run(self, case):
        _build_and_forward("net.prototxt")


WINDOWS = b"""# 0
im0.png
3
20
24
3
1 0.9 2 3 5 10
2 0.5 4 4 9 9
5 0.1 1 1 8 8
# 1
im1.png
3
12
16
2
7 0.8 0 0 5 3
6 0.2 10 6 15 11
"""

WINDOW_NET = """layer { name: "w" type: "WindowData" top: "data" top: "label"
  transform_param { crop_size: %d mirror: %s }
  window_data_param { source: "windows.txt" batch_size: %d fg_fraction: %s
                      context_pad: %d crop_mode: "%s" } }"""


class WindowData(Reader):
    """Mutated R-CNN window files over two small images."""

    name = "window_data"

    def seeds(self):
        return [WINDOWS]

    def case(self, rng, seeds):
        files = {"im0.png": _png_bytes(rng, (20, 24)), "im1.png": _png_bytes(rng, (12, 16))}
        files["windows.txt"] = mutate.mutate_text(seeds[0], rng)
        net = WINDOW_NET % (rng.choice((4, 8, 0)), rng.choice(("true", "false")),
                            rng.choice((1, 2, 3)), rng.choice(("0.25", "1.0", "0")),
                            rng.choice((0, 2)), rng.choice(("warp", "square")))
        files["net.prototxt"] = net.encode()
        return {"files": files, "main": "windows.txt"}

    def run(self, case):
        import decaf
        decaf.set_random_seed(1)
        _build_and_forward("net.prototxt")


# -- the net builder -----------------------------------------------------------------------------

from .netgen import random_net  # noqa: E402  (structure-aware nets)


class NetGraph(Reader):
    """Structure-aware nets: cycles, missing bottoms, wrong bottom counts, absurd shapes."""

    name = "net_graph"

    def seeds(self):
        return [None]

    def case(self, rng, seeds, text=None):
        text = text if text is not None else random_net(rng)
        return {"files": {"net.prototxt": text.encode()}, "main": "net.prototxt"}

    def run(self, case):
        import decaf
        net = decaf.Net("net.prototxt", decaf.TEST)
        _close_layers(net)


READERS = {r.name: r for r in (
    NetPrototxt(), SolverPrototxt(), Weights(".caffemodel", "caffemodel"),
    Weights(".caffemodel.h5", "caffemodel_h5"), SolverState("*.solverstate", "solverstate"),
    SolverState("*.solverstate.h5", "solverstate_h5"), BinaryProto(), DatumDB("lmdb"),
    DatumDB("leveldb"), DatumDBFiles("lmdb"), DatumDBFiles("leveldb"), HDF5Data(), ImageData(), WindowData(), NetGraph())}


def make_cases(name, n, seed=0):
    """``n`` cases of reader ``name``, reproducible from ``seed``."""
    reader = READERS[name]
    seeds = reader.seeds()
    if not seeds:
        raise RuntimeError("reader %s found no seed files" % name)
    for i in range(n):
        rng = random.Random("%s/%d/%d" % (name, seed, i))
        case = reader.case(rng, seeds)
        case["reader"], case["id"] = name, "%s/%d/%d" % (name, seed, i)
        yield case


def describe(case):
    return "%s (%s)" % (case.get("id", case["reader"]), case["main"])

