"""The hot loops behind the layers, one module per concept.

A layer holds Caffe's formula and bookkeeping; the loop it needs lives here. Modules:
``im2col`` (im2col/col2im and the row layouts of the convolution engine), ``pool2d`` (pooling),
``blas`` and ``cblas`` (GEMM/axpy through NumPy's own OpenBLAS); ``elementwise`` (ReLU, Scale,
Bias), ``batchnorm``, ``softmax``, ``eltwise``, ``lrn`` and ``reduce`` (their row sums).
"""
