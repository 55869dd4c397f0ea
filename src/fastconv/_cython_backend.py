"""The compiled backend: the kernel interface of fastconv._backend over the Cython extension.

Arguments arrive checked; this module only adds the thread count and allocates nothing itself.
"""

from fastconv._ext import _conv, _im2col, _pool
from fastconv._threads import get_num_threads

# --- convolution and im2col/col2im (fastconv._ext._conv, fastconv._ext._im2col) ---------------
# Thin on purpose: t1-sized calls are dominated by per-call overhead.

def conv2d(x, w, b, stride, padding, dilation, groups):
    """y (N, F, OH, OW) = cross-correlation of x with w, plus b when given."""
    return _conv.conv2d_forward(x, w, b, stride, padding, dilation, groups, get_num_threads())


def conv2d_backward(dout, x, w, stride, padding, dilation, groups):
    """(dx, dw, db) of conv2d for upstream gradient dout."""
    return _conv.conv2d_backward(dout, x, w, stride, padding, dilation, groups, get_num_threads())


def conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """y (N, F, OH, OW) = transposed convolution of x with w, plus b when given."""
    return _conv.conv_transpose2d_forward(x, w, b, stride, padding, output_padding, groups, dilation,
                                          get_num_threads())


def conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups, dilation):
    """(dx, dw, db) of conv_transpose2d for upstream gradient dout."""
    return _conv.conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups,
                                           dilation, get_num_threads())


def im2col(x, kernel_size, stride, padding, dilation):
    """cols (N, C*KH*KW, OH*OW), torch unfold's layout."""
    return _im2col.im2col(x, kernel_size, stride, padding, dilation, get_num_threads())


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """x (N, C, H, W) folded from cols (overlaps summed, padding dropped)."""
    return _im2col.col2im(cols, tuple(input_shape), kernel_size, stride, padding, dilation,
                          get_num_threads())

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
