"""Layout moves of the shifted-GEMM convolution (decaf.kernels.rowconv): NCHW blobs to and from
the zero-bordered, batch-innermost image I[h, c, x, n].

    to_bordered      I[ph + h, c, pw + w, n] = x[n, c, h, w]     (I's border untouched)
    from_bordered    dx[n, c, h, w] = I[ph + h, c, pw + w, n]

On one thread, two passes: OpenBLAS's ``omatcopy`` transposes the chunk (nb, C*H*W) to or from
a scratch (C, H, W, nb), and a strided copy moves it between (C, H) and (H, C) order.  On more
threads (decaf.kernels.gemm.parallel), one compiled loop each, parallel over the (h, c) planes
(ResNet-20 at two threads 1.07x).  Tried, not kept: one loop on one thread too (CIFAR quick
0.97x: Numba's scalar transposing loops are slower than omatcopy's), and an omatcopy per
(c, h) plane straight into I (twice as fast alone, ResNet-20 0.95x: I came out of cache for
the GEMMs that read it next; benchmarks/NOTES.md, section 16).  CuPy arrays take NumPy-style
strided copies.
"""
import numpy as np
from numba import prange

from . import cblas, gemm
from .jit import kernel, u


@kernel(streaming=True)
def _to_bordered(x, ph, pw, img):
    nb, cc, hh, ww = x.shape
    for hc in prange(hh * cc):
        h, c = hc // cc, hc % cc
        for n0 in range(0, nb, 16):        # 16 images at a time: 16 source lines in use
            n1 = min(nb, n0 + 16)
            for w in range(ww):
                for n in range(n0, n1):
                    img[u(ph + h), u(c), u(pw + w), u(n)] = x[u(n), u(c), u(h), u(w)]


@kernel(streaming=True)
def _from_bordered(img, ph, pw, dx):
    nb, cc, hh, ww = dx.shape
    for hc in prange(hh * cc):
        h, c = hc // cc, hc % cc
        for n in range(nb):
            for w in range(ww):
                dx[u(n), u(c), u(h), u(w)] = img[u(ph + h), u(c), u(pw + w), u(n)]


def _numpy(*arrays):
    return all(type(a) is np.ndarray for a in arrays)


def to_bordered(x, img, ph, pw, tmp):
    """img[ph:ph + H, :, pw:pw + W] = x (nb, C, H, W) as (H, C, W, nb); img (Hz, C, Wz, nb),
    tmp: a scratch of x.size elements."""
    nb, c, h, w = x.shape
    if _numpy(x, img) and gemm.parallel():
        _to_bordered(x, ph, pw, img)
        return img
    xt = tmp.reshape(c * h * w, nb)
    cblas.transpose(x.reshape(nb, -1), xt)
    img[ph:ph + h, :, pw:pw + w] = xt.reshape(c, h, w, nb).transpose(1, 0, 2, 3)
    return img


def from_bordered(img, ph, pw, dx, tmp):
    """dx (nb, C, H, W) = img[ph:ph + H, :, pw:pw + W] (H, C, W, nb), the inverse."""
    nb, c, h, w = dx.shape
    if _numpy(img, dx) and gemm.parallel():
        _from_bordered(img, ph, pw, dx)
        return dx
    t = tmp.reshape(c, h, w, nb)
    t[...] = img[ph:ph + h, :, pw:pw + w].transpose(1, 0, 2, 3)
    if dx.flags.c_contiguous:
        cblas.transpose(t.reshape(-1, nb), dx.reshape(nb, -1))
    else:
        dx[...] = t.transpose(3, 0, 1, 2)
    return dx
