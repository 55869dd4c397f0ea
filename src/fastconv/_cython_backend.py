"""The compiled backend: the kernel interface of fastconv._backend over the Cython extension.

Arguments arrive checked; this module only adds the thread count and allocates nothing itself.
"""

from fastconv._ext import _batchnorm, _conv, _elementwise, _im2col, _loss, _pool
from fastconv._threads import get_num_threads

# --- convolution and im2col/col2im (fastconv._ext._conv, fastconv._ext._im2col) ---------------
# Thin on purpose: t1-sized calls are dominated by per-call overhead.

def conv2d(x, w, b, stride, padding, dilation):
    """y (N, F, OH, OW) = cross-correlation of x with w, plus b when given."""
    return _conv.conv2d_forward(x, w, b, stride, padding, dilation, get_num_threads())


def conv2d_backward(dout, x, w, stride, padding, dilation):
    """(dx, dw, db) of conv2d for upstream gradient dout."""
    return _conv.conv2d_backward(dout, x, w, stride, padding, dilation, get_num_threads())


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

# --- layer functions (fastconv._ext._batchnorm, _elementwise, _loss) ---------------------------

def batch_norm_statistics(x):
    """(mean, var): float64 batch mean and biased variance per channel of x (outer, C, inner)."""
    return _batchnorm.batch_norm_statistics(x, get_num_threads())


def batch_norm_forward(x, weight, bias, mean, invstd):
    """y = (x - mean) * invstd * weight + bias per channel."""
    return _batchnorm.batch_norm_forward(x, weight, bias, mean, invstd, get_num_threads())


def batch_norm_backward(dout, x, weight, mean, invstd, training):
    """(dx, dweight, dbias) of batch_norm_forward (training: through the batch statistics)."""
    return _batchnorm.batch_norm_backward(dout, x, weight, mean, invstd, training, get_num_threads())


def relu(x):
    """y = x, except +0 where x < 0."""
    return _elementwise.relu(x, get_num_threads())


def relu_backward(dout, y):
    """dout where y > 0, else 0."""
    return _elementwise.relu_backward(dout, y, get_num_threads())


def dropout(x, u, p, scale, out=None):
    """(y, keep) with keep = u >= p and y = x * (scale where kept, else 0)."""
    return _elementwise.dropout(x, u, p, scale, get_num_threads(), out)


def dropout_backward(dout, keep, scale):
    """dout * (scale where kept, else 0)."""
    return _elementwise.dropout_backward(dout, keep, scale, get_num_threads())


def softmax_cross_entropy(logits, target):
    """(loss, dlogits) of the mean softmax cross-entropy (labels or probabilities)."""
    return _loss.softmax_cross_entropy(logits, target, get_num_threads())
