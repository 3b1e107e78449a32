"""Blob: Caffe's N-d array pair. ``data`` holds values, ``diff`` holds gradients.

The diff memory is allocated on first use (Caffe's SyncedMemory is lazy the same way): a
TEST-phase forward of a deploy net never touches a diff, so it never allocates one.
``share_diff`` with a blob whose diff does not exist yet links the two; the first access of
either side allocates the one buffer they share.

``update()`` is Caffe's ``Blob::Update``: ``data -= diff`` (the solver has already turned the
gradient into the step, so the update is a plain subtraction).

``shape_epoch()`` counts the changes of any existing blob's shape or data memory (a reshape to
a new shape, ``share_data`` with other memory; no reshape reads a diff's memory); a net whose
full forward changed none skips, while the count stays put, the reshapes that depend on shapes
alone (``Layer.shape_only_reshape``).  A blob marked ``quiet`` (a net output that only layers
without that property write, e.g. DetectionOutput's) does not count.
"""
import numpy as np

from . import backend, memory
from .errors import BlobProtoError, ShapeMismatchError

MAX_BLOB_AXES = 32
MAX_BLOB_BYTES = np.iinfo(np.intp).max
_EPOCH = [0]


def shape_epoch():
    """How many times an existing blob changed shape or memory (see the module docstring)."""
    return _EPOCH[0]


class Blob:
    """An N-d array with its gradient. Memory is kept across reshapes (grown, never shrunk)."""

    __slots__ = ("_shape", "_count", "_dtype", "_xp", "_data_buf", "_diff_buf", "_data", "_diff",
                 "_diff_link", "quiet", "__weakref__")

    def __init__(self, shape=(), dtype=np.float32, xp=None):
        self._dtype = np.dtype(dtype)
        self._xp = xp if xp is not None else backend.xp()
        self._data_buf = self._xp.zeros(0, self._dtype)
        self._diff_buf = None            # allocated by the first ``diff`` access
        self._diff_link = None           # a blob whose diff this one shares, once allocated
        self._shape = None
        self.quiet = False
        self.reshape(shape)

    # -- shape -----------------------------------------------------------------------------
    def reshape(self, *shape):
        """Reshape to ``shape`` (a sequence or ints). New memory is zero-filled; old values stay."""
        if len(shape) == 1 and not np.isscalar(shape[0]):
            shape = shape[0]
        if hasattr(shape, "dim"):  # BlobShape message
            shape = list(shape.dim)
        shape = tuple(int(d) for d in shape)
        if len(shape) > MAX_BLOB_AXES:
            raise ShapeMismatchError("blob shape %s has more than %d axes" % (shape, MAX_BLOB_AXES))
        if any(d < 0 for d in shape):
            raise ShapeMismatchError("blob shape %s has a negative dimension" % (shape,))
        if shape == self._shape:
            return
        if self._shape is not None and not self.quiet:
            _EPOCH[0] += 1
        count = nonzero = 1
        for d in shape:
            count *= d
            nonzero *= max(d, 1)
        if nonzero * self._dtype.itemsize > MAX_BLOB_BYTES:     # NumPy's limit, even at count 0
            raise ShapeMismatchError("blob shape %s is too large (more than %d bytes)"
                                     % (shape, MAX_BLOB_BYTES))
        # data and diff are counted together, the diff as the first backward will allocate it
        # (an unallocated diff was counted with the data, up to the data's size)
        diff_size = self._data_buf.size if self._diff_buf is None else self._diff_buf.size
        grow = max(count - self._data_buf.size, 0) + max(count - diff_size, 0)
        if grow:
            memory.reserve(grow * self._dtype.itemsize, "a blob of shape %s (data and diff)"
                           % (shape,), on_gpu=self._xp is not np)
        if count > self._data_buf.size:
            self._data_buf = self._xp.zeros(count, self._dtype)
        if self._diff_buf is not None and count > self._diff_buf.size:
            self._diff_buf = self._xp.zeros(count, self._dtype)
        if self._diff_link is not None and count > self._diff_link.count:
            self._diff_link = None
        self._shape, self._count = shape, count
        self._refresh_views()

    def _refresh_views(self):
        self._data = self._data_buf[:self._count].reshape(self._shape)
        self._diff = None if self._diff_buf is None else \
            self._diff_buf[:self._count].reshape(self._shape)

    def _alloc_diff(self):
        """The diff view, allocating (or taking the linked blob's) memory on first use."""
        link = self._diff_link
        if link is not None:
            self._diff_link = None
            self._diff_buf = link._diff_view().reshape(-1)
        elif self._diff_buf is None or self._diff_buf.size < self._count:
            self._diff_buf = self._xp.zeros(self._count, self._dtype)
        self._diff = self._diff_buf[:self._count].reshape(self._shape)
        return self._diff

    def _diff_view(self):
        return self._diff if self._diff is not None else self._alloc_diff()

    @property
    def has_diff(self):
        """True once the diff memory exists (it is allocated on first access)."""
        return self._diff is not None or self._diff_link is not None

    def reshape_like(self, other):
        self.reshape(other.shape)

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    def count_range(self, start, end=None):
        """Product of the dims in [start, end) (Caffe's ``count(start, end)``)."""
        end = self.num_axes if end is None else end
        n = 1
        for d in self._shape[start:end]:
            n *= d
        return n

    @property
    def num_axes(self):
        return len(self._shape)

    def canonical_axis_index(self, axis):
        """Map a possibly negative axis into [0, num_axes), with Caffe's range check."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise ShapeMismatchError("axis %d out of range for a %d-D blob of shape %s"
                                     % (axis, n, self._shape))
        return axis + n if axis < 0 else axis

    def legacy_shape(self, index):
        if self.num_axes > 4:
            raise ShapeMismatchError("legacy accessors need a blob of at most 4 axes, got %s"
                                     % (self._shape,))
        if index >= self.num_axes or index < -self.num_axes:
            return 1
        return self._shape[index]

    num = property(lambda self: self.legacy_shape(0))
    channels = property(lambda self: self.legacy_shape(1))
    height = property(lambda self: self.legacy_shape(2))
    width = property(lambda self: self.legacy_shape(3))

    @property
    def dtype(self):
        return self._dtype

    @property
    def xp(self):
        return self._xp

    # -- data ------------------------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data[...] = value

    @property
    def diff(self):
        return self._diff if self._diff is not None else self._alloc_diff()

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    def update(self):
        """Caffe's Blob::Update: data -= diff."""
        self._xp.subtract(self._data, self.diff, out=self._data)

    def share_data(self, other):
        """Make this blob's data the same memory as ``other``'s (counts must match)."""
        if other.count != self._count:
            raise ShapeMismatchError("share_data: count %d != %d" % (self._count, other.count))
        if other._data_buf is not self._data_buf and not self.quiet:
            _EPOCH[0] += 1
        self._data_buf = other._data_buf
        self._data = other._data.reshape(self._shape)

    def share_diff(self, other):
        if other.count != self._count:
            raise ShapeMismatchError("share_diff: count %d != %d" % (self._count, other.count))
        if other._diff is None and self._diff is None:
            self._diff_link, self._diff_buf = other, None     # both stay unallocated for now
            return
        self._diff_link = None
        self._diff_buf = other.diff.reshape(-1)
        self._diff = other.diff.reshape(self._shape)

    def asum_data(self):
        return float(self._xp.abs(self._data).sum())

    def sumsq_diff(self):
        d = self.diff.ravel()
        return float(self._xp.vdot(d, d))

    # -- protobuf --------------------------------------------------------------------------
    def shape_equals(self, proto):
        """Caffe's ShapeEquals: legacy 4-D fields compare against the legacy shape."""
        if proto.HasField("num") or proto.HasField("channels") or \
                proto.HasField("height") or proto.HasField("width"):
            return (self.num_axes <= 4 and self.legacy_shape(-4) == proto.num and
                    self.legacy_shape(-3) == proto.channels and
                    self.legacy_shape(-2) == proto.height and self.legacy_shape(-1) == proto.width)
        return tuple(proto.shape.dim) == self._shape

    def from_proto(self, proto, reshape=True):
        """Load data (and diff, when present) from a BlobProto."""
        pshape = proto_shape(proto)
        if reshape:
            _check_proto_count(proto, pshape)
            self.reshape(pshape)
        elif not self.shape_equals(proto):
            raise ShapeMismatchError("Trying to copy blobs of different sizes: blob %s, proto %s"
                                     % (self._shape, pshape))
        self._load(self._data, proto.double_data if len(proto.double_data) else proto.data, "data")
        if len(proto.double_diff):
            self._load(self.diff, proto.double_diff, "diff")
        elif len(proto.diff):
            self._load(self.diff, proto.diff, "diff")

    def _load(self, dest, values, what):
        if len(values) != self._count:
            raise ShapeMismatchError("BlobProto holds %d %s values for a blob of count %d"
                                     % (len(values), what, self._count))
        dest[...] = self._xp.asarray(np.asarray(values, dtype=self._dtype).reshape(self._shape))

    def to_proto(self, write_diff=False):
        """A BlobProto with ``shape`` and float ``data`` (``double_data`` for float64 blobs)."""
        from .proto import caffe_pb2
        proto = caffe_pb2.BlobProto()
        proto.shape.dim.extend(self._shape)
        double = self._dtype == np.float64
        chunks = [_packed_field(8 if double else 5, self._data, double)]
        if write_diff:
            chunks.append(_packed_field(9 if double else 6, self.diff, double))
        proto.MergeFromString(b"".join(chunks))
        return proto

    def __repr__(self):
        return "Blob(shape=%s, dtype=%s)" % (self._shape, self._dtype)


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packed_field(number, array, double):
    """The wire bytes of a packed repeated float/double field: one copy, no Python floats."""
    payload = backend.to_numpy(array).astype("<f8" if double else "<f4").tobytes()
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def proto_shape(proto):
    """The shape a BlobProto describes (legacy num/channels/height/width when set)."""
    if proto.HasField("num") or proto.HasField("channels") or \
            proto.HasField("height") or proto.HasField("width"):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(proto.shape.dim)


def _check_proto_count(proto, shape):
    """The BlobProto's data holds exactly prod(shape) values (checked before any reshape, so a
    file's absurd shape never allocates)."""
    if any(d < 0 for d in shape):
        raise BlobProtoError("BlobProto shape %s has a negative dimension" % (shape,))
    count = 1
    for d in shape:
        count *= d
    n = len(proto.double_data) if len(proto.double_data) else len(proto.data)
    if n != count:
        raise BlobProtoError("BlobProto of shape %s holds %d data values for a blob of count %d"
                             % (shape, n, count))


def blob_to_array(proto):
    """A BlobProto's data as a float32 (or float64) ndarray of its shape."""
    shape = proto_shape(proto)
    _check_proto_count(proto, shape)
    if len(proto.double_data):
        return np.asarray(proto.double_data, dtype=np.float64).reshape(shape)
    return np.asarray(proto.data, dtype=np.float32).reshape(shape)
