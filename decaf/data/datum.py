"""Datum (one record of a Caffe database) <-> arrays, and images as Caffe/OpenCV see them.

A raw Datum holds ``channels x height x width`` pixels channel-major in ``data`` (uint8 bytes) or
``float_data``. An encoded Datum (``encoded: true``) holds an image file (JPEG, PNG, ...) in
``data``; decoding gives C x H x W uint8 in OpenCV's channel order: BGR for colour (BGRA with
alpha, when decoded "unchanged"), one channel for gray. Images are read with Pillow.
"""
import io

import numpy as np

from .. import memory
from ..errors import DecafError


class ImageError(DecafError):
    """An image that cannot be read, decoded or encoded."""


def _pb():
    from ..proto import caffe_pb2
    return caffe_pb2


# -- Datum <-> array -------------------------------------------------------------------------

def array_to_datum(arr, label=None):
    """A raw Datum from a C x H x W array: uint8 -> ``data`` bytes, other dtypes -> float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DecafError("array_to_datum needs a 3-D (channels x height x width) array, got "
                         "shape %s" % (arr.shape,))
    datum = _pb().Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, dtype=np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum, dtype=None):
    """The C x H x W array of a Datum: uint8 for byte data (also for encoded images, decoded
    natively), float32 for float_data (pass dtype=float for pycaffe's float64)."""
    if min(datum.channels, datum.height, datum.width) < 0:
        raise DecafError("Datum has a negative size: channels %d x height %d x width %d"
                         % (datum.channels, datum.height, datum.width))
    if datum.encoded:
        arr = decode_datum(datum)
    elif len(datum.data):
        arr = np.frombuffer(datum.data, dtype=np.uint8)
        expect = datum.channels * datum.height * datum.width
        if arr.size != expect:
            raise DecafError("Datum holds %d data bytes for channels %d x height %d x width %d"
                             % (arr.size, datum.channels, datum.height, datum.width))
        arr = arr.reshape(datum.channels, datum.height, datum.width)
    else:
        arr = np.asarray(datum.float_data, dtype=np.float32)
        expect = datum.channels * datum.height * datum.width
        if arr.size != expect:
            raise DecafError("Datum holds %d float_data values for channels %d x height %d x "
                             "width %d" % (arr.size, datum.channels, datum.height, datum.width))
        arr = arr.reshape(datum.channels, datum.height, datum.width)
    return arr if dtype is None else arr.astype(dtype)


def parse_datum(value):
    """A Datum from its serialized bytes, with a clear error for anything else."""
    datum = _pb().Datum()
    try:
        datum.ParseFromString(value)
    except Exception as e:
        raise DecafError("database record is not a serialized Datum: %s" % e) from None
    return datum


# -- images ----------------------------------------------------------------------------------

def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        raise ImageError("reading images needs Pillow: pip install pillow") from None
    return Image


def _pil_to_array(img, color, source):
    """HWC (or HW) uint8 array in OpenCV's channel order.

    color: True -> 3-channel BGR, False -> 1-channel gray, None -> unchanged (gray stays 1
    channel, colour is BGR, alpha kept as BGRA)."""
    if color is None:
        mode = img.mode
        if mode in ("1", "L"):
            img = img.convert("L")
        elif mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
        elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise ImageError("%s: %s images are not 8-bit; Caffe needs unsigned bytes"
                             % (source, mode))
        else:
            img = img.convert("RGB")
    elif color:
        img = img.convert("RGB")
    else:
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 3:  # RGB -> BGR, RGBA -> BGRA
        arr = arr[:, :, [2, 1, 0, 3]] if arr.shape[2] == 4 else arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _open_image(fileobj, source, color):
    Image = _pil()
    try:
        img = Image.open(fileobj)
        width, height = img.size
        # checked before decoding: a corrupt header may declare any size
        memory.check(int(width) * int(height) * 4, "decoding image %s (%d x %d)"
                     % (source, width, height))
        if color is False and img.format == "JPEG":
            img.draft("L", img.size)  # libjpeg's own gray output, as OpenCV's IMREAD_GRAYSCALE
        img.load()
    except DecafError:
        raise
    except Exception as e:  # noqa: BLE001 (whatever Pillow's decoders raise on corrupt bytes)
        raise ImageError("could not decode image %s: %s: %s"
                         % (source, type(e).__name__, e)) from None
    return img


def decode_image(data, color=None, source="<bytes>"):
    """Decode encoded image bytes to a C x H x W uint8 array (BGR order for colour)."""
    img = _open_image(io.BytesIO(bytes(data)), source, color)
    return hwc_to_chw(_pil_to_array(img, color, source))


def read_image(path, color=True, new_height=0, new_width=0):
    """Caffe's ReadImageToCVMat: C x H x W uint8 (BGR for colour, 1 channel for gray), resized
    with bilinear interpolation (OpenCV's INTER_LINEAR geometry) when both sizes are given."""
    if "\x00" in str(path):
        raise ImageError("Could not open or find file %r (a NUL byte in the name)" % (path,))
    try:
        with open(path, "rb") as f:
            img = _open_image(f, path, bool(color))
    except FileNotFoundError:
        raise ImageError("Could not open or find file %s" % path) from None
    except OSError as e:
        raise ImageError("Could not read file %s: %s" % (path, e.strerror or e)) from None
    arr = _pil_to_array(img, bool(color), path)
    if new_height > 0 and new_width > 0:
        arr = resize_bilinear(arr, new_height, new_width)
    return hwc_to_chw(arr)


def decode_datum(datum, color=None):
    """The C x H x W uint8 image of an encoded Datum (color None: native channels, as
    DecodeDatumToCVMatNative; True/False: DecodeDatumToCVMat(is_color))."""
    if not datum.encoded:
        raise DecafError("decode_datum: the Datum is not encoded")
    return decode_image(datum.data, color, source="<encoded Datum>")


def encode_image(chw, ext="png"):
    """Encode a C x H x W uint8 array in OpenCV order (BGR / gray) as an image file's bytes."""
    Image = _pil()
    hwc = chw_to_hwc(np.asarray(chw, dtype=np.uint8))
    if hwc.ndim == 3 and hwc.shape[2] == 1:
        hwc = hwc[:, :, 0]
    if hwc.ndim == 3:
        order = [2, 1, 0, 3][:hwc.shape[2]] if hwc.shape[2] == 4 else [2, 1, 0]
        hwc = np.ascontiguousarray(hwc[:, :, order])
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF",
           "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "pbm": "PPM", "webp": "WEBP"}.get(
        ext.lower().lstrip("."))
    if fmt is None:
        raise ImageError("cannot encode images as %r" % ext)
    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}  # OpenCV's default JPEG quality
    Image.fromarray(hwc).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def hwc_to_chw(arr):
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def chw_to_hwc(arr):
    return arr.transpose(1, 2, 0)


def _linear_taps(src, dst):
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis (half-pixel
    centres; taps clamped at the borders)."""
    scale = src / float(dst)
    pos = (np.arange(dst) + 0.5) * scale - 0.5
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    frac[i0 < 0] = 0.0
    i0 = np.clip(i0, 0, src - 1)
    over = i0 >= src - 1
    frac[over] = 0.0
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, frac


def resize_bilinear(hwc, new_height, new_width):
    """Resize an H x W (x C) uint8 image to new_height x new_width, bilinear like OpenCV's
    cv::resize INTER_LINEAR (no antialiasing), rounded to uint8."""
    h, w = hwc.shape[:2]
    if (h, w) == (new_height, new_width):
        return hwc.copy()
    y0, y1, fy = _linear_taps(h, new_height)
    x0, x1, fx = _linear_taps(w, new_width)
    img = hwc.astype(np.float32)
    shape_x = (1, -1) + (1,) * (img.ndim - 2)
    shape_y = (-1, 1) + (1,) * (img.ndim - 2)
    fx = fx.astype(np.float32).reshape(shape_x)
    fy = fy.astype(np.float32).reshape(shape_y)
    rows0, rows1 = img[y0], img[y1]
    top = rows0[:, x0] * (1 - fx) + rows0[:, x1] * fx
    bot = rows1[:, x0] * (1 - fx) + rows1[:, x1] * fx
    out = top * (1 - fy) + bot * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
