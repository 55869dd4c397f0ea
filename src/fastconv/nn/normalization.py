"""Batch normalisation (BatchNorm1D, BatchNorm2D) and Dropout."""

import numbers

import numpy as np

import fastconv
from fastconv import _backend, _validation
from fastconv.nn._base import Layer, positive_int

# Dropout draws its uniforms this many at a time into one buffer, which the masking kernel
# reads back from cache (the same stream as one draw of the whole array).
_DRAW_CHUNK = 1 << 16


class _BatchNorm(Layer):
    """Normalise each channel (axis 1) over every other axis, as ``torch.nn.BatchNorm*d``
    (:func:`fastconv.batch_norm`).

    Training mode uses the batch's mean and biased variance and updates the running
    statistics ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased*
    batch variance (PyTorch's convention); evaluation mode uses the running statistics.
    The backward needs only the input and the (C,) mean and invstd, which is what is kept.
    """

    _returns_private = True

    _ndims = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        name = type(self).__name__
        self.num_features = positive_int(name, "num_features", num_features)
        for label, value, upper in (("eps", eps, None), ("momentum", momentum, 1.0)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name}: {label} must be a real number, got {value!r}")
            if not (value >= 0 and (upper is None or value <= upper)):
                bounds = "in [0, 1]" if upper else ">= 0"
                raise ValueError(f"{name}: {label} must be {bounds}, got {value!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        if not isinstance(affine, (bool, np.bool_)):
            raise TypeError(f"{name}: affine must be True or False, got {affine!r}")
        if affine:
            self._add_param("weight", np.ones(self.num_features))
            self._add_param("bias", np.zeros(self.num_features))
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=self.dtype)

    @property
    def running_mean(self):
        return self.buffers["running_mean"]

    @property
    def running_var(self):
        return self.buffers["running_var"]

    data_format = "NCHW"   # BatchNorm2D takes "NHWC" too: channels on the last axis

    def forward(self, x):
        name = type(self).__name__
        x = self._input(x, self._ndims)
        axis = x.ndim - 1 if self.data_format == "NHWC" else 1
        if x.shape[axis] != self.num_features:
            raise ValueError(
                f"{name}.forward: x has {x.shape[axis]} channels (axis {axis}) but the layer has "
                f"num_features={self.num_features}; x.shape={x.shape}"
            )
        if self.training and x.size // self.num_features < 2:
            raise ValueError(
                f"{name}.forward: training needs more than one value per channel to compute "
                f"a variance, got x.shape={x.shape}"
            )
        if self.training and self.eps == 0:
            raise ValueError(f"{name}.forward: eps must be positive in training (as torch), got eps=0.0")
        # Training updates the running statistics in place.
        y, mean, invstd = fastconv.batch_norm(
            x, self.params.get("weight"), self.params.get("bias"), self.running_mean,
            self.running_var, self.training, self.momentum, self.eps, data_format=self.data_format,
        )
        self._cache = (x, mean, invstd, self.training)
        return y

    def backward(self, dout):
        x, mean, invstd, batch_stats = self._need_cache()
        dout = self._dout(dout, x.shape)
        dx, dweight, dbias = fastconv.batch_norm_backward(
            dout, x, self.params.get("weight"), mean, invstd, batch_stats, data_format=self.data_format
        )
        if "weight" in self.params:
            self.grads["weight"] += dweight
            self.grads["bias"] += dbias
        return dx

    def _extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={'weight' in self.params}"


class BatchNorm1D(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) input (``torch.nn.BatchNorm1d``)."""

    _ndims = (2, 3)


class BatchNorm2D(_BatchNorm):
    """Batch normalisation over (N, C, H, W) input (``torch.nn.BatchNorm2d``), or (N, H, W, C)
    input with ``data_format="NHWC"`` (keyword-only)."""

    _ndims = (4,)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, *, data_format="NCHW",
                 dtype=np.float32, rng=None):
        _validation.channels_last(type(self).__name__, data_format)
        super().__init__(num_features, eps, momentum, affine, dtype=dtype, rng=rng)
        self.data_format = data_format

    def _extra_repr(self):
        return super()._extra_repr() + (", data_format='NHWC'" if self.data_format == "NHWC" else "")


class Dropout(Layer):
    """Inverted dropout (``torch.nn.Dropout``): in training, zero each element with
    probability ``p`` and scale the others by ``1 / (1 - p)``; identity in evaluation mode.

    Masks are drawn from ``rng``: element i is kept when the i-th uniform draw
    ``rng.random()`` is at least ``p`` (the stream of ``rng.random(x.shape) >= p``). Mask and
    scale are applied in one compiled pass, as a product (a dropped inf or NaN gives NaN, as
    PyTorch); the backward reuses the boolean mask. ``p = 1`` zeroes everything (as PyTorch).
    """

    def __init__(self, p=0.5, *, dtype=np.float32, rng=None):
        super().__init__(dtype=dtype, rng=rng)
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"Dropout: p must be a real number in [0, 1], got {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x):
        x = self._input(x)
        if not self.training or self.p == 0:
            self._cache = (None, x.shape)
            return x.copy()
        kernels = _backend.kernels()
        y, keep = np.empty_like(x), np.empty(x.shape, dtype=bool)
        flat_x, flat_y, flat_keep = x.reshape(-1), y.reshape(-1), keep.reshape(-1)
        uniforms = np.empty(min(x.size, _DRAW_CHUNK))
        for start in range(0, x.size, _DRAW_CHUNK):
            part = slice(start, min(start + _DRAW_CHUNK, x.size))
            u = uniforms[: part.stop - start]
            self.rng.random(out=u)
            kernels.dropout(flat_x[part], u, self.p, self._scale(), out=(flat_y[part], flat_keep[part]))
        self._cache = (keep, x.shape)
        return y

    def backward(self, dout):
        keep, shape = self._need_cache()
        dout = self._dout(dout, shape)
        if keep is None:
            return dout.copy()
        dx = _backend.kernels().dropout_backward(dout.reshape(-1), keep.reshape(-1), self._scale())
        return dx.reshape(shape)

    def _scale(self):
        return 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)

    def _extra_repr(self):
        return f"p={self.p}"
