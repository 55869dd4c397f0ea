"""Elementwise activations: ReLU, Sigmoid, Tanh, LeakyReLU."""

import numbers

import numpy as np

import fastconv
from fastconv import _backend
from fastconv.nn._base import Layer


class ReLU(Layer):
    """``max(x, 0)`` (:func:`fastconv.relu`); the gradient is 0 at x == 0 (as PyTorch) and at NaN,
    which passes through the forward.

    The layer keeps its output ``y`` for the backward (``y > 0`` is the gradient mask), not a
    mask of its own: the next layer usually keeps the same array as its input, so the
    activation is held once. Modifying the returned array in place changes the gradient.
    """

    def forward(self, x):
        y = fastconv.relu(self._input(x))
        self._cache = y
        return y

    def backward(self, dout):
        y = self._need_cache()
        return fastconv.relu_backward(self._dout(dout, y.shape), y)

    # Sequential's path when the neighbouring layer hands over an array nobody else holds (a
    # convolution's fresh output, a fresh dx): the same kernels, writing into that array instead
    # of a new one (one pass over memory fewer, no new pages). Results are bitwise the same.

    def _forward_in_place(self, x):
        if not _writable_of_dtype(x, self.dtype):
            return self.forward(x)
        _backend.kernels().relu(x.reshape(-1), out=x.reshape(-1))
        self._cache = x
        return x

    def _backward_in_place(self, dout):
        y = self._need_cache()
        if not (_writable_of_dtype(dout, self.dtype) and dout.shape == y.shape):
            return self.backward(dout)
        _backend.kernels().relu_backward(dout.reshape(-1), y.reshape(-1), out=dout.reshape(-1))
        return dout


def _writable_of_dtype(array, dtype):
    return (isinstance(array, np.ndarray) and array.dtype == dtype and array.flags.c_contiguous
            and array.flags.writeable)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` of a floating array, without overflow for large |x|, in x's dtype."""
    # exp(-|x|) never overflows; each sign picks the algebraically equal form that does not
    # cancel, so sigmoid(-30) keeps full relative precision.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed without overflow for large ``abs(x)``."""

    def forward(self, x):
        y = sigmoid(self._input(x))
        self._cache = y
        return y.copy()

    def backward(self, dout):
        y = self._need_cache()
        dout = self._dout(dout, y.shape)
        return dout * y * (1 - y)


class Tanh(Layer):
    """Hyperbolic tangent."""

    def forward(self, x):
        y = np.tanh(self._input(x))
        self._cache = y
        return y.copy()

    def backward(self, dout):
        y = self._need_cache()
        dout = self._dout(dout, y.shape)
        return dout * (1 - y * y)


class LeakyReLU(Layer):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (``torch.nn.LeakyReLU``); the gradient
    is ``negative_slope`` at ``x == 0``, as torch's, and NaN passes through."""

    def __init__(self, negative_slope=0.01, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(negative_slope, numbers.Real):
            raise TypeError(f"LeakyReLU: negative_slope must be a real number, got {negative_slope!r}")
        if not np.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU: negative_slope must be finite, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        x = self._input(x)
        self._cache = x
        return np.where(x > 0, x, x * self.dtype.type(self.negative_slope))

    def backward(self, dout):
        x = self._need_cache()
        dout = self._dout(dout, x.shape)
        return np.where(x > 0, dout, dout * self.dtype.type(self.negative_slope))

    def _extra_repr(self):
        return f"negative_slope={self.negative_slope}"
