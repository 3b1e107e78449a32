"""im2col / col2im: Caffe's column buffer (2-D and N-D).

``Im2Col`` builds it from strided views (any array module, any number of spatial axes);
``CompiledIm2Col`` runs the compiled 2-D loops of decaf.kernels.conv on NumPy arrays.

For an image C x S_1 x ... x S_d, kernel k, stride s, pad p and dilation r, the column buffer has
C * prod(k) rows and prod(out) columns.  Row (c * k_1 + i_1) * k_2 + i_2 ... and column
(o_1 * out_2 + o_2) ... hold  x[c, o_1 s_1 - p_1 + i_1 r_1, o_2 s_2 - p_2 + i_2 r_2, ...]
(0 outside the image), exactly the layout of Caffe's ``im2col_cpu`` / ``im2col_nd_cpu``.
``col2im`` is its adjoint: every column entry is added back onto the pixel it was read from.

Output size per axis is Caffe's ``(S + 2p - (r(k-1)+1)) / s + 1`` with C's truncating division.
"""
import itertools

import numpy as np

from . import cblas



def _trunc_div(a, b):
    """C integer division (rounds toward zero), as Caffe's int arithmetic does."""
    q = abs(a) // b
    return q if a >= 0 else -q


def kernel_extent(kernel, dilation):
    return dilation * (kernel - 1) + 1


def conv_output_shape(spatial, kernel, stride, pad, dilation):
    """Caffe's convolution output size for every spatial axis."""
    return tuple(_trunc_div(n + 2 * p - kernel_extent(k, d), s) + 1
                 for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))


def deconv_output_shape(spatial, kernel, stride, pad, dilation):
    """Caffe's deconvolution output size: s (S - 1) + r (k - 1) + 1 - 2p per axis."""
    return tuple(s * (n - 1) + kernel_extent(k, d) - 2 * p
                 for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))


def _as_strided(xp, a, shape, strides):
    if xp is np:
        return np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


class Im2Col:
    """im2col / col2im for images of shape (C, *spatial) with fixed kernel geometry.

    Keeps a zero-bordered padded copy of the input (allocated once, only its interior is
    rewritten) and a padded accumulator for col2im.  Batches of any size ``n`` are handled:
    ``im2col(x, out, order)`` with ``x`` of shape (n, C, *spatial) and ``out`` a contiguous array
    holding n * C * prod(kernel) * prod(out_spatial) values, laid out as

    * ``order="nck"``: (n, C, *kernel, *out)  -- Caffe's per-image column buffer, image by image;
    * ``order="ckn"``: (C, *kernel, n, *out)  -- the batch folded into the GEMM's columns.
    """

    def __init__(self, image_shape, kernel, stride, pad, dilation, dtype, xp=np,
                 out_spatial=None, fill=0.0):
        self.channels = int(image_shape[0])
        self.spatial = tuple(int(s) for s in image_shape[1:])
        self.nd = len(self.spatial)
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.pad, self.dilation = tuple(pad), tuple(dilation)
        self.xp, self.dtype, self.fill = xp, np.dtype(dtype), fill
        if out_spatial is None:
            out_spatial = conv_output_shape(self.spatial, kernel, stride, pad, dilation)
        self.out_spatial = tuple(out_spatial)
        # padded extent: holds pad + image + pad and every window (C truncation may let the last
        # window hang over the padded image, reading zeros there as Caffe does).
        self.padded = tuple(max(n + 2 * p, (o - 1) * s + kernel_extent(k, d))
                            for n, o, k, s, p, d in zip(self.spatial, self.out_spatial,
                                                        kernel, stride, pad, dilation))
        self.needs_pad = self.padded != self.spatial
        self.interior = tuple(slice(p, p + n) for p, n in zip(self.pad, self.spatial))
        self.kernel_count = int(np.prod(self.kernel, dtype=np.int64))
        self.out_count = int(np.prod(self.out_spatial, dtype=np.int64))
        self.offsets = list(itertools.product(*[range(k) for k in self.kernel]))
        self._in_buf = None
        self._acc_buf = None
        self._acc_cn_buf = None

    @property
    def col_rows(self):
        return self.channels * self.kernel_count

    # -- buffers ---------------------------------------------------------------------------
    def _buffer(self, attr, n, fill):
        buf = getattr(self, attr)
        if buf is None or buf.shape[0] < n:
            buf = self.xp.full((n, self.channels) + self.padded, fill, dtype=self.dtype)
            setattr(self, attr, buf)
        return buf[:n]

    def padded_input(self, x):
        """``x`` (n, C, *spatial) placed in a padded buffer whose border holds ``fill``."""
        if not self.needs_pad:
            return x
        buf = self._buffer("_in_buf", x.shape[0], self.fill)
        buf[(slice(None), slice(None)) + self.interior] = x
        return buf

    # -- im2col ----------------------------------------------------------------------------
    def windows(self, xpad):
        """Read-only strided view (n, C, *kernel, *out) of a padded input."""
        st = xpad.strides
        shape = xpad.shape[:2] + self.kernel + self.out_spatial
        strides = (st[0], st[1]) + \
            tuple(st[2 + a] * self.dilation[a] for a in range(self.nd)) + \
            tuple(st[2 + a] * self.stride[a] for a in range(self.nd))
        return _as_strided(self.xp, xpad, shape, strides)

    def _order_axes(self, order):
        nd = self.nd
        if order == "nck":
            return None
        if order == "ckn":   # (n, C, K.., O..) -> (C, K.., n, O..)
            return (1,) + tuple(range(2, 2 + nd)) + (0,) + tuple(range(2 + nd, 2 + 2 * nd))
        raise ValueError("order must be 'nck' or 'ckn', got %r" % (order,))

    def im2col(self, x, out, order="nck"):
        """Write the columns of ``x`` (n, C, *spatial) into the contiguous array ``out``."""
        win = self.windows(self.padded_input(x))
        axes = self._order_axes(order)
        if axes is not None:
            win = win.transpose(axes)
        if not out.flags.c_contiguous:
            raise ValueError("im2col: the output array must be C-contiguous")
        self.xp.copyto(out.reshape(win.shape), win)
        return out

    # -- col2im ----------------------------------------------------------------------------
    def _cols_view(self, cols, n):
        """``cols`` (contiguous, order "nck") as a view of shape (n, C, *kernel, *out)."""
        return cols.reshape((n, self.channels) + self.kernel + self.out_spatial)

    def col2im(self, cols, out, order="nck"):
        """Overwrite ``out`` (n, C, *spatial) with the sum of the columns back onto the image."""
        n = out.shape[0]
        lead = (slice(None), slice(None))
        self._order_axes(order)   # validates ``order``
        if order == "ckn":
            # accumulate channel-major (C, n, ...), in the order the columns are stored
            cv = cols.reshape((self.channels,) + self.kernel + (n,) + self.out_spatial)
            acc = self._acc_cn(n)
            src = [(slice(None),) + off for off in self.offsets]
        else:
            cv = self._cols_view(cols, n)
            acc = self._buffer("_acc_buf", n, 0.0) if self.needs_pad else out
            src = [lead + off for off in self.offsets]
        acc[...] = 0
        for off, s_idx in zip(self.offsets, src):
            dest = lead + tuple(slice(i * d, i * d + s * (o - 1) + 1, s)
                                for i, d, s, o in zip(off, self.dilation, self.stride,
                                                      self.out_spatial))
            acc[dest] += cv[s_idx]
        if order == "ckn":
            inner = acc[lead + self.interior]
            out[...] = inner.transpose((1, 0) + tuple(range(2, 2 + self.nd)))
        elif self.needs_pad:
            out[...] = acc[lead + self.interior]
        return out

    def _acc_cn(self, n):
        buf = self._acc_cn_buf
        if buf is None or buf.shape[1] < n:
            buf = self.xp.zeros((self.channels, n) + self.padded, dtype=self.dtype)
            self._acc_cn_buf = buf
        return buf[:, :n]


def im2col(x, kernel, stride=None, pad=None, dilation=None):
    """Functional form: the (n, C * prod(kernel), *out) columns of ``x`` (n, C, *spatial)."""
    nd = x.ndim - 2
    stride = stride or (1,) * nd
    pad = pad or (0,) * nd
    dilation = dilation or (1,) * nd
    plan = Im2Col(x.shape[1:], kernel, stride, pad, dilation, x.dtype, xp=_xp_of(x))
    out = plan.xp.empty((x.shape[0], plan.col_rows) + plan.out_spatial, dtype=x.dtype)
    return plan.im2col(x, out)


def col2im(cols, image_shape, kernel, stride=None, pad=None, dilation=None):
    """Functional form of the adjoint: ``cols`` (n, C * prod(kernel), *out) -> (n, *image_shape)."""
    nd = len(image_shape) - 1
    stride = stride or (1,) * nd
    pad = pad or (0,) * nd
    dilation = dilation or (1,) * nd
    plan = Im2Col(image_shape, kernel, stride, pad, dilation, cols.dtype, xp=_xp_of(cols))
    out = plan.xp.empty((cols.shape[0],) + tuple(image_shape), dtype=cols.dtype)
    return plan.col2im(plan.xp.ascontiguousarray(cols), out)


def _xp_of(a):
    from ..backend import get_array_module
    return get_array_module(a)


class RowIm2Col:
    """Width-only im2col for 2-D convolution: one GEMM per output row, no full column buffer.

    For a chunk of ``nb`` images (n, C, H, W) and kernel (kh, kw), stride (sh, sw), pad (ph, pw),
    the buffer ``z`` holds, for the Hu = (oh-1)*sh + kh padded rows that windows read,

        z[g, h, c, j, q] = x[n, g*C/group + c, h - ph, ox*sw + j - pw]   (0 outside the image)

    where the column q stands for (n, ox) (``batch_inner=False``: q = n*ow + ox) or (ox, n)
    (``batch_inner=True``: q = ox*nb + n).  The rows h .. h+kh of z are one contiguous block, so
    the columns of output row ``oy`` are the (kh*C/group*kw) x (nb*ow) matrix
    ``z[g, oy*sh : oy*sh + kh]`` (rows ordered (i, c, j)): a strided *view* per output row,
    handed to BLAS directly.  z is kw times the input, not kh*kw times as a full column buffer.

    Layouts: with ox innermost, building z copies runs of ow values straight from x; with the
    batch innermost the image is first transposed to (C, H, W, n) (one pass), after which every
    copy and fold moves runs of ow*nb values.  The GEMM results (oh, M, q) go back to the
    (n, M, oh, ow) blobs with runs of ow, or of single values for batch_inner.  Which is cheaper
    depends on the sizes (the engine picks).
    """

    def __init__(self, channels, spatial, kernel, stride, pad, group, nb, dtype, xp=np,
                 out_spatial=None, batch_inner=False, bias_row=False):
        self.channels, self.group = int(channels), int(group)
        self.cg = self.channels // self.group
        (self.h, self.w), (self.kh, self.kw) = tuple(spatial), tuple(kernel)
        (self.sh, self.sw), (self.ph, self.pw) = tuple(stride), tuple(pad)
        if out_spatial is None:
            out_spatial = conv_output_shape(spatial, kernel, stride, pad, (1, 1))
        self.oh, self.ow = out_spatial
        self.hu = (self.oh - 1) * self.sh + self.kh
        # bias_row: every padded row h of z ends with a row of ones, so that each column matrix
        # Z[oy] carries kh ones rows: a GEMM then adds the bias (its weight column) and sums
        # the top diff (db) along with the products, with no pass of its own
        self.bias_row = bool(bias_row)
        self.rk = self.cg * self.kw + self.bias_row      # rows of z per padded row h
        self.k = self.kh * self.rk
        self._ones_for = None
        self.nb, self.xp, self.dtype = int(nb), xp, np.dtype(dtype)
        self.batch_inner = bool(batch_inner)
        # padded rows [r0, r1) of z hold image rows [r0 - ph, r1 - ph)
        self.r0, self.r1 = min(self.ph, self.hu), min(self.ph + self.h, self.hu)
        # per kernel column j: the output columns [lo, hi) that read inside the image, and the
        # image column read by output column lo
        self.cols = []
        for j in range(self.kw):
            lo = max(0, -((j - self.pw) // self.sw))
            hi = min(self.ow, (self.w - 1 + self.pw - j) // self.sw + 1)
            if hi > lo and self.r1 > self.r0:
                self.cols.append((j, lo, hi, lo * self.sw + j - self.pw))
        # batch_inner: the zero-bordered image (C, Hz, Wz, nb), its interior rewritten per chunk
        self.wz = max(self.w + self.pw, (self.ow - 1) * self.sw + self.kw)
        self.hz = max(self.h + self.ph, self.hu)
        self._z = self._z_nb = None
        self._img = self._img_nb = None

    def per_image(self):
        """Elements of ``z`` per image."""
        return self.group * self.hu * self.rk * self.ow

    def shape(self, nb):
        """The shape of ``z`` for ``nb`` images: (G, Hu, Cg, kw, ...), or (G, Hu, Cg*kw + 1,
        ...) with ``bias_row`` (then ``data`` is the (G, Hu, Cg, kw, ...) part)."""
        last = (self.ow, nb) if self.batch_inner else (nb, self.ow)
        if self.bias_row:
            return (self.group, self.hu, self.rk) + last
        return (self.group, self.hu, self.cg, self.kw) + last

    def data(self, z):
        """The image rows of ``z`` (without the ones rows), as (G, Hu, Cg, kw, ...)."""
        if not self.bias_row:
            return z
        part = z[:, :, :self.rk - 1]
        return part.reshape(part.shape[:2] + (self.cg, self.kw) + part.shape[3:])

    def _grow(self, attr, nb, per_image):
        """A flat buffer with room for ``nb`` images; cleared whenever ``nb`` changes (the zero
        border cells sit elsewhere then)."""
        buf, have = getattr(self, attr), getattr(self, attr + "_nb")
        size = per_image * nb
        if buf is None or buf.size < size:
            buf = self.xp.zeros(per_image * max(nb, self.nb), dtype=self.dtype)
            setattr(self, attr, buf)
            have = None
        if have != nb:
            buf[:size] = 0
            setattr(self, attr + "_nb", nb)
        return buf[:size]

    def buffer(self, nb):
        """The column buffer for ``nb`` images; its zero cells (and ones rows) are kept
        between builds."""
        z = self._grow("_z", nb, self.per_image()).reshape(self.shape(nb))
        if self.bias_row and self._ones_for != (id(self._z), nb):
            z[:, :, -1] = 1
            self._ones_for = (id(self._z), nb)
        return z

    def _image(self, nb):
        """batch_inner: the zero-bordered transposed image (C, Hz, Wz, nb)."""
        flat = self._grow("_img", nb, self.channels * self.hz * self.wz)
        return flat.reshape(self.channels, self.hz, self.wz, nb)

    def _interior(self, img):
        return img[:, self.ph:self.ph + self.h, self.pw:self.pw + self.w]

    def _image_view(self, img, j, lo, hi, w0):
        """img[:, :, rows, cols of kernel column j] as (group, rows, C/group, nb, cols)."""
        nb = img.shape[0]
        v = img[:, :, self.r0 - self.ph:self.r1 - self.ph,
                w0:w0 + self.sw * (hi - lo - 1) + 1:self.sw]
        return v.reshape(nb, self.group, self.cg, self.r1 - self.r0, hi - lo) \
            .transpose(1, 3, 2, 0, 4)

    def _columns(self, img, j):
        """batch_inner: padded image columns of kernel column j, as (G, Hu, Cg, ow, nb)."""
        nb = img.shape[3]
        v = img[:, :self.hu, j:j + self.sw * (self.ow - 1) + 1:self.sw]
        return v.reshape(self.group, self.cg, self.hu, self.ow, nb).transpose(0, 2, 1, 3, 4)

    def build(self, x):
        """Fill the buffer from ``x`` (nb, C, H, W); return it."""
        nb = x.shape[0]
        full = self.buffer(nb)
        z = self.data(full)
        if self.batch_inner:
            # the image transposed once to (C, H, W, nb); each kernel column then copies runs
            # of (columns * nb) values into the cells of z that read inside the image (the
            # others stay zero from the buffer's creation)
            xt = self.transposed(x)
            for j, lo, hi, w0 in self.cols:
                v = xt[:, self.r0 - self.ph:self.r1 - self.ph,
                       w0:w0 + self.sw * (hi - lo - 1) + 1:self.sw]
                z[:, self.r0:self.r1, :, j, lo:hi] = v.reshape(
                    (self.group, self.cg) + v.shape[1:]).transpose(0, 2, 1, 3, 4)
            return full
        for j, lo, hi, w0 in self.cols:
            z[:, self.r0:self.r1, :, j, :, lo:hi] = self._image_view(x, j, lo, hi, w0)
        return full

    def fold(self, dz, dx):
        """The adjoint of ``build``: overwrite ``dx`` (nb, C, H, W) with the sums of ``dz``."""
        xp = self.xp
        dz = self.data(dz)
        if self.batch_inner:
            nb = dx.shape[0]
            size = self.channels * self.hz * self.wz * nb
            img = self._fold_buffer(size).reshape(self.channels, self.hz, self.wz, nb)
            img[...] = 0
            for j in range(self.kw):
                dst = self._columns(img, j)
                xp.add(dst, dz[:, :, :, j], out=dst)
            self.untransposed(self._interior(img), dx)
            return dx
        dx[...] = 0
        for j, lo, hi, w0 in self.cols:
            dst = self._image_view(dx, j, lo, hi, w0)
            xp.add(dst, dz[:, self.r0:self.r1, :, j, :, lo:hi], out=dst)
        return dx

    def transposed(self, x):
        """x (nb, C, H, W) as (C, H, W, nb), contiguous (scratch of this plan): one 2-D
        transpose, by OpenBLAS's omatcopy for NumPy arrays (decaf.kernels.cblas)."""
        nb = x.shape[0]
        flat = x.reshape(nb, -1)
        out = self._scratch("_xt", flat.size).reshape(flat.shape[1], nb)
        if self.xp is np:

            cblas.transpose(flat, out)
        else:
            out[...] = flat.T
        return out.reshape(x.shape[1:] + (nb,))

    def untransposed(self, src, dx):
        """dx (nb, C, H, W) = src (C, H, W, nb), the inverse of ``transposed``."""
        nb = dx.shape[0]
        if self.xp is np and dx.flags.c_contiguous:

            t = self._scratch("_xt", src.size).reshape(src.shape)
            t[...] = src
            cblas.transpose(t.reshape(-1, nb), dx.reshape(nb, -1))
        else:
            dx[...] = src.transpose(3, 0, 1, 2)
        return dx

    def _scratch(self, attr, size):
        buf = getattr(self, attr, None)
        if buf is None or buf.size < size:
            buf = self.xp.empty(size, dtype=self.dtype)
            setattr(self, attr, buf)
        return buf[:size]

    def _fold_buffer(self, size):
        buf = getattr(self, "_fold", None)
        if buf is None or buf.size < size:
            buf = self._fold = self.xp.empty(size, dtype=self.dtype)
        return buf[:size]

    def to_image_order(self, y3, out, bias=None):
        """out (nb, M, oh, ow) = GEMM result y3 (oh, M, q) reordered (+ bias per channel).

        The bias is added to y3 first, where each channel is one contiguous run per output row
        (a broadcast inside a transposing copy is several times slower than a plain copy)."""
        nb = out.shape[0]
        m = y3.shape[1]
        if bias is not None:
            y3 += bias.reshape(1, m, 1)
        if self.batch_inner:
            out[...] = y3.reshape(self.oh, m, self.ow, nb).transpose(3, 1, 0, 2)
        else:
            out[...] = y3.reshape(self.oh, m, nb, self.ow).transpose(2, 1, 0, 3)

    def to_row_order(self, y, y3):
        """y3 (oh, M, q) = y (nb, M, oh, ow) reordered (the inverse of ``to_image_order``)."""
        nb, m = y.shape[:2]
        if self.batch_inner:
            y3.reshape(self.oh, m, self.ow, nb)[...] = y.transpose(2, 1, 3, 0)
        else:
            y3.reshape(self.oh, m, nb, self.ow)[...] = y.transpose(2, 1, 0, 3)

    def row_views(self, z, g):
        """(oh, K, nb*ow) strided view: entry oy is the column matrix of output row oy."""
        zg = z[g]
        q = z.shape[-2] * z.shape[-1]
        it = zg.itemsize
        shape = (self.oh, self.k, q)
        strides = (self.sh * self.rk * q * it, q * it, it)
        return _as_strided(self.xp, zg, shape, strides)

    def row_block(self, dz, g, oy):
        """The contiguous (K, nb*ow) block of ``dz`` that output row ``oy`` reads."""
        q = dz.shape[-2] * dz.shape[-1]
        return dz[g, oy * self.sh:oy * self.sh + self.kh].reshape(self.k, q)

    def image_views(self, z, g):
        """(oh, nb, K, ow) strided view (``batch_inner=False``): entry [oy, n] is the column
        matrix of output row oy of image n, the columns n*ow .. n*ow + ow of row_views[oy]."""
        rv = self.row_views(z, g)
        nb, it = z.shape[-2], z.itemsize
        shape = (self.oh, nb, self.k, self.ow)
        strides = (rv.strides[0], self.ow * it, rv.strides[1], it)
        return _as_strided(self.xp, z[g], shape, strides)


class CompiledIm2Col:
    """``Im2Col``'s interface (order "ckn" only) for 2-D NumPy images, on the Numba kernels."""

    def __init__(self, image_shape, kernel, stride, pad, dilation, dtype, out_spatial):
        from . import conv
        self._kernels = conv
        self.channels = int(image_shape[0])
        self.kernel_count = int(kernel[0] * kernel[1])
        self.out_spatial = tuple(out_spatial)
        self.out_count = int(out_spatial[0] * out_spatial[1])
        self.args = tuple(kernel) + tuple(stride) + tuple(pad) + tuple(dilation) + \
            self.out_spatial

    @property
    def col_rows(self):
        return self.channels * self.kernel_count

    def _check(self, order):
        if order != "ckn":
            raise ValueError("CompiledIm2Col keeps the batch in the columns (order 'ckn')")

    def im2col(self, x, out, order="ckn"):
        """``out`` (C*kh*kw, n*oh*ow) = the columns of x (n, C, H, W)."""
        self._check(order)
        self._kernels.im2col(x, 0, *self.args, out.reshape(self.col_rows, -1))
        return out

    def col2im(self, cols, out, order="ckn"):
        """``out`` (n, C, H, W) = the columns added back onto their pixels."""
        self._check(order)
        self._kernels.col2im(cols.reshape(self.col_rows, -1), 0, *self.args, out)
        return out
