"""Batch normalisation (BatchNorm1D, BatchNorm2D) and Dropout."""

import numbers

import numpy as np

from fastconv.nn._base import Layer, positive_int


class _BatchNorm(Layer):
    """Normalise each channel (axis 1) over every other axis, as ``torch.nn.BatchNorm*d``.

    Training mode uses the batch's mean and biased variance and updates the running
    statistics ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased*
    batch variance (PyTorch's convention); evaluation mode uses the running statistics.
    """

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

    def _broadcast(self, v, ndim):
        """A (C,) vector shaped to broadcast along axis 1 of an ndim-D array."""
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x):
        name = type(self).__name__
        x = self._input(x, self._ndims)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}.forward: x has {x.shape[1]} channels (axis 1) but the layer has "
                f"num_features={self.num_features}; x.shape={x.shape}"
            )
        axes = (0,) + tuple(range(2, x.ndim))
        count = x.size // self.num_features
        if self.training:
            if count < 2:
                raise ValueError(
                    f"{name}.forward: training needs more than one value per channel to compute "
                    f"a variance, got x.shape={x.shape}"
                )
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            m = self.momentum
            self.buffers["running_mean"][...] = (1 - m) * self.running_mean + m * mean
            self.buffers["running_var"][...] = (1 - m) * self.running_var + m * var * (count / (count - 1))
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = (1 / np.sqrt(var + self.eps)).astype(self.dtype)
        xhat = (x - self._broadcast(mean, x.ndim)) * self._broadcast(inv_std, x.ndim)
        y = xhat
        if "weight" in self.params:
            y = xhat * self._broadcast(self.params["weight"], x.ndim) + self._broadcast(self.params["bias"], x.ndim)
        self._cache = (xhat, inv_std, axes, count, self.training)
        return np.array(y, dtype=self.dtype)  # a fresh array: never the cached xhat itself

    def backward(self, dout):
        xhat, inv_std, axes, count, batch_stats = self._need_cache()
        dout = self._dout(dout, xhat.shape)
        ndim = xhat.ndim
        if "weight" in self.params:
            self.grads["weight"] += (dout * xhat).sum(axis=axes)
            self.grads["bias"] += dout.sum(axis=axes)
            dxhat = dout * self._broadcast(self.params["weight"], ndim)
        else:
            dxhat = dout
        if not batch_stats:
            # Running statistics are constants: the layer is an affine map per channel.
            return dxhat * self._broadcast(inv_std, ndim)
        # Mean and variance depend on x: project out the mean and the xhat direction.
        mean_dxhat = self._broadcast(dxhat.mean(axis=axes), ndim)
        mean_dxhat_xhat = self._broadcast((dxhat * xhat).mean(axis=axes), ndim)
        return (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * self._broadcast(inv_std, ndim)

    def _extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={'weight' in self.params}"


class BatchNorm1D(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) input (``torch.nn.BatchNorm1d``)."""

    _ndims = (2, 3)


class BatchNorm2D(_BatchNorm):
    """Batch normalisation over (N, C, H, W) input (``torch.nn.BatchNorm2d``)."""

    _ndims = (4,)


class Dropout(Layer):
    """Inverted dropout (``torch.nn.Dropout``): in training, zero each element with
    probability ``p`` and scale the others by ``1 / (1 - p)``; identity in evaluation mode.

    Masks are drawn from ``rng``. ``p = 1`` zeroes everything (as PyTorch).
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
        keep = self.rng.random(x.shape) >= self.p
        scale = 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)
        mask = (keep * scale).astype(self.dtype)
        self._cache = (mask, x.shape)
        return x * mask

    def backward(self, dout):
        mask, shape = self._need_cache()
        dout = self._dout(dout, shape)
        return dout.copy() if mask is None else dout * mask

    def _extra_repr(self):
        return f"p={self.p}"
