"""Pooling layers: MaxPool2D and AvgPool2D over the public fastconv functions (active backend)."""

import numpy as np

import fastconv
from fastconv import _validation
from fastconv.nn._base import Layer


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        name = type(self).__name__
        self.kernel_size = _validation.int_tuple(name, "kernel_size", kernel_size, 2, 1)
        self.stride = self.kernel_size if stride is None else _validation.int_tuple(name, "stride", stride, 2, 1)
        self.padding = _validation.int_tuple(name, "padding", padding, 2, 0)
        if any(p > k // 2 for k, p in zip(self.kernel_size, self.padding)):
            raise ValueError(
                f"{name}: padding must be at most half the kernel size (kernel_size="
                f"{self.kernel_size}), got padding={self.padding}"
            )

    def _extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2D(_Pool2D):
    """2-D max pooling (``torch.nn.MaxPool2d``); ``stride=None`` means ``kernel_size``.

    The gradient goes to the first maximum of each window (PyTorch's choice for ties).
    """

    def forward(self, x):
        x = self._input(x, (4,))
        y, indices = fastconv.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._cache = (indices, x.shape)
        return y

    def backward(self, dout):
        indices, in_shape = self._need_cache()
        dout = self._dout(dout, indices.shape)
        return fastconv.max_pool2d_backward(dout, indices, in_shape)


class AvgPool2D(_Pool2D):
    """2-D average pooling (``torch.nn.AvgPool2d``, padded zeros counted in the divisor)."""

    def forward(self, x):
        x = self._input(x, (4,))
        y = fastconv.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dout):
        in_shape, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        return fastconv.avg_pool2d_backward(dout, in_shape, self.kernel_size, self.stride, self.padding)
