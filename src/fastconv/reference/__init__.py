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


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """:func:`fastconv.max_pool2d` on the reference backend."""
    return _api.max_pool2d(x, kernel_size, stride, padding, backend="reference")


def max_pool2d_backward(dout, indices, input_shape):
    """:func:`fastconv.max_pool2d_backward` on the reference backend."""
    return _api.max_pool2d_backward(dout, indices, input_shape, backend="reference")


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """:func:`fastconv.avg_pool2d` on the reference backend."""
    return _api.avg_pool2d(x, kernel_size, stride, padding, backend="reference")


def avg_pool2d_backward(dout, input_shape, kernel_size, stride=None, padding=0):
    """:func:`fastconv.avg_pool2d_backward` on the reference backend."""
    return _api.avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding, backend="reference")


__all__ = [
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
]
