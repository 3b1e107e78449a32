"""pycaffe's ``caffe.io``: BlobProto / Datum <-> arrays, the Transformer, and image loading.

Images are read with Pillow (no scikit-image) and come out exactly as pycaffe gives them:
float32 in [0, 1], H x W x 3 RGB (or H x W x 1 for ``color=False``). ``resize_image`` is
scikit-image's ``transform.resize`` with linear interpolation (half-pixel centres, mirrored
edges, Gaussian anti-aliasing when shrinking), written in NumPy.
"""
import numpy as np

from .proto import caffe_pb2

# -- proto / datum / ndarray conversion -------------------------------------------------------


def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff) as a float64 array of its shape: the legacy
    num/channels/height/width when any is set, else ``shape.dim`` (no shape: a 0-d array,
    which only fits one value; ValueError otherwise)."""
    if return_diff:
        values = blob.diff if len(blob.diff) or not len(blob.double_diff) else blob.double_diff
    else:
        values = blob.data if len(blob.data) or not len(blob.double_data) else blob.double_data
    data = np.array(values, dtype=np.float64)
    if blob.HasField("num") or blob.HasField("channels") or \
            blob.HasField("height") or blob.HasField("width"):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """A BlobProto of ``arr``'s shape (``shape.dim``) and values (and ``diff``'s, when given)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str  # old pycaffe spelling


def blobprotovector_str_to_arraylist(str):  # noqa: A002  (pycaffe's argument name)
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a C x H x W array: uint8 -> ``data`` bytes, anything else -> float_data.
    The label is set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """A Datum's C x H x W array: uint8 for byte data, float64 for float_data (the label is
    ``datum.label``). Encoded datums (image files) are decoded, in OpenCV's BGR order."""
    if datum.encoded:
        from .data.datum import datum_to_array as decode
        return decode(datum)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(
            datum.channels, datum.height, datum.width).copy()
    return np.array(datum.float_data).astype(float).reshape(
        datum.channels, datum.height, datum.width)


# -- pre-processing ---------------------------------------------------------------------------


class Transformer:
    """Turns H x W x K images into a net's K x H x W inputs, per input blob.

    ``Transformer({'data': net.blobs['data'].data.shape})``; preprocess does, in order:
    float32, resize to the input's H x W, transpose, channel swap, ``*= raw_scale``,
    ``-= mean``, ``*= input_scale``. ``deprocess`` undoes them (except the resize).
    """

    def __init__(self, inputs):
        self.inputs = inputs
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise Exception("{} is not one of the net inputs: {}".format(in_, self.inputs))

    def preprocess(self, in_, data):
        """Format ``data`` (H' x W' x K) for input ``in_``: a K x H x W float32 array."""
        self.__check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = tuple(self.inputs[in_][2:])
        if tuple(caffe_in.shape[:2]) != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if (raw_scale is not None or mean is not None or input_scale is not None) and \
                isinstance(data, np.ndarray) and np.shares_memory(caffe_in, data):
            caffe_in = caffe_in.copy()  # never scale the caller's array in place
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Undo preprocess (but the resize) for ``data`` of input ``in_``."""
        self.__check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Order of the axes after transposing (e.g. (2, 0, 1): H x W x K -> K x H x W)."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception("Transpose order needs to have the same number of "
                            "dimensions as the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Channel order after the transpose ((2, 1, 0): RGB -> BGR)."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception("Channel swap needs to have the same number of "
                            "dimensions as the input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Scale of the raw input (255 for models trained on [0, 255] images), before the mean."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: K values (per channel) or a K x H' x W' (or H' x W') array.

        A mean image of another size (e.g. ImageNet's 3 x 256 x 256 for a 227 x 227 crop) is
        resized to the input's H x W as BVLC's pycaffe does: m' = resize((m - min) / (max -
        min)) * (max - min) + min, with ``resize_image``; a constant mean is simply broadcast."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            in_shape = tuple(self.inputs[in_][1:])
            if tuple(ms) != in_shape:
                if ms[0] != in_shape[0]:
                    raise ValueError("Mean channels incompatible with input: mean shape %s, "
                                     "input %s." % (tuple(mean.shape), in_shape))
                mean = _resize_mean(mean.reshape(ms), in_shape[1:])
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Scale applied last, after the mean subtraction."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


def _resize_mean(mean, hw):
    """A K x H' x W' mean resized to K x H x W (pycaffe's set_mean: through [0, 1])."""
    m_min, m_max = mean.min(), mean.max()
    if not m_max > m_min:  # constant: nothing to interpolate (pycaffe would divide by zero)
        return np.full((mean.shape[0],) + tuple(hw), m_min, dtype=mean.dtype)
    normal = (mean - m_min) / (m_max - m_min)
    return resize_image(normal.transpose((1, 2, 0)), hw).transpose((2, 0, 1)) * \
        (m_max - m_min) + m_min


# -- image IO ---------------------------------------------------------------------------------

_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # scikit-image's rgb2gray


def image_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer Classifier and Detector use: HxWxK images into the net's first input."""
    in_ = net.inputs[0]
    t = Transformer({in_: net.blobs[in_].data.shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


def _as_float(arr):
    """scikit-image's img_as_float: integers scaled to [0, 1] by their type's maximum."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / np.iinfo(arr.dtype).max
    return arr


def _read_pixels(filename):
    """The pixels of an image file as scikit-image reads them (uint8/uint16/bool/float;
    H x W, H x W x 3 or H x W x 4), first frame only."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        raise ImportError("caffe.io.load_image needs Pillow: pip install pillow") from None
    with Image.open(filename) as img:
        img.seek(0)
        mode = img.mode
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode in ("LA", "La"):
            img = img.convert("L")
        elif mode in ("PA", "RGBa"):
            img = img.convert("RGBA")
        elif mode not in ("1", "L", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
            img = img.convert("RGB")
        arr = np.array(img)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def load_image(filename, color=True):
    """Load an image as float32 in [0, 1]: H x W x 3 RGB, or H x W x 1 with ``color=False``
    (colour converted with scikit-image's luminance weights; alpha dropped, or blended on white
    for gray, as scikit-image does)."""
    img = _read_pixels(filename)
    if not color and img.ndim == 3:
        img = _as_float(img)
        if img.shape[2] == 4:
            alpha = img[:, :, 3:]
            img = np.clip((1 - alpha) + alpha * img[:, :, :3], 0, 1)
        img = img[:, :, :3] @ _GRAY_WEIGHTS
    img = np.asarray(_as_float(img), dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def _mirror_index(idx, n):
    """Indices reflected into [0, n) about the end samples (scipy.ndimage's 'mirror')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _gaussian_axis(im, sigma, axis):
    """scipy.ndimage.gaussian_filter1d (truncate 4, mode 'mirror') along ``axis``."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    weights /= weights.sum()
    n = im.shape[axis]
    src = _mirror_index(np.arange(-radius, n + radius), n)
    padded = np.take(im, src, axis=axis)
    out = np.zeros_like(im, dtype=np.float64)
    for k, w in enumerate(weights):
        sl = [slice(None)] * im.ndim
        sl[axis] = slice(k, k + n)
        out += w * padded[tuple(sl)]
    return out


def _linear_axis(im, coords, axis, mirror):
    """Linear interpolation of ``im`` along ``axis`` at float ``coords``."""
    n = im.shape[axis]
    if mirror:
        coords = np.abs(coords)
        if n > 1:
            coords = np.where(coords > n - 1, 2 * (n - 1) - coords, coords)
    coords = np.clip(coords, 0, n - 1)
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = coords - lo
    shape = [1] * im.ndim
    shape[axis] = -1
    t = t.reshape(shape)
    return np.take(im, lo, axis=axis) * (1 - t) + np.take(im, hi, axis=axis) * t


def _skimage_resize_linear(im, out_hw):
    """scikit-image's ``transform.resize(im, out_hw, order=1)`` (mode 'reflect', clip,
    anti-aliasing when shrinking) for an H x W x K float image."""
    im = np.asarray(im, dtype=np.float64)
    lo_val, hi_val = im.min(), im.max()
    out = im
    for axis, n_out in enumerate(out_hw):
        factor = im.shape[axis] / n_out
        if factor > 1:
            out = _gaussian_axis(out, (factor - 1) / 2, axis)
    for axis, n_out in enumerate(out_hw):
        factor = im.shape[axis] / n_out
        coords = (np.arange(n_out) + 0.5) * factor - 0.5
        out = _linear_axis(out, coords, axis, mirror=True)
    return np.clip(out, lo_val, hi_val)


def _zoom_linear(im, out_hw):
    """scipy.ndimage.zoom(im, (sh, sw, 1), order=1) (corner-aligned grid)."""
    out = np.asarray(im, dtype=np.float64)
    for axis, n_out in enumerate(out_hw):
        n_in = im.shape[axis]
        step = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
        out = _linear_axis(out, np.arange(n_out) * step, axis, mirror=False)
    return out


def _scipy_resize(im, new_dims, order, one_or_three):
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover
        raise ImportError("resize_image with interp_order=%d needs scipy" % order) from None
    im = np.asarray(im, dtype=np.float64)
    if not one_or_three:
        scale = tuple(np.array(new_dims) / np.array(im.shape[:2]))
        return ndimage.zoom(im, scale + (1,), order=order)
    factors = np.array(im.shape, float) / np.array(tuple(new_dims) + im.shape[2:], float)
    if order > 0 and np.any(factors > 1):
        im_f = ndimage.gaussian_filter(im, np.maximum(0, (factors - 1) / 2), mode="mirror")
    else:
        im_f = im
    out = ndimage.zoom(im_f, 1 / factors, order=order, mode="mirror", grid_mode=True)
    return np.clip(out, im.min(), im.max()) if order > 0 else out


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K image to ``new_dims`` = (height, width), keeping K.

    For K = 1 or 3 this is scikit-image's ``resize`` (what pycaffe uses), for other K
    scipy.ndimage's ``zoom``; ``interp_order`` 1 (linear, the default) needs neither
    library. Returns float32."""
    im = np.asarray(im)
    new_dims = tuple(int(d) for d in new_dims)
    one_or_three = im.shape[-1] in (1, 3)
    if one_or_three:
        im_min, im_max = im.min(), im.max()
        if not im_max > im_min:  # a constant image
            ret = np.empty((new_dims[0], new_dims[1], im.shape[-1]), dtype=np.float32)
            ret.fill(im_min)
            return ret
        im_std = (im.astype(np.float64) - im_min) / (im_max - im_min)
        if interp_order == 1:
            resized = _skimage_resize_linear(im_std, new_dims)
        else:
            resized = _scipy_resize(im_std, new_dims, interp_order, True)
        resized = resized * (im_max - im_min) + im_min
    elif interp_order == 1:
        out_hw = tuple(int(round(i * (o / i))) for i, o in zip(im.shape[:2], new_dims))
        resized = _zoom_linear(im, out_hw)
    else:
        resized = _scipy_resize(im, new_dims, interp_order, False)
    return resized.astype(np.float32)


def oversample(images, crop_dims):
    """The 4 corner crops, the centre crop and their mirror images of every image.

    images: iterable of H x W x K arrays (same shape); crop_dims: (height, width).
    Returns a (10 N) x h x w x K float32 array: per image the 5 crops then the 5 mirrored."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    boxes = np.empty((5, 4), dtype=int)
    k = 0
    for i in (0, im_shape[0] - crop_dims[0]):
        for j in (0, im_shape[1] - crop_dims[1]):
            boxes[k] = (i, j, i + crop_dims[0], j + crop_dims[1])
            k += 1
    boxes[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    boxes = np.tile(boxes, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]),
                     dtype=np.float32)
    ix = 0
    for im in images:
        for b in boxes:
            crops[ix] = im[b[0]:b[2], b[1]:b[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]
    return crops
