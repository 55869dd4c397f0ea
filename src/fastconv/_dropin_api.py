"""Checked entry points to the kernels that only the drop-ins use (fastconv.cs231n, fastconv.dlfs).

As fastconv._api does for the public functions: the arguments are checked once
(fastconv._validation), then handed to the active backend's kernels, or to those of the
``backend=`` given ("cython" or "reference", which the tests compare). ``name`` is the drop-in
function that error messages name. Not exported: the drop-ins are the public face.
"""

import math

import numpy as np

from fastconv import _validation as check
from fastconv._api import _kernels


def batch_array(name, x):
    """x as an ndarray with a batch axis (a 0-D value is refused, naming ``name``)."""
    x = check._as_array(name, "x", x)
    if x.ndim < 1:
        raise ValueError(f"{name}: x must have a batch axis (N, ...), got a 0-D array")
    return x


def flat_rows(x):
    """x (N, d_1, ..., d_k) as the (N, d_1*...*d_k) matrix of its flattened rows (also for N = 0,
    where reshape(N, -1) cannot infer the width)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def im2row(x, filter_h, filter_w, stride=1, pad=0, *, name="im2col", backend=None):
    """The book's im2col: rows (N*OH*OW, C*FH*FW), row ``(n*OH + oh)*OW + ow``, column
    ``(c*FH + i)*FW + j`` holding ``x[n, c, oh*sh - ph + i, ow*sw - pw + j]`` (0 in the padding)."""
    kernels = _kernels(backend)
    x, params, rows_shape = check.patch_rows(name, x, filter_h, filter_w, stride, pad)
    if rows_shape[0] == 0:
        return np.zeros(rows_shape, dtype=x.dtype)
    return kernels.im2row(x, *params)


def row2im(col, input_shape, filter_h, filter_w, stride=1, pad=0, *, name="col2im", backend=None):
    """The book's col2im, the adjoint of :func:`im2row`: overlapping contributions are summed and
    those that fall in the padding dropped; returns an array of ``input_shape`` (N, C, H, W)."""
    kernels = _kernels(backend)
    col, shape, params = check.patch_rows_fold(name, col, input_shape, filter_h, filter_w, stride, pad)
    if shape[0] == 0:
        return np.zeros(shape, dtype=col.dtype)
    return kernels.row2im(col, shape, *params)


def affine(x, w, b=None, *, name="affine", backend=None):
    """``x @ w + b`` with x (N, D), w (D, M) (in_features, out_features), b (M,) or None."""
    kernels = _kernels(backend)
    x, w, b = check.affine(name, x, w, b)
    return kernels.affine(x, w, b)


def affine_backward(dout, x, w, *, name="affine_backward", backend=None):
    """``(dx, dw, db)`` of :func:`affine`: ``dout @ w.T``, ``x.T @ dout``, ``dout.sum(0)``."""
    kernels = _kernels(backend)
    dout, x, w = check.affine_backward(name, dout, x, w)
    return kernels.affine_backward(dout, x, w)


def group_norm(x, weight, bias, groups, eps=1e-5, *, name="group_norm", backend=None):
    """Group normalisation of x (N, C, *spatial), as ``torch.nn.functional.group_norm``.

    Each image's channels are split into ``groups`` consecutive groups, each normalised by its
    own mean and biased variance over its channels and positions; then channel c is scaled by
    ``weight[c]`` and shifted by ``bias[c]`` (None: ones, zeros). An (N, D) input with one group
    is layer normalisation over the D features. Returns ``(y, mean, invstd)``, the last two of
    shape (N, groups), for :func:`group_norm_backward`.
    """
    kernels = _kernels(backend)
    x3, shape, weight, bias, inner, eps = check.group_norm(name, x, weight, bias, groups, eps)
    if x3.shape[0] == 0:
        empty = np.empty(x3.shape[:2], dtype=x3.dtype)
        return np.empty(shape, dtype=x3.dtype), empty, empty.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y, mean, invstd = kernels.group_norm_forward(x3, weight, bias, inner, eps)
    return y.reshape(shape), mean, invstd


def group_norm_backward(dout, x, weight, mean, invstd, groups, *, name="group_norm_backward", backend=None):
    """``(dx, dweight, dbias)`` of :func:`group_norm`; dweight and dbias have shape (C,) (zeros
    for an empty batch)."""
    kernels = _kernels(backend)
    dout3, x3, shape, weight, mean, invstd, inner = check.group_norm_backward(
        name, dout, x, weight, mean, invstd, groups)
    if x3.shape[0] == 0:
        zeros = np.zeros(shape[1], dtype=x3.dtype)
        return np.zeros(shape, dtype=x3.dtype), zeros, zeros.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dx, dweight, dbias = kernels.group_norm_backward(dout3, x3, weight, mean, invstd, inner)
    return dx.reshape(shape), dweight, dbias


def svm_loss(x, y, *, name="svm_loss", backend=None):
    """Mean multiclass hinge loss ``sum_{k != y} max(0, x_k - x_y + 1)`` of scores x (N, K) and
    labels y (N,); returns ``(loss, dx)`` with the loss a Python float (NaN for N = 0)."""
    kernels = _kernels(backend)
    x, labels = check.class_scores(name, x, y)
    if x.shape[0] == 0:
        return float("nan"), np.zeros(x.shape, dtype=x.dtype)
    loss, dx = kernels.svm_loss(x, labels)
    return float(loss), dx


def masked_scale(x, keep, scale, *, name="dropout", backend=None):
    """``x * (scale where keep, else 0)`` for a boolean mask ``keep`` of x's shape: the courses'
    dropout, forward and backward (a product, so a dropped NaN or inf gives NaN, as NumPy's
    ``x * mask``). Returns an array of x's shape in its computation dtype."""
    kernels = _kernels(backend)
    (x,) = check.elementwise(name, [("x", x)])
    scale = check.real_number(name, "scale", scale, 0.0)
    keep = np.asarray(keep)
    if keep.shape != x.shape or keep.dtype != np.bool_:
        raise ValueError(f"{name}: the mask must be a bool array of x's shape {x.shape}, got "
                         f"{keep.dtype} of shape {keep.shape}")
    flat = kernels.dropout_backward(x.reshape(-1), np.ascontiguousarray(keep).reshape(-1), scale)
    return flat.reshape(x.shape)


def gradient_like(grad, param):
    """``grad`` in the dtype of ``param`` when that is float32 or float64 (else unchanged): the
    drop-ins give each gradient the dtype of the array it is the gradient of."""
    dtype = getattr(param, "dtype", None)
    if dtype is None or dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return grad
    return grad.astype(dtype, copy=False)
