"""Dense layers: Linear, and Flatten, which turns feature maps into its input rows.

Linear's GEMMs run in the active backend's kernels (the compiled ones on fastconv's own threads,
never on NumPy's BLAS thread pool, whose spinning workers would compete with them for the cores).
"""

import numpy as np

from fastconv import _backend
from fastconv.nn._base import Layer, kaiming_uniform, positive_int


class Linear(Layer):
    """Fully connected layer ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    ``x`` has shape (..., in_features); ``weight`` is (out_features, in_features).
    """

    _returns_private = True

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
        rows = x.reshape(-1, self.in_features)
        y = _backend.kernels().linear(rows, self.params["weight"], self.params.get("bias"))
        self._cache = (x, x.shape[:-1] + (self.out_features,))
        return y.reshape(self._cache[1])

    def backward(self, dout):
        x, out_shape = self._need_cache()
        dout = self._dout(dout, out_shape)
        dx = _backend.kernels().linear_backward(
            dout.reshape(-1, self.out_features), x.reshape(-1, self.in_features),
            self.params["weight"], self.grads["weight"], self.grads.get("bias"),
        )
        return dx.reshape(x.shape)

    def _extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"


class Flatten(Layer):
    """Flatten every dimension after the batch: (N, ...) -> (N, prod(...)) (``torch.nn.Flatten``).

    Elements keep their memory order: an NCHW input flattens in (c, h, w) order, an NHWC one
    (``data_format="NHWC"`` layers before it) in (h, w, c) order, as Keras's Flatten with
    channels-last data. A Linear layer after it therefore sees its features in a different
    order in the two layouts: to move such a network's weights from NCHW to NHWC, permute the
    Linear weight's columns, ``w.reshape(F, C, H, W).transpose(0, 2, 3, 1).reshape(F, -1)``.
    """

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
