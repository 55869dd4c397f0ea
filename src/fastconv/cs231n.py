"""The CS231n assignment's ``fast_layers`` / ``layer_utils`` names over fastconv's kernels.

Existing assignment code only changes its import::

    from fastconv.cs231n import conv_forward_fast, conv_backward_fast
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    dx, dw, db = conv_backward_fast(dout, cache)

Differences from the originals, all in the direction of "works in more cases":

- any stride, padding and pooling geometry the core API accepts (no "the pool must tile the
  input" or "the filter must fit evenly" restriction); ``stride`` and ``pad`` may be ints or
  ``(h, w)`` pairs;
- the dtype is kept: float32 in, float32 out, and each gradient has the dtype of the array it
  is the gradient of (``dx`` like ``x``, ``dw`` like ``w``, ``db`` like ``b``);
- in max pooling the gradient of a window goes to its first maximum (PyTorch's rule), where
  the ``reshape`` variant of the assignment splits it between tied maxima.

The caches are opaque tuples meant only for the matching backward function.
"""

from collections.abc import Mapping

import numpy as np

import fastconv

__all__ = [
    "conv_forward_fast", "conv_backward_fast",
    "conv_forward_im2col", "conv_forward_strides", "conv_backward_im2col", "conv_backward_strides",
    "max_pool_forward_fast", "max_pool_backward_fast",
    "max_pool_forward_reshape", "max_pool_forward_im2col",
    "max_pool_backward_reshape", "max_pool_backward_im2col",
    "conv_relu_forward", "conv_relu_backward", "conv_relu_pool_forward", "conv_relu_pool_backward",
    "MissingParameterError",
]


class MissingParameterError(KeyError, ValueError):
    """A conv_param / pool_param dict lacks a required key.

    A KeyError (what the assignment's code raises) and a ValueError (an invalid argument),
    with a readable message (KeyError alone would print it as a quoted repr).
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _get(fname, argname, params, keys):
    """The values of `keys` in the dict `params`, with an error that lists what is missing."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{fname}: {argname} must be a dict with keys {list(keys)}, got {type(params).__name__}"
        )
    missing = [k for k in keys if k not in params]
    if missing:
        raise MissingParameterError(
            f"{fname}: {argname} is missing {missing}; it must have keys {list(keys)}, "
            f"got keys {sorted(map(str, params))}"
        )
    return [params[k] for k in keys]


def _float_dtype(value):
    """The dtype a gradient of `value` should have: its own when floating, else None."""
    dtype = getattr(value, "dtype", None)
    return dtype if dtype is not None and dtype.kind == "f" and dtype.itemsize in (4, 8) else None


def _like(grad, dtype):
    return grad if dtype is None else grad.astype(dtype, copy=False)


def conv_forward_fast(x, w, b, conv_param):
    """Convolution forward: ``x`` (N, C, H, W), ``w`` (F, C, HH, WW), ``b`` (F,) or None,
    ``conv_param = {"stride": s, "pad": p}``. Returns ``(out, cache)``, out (N, F, H', W')."""
    stride, pad = _get("conv_forward_fast", "conv_param", conv_param, ("stride", "pad"))
    out = fastconv.conv2d(x, w, b, stride=stride, padding=pad)
    cache = (x, w, b, stride, pad)
    return out, cache


def conv_backward_fast(dout, cache):
    """Convolution backward: returns ``(dx, dw, db)`` for the cache of :func:`conv_forward_fast`."""
    try:
        x, w, b, stride, pad = cache
    except (TypeError, ValueError):
        raise TypeError("conv_backward_fast: cache must be the cache returned by conv_forward_fast") from None
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride=stride, padding=pad)
    return _like(dx, _float_dtype(x)), _like(dw, _float_dtype(w)), _like(db, _float_dtype(b) or _float_dtype(w))


def max_pool_forward_fast(x, pool_param):
    """Max pooling forward with ``pool_param = {"pool_height", "pool_width", "stride"}``.

    Windows need not tile the input: the output is ``(H - pool_height) // stride + 1`` high
    (same for the width). Returns ``(out, cache)``.
    """
    ph, pw, stride = _get(
        "max_pool_forward_fast", "pool_param", pool_param, ("pool_height", "pool_width", "stride")
    )
    x_shape = np.shape(x)
    out, indices = fastconv.max_pool2d(x, (ph, pw), stride=stride)
    return out, (indices, x_shape, _float_dtype(out))


def max_pool_backward_fast(dout, cache):
    """Max pooling backward: ``dx`` (the input's shape) for the cache of the forward pass."""
    try:
        indices, x_shape, dtype = cache
    except (TypeError, ValueError):
        raise TypeError("max_pool_backward_fast: cache must be the cache returned by max_pool_forward_fast") from None
    return _like(fastconv.max_pool2d_backward(dout, indices, x_shape), dtype)


# The assignment's alternative implementations: here they are all the same fast kernels.
conv_forward_im2col = conv_forward_fast
conv_forward_strides = conv_forward_fast
conv_backward_im2col = conv_backward_fast
conv_backward_strides = conv_backward_fast
max_pool_forward_reshape = max_pool_forward_fast
max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_fast
max_pool_backward_im2col = max_pool_backward_fast


def conv_relu_forward(x, w, b, conv_param):
    """Convolution followed by ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out = np.maximum(a, 0)
    return out, (conv_cache, a)


def conv_relu_backward(dout, cache):
    """Backward of :func:`conv_relu_forward`: returns ``(dx, dw, db)``."""
    conv_cache, a = cache
    da = np.where(a > 0, dout, 0).astype(a.dtype, copy=False)
    return conv_backward_fast(da, conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling; returns ``(out, cache)``."""
    s, relu_cache = conv_relu_forward(x, w, b, conv_param)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward of :func:`conv_relu_pool_forward`: returns ``(dx, dw, db)``."""
    relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_relu_backward(ds, relu_cache)
