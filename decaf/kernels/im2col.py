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
