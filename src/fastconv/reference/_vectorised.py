"""Vectorised NumPy kernels: im2col + matmul for convolution, strided windows for pooling
(and, from fastconv.reference._vectorised_layers, those of the layer functions).

The fallback backend when the compiled extension is missing. Arguments are already checked
(see fastconv._backend for the kernel interface). Each function builds the whole batch at once,
which is simple and obviously right but needs memory proportional to N * C*KH*KW * OH*OW.
"""

import numpy as np

# The layer-function kernels of this backend (batch norm, ReLU, Dropout, softmax cross-entropy).
from fastconv.reference._vectorised_layers import (  # noqa: F401
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_statistics,
    dropout,
    dropout_backward,
    relu,
    relu_backward,
    softmax_cross_entropy,
)


def _window_slices(offset_h, offset_w, out_hw, stride):
    """Slices of the padded plane that kernel offset (offset_h, offset_w) reads, for every output."""
    (oh, ow), (sh, sw) = out_hw, stride
    return (
        slice(offset_h, offset_h + sh * (oh - 1) + 1, sh),
        slice(offset_w, offset_w + sw * (ow - 1) + 1, sw),
    )


def _out_hw(hw, kernel, stride, padding, dilation):
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(hw, kernel, stride, padding, dilation)
    )


def _pad(x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def im2col(x, kernel_size, stride, padding, dilation):
    n, c = x.shape[:2]
    (kh, kw), (dh, dw) = kernel_size, dilation
    oh, ow = _out_hw(x.shape[2:], kernel_size, stride, padding, dilation)
    xp = _pad(x, padding)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[(slice(None), slice(None)) + _window_slices(i * dh, j * dw, (oh, ow), stride)]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    n, c, h, w = input_shape
    (kh, kw), (dh, dw), (ph, pw) = kernel_size, dilation, padding
    oh, ow = _out_hw((h, w), kernel_size, stride, padding, dilation)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[(slice(None), slice(None)) + _window_slices(i * dh, j * dw, (oh, ow), stride)] += cols[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, ph : ph + h, pw : pw + w])


def conv2d(x, w, b, stride, padding, dilation):
    n, f = x.shape[0], w.shape[0]
    oh, ow = _out_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    cols = im2col(x, w.shape[2:], stride, padding, dilation)
    y = np.matmul(w.reshape(f, -1), cols)  # (N, F, OH*OW)
    if b is not None:
        y += b[None, :, None]
    return y.reshape(n, f, oh, ow)


def conv2d_backward(dout, x, w, stride, padding, dilation):
    n, f = dout.shape[:2]
    cols = im2col(x, w.shape[2:], stride, padding, dilation)
    dout2 = dout.reshape(n, f, -1)
    dw = np.tensordot(dout2, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3))
    dcols = np.matmul(w.reshape(f, -1).T, dout2)
    dx = col2im(dcols, x.shape, w.shape[2:], stride, padding, dilation)
    return dx, np.ascontiguousarray(dw), db


def max_pool2d(x, kernel_size, stride, padding):
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel_size, padding
    oh, ow = _out_hw((h, w), kernel_size, stride, padding, (1, 1))
    xp = _pad(x, padding, value=-np.inf)
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    index = np.full((n, c, oh, ow), -1, dtype=np.int64)
    rows = np.arange(oh)[:, None] * stride[0] - ph  # input row of window offset 0
    cols = np.arange(ow)[None, :] * stride[1] - pw
    for i in range(kh):
        for j in range(kw):
            value = xp[(slice(None), slice(None)) + _window_slices(i, j, (oh, ow), stride)]
            r, q = rows + i, cols + j
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)  # (OH, OW): not padding
            # As PyTorch: the first real element starts the window, then a strictly larger
            # value or any NaN takes over (ties keep the earlier position).
            take = inside & ((index < 0) | (value > best) | np.isnan(value))
            best = np.where(take, value, best)
            index = np.where(take, r * w + q, index)
    return best, index


def max_pool2d_backward(dout, indices, input_shape):
    n, c, h, w = input_shape
    dx = np.zeros((n * c, h * w), dtype=dout.dtype)
    planes = np.repeat(np.arange(n * c), dout.shape[2] * dout.shape[3])
    np.add.at(dx, (planes, indices.ravel()), dout.ravel())
    return dx.reshape(input_shape)


def avg_pool2d(x, kernel_size, stride, padding):
    (kh, kw) = kernel_size
    oh, ow = _out_hw(x.shape[2:], kernel_size, stride, padding, (1, 1))
    xp = _pad(x, padding)
    total = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            total += xp[(slice(None), slice(None)) + _window_slices(i, j, (oh, ow), stride)]
    return total / x.dtype.type(kh * kw)


def avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding):
    (kh, kw) = kernel_size
    n, c, oh, ow = dout.shape
    share = dout / dout.dtype.type(kh * kw)
    cols = np.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))
    return col2im(cols.reshape(n, c * kh * kw, oh * ow), input_shape, kernel_size, stride, padding, (1, 1))
