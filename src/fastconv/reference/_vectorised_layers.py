"""Vectorised NumPy kernels of the layer functions: batch normalisation, ReLU, Dropout's
masking and softmax cross-entropy (part of the reference backend, see fastconv._backend).

Arguments are already checked. Batch-norm operands are (outer, C, inner) arrays: NCHW input
is (N, C, H*W), channels-last input (N*H*W, C, 1). The formulas are the textbook ones, in
the computation dtype (the statistics in float64). NaN and inf propagate as IEEE arithmetic
says, without NumPy's warnings (the compiled kernels give none either).
"""

import numpy as np

_AXES = (0, 2)  # every axis of an (outer, C, inner) operand but the channels'
_ieee = np.errstate(divide="ignore", invalid="ignore", over="ignore")


def _per_channel(v):
    return v[None, :, None]


@_ieee
def batch_norm_statistics(x):
    x = x.astype(np.float64, copy=False)
    mean = x.mean(axis=_AXES)
    return mean, ((x - _per_channel(mean)) ** 2).mean(axis=_AXES)


@_ieee
def batch_norm_forward(x, weight, bias, mean, invstd):
    scale = invstd if weight is None else invstd * weight
    shift = np.zeros_like(mean) if bias is None else bias
    return (x - _per_channel(mean)) * _per_channel(scale) + _per_channel(shift)


@_ieee
def batch_norm_backward(dout, x, weight, mean, invstd, training):
    xhat = (x - _per_channel(mean)) * _per_channel(invstd)
    dweight = (dout * xhat).sum(axis=_AXES)
    dbias = dout.sum(axis=_AXES)
    dxhat = dout if weight is None else dout * _per_channel(weight)
    if training:
        # The batch mean and variance depend on x: project out the mean and the xhat direction.
        dxhat = (dxhat - dxhat.mean(axis=_AXES, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=_AXES, keepdims=True))
    return dxhat * _per_channel(invstd), dweight, dbias


def _into(result, out):
    if out is None:
        return result
    out[...] = result
    return out


def relu(x, out=None):
    return _into(np.where(x < 0, x.dtype.type(0), x), out)


def relu_backward(dout, y, out=None):
    return _into(np.where(y > 0, dout, dout.dtype.type(0)), out)


def dropout(x, u, p, scale, out=None):
    keep = u >= p
    y = x * np.where(keep, x.dtype.type(scale), x.dtype.type(0))
    if out is None:
        return y, keep
    out[0][...], out[1][...] = y, keep
    return out


def dropout_backward(dout, keep, scale):
    return dout * np.where(keep, dout.dtype.type(scale), dout.dtype.type(0))


@_ieee
def softmax_cross_entropy(logits, target):
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    if target.ndim == 1:
        rows = np.arange(n)
        loss = -log_probs[rows, target].sum(dtype=np.float64) / n
        probs[rows, target] -= 1
        return float(loss), probs / logits.dtype.type(n)
    loss = -(target * log_probs).sum(dtype=np.float64) / n
    return float(loss), (probs * target.sum(axis=1, keepdims=True) - target) / logits.dtype.type(n)


# ----------------------------------------------------------------------------------------------
# Group normalisation (the drop-ins' layer norm and group norm): x is (N, G, M), row (n, g)
# made of the C/G planes of `inner` elements of its channels.
# ----------------------------------------------------------------------------------------------

def _per_element(v, groups, inner):
    """A (C,) vector of channel values laid out along the (N, G, M) rows: shape (1, G, M)."""
    return np.repeat(v.reshape(groups, -1), inner, axis=1)[None]


@_ieee
def group_norm_forward(x, weight, bias, inner, eps):
    n, groups, m = x.shape
    x64 = x.astype(np.float64, copy=False)
    mean64 = x64.mean(axis=2)
    var64 = ((x64 - mean64[..., None]) ** 2).mean(axis=2)
    mean = mean64.astype(x.dtype)
    invstd = (1 / np.sqrt(var64 + eps)).astype(x.dtype)
    scale = invstd[..., None] if weight is None else invstd[..., None] * _per_element(weight, groups, inner)
    shift = 0 if bias is None else _per_element(bias, groups, inner)
    return (x - mean[..., None]) * scale + shift, mean, invstd


@_ieee
def group_norm_backward(dout, x, weight, mean, invstd, inner):
    n, groups, m = x.shape
    xhat = (x - mean[..., None]) * invstd[..., None]
    per_channel = lambda a: a.reshape(n, -1, inner).sum(axis=(0, 2))  # noqa: E731
    dweight, dbias = per_channel(dout * xhat), per_channel(dout)
    g = dout if weight is None else dout * _per_element(weight, groups, inner)
    dx = (g - g.mean(axis=2, keepdims=True) - xhat * (g * xhat).mean(axis=2, keepdims=True)) * invstd[..., None]
    return dx, dweight, dbias


# ----------------------------------------------------------------------------------------------
# Multiclass hinge loss (CS231n's svm_loss)
# ----------------------------------------------------------------------------------------------

@_ieee
def svm_loss(x, labels):
    n = x.shape[0]
    rows = np.arange(n)
    margins = (x - x[rows, labels][:, None]) + x.dtype.type(1)
    margins[rows, labels] = 0
    positive = margins > 0
    loss = np.maximum(margins, 0).sum(dtype=np.float64) / n
    dx = positive.astype(x.dtype)
    dx[rows, labels] = -positive.sum(axis=1)
    return float(loss), dx / x.dtype.type(n)
