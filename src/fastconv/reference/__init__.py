"""Pure-NumPy implementations of every public function: the oracle the compiled kernels are
checked against, and the fallback backend.

Same names, signatures and checks as the top-level functions; the work is done by the
vectorised kernels of ``fastconv.reference._vectorised``. ``fastconv.reference.naive`` holds
loop implementations that read like the mathematics, for tests on tiny shapes.
"""

from fastconv import _api


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`fastconv.conv2d` on the reference backend."""
    return _api.conv2d(x, w, b, stride, padding, dilation, groups, backend="reference")


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1):
    """:func:`fastconv.conv2d_backward` on the reference backend."""
    return _api.conv2d_backward(dout, x, w, stride, padding, dilation, groups, backend="reference")


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`fastconv.conv1d` on the reference backend."""
    return _api.conv1d(x, w, b, stride, padding, dilation, groups, backend="reference")


def conv1d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1):
    """:func:`fastconv.conv1d_backward` on the reference backend."""
    return _api.conv1d_backward(dout, x, w, stride, padding, dilation, groups, backend="reference")


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """:func:`fastconv.conv_transpose2d` on the reference backend."""
    return _api.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation,
                                 backend="reference")


def conv_transpose2d_backward(dout, x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """:func:`fastconv.conv_transpose2d_backward` on the reference backend."""
    return _api.conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups,
                                          dilation, backend="reference")


def conv_transpose1d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """:func:`fastconv.conv_transpose1d` on the reference backend."""
    return _api.conv_transpose1d(x, w, b, stride, padding, output_padding, groups, dilation,
                                 backend="reference")


def conv_transpose1d_backward(dout, x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """:func:`fastconv.conv_transpose1d_backward` on the reference backend."""
    return _api.conv_transpose1d_backward(dout, x, w, stride, padding, output_padding, groups,
                                          dilation, backend="reference")


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """:func:`fastconv.im2col` on the reference backend."""
    return _api.im2col(x, kernel_size, stride, padding, dilation, backend="reference")


def col2im(cols, input_shape, kernel_size, stride=1, padding=0, dilation=1):
    """:func:`fastconv.col2im` on the reference backend."""
    return _api.col2im(cols, input_shape, kernel_size, stride, padding, dilation, backend="reference")


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """:func:`fastconv.max_pool2d` on the reference backend."""
    return _api.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, backend="reference")


def max_pool2d_backward(dout, indices, input_shape):
    """:func:`fastconv.max_pool2d_backward` on the reference backend."""
    return _api.max_pool2d_backward(dout, indices, input_shape, backend="reference")


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """:func:`fastconv.avg_pool2d` on the reference backend."""
    return _api.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                           backend="reference")


def avg_pool2d_backward(dout, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """:func:`fastconv.avg_pool2d_backward` on the reference backend."""
    return _api.avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding, ceil_mode,
                                    count_include_pad, divisor_override, backend="reference")


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """:func:`fastconv.max_pool1d` on the reference backend."""
    return _api.max_pool1d(x, kernel_size, stride, padding, dilation, ceil_mode, backend="reference")


def max_pool1d_backward(dout, indices, input_shape):
    """:func:`fastconv.max_pool1d_backward` on the reference backend."""
    return _api.max_pool1d_backward(dout, indices, input_shape, backend="reference")


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """:func:`fastconv.avg_pool1d` on the reference backend."""
    return _api.avg_pool1d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, backend="reference")


def avg_pool1d_backward(dout, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """:func:`fastconv.avg_pool1d_backward` on the reference backend."""
    return _api.avg_pool1d_backward(dout, input_shape, kernel_size, stride, padding, ceil_mode,
                                    count_include_pad, backend="reference")


def adaptive_avg_pool2d(x, output_size):
    """:func:`fastconv.adaptive_avg_pool2d` on the reference backend."""
    return _api.adaptive_avg_pool2d(x, output_size, backend="reference")


def adaptive_avg_pool2d_backward(dout, input_shape):
    """:func:`fastconv.adaptive_avg_pool2d_backward` on the reference backend."""
    return _api.adaptive_avg_pool2d_backward(dout, input_shape, backend="reference")


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5, *, data_format="NCHW"):
    """:func:`fastconv.batch_norm` on the reference backend."""
    return _api.batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                           data_format=data_format, backend="reference")


def batch_norm_backward(dout, x, weight, mean, invstd, training=True, *, data_format="NCHW"):
    """:func:`fastconv.batch_norm_backward` on the reference backend."""
    return _api.batch_norm_backward(dout, x, weight, mean, invstd, training, data_format=data_format,
                                    backend="reference")


def relu(x):
    """:func:`fastconv.relu` on the reference backend."""
    return _api.relu(x, backend="reference")


def relu_backward(dout, y):
    """:func:`fastconv.relu_backward` on the reference backend."""
    return _api.relu_backward(dout, y, backend="reference")


def softmax_cross_entropy(logits, target):
    """:func:`fastconv.softmax_cross_entropy` on the reference backend."""
    return _api.softmax_cross_entropy(logits, target, backend="reference")


__all__ = [
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_backward", "softmax_cross_entropy",
]
