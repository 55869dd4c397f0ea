"""Convolution layers: Conv2D and Conv1D over the public fastconv functions (active backend).

The layers only cache what backward needs and accumulate gradients.
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
