"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling of input images.

For every image (channels x H x W) and output pixel (c, h, w):

    top[c, h, w'] = (x[c, h_off + h, w_off + w] - mean) * scale,   w' = cw - 1 - w if mirrored

where ``mean`` is ``mean_file[c, h_off + h, w_off + w]`` (the mean image is indexed with the
uncropped coordinates), ``mean_value[c]`` (one value, or one per channel) or 0. ``crop_size``
crops a square: at a random offset in TRAIN, centred ((H - crop) / 2, floored) in TEST.
``mirror`` flips at random, one coin per image, in either phase (Caffe's code does this even
though the proto comment says TRAIN). All arithmetic is in the output dtype, in this order.

Randomness: each transformer owns a RandomState seeded from ``decaf.backend.rng()`` when it is
created (Caffe's InitRand seeds the transformer's RNG from the global one), so a prefetch thread
draws from its own stream and runs repeat under ``set_random_seed``.
"""
import numpy as np

from .. import backend
from ..errors import DecafError
from .datum import datum_to_array, decode_datum

TRAIN, TEST = 0, 1  # caffe_pb2.Phase values


class TransformError(DecafError):
    """Transformation parameters that do not fit the data."""


def load_mean_file(path):
    """The array of a mean ``.binaryproto`` (BlobProto, legacy num/channels/height/width or
    shape-style), in its stored shape (1 x C x H x W for Caffe's tools)."""
    from ..blob import blob_to_array
    from ..proto import caffe_pb2
    from ..proto.io import read_binary
    try:
        proto = read_binary(path, caffe_pb2.BlobProto)
    except DecafError as e:
        raise TransformError("cannot load mean_file %s: %s" % (path, e)) from None
    try:
        return blob_to_array(proto)
    except ValueError:
        raise TransformError("mean_file %s: its data does not fill its shape" % path) from None


def _mean_image(arr, path):
    """C x H x W mean image as Caffe's DataTransformer uses it (legacy 4-D accessors)."""
    if arr.ndim > 4:
        raise TransformError("mean_file %s has %d axes; at most 4 are allowed" % (path, arr.ndim))
    if arr.ndim == 3:  # accept a bare C x H x W blob as 1 x C x H x W
        arr = arr[None]
    shape = tuple(arr.shape) + (1,) * (4 - arr.ndim)
    c, h, w = shape[1], shape[2], shape[3]
    return np.ascontiguousarray(arr.reshape(-1)[:c * h * w].reshape(c, h, w))


def _windows(x, h_off, w_off, oh, ow, mirror):
    """The oh x ow window at (h_off[i], w_off[i]) of every image x[i] (N x C x H x W), flipped
    left-right where mirror[i]: one gather over a sliding-window view, no per-pixel loop."""
    n = x.shape[0]
    view = np.lib.stride_tricks.sliding_window_view(x, (oh, ow), axis=(2, 3))
    out = view[np.arange(n), :, h_off, w_off]          # N x C x oh x ow (a copy)
    if mirror.any():
        out[mirror] = out[mirror][..., ::-1]
    return out


class DataTransformer:
    """Transforms images (Datum, C x H x W arrays, or N x C x H x W batches) into float blobs."""

    def __init__(self, param=None, phase=TRAIN, dtype=np.float32):
        if param is None:
            from ..proto import caffe_pb2
            param = caffe_pb2.TransformationParameter()
        self.param = param
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.scale = float(param.scale)
        self.crop_size = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.mean = None
        self.mean_values = np.asarray(param.mean_value, dtype=self.dtype)
        if param.HasField("mean_file"):
            if len(param.mean_value):
                raise TransformError("Cannot specify mean_file and mean_value at the same time")
            self.mean = _mean_image(load_mean_file(param.mean_file), param.mean_file).astype(
                self.dtype)
        self._rng = None
        self.init_rand()

    def init_rand(self):
        """A private RandomState, seeded from decaf.backend.rng(), when anything is random."""
        needs_rand = self.mirror or (self.phase == TRAIN and self.crop_size > 0)
        self._rng = (np.random.RandomState(backend.rng().randint(0, 2 ** 32, dtype=np.uint64))
                     if needs_rand else None)

    # -- decoding -----------------------------------------------------------------------------
    def decode_color(self):
        """Decoding mode of encoded data: True (force_color), False (force_gray) or None."""
        if self.param.force_color and self.param.force_gray:
            raise TransformError("cannot set both force_color and force_gray")
        if self.param.force_color:
            return True
        return False if self.param.force_gray else None

    def datum_array(self, datum):
        """C x H x W array of a Datum (encoded ones decoded as force_color/force_gray say)."""
        if datum.encoded:
            return decode_datum(datum, self.decode_color())
        return datum_to_array(datum)

    # -- shapes -------------------------------------------------------------------------------
    def infer_shape(self, item):
        """[1, C, h, w] of the transformed Datum / C x H x W array (InferBlobShape)."""
        if not isinstance(item, np.ndarray):
            item = self.datum_array(item)
        c, h, w = self._chw(item.shape)
        if c <= 0:
            raise TransformError("the data has no channels")
        self._check_crop(h, w)
        crop = self.crop_size
        return [1, c, crop or h, crop or w]

    @staticmethod
    def _chw(shape):
        if len(shape) != 3:
            raise TransformError("an image must be channels x height x width, got shape %s"
                                 % (shape,))
        return shape

    def _check_crop(self, h, w):
        if h < self.crop_size or w < self.crop_size:
            raise TransformError("crop_size %d is larger than the %dx%d image"
                                 % (self.crop_size, h, w))

    def _check_mean(self, c, h, w):
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise TransformError("mean_file %s is %s (channels x height x width) but the data is "
                                 "%dx%dx%d" % (self.param.mean_file,
                                               "x".join(map(str, self.mean.shape)), c, h, w))
        nmv = self.mean_values.size
        if nmv and nmv != 1 and nmv != c:
            raise TransformError("Specify either 1 mean_value or as many as channels: %d "
                                 "(%d given)" % (c, nmv))

    # -- transforms ---------------------------------------------------------------------------
    def transform_datums(self, datums, out=None):
        """Transform a list of Datum into an N x C x h x w array (one random draw per item)."""
        if not len(datums):
            raise TransformError("There is no datum to add")
        return self.transform([self.datum_array(d) for d in datums], out)

    def transform(self, images, out=None):
        """Transform images (N x C x H x W array, or a list of C x H x W arrays, all with the
        same channels) into ``out`` (N x C x h x w, allocated when None) and return it.
        Each image gets its own crop offset and mirror coin, as Caffe's per-Datum Transform."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            groups = {images.shape[1:]: (np.arange(images.shape[0]), images)}
            sizes = [images.shape[1:]] * images.shape[0]
        else:
            sizes = [self._chw(np.shape(im)) for im in images]
            groups = {}
            for i, s in enumerate(sizes):
                groups.setdefault(tuple(s), []).append(i)
            groups = {s: (np.asarray(idx), np.stack([images[i] for i in idx]) if len(idx) > 1
                          else np.asarray(images[idx[0]])[None]) for s, idx in groups.items()}
        n = len(sizes)
        if n == 0:
            raise TransformError("There is no image to transform")
        channels = {s[0] for s in sizes}
        if len(channels) != 1:
            raise TransformError("images with different channel counts in one batch: %s"
                                 % sorted(channels))
        if not self.crop_size and len(groups) > 1:
            raise TransformError("images of different sizes in one batch (%s) need crop_size"
                                 % ", ".join("x".join(map(str, s)) for s in groups))
        c = sizes[0][0]
        oh, ow = self.infer_shape(np.empty((c,) + tuple(sizes[0][1:]), np.uint8))[2:]
        if out is None:
            out = np.empty((n, c, oh, ow), dtype=self.dtype)
        elif out.shape != (n, c, oh, ow):
            raise TransformError("transform output is %s, expected %s" % (out.shape, (n, c, oh, ow)))
        mirror, h_off, w_off = self._draw(np.asarray([s[1] for s in sizes]),
                                          np.asarray([s[2] for s in sizes]))
        for (cc, h, w), (idx, x) in groups.items():
            self._check_mean(cc, h, w)
            self._check_crop(h, w)
            if len(groups) == 1:
                self._apply(x, mirror, h_off, w_off, out)
            else:
                out[idx] = self._apply(x, mirror[idx], h_off[idx], w_off[idx],
                                       np.empty((len(idx), c, oh, ow), self.dtype))
        return out

    def _draw(self, heights, widths):
        """Per-image mirror flags and crop offsets (mirror coin first, then h_off, w_off)."""
        n = heights.size
        mirror = np.zeros(n, bool)
        if self.mirror:
            mirror = self._rng.randint(0, 2, size=n).astype(bool)
        crop = self.crop_size
        if not crop:
            return mirror, np.zeros(n, np.int64), np.zeros(n, np.int64)
        if self.phase == TRAIN:
            h_off = self._rng.randint(0, heights - crop + 1)
            w_off = self._rng.randint(0, widths - crop + 1)
        else:
            h_off, w_off = (heights - crop) // 2, (widths - crop) // 2
        return mirror, np.asarray(h_off, np.int64).reshape(n), np.asarray(w_off, np.int64).reshape(n)

    def _apply(self, x, mirror, h_off, w_off, out):
        """out = (crop/mirror(x) - mean) * scale for a batch x of one size."""
        n, c, h, w = x.shape
        oh, ow = out.shape[2:]
        mean = self.mean
        if self.crop_size or mirror.any():
            x = _windows(x, h_off, w_off, oh, ow, mirror)
            if mean is not None:
                mean = _windows(np.broadcast_to(mean, (n, c, h, w)), h_off, w_off, oh, ow, mirror)
        scale = self.dtype.type(self.scale)
        if mean is not None:
            np.subtract(x, mean, out=out, casting="unsafe")
            np.multiply(out, scale, out=out)
        elif self.mean_values.size:
            mv = np.broadcast_to(self.mean_values, (c,)).reshape(1, c, 1, 1)
            np.subtract(x, mv, out=out, casting="unsafe")
            np.multiply(out, scale, out=out)
        else:
            np.multiply(x, scale, out=out, casting="unsafe")
        return out

    def transform_batch(self, x, out=None):
        """Caffe's Transform(Blob*, Blob*): an N x C x H x W batch with ONE crop offset and
        one mirror coin for the whole batch; mean subtracted, then scaled."""
        x = np.asarray(x)
        if x.ndim != 4:
            raise TransformError("transform_batch needs an N x C x H x W array, got %s"
                                 % (x.shape,))
        n, c, h, w = x.shape
        self._check_mean(c, h, w)
        self._check_crop(h, w)
        mirror, h_off, w_off = self._draw(np.array([h]), np.array([w]))
        oh, ow = (self.crop_size, self.crop_size) if self.crop_size else (h, w)
        if out is None:
            out = np.empty((n, c, oh, ow), dtype=self.dtype)
        return self._apply(x, np.repeat(mirror, n), np.repeat(h_off, n), np.repeat(w_off, n),
                           out)
