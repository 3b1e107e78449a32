"""Data layers: the net's sources. They take no bottoms, have no backward, and their tops get
the batch shape at setup.

Input (shapes only), DummyData (fillers), Data (LMDB/LevelDB of Datum with a prefetch thread),
MemoryData (arrays handed in from Python), HDF5Data / HDF5Output (HDF5 files), ImageData (a list
of image files). WindowData (R-CNN windows) is in window_data.py.
"""
import weakref

import numpy as np

from .. import backend, glog as log, memory
from ..data.db import open_db
from ..data.prefetch import DBSource, ImageListSource, Prefetcher, keep_all, read_image_list
from ..data.transformer import DataTransformer
from ..errors import DecafError
from ..filler import FILLERS, fill
from ..layer import Layer, register_layer


def _to_top(blob, host, xp):
    """Copy a host array into a top blob, reshaping it to the array's shape."""
    blob.reshape(host.shape)
    blob.data[...] = xp.asarray(host)


@register_layer("Input")
class InputLayer(Layer):
    """Input: tops get input_param.shape (one shape for all tops or one per top); forward and
    backward do nothing (the caller writes top.data)."""
    shape_only_reshape = True

    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            self.error("Must specify 'shape' once, once per top blob, or not at all: %d tops vs. "
                       "%d shapes" % (len(top), len(shapes)))
        for i, t in enumerate(top):
            if len(shapes):
                t.reshape(list(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass  # the tops keep whatever shape the caller gives them

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register_layer("DummyData")
class DummyDataLayer(Layer):
    """DummyData: top_i = filler_i (data_filler: none = constant 0, one for all tops, or one per
    top). Constant fillers fill once at setup; other fillers refill at every forward."""

    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        nf = len(p.data_filler)
        if nf not in (0, 1, n):
            self.error("Number of data fillers must be 0, 1 or equal to the number of tops: %d; "
                       "you specified %d data fillers" % (n, nf))
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if legacy:
            if len(p.shape):
                self.error("Both shape and legacy fields (num/channels/height/width) were given")
            for field in ("num", "channels", "height", "width"):
                if len(getattr(p, field)) not in (1, n):
                    self.error("Must specify '%s' once, or once per top blob (%d); specified %d"
                               % (field, n, len(getattr(p, field))))
        elif len(p.shape) not in (1, n):
            self.error("Must specify 'shape' once, or once per top blob (%d); specified %d"
                       % (n, len(p.shape)))
        if nf == 0:
            filler = self._pb.FillerParameter(type="constant", value=0)
            self.fillers = [filler]
        else:
            self.fillers = list(p.data_filler)
        for f in self.fillers:
            if f.type not in FILLERS:
                self.error("Unknown filler type %r (known: %s)" % (f.type, ", ".join(sorted(FILLERS))))
        self.refill = [f.type != "constant" for f in self.fillers]
        for i, t in enumerate(top):
            if legacy:
                t.reshape([self._pick(getattr(p, f), i) for f in ("num", "channels", "height",
                                                                   "width")])
            else:
                t.reshape(list(p.shape[0 if len(p.shape) == 1 else i].dim))
        self._fill(top, constant=True)  # constant tops are filled once, here

    @staticmethod
    def _pick(values, i):
        return values[0] if len(values) == 1 else values[i]

    def _fill(self, top, constant):
        for i, t in enumerate(top):
            k = i if len(self.fillers) > 1 else 0
            if self.refill[k] != constant:
                fill(t, self.fillers[k])

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        self._fill(top, constant=False)

    def backward(self, top, propagate_down, bottom):
        pass


def _merged_transform_param(layer, legacy):
    """transform_param, with deprecated fields of ``legacy`` (data_param / image_data_param:
    scale, mean_file, crop_size, mirror) moved in as Caffe's net upgrade does."""
    tp = type(layer.layer_param.transform_param)()
    tp.CopyFrom(layer.layer_param.transform_param)
    if legacy is not None:
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if legacy.HasField(field) and not tp.HasField(field):
                setattr(tp, field, getattr(legacy, field))
    return tp


def _shutdown(prefetcher, source):
    prefetcher.stop()
    source.close()


class BasePrefetchingDataLayer(Layer):
    """Shared part of Data and ImageData: a transformer, a batch source read by a prefetch
    thread (``prefetch`` batches ahead), and a forward that copies the next batch into the
    tops. Subclasses implement ``make_source(top)`` -> (source, first item, batch size)."""

    exact_num_bottom = 0
    min_top = 1
    max_top = 2
    legacy_param = None
    prefetch_count = 4
    log_file = "data_layer.cpp"

    def setup(self, bottom, top):
        self.output_labels = len(top) > 1
        legacy = getattr(self.layer_param, self.legacy_param) if self.legacy_param else None
        try:
            self.transformer = DataTransformer(_merged_transform_param(self, legacy), self.phase,
                                               dtype=top[0].dtype)
        except DecafError as e:
            self.error("transform_param: %s" % e)
        source, first, batch_size = self.make_source(top)
        try:
            shape = self.transformer.infer_shape(first)
        except DecafError as e:
            source.close()
            self.error(str(e))
        shape[0] = batch_size
        top[0].reshape(shape)
        log.info("output data size: %s" % ",".join(str(d) for d in shape), self.log_file)
        if self.output_labels:
            top[1].reshape([batch_size])
        self.prefetcher = Prefetcher(source.load, self.prefetch_count,
                                     name="decaf-%s-%s" % (self.type, self.name))
        self._finalizer = weakref.finalize(self, _shutdown, self.prefetcher, source)

    def make_source(self, top):
        raise NotImplementedError

    def reshape(self, bottom, top):
        pass  # forward reshapes the tops to each loaded batch

    def source_name(self):
        """The file or database the layer reads (named in its read errors)."""
        return getattr(self.layer_param, self.legacy_param).source

    def forward(self, bottom, top):
        failure = None
        try:
            batch = self.prefetcher.pop()
        except DecafError as e:
            failure = str(e)
        if failure is not None:     # raised outside the handler: no chained traceback
            self.error("reading %s: %s" % (self.source_name(), failure))
        try:
            _to_top(top[0], batch.data, self.xp)
            if self.output_labels:
                _to_top(top[1], batch.label, self.xp)
        finally:
            self.prefetcher.push_free(batch)

    def backward(self, top, propagate_down, bottom):
        pass

    def close(self):
        """Stop the prefetch thread and close the source now (also done when collected)."""
        self._finalizer()


@register_layer("Data")
class DataLayer(BasePrefetchingDataLayer):
    """Data: top[0] = transform(Datum records of data_param.source, in key order, wrapping
    around), top[1] = their labels; batch_size records per forward, read ahead by a thread."""

    legacy_param = "data_param"

    def make_source(self, top):
        p = self.layer_param.data_param
        if not p.source:
            self.error("data_param.source is not set")
        if p.batch_size <= 0:
            self.error("data_param.batch_size must be positive, got %d" % p.batch_size)
        if p.force_encoded_color and not self.transformer.param.force_gray:
            self.transformer.param.force_color = True
        self.prefetch_count = p.prefetch
        try:
            db = open_db(p.backend, p.source, "r")
        except DecafError as e:
            self.error("cannot read data_param.source %r (backend %s): %s"
                       % (p.source, self._pb.DataParameter.DB.Name(p.backend), e))
        try:
            source = DBSource(db, self.transformer, p.batch_size, self.output_labels, self.phase,
                              top[0].dtype, p.rand_skip)
            first = self.transformer.datum_array(source.peek())
        except DecafError as e:
            db.close()
            self.error("data_param.source %r: %s" % (p.source, e))
        return source, first, p.batch_size


@register_layer("ImageData")
class ImageDataLayer(BasePrefetchingDataLayer):
    """ImageData: top[0] = transform(images of the "path label" list image_data_param.source,
    read with Pillow in BGR order, resized to new_height x new_width when set), top[1] = labels."""

    exact_num_top = 2
    legacy_param = "image_data_param"
    log_file = "image_data_layer.cpp"

    def make_source(self, top):
        p = self.layer_param.image_data_param
        if (p.new_height == 0) != (p.new_width == 0):
            self.error("Current implementation requires new_height and new_width to be set at "
                       "the same time.")
        if p.batch_size <= 0:
            self.error("Positive batch size required")
        if not keep_all(self.phase) and backend.root_solver():
            log.warning("ImageData %r does not shard %s across the %d solvers: every solver reads "
                        "the whole list (set shuffle: true for different orders, or use a Data "
                        "layer)" % (self.name, p.source, backend.solver_count()), self.log_file)
        try:
            lines = read_image_list(p.source)
            source = ImageListSource(lines, self.transformer, p.batch_size, top[0].dtype,
                                     p.root_folder, p.new_height, p.new_width, p.is_color,
                                     p.shuffle, p.rand_skip)
            first = source.read(source.pos)
        except DecafError as e:
            self.error("image_data_param.source %r: %s" % (p.source, e))
        return source, first, p.batch_size


@register_layer("MemoryData")
class MemoryDataLayer(Layer):
    """MemoryData: serves batch_size rows of arrays given with set_input_arrays / reset
    (top[0] = data rows, top[1] = labels), wrapping around; no transformation of such arrays."""

    exact_num_bottom = 0
    exact_num_top = 2

    def setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.chw = (int(p.channels), int(p.height), int(p.width))
        if self.batch_size * int(np.prod(self.chw)) <= 0:
            self.error("batch_size, channels, height, and width must be specified and positive "
                       "in memory_data_param")
        top[0].reshape((self.batch_size,) + self.chw)
        top[1].reshape([self.batch_size])
        self.data = self.labels = None
        self.n = self.pos = 0
        self.has_new_data = False
        self.transformer = None

    def reshape(self, bottom, top):
        pass

    def set_input_arrays(self, data, labels):
        """pycaffe's Net.set_input_arrays: data N x C x H x W, labels N (or N x 1 x 1 x 1);
        N a multiple of batch_size. The arrays are used in place when float32 and contiguous."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if data.ndim != 4:
            raise DecafError("MemoryData %r: data array must be 4-d, got shape %s"
                             % (self.name, data.shape))
        if labels.ndim == 4 and labels.shape[1:] == (1, 1, 1):
            labels = labels.reshape(-1)
        if labels.ndim != 1:
            raise DecafError("MemoryData %r: labels must be 1-d (or N x 1 x 1 x 1), got shape %s"
                             % (self.name, labels.shape))
        if data.shape[0] != labels.shape[0]:
            raise DecafError("MemoryData %r: data and labels must have the same first dimension "
                             "(%d vs %d)" % (self.name, data.shape[0], labels.shape[0]))
        if data.shape[1:] != self.chw:
            raise DecafError("MemoryData %r: data is %s per row but memory_data_param says "
                             "channels x height x width = %s"
                             % (self.name, data.shape[1:], self.chw))
        self.reset(data, labels, data.shape[0])

    def reset(self, data, labels, n):
        """Caffe's MemoryDataLayer::Reset: serve the first n rows of data/labels."""
        if data is None or labels is None:
            raise DecafError("MemoryData %r: reset needs data and labels" % self.name)
        if n <= 0 or n % self.batch_size:
            raise DecafError("MemoryData %r: n must be a positive multiple of batch size %d, "
                             "got %d" % (self.name, self.batch_size, n))
        if self.layer_param.HasField("transform_param"):
            log.warning("MemoryData does not transform array data on Reset()",
                        "memory_data_layer.cpp")
        self.data = np.asarray(data).reshape((-1,) + self.chw)
        self.labels = np.asarray(labels).reshape(-1)
        self.n, self.pos = int(n), 0

    def add_datum_vector(self, datums):
        """Caffe's AddDatumVector: transform the Datum list (a multiple of batch_size) and
        serve it."""
        if self.has_new_data:
            raise DecafError("MemoryData %r: can't add data until current data has been "
                             "consumed" % self.name)
        if not len(datums) or len(datums) % self.batch_size:
            raise DecafError("MemoryData %r: the added data must be a non-empty multiple of "
                             "the batch size %d" % (self.name, self.batch_size))
        if self.transformer is None:
            self.transformer = DataTransformer(self.layer_param.transform_param, self.phase)
        data = self.transformer.transform_datums(list(datums))
        labels = np.asarray([d.label for d in datums], np.float32)
        self.reset(data, labels, len(datums))
        self.has_new_data = True

    def set_batch_size(self, new_size):
        if self.has_new_data:
            raise DecafError("MemoryData %r: can't change batch_size until current data has "
                             "been consumed" % self.name)
        self.batch_size = int(new_size)

    def forward(self, bottom, top):
        if self.data is None:
            raise DecafError("MemoryData %r needs to be initialized by calling reset / "
                             "set_input_arrays" % self.name)
        rows = slice(self.pos, self.pos + self.batch_size)
        _to_top(top[0], self.data[rows], self.xp)
        _to_top(top[1], self.labels[rows], self.xp)
        self.pos = (self.pos + self.batch_size) % self.n
        if self.pos == 0:
            self.has_new_data = False

    def backward(self, top, propagate_down, bottom):
        pass


def _h5py(layer):
    try:
        import h5py
    except ImportError:  # pragma: no cover
        layer.error("HDF5 layers need the 'h5py' package: pip install h5py")
    return h5py


@register_layer("HDF5Data")
class HDF5DataLayer(Layer):
    """HDF5Data: top_j = rows of the dataset named like top j, batch_size rows per forward,
    from the files listed in hdf5_data_param.source, in order (wrapping around; shuffled file
    and row order when shuffle)."""

    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.hdf5_data_param
        self._h5 = _h5py(self)
        if self.layer_param.HasField("transform_param"):
            self.error("HDF5Data does not transform data (remove transform_param)")
        if p.batch_size <= 0:
            self.error("hdf5_data_param.batch_size must be positive, got %d" % p.batch_size)
        try:
            with open(p.source, "rb") as f:
                self.files = f.read().decode("utf-8").split()
        except OSError as e:
            self.error("Failed to open source file %r: %s" % (p.source, e.strerror or e))
        except UnicodeDecodeError as e:
            self.error("source file %r is not a text list of HDF5 files (byte %d is not UTF-8)"
                       % (p.source, e.start))
        if not self.files:
            self.error("Must have at least 1 HDF5 filename listed in %s" % p.source)
        self.batch_size, self.shuffle = int(p.batch_size), bool(p.shuffle)
        self.rng = np.random.RandomState(backend.rng().randint(0, 2 ** 32, dtype=np.uint64))
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = self.current_row = self.offset = 0
        self.dtype = top[0].dtype
        self._load_file(self.files[self.file_order[0]])
        for t, arr in zip(top, self.arrays):
            t.reshape((self.batch_size,) + arr.shape[1:])
        self.row_shapes = [a.shape[1:] for a in self.arrays]

    def _load_file(self, path):
        names = list(self.layer_param.top)
        arrays = []
        try:
            with self._h5.File(path, "r") as f:
                for name in names:
                    arrays.append(self._read_dataset(f, name, path))
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
            self.error("Failed opening HDF5 file %s: %s" % (path, e))
        num = arrays[0].shape[0]
        if num == 0:
            self.error("HDF5 dataset %r in %s has no rows" % (names[0], path))
        for name, a in zip(names, arrays):
            if a.shape[0] != num:
                self.error("datasets in %s have different row counts: %r has %d, %r has %d"
                           % (path, names[0], num, name, a.shape[0]))
        if hasattr(self, "row_shapes"):
            for name, a, s in zip(names, arrays, self.row_shapes):
                if a.shape[1:] != s:
                    self.error("dataset %r in %s has rows of shape %s, earlier files %s"
                               % (name, path, a.shape[1:], s))
        self.arrays = arrays
        self.rows = np.arange(num)
        if self.shuffle:
            self.rng.shuffle(self.rows)

    def _read_dataset(self, f, name, path):
        """Dataset ``name`` of file ``f`` as an array of the top's dtype (Caffe reads float and
        integer data; the size is checked against the free memory before reading)."""
        if name not in f:
            self.error("Failed to find HDF5 dataset %r in %s" % (name, path))
        d = f[name]
        if not isinstance(d, self._h5.Dataset):
            self.error("HDF5 object %r in %s is not a dataset" % (name, path))
        if d.ndim < 1:
            self.error("HDF5 dataset %r in %s has no axes" % (name, path))
        if d.dtype.kind not in "fiu":
            self.error("HDF5 dataset %r in %s holds %s data; HDF5Data reads float or integer "
                       "datasets" % (name, path, d.dtype))
        memory.check(int(np.prod(d.shape, dtype=np.int64)) * self.dtype.itemsize,
                     "Layer %r: HDF5 dataset %r of shape %s in %s" % (self.name, name, d.shape,
                                                                       path))
        return np.asarray(d[()], dtype=self.dtype)

    def _advance(self, k):
        """Caffe's Next() k times: at the end of a file, go to the next file (reshuffling)."""
        self.current_row += k
        self.offset += k
        if self.current_row == len(self.rows):
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    if self.shuffle:
                        self.rng.shuffle(self.file_order)
                self._load_file(self.files[self.file_order[self.current_file]])
            self.current_row = 0
            if self.shuffle:
                self.rng.shuffle(self.rows)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        filled = 0
        while filled < self.batch_size:
            avail = len(self.rows) - self.current_row
            keep = np.arange(avail)
            if not keep_all(self.phase):  # several solvers: Caffe's Skip()
                offsets = self.offset + keep
                keep = keep[offsets % backend.solver_count() == backend.solver_rank()]
            take = keep[:self.batch_size - filled]
            if take.size:
                src = self.rows[self.current_row + take]
                for t, arr in zip(top, self.arrays):
                    t.data[filled:filled + take.size] = self.xp.asarray(arr[src])
                filled += take.size
                self._advance(int(take[-1]) + 1)
            else:
                self._advance(avail)

    def backward(self, top, propagate_down, bottom):
        pass


@register_layer("HDF5Output")
class HDF5OutputLayer(Layer):
    """HDF5Output: writes bottom[0] as dataset "data" and bottom[1] as "label" of
    hdf5_output_param.file_name, with legacy 4-D shapes (num x channels x height x width)."""

    exact_num_bottom = 2
    exact_num_top = 0

    def setup(self, bottom, top):
        h5py = _h5py(self)
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            self.error("hdf5_output_param.file_name is not set")
        try:
            h5py.File(self.file_name, "w").close()  # created (truncated) at setup, as Caffe
        except OSError as e:
            self.error("Failed to open HDF5 file %s: %s" % (self.file_name, e))
        self.written = False

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom):
            if b.num_axes > 4:
                self.error("bottom %s has %d axes; HDF5Output stores legacy 4-D blobs"
                           % (self.layer_param.bottom[i], b.num_axes))
        if bottom[0].num != bottom[1].num:
            self.error("data blob and label blob must have the same batch size (%d vs %d)"
                       % (bottom[0].num, bottom[1].num))

    def forward(self, bottom, top):
        h5py = _h5py(self)
        if self.written:
            self.error("%s already holds datasets 'data' and 'label': Caffe's HDF5Output "
                       "writes them once per file (a second forward fails in Caffe too)"
                       % self.file_name)
        with h5py.File(self.file_name, "a") as f:
            for name, b in (("data", bottom[0]), ("label", bottom[1])):
                legacy = (b.num, b.channels, b.height, b.width)
                f.create_dataset(name, data=backend.to_numpy(b.data).reshape(legacy))
        self.written = True

    def backward(self, top, propagate_down, bottom):
        pass


__all__ = ["InputLayer", "DummyDataLayer", "DataLayer", "ImageDataLayer", "MemoryDataLayer",
           "HDF5DataLayer", "HDF5OutputLayer", "BasePrefetchingDataLayer"]
