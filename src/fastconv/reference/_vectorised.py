"""Vectorised NumPy kernels: im2col + matmul for convolution, strided windows for pooling.

The fallback backend when the compiled extension is missing. Arguments are already checked
(see fastconv._backend for the kernel interface). Each function builds the whole batch at once,
which is simple and obviously right but needs memory proportional to N * C*KH*KW * OH*OW.
"""

import numpy as np


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


def _both_sides(padding):
    """(ph, pw) as ((ph, ph), (pw, pw)): the (before, after) pairs the helpers below take."""
    return tuple((p, p) for p in padding)


def _pad(x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _pad_sides(x, padding):
    """x padded with zeros by ((top, bottom), (left, right))."""
    if not any(before or after for before, after in padding):
        return x
    return np.pad(x, ((0, 0), (0, 0)) + tuple(padding))


def _unfold(x, kernel_size, stride, padding, dilation, out_hw):
    """im2col with (before, after) padding pairs and the output size given: (N, C*KH*KW, OH*OW).

    out_hw may be smaller than what the padded input allows (a transposed convolution's
    output_padding can ask for that); the windows beyond it are not read.
    """
    n, c = x.shape[:2]
    (kh, kw), (dh, dw), (oh, ow) = kernel_size, dilation, out_hw
    xp = _pad_sides(x, padding)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[(slice(None), slice(None)) + _window_slices(i * dh, j * dw, (oh, ow), stride)]
    return cols.reshape(n, c * kh * kw, oh * ow)


def _fold(cols, input_shape, kernel_size, stride, padding, dilation, out_hw):
    """col2im with (before, after) padding pairs and the output size given (see _unfold)."""
    n, c, h, w = input_shape
    (kh, kw), (dh, dw), (oh, ow) = kernel_size, dilation, out_hw
    (top, bottom), (left, right) = padding
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[(slice(None), slice(None)) + _window_slices(i * dh, j * dw, (oh, ow), stride)] += cols[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, top : top + h, left : left + w])


def im2col(x, kernel_size, stride, padding, dilation):
    out_hw = _out_hw(x.shape[2:], kernel_size, stride, padding, dilation)
    return _unfold(x, kernel_size, stride, _both_sides(padding), dilation, out_hw)


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    out_hw = _out_hw(input_shape[2:], kernel_size, stride, padding, dilation)
    return _fold(cols, input_shape, kernel_size, stride, _both_sides(padding), dilation, out_hw)


# Convolution with groups: the C*KH*KW rows of the im2col matrix and the F filters split into
# `groups` consecutive blocks, and block g of the filters only meets block g of the rows.

def _conv_out_hw(hw, kernel, stride, padding, dilation):
    return tuple(
        (size + before + after - d * (k - 1) - 1) // s + 1
        for size, k, s, (before, after), d in zip(hw, kernel, stride, padding, dilation)
    )


def _grouped_forward(x, w, stride, padding, dilation, groups, out_hw):
    """(N, F, OH*OW): w's filters against x's windows, group by group."""
    n, f = x.shape[0], w.shape[0]
    cols = _unfold(x, w.shape[2:], stride, padding, dilation, out_hw)
    cols = cols.reshape(n, groups, -1, cols.shape[-1])
    y = np.matmul(w.reshape(groups, f // groups, -1), cols)  # (N, G, F/G, OH*OW)
    return y.reshape(n, f, -1)


def _grouped_data_gradient(dout, w, input_shape, stride, padding, dilation, groups):
    """The gradient with respect to x of _grouped_forward for upstream gradient dout."""
    n, f = dout.shape[:2]
    wg = w.reshape(groups, f // groups, -1)
    dcols = np.matmul(wg.transpose(0, 2, 1), dout.reshape(n, groups, f // groups, -1))
    return _fold(dcols.reshape(n, -1, dcols.shape[-1]), input_shape, w.shape[2:], stride, padding,
                 dilation, dout.shape[2:])


def _grouped_weight_gradient(dout, x, w_shape, stride, padding, dilation, groups):
    """The gradient with respect to w of _grouped_forward for upstream gradient dout."""
    n, f = dout.shape[:2]
    cols = _unfold(x, w_shape[2:], stride, padding, dilation, dout.shape[2:])
    cols = cols.reshape(n, groups, -1, cols.shape[-1])
    d = dout.reshape(n, groups, f // groups, -1)
    return np.ascontiguousarray(np.einsum("ngfq,ngkq->gfk", d, cols).reshape(w_shape))


def conv2d(x, w, b, stride, padding, dilation, groups):
    out_hw = _conv_out_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    y = _grouped_forward(x, w, stride, padding, dilation, groups, out_hw)
    if b is not None:
        y += b[None, :, None]
    return y.reshape(x.shape[:1] + w.shape[:1] + out_hw)


def conv2d_backward(dout, x, w, stride, padding, dilation, groups):
    dw = _grouped_weight_gradient(dout, x, w.shape, stride, padding, dilation, groups)
    dx = _grouped_data_gradient(dout, w, x.shape, stride, padding, dilation, groups)
    return dx, dw, dout.sum(axis=(0, 2, 3))


# A transposed convolution is the data gradient of the convolution that maps its output
# (N, F, OH, OW) back to its input (N, C, H, W) with the same w, (C, F/groups, KH, KW).

def conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    n, filters = x.shape[0], w.shape[1] * groups
    out_hw = tuple(
        (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        for size, k, s, p, op, d in zip(x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)
    )
    y = _grouped_data_gradient(x, w, (n, filters) + out_hw, stride, _both_sides(padding), dilation, groups)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups, dilation):
    padding = _both_sides(padding)
    dx = _grouped_forward(dout, w, stride, padding, dilation, groups, x.shape[2:]).reshape(x.shape)
    dw = _grouped_weight_gradient(x, dout, w.shape, stride, padding, dilation, groups)
    return dx, dw, dout.sum(axis=(0, 2, 3))


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
