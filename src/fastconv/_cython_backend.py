"""The compiled backend: the kernel interface of fastconv._backend over the Cython extension.

Arguments arrive checked; this module only adds the thread count and allocates nothing itself.
"""

from fastconv._ext import _conv, _im2col, _pool
from fastconv._threads import get_num_threads

# --- convolution and im2col/col2im (fastconv._ext._conv, fastconv._ext._im2col) ---------------
# (filled in by the convolution kernels)

# --- pooling (fastconv._ext._pool) -------------------------------------------------------------

def max_pool2d(x, kernel_size, stride, padding):
    """(y, indices) of 2-D max pooling; indices are int64 h*W + w in the unpadded plane."""
    return _pool.max_pool2d(x, kernel_size, stride, padding, get_num_threads())


def max_pool2d_backward(dout, indices, input_shape):
    """Scatter-add dout at indices into zeros of input_shape."""
    return _pool.max_pool2d_backward(dout, indices, tuple(input_shape), get_num_threads())


def avg_pool2d(x, kernel_size, stride, padding):
    """2-D average pooling; the divisor is always KH*KW (count_include_pad=True)."""
    return _pool.avg_pool2d(x, kernel_size, stride, padding, get_num_threads())


def avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding):
    """Gradient of avg_pool2d: dout / (KH*KW) added over each window."""
    return _pool.avg_pool2d_backward(
        dout, tuple(input_shape), kernel_size, stride, padding, get_num_threads()
    )
