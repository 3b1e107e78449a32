"""Background batch loading (Caffe's BasePrefetchingDataLayer) and the batch sources.

A Prefetcher owns ``count`` Batch buffers and a thread that takes a free buffer, fills it with
``load(batch)`` and queues it as full; the layer's forward pops a full batch, copies it into its
tops and gives the buffer back. Reading and decoding overlap the net's compute, and the order
of records is the source's order (one reader thread, FIFO queues): deterministic.

A source reads records in order and transforms them into a Batch: DBSource (LMDB/LevelDB of
Datum, for the Data layer) and ImageListSource (a "path label" list, for ImageData). Sources hold
no reference to their layer, so a layer that is dropped can be collected; its finalizer stops
the thread.
"""
import queue
import threading

import numpy as np

from .. import backend, glog as log
from ..errors import DecafError
from .datum import parse_datum, read_image

TEST = 1  # caffe_pb2.TEST


class Batch:
    """Host buffers of one batch: ``data`` (N x ...) and ``label`` (N,) or None."""

    __slots__ = ("data", "label")

    def __init__(self):
        self.data = None
        self.label = None

    def ensure(self, shape, dtype, with_label):
        """(Re)allocate the buffers when the shape changed (Caffe reshapes per batch)."""
        shape = tuple(shape)
        if self.data is None or self.data.shape != shape or self.data.dtype != dtype:
            self.data = np.empty(shape, dtype)
        if with_label and (self.label is None or self.label.shape != shape[:1]
                           or self.label.dtype != dtype):
            self.label = np.empty(shape[:1], dtype)


class Prefetcher:
    """A loader thread filling ``count`` Batch buffers ahead of the consumer.

    ``count == 0`` loads synchronously in ``pop`` (no thread)."""

    def __init__(self, load, count=4, name="decaf-prefetch"):
        self._load = load
        self._count = int(count)
        self._free = queue.Queue()
        self._full = queue.Queue()
        self._stop = threading.Event()
        self._error = None
        self._thread = None
        for _ in range(max(self._count, 1)):
            self._free.put(Batch())
        if self._count > 0:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                batch = self._free.get(timeout=0.05)
            except queue.Empty:
                continue
            if self._stop.is_set():
                break
            try:
                self._load(batch)
            except BaseException as e:  # reported to the consumer by pop()
                self._error = e
                self._full.put(None)
                return
            self._full.put(batch)

    def pop(self):
        """The next full batch (blocks until it is loaded). Re-raises a loader error."""
        if self._thread is None:
            if self._stop.is_set():
                raise DecafError("the data prefetcher was stopped")
            batch = self._free.get()
            try:
                self._load(batch)
            except BaseException:
                self._free.put(batch)
                raise
            return batch
        while True:
            if self._error is not None:
                raise self._error
            try:
                batch = self._full.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._full.empty():
                    if self._error is not None:
                        raise self._error
                    raise DecafError("the data prefetch thread has stopped")
                continue
            if batch is None:
                raise self._error
            return batch

    def push_free(self, batch):
        """Give a consumed batch back for reloading."""
        self._free.put(batch)

    def stop(self, timeout=10.0):
        """Stop the loader thread (it finishes the batch it is loading) and wait for it."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive() \
                and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self):
        return self._thread is not None and self._thread.is_alive()


def keep_all(phase):
    """True when every record is used: one solver, or a TEST net."""
    return phase == TEST or backend.solver_count() <= 1


def skip_record(offset, phase):
    """Caffe's DataLayer::Skip: with several solvers, rank r keeps offsets = r (mod count);
    TEST nets keep everything."""
    return not (keep_all(phase) or offset % backend.solver_count() == backend.solver_rank())


class DBSource:
    """Reads Datum records from a DB cursor in key order, wrapping around at the end."""

    def __init__(self, db, transformer, batch_size, output_labels, phase, dtype, rand_skip=0):
        self.db = db
        self.cursor = db.cursor()
        if not self.cursor.valid():
            raise DecafError("database %s is empty" % db.source)
        self.transformer = transformer
        self.batch_size = int(batch_size)
        self.output_labels = output_labels
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.offset = 0
        if rand_skip:
            skip = int(backend.rng().randint(0, rand_skip))
            for _ in range(skip):
                self.cursor.advance()

    def peek(self):
        """The current Datum, without moving (used at setup for the top shape)."""
        return parse_datum(self.cursor.value())

    def _next(self):
        if self.cursor.advance():
            log.info("Restarting data prefetching from start.", "data_layer.cpp")
        self.offset += 1

    def load(self, batch):
        datums = []
        for _ in range(self.batch_size):
            while skip_record(self.offset, self.phase):
                self._next()
            datums.append(parse_datum(self.cursor.value()))
            self._next()
        arrays = [self.transformer.datum_array(d) for d in datums]
        shape = self.transformer.infer_shape(arrays[0])
        shape[0] = self.batch_size
        batch.ensure(shape, self.dtype, self.output_labels)
        self.transformer.transform(arrays, out=batch.data)
        if self.output_labels:
            batch.label[...] = [d.label for d in datums]

    def close(self):
        self.cursor.close()
        self.db.close()


def read_image_list(source, allow_empty=False):
    """[(path, label)] of an image list ("path label" lines; the label follows the LAST space,
    so paths may hold spaces), as ImageData and convert_imageset read it."""
    lines = []
    try:
        with open(source, encoding="utf-8") as f:
            for number, raw in enumerate(f, 1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                name, _, label = line.rpartition(" ")
                try:
                    lines.append((name, int(label)))
                except ValueError:
                    raise DecafError("%s:%d: line %r must be 'path label'"
                                     % (source, number, line)) from None
    except UnicodeDecodeError as e:
        raise DecafError("image list %s is not UTF-8 text (byte %d)" % (source, e.start)) from None
    except FileNotFoundError:
        raise DecafError("cannot open image list %s" % source) from None
    except IsADirectoryError:
        raise DecafError("image list %s is a directory" % source) from None
    if not lines and not allow_empty:
        raise DecafError("image list %s is empty" % source)
    return lines


class ImageListSource:
    """Images named in a list file, read in order (shuffled at each pass when asked)."""

    def __init__(self, lines, transformer, batch_size, dtype, root_folder="", new_height=0,
                 new_width=0, is_color=True, shuffle=False, rand_skip=0):
        self.lines = list(lines)
        self.transformer = transformer
        self.batch_size = int(batch_size)
        self.dtype = np.dtype(dtype)
        self.root = root_folder
        self.size = (int(new_height), int(new_width))
        self.is_color = bool(is_color)
        self.shuffle = bool(shuffle)
        self.rng = np.random.RandomState(backend.rng().randint(0, 2 ** 32, dtype=np.uint64))
        if self.shuffle:
            self._shuffle()
        self.pos = 0
        if rand_skip:
            skip = int(backend.rng().randint(0, rand_skip))
            if skip >= len(self.lines):
                raise DecafError("Not enough points to skip: %d of %d" % (skip, len(self.lines)))
            self.pos = skip

    def _shuffle(self):
        order = self.rng.permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]

    def read(self, index):
        name = self.lines[index][0]
        return read_image(self.root + name, self.is_color, *self.size)

    def load(self, batch):
        images, labels = [], []
        for _ in range(self.batch_size):
            images.append(self.read(self.pos))
            labels.append(self.lines[self.pos][1])
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if self.shuffle:
                    self._shuffle()
        shape = self.transformer.infer_shape(images[0])
        shape[0] = self.batch_size
        batch.ensure(shape, self.dtype, True)
        self.transformer.transform(images, out=batch.data)
        batch.label[...] = labels

    def close(self):
        pass
