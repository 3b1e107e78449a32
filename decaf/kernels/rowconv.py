"""The row-GEMM convolution engine: 2-D convolution (dilation 1) as BLAS GEMMs per output row.

Caffe's im2col + GEMM computes the same sums (decaf.layers.conv's formula); this engine orders
the work so that NumPy + BLAS reach it with less data movement (benchmarks/NOTES.md, sections
2, 5, 6): im2col along the width only (decaf.kernels.im2col.RowIm2Col), one GEMM per output row,
shifted GEMMs straight on a zero-bordered image where kh*C is large, and bias / db through ones
rows.  Kept because it still beats the plain compiled im2col + GEMM on these shapes (NOTES,
section 7); the shared scratch workspace of the convolution layers lives here too.
"""
import threading

import numpy as np
from numba import prange

from . import cblas, gemm as programs, layout, threads
from .jit import kernel, u
from .blas import can_accumulate, gemm_accumulate
from .im2col import RowIm2Col

# Largest column buffer (in elements) built at once (the plain im2col engine's bound too).
COL_BUFFER_ELEMENTS = 1 << 20
# The width-only buffer of 2-D convolutions is kept about cache-sized: its chunks of images are
# built and read by BLAS while they are still in cache (same total work, fewer memory trips).
ROW_BUFFER_ELEMENTS = 1 << 20
# ... and for the forward of the direct (n, ox) layout, whose GEMMs read one image at a time.
DIRECT_BUFFER_ELEMENTS = 1 << 18
# The shifted-GEMM path (_RowConv.shift) keeps its zero-bordered image and GEMM rows of a chunk
# of images about this size.
SHIFT_BUFFER_ELEMENTS = 1 << 21
# Shifted GEMMs need this many rows (kh * C/group) to beat the row buffer's single GEMM
# (CIFAR conv1's 15 lose, ResNet-20's 3 x 16 = 48 win: benchmarks/NOTES.md, section 12).
SHIFT_MIN_ROWS = 32
# The shifted weight gradient (RowConv._shift_backward) for kernels up to this wide: it beats
# the row buffer's GEMMs on 3 x 3 layers (ResNet-20's 16-channel ones by 0.9 of 4.9 ms) and,
# since its GEMMs run as one compiled program, ties on 5 x 5 (CIFAR quick 1.00x, LeNet 1.02x at
# one thread; 1.09x / 1.01x at two, where the row buffer's build is a serial pass; NOTES 15)
SHIFT_WGRAD_MAX_KW = 5
# Weight gradient of the direct layout: two output rows per GEMM when K >= 64 (see
# _weight_grad_blocked).
PAIRED_ROWS = True
# Top-diff rows reordered at once for the weight gradient of a layer with no data gradient
# (rounded up to whole pairs of rows for each accumulator where rows are paired)
ROW_BLOCK_ELEMENTS = 1 << 18
# On more than one thread the BLAS-layout weight gradients sum their output rows in this many
# blocks, each into its own accumulator (decaf.kernels.gemm.Shape.accumulate; a constant, so
# that the sums are the same at 2 threads or 16)
WGRAD_PARTS = 2

# Column and GEMM scratch arrays live only within one forward/backward call, so all layers of a
# thread share them (as one workspace), instead of each layer keeping its own.
_WORKSPACE = threading.local()


def scratch(xp, dtype, name, size):
    """A shared per-thread scratch array of ``size`` elements (contents undefined)."""
    store = getattr(_WORKSPACE, "bufs", None)
    if store is None:
        store = _WORKSPACE.bufs = {}
    key = (xp.__name__, np.dtype(dtype).str, name)
    buf = store.get(key)
    if buf is None or buf.size < size:
        buf = store[key] = xp.empty(int(size), dtype=dtype)
    return buf[:size]


@kernel(streaming=True)
def top_rows(dy, r0, out):
    """out[r, c, n, x] = dy[n, c, r0 + r, x]: rows r0.. of the NCHW top diff, each row's
    channels over (image, column) (the direct layout's weight gradient)."""
    rows, m, nb, ow = out.shape
    for rc in prange(rows * m):
        r, c = rc // m, rc % m
        for n in range(nb):
            for x in range(ow):
                out[u(r), u(c), u(n), u(x)] = dy[u(n), u(c), u(r0 + r), u(x)]


class RowConv:
    """2-D convolution (dilation 1) as GEMMs per output row over the row buffer Z (RowIm2Col).

    Per chunk of nb images and group g, with W' the weights reordered to (M/group, kh*Cg*kw):
    forward    Y[oy] = W' @ Z[oy]
    weights    dW'^T += Z[oy] @ dY[oy]^T       (beta = 1, Caffe's caffe_cpu_gemm accumulation)
    data       dZ[oy] += W'^T @ dY[oy], then fold dZ into the bottom diff
    Chunks of images keep Z about cache-sized (ROW_BUFFER_ELEMENTS).  Layouts, chosen here:

    * direct (columns q = (n, ox); when the top is much larger than the bottom, e.g. a first
      layer over RGB): one (M x ow) GEMM per (image, output row), written straight into the
      NCHW top; each padded row of Z ends with a row of ones (``bias_row``), so the GEMMs add
      the bias and sum db with no pass of their own over the large top.
    * BLAS (``bi``: columns q = (ox, n), decaf.kernels.cblas bound): Y and dY live as Yt (M, oh, q);
      Yt[:, oy] is a strided (M x q) matrix cblas reads and writes in place, and (M*oh*ow, nb)
      is the NCHW chunk transposed, so each move to or from a blob is one omatcopy; db is a
      GEMV with ones (Caffe's bias_multiplier).
    * (oh, M, q) with NumPy reorders and batched matmuls: without cblas (e.g. CuPy).

    Shifted GEMMs (``shift``: BLAS layout, group 1, horizontal stride 1, kh*C >=
    SHIFT_MIN_ROWS): the chunk is copied once into a zero-bordered image I[h, c, x, n] (padded
    coordinates).  For kernel column j the rows (i, c) of Z[oy] are evenly spaced rows of I
    (I[oy*sh + i, c, j + ox, n] sits at (i*C + c) * Wz*nb + (ox*nb + n) past I[oy*sh, 0, j, 0]),
    a strided matrix BLAS reads in place, so Z is never built for them:
    forward    Y[oy]  = sum_j W_j @ I_j[oy]          (W_j = W[:, :, :, j] as M x kh*C)
    data       dI_j[oy] += W_j^T @ dY[oy]            (beta = 1, straight into dI; no fold)
    and the bottom diff is dI's interior.  The weight gradient of kernels up to
    SHIFT_WGRAD_MAX_KW wide reads I too (dW_j^T += I_j[oy] @ dY[oy]^T, ``_shift_backward``);
    wider kernels keep Z, whose (kh*C*kw x M) GEMMs run faster than kw narrower ones there.
    """

    def __init__(self, xp, dtype, num, channels, in_spatial, num_output, geometry, group,
                 out_spatial, batch_inner=None, bias_row=None):
        kernel, stride, pad, _ = geometry
        self.xp, self.dtype, self.num = xp, np.dtype(dtype), num
        self.group, self.m, self.mg = group, num_output, num_output // group
        self.cg = channels // group
        self.kh, self.kw = kernel
        self.oh, self.ow = out_spatial
        self.h, self.w = in_spatial
        (self.sh, _), (self.ph, self.pw) = stride, pad
        probe = RowIm2Col(channels, in_spatial, kernel, stride, pad, group, 1, dtype, xp,
                          out_spatial)
        limit = min(COL_BUFFER_ELEMENTS, ROW_BUFFER_ELEMENTS)
        most = int(max(1, min(num, limit // max(probe.per_image(), 1))))
        chunks = -(-num // most)
        self.nb = -(-num // chunks)          # equal chunks (the last one at most smaller)
        gemm = cblas.raw_gemm(dtype) if xp is np else None
        # batch innermost unless the top is much larger than the bottom (then the direct
        # GEMMs into the NCHW top below cost less than moving a large top between layouts)
        if batch_inner is None:
            in_count = channels * in_spatial[0] * in_spatial[1]
            batch_inner = num_output * self.oh * self.ow <= 4 * in_count and self.nb > 1
        # direct NCHW forward (below): the bias and db come out of the GEMMs through the ones
        # rows of the buffer (RowIm2Col.bias_row) instead of a pass over the large top each
        self.bias_row = (xp is np and not batch_inner) if bias_row is None else bool(bias_row)
        self.rows = RowIm2Col(channels, in_spatial, kernel, stride, pad, group, self.nb,
                              dtype, xp, out_spatial, batch_inner=batch_inner,
                              bias_row=self.bias_row)
        # the direct forward reads Z one image at a time: chunks of about
        # DIRECT_BUFFER_ELEMENTS keep it in L2 (a plan of its own: the buffer keeps its layout)
        self.nbf, self.rows_fwd = self.nb, self.rows
        if not batch_inner and xp is np:
            most = int(max(1, min(num, DIRECT_BUFFER_ELEMENTS // max(probe.per_image(), 1))))
            chunks = -(-num // most)
            if -(-num // chunks) < self.nb:
                self.nbf = -(-num // chunks)
                self.rows_fwd = RowIm2Col(channels, in_spatial, kernel, stride, pad, group,
                                          self.nbf, dtype, xp, out_spatial, batch_inner=False,
                                          bias_row=self.bias_row)
        self.k = self.rows.k
        self.wt = xp.empty((group, self.mg, self.k), dtype=dtype)     # W' (group, Mg, K)
        self.dwt = xp.empty((group, self.k, self.mg), dtype=dtype)    # dW'^T accumulator
        self.fast = xp is np and can_accumulate(self.wt[0], self.wt[0].T, self.dwt[0])
        # forward GEMMs straight into the NCHW top when the columns are (n, ox) (NumPy: BLAS
        # takes the strided per-(row, image) operands as they are)
        self.direct = xp is np and not batch_inner
        self.gemm = gemm if batch_inner else None
        self.bi = self.gemm is not None
        self.gemm_direct = self.direct and cblas.available(dtype)
        # shifted GEMMs need kh*C/group rows per GEMM to pay off (CIFAR conv1's 15 do not)
        self.shift = (self.bi and group == 1 and stride[1] == 1
                      and self.kh * self.cg >= SHIFT_MIN_ROWS)
        self.shift_wgrad = self.shift and self.kw <= SHIFT_WGRAD_MAX_KW
        self.hz, self.wz = self.rows.hz, self.rows.wz
        per_image = self.hz * channels * self.wz + self.oh * num_output * self.ow
        most = int(max(1, min(num, SHIFT_BUFFER_ELEMENTS // max(per_image, 1))))
        chunks = -(-num // most)
        self.nbs = -(-num // chunks)
        self.wj = xp.empty((self.kw, self.m, self.kh * channels), dtype=dtype) \
            if self.shift else None
        self._images = {}
        self._ones = None
        # set by the layer: the forward_backward_pass in which the bottom stays unchanged
        # from forward to backward (decaf.layer), else None; _kept: what self._images holds
        self.token, self._kept = None, None

    def chunks(self, nb=None):
        nb = nb or self.nb
        for n0 in range(0, self.num, nb):
            yield n0, min(n0 + nb, self.num)

    def _weights(self, w, bias=None):
        """W' (group, M/group, K); with bias rows, the weight of kernel row 0's ones row is
        the bias (0 for the other kernel rows)."""
        g, mg, cg, kh, kw = self.group, self.mg, self.cg, self.kh, self.kw
        w5 = w.reshape(g, mg, cg, kh, kw).transpose(0, 1, 3, 2, 4)
        if not self.bias_row:
            self.wt.reshape(g, mg, kh, cg, kw)[...] = w5
            return self.wt
        wt4 = self.wt.reshape(g, mg, kh, self.rows.rk)
        wt4[..., :-1] = w5.reshape(g, mg, kh, cg * kw)
        wt4[..., -1] = 0
        if bias is not None:
            wt4[:, :, 0, -1] = bias.reshape(g, mg)
        return self.wt

    def _weight_diff(self, dw, db):
        """dw (+db) += the dW'^T accumulator (its ones rows hold db)."""
        g, mg, cg, kh, kw = self.group, self.mg, self.cg, self.kh, self.kw
        acc = self.dwt.reshape(g, kh, self.rows.rk, mg)
        data = acc[:, :, :cg * kw] if self.bias_row else acc
        dw.reshape(g, mg, cg, kh, kw)[...] += \
            data.reshape(g, kh, cg, kw, mg).transpose(0, 4, 2, 1, 3)
        if self.bias_row and db is not None:
            db += acc[:, 0, -1].reshape(-1)

    def _rows_layout(self, name, nb):
        """Shared scratch of shape (oh, M, nb*ow) for Y or dY."""
        size = self.oh * self.m * nb * self.ow
        return scratch(self.xp, self.dtype, name, size).reshape(self.oh, self.m, nb * self.ow)

    # -- BLAS layout (see the class docstring) -------------------------------------------------
    def _yt(self, name, nb):
        """Shared scratch Yt of shape (M, oh, nb*ow)."""
        size = self.m * self.oh * nb * self.ow
        return scratch(self.xp, self.dtype, name, size).reshape(self.m, self.oh, nb * self.ow)

    def _to_yt(self, a, name):
        """The NCHW chunk a (nb, M, oh, ow) as Yt (M, oh, ow*nb): one 2-D transpose."""
        nb = a.shape[0]
        yt = self._yt(name, nb)
        programs.transpose(a.reshape(nb, -1), yt.reshape(-1, nb))
        return yt

    def _from_yt(self, yt, out, bias=None):
        """out (nb, M, oh, ow) = Yt (+ bias per channel, added to Yt first)."""
        nb = out.shape[0]
        if bias is not None:
            yt.reshape(self.m, -1)[...] += bias.reshape(-1, 1)
        if out.flags.c_contiguous:
            programs.transpose(yt.reshape(-1, nb), out.reshape(nb, -1))
        else:
            out[...] = yt.reshape(self.m, self.oh, self.ow, nb).transpose(3, 0, 1, 2)

    def _bias_grad(self, dyt, db):
        """db += dY summed over images and positions: a GEMV with ones, as Caffe."""
        cols = dyt.size // self.m
        if self._ones is None or self._ones.size < cols:
            self._ones = np.ones(cols, self.dtype)
        db += np.matmul(dyt.reshape(self.m, cols), self._ones[:cols])

    def _shift_weights(self, w):
        """W_j[m, i*C + c] = w[m, c, i, j], as (kw, M, kh*C)."""
        self.wj.reshape(self.kw, self.m, self.kh, self.cg)[...] = w.transpose(3, 0, 2, 1)
        return self.wj

    def _shift_image(self, x, reuse=False):
        """The chunk x (nb, C, H, W) in the zero-bordered image I (Hz, C, Wz, nb); ``reuse``
        (the backward): as the forward left it, if that was x in the same pass."""
        nb = x.shape[0]
        img = self._images.get(nb)
        if img is None:          # the border stays zero: only the interior is ever written
            img = self._images[nb] = self.xp.zeros((self.hz, self.cg, self.wz, nb), self.dtype)
        key = None if self.token is None else (self.token, x.ctypes.data, x.shape, x.strides)
        if not (reuse and key is not None and self._kept == key):
            layout.to_bordered(x, img, self.ph, self.pw,
                               scratch(self.xp, self.dtype, "bordered", x.size))
        self._kept = key
        return img

    def _bi_forward(self, x, w, bias, y, post=None):
        m, it, nt = self.m, self.dtype.itemsize, cblas.NO_TRANS
        if self.shift:
            kc = self.kh * self.cg
            wb = self._shift_weights(w).ctypes.data
        else:
            wt = self._weights(w)
        for n0, n1 in self.chunks(self.nbs if self.shift else self.nb):
            nb = n1 - n0
            q = self.ow * nb
            yt = self._yt("gemm", nb)
            yb, ldy = yt.ctypes.data, self.oh * q
            if self.shift:    # Y[oy] (+)= W_j @ I[oy*sh : +kh, :, j : j+ow]
                img = self._shift_image(x[n0:n1])
                step, ld = self.sh * self.cg * self.wz * nb * it, self.wz * nb
                ptrs = programs.grid((wb, 0, m * kc * it), (img.ctypes.data, step, nb * it),
                                     (yb, q * it, 0), self.oh, self.kw)
                programs.Shape(self.dtype, nt, nt, m, q, kc, kc, ld, ldy).rows(ptrs)
            else:             # Y[g, oy] = W'_g @ Z[oy]
                z = self.rows.build(x[n0:n1])
                k, mg = self.k, self.mg
                ptrs = np.concatenate([programs.grid(
                    (wt[g].ctypes.data, 0, 0), self._row_grid(z, g),
                    (yb + g * mg * self.oh * q * it, q * it, 0), self.oh)
                    for g in range(self.group)])
                programs.Shape(self.dtype, nt, nt, mg, q, k, k, q, ldy).rows(ptrs)
            self._from_yt(yt, y[n0:n1], bias)
            if post is not None:
                post(n0, n1)

    def _bi_backward(self, ydiff, x, w, dw, db, xdiff):
        if self.shift_wgrad and dw is not None:
            return self._shift_backward(ydiff, x, w, dw, db, xdiff)
        it, k, mg, oh = self.dtype.itemsize, self.k, self.mg, self.oh
        nt, tr = cblas.NO_TRANS, cblas.TRANS
        wt = self._weights(w)
        wj = self._shift_weights(w) if self.shift and xdiff is not None else None
        if dw is not None:
            self.dwt[...] = 0
            bases, extra = self._parts(self.dwt)
        same_chunks = self.nbs == self.nb      # the shifted data gradient reuses each dY chunk
        for n0, n1 in self.chunks():
            nb = n1 - n0
            q = self.ow * nb
            dyt = self._to_yt(ydiff[n0:n1], "gemm")
            db_, ldy = dyt.ctypes.data, oh * q
            if db is not None:
                self._bias_grad(dyt, db)
            if dw is not None:                 # dW'^T_g += Z[oy] @ dY[g, oy]^T
                z = self.rows.build(x[n0:n1])
                ptrs = np.concatenate([programs.grid(
                    self._row_grid(z, g), (db_ + g * mg * oh * q * it, q * it, 0),
                    (self.dwt[g].ctypes.data, 0, 0), oh) for g in range(self.group)], axis=1)
                programs.Shape(self.dtype, nt, tr, k, mg, q, q, ldy, mg).accumulate(ptrs, bases)
            if wj is not None and same_chunks:
                self._shift_data_grad(wj, dyt, xdiff[n0:n1])
            if xdiff is None or wj is not None:
                continue
            rows = self.rows
            dz = scratch(np, self.dtype, "col", rows.per_image() * nb).reshape(rows.shape(nb))
            dz[...] = 0
            # dZ[oy] += W'_g^T @ dY[g, oy]; rows oy*sh + i of dZ overlap (rk = C/group*kw
            # (+ 1 ones row) values each)
            ptrs = np.concatenate([programs.grid(
                (wt[g].ctypes.data, 0, 0), (db_ + g * mg * oh * q * it, q * it, 0),
                self._row_grid(dz, g), oh) for g in range(self.group)], axis=1)
            self._overlapping(programs.Shape(self.dtype, tr, nt, k, q, mg, k, ldy, q), ptrs, dz)
            rows.fold(dz, xdiff[n0:n1])
        if dw is not None:
            self._add_parts(self.dwt, extra)
            self._weight_diff(dw, None)
        if wj is not None and not same_chunks:
            # shifted data gradient: its own (larger) chunks, like the forward's
            for n0, n1 in self.chunks(self.nbs):
                self._shift_data_grad(wj, self._to_yt(ydiff[n0:n1], "gemm"), xdiff[n0:n1])

    def _shift_backward(self, ydiff, x, w, dw, db, xdiff):
        """Both gradients by shifted GEMMs on the zero-bordered image, chunk by chunk:
        weights    dW_j^T += I_j[oy] @ dY[oy]^T     (kh*C x M, beta = 1)
        data       dI_j[oy] += W_j^T @ dY[oy]       (_shift_data_grad)"""
        m, kc, it = self.m, self.kh * self.cg, self.dtype.itemsize
        wj = self._shift_weights(w) if xdiff is not None else None
        dwj = None
        if dw is not None:
            dwj = scratch(self.xp, self.dtype, "shift_dw", self.kw * m * kc)
            dwj[...] = 0
            bases, extra = self._parts(dwj)
        for n0, n1 in self.chunks(self.nbs):
            nb = n1 - n0
            q = self.ow * nb
            dyt = self._to_yt(ydiff[n0:n1], "gemm")
            if db is not None:
                self._bias_grad(dyt, db)
            if dwj is not None:        # dW_j^T += I[oy*sh : +kh, :, j : j+ow] @ dY[oy]^T
                img = self._shift_image(x[n0:n1], reuse=True)
                step, ld, ldy = self.sh * self.cg * self.wz * nb * it, self.wz * nb, self.oh * q
                ptrs = programs.grid((img.ctypes.data, step, nb * it),
                                     (dyt.ctypes.data, q * it, 0),
                                     (dwj.ctypes.data, 0, m * kc * it), self.oh, self.kw)
                programs.Shape(self.dtype, cblas.NO_TRANS, cblas.TRANS, kc, m, q, ld, ldy,
                               m).accumulate(ptrs, bases)
            if wj is not None:
                self._shift_data_grad(wj, dyt, xdiff[n0:n1])
        if dwj is not None:        # dw[m, c, i, j] += dW_j^T[i*C + c, m]
            self._add_parts(dwj, extra)
            dw += dwj.reshape(self.kw, self.kh, self.cg, m).transpose(3, 2, 1, 0)

    def _shift_data_grad(self, wj, dyt, xdiff):
        m, kc, it = self.m, self.kh * self.cg, self.dtype.itemsize
        nb = xdiff.shape[0]
        q = self.ow * nb
        size = self.hz * self.cg * self.wz * nb
        gimg = scratch(self.xp, self.dtype, "shift_grad", size)
        gimg[...] = 0
        step, ld, ldy = self.sh * self.cg * self.wz * nb * it, self.wz * nb, self.oh * q
        # dI[oy*sh : +kh, :, j : j+ow] += W_j^T @ dY[oy] (rows oy*sh + i of dI overlap)
        ptrs = programs.grid((wj.ctypes.data, 0, m * kc * it), (dyt.ctypes.data, q * it, 0),
                             (gimg.ctypes.data, step, nb * it), self.oh, self.kw)
        self._overlapping(programs.Shape(self.dtype, cblas.TRANS, cblas.NO_TRANS, kc, q, m, kc,
                                         ldy, ld), ptrs, gimg)
        layout.from_bordered(gimg.reshape(self.hz, self.cg, self.wz, nb), self.ph, self.pw,
                             xdiff, scratch(self.xp, self.dtype, "bordered", xdiff.size))

    # -- GEMM programs (decaf.kernels.gemm) -----------------------------------------------------
    def _direct_program(self, wt, rows, z, y):
        """The direct forward's GEMMs Y[n, g, :, oy] = W'_g @ Z[oy][:, n*ow : +ow] on more
        than one thread (on one, NumPy's batched matmul of the same views, 4 % faster on res10
        at batch 1): one task per image, or per GEMM where the images are fewer than twice the
        threads (they write disjoint rows of the top, so batch 1 runs in parallel too; per
        image is 0.5 % faster on LeNet's 64)."""
        nb, it, mg, ohw = y.shape[0], self.dtype.itemsize, self.mg, self.oh * self.ow
        shape = programs.Shape(self.dtype, cblas.NO_TRANS, cblas.NO_TRANS, mg, self.ow, self.k,
                               self.k, nb * self.ow, ohw)
        ptrs = []
        for g in range(self.group):
            zb, zstep, _ = self._row_grid(z, g)
            ptrs.append(programs.grid((wt[g].ctypes.data, 0, 0), (zb, self.ow * it, zstep),
                                      (y.ctypes.data + g * mg * ohw * it, self.m * ohw * it,
                                       self.ow * it), nb, self.oh))
        ptrs = np.concatenate(ptrs, axis=1)                 # (nb, group * oh, 3)
        if nb < 2 * threads.get_num_threads():
            ptrs = ptrs.reshape(-1, 1, 3)
        shape.rows(ptrs, 0.0, 0.0)

    def _row_grid(self, z, g):
        """(base, row step, 0) of the row buffer's per-output-row matrices of group g."""
        zr = self.rows.row_views(z, g)
        return zr.ctypes.data, zr.strides[0], 0

    def _overlapping(self, shape, ptrs, acc):
        """A data gradient's GEMMs, whose output rows closer than kh / sh write overlapping
        rows of ``acc``: in two phases of row blocks kept apart (Shape.phased); where the rows
        are too few for that and the program runs in parallel, in two halves of the rows, the
        second into a zeroed copy of ``acc`` added to it after."""
        reach = -(-self.kh // self.sh)
        if programs.parallel() and shape.phased_blocks(self.oh, reach) < 2:
            bases, extra = self._parts(acc, 2, "dgrad_copy")
            shape.accumulate(ptrs, bases, per_j=False)
            self._add_parts(acc, extra)
        else:
            shape.phased(ptrs, reach)

    def _parts(self, acc, parts=None, name="wgrad_parts"):
        """Base addresses of the accumulators of ``acc`` (WGRAD_PARTS of them where programs run
        in parallel, else 1): itself first, then zeroed copies, returned too for
        ``_add_parts`` to sum into it."""
        parts = parts or (WGRAD_PARTS if programs.parallel() else 1)
        extra = scratch(self.xp, self.dtype, name, (parts - 1) * acc.size)
        extra[...] = 0
        extra = extra.reshape(parts - 1, acc.size)
        return [acc.ctypes.data] + [row.ctypes.data for row in extra], extra

    @staticmethod
    def _add_parts(acc, extra):
        flat = acc.reshape(-1)
        for row in extra:
            flat += row

    # -- both layouts ---------------------------------------------------------------------------
    def forward(self, x, w, bias, y, post=None):
        """y = W (*) x + b for x (num, C, H, W), y (num, M, oh, ow); ``post(n0, n1)`` once
        images n0..n1 are done."""
        if self.bi:
            return self._bi_forward(x, w, bias, y, post)
        xp, wt = self.xp, self._weights(w, bias if self.direct else None)
        rows = self.rows_fwd if self.direct else self.rows
        for n0, n1 in self.chunks(self.nbf if self.direct else self.nb):
            nb = n1 - n0
            z = rows.build(x[n0:n1])
            if self.direct:
                # one (M/group x ow) GEMM per (image, output row), written straight into the
                # NCHW top (row stride oh*ow): as fast as the (oh, M, q) GEMMs plus no reorder;
                # image-major order keeps each image's top rows together (15 % faster)
                if self.gemm_direct and programs.parallel() and y.flags.c_contiguous:
                    self._direct_program(wt, rows, z, y[n0:n1])
                else:
                    for g in range(self.group):
                        yg = y[n0:n1, g * self.mg:(g + 1) * self.mg].transpose(0, 2, 1, 3)
                        xp.matmul(wt[g], rows.image_views(z, g).transpose(1, 0, 2, 3), out=yg)
                if bias is not None and not self.bias_row:
                    y[n0:n1] += bias.reshape(1, -1, 1, 1)
            else:
                y3 = self._rows_layout("gemm", nb)
                for g in range(self.group):
                    xp.matmul(wt[g], self.rows.row_views(z, g),
                              out=y3[:, g * self.mg:(g + 1) * self.mg])
                self.rows.to_image_order(y3, y[n0:n1], bias)
            if post is not None:
                post(n0, n1)

    def backward(self, ydiff, x, w, dw, db, xdiff):
        """db += sum ydiff; dW += ydiff (*) x; xdiff = W^T (*) ydiff (those not None)."""
        if dw is None and xdiff is None:
            if db is not None:
                db += ydiff.sum(axis=(0, 2, 3))
            return
        if self.bi:
            return self._bi_backward(ydiff, x, w, dw, db, xdiff)
        wt = self._weights(w)
        if dw is not None:
            self.dwt[...] = 0
        db_from_gemm = self.bias_row and dw is not None
        blocked = (self.gemm_direct and self.fast and xdiff is None and dw is not None
                   and not self.rows.batch_inner)
        for n0, n1 in self.chunks():
            nb = n1 - n0
            if blocked:
                self._weight_grad_blocked(x[n0:n1], ydiff[n0:n1], None if db_from_gemm else db)
                continue
            dy3 = self._rows_layout("gemm", nb)
            self.rows.to_row_order(ydiff[n0:n1], dy3)
            if db is not None and not db_from_gemm:
                db += dy3.sum(axis=2).sum(axis=0)
            if dw is not None:
                self._weight_grad(self.rows.build(x[n0:n1]), dy3)
            if xdiff is not None:
                self._data_grad(wt, dy3, xdiff[n0:n1])
        if dw is not None:
            self._weight_diff(dw, db)

    def _weight_grad_blocked(self, x, ydiff, db):
        """The weight gradient of a chunk with the top diff reordered a few output rows at a
        time (about ROW_BLOCK_ELEMENTS), each block's GEMMs run while it is in cache (no data
        gradient wanted: e.g. the first convolution over the data)."""
        z = self.rows.build(x)
        nb, m, mg = x.shape[0], self.m, self.mg
        q = nb * self.ow
        rb = max(1, min(self.oh, ROW_BLOCK_ELEMENTS // max(m * q, 1)))
        paired = (PAIRED_ROWS and self.group == 1 and self.rows.sh == 1 and self.oh > 1
                  and self.fast and self.k >= 64)  # (LeNet's conv1, K = 30, loses to them)
        if paired:
            # whole pairs, as many per block as accumulators: an odd row or pair per block is
            # one GEMM on one thread while the others wait (CIFAR quick's conv1, 5 rows per
            # block: 9.2 -> 6.7 ms at two threads, 12.4 -> 11.6 at one, with 8)
            unit = 2 * WGRAD_PARTS
            rb = min(self.oh, -(-rb // unit) * unit)
        blk = scratch(self.xp, self.dtype, "dyrows", rb * m * q)
        zr = [self.rows.row_views(z, g) for g in range(self.group)]
        pairs = None
        it, rk = z.itemsize, self.rows.rk
        nt, tr = cblas.NO_TRANS, cblas.TRANS
        if paired:
            k2 = self.k + rk
            pairs = scratch(self.xp, self.dtype, "pairs", k2 * 2 * m).reshape(k2, 2 * m)
            pairs[...] = 0
            pair_bases, pair_extra = self._parts(pairs, name="pair_parts")
            pair_gemm = programs.Shape(self.dtype, nt, tr, k2, 2 * m, q, q, q, 2 * m)
        bases, extra = self._parts(self.dwt)
        row_gemm = programs.Shape(self.dtype, nt, tr, self.k, mg, q, q, q, mg)
        for r0 in range(0, self.oh, rb):
            r1 = min(self.oh, r0 + rb)
            b = blk[:(r1 - r0) * m * q].reshape(r1 - r0, m, nb, self.ow)
            top_rows(ydiff, r0, b)
            b = b.reshape(r1 - r0, m, q)
            if db is not None:
                db += b.sum(axis=2).sum(axis=0)
            oy = r0
            if pairs is not None and r1 - r0 > 1:
                # rows oy and oy + 1 in one GEMM: Z's rows of both (kh + 1 padded rows) times
                # both rows' top diffs, twice the output channels per packed value of Z; the
                # two diagonal blocks of the (K + rk) x 2M result are the wanted sums
                npair = (r1 - r0) // 2
                ptrs = programs.grid((z.ctypes.data + r0 * rk * q * it, 2 * rk * q * it, 0),
                                     (b.ctypes.data, 2 * m * q * it, 0),
                                     (pairs.ctypes.data, 0, 0), npair)
                pair_gemm.accumulate(ptrs, pair_bases)
                oy += 2 * npair
            if oy < r1:          # dW'^T_g += Z[o] @ dY[o, g]^T for the other rows
                ptrs = np.concatenate([programs.grid(
                    (zr[g].ctypes.data + oy * zr[g].strides[0], zr[g].strides[0], 0),
                    (b.ctypes.data + ((oy - r0) * m + g * mg) * q * it, m * q * it, 0),
                    (self.dwt[g].ctypes.data, 0, 0), r1 - oy) for g in range(self.group)],
                    axis=1)
                row_gemm.accumulate(ptrs, bases)
        self._add_parts(self.dwt, extra)
        if pairs is not None:
            self._add_parts(pairs, pair_extra)
            self.dwt[0] += pairs[:self.k, :m]
            self.dwt[0] += pairs[rk:, m:]

    def _weight_grad(self, z, dy3):
        xp = self.xp
        for g in range(self.group):
            zr = self.rows.row_views(z, g)
            dyg = dy3[:, g * self.mg:(g + 1) * self.mg]
            if self.fast:
                for oy in range(self.oh):
                    gemm_accumulate(zr[oy], dyg[oy].T, self.dwt[g])
                continue
            # one batched GEMM per output row into a small scratch, then the sum over rows
            tmp = scratch(xp, self.dtype, "wgrad", self.oh * self.k * self.mg)
            tmp = tmp.reshape(self.oh, self.k, self.mg)
            xp.matmul(zr, dyg.transpose(0, 2, 1), out=tmp)
            self.dwt[g] += tmp.sum(axis=0)

    def _data_grad(self, wt, dy3, xdiff):
        xp, rows = self.xp, self.rows
        nb = xdiff.shape[0]
        dz = scratch(xp, self.dtype, "col", rows.per_image() * nb).reshape(rows.shape(nb))
        dz[...] = 0
        for g in range(self.group):
            dyg = dy3[:, g * self.mg:(g + 1) * self.mg]
            wtg = wt[g].T
            if self.fast:     # dZ[oy] += W'^T dY[oy], in place (blocks of rows overlap)
                for oy in range(self.oh):
                    gemm_accumulate(wtg, dyg[oy], rows.row_block(dz, g, oy))
                continue
            # every row's W'^T dY[oy] in one batched GEMM, then added kernel row by kernel row
            # (rows oy*sh + i of dZ for one i never overlap)
            q = dyg.shape[2]
            part = scratch(xp, self.dtype, "dgrad", self.oh * self.k * q)
            part = part.reshape(self.oh, self.k, q)
            xp.matmul(wtg, dyg, out=part)
            part = part.reshape((self.oh, self.kh) + dz.shape[2:])
            for i in range(self.kh):
                d = dz[g, i:i + rows.sh * (self.oh - 1) + 1:rows.sh]
                xp.add(d, part[:, i], out=d)
        self.rows.fold(dz, xdiff)
