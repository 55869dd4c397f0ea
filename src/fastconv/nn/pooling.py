"""Pooling layers over the public fastconv functions (active backend): MaxPool2D, MaxPool1D,
AvgPool2D, AvgPool1D and AdaptiveAvgPool2D.

The hyper-parameters are checked when the layer is built, with the functions' own checks (the
ones that depend on the input size run at the first forward). No layer has parameters.
"""

import numpy as np

import fastconv
from fastconv import _validation
from fastconv.nn._base import Layer


class _Pool(Layer):
    """Shared construction of the windowed pooling layers (nd spatial dimensions)."""

    _nd = None
    _forward = None
    _backward = None

    def __init__(self, kernel_size, stride, padding, ceil_mode, *, dtype, rng):
        super().__init__(dtype=dtype, rng=rng)
        name = type(self).__name__
        self.kernel_size, self.stride, self.padding = _validation.pool_window(
            name, self._nd, kernel_size, stride, padding
        )
        self.ceil_mode = _validation.flag(name, "ceil_mode", ceil_mode)

    def _layout(self):
        """The functions' data_format keyword (the 2-D layers' channels-last layout only)."""
        return {}

    def _extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")


class _ChannelsLast:
    """The keyword-only ``data_format`` of MaxPool2D and AvgPool2D ("NCHW" or "NHWC"), passed
    on to the functions."""

    def _set_layout(self, data_format):
        _validation.channels_last(type(self).__name__, data_format)
        self.data_format = data_format

    def _layout(self):
        return {"data_format": self.data_format}

    def _extra_repr(self):
        return super()._extra_repr() + (", data_format='NHWC'" if self.data_format == "NHWC" else "")


class _MaxPool(_Pool):
    """Max pooling; the gradient goes to the first maximum of each window (PyTorch's choice
    for ties). ``ceil_mode`` is keyword-only: in torch.nn's MaxPool the fifth positional
    argument is ``return_indices``, so a positional True would mean something else there."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
                 dtype=np.float32, rng=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, dtype=dtype, rng=rng)
        self.dilation = _validation.int_tuple(type(self).__name__, "dilation", dilation, self._nd, 1)

    def forward(self, x):
        x = self._input(x, (self._nd + 2,))
        y, indices = type(self)._forward(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                         self.ceil_mode, **self._layout())
        self._cache = (indices, x.shape)
        return y

    def backward(self, dout):
        indices, in_shape = self._need_cache()
        dout = self._dout(dout, indices.shape)
        return type(self)._backward(dout, indices, in_shape, **self._layout())

    def _extra_repr(self):
        return super()._extra_repr() + f", dilation={self.dilation}"


class MaxPool2D(_ChannelsLast, _MaxPool):
    """2-D max pooling (``torch.nn.MaxPool2d``) over NCHW input, or NHWC input with
    ``data_format="NHWC"``; ``stride=None`` means ``kernel_size``. Options as
    :func:`fastconv.max_pool2d` (``ceil_mode`` and ``data_format`` keyword-only)."""

    _nd = 2
    _forward = staticmethod(fastconv.max_pool2d)
    _backward = staticmethod(fastconv.max_pool2d_backward)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False,
                 data_format="NCHW", dtype=np.float32, rng=None):
        self._set_layout(data_format)
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, dtype=dtype, rng=rng)


class MaxPool1D(_MaxPool):
    """1-D max pooling (``torch.nn.MaxPool1d``) over NCL input; options as
    :func:`fastconv.max_pool1d` (``ceil_mode`` keyword-only)."""

    _nd = 1
    _forward = staticmethod(fastconv.max_pool1d)
    _backward = staticmethod(fastconv.max_pool1d_backward)


class _AvgPool(_Pool):
    """Average pooling with torch's ceil_mode and count_include_pad."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
                 dtype=np.float32, rng=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, dtype=dtype, rng=rng)
        self.count_include_pad = _validation.flag(type(self).__name__, "count_include_pad", count_include_pad)

    def _options(self):
        """The function's arguments after kernel_size, stride and padding."""
        return (self.ceil_mode, self.count_include_pad)

    def forward(self, x):
        x = self._input(x, (self._nd + 2,))
        y = type(self)._forward(x, self.kernel_size, self.stride, self.padding, *self._options(),
                                **self._layout())
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dout):
        in_shape, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        return type(self)._backward(dout, in_shape, self.kernel_size, self.stride, self.padding,
                                    *self._options(), **self._layout())

    def _extra_repr(self):
        return super()._extra_repr() + f", count_include_pad={self.count_include_pad}"


class AvgPool2D(_ChannelsLast, _AvgPool):
    """2-D average pooling (``torch.nn.AvgPool2d``, same argument order) over NCHW input, or
    NHWC input with ``data_format="NHWC"`` (keyword-only); options as
    :func:`fastconv.avg_pool2d`."""

    _nd = 2
    _forward = staticmethod(fastconv.avg_pool2d)
    _backward = staticmethod(fastconv.avg_pool2d_backward)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, data_format="NCHW", dtype=np.float32, rng=None):
        self._set_layout(data_format)
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, dtype=dtype, rng=rng)
        self.divisor_override = _validation.divisor_override(type(self).__name__, divisor_override)

    def _options(self):
        return super()._options() + (self.divisor_override,)

    def _extra_repr(self):
        return super()._extra_repr() + f", divisor_override={self.divisor_override}"


class AvgPool1D(_AvgPool):
    """1-D average pooling (``torch.nn.AvgPool1d``, same argument order); options as
    :func:`fastconv.avg_pool1d`."""

    _nd = 1
    _forward = staticmethod(fastconv.avg_pool1d)
    _backward = staticmethod(fastconv.avg_pool1d_backward)


class AdaptiveAvgPool2D(Layer):
    """Adaptive 2-D average pooling (``torch.nn.AdaptiveAvgPool2d``) to ``output_size``: an int
    or an (OH, OW) pair whose None entries keep the input size; 1 is global average pooling."""

    def __init__(self, output_size, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        self.output_size = _validation.adaptive_output_spec(type(self).__name__, output_size)

    def forward(self, x):
        x = self._input(x, (4,))
        y = fastconv.adaptive_avg_pool2d(x, self.output_size)
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dout):
        in_shape, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        return fastconv.adaptive_avg_pool2d_backward(dout, in_shape)

    def _extra_repr(self):
        return f"output_size={self.output_size}"
