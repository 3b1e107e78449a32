"""WindowData: Caffe's R-CNN window sampler (window_data_layer.cpp; deprecated in Caffe, kept for
the original R-CNN).

The window file (``window_data_param.source``) is a stream of whitespace-separated tokens:
repeated blocks ``# image_index  path  channels  height  width  num_windows`` followed by
num_windows times ``class_index overlap x1 y1 x2 y2`` (inclusive pixel corners). Image paths get
``root_folder`` prepended; image indices must count 0, 1, 2, ... (Caffe looks images up by them).
A window with overlap >= fg_threshold is foreground (its class_index, which must be > 0); one
with overlap < bg_threshold is background (label 0); others are dropped. Overlaps and thresholds
are compared in float32, as Caffe does.

Each batch (batch_size windows, channels x crop_size x crop_size; top[1] = labels) holds first
``batch_size - int(float32(batch_size) * fg_fraction)`` background windows, then the foreground
ones (Caffe's order: background first), each drawn uniformly with replacement, followed by one
mirror coin when mirror is set, in TRAIN and TEST alike (Caffe's WindowData samples and mirrors
at random in both phases). Each window is cropped from the image (read in colour, BGR) as Caffe
does: with context_pad > 0 or crop_mode "square", the box (made square around its centre in
"square" mode) is scaled by crop_size / (crop_size - 2 context_pad) about its centre, rounded
(half away from zero), clipped to the image, and the clipped part is warped to the size it
would have in the crop_size warp of the whole box, at the offset of the cut-off part (the right
one when mirrored); otherwise the box itself is warped to crop_size x crop_size. The warp is
bilinear with OpenCV's INTER_LINEAR geometry (OpenCV's 8-bit fixed-point arithmetic can differ
by one grey level). The warped pixels (flipped when mirrored) become (pixel - mean) * scale; the
rest of the slot stays 0. The mean is the mean_file image at rows and columns
``(mean_width - crop_size) / 2 + slot position`` (Caffe centres with the width for both axes) or
mean_value per channel. Geometry is computed in the top's dtype, as Caffe's Dtype.

Parameters, as Caffe master reads them: crop_size, mirror, mean_file and mean_value come from
transform_param; scale, batch_size, context_pad, crop_mode, fg/bg thresholds, fg_fraction,
cache_images and root_folder from window_data_param (transform_param.scale is ignored). Like
decaf's Data and ImageData, the deprecated window_data_param crop_size / mirror / mean_file are
used when transform_param lacks them (Caffe moves them only when upgrading a V1 net).

Randomness: a private RandomState seeded from decaf.backend.rng() at setup (Caffe's
prefetch_rng_); ``WindowSource.draw`` makes every draw. cache_images keeps the decoded images.
Malformed window files, missing images and windows that do not fit their image raise DecafError
naming the file and line, where Caffe aborts or crashes.
"""
import math
import os
import re

import numpy as np

from .. import backend, glog as log
from ..data.datum import read_image, resize_bilinear
from ..errors import DecafError, LayerSetupError
from ..layer import register_layer
from .data import BasePrefetchingDataLayer

LOG_FILE = "window_data_layer.cpp"
_TOKEN = re.compile(rb"[^ \t\n\v\f\r]+")  # C++ operator>> separators
_INT = re.compile(rb"[+-]?[0-9]+\Z")
_FLOAT = rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"  # unambiguous
_I = rb"[+-]?[0-9]+"
_WINDOWS = re.compile(rb"(?:%s %s %s %s %s %s )*\Z" % (_I, _FLOAT, _I, _I, _I, _I))
_WINDOW_FIELDS = ((_INT, "a class index (integer)"), (re.compile(_FLOAT + rb"\Z"),
                  "an overlap (number)")) + tuple((_INT, "%s (integer)" % n)
                                                   for n in ("x1", "y1", "x2", "y2"))


class WindowFileError(DecafError):
    """A window file that does not parse: names the file and line."""

    def __init__(self, path, line, message):
        super().__init__("window file %s:%d: %s" % (path, line, message))


def token_line(path, index):
    """The 1-based line of token ``index`` of a window file (error messages only)."""
    with open(path, "rb") as f:
        data = f.read()
    for k, m in enumerate(_TOKEN.finditer(data)):
        if k == index:
            return data.count(b"\n", 0, m.start()) + 1
    return data.count(b"\n") + 1


class WindowSet:
    """Windows of one kind: ``rows`` (n x 6 int64: image, label, x1, y1, x2, y2) and ``token``
    (the window-file token index of each, for error messages)."""

    def __init__(self, rows, token):
        self.rows, self.token = rows, token

    def __len__(self):
        return len(self.rows)


class _Tokens:
    def __init__(self, path, tokens):
        self.path, self.tokens, self.pos = path, tokens, 0

    def fail(self, index, message):
        raise WindowFileError(self.path, token_line(self.path, index), message)

    def take(self, what, pattern=_INT):
        if self.pos >= len(self.tokens):
            self.fail(len(self.tokens) - 1, "the file ends where %s was expected" % what)
        tok = self.tokens[self.pos]
        self.pos += 1
        if pattern is None:
            return os.fsdecode(tok)
        if not pattern.match(tok):
            self.fail(self.pos - 1, "expected %s, got %r" % (what, os.fsdecode(tok)))
        return int(tok)

    def windows(self, n, image):
        """The n x 6 token block of ``image``'s windows, checked: (ints n x 5, overlaps n)."""
        block = self.tokens[self.pos:self.pos + 6 * n]
        start = self.pos
        if len(block) < 6 * n:
            self.fail(len(self.tokens) - 1, "the file ends inside the windows of image %d "
                      "(%d windows announced, %d values left)" % (image, n, len(block)))
        self.pos += 6 * n
        text = b" ".join(block) + b" " if n else b""
        if not _WINDOWS.match(text):
            for k, tok in enumerate(block):
                pattern, what = _WINDOW_FIELDS[k % 6]
                if not pattern.match(tok):
                    self.fail(start + k, "window %d of image %d: expected %s, got %r"
                              % (k // 6, image, what, os.fsdecode(tok)))
        cells = np.fromstring(text, sep=" ").reshape(n, 6)  # checked above: plain numbers
        return cells[:, [0, 2, 3, 4, 5]].astype(np.int64), cells[:, 1].astype(np.float32)


def parse_window_file(path, fg_threshold, bg_threshold, root_folder=""):
    """(images [(path, channels, height, width)], fg WindowSet, bg WindowSet) of a window file."""
    try:
        with open(path, "rb") as f:
            tokens = f.read().split()  # bytes.split(): ASCII whitespace, as operator>>
    except OSError as e:
        raise DecafError("Failed to open window file %s: %s" % (path, e.strerror)) from None
    if not tokens:
        raise DecafError("Window file %s is empty" % path)
    r = _Tokens(path, tokens)
    fg_t, bg_t = np.float32(fg_threshold), np.float32(bg_threshold)
    images, parts = [], {True: [], False: []}
    while r.pos < len(tokens):
        if tokens[r.pos] != b"#":
            r.fail(r.pos, "expected '#' to start an image block, got %r"
                   % os.fsdecode(tokens[r.pos]))
        r.pos += 1
        index = r.take("an image index (integer)")
        if index != len(images):
            r.fail(r.pos - 1, "image index %d should be %d: Caffe looks images up by their "
                   "index, so blocks must be numbered 0, 1, 2, ..." % (index, len(images)))
        image_path = root_folder + r.take("an image path", None)
        size = [r.take("the image %s (integer)" % n) for n in ("channels", "height", "width")]
        n = r.take("the number of windows (integer)")
        if n < 0:
            r.fail(r.pos - 1, "the number of windows is negative: %d" % n)
        first = r.pos
        ints, overlap = r.windows(n, index)
        images.append((image_path,) + tuple(size))
        rows = np.column_stack([np.full(n, index, np.int64), ints])
        is_fg = overlap >= fg_t
        bad = np.flatnonzero(is_fg & (ints[:, 0] <= 0))
        if bad.size:
            k = int(bad[0])
            r.fail(first + 6 * k, "a foreground window (overlap %g >= fg_threshold %g) needs a "
                   "class index > 0, got %d" % (overlap[k], fg_t, ints[k, 0]))
        is_bg = ~is_fg & (overlap < bg_t)
        rows[is_bg, 1] = 0
        token = first + 6 * np.arange(n)
        for kind, mask in ((True, is_fg), (False, is_bg)):
            parts[kind].append((rows[mask], token[mask]))
        if index % 100 == 0:
            log.info("num: %d %s %d %d %d windows to process: %d"
                     % ((index, image_path) + tuple(size) + (n,)), LOG_FILE)
    sets = [WindowSet(np.concatenate([p[0] for p in parts[k]]),
                      np.concatenate([p[1] for p in parts[k]])) for k in (True, False)]
    return images, sets[0], sets[1]


def _round(v):
    """C's round(): half away from zero, as an int."""
    a = abs(float(v))
    r = math.floor(a)
    r += a - r >= 0.5
    return int(r) if v >= 0 else -int(r)


def crop_geometry(box, img_h, img_w, crop, context_pad, square, mirror, dtype=np.float32):
    """Caffe's crop of one window: ((x1, y1, x2, y2) clipped box, (out_h, out_w) warp size,
    (pad_h, pad_w) offset in the crop x crop slot), computed in ``dtype`` like Caffe's Dtype."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if not (context_pad > 0 or square):
        return (x1, y1, x2, y2), (crop, crop), (0, 0)
    t = np.dtype(dtype).type
    context_scale = t(crop) / t(crop - 2 * context_pad)
    half_h, half_w = t((y2 - y1 + 1) / 2.0), t((x2 - x1 + 1) / 2.0)
    center_x, center_y = t(x1) + half_w, t(y1) + half_h
    if square:
        half_h = half_w = max(half_h, half_w)
    x1 = _round(center_x - half_w * context_scale)
    x2 = _round(center_x + half_w * context_scale)
    y1 = _round(center_y - half_h * context_scale)
    y2 = _round(center_y + half_h * context_scale)
    unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - img_w + 1), max(0, y2 - img_h + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    scale_x, scale_y = t(crop) / t(unclipped_w), t(crop) / t(unclipped_h)
    out_w = _round(t(x2 - x1 + 1) * scale_x)
    out_h = _round(t(y2 - y1 + 1) * scale_y)
    pad_h = _round(t(pad_y1) * scale_y)
    pad_w = _round(t(pad_x2 if mirror else pad_x1) * scale_x)
    out_h = min(out_h, crop - pad_h)  # rounding may overflow the slot
    out_w = min(out_w, crop - pad_w)
    return (x1, y1, x2, y2), (out_h, out_w), (pad_h, pad_w)


class WindowSource:
    """Draws, crops and warps windows into batches (runs on the prefetch thread)."""

    def __init__(self, images, fg, bg, cfg, where):
        self.images, self.fg, self.bg, self.where = images, fg, bg, where
        self.__dict__.update(cfg)  # batch_size, num_fg, channels, crop, context_pad, square,
        #                            mirror, scale, mean_crop, mean_values, dtype, source
        self.rng = np.random.RandomState(backend.rng().randint(0, 2 ** 32, dtype=np.uint64))
        self.cache = {i: self._read(i) for i in range(len(images))} if cfg["cache"] else None

    def draw(self, pool_size, mirror):
        """(window index in [0, pool_size), mirror flag): Caffe's PrefetchRand draws."""
        index = int(self.rng.randint(pool_size))
        return index, bool(mirror and self.rng.randint(2))

    def _read(self, i):
        try:
            return read_image(self.images[i][0], True).transpose(1, 2, 0)  # H x W x C view
        except DecafError as e:
            raise DecafError("%s: image %d of window file %s: %s"
                             % (self.where, i, self.source, e)) from None

    def load(self, batch):
        n, crop = self.batch_size, self.crop
        batch.ensure((n, self.channels, crop, crop), self.dtype, True)
        batch.data[...] = 0
        images = self.cache if self.cache is not None else {}
        item = 0
        for pool, count in ((self.bg, n - self.num_fg), (self.fg, self.num_fg)):
            for _ in range(count):
                k, flip = self.draw(len(pool), self.mirror)
                image = int(pool.rows[k, 0])
                if image not in images:
                    images[image] = self._read(image)
                self._put(batch.data[item], images[image], pool, k, flip)
                batch.label[item] = pool.rows[k, 1]
                item += 1

    def _put(self, out, hwc, pool, k, flip):
        """Write window k of ``pool`` into the C x crop x crop slot ``out``."""
        h, w = hwc.shape[:2]
        (x1, y1, x2, y2), (oh, ow), (ph, pw) = crop_geometry(
            pool.rows[k, 2:], h, w, self.crop, self.context_pad, self.square, flip, self.dtype)
        if not (0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h and oh > 0 and ow > 0):
            i = int(pool.rows[k, 0])
            raise DecafError(
                "%s: window %s of image %d (%s, %dx%d) at %s:%d does not fit the image: its "
                "crop is x %d..%d, y %d..%d, warped to %dx%d (Caffe fails here too)"
                % (self.where, " ".join(str(int(v)) for v in pool.rows[k, 2:]), i,
                   self.images[i][0], w, h, self.source,
                   token_line(self.source, int(pool.token[k])), x1, x2, y1, y2, ow, oh))
        warped = resize_bilinear(hwc[y1:y2 + 1, x1:x2 + 1], oh, ow)
        if flip:
            warped = warped[:, ::-1]
        pix = warped.transpose(2, 0, 1).astype(self.dtype)
        region = (slice(None), slice(ph, ph + oh), slice(pw, pw + ow))
        if self.mean_crop is not None:
            pix -= self.mean_crop[region]
        elif self.mean_values is not None:
            pix -= self.mean_values[:, None, None]
        out[region] = pix * self.dtype.type(self.scale)

    def close(self):
        pass


@register_layer("WindowData")
class WindowDataLayer(BasePrefetchingDataLayer):
    """WindowData: top[0] = batch_size windows of the images in a window file, sampled
    background first then foreground, context-padded, warped to crop_size x crop_size, mirrored
    at random, mean-subtracted and scaled; top[1] = their labels (see the module docstring)."""

    exact_num_top = 2
    legacy_param = "window_data_param"
    log_file = LOG_FILE

    def make_source(self, top):
        p = self.layer_param.window_data_param
        crop = self._check_params(p)
        try:
            images, fg, bg = parse_window_file(p.source, p.fg_threshold, p.bg_threshold,
                                               p.root_folder)
        except DecafError as e:
            self.error(str(e))
        channels = images[-1][1]  # Caffe shapes the top with the last block's channels
        if channels != 3:
            self.error("the last image block of %s says %d channels; WindowData reads images in "
                       "colour (3 channels)" % (p.source, channels))
        num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
        for name, count, pool in (("foreground", num_fg, fg), ("background",
                                                               p.batch_size - num_fg, bg)):
            if count and not len(pool):
                self.error("%s holds no %s windows but each batch needs %d"
                           % (p.source, name, count))
        self._log_setup(p, images, fg, bg)
        if not p.cache_images:
            for i, (path, *_) in enumerate(images):
                if not os.path.isfile(path):
                    self.error("Could not open or find file %s (image %d of window file %s)"
                               % (path, i, p.source))
        cfg = dict(batch_size=int(p.batch_size), num_fg=num_fg, channels=channels, crop=crop,
                   context_pad=int(p.context_pad), square=p.crop_mode == "square",
                   mirror=bool(self.transformer.param.mirror), scale=float(p.scale),
                   mean_crop=self._mean_crop(crop, channels), mean_values=None,
                   dtype=np.dtype(top[0].dtype), source=p.source, cache=bool(p.cache_images))
        if self.transformer.mean_values.size:
            cfg["mean_values"] = np.broadcast_to(self.transformer.mean_values, (channels,))
        where = "Layer %r (%s)" % (self.name, self.type)
        try:
            source = WindowSource(images, fg, bg, cfg, where)
        except DecafError as e:  # cache_images: an image that cannot be read
            raise LayerSetupError(str(e)) from None
        return source, np.zeros((channels, crop, crop), np.uint8), p.batch_size

    def _check_params(self, p):
        """Validate window_data_param / transform_param; return crop_size."""
        crop = int(self.transformer.param.crop_size)
        if crop <= 0:
            self.error("crop_size must be positive (set transform_param.crop_size), got %d"
                       % crop)
        if not p.source:
            self.error("window_data_param.source is not set")
        if p.batch_size <= 0:
            self.error("window_data_param.batch_size must be positive, got %d" % p.batch_size)
        if p.crop_mode not in ("warp", "square"):
            self.error("crop_mode must be 'warp' or 'square', got %r" % p.crop_mode)
        if (p.context_pad > 0 or p.crop_mode == "square") and crop - 2 * p.context_pad <= 0:
            self.error("context_pad %d leaves nothing of a %d crop (needs 2 * context_pad < "
                       "crop_size)" % (p.context_pad, crop))
        if not 0 <= p.fg_fraction <= 1:
            self.error("fg_fraction must lie in [0, 1], got %g" % p.fg_fraction)
        if self.layer_param.transform_param.HasField("scale"):
            log.warning("WindowData ignores transform_param.scale; Caffe scales windows by "
                        "window_data_param.scale", LOG_FILE)
        nmv = self.transformer.mean_values.size
        if nmv not in (0, 1, 3):
            self.error("Specify either 1 mean_value or as many as channels: 3 (%d given)" % nmv)
        return crop

    def _mean_crop(self, crop, channels):
        """Caffe's mean window: rows and columns from (mean_width - crop) / 2, crop of each."""
        mean = self.transformer.mean
        if mean is None:
            return None
        c, h, w = mean.shape
        off = (w - crop) // 2 if w >= crop else -1
        if c != channels or off < 0 or off + crop > h:
            self.error("mean_file %s is %dx%dx%d (channels x height x width); WindowData needs "
                       "%d channels and the %dx%d window at row and column (width - crop) / 2 = "
                       "%d inside it" % (self.transformer.param.mean_file, c, h, w, channels,
                                         crop, crop, off))
        return np.ascontiguousarray(mean[:, off:off + crop, off:off + crop])

    def _log_setup(self, p, images, fg, bg):
        log.info("Window data layer:\n  foreground (object) overlap threshold: %g\n  background "
                 "(non-object) overlap threshold: %g\n  foreground sampling fraction: %g\n  "
                 "cache_images: %d\n  root_folder: %s" % (p.fg_threshold, p.bg_threshold,
                                                          p.fg_fraction, p.cache_images,
                                                          p.root_folder), LOG_FILE)
        log.info("Number of images: %d" % len(images), LOG_FILE)
        labels, counts = np.unique(np.concatenate([[0], fg.rows[:, 1]]), return_counts=True)
        counts[0] = len(bg)
        for label, count in zip(labels, counts):
            log.info("class %d has %d samples" % (label, count), LOG_FILE)
        log.info("Amount of context padding: %d" % p.context_pad, LOG_FILE)
        log.info("Crop mode: %s" % p.crop_mode, LOG_FILE)


__all__ = ["WindowDataLayer", "WindowSource", "WindowSet", "WindowFileError",
           "parse_window_file", "crop_geometry"]
