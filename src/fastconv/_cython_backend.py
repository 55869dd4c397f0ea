"""The compiled backend: the kernel interface of fastconv._backend over the Cython extension.

Arguments arrive checked; this module only adds the thread count and allocates nothing itself.
"""

from fastconv._ext import (
    _adaptive_pool, _avg_pool, _batchnorm, _conv, _conv_nhwc, _dense, _depthwise_nhwc, _elementwise, _groupnorm,
    _im2col, _im2row, _loss, _max_pool, _optim,
)
from fastconv._threads import get_num_threads

# --- convolution and im2col/col2im (fastconv._ext._conv, fastconv._ext._im2col) ---------------
# Thin on purpose: t1-sized calls are dominated by per-call overhead.

def conv2d(x, w, b, stride, padding, dilation, groups):
    """y (N, F, OH, OW) = cross-correlation of x with w, plus b when given."""
    return _conv.conv2d_forward(x, w, b, stride, padding, dilation, groups, get_num_threads())


def conv2d_backward(dout, x, w, stride, padding, dilation, groups, need_dx=True):
    """(dx, dw, db) of conv2d for upstream gradient dout (dx None unless need_dx)."""
    return _conv.conv2d_backward(dout, x, w, stride, padding, dilation, groups, get_num_threads(),
                                 need_dx)


def conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """y (N, F, OH, OW) = transposed convolution of x with w, plus b when given."""
    return _conv.conv_transpose2d_forward(x, w, b, stride, padding, output_padding, groups, dilation,
                                          get_num_threads())


def conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups, dilation):
    """(dx, dw, db) of conv_transpose2d for upstream gradient dout."""
    return _conv.conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups,
                                           dilation, get_num_threads())


# Channels-last: x (N, H, W, C), w (KH, KW, C // groups, F). One input channel per group
# (depthwise) takes the direct kernels, the rest im2col + GEMM.

def _depthwise(w, groups):
    return groups > 1 and w.shape[2] == 1


def conv2d_nhwc(x, w, b, stride, padding, dilation, groups):
    """y (N, OH, OW, F) = cross-correlation of x with w, plus b when given."""
    if _depthwise(w, groups):
        return _depthwise_nhwc.depthwise_forward(x, w, b, stride, padding, dilation, get_num_threads())
    return _conv_nhwc.conv2d_forward(x, w, b, stride, padding, dilation, groups, get_num_threads())


def conv2d_backward_nhwc(dout, x, w, stride, padding, dilation, groups):
    """(dx, dw, db) of conv2d_nhwc for upstream gradient dout (N, OH, OW, F)."""
    if _depthwise(w, groups):
        return _depthwise_nhwc.depthwise_backward(dout, x, w, stride, padding, dilation, get_num_threads())
    return _conv_nhwc.conv2d_backward(dout, x, w, stride, padding, dilation, groups, get_num_threads())


def im2col(x, kernel_size, stride, padding, dilation):
    """cols (N, C*KH*KW, OH*OW), torch unfold's layout."""
    return _im2col.im2col(x, kernel_size, stride, padding, dilation, get_num_threads())


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """x (N, C, H, W) folded from cols (overlaps summed, padding dropped)."""
    return _im2col.col2im(cols, tuple(input_shape), kernel_size, stride, padding, dilation,
                          get_num_threads())

# --- pooling (fastconv._ext._max_pool, _avg_pool, _adaptive_pool) -----------------------------

def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(y, indices) of 2-D max pooling; indices are int64 h*W + w in the unpadded plane."""
    return _max_pool.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, get_num_threads())


def max_pool2d_backward(dout, indices, input_shape):
    """Scatter-add dout at indices into zeros of input_shape."""
    return _max_pool.max_pool2d_backward(dout, indices, tuple(input_shape), get_num_threads())


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """2-D average pooling with torch's ceil_mode, count_include_pad and divisor_override."""
    return _avg_pool.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                divisor_override, get_num_threads())


def avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    """Gradient of avg_pool2d: each output's dout / divisor added over its window."""
    return _avg_pool.avg_pool2d_backward(dout, tuple(input_shape), kernel_size, stride, padding, ceil_mode,
                                         count_include_pad, divisor_override, get_num_threads())


def max_pool2d_nhwc(x, kernel_size, stride, padding, dilation, ceil_mode):
    """max_pool2d of x (N, H, W, C): (y, indices) of shape (N, OH, OW, C), indices h*W + w."""
    return _max_pool.max_pool2d_nhwc(x, kernel_size, stride, padding, dilation, ceil_mode, get_num_threads())


def max_pool2d_backward_nhwc(dout, indices, input_shape):
    """Scatter-add dout (N, OH, OW, C) at indices into zeros of input_shape (N, H, W, C)."""
    return _max_pool.max_pool2d_backward_nhwc(dout, indices, tuple(input_shape), get_num_threads())


def avg_pool2d_nhwc(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """avg_pool2d of x (N, H, W, C)."""
    return _avg_pool.avg_pool2d_nhwc(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                     divisor_override, get_num_threads())


def avg_pool2d_backward_nhwc(dout, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                             divisor_override):
    """Gradient of avg_pool2d_nhwc."""
    return _avg_pool.avg_pool2d_backward_nhwc(dout, tuple(input_shape), kernel_size, stride, padding,
                                              ceil_mode, count_include_pad, divisor_override,
                                              get_num_threads())


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling to output_size (OH, OW), torch's windows."""
    return _adaptive_pool.adaptive_avg_pool2d(x, output_size, get_num_threads())


def adaptive_avg_pool2d_backward(dout, input_shape):
    """Gradient of adaptive_avg_pool2d; the output size is dout's."""
    return _adaptive_pool.adaptive_avg_pool2d_backward(dout, tuple(input_shape), get_num_threads())


# --- fastconv.nn's dense layers and optimizers (fastconv._ext._dense, _optim) -----------------

def linear(x, w, b):
    """y (M, N) = x (M, K) @ w.T (+ b) on fastconv's threads."""
    return _dense.linear_forward(x, w, b, get_num_threads())


def linear_backward(dout, x, w, grad_w, grad_b):
    """dx = dout @ w; adds dout.T @ x into grad_w and dout.sum(0) into grad_b (may be None)."""
    return _dense.linear_backward(dout, x, w, grad_w, grad_b, get_num_threads())


def sgd_update(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov, first):
    """In-place SGD step on flat C-contiguous arrays (see fastconv.nn.optim.SGD)."""
    _optim.sgd_update(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov, first,
                      get_num_threads())


def adam_update(param, grad, exp_avg, exp_avg_sq, step_size, beta1, beta2, bias_correction2_sqrt,
                eps, weight_decay):
    """In-place Adam step on flat C-contiguous arrays (see fastconv.nn.optim.Adam)."""
    _optim.adam_update(param, grad, exp_avg, exp_avg_sq, step_size, beta1, beta2,
                       bias_correction2_sqrt, eps, weight_decay, get_num_threads())

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


def relu(x, out=None):
    """y = x, except +0 where x < 0."""
    return _elementwise.relu(x, get_num_threads(), out)


def relu_backward(dout, y, out=None):
    """dout where y > 0, else 0."""
    return _elementwise.relu_backward(dout, y, get_num_threads(), out)


def dropout(x, u, p, scale, out=None):
    """(y, keep) with keep = u >= p and y = x * (scale where kept, else 0)."""
    return _elementwise.dropout(x, u, p, scale, get_num_threads(), out)


def dropout_backward(dout, keep, scale):
    """dout * (scale where kept, else 0)."""
    return _elementwise.dropout_backward(dout, keep, scale, get_num_threads())


def softmax_cross_entropy(logits, target):
    """(loss, dlogits) of the mean softmax cross-entropy (labels or probabilities)."""
    return _loss.softmax_cross_entropy(logits, target, get_num_threads())


# --- the drop-ins' kernels (fastconv._ext._im2row, _dense, _groupnorm, _loss) ------------------

def im2row(x, kernel_size, stride, padding):
    """rows (N*OH*OW, C*KH*KW), the book's im2col layout."""
    return _im2row.im2row(x, kernel_size, stride, padding, get_num_threads())


def row2im(rows, input_shape, kernel_size, stride, padding):
    """x (N, C, H, W) folded from the book's rows (overlaps summed, padding dropped)."""
    return _im2row.row2im(rows, tuple(input_shape), kernel_size, stride, padding, get_num_threads())


def affine(x, w, b):
    """y (M, N) = x (M, K) @ w (K, N) (+ b)."""
    return _dense.affine_forward(x, w, b, get_num_threads())


def affine_backward(dout, x, w):
    """(dx, dw, db) of affine, new arrays."""
    return _dense.affine_backward(dout, x, w, get_num_threads())


def group_norm_forward(x, weight, bias, inner, eps):
    """(y, mean, invstd) of group normalisation over the rows of x (N, G, M)."""
    return _groupnorm.group_norm_forward(x, weight, bias, inner, eps, get_num_threads())


def group_norm_backward(dout, x, weight, mean, invstd, inner):
    """(dx, dweight, dbias) of group_norm_forward."""
    return _groupnorm.group_norm_backward(dout, x, weight, mean, invstd, inner, get_num_threads())


def svm_loss(x, labels):
    """(loss, dx) of the mean multiclass hinge loss."""
    return _loss.svm_loss(x, labels, get_num_threads())
