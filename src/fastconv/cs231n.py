"""The CS231n assignment's ``fast_layers``, ``layers`` and ``layer_utils`` names over fastconv's
compiled kernels.

Existing assignment code only changes its import::

    from fastconv.cs231n import conv_forward_fast, conv_backward_fast, affine_forward, softmax_loss
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    dx, dw, db = conv_backward_fast(dout, cache)

The same as the assignment: arguments, returns ``(out, cache)`` and ``dx, dw, db, ...``, the
``conv_param`` / ``pool_param`` / ``bn_param`` / ``ln_param`` / ``gn_param`` /
``dropout_param`` dicts (``bn_param`` gets its ``running_mean`` and ``running_var`` created
as zeros and updated, ``running = momentum*running + (1 - momentum)*batch`` with the biased
batch variance, eps 1e-5 and momentum 0.9 by default; ``dropout_param["p"]`` is the
probability of *keeping* a unit, with inverted scaling by 1/p and ``seed`` passed to
``np.random.seed``, so a seed gives the assignment's masks); ``affine_forward`` flattens each
input row; losses are means over the batch.

Differences from the originals, all in the direction of "works in more cases":

- any stride, padding and pooling geometry the core API accepts (no "the pool must tile the
  input" or "the filter must fit evenly" restriction); ``stride`` and ``pad`` may be ints or
  ``(h, w)`` pairs;
- the dtype is kept: float32 in, float32 out, and each gradient has the dtype of the array it
  is the gradient of (``dx`` like ``x``, ``dw`` like ``w``, ``db`` like ``b``);
- in max pooling the gradient of a window goes to its first maximum (PyTorch's rule), where
  the ``reshape`` variant of the assignment splits it between tied maxima;
- bad input (a missing dict key, an unknown mode, mismatched shapes) raises a ValueError or
  TypeError naming the function and the argument; ``batchnorm_backward_alt`` is
  ``batchnorm_backward`` (one fused kernel).

The caches are opaque tuples meant only for the matching backward function (``affine_forward``'s
and ``relu_forward``'s are the assignment's ``(x, w, b)`` and ``x``).
"""

import numbers
from collections.abc import Mapping

import numpy as np

import fastconv
from fastconv import _api, _dropin_api, _validation

__all__ = [
    "conv_forward_fast", "conv_backward_fast",
    "conv_forward_im2col", "conv_forward_strides", "conv_backward_im2col", "conv_backward_strides",
    "max_pool_forward_fast", "max_pool_backward_fast",
    "max_pool_forward_reshape", "max_pool_forward_im2col",
    "max_pool_backward_reshape", "max_pool_backward_im2col",
    "conv_relu_forward", "conv_relu_backward", "conv_relu_pool_forward", "conv_relu_pool_backward",
    "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "layernorm_forward", "layernorm_backward", "spatial_groupnorm_forward", "spatial_groupnorm_backward",
    "dropout_forward", "dropout_backward", "softmax_loss", "svm_loss",
    "affine_relu_forward", "affine_relu_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
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


def _unpack(fname, cache, size, source):
    """The `size` items of a cache, or a TypeError saying which forward function makes it."""
    if not isinstance(cache, tuple) or len(cache) != size:
        raise TypeError(f"{fname}: cache must be the cache returned by {source}")
    return cache


_like = _dropin_api.gradient_like


def conv_forward_fast(x, w, b, conv_param):
    """Convolution forward: ``x`` (N, C, H, W), ``w`` (F, C, HH, WW), ``b`` (F,) or None,
    ``conv_param = {"stride": s, "pad": p}``. Returns ``(out, cache)``, out (N, F, H', W')."""
    stride, pad = _get("conv_forward_fast", "conv_param", conv_param, ("stride", "pad"))
    out = fastconv.conv2d(x, w, b, stride=stride, padding=pad)
    cache = (x, w, b, stride, pad)
    return out, cache


def conv_backward_fast(dout, cache):
    """Convolution backward: returns ``(dx, dw, db)`` for the cache of :func:`conv_forward_fast`."""
    x, w, b, stride, pad = _unpack("conv_backward_fast", cache, 5, "conv_forward_fast")
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride=stride, padding=pad)
    return _like(dx, x), _like(dw, w), _like(db, w if b is None else b)


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
    return out, (indices, x_shape, out.dtype)


def max_pool_backward_fast(dout, cache):
    """Max pooling backward: ``dx`` (the input's shape) for the cache of the forward pass."""
    indices, x_shape, dtype = _unpack("max_pool_backward_fast", cache, 3, "max_pool_forward_fast")
    return fastconv.max_pool2d_backward(dout, indices, x_shape).astype(dtype, copy=False)


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
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward of :func:`conv_relu_forward`: returns ``(dx, dw, db)``."""
    conv_cache, relu_cache = _unpack("conv_relu_backward", cache, 2, "conv_relu_forward")
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling; returns ``(out, cache)``."""
    s, relu_cache = conv_relu_forward(x, w, b, conv_param)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward of :func:`conv_relu_pool_forward`: returns ``(dx, dw, db)``."""
    relu_cache, pool_cache = _unpack("conv_relu_pool_backward", cache, 2, "conv_relu_pool_forward")
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_relu_backward(ds, relu_cache)


# ----------------------------------------------------------------------------------------------
# layers.py: affine, ReLU
# ----------------------------------------------------------------------------------------------

def affine_forward(x, w, b):
    """Fully connected layer: each row of ``x`` (N, d_1, ..., d_k) flattened to D = d_1*...*d_k
    and mapped to ``x_row @ w + b``, ``w`` (D, M), ``b`` (M,).

    Returns ``(out, cache)``: out (N, M) and the assignment's cache ``(x, w, b)``. The GEMMs run
    on fastconv's threads.
    """
    rows = _dropin_api.flat_rows(_dropin_api.batch_array("affine_forward", x))
    out = _dropin_api.affine(rows, w, b, name="affine_forward")
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Backward of :func:`affine_forward`: returns ``(dx, dw, db)``, dx in x's shape."""
    x, w, b = _unpack("affine_backward", cache, 3, "affine_forward")
    rows = _dropin_api.flat_rows(_dropin_api.batch_array("affine_backward", x))
    dx, dw, db = _dropin_api.affine_backward(dout, rows, w, name="affine_backward")
    return _like(dx.reshape(np.shape(x)), x), _like(dw, w), _like(db, w if b is None else b)


def relu_forward(x):
    """``max(x, 0)`` (:func:`fastconv.relu`); returns ``(out, cache)`` with the cache ``x``."""
    return fastconv.relu(x), x


def relu_backward(dout, cache):
    """Backward of :func:`relu_forward`: ``dout`` where ``x > 0``, else 0."""
    return _like(fastconv.relu_backward(dout, cache), cache)


# ----------------------------------------------------------------------------------------------
# layers.py: batch, layer and group normalisation
# ----------------------------------------------------------------------------------------------

def _param_dict(fname, argname, params):
    if not isinstance(params, Mapping):
        raise TypeError(f"{fname}: {argname} must be a dict, got {type(params).__name__}")
    return params


def _real(fname, argname, key, value, lowest, highest=None):
    return _validation.real_number(fname, f'{argname}["{key}"]', value, lowest, highest)


def _mode(fname, argname, params):
    (mode,) = _get(fname, argname, params, ("mode",))
    if mode not in ("train", "test"):
        raise ValueError(f'{fname}: {argname}["mode"] must be "train" or "test", got {mode!r}')
    return mode


def _image_ndim(fname, x, ndim, layout):
    x = _validation._as_array(fname, "x", x)
    if x.ndim != ndim:
        raise ValueError(f"{fname}: x must be a {ndim}-D array {layout}, got a {x.ndim}-D array of shape {x.shape}")
    return x


def _batchnorm(fname, x, gamma, beta, bn_param):
    """Batch normalisation of x (N, D) or (N, C, H, W) with the assignment's bn_param."""
    bn_param = _param_dict(fname, "bn_param", bn_param)
    mode = _mode(fname, "bn_param", bn_param)
    eps = _real(fname, "bn_param", "eps", bn_param.get("eps", 1e-5), 0.0)
    momentum = _real(fname, "bn_param", "momentum", bn_param.get("momentum", 0.9), 0.0, 1.0)
    width = x.shape[1]
    float_dtype = x.dtype if x.dtype.kind == "f" else np.float64
    running_mean = bn_param.get("running_mean", np.zeros(width, dtype=float_dtype))
    running_var = bn_param.get("running_var", np.zeros(width, dtype=float_dtype))
    for key, value in (("running_mean", running_mean), ("running_var", running_var)):
        if np.shape(value) != (width,):
            raise ValueError(f'{fname}: bn_param["{key}"] must have shape ({width},) for x.shape={x.shape}, '
                             f"got shape {np.shape(value)}")
    training = mode == "train"
    if training:
        out, mean, invstd, var = _api.batch_norm_and_variance(x, gamma, beta, eps=eps, name=fname)
        if x.shape[0]:  # an empty batch has no statistics to average in
            dtype = np.result_type(np.asarray(running_mean).dtype, out.dtype)
            running_mean = (momentum * running_mean + (1 - momentum) * mean.astype(np.float64)).astype(dtype)
            running_var = (momentum * running_var + (1 - momentum) * var).astype(dtype)
    else:
        out, mean, invstd, _ = _api.batch_norm_and_variance(x, gamma, beta, running_mean, running_var,
                                                            training=False, eps=eps, name=fname)
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, (x, gamma, beta, mean, invstd, training)


def _batchnorm_backward(fname, dout, cache, source):
    x, gamma, beta, mean, invstd, training = _unpack(fname, cache, 6, source)
    dx, dgamma, dbeta = fastconv.batch_norm_backward(dout, x, gamma, mean, invstd, training)
    return _like(dx, x), _like(dgamma, gamma), _like(dbeta, beta)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation of x (N, D) over the batch, per feature.

    ``bn_param``: ``mode`` ("train" or "test"), optional ``eps`` (1e-5), ``momentum`` (0.9),
    ``running_mean`` and ``running_var`` (D,), created as zeros when missing and replaced in
    the dict after a training step by ``momentum*running + (1 - momentum)*batch`` (biased batch
    variance). "train" normalises with the batch statistics, "test" with the running ones;
    ``gamma`` and ``beta`` (D,) scale and shift. Returns ``(out, cache)``.
    """
    x = _image_ndim("batchnorm_forward", x, 2, "(N, D)")
    return _batchnorm("batchnorm_forward", x, gamma, beta, bn_param)


def batchnorm_backward(dout, cache):
    """Backward of :func:`batchnorm_forward`: returns ``(dx, dgamma, dbeta)``.

    After a "test" forward, the gradient of the affine map that the running statistics define.
    """
    return _batchnorm_backward("batchnorm_backward", dout, cache, "batchnorm_forward")


def batchnorm_backward_alt(dout, cache):
    """:func:`batchnorm_backward` (the assignment's simplified derivation; one kernel here)."""
    return _batchnorm_backward("batchnorm_backward_alt", dout, cache, "batchnorm_forward")


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation of x (N, C, H, W) per channel, over the batch and the positions;
    ``gamma``, ``beta`` and the running statistics have shape (C,), ``bn_param`` as in
    :func:`batchnorm_forward`. Returns ``(out, cache)``."""
    x = _image_ndim("spatial_batchnorm_forward", x, 4, "(N, C, H, W)")
    return _batchnorm("spatial_batchnorm_forward", x, gamma, beta, bn_param)


def spatial_batchnorm_backward(dout, cache):
    """Backward of :func:`spatial_batchnorm_forward`: returns ``(dx, dgamma, dbeta)``."""
    return _batchnorm_backward("spatial_batchnorm_backward", dout, cache, "spatial_batchnorm_forward")


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalisation: each row of x (N, D) normalised by its own mean and biased variance
    over its D features, then scaled by ``gamma`` and shifted by ``beta`` (D,).

    ``ln_param`` may hold ``eps`` (1e-5). Returns ``(out, cache)``.
    """
    fname = "layernorm_forward"
    eps = _real(fname, "ln_param", "eps", _param_dict(fname, "ln_param", ln_param).get("eps", 1e-5), 0.0)
    x = _image_ndim(fname, x, 2, "(N, D)")
    out, mean, invstd = _dropin_api.group_norm(x, gamma, beta, 1, eps, name=fname)
    return out, (x, gamma, beta, mean, invstd, 1, None)


def _group_norm_backward(fname, dout, cache, source):
    x, gamma, beta, mean, invstd, groups, shape = _unpack(fname, cache, 7, source)
    dx, dgamma, dbeta = _dropin_api.group_norm_backward(dout, x, gamma, mean, invstd, groups, name=fname)
    if shape is not None:
        dgamma, dbeta = dgamma.reshape(shape), dbeta.reshape(shape)
    return _like(dx, x), _like(dgamma, gamma), _like(dbeta, beta)


def layernorm_backward(dout, cache):
    """Backward of :func:`layernorm_forward`: returns ``(dx, dgamma, dbeta)``."""
    return _group_norm_backward("layernorm_backward", dout, cache, "layernorm_forward")


def _channel_parameter(fname, name, value, channels):
    """gamma or beta of shape (1, C, 1, 1) (the assignment's) or (C,), as a (C,) array."""
    array = _validation._as_array(fname, name, value)
    if array.shape not in ((1, channels, 1, 1), (channels,)):
        raise ValueError(f"{fname}: {name} must have shape (1, C, 1, 1) = (1, {channels}, 1, 1), "
                         f"got shape {array.shape}")
    return array.reshape(channels)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalisation of x (N, C, H, W): each image's C channels are split into ``G``
    consecutive groups, each normalised over its channels and positions; then each channel is
    scaled by ``gamma`` and shifted by ``beta``, both (1, C, 1, 1).

    ``gn_param`` may hold ``eps`` (1e-5). Returns ``(out, cache)``.
    """
    fname = "spatial_groupnorm_forward"
    eps = _real(fname, "gn_param", "eps", _param_dict(fname, "gn_param", gn_param).get("eps", 1e-5), 0.0)
    x = _image_ndim(fname, x, 4, "(N, C, H, W)")
    if isinstance(G, (bool, np.bool_)) or not isinstance(G, (numbers.Integral, np.integer)):
        raise TypeError(f"{fname}: G must be an int, got {G!r}")
    weight, bias = (_channel_parameter(fname, name, v, x.shape[1]) for name, v in (("gamma", gamma), ("beta", beta)))
    out, mean, invstd = _dropin_api.group_norm(x, weight, bias, G, eps, name=fname)
    return out, (x, weight, bias, mean, invstd, G, np.shape(gamma))


def spatial_groupnorm_backward(dout, cache):
    """Backward of :func:`spatial_groupnorm_forward`: returns ``(dx, dgamma, dbeta)``, the last
    two shaped as gamma."""
    return _group_norm_backward("spatial_groupnorm_backward", dout, cache, "spatial_groupnorm_forward")


# ----------------------------------------------------------------------------------------------
# layers.py: dropout and the losses
# ----------------------------------------------------------------------------------------------

def dropout_forward(x, dropout_param):
    """Inverted dropout: ``dropout_param`` has ``p`` (the probability of *keeping* a unit),
    ``mode`` ("train" or "test") and optionally ``seed`` (passed to ``np.random.seed``).

    In training a unit is kept where ``np.random.rand(*x.shape) < p`` (the assignment's draw
    from NumPy's global generator) and scaled by 1/p; in "test" mode ``out`` is a copy of x.
    Returns ``(out, cache)``, out of x's dtype.
    """
    fname = "dropout_forward"
    p, mode = _get(fname, "dropout_param", dropout_param, ("p", "mode"))
    p = _real(fname, "dropout_param", "p", p, 0.0, 1.0)
    if p == 0:
        raise ValueError(f'{fname}: dropout_param["p"] is the probability of keeping a unit and must be '
                         "in (0, 1], got 0")
    mode = _mode(fname, "dropout_param", dropout_param)
    x = _validation._as_array(fname, "x", x)
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    if mode == "train":
        keep = np.random.rand(*x.shape) < p
        out = _dropin_api.masked_scale(x, keep, 1.0 / p, name=fname)
    else:
        keep, out = None, np.array(x)
    return _like(out, x), (dropout_param, keep, 1.0 / p)


def dropout_backward(dout, cache):
    """Backward of :func:`dropout_forward`: ``dout`` times the forward's scaled mask (training),
    or ``dout`` itself (test mode, as a copy)."""
    _, keep, scale = _unpack("dropout_backward", cache, 3, "dropout_forward")
    if keep is None:
        return np.array(dout)
    return _dropin_api.masked_scale(dout, keep, scale, name="dropout_backward")


def softmax_loss(x, y):
    """Softmax cross-entropy of scores x (N, C) with labels y (N,) in [0, C), averaged over N
    (:func:`fastconv.softmax_cross_entropy`). Returns ``(loss, dx)``, loss a Python float."""
    loss, dx = fastconv.softmax_cross_entropy(x, y)
    return loss, _like(dx, x)


def svm_loss(x, y):
    """Multiclass SVM (hinge) loss ``sum_{j != y} max(0, x_j - x_y + 1)`` of scores x (N, C)
    with labels y (N,), averaged over N. Returns ``(loss, dx)``, loss a Python float."""
    loss, dx = _dropin_api.svm_loss(x, y, name="svm_loss")
    return loss, _like(dx, x)


# ----------------------------------------------------------------------------------------------
# layer_utils.py: sandwich layers
# ----------------------------------------------------------------------------------------------

def affine_relu_forward(x, w, b):
    """Affine layer followed by ReLU; returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward of :func:`affine_relu_forward`: returns ``(dx, dw, db)``."""
    fc_cache, relu_cache = _unpack("affine_relu_backward", cache, 2, "affine_relu_forward")
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """Convolution, spatial batch normalisation, then ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache):
    """Backward of :func:`conv_bn_relu_forward`: returns ``(dx, dw, db, dgamma, dbeta)``."""
    conv_cache, bn_cache, relu_cache = _unpack("conv_bn_relu_backward", cache, 3, "conv_bn_relu_forward")
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = spatial_batchnorm_backward(dan, bn_cache)
    dx, dw, db = conv_backward_fast(da, conv_cache)
    return dx, dw, db, dgamma, dbeta
