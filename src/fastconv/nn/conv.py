"""Convolution layers: Conv2D, Conv1D and ConvTranspose2D over the public fastconv functions
(active backend).

The layers only cache what backward needs and accumulate gradients.
"""

import numpy as np

import fastconv
from fastconv import _api, _validation
from fastconv.nn._base import Layer, kaiming_uniform, positive_int


class _Convolution(Layer):
    """What the convolution layers share: hyper-parameter checks, PyTorch's initialisation,
    forward/backward through the public functions `_forward`/`_backward`."""

    _returns_private = True

    _nd = None
    _forward = None
    _backward = None

    def _setup(self, in_channels, out_channels, kernel_size, stride, dilation, groups, bias):
        """Check and keep the arguments both kinds share; returns the layer's name."""
        name, nd = type(self).__name__, self._nd
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.out_channels = positive_int(name, "out_channels", out_channels)
        self.groups = positive_int(name, "groups", groups)
        for what, count in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if count % self.groups:
                raise ValueError(f"{name}: groups={self.groups} must divide {what}={count}")
        self.kernel_size = _validation.int_tuple(name, "kernel_size", kernel_size, nd, 1)
        self.stride = _validation.int_tuple(name, "stride", stride, nd, 1)
        self.dilation = _validation.int_tuple(name, "dilation", dilation, nd, 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"{name}: bias must be True or False, got {bias!r}")
        return name

    def _add_weights(self, shape, bias):
        """weight of `shape` and, if bias, a bias of out_channels, both from PyTorch's
        default: fan_in is the weight's dim 1 times the kernel (C/groups*KH*KW for Conv2D,
        F/groups*KH*KW for ConvTranspose2D), for the bias too."""
        fan_in = shape[1] * int(np.prod(self.kernel_size))
        self._add_param("weight", kaiming_uniform(self.rng, shape, fan_in, self.dtype))
        if bias:
            self._add_param("bias", kaiming_uniform(self.rng, (self.out_channels,), fan_in, self.dtype))

    def _layout(self):
        """The functions' data_format keyword (Conv2D's channels-last layout only)."""
        return {}

    def forward(self, x):
        x = self._input(x, (self._nd + 2,))
        y = type(self)._forward(x, self.params["weight"], self.params.get("bias"), *self._hyper(),
                                **self._layout())
        self._cache = (x, y.shape)
        return y

    def backward(self, dout):
        x, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        dx, dw, db = type(self)._backward(dout, x, self.params["weight"], *self._hyper(), **self._layout())
        self._accumulate(dw, db)
        return dx

    def _accumulate(self, dw, db):
        self.grads["weight"] += dw
        if "bias" in self.grads:
            self.grads["bias"] += db


class _ConvND(_Convolution):
    """Shared code of Conv2D and Conv1D (nd spatial dimensions)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, groups=1, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        name = self._setup(in_channels, out_channels, kernel_size, stride, dilation, groups, bias)
        # "valid" and "same" are kept as given (checked here: "same" needs stride 1).
        _validation.conv_padding(name, padding, self._nd, self.stride, self.dilation, self.kernel_size)
        self.padding = padding if isinstance(padding, str) else _validation.int_tuple(
            name, "padding", padding, self._nd, 0)
        self._add_weights((self.out_channels, self.in_channels // self.groups) + self.kernel_size, bias)

    def _hyper(self):
        return self.stride, self.padding, self.dilation, self.groups

    def _backward_parameters_only(self, dout):
        """backward's parameter gradients without dx (Sequential.backward with
        input_grad=False): a network's first layer, whose input is data, skips its dx pass."""
        x, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        dw, db = _api.conv_parameter_gradients(dout, x, self.params["weight"], *self._hyper(),
                                               **self._layout())
        self._accumulate(dw, db)

    def _extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={'bias' in self.params}")


class Conv2D(_ConvND):
    """2-D convolution layer (``torch.nn.Conv2d``) over NCHW input, or NHWC input with
    ``data_format="NHWC"`` (keyword-only).

    ``weight`` is (out_channels, in_channels // groups, KH, KW) (with ``data_format="NHWC"``:
    (KH, KW, in_channels // groups, out_channels), "HWIO"), ``bias`` (out_channels,); both
    start from PyTorch's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in = in_channels // groups * KH*KW. The same ``rng`` draws the same weights in either
    layout (the NHWC weight is the NCHW one transposed). ``padding`` may be "valid" or "same"
    too, and ``groups`` splits the channels as in :func:`fastconv.conv2d`.
    """

    _nd = 2
    _forward = staticmethod(fastconv.conv2d)
    _backward = staticmethod(fastconv.conv2d_backward)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, groups=1, *, data_format="NCHW", dtype=np.float32, rng=None):
        last = _validation.channels_last(type(self).__name__, data_format)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, groups,
                         dtype=dtype, rng=rng)
        self.data_format = data_format
        if last:
            # Drawn as (F, C/groups, KH, KW), stored as HWIO: the NCHW layer's weights, transposed.
            self.params["weight"] = np.ascontiguousarray(self.params["weight"].transpose(2, 3, 1, 0))
            self.grads["weight"] = np.zeros_like(self.params["weight"])

    def _layout(self):
        return {"data_format": self.data_format}

    def _extra_repr(self):
        extra = ", data_format='NHWC'" if self.data_format == "NHWC" else ""
        return super()._extra_repr() + extra


class Conv1D(_ConvND):
    """1-D convolution layer (``torch.nn.Conv1d``) over NCL input (arguments as Conv2D's)."""

    _nd = 1
    _forward = staticmethod(fastconv.conv1d)
    _backward = staticmethod(fastconv.conv1d_backward)


class ConvTranspose2D(_Convolution):
    """2-D transposed convolution layer (``torch.nn.ConvTranspose2d``) over NCHW input.

    ``weight`` is (in_channels, out_channels // groups, KH, KW), ``bias`` (out_channels,); both
    start from PyTorch's default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), with torch's
    fan_in = out_channels // groups * KH*KW (the weight's dim 1 times the kernel). The output
    size is ``(H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1``; see
    :func:`fastconv.conv_transpose2d`.
    """

    _nd = 2
    _forward = staticmethod(fastconv.conv_transpose2d)
    _backward = staticmethod(fastconv.conv_transpose2d_backward)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        name = self._setup(in_channels, out_channels, kernel_size, stride, dilation, groups, bias)
        self.padding = _validation.int_tuple(name, "padding", padding, 2, 0)
        self.output_padding = _validation.int_tuple(name, "output_padding", output_padding, 2, 0)
        _validation.check_output_padding(name, self.output_padding, self.stride, self.dilation)
        self._add_weights((self.in_channels, self.out_channels // self.groups) + self.kernel_size, bias)

    def _hyper(self):
        return self.stride, self.padding, self.output_padding, self.groups, self.dilation

    def _extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding}, "
                f"groups={self.groups}, bias={'bias' in self.params}, dilation={self.dilation}")
