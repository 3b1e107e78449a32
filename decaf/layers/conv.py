"""Convolution and Deconvolution: Caffe's im2col + GEMM layers (2-D and N-D).

Both (and Im2col, decaf.layers.im2col) read ``convolution_param``: kernel_size / stride / pad / dilation once or once per
spatial axis (or kernel_h/w, stride_h/w, pad_h/w for 2-D), ``axis`` (the channel axis; the axes
before it are batch axes), ``group``, ``num_output``, ``bias_term`` and the fillers.
Caffe's formula, per chunk of images (the batch folded into the GEMM's columns, the chunk keeping
the column buffer about cache-sized) and group g:
    forward    Y_g = W_g col_g + b,   col = im2col(X)
    weights    dW_g += dY_g col_g^T,  db += sum dY
    data       dX = col2im(W_g^T dY_g)
im2col / col2im and the moves between the GEMM layout (M, n*oh*ow) and the NCHW blobs (with the
bias and its gradient on the way) are compiled loops for 2-D NumPy arrays (decaf.kernels.conv),
strided views otherwise (decaf.kernels.im2col, e.g. CuPy or N-D); the GEMMs are BLAS.
Convolutions with one input channel per group (depthwise) run as a direct compiled loop; other
2-D convolutions with dilation 1 through the row-GEMM engine (decaf.kernels.rowconv: the same
sums, ordered for BLAS), which is still faster on NumPy.
"""
import numpy as np

from ..kernels import conv as kernels
from ..kernels.depthwise import DepthwiseConv, DepthwiseDeconv
from ..kernels.rowconv import RowConv, scratch
from ..kernels.blas import gemm_accumulate, matmul
from ..kernels.gemm import gemm as gemm_split
from ..kernels.elementwise import relu_forward
from ..filler import fill
from ..kernels.im2col import CompiledIm2Col, Im2Col, conv_output_shape, deconv_output_shape
from ..layer import Layer, current_pass, register_layer
from ._reshape_cache import remember, unchanged
from ..errors import ShapeMismatchError

# Largest column buffer (in elements) built at once; bigger batches are processed in chunks
# of images, so that BLAS reads the buffer while it is still in cache.
COL_BUFFER_ELEMENTS = 1 << 20
# 2-D NumPy convolutions through the compiled kernels (False: the strided-view path CuPy runs)
COMPILED = True
# 2-D convolutions with dilation 1 through the row-GEMM engine (decaf.kernels.rowconv), which
# still beats the plain im2col + GEMM on NumPy (benchmarks/NOTES.md, section 7)
ROW_GEMM = True
# ... except where Caffe's plain im2col + GEMM is faster (ConvolutionLayer._plain_gemm_wins)
PLAIN_GEMM_MIN_OUTPUTS = 128
PLAIN_GEMM_1X1 = True
# One-channel 3x3 convolutions (a grayscale input layer) as the direct depthwise loops, with
# the in-place BatchNorm [Scale] [ReLU] after them applied as each row is written
DIRECT_ONE_CHANNEL_3X3 = True
# Compiled 2-D convolutions whose output planes have at least this many pixels run image by
# image, the GEMMs straight on the NCHW blobs; smaller planes fold a chunk of images into the
# GEMM's columns (fewer, wider GEMMs, and a move to and from that layout).
PER_IMAGE_MIN_COLUMNS = 64
# ... and whose per-image GEMMs hold at least this many multiply-adds: below it every image's
# handful of calls costs more than its arithmetic (the CIFAR ResNet's 1x1 stride-2 projections,
# 131k per image: backward 4.1-5.4 ms image by image, 1.3-2.4 ms folded; NOTES.md section 10).
# Not for 1x1 stride-1 kernels, whose folded path moves every image to and from the column
# layout (WeChat's 128 -> 12 heads at batch 16: 0.97 ms folded, 0.32 image by image)
PER_IMAGE_MIN_MACS = 1 << 20
# ... and build their columns a block of output rows at a time, about this many elements (the
# block stays in cache between im2col and the GEMM that reads it)
COL_BLOCK_ELEMENTS = 1 << 18
COL_BLOCK_WEIGHTS = 4


def _gemm(a, b, c):
    """c = a @ b into a strided window c (BLAS with its leading dimension, split over the
    threads where one pool runs them; NumPy otherwise)."""
    if not gemm_split(a, b, c):
        c[...] = a @ b

def _axis_values(layer, cp, field, hw, num_spatial, default):
    """Caffe's rule for one geometric field: the _h/_w pair, or the repeated field (0/1/n)."""
    values = list(getattr(cp, field))
    if hw and (cp.HasField(hw[0]) or cp.HasField(hw[1])):
        if num_spatial != 2:
            layer.error("%s & %s can only be used for 2D convolution (the bottom has %d spatial "
                        "axes)" % (hw[0], hw[1], num_spatial))
        if values:
            layer.error("Either %s or %s/%s should be specified; not both"
                        % (field, hw[0], hw[1]))
        return [int(getattr(cp, hw[0])), int(getattr(cp, hw[1]))]
    n = len(values)
    allowed = (1, num_spatial) if default is None else (0, 1, num_spatial)
    if n not in allowed:
        layer.error("%s must be specified once, or once per spatial dimension (%s specified %d "
                    "times; %d spatial dims)" % (field, field, n, num_spatial))
    return [int(default) if n == 0 else int(values[0 if n == 1 else i])
            for i in range(num_spatial)]


def parse_geometry(layer, cp, num_spatial):
    """(kernel, stride, pad, dilation) tuples from a ConvolutionParameter, with Caffe's checks."""
    kernel = _axis_values(layer, cp, "kernel_size", ("kernel_h", "kernel_w"), num_spatial, None)
    if any(k <= 0 for k in kernel):
        layer.error("Filter dimensions must be nonzero (kernel %s)" % (kernel,))
    stride = _axis_values(layer, cp, "stride", ("stride_h", "stride_w"), num_spatial, 1)
    if any(s <= 0 for s in stride):
        layer.error("Stride dimensions must be nonzero (stride %s)" % (stride,))
    pad = _axis_values(layer, cp, "pad", ("pad_h", "pad_w"), num_spatial, 0)
    dilation = _axis_values(layer, cp, "dilation", None, num_spatial, 1)
    if any(d <= 0 for d in dilation):
        layer.error("dilation must be positive (dilation %s)" % (dilation,))
    return tuple(kernel), tuple(stride), tuple(pad), tuple(dilation)


def _channel_axis(layer, bottom, axis):
    try:
        return bottom.canonical_axis_index(axis)
    except ShapeMismatchError as e:
        layer.error("convolution_param.axis: %s" % e)


class _GemmConv:
    """Grouped im2col + GEMM between an image side (C_img, *S) and a column side (M, *O).

    Weights are (M, C_img / group, *kernel).  Convolution: image = bottom, column side = top;
    Deconvolution: image = top, column side = bottom.
    """

    def __init__(self, xp, dtype, num, image_shape, col_channels, geometry, group, out_spatial,
                 image_by_image=None):
        kernel, stride, pad, dilation = geometry
        self.xp, self.group, self.num = xp, group, num
        self.compiled = COMPILED and xp is np and len(image_shape) == 3
        if self.compiled:
            self.plan = CompiledIm2Col(image_shape, kernel, stride, pad, dilation, dtype,
                                       out_spatial)
        else:
            self.plan = Im2Col(image_shape, kernel, stride, pad, dilation, dtype, xp=xp,
                               out_spatial=out_spatial)
        self.m = col_channels
        self.mg = col_channels // group
        self.kd = self.plan.col_rows // group
        self.oc = self.plan.out_count
        per_image = max(self.plan.col_rows * self.oc, 1)
        self.chunk = int(max(1, min(num, COL_BUFFER_ELEMENTS // per_image)))
        self.dtype = dtype
        self.wtmp = xp.empty((group, self.mg, self.kd), dtype=dtype)
        self.none = xp.empty(0, dtype=dtype)       # "no bias" for the kernels
        # Caffe's own loop (forward_cpu_gemm per image): the GEMMs read and write the NCHW
        # images in place, no chunk layout to move through; 1x1 / stride 1 / pad 0 needs no
        # column buffer at all (Caffe's is_1x1_)
        self.is_1x1 = (all(k == 1 for k in kernel) and all(s == 1 for s in stride)
                       and all(p == 0 for p in pad))
        if image_by_image is None:       # 1x1: no columns to build, image by image wins at
            image_by_image = num == 1 or (self.oc >= PER_IMAGE_MIN_COLUMNS and (  # any size
                self.is_1x1 or self.m * self.kd * self.oc >= PER_IMAGE_MIN_MACS))
        self.per_image = self.compiled and bool(image_by_image)
        self.cg = int(image_shape[0]) // group
        self.blocks = self._row_blocks() if self.per_image else None

    def chunks(self):
        for n0 in range(0, self.num, self.chunk):
            yield n0, min(n0 + self.chunk, self.num)

    def _col(self, nb):
        size = self.plan.col_rows * nb * self.oc
        return scratch(self.xp, self.dtype, "col", size).reshape(self.group, self.kd,
                                                                  nb * self.oc)

    def _gm(self, nb):
        size = self.m * nb * self.oc
        return scratch(self.xp, self.dtype, "gemm", size).reshape(self.group, self.mg,
                                                                   nb * self.oc)

    def im2col(self, img, n0, n1):
        col = self._col(n1 - n0)
        self.plan.im2col(img[n0:n1], col, order="ckn")
        return col

    def gather(self, y, n0, n1, db=None):
        """Column-side array chunk (nb, M, Oc) as (group, M/group, nb*Oc); db += its sum."""
        nb = n1 - n0
        gm = self._gm(nb)
        if self.compiled:
            kernels.from_nchw(y, n0, gm.reshape(self.m, -1), self.none if db is None else db,
                              db is not None)
            return gm
        gm.reshape(self.m, nb, self.oc)[...] = y[n0:n1].transpose(1, 0, 2)
        if db is not None:
            db += gm.reshape(self.m, -1).sum(axis=1)
        return gm

    def scatter(self, gm, out, n0, n1, bias=None):
        """(group, M/group, nb*Oc) (+ bias) back into the column-side array chunk (nb, M, Oc)."""
        if self.compiled:
            kernels.to_nchw(gm.reshape(self.m, -1), n0, self.none if bias is None else bias,
                            bias is not None, out)
            return
        out[n0:n1] = gm.reshape(self.m, n1 - n0, self.oc).transpose(1, 0, 2)
        if bias is not None:
            out[n0:n1] += bias.reshape(1, -1, 1)

    def to_col_side(self, col, wg, out, n0, n1, bias=None):
        """out[n0:n1] = W (*) columns (+ b)  (convolution forward / deconvolution backward)."""
        gm = self._gm(n1 - n0)
        matmul(wg, col, gm)
        self.scatter(gm, out, n0, n1, bias)

    def to_image(self, gm, wg, out, n0, n1):
        """out[n0:n1] = col2im(W^T y)  (convolution backward-data / deconvolution forward)."""
        col = self._col(n1 - n0)
        matmul(wg.transpose(0, 2, 1), gm, col)
        self.plan.col2im(col, out[n0:n1], order="ckn")

    def weight_grad(self, gm, col, dwg):
        """dW += y columns^T, per group (BLAS beta = 1 where it can)."""
        for g in range(self.group):
            gemm_accumulate(gm[g], col[g].T, dwg[g])

    # -- Convolution through this engine ---------------------------------------------------
    def _row_blocks(self):
        """Blocks of output rows whose columns hold about COL_BLOCK_ELEMENTS, and at least
        COL_BLOCK_WEIGHTS times the weights (every block's GEMM reads all of them again)."""
        oh, ow = self.plan.out_spatial
        target = max(COL_BLOCK_ELEMENTS, COL_BLOCK_WEIGHTS * self.m * self.kd)
        rows = int(max(1, min(oh, target // max(self.plan.col_rows * ow, 1))))
        count = -(-oh // rows)
        rows = -(-oh // count)                  # equal blocks
        return [(r, min(r + rows, oh)) for r in range(0, oh, rows)]

    def _block(self, name, oy0, oy1):
        nq = (oy1 - oy0) * self.plan.out_spatial[1]
        return scratch(self.xp, self.dtype, name, self.plan.col_rows * nq).reshape(
            self.group, self.kd, nq)

    def forward(self, x, w, bias, y, relu=None, post=None):
        """y = W (*) x + b for x (num, C, *S), y (num, M, *O); then y = ReLU(y) with slope
        ``relu`` unless None (a fused ReLU: the image-by-image path in the bias pass);
        ``post(n0, n1)`` once images n0..n1 are done (ConvolutionLayer.forward_post)."""
        wg = w.reshape(self.group, self.mg, -1)
        yf = y.reshape(self.num, self.m, -1)
        if not self.per_image:
            for n0, n1 in self.chunks():
                self.to_col_side(self.im2col(x, n0, n1), wg, yf, n0, n1, bias)
                if post is not None:
                    post(n0, n1)
            if relu is not None:
                relu_forward(yf.reshape(-1), yf.reshape(-1), relu)
            return
        ow = self.plan.out_spatial[1]
        for n in range(self.num):
            yn = yf[n].reshape(self.group, self.mg, self.oc)
            if self.is_1x1:
                matmul(wg, x[n].reshape(self.group, self.kd, self.oc), yn)
            else:
                for oy0, oy1 in self.blocks:
                    col = self._block("col", oy0, oy1)
                    kernels.im2col_rows(x, n, oy0, oy1, *self.plan.args[:-2], ow,
                                        col.reshape(self.plan.col_rows, -1))
                    if len(self.blocks) == 1:
                        matmul(wg, col, yn)
                        continue
                    for g in range(self.group):
                        _gemm(wg[g], col[g], yn[g, :, oy0 * ow:oy1 * ow])
            # the bias (and fused ReLU) pass over this image's top while it is in cache
            if relu is not None:
                kernels.add_bias_relu(yf[n:n + 1], self.none if bias is None else bias,
                                      bias is not None, relu)
            elif bias is not None:
                kernels.add_bias(yf[n:n + 1], bias)
            if post is not None:
                post(n, n + 1)

    def _backward_per_image(self, yf, x, wg, dwg, xdiff):
        ow = self.plan.out_spatial[1]
        for n in range(self.num):
            dyn = yf[n].reshape(self.group, self.mg, self.oc)
            if self.is_1x1:
                if dwg is not None:
                    self.weight_grad(dyn, x[n].reshape(self.group, self.kd, self.oc), dwg)
                if xdiff is not None:
                    matmul(wg.transpose(0, 2, 1), dyn,
                           xdiff[n].reshape(self.group, self.kd, self.oc))
                continue
            if xdiff is not None:
                xdiff[n] = 0
            for oy0, oy1 in self.blocks:
                dy = dyn[:, :, oy0 * ow:oy1 * ow]
                if dwg is not None:
                    col = self._block("col", oy0, oy1)
                    kernels.im2col_rows(x, n, oy0, oy1, *self.plan.args[:-2], ow,
                                        col.reshape(self.plan.col_rows, -1))
                    self.weight_grad(dy, col, dwg)
                if xdiff is not None:
                    dcol = self._block("dcol", oy0, oy1)
                    for g in range(self.group):
                        _gemm(wg[g].T, dy[g], dcol[g])
                    kernels.col2im_rows_add(dcol.reshape(self.plan.col_rows, -1), n, oy0, oy1,
                                            *self.plan.args[:-2], ow, xdiff)

    def backward(self, ydiff, x, w, dw, db, xdiff):
        """db += sum ydiff; dW += ydiff (*) x; xdiff = W^T (*) ydiff (those not None)."""
        yf = ydiff.reshape(self.num, self.m, -1)
        if dw is None and xdiff is None:
            if db is not None:
                db += yf.sum(axis=(0, 2))
            return
        wg = w.reshape(self.group, self.mg, -1)
        dwg = dw.reshape(self.group, self.mg, -1) if dw is not None else None
        if self.per_image:
            if db is not None:
                kernels.bias_grad(yf, db)
            self._backward_per_image(yf, x, wg, dwg, xdiff)
            return
        for n0, n1 in self.chunks():
            gm = self.gather(yf, n0, n1, db)
            if dwg is not None:
                self.weight_grad(gm, self.im2col(x, n0, n1), dwg)
            if xdiff is not None:
                self.to_image(gm, wg, xdiff, n0, n1)


class BaseConvolutionLayer(Layer):
    """Shared setup of Convolution and Deconvolution (Caffe's BaseConvolutionLayer)."""
    shape_only_reshape = True

    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    reverse = False   # Deconvolution swaps the roles of bottom and top

    def setup(self, bottom, top):
        cp = self.layer_param.convolution_param
        self.channel_axis = _channel_axis(self, bottom[0], cp.axis)
        self.num_spatial = bottom[0].num_axes - self.channel_axis - 1
        self.geometry = parse_geometry(self, cp, self.num_spatial)
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = int(cp.num_output)
        self.group = int(cp.group)
        if self.num_output <= 0:
            self.error("num_output must be positive, got %d" % self.num_output)
        if self.group <= 0:
            self.error("group must be positive, got %d" % self.group)
        if self.channels % self.group:
            self.error("the number of input channels (%d, bottom %s) must be a multiple of group "
                       "(%d)" % (self.channels, self.blob_names("bottom"), self.group))
        if self.num_output % self.group:
            self.error("Number of output should be multiples of group (num_output %d, group %d)"
                       % (self.num_output, self.group))
        conv_out, conv_in = ((self.channels, self.num_output) if self.reverse
                             else (self.num_output, self.channels))
        weight_shape = (conv_out, conv_in // self.group) + self.geometry[0]
        self.bias_term = bool(cp.bias_term)
        self._setup_params(weight_shape, bottom[0].dtype)
        self._engine_key = None

    def _setup_params(self, weight_shape, dtype):
        cp = self.layer_param.convolution_param
        bias_shape = (self.num_output,)
        if self.blobs:
            if len(self.blobs) != 1 + self.bias_term:
                self.error("Incorrect number of weight blobs: expected %d, got %d"
                           % (1 + self.bias_term, len(self.blobs)))
            if tuple(self.blobs[0].shape) != weight_shape:
                self.error("Incorrect weight shape: expected shape %s; instead, shape was %s"
                           % (weight_shape, self.blobs[0].shape))
            if self.bias_term and tuple(self.blobs[1].shape) != bias_shape:
                self.error("Incorrect bias shape: expected shape %s; instead, shape was %s"
                           % (bias_shape, self.blobs[1].shape))
        else:
            self.blobs = [self.make_blob(weight_shape, dtype=dtype)]
            fill(self.blobs[0], cp.weight_filler)
            if self.bias_term:
                self.blobs.append(self.make_blob(bias_shape, dtype=dtype))
                fill(self.blobs[1], cp.bias_filler)
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        if unchanged(self, bottom, top):
            return
        b0 = bottom[0]
        if b0.num_axes != self.channel_axis + 1 + self.num_spatial:
            self.error("bottom num_axes may not change (was %d, now %d)"
                       % (self.channel_axis + 1 + self.num_spatial, b0.num_axes))
        if b0.shape[self.channel_axis] != self.channels:
            self.error("Input size incompatible with convolution kernel: bottom %s has %d "
                       "channels, the layer was set up for %d"
                       % (self.layer_param.bottom[0] if self.layer_param.bottom else "0",
                          b0.shape[self.channel_axis], self.channels))
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != b0.shape:
                self.error("All inputs must have the same shape: bottom %d is %s, bottom 0 is %s"
                           % (i, b.shape, b0.shape))
        in_spatial = b0.shape[self.channel_axis + 1:]
        out_spatial = self.output_spatial(in_spatial)
        if any(o <= 0 for o in out_spatial):
            self.error("output spatial shape %s is empty for input %s with kernel %s, stride %s, "
                       "pad %s, dilation %s" % ((out_spatial, in_spatial) + self.geometry))
        lead = b0.shape[:self.channel_axis]
        self.num = int(np.prod(lead, dtype=np.int64))
        for t in top:
            if any(t is b for b in bottom):
                self.error("%s cannot be computed in-place" % self.type)
            t.reshape(lead + (self.num_output,) + out_spatial)
        key = (self.num, tuple(in_spatial), b0.dtype, self.xp)
        if key != self._engine_key:
            self._engine_key = key
            self.engine = _EmptyBatch() if self.num == 0 else \
                self.make_engine(b0.dtype, in_spatial, out_spatial)
        self.in_spatial, self.out_spatial = tuple(in_spatial), tuple(out_spatial)
        remember(self, bottom, top)

    def _engine_backward(self, top, propagate_down, bottom):
        """The whole backward through an engine with ``backward(ydiff, x, w, dw, db, xdiff)``
        (x: the bottom (N, C, *in), ydiff: the top diff (N, num_output, *out))."""
        w = self.blobs[0].data
        dw = self.blobs[0].diff if self.param_propagate_down[0] else None
        db = self.blobs[1].diff if self.bias_term and self.param_propagate_down[1] else None
        img = (self.num, self.channels) + self.in_spatial
        out = (self.num, self.num_output) + self.out_spatial
        for i, (t, b) in enumerate(zip(top, bottom)):
            want_x = i < len(propagate_down) and propagate_down[i]
            self.engine.backward(t.diff.reshape(out), b.data.reshape(img), w, dw, db,
                                 b.diff.reshape(img) if want_x else None)

    def _wg(self, arr):
        """A weight (or weight diff) array as (group, conv_out / group, kernel_dim)."""
        return arr.reshape(self.group, arr.shape[0] // self.group, -1)

    def _flat(self, arr, channels):
        return arr.reshape(self.num, channels, -1) if arr.size else \
            arr.reshape(self.num, channels, 0)        # a batch of 0 images

    def _bias_forward(self, out):
        if self.bias_term:
            out += self.blobs[1].data.reshape(1, -1, 1)

    def _bias_backward(self, ydiff):
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += ydiff.sum(axis=(0, 2))


class _EmptyBatch:
    """The engine of a batch of 0 images: nothing to compute (Caffe loops over no image)."""

    def forward(self, *args, **kwargs):
        pass

    def backward(self, *args):
        pass

    def chunks(self):
        return iter(())


@register_layer("Convolution")
class ConvolutionLayer(BaseConvolutionLayer):
    """Convolution: top[n, o] = sum_{c in group(o), k} W[o, c, k] x[n, c, s*p - pad + d*k] + b[o].

    Backward: dW += top_diff (*) im2col(bottom); b_diff += sum top_diff;
    bottom_diff = col2im(W^T top_diff) where propagate_down.
    """

    def output_spatial(self, in_spatial):
        return conv_output_shape(in_spatial, *self.geometry)

    def make_engine(self, dtype, in_spatial, out_spatial):
        if (COMPILED and self.xp is np and len(in_spatial) == 2 and self.group == self.channels
                and (self.group > 1 or (DIRECT_ONE_CHANNEL_3X3 and self.channels == 1
                                        and self.geometry[0] == (3, 3)))):
            return DepthwiseConv(dtype, self.geometry)
        if ROW_GEMM and len(in_spatial) == 2 and self.geometry[3] == (1, 1) and \
                not self._plain_gemm_wins():
            return RowConv(self.xp, dtype, self.num, self.channels, in_spatial,
                           self.num_output, self.geometry, self.group, out_spatial)
        return _GemmConv(self.xp, dtype, self.num, (self.channels,) + tuple(in_spatial),
                         self.num_output, self.geometry, self.group, out_spatial)

    def _plain_gemm_wins(self):
        """Caffe's own im2col + GEMM beats the row-GEMM engine for 1x1 kernels (no columns to
        build) and from PLAIN_GEMM_MIN_OUTPUTS outputs per group (the GEMM outweighs building
        the columns); the row engine's shifted GEMMs, which build none, win below (NOTES, 9)."""
        kernel = self.geometry[0]
        return ((PLAIN_GEMM_1X1 and all(k == 1 for k in kernel)) or
                self.num_output // self.group >= PLAIN_GEMM_MIN_OUTPUTS)

    def forward(self, bottom, top):
        w = self.blobs[0].data
        bias = self.blobs[1].data if self.bias_term else None
        img = (self.num, self.channels) + self.in_spatial
        out = (self.num, self.num_output) + self.out_spatial
        self._pass_token()
        for b, t in zip(bottom, top):
            self.engine.forward(b.data.reshape(img), w, bias, t.data.reshape(out))

    def backward(self, top, propagate_down, bottom):
        self._pass_token()
        self._engine_backward(top, propagate_down, bottom)

    def _pass_token(self):
        """The row engine's backward reuses its forward's bordered image within one
        forward_backward_pass where the bottom is stable (decaf.layer, RowConv.token)."""
        if isinstance(self.engine, RowConv):
            self.engine.token = current_pass() if self.stable_bottom else None

    def forward_relu(self, bottom, top, slope):
        """forward, then the in-place ReLU(slope) that follows it at inference (net_fuse):
        the im2col + GEMM engine applies it in its bias pass, the others after forward."""
        w = self.blobs[0].data
        bias = self.blobs[1].data if self.bias_term else None
        x = bottom[0].data.reshape((self.num, self.channels) + self.in_spatial)
        y = top[0].data.reshape((self.num, self.num_output) + self.out_spatial)
        if isinstance(self.engine, _GemmConv):
            self.engine.forward(x, w, bias, y, relu=slope)
            return
        self.engine.forward(x, w, bias, y)
        relu_forward(y.reshape(-1), y.reshape(-1), slope)

    @property
    def writes_epilogue(self):
        """The engine applies an in-place BatchNorm [Scale] [ReLU] as it writes each row
        (forward_post's ``epilogue``): the direct depthwise loops."""
        return isinstance(self.engine, DepthwiseConv)

    def forward_post(self, bottom, top, post, relu=None, epilogue=None):
        """forward [then the in-place ReLU(slope ``relu``)], calling ``post(n0, n1)`` as soon
        as the tops of images n0..n1 are done, while they are in cache: the in-place
        BatchNorm [Scale] [ReLU] and the Pooling after it (net_fuse); ``epilogue`` (only
        where ``writes_epilogue``): see decaf.kernels.depthwise.depthwise_forward."""
        bias = self.blobs[1].data if self.bias_term else None
        x = bottom[0].data.reshape((self.num, self.channels) + self.in_spatial)
        y = top[0].data.reshape((self.num, self.num_output) + self.out_spatial)
        if self.writes_epilogue:
            if epilogue is None and relu is not None:
                none = self.engine.none
                epilogue = (none, none, none, none, False, False, False, True, y.dtype.type(relu))
            self.engine.forward(x, self.blobs[0].data, bias, y, post=post, epilogue=epilogue)
            return
        if isinstance(self.engine, _GemmConv) and self.engine.per_image:
            self.engine.forward(x, self.blobs[0].data, bias, y, relu=relu, post=post)
            return
        if relu is not None:
            then, flat = post, y.reshape(self.num, -1)

            def post(n0, n1):
                relu_forward(flat[n0:n1].reshape(-1), flat[n0:n1].reshape(-1), relu)
                then(n0, n1)
        self.engine.forward(x, self.blobs[0].data, bias, y, post=post)


@register_layer("Deconvolution")
class DeconvolutionLayer(BaseConvolutionLayer):
    """Deconvolution (transposed convolution): forward is Convolution's backward-data.

    top = col2im(W^T bottom) + b, W of shape (C_in, num_output / group, *kernel); top spatial
    size s (S - 1) + d (k - 1) + 1 - 2 pad.  Backward: bottom_diff = W (*) im2col(top_diff),
    dW += bottom (*) im2col(top_diff)^T.
    """

    reverse = True

    def output_spatial(self, in_spatial):
        return deconv_output_shape(in_spatial, *self.geometry)

    def make_engine(self, dtype, in_spatial, out_spatial):
        if (COMPILED and self.xp is np and len(in_spatial) == 2 and self.group > 1
                and self.group == self.num_output):
            return DepthwiseDeconv(dtype, self.geometry)
        return _GemmConv(self.xp, dtype, self.num, (self.num_output,) + tuple(out_spatial),
                         self.channels, self.geometry, self.group, in_spatial)

    def _direct(self):
        """The engine computes the whole layer itself (DepthwiseDeconv)."""
        return isinstance(self.engine, DepthwiseDeconv)

    def forward(self, bottom, top):
        if self._direct():
            w = self.blobs[0].data
            bias = self.blobs[1].data if self.bias_term else None
            for b, t in zip(bottom, top):
                self.engine.forward(b.data.reshape((self.num, self.channels) + self.in_spatial),
                                    w, bias, t.data.reshape((self.num, self.num_output)
                                                            + self.out_spatial))
            return
        eng, wg = self.engine, self._wg(self.blobs[0].data)
        for b, t in zip(bottom, top):
            x = self._flat(b.data, self.channels)
            y = t.data.reshape((self.num, self.num_output) + self.out_spatial)
            for n0, n1 in eng.chunks():
                eng.to_image(eng.gather(x, n0, n1), wg, y, n0, n1)
            self._bias_forward(self._flat(t.data, self.num_output))

    def backward(self, top, propagate_down, bottom):
        if self._direct():
            self._engine_backward(top, propagate_down, bottom)
            return
        eng, wg = self.engine, self._wg(self.blobs[0].data)
        dwg = self._wg(self.blobs[0].diff) if self.param_propagate_down[0] else None
        for i, (t, b) in enumerate(zip(top, bottom)):
            self._bias_backward(self._flat(t.diff, self.num_output))
            want_x = i < len(propagate_down) and propagate_down[i]
            if dwg is None and not want_x:
                continue
            ydiff = t.diff.reshape((self.num, self.num_output) + self.out_spatial)
            x = self._flat(b.data, self.channels)
            xdiff = self._flat(b.diff, self.channels)
            for n0, n1 in eng.chunks():
                col = eng.im2col(ydiff, n0, n1)
                if dwg is not None:
                    eng.weight_grad(eng.gather(x, n0, n1), col, dwg)
                if want_x:
                    eng.to_col_side(col, wg, xdiff, n0, n1)


