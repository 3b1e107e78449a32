"""The hot loops behind the layers, one module per concept, named after the layer.

A layer holds Caffe's formula and bookkeeping; the loop it needs lives here, compiled with
Numba (``njit(cache=True)``, ``parallel=True`` with ``prange``, never ``fastmath``). Modules:
``conv`` (im2col / col2im, the GEMM-layout moves with bias, depthwise convolution),
``rowconv`` (the row-GEMM convolution engine), ``pooling`` (MAX with Caffe's mask, AVE),
``im2col`` (output sizes, the strided-view im2col CuPy and N-D convolutions use),
``elementwise`` (ReLU, Scale, Bias), ``batchnorm``, ``softmax``, ``eltwise``, ``lrn`` and
``reduce`` (their row sums), ``blas`` and ``cblas`` (GEMM / axpy through NumPy's own OpenBLAS)
and ``threads`` (the one thread policy of both pools).
"""
