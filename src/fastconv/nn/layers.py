"""Layers with weights or windows: Conv2D, Conv1D, Linear, MaxPool2D, AvgPool2D, Flatten.

Convolution and pooling go through the public fastconv functions (and so through the active
backend); the layers only cache what backward needs and accumulate gradients.
"""

import numpy as np

import fastconv
from fastconv import _validation
from fastconv.nn._base import Layer, kaiming_uniform, positive_int


class _ConvND(Layer):
    """Shared code of Conv2D and Conv1D (nd spatial dimensions)."""

    _nd = None
    _forward = None
    _backward = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        name, nd = type(self).__name__, self._nd
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.out_channels = positive_int(name, "out_channels", out_channels)
        self.kernel_size = _validation.int_tuple(name, "kernel_size", kernel_size, nd, 1)
        self.stride = _validation.int_tuple(name, "stride", stride, nd, 1)
        self.padding = _validation.int_tuple(name, "padding", padding, nd, 0)
        self.dilation = _validation.int_tuple(name, "dilation", dilation, nd, 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"{name}: bias must be True or False, got {bias!r}")
        fan_in = self.in_channels * int(np.prod(self.kernel_size))
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self._add_param("weight", kaiming_uniform(self.rng, shape, fan_in, self.dtype))
        if bias:
            self._add_param("bias", kaiming_uniform(self.rng, (self.out_channels,), fan_in, self.dtype))

    def _hyper(self):
        return self.stride, self.padding, self.dilation

    def forward(self, x):
        x = self._input(x, (self._nd + 2,))
        y = type(self)._forward(x, self.params["weight"], self.params.get("bias"), *self._hyper())
        self._cache = (x, y.shape)
        return y

    def backward(self, dout):
        x, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        dx, dw, db = type(self)._backward(dout, x, self.params["weight"], *self._hyper())
        self.grads["weight"] += dw
        if "bias" in self.grads:
            self.grads["bias"] += db
        return dx

    def _extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={'bias' in self.params}")


class Conv2D(_ConvND):
    """2-D convolution layer (``torch.nn.Conv2d`` with ``groups=1``) over NCHW input.

    ``weight`` is (out_channels, in_channels, KH, KW), ``bias`` (out_channels,); both start
    from PyTorch's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C*KH*KW.
    """

    _nd = 2
    _forward = staticmethod(fastconv.conv2d)
    _backward = staticmethod(fastconv.conv2d_backward)


class Conv1D(_ConvND):
    """1-D convolution layer (``torch.nn.Conv1d`` with ``groups=1``) over NCL input."""

    _nd = 1
    _forward = staticmethod(fastconv.conv1d)
    _backward = staticmethod(fastconv.conv1d_backward)


class Linear(Layer):
    """Fully connected layer ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    ``x`` has shape (..., in_features); ``weight`` is (out_features, in_features).
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Linear: bias must be True or False, got {bias!r}")
        shape = (self.out_features, self.in_features)
        self._add_param("weight", kaiming_uniform(self.rng, shape, self.in_features, self.dtype))
        if bias:
            self._add_param("bias", kaiming_uniform(self.rng, (self.out_features,), self.in_features, self.dtype))

    def forward(self, x):
        x = self._input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear.forward: x must have shape (..., in_features={self.in_features}), "
                f"got {x.shape}"
            )
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        self._cache = (x, y.shape)
        return y

    def backward(self, dout):
        x, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        x2 = x.reshape(-1, self.in_features)
        d2 = dout.reshape(-1, self.out_features)
        self.grads["weight"] += d2.T @ x2
        if "bias" in self.grads:
            self.grads["bias"] += d2.sum(axis=0)
        return dout @ self.params["weight"]

    def _extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"


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


class Flatten(Layer):
    """Flatten every dimension after the batch: (N, ...) -> (N, prod(...)) (``torch.nn.Flatten``)."""

    def forward(self, x):
        x = self._input(x)
        if x.ndim < 1:
            raise ValueError("Flatten.forward: x must have a batch dimension, got a 0-D array")
        self._cache = x.shape
        # An explicit size (not -1) so an empty batch reshapes too.
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))

    def backward(self, dout):
        in_shape = self._need_cache()
        dout = self._dout(dout, (in_shape[0], int(np.prod(in_shape[1:], dtype=np.int64))))
        return dout.reshape(in_shape)
