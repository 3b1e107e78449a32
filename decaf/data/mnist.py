"""MNIST: the IDX file format and Caffe's convert_mnist_data.

IDX: a big-endian header ``0 0 <type code> <ndim>`` followed by ndim uint32 dimensions and the
values, C order. MNIST images are magic 2051 (ubyte, 3-D: N x rows x cols), labels magic 2049
(ubyte, 1-D). Files may be gzipped (detected by content, not by name).

convert_mnist writes one Datum per image (channels 1, height rows, width cols, data = the raw
pixel bytes, label) under the keys "%08d" (0, 1, ...), committing every 1000 records, exactly
as Caffe's examples/mnist/convert_mnist_data.cpp does: same keys, byte-identical values.
"""
import gzip
import os

import numpy as np

from .. import glog as log
from ..errors import DecafError
from .db import open_db

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
W = "convert_mnist_data.cpp"  # log lines carry the name of Caffe's tool
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IDXError(DecafError):
    """A file that is not the expected IDX file."""


def _read_bytes(path):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise IDXError("Unable to open file %s: no such file" % path) from None
    except IsADirectoryError:
        raise IDXError("Unable to open file %s: it is a directory" % path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IDXError("%s: corrupt gzip file: %s" % (path, e)) from None
    return raw


def read_idx(path, expect_magic=None, what="IDX"):
    """The array stored in an IDX file (gzipped or not). ``expect_magic`` checks the 32-bit magic
    number (2051 for MNIST images, 2049 for labels) with a clear error."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IDXError("%s: too short to be an %s file (%d bytes)" % (path, what, len(raw)))
    magic = int.from_bytes(raw[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise IDXError("Incorrect %s magic in %s: %d (0x%08x), expected %d (0x%08x)%s"
                       % (what, path, magic, magic, expect_magic, expect_magic,
                          _magic_hint(magic)))
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise IDXError("%s is not an IDX file (header %s)" % (path, raw[:4].hex()))
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise IDXError("%s: truncated IDX header" % path)
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    need = head + count * dtype.itemsize
    if len(raw) < need:
        raise IDXError("%s: truncated: %d value bytes for shape %s, expected %d"
                       % (path, len(raw) - head, dims, need - head))
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=head).reshape(dims)
    return arr.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else arr


def _magic_hint(magic):
    if magic == IMAGE_MAGIC:
        return " (this is an image file: are the image and label files swapped?)"
    if magic == LABEL_MAGIC:
        return " (this is a label file: are the image and label files swapped?)"
    return ""


def load_images(path):
    """MNIST images: N x rows x cols uint8."""
    arr = read_idx(path, IMAGE_MAGIC, "image file")
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise IDXError("%s: MNIST images must be 3-D unsigned bytes, got %s %s"
                       % (path, arr.dtype, arr.shape))
    return arr


def load_labels(path):
    """MNIST labels: N uint8."""
    arr = read_idx(path, LABEL_MAGIC, "label file")
    if arr.ndim != 1 or arr.dtype != np.uint8:
        raise IDXError("%s: MNIST labels must be 1-D unsigned bytes, got %s %s"
                       % (path, arr.dtype, arr.shape))
    return arr


def load_mnist(image_file, label_file):
    """(images N x rows x cols uint8, labels N uint8), checked to have the same N."""
    images, labels = load_images(image_file), load_labels(label_file)
    if images.shape[0] != labels.shape[0]:
        raise IDXError("%s has %d images but %s has %d labels"
                       % (image_file, images.shape[0], label_file, labels.shape[0]))
    return images, labels


def mnist_records(images, labels):
    """(key, serialized Datum) pairs exactly as convert_mnist_data writes them."""
    from ..proto import caffe_pb2
    n, rows, cols = images.shape
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = 1, rows, cols
    # convert_mnist_data reads the label into a (signed) char
    signed = labels.astype(np.uint8).view(np.int8)
    for i in range(n):
        datum.data = images[i].tobytes()
        datum.label = int(signed[i])
        yield b"%08d" % i, datum.SerializeToString()


def convert_mnist(image_file, label_file, db_path, backend="lmdb"):
    """Caffe's convert_mnist_data: write the IDX pair into a new LMDB/LevelDB. Returns the
    number of records. Refuses to overwrite an existing database."""
    images, labels = load_mnist(image_file, label_file)
    if os.path.exists(db_path):
        raise DecafError("output database %s already exists; convert_mnist_data does not "
                         "overwrite it (remove it first)" % db_path)
    log.info("A total of %d items." % images.shape[0], W)
    log.info("Rows: %d Cols: %d" % images.shape[1:], W)
    count = 0
    with open_db(backend, db_path, "new") as db:
        with db.writer(1000) as w:
            for key, value in mnist_records(images, labels):
                w.put(key, value)
                count += 1
    log.info("Processed %d files." % count, W)
    return count
