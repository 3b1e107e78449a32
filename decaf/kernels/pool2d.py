"""MAX and AVE pooling kernels for (N, C, H, W) arrays: separable passes over strided views.

``SeparablePool`` pools over the kernel rows, then over the kernel columns, reading only the
cells inside the bottom (Caffe's clipped windows; no padded copy).  Used by the Pooling layer;
see its class docstring for the exact rules (Caffe's first-maximum tie rule, NaN, empty windows,
average divisor).
"""
import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


class Axis:
    """One spatial axis of a pooling: for each kernel offset t, the outputs [lo, hi) whose
    window cell t lies inside the bottom, and the strided bottom slice those cells read."""

    def __init__(self, size, kernel, stride, pad, out):
        self.size, self.stride, self.pad, self.out = size, stride, pad, out
        self.start = np.arange(out) * stride - pad          # window starts (may be < 0)
        self.offsets = []
        for t in range(kernel):
            lo = max(0, -((t - pad) // stride))               # first o with o*s - p + t >= 0
            hi = min(out, (size - 1 + pad - t) // stride + 1)  # last o with o*s - p + t < size
            if hi > lo:
                src = lo * stride - pad + t
                self.offsets.append((t, slice(lo, hi),
                                     slice(src, src + stride * (hi - lo - 1) + 1, stride)))
        covered = np.zeros(out, bool)
        for _, o, _ in self.offsets:
            covered[o] = True
        self.covered = covered
        # an offset that every output reads (the first pass may then assign instead of reduce)
        self.full = next((i for i, (_, o, _) in enumerate(self.offsets)
                          if o.start == 0 and o.stop == out), None)


class SeparablePool:
    """MAX / AVE pooling of (N, C, H, W) as two 1-D passes: over the kernel rows into
    (N, C, Ho, W) ("cols": each window column reduced), then over the kernel columns into
    (N, C, Ho, Wo).  Only cells inside the bottom are read (no padded copy); the max is exact in
    any order, sums differ from Caffe's window scan only by float rounding.

    Argmax: Caffe keeps the first maximum of its (h, w) scan, i.e. the cell holding the window's
    maximum with the smallest (row, column).  The row pass counts, per window column, the first
    row offset i holding that column's maximum (branch-free, no masked writes); the column pass
    then takes, among the columns whose maximum is the window's, the smallest key
    i * W + wstart + j, which is the cell's flat index in its plane minus hstart * W."""

    # MAX pooling runs over the batch in chunks of about this many bottom values, with scratch
    # arrays the size of one chunk, so the dozen passes over a chunk find them in cache.
    CHUNK_ELEMENTS = 1 << 17

    def __init__(self, xp, dtype, shape, kernel, stride, pad, out):
        n, c, h, w = shape
        self.xp, self.dtype, self.shape, self.out = xp, np.dtype(dtype), shape, out
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.ah = Axis(h, kernel[0], stride[0], pad[0], out[0])
        self.aw = Axis(w, kernel[1], stride[1], pad[1], out[1])
        self.overlap = any(k > s and o > 1 for k, s, o in zip(kernel, stride, out))
        top_full = (n, c) + tuple(out)
        self.top = xp.empty(top_full, dtype)       # the layer's own copy of top
        self._index = xp.empty(top_full, np.intp)  # flat index into the bottom (``index``)
        # the phase path keeps only each window's small key (plus the chunk's base, its flat
        # index): 1 byte per window instead of 8 written and read back; ``index`` expands it
        self._keyed = False
        self._key_store = None
        self.nb = max(1, min(n, self.CHUNK_ELEMENTS // max(1, c * h * w)))
        cols_shape, top_shape = (self.nb, c, out[0], w), (self.nb, c) + tuple(out)
        self.cols = xp.empty(cols_shape, dtype)    # row-pass result of one chunk
        self.irow = xp.empty(cols_shape, np.int8 if kernel[0] < 128 else np.int32)
        big = kernel[0] * w + kernel[1] + 1         # above every key i * W + j
        ktype = np.int16 if big < 2 ** 15 else np.intp
        self.big = ktype(big)
        self.keys = xp.empty(cols_shape, ktype)    # i * W per window column
        self.cand = xp.empty(top_shape, ktype)
        self.best = xp.empty(top_shape, ktype)     # smallest key of each window
        self.bufs = {"cols": (xp.empty(cols_shape, bool), xp.empty(cols_shape, bool)),
                     "top": xp.empty(top_shape, bool)}
        # flat index of each window's cell (0, 0) within a chunk: plane * H * W + hstart * W
        # + wstart; a chunk starting at image n0 adds n0 * C * H * W
        base = (self.ah.start[:, None] * w + self.aw.start[None, :])[None, None]
        plane = np.arange(self.nb * c).reshape(self.nb, c, 1, 1) * (h * w)
        self.base = xp.asarray((base + plane).astype(np.intp))
        self.base_big = self.base + np.intp(big)
        self.image = c * h * w
        self.width = np.intp(w)
        self.bad = None           # windows without a usable maximum (set by ``max``)
        self._plan_flat_columns(w, kernel[1], stride[1], pad[1], out[1])
        # MAX pooling on the stride-phase layout where it applies (contiguous passes)
        self.phase = PhaseMax(self) if PhaseMax.applies(shape, kernel, stride, pad, out) else None

    def _plan_flat_columns(self, w, k, s, p, out):
        """When W == stride * Wo, the cells of kernel column j for all outputs of a chunk are one
        strided 1-D view: the flat (row-major) array from element r = (j - p) mod s with step s,
        shifted by d = (j - p) div s outputs.  Whole-chunk 1-D views make NumPy's loops long (a
        slice of each row would loop over Wo values at a time).  A shifted view reads, for the
        d outputs at the end (d > 0) or start (d < 0) of each row, cells of the neighbouring
        row: those "edge" output columns are recomputed from their own cells afterwards."""
        self.flat = s > 1 and w == s * out and out > 1
        self.edge = []
        if self.flat:
            for j, o, _ in self.aw.offsets:
                d = (j - p) // s
                self.edge.extend(range(out - d, out) if d > 0 else range(0, -d))
            self.edge = sorted(set(self.edge))

    def _columns(self, src, *dsts):
        """(j, src cells, [dst outputs]) for each kernel column j of the windows, as 1-D
        strided views over the whole chunk when ``self.flat`` (then fix ``self.edge``)."""
        if not self.flat:
            for j, o, s in self.aw.offsets:
                yield j, src[..., s], [d[..., o] for d in dsts]
            return
        sw, pw = self.aw.stride, self.aw.pad
        fs = src.reshape(-1)
        flat = [d.reshape(-1) for d in dsts]
        n = fs.size // sw                  # outputs: W == stride * Wo
        for j, o, s in self.aw.offsets:
            d, r = divmod(j - pw, sw)
            ph = fs[r::sw]
            if d >= 0:
                yield j, ph[d:], [f[:n - d] for f in flat]
            else:
                yield j, ph[:n + d], [f[-d:] for f in flat]

    def _edge_columns(self, ow):
        """(j, source column) of the window cells of output column ``ow`` inside the bottom."""
        return [(j, ow * self.aw.stride - self.aw.pad + j) for j, o, s in self.aw.offsets
                if o.start <= ow < o.stop]

    @staticmethod
    def _at(axis, sl):
        return (slice(None),) * axis + (sl,)

    def _reduce(self, op, src, dst, ax, axis, init):
        """dst = op-reduction over the kernel offsets along ``axis`` of src's windows."""
        xp = self.xp
        order = list(ax.offsets)
        if ax.full is not None:
            t, o, s = order.pop(ax.full)
            xp.copyto(dst, src[self._at(axis, s)])
        else:
            dst.fill(init)
        for t, o, s in order:
            d = dst[self._at(axis, o)]
            op(d, src[self._at(axis, s)], out=d)

    @property
    def index(self):
        """Flat bottom index of each window's first maximum (after ``max(..., with_index)``
        or ``argmax``)."""
        if self._keyed:
            for n0, sl in self._chunks():
                self.phase.expand(self._key_store[sl], n0, self._index[sl])
            self._keyed = False
        return self._index

    def _chunks(self):
        n = self.shape[0]
        for n0 in range(0, n, self.nb):
            yield n0, slice(n0, min(n, n0 + self.nb))

    def max(self, x, top, with_index=False):
        """top = window maxima (and, with_index, ``self.index``: their flat bottom indices).
        As Caffe (``x > best`` from best = -FLT_MAX) NaN cells never win, and a window with no
        cell in the bottom, or only NaN / -inf cells, gives -FLT_MAX and no argmax (mask -1,
        no gradient)."""
        xp = self.xp
        self.bad = None
        self._keyed = False
        if self.phase is not None:
            direct = (type(top) is type(self.top) and top.dtype == self.dtype
                      and top.shape == self.top.shape and top.flags.c_contiguous)
            self._phase_max(x, with_index, top if direct else self.top)
            if not direct:
                xp.copyto(top, self.top)
            return
        for n0, sl in self._chunks():
            m = sl.stop - sl.start
            cols, mx = self.cols[:m], self.top[sl]
            self._reduce(xp.fmax, x[sl], cols, self.ah, 2, -np.inf)
            self._column_max(cols, mx)
            ok = self.bufs["top"][:m]
            xp.greater_equal(mx, -FLT_MAX, out=ok)
            bad = None
            if not bool(ok.all()):
                if self.bad is None:
                    self.bad = xp.zeros(self.top.shape, bool)
                bad = self.bad[sl]
                xp.logical_not(ok, out=bad)
                xp.copyto(mx, -FLT_MAX, where=bad)
            if with_index:
                self._argmax(x[sl], n0, sl, bad, cols_ready=True)
        xp.copyto(top, self.top)

    def _phase_max(self, x, with_index, out):
        for n0, sl in self._chunks():
            bad = self.phase.run(x[sl], out[sl], n0, with_index)
            if bad is not None:
                if self.bad is None:
                    self.bad = self.xp.zeros(self.top.shape, bool)
                self.bad[sl] = bad

    def _column_max(self, cols, mx):
        """mx = max over the kernel columns of each window of cols (the row maxima)."""
        xp = self.xp
        first = True
        for j, src, (dst,) in self._columns(cols, mx):
            if first and dst.size == mx.size:
                xp.copyto(dst, src)
            else:
                if first:
                    mx.fill(-np.inf)
                xp.fmax(dst, src, out=dst)
            first = False
        if first:
            mx.fill(-np.inf)
        for ow in self.edge:
            cells = self._edge_columns(ow)
            d = mx[..., ow]
            d.fill(-np.inf)
            for j, c in cells:
                xp.fmax(d, cols[..., c], out=d)

    def _first_hits(self, src, ref, ax, axis, miss, hit, count):
        """count = kernel offset (along ``axis``) of the first window cell equal to ``ref``:
        the number of offsets passed while no cell has matched yet."""
        xp, at = self.xp, self._at
        valid = {t: (o, s) for t, o, s in ax.offsets}
        last = max(valid) if valid else 0
        passed = 0           # offsets before the first valid one: every window misses them
        counting = False
        for t in range(last):   # the last valid offset needs no test: it is the only one left
            if t not in valid and not counting:
                passed += 1
                continue
            if t in valid:
                o, s = valid[t]
                if not counting and o.start == 0 and o.stop == ax.out:
                    xp.not_equal(src[at(axis, s)], ref, out=miss)
                else:
                    if not counting:
                        miss.fill(True)
                    m, h = miss[at(axis, o)], hit[at(axis, o)]
                    xp.equal(src[at(axis, s)], ref[at(axis, o)], out=h)
                    xp.greater(m, h, out=m)         # still missing: miss and not hit
            if counting:
                xp.add(count, miss, out=count, casting="unsafe")
            else:
                xp.add(miss, passed, out=count, casting="unsafe")
                counting = True
        if not counting:
            count.fill(passed)

    def argmax(self, x):
        """Flat bottom index of each window's first maximum (after ``max``)."""
        if self.phase is not None:
            self.bad = None
            self._keyed = False
            self._phase_max(x, True, self.top)
            return self.index
        for n0, sl in self._chunks():
            self._argmax(x[sl], n0, sl, None if self.bad is None else self.bad[sl])
        return self.index

    def _argmax(self, x, n0, sl, bad, cols_ready=False):
        xp = self.xp
        m = sl.stop - sl.start
        cols, mx, irow, keys = self.cols[:m], self.top[sl], self.irow[:m], self.keys[:m]
        if not cols_ready:
            self._reduce(xp.fmax, x, cols, self.ah, 2, -np.inf)
        miss, hit = (b[:m] for b in self.bufs["cols"])
        self._first_hits(x, cols, self.ah, 2, miss, hit, irow)
        xp.multiply(irow, self.width, out=keys)
        idx, cand, eq = self._index[sl], self.cand[:m], self.bufs["top"][:m]
        best = self.best[:m]
        best.fill(self.big)
        kt = best.dtype.type
        # best = smallest key i * W + j among the window columns j whose max is the window's
        for (j, c, (e, k, d, mv)), (_, kv, _) in zip(self._columns(cols, eq, cand, best, mx),
                                                   self._columns(keys)):
            xp.equal(c, mv, out=e)
            xp.add(kv, kt(j - self.big), out=k)
            xp.multiply(k, e, out=k)                 # i * W + j - big where e, else 0
            k += self.big
            xp.minimum(d, k, out=d)
        for ow in self.edge:
            d = best[..., ow]
            d.fill(self.big)
            for j, c in self._edge_columns(ow):
                e = xp.equal(cols[..., c], mx[..., ow])
                xp.minimum(d, xp.where(e, keys[..., c] + kt(j), self.big), out=d)
        xp.add(best, self.base[:m], out=idx)
        if n0:
            idx += np.intp(n0 * self.image)
        if bad is not None:                       # keep the index inside the bottom
            xp.copyto(idx, np.intp(n0 * self.image), where=bad)

    def route(self, index, top_diff, bottom_diff):
        """bottom_diff = top_diff added onto the bottom cells given by ``index`` (None: the
        argmax of the last ``max(..., with_index=True)``)."""
        xp = self.xp
        td = top_diff if self.bad is None else xp.where(self.bad, 0, top_diff)
        flat = bottom_diff.reshape(-1)
        keyed = index is None and self._keyed
        if index is None and not keyed:
            index = self.index
        scatter = self.overlap or self.bad is not None
        if xp is np and (scatter or keyed):
            # chunk by chunk of images (each window's argmax lies in its own chunk), so that a
            # chunk's cells are zeroed and receive their top diffs while in cache: a
            # scatter-add where windows overlap, else a plain assignment (one window per
            # cell); keyed: the chunk's indices expanded into a scratch, relative to the chunk
            for n0, sl in self._chunks():
                lo, hi = n0 * self.image, sl.stop * self.image
                part = flat[lo:hi]
                part[...] = 0
                if keyed:
                    target, idx = part, self.phase.expand(self._key_store[sl], None)
                else:
                    target, idx = flat, index[sl]
                if scatter:
                    np.add.at(target, idx.reshape(-1), td[sl].reshape(-1))
                else:
                    target[idx.reshape(-1)] = td[sl].reshape(-1)
            return
        if keyed:
            index = self.index
        bottom_diff[...] = 0
        if self.overlap or self.bad is not None:  # pragma: no cover - CuPy
            import cupyx
            cupyx.scatter_add(flat, index.reshape(-1), td.reshape(-1))
        else:   # disjoint windows: every bottom cell receives at most one top diff
            flat[index.reshape(-1)] = td.reshape(-1)

    def mask(self, index, out):
        """Caffe's mask top: the index h * W + w within the (n, c) plane, -1 if none."""
        n, c, h, w = self.shape
        self.xp.remainder(index, h * w, out=out, casting="unsafe")
        if self.bad is not None:
            self.xp.copyto(out, -1, where=self.bad)

    # Small planes: average pooling is one GEMM with the 0/1 window matrix P (H*W x Ho*Wo),
    # cheaper than two passes of short strided sums; the FLOPs grow as H*W*Ho*Wo, so only for
    # small outputs.  0 * inf would spread a non-finite value over the whole plane, so results
    # that are not finite are recomputed with the separable sums (Caffe's per-window values).
    AVE_GEMM_MAX_OUT = 64

    def _window_matrix(self):
        if not hasattr(self, "_pmat"):
            self._pmat = None
            h, w = self.shape[2:]
            if self.out[0] * self.out[1] <= self.AVE_GEMM_MAX_OUT and h * w <= 4096:
                ah, aw = np.zeros((h, self.out[0])), np.zeros((w, self.out[1]))
                for a, m in ((self.ah, ah), (self.aw, aw)):
                    for t, o, s in a.offsets:
                        m[s, o] += np.eye(o.stop - o.start)
                pmat = np.einsum("ab,cd->acbd", ah, aw).reshape(h * w, -1)
                self._pmat = self.xp.asarray(pmat.astype(self.dtype))
        return self._pmat

    def ave(self, x, top, divisor):
        xp, pmat = self.xp, self._window_matrix()
        n, c = self.shape[:2]
        if pmat is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                xp.matmul(x.reshape(n * c, -1), pmat, out=top.reshape(n * c, -1))
            if not bool(xp.isfinite(top).all()):
                pmat = None
        if pmat is None:
            for n0, sl in self._chunks():
                cols = self.cols[:sl.stop - sl.start]
                self._reduce(xp.add, x[sl], cols, self.ah, 2, 0)
                self._reduce(xp.add, cols, top[sl], self.aw, 3, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            xp.divide(top, divisor, out=top)

    def ave_backward(self, top_diff, bottom_diff, divisor):
        """Spread top_diff / pool_size over every window cell inside the bottom."""
        xp, pmat = self.xp, self._window_matrix()
        n, c = self.shape[:2]
        g = self.top
        with np.errstate(divide="ignore", invalid="ignore"):
            xp.divide(top_diff, divisor, out=g)
        if pmat is not None and bool(xp.isfinite(g).all()):
            xp.matmul(g.reshape(n * c, -1), pmat.T, out=bottom_diff.reshape(n * c, -1))
            return
        bottom_diff[...] = 0
        for n0, sl in self._chunks():
            cols, gs, bd = self.cols[:sl.stop - sl.start], g[sl], bottom_diff[sl]
            cols[...] = 0
            for t, o, s in self.aw.offsets:
                d = cols[..., s]
                xp.add(d, gs[..., o], out=d)
            for t, o, s in self.ah.offsets:
                d = bd[:, :, s]
                xp.add(d, cols[:, :, o], out=d)


class PhaseMax:
    """MAX pooling with Caffe's argmax on the stride-phase layout, for pad 0, H == sh * Ho and
    W == sw * Wo (e.g. 3x3/2 over 32x32, 2x2/2 over 24x24): every pass is a contiguous one.

    A chunk of the bottom (L = images * C planes) is copied once to P[pi, pj] (L, Ho, Wp), with
    P[pi, pj][l, a, b] = x[l, a*sh + pi, b*sw + pj] for b < Wo and -inf in the Wp - Wo padding
    columns.  Window cell (i, j) of output (oh, ow) is then P[i % sh, j % sw][l, oh + i // sh,
    ow + j // sw]: a shift of whole rows (a contiguous block per plane) or, for the columns, a
    shift of the flattened array by j // sw, which stays within the padded row (Wp = Wo + the
    largest shift): cells outside the bottom read the -inf padding, which never wins.  Passes
    over views whose innermost run is Wo values (the separable layout) run several times slower
    than these contiguous ones in NumPy.

    The rules are SeparablePool's: the row pass keeps, per column, the max over the kernel rows
    and the first row offset holding it; the column pass takes the smallest key i * W + j among
    the kernel columns that hold the window's max (Caffe's first maximum of its (h, w) scan).
    Keys are stored minus ``big`` (negative), so that a multiply by the equality mask leaves 0,
    above every real key, for the columns that do not hold the max."""

    def __init__(self, pool):
        self.pool = pool
        (self.sh, self.sw), (self.ho, self.wo) = pool.stride, pool.out
        kh, kw = pool.kernel
        self.rows = [(i % self.sh, i // self.sh) for i in range(kh) if i // self.sh < self.ho]
        self.cols = [(j, j % self.sw, j // self.sw) for j in range(kw) if j // self.sw < self.wo]
        self.wp = self.wo + max(b for _, _, b in self.cols)
        big = int(pool.big)
        self.ktype = np.int8 if big < 128 else pool.keys.dtype.type
        self.bufs = {}

    @staticmethod
    def applies(shape, kernel, stride, pad, out):
        return (tuple(pad) == (0, 0) and shape[2] == stride[0] * out[0]
                and shape[3] == stride[1] * out[1])

    def _buf(self, name, shape, dtype, fill=None):
        """Scratch per (name, shape): its padding cells, set once, stay in place."""
        key = (name, shape)
        buf = self.bufs.get(key)
        if buf is None:
            buf = self.bufs[key] = self.pool.xp.empty(shape, dtype)
            if fill is not None:
                buf.fill(fill)
        return buf

    def run(self, x, mx, n0, with_index):
        """mx (m, C, Ho, Wo) = the window maxima of the chunk x (m, C, H, W) starting at image
        n0; with_index, pool.index of the chunk too.  Returns the bad-window mask or None."""
        pool, xp = self.pool, self.pool.xp
        sh, sw, ho, wo, wp = self.sh, self.sw, self.ho, self.wo, self.wp
        m = x.shape[0]
        lp = m * x.shape[1]
        p = self._buf("P", (sh, sw, lp, ho, wp), pool.dtype, -np.inf)
        p[..., :wo] = x.reshape(lp, ho, sh, wo, sw).transpose(2, 4, 0, 1, 3)
        r = self._buf("R", (sw, lp, ho, wp), pool.dtype)
        ir = self._buf("irow", (sw, lp, ho, wp), np.int8) if with_index else None
        self._row_pass(p, r, ir)
        mp = self._buf("M", (lp, ho, wp), pool.dtype)
        self._column_max(r, mp)
        xp.copyto(mx.reshape(lp, ho, wo), mp[..., :wo])
        bad = None
        if not bool(mx.min() >= -FLT_MAX):       # NaN or -inf maxima (NaN: min is NaN)
            bad = xp.logical_not(mx >= -FLT_MAX)
            xp.copyto(mx, -FLT_MAX, where=bad)
        if with_index:
            if pool._key_store is None:
                pool._key_store = xp.empty(pool.shape[:2] + (ho, wp), self.ktype)
            keys = pool._key_store[n0:n0 + m].reshape(lp, ho, wp)
            self._keys(r, ir, mp, keys)
            if bad is not None:                   # index = the window's cell (0, 0)
                xp.copyto(keys[..., :wo], self.ktype(-int(pool.big)),
                          where=bad.reshape(lp, ho, wo))
            pool._keyed = True
        return bad

    def expand(self, keys, n0, out=None):
        """Flat bottom indices of the chunk of images starting at n0 (None: indices within the
        chunk) from its keys (m, C, Ho, Wp) (see ``_keys``): base + big + key, into ``out`` or
        a scratch of the chunk's size."""
        m = keys.shape[0]
        if out is None:
            out = self._buf("index", (m,) + tuple(self.pool.shape[1:2]) + (self.ho, self.wo),
                            np.intp)
        base = self.pool.base_big[:m] if n0 is None else self._base(n0, m)
        self.pool.xp.add(keys[..., :self.wo], base, out=out)
        return out

    def _row_pass(self, p, r, count):
        """r[pj] = max over the kernel rows per column, for every column phase pj at once
        (arrays (sw, lp, Ho, Wp)); count = the first row offset holding it."""
        xp, ho = self.pool.xp, self.ho
        (pi0, _), rest = self.rows[0], self.rows[1:]
        if rest and rest[0][1] == 0:              # two full-range offsets: one pass
            xp.fmax(p[pi0], p[rest[0][0]], out=r)
            later = rest[1:]
        else:
            xp.copyto(r, p[pi0])
            later = rest
        for pi, a in later:
            d = r[:, :, :ho - a]
            xp.fmax(d, p[pi][:, :, a:], out=d)
        if count is None:
            return
        if not rest:
            count.fill(0)
            return
        miss = self._buf("miss", r.shape, bool)
        hit = self._buf("hit", r.shape, bool)
        xp.not_equal(p[pi0], r, out=miss)
        xp.copyto(count, miss, casting="unsafe")
        # rows past a shifted offset's range keep their miss flag: a window whose max is
        # finite found it at an earlier (valid) offset, as the valid offsets are a prefix
        for pi, a in rest[:-1]:
            mm, hh = miss[:, :, :ho - a], hit[:, :, :ho - a]
            xp.equal(p[pi][:, :, a:], r[:, :, :ho - a], out=hh)
            xp.greater(mm, hh, out=mm)            # still missing: miss and not hit
            xp.add(count, miss, out=count, casting="unsafe")

    def _column_max(self, r, mp):
        """mp = max over the kernel columns of the row maxima (padding columns: garbage)."""
        xp = self.pool.xp
        n = mp.size
        flat = mp.reshape(-1)
        rf = r.reshape(r.shape[0], -1)
        (_, pj0, _), rest = self.cols[0], self.cols[1:]
        xp.copyto(flat, rf[pj0])
        for _, pj, b in rest:
            d = flat[:n - b]
            xp.fmax(d, rf[pj][b:], out=d)

    def _keys(self, r, ir, mp, best):
        """best (lp, Ho, Wp) = the smallest key i * W + j - big among the window columns holding
        the max (the flat index is then base + big + best: ``expand``)."""
        pool, xp = self.pool, self.pool.xp
        n = mp.size
        kt = self.ktype
        big, width = kt(pool.big), kt(pool.width)
        kp = self._buf("kp", ir.shape, kt)        # i * W + pj - big per column phase
        xp.multiply(ir, width, out=kp, casting="unsafe")
        offsets = self.bufs.get("kp_offsets")
        if offsets is None:
            offsets = self.bufs["kp_offsets"] = xp.asarray(
                (np.arange(self.sw) - int(big)).astype(kt).reshape(-1, 1, 1, 1))
        kp += offsets
        tmp = self._buf("tmp", (n,), kt)
        eq = self._buf("eq", (n,), bool)
        bf, mf = best.reshape(-1), mp.reshape(-1)
        rf, kf = r.reshape(r.shape[0], -1), kp.reshape(kp.shape[0], -1)
        for c, (j, pj, b) in enumerate(self.cols):
            e, k = eq[:n - b], tmp[:n - b]
            xp.equal(rf[pj][b:], mf[:n - b], out=e)
            if b:
                xp.add(kf[pj][b:], kt(j - pj), out=k)
                xp.multiply(k, e, out=k)
            else:
                xp.multiply(kf[pj], e, out=k)
            if c == 0:
                xp.copyto(bf, k)
            else:
                xp.minimum(bf[:n - b], k, out=bf[:n - b])

    def _base(self, n0, m):
        """pool.base + big for images n0 .. n0 + m (every chunk's, kept: one pass less)."""
        full = self.bufs.get("base")
        if full is None:
            n = self.pool.shape[0]
            nb = self.pool.base_big.shape[0]
            full = self.bufs["base"] = self.pool.xp.empty((n,) + self.pool.base_big.shape[1:],
                                                          np.intp)
            for c0 in range(0, n, nb):
                c1 = min(n, c0 + nb)
                xp_add = self.pool.xp.add
                xp_add(self.pool.base_big[:c1 - c0], np.intp(c0 * self.pool.image),
                       out=full[c0:c1])
        return full[n0:n0 + m]
