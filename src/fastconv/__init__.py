"""fastconv: fast, exact convolution and pooling kernels for NumPy.

Compiled Cython kernels (OpenMP threads, BLAS GEMM) for conv1d/conv2d forward and backward
(grouped, depthwise and transposed too), im2col/col2im, 1-D and 2-D max and average pooling and adaptive average pooling, each checked
against the pure-NumPy implementation of the same name in :mod:`fastconv.reference`. Layers
and training live in :mod:`fastconv.nn`; the CS231n assignment's layer names in
:mod:`fastconv.cs231n` and those of the book "Deep Learning from Scratch" in :mod:`fastconv.dlfs`.
"""

from fastconv._version import __version__
from fastconv._api import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    batch_norm,
    batch_norm_backward,
    col2im,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    im2col,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    softmax_cross_entropy,
)
from fastconv._backend import get_backend, set_backend, use_backend
from fastconv._threads import get_num_threads, set_num_threads
from fastconv._config import show_config
from fastconv import cs231n, dlfs, nn, reference

__all__ = [
    "__version__",
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "im2col", "col2im",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_backward", "softmax_cross_entropy",
    "get_backend", "set_backend", "use_backend",
    "get_num_threads", "set_num_threads", "show_config",
    "reference", "nn", "cs231n", "dlfs",
]
