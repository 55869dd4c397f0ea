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
    group_norm_backward,
    group_norm_forward,
    relu,
    relu_backward,
    softmax_cross_entropy,
    svm_loss,
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


def _both_sides(padding):
    """(ph, pw) as ((ph, ph), (pw, pw)): the (before, after) pairs the helpers below take."""
    return tuple((p, p) for p in padding)


def _pad(x, padding, value=0.0, extra=(0, 0)):
    """x padded by `padding` on both sides, plus `extra` more at the bottom and right."""
    (ph, pw), (eh, ew) = padding, extra
    if ph == pw == eh == ew == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=value)


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


def conv2d_backward(dout, x, w, stride, padding, dilation, groups, need_dx=True):
    dw = _grouped_weight_gradient(dout, x, w.shape, stride, padding, dilation, groups)
    dx = _grouped_data_gradient(dout, w, x.shape, stride, padding, dilation, groups) if need_dx else None
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


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

def _pool_out_size(size, k, s, p, d, ceil_mode):
    """torch's pooling_output_shape (arguments already checked: the result is >= 1)."""
    room = size + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return room // s + 1
    out = -(-room // s) + 1
    return out - 1 if (out - 1) * s >= size + p else out


def _pool_geometry(hw, kernel_size, stride, padding, dilation, ceil_mode):
    """(OH, OW) and the extra (bottom, right) padding that ceil_mode's last windows reach into."""
    out, extra = [], []
    for size, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation):
        o = _pool_out_size(size, k, s, p, d, ceil_mode)
        out.append(o)
        extra.append(max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p)))
    return tuple(out), tuple(extra)


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (dh, dw) = kernel_size, padding, dilation
    (oh, ow), extra = _pool_geometry((h, w), kernel_size, stride, padding, dilation, ceil_mode)
    xp = _pad(x, padding, -np.inf, extra)
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    index = np.full((n, c, oh, ow), -1, dtype=np.int64)
    rows = np.arange(oh)[:, None] * stride[0] - ph  # input row of window offset 0
    cols = np.arange(ow)[None, :] * stride[1] - pw
    for i in range(kh):
        for j in range(kw):
            value = xp[(slice(None), slice(None)) + _window_slices(i * dh, j * dw, (oh, ow), stride)]
            r, q = rows + i * dh, cols + j * dw
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


def _window_counts(size, out, k, s, p, count_include_pad):
    """Divisor factor of each output along one axis: the window's length inside the padded
    input (count_include_pad) or inside the input itself."""
    starts = np.arange(out, dtype=np.int64) * s - p
    ends = starts + k
    if count_include_pad:
        return np.minimum(ends, size + p) - starts
    return np.minimum(ends, size) - np.maximum(starts, 0)


def _avg_divisors(hw, out_hw, kernel_size, stride, padding, count_include_pad, divisor_override, dtype):
    """(OH, OW) array of every output's divisor, as the product of its row and column counts."""
    if divisor_override is not None:
        return np.full(out_hw, divisor_override, dtype=np.int64).astype(dtype)
    rows, cols = (_window_counts(*axis, count_include_pad)
                  for axis in zip(hw, out_hw, kernel_size, stride, padding))
    return (rows[:, None] * cols[None, :]).astype(dtype)


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    (kh, kw) = kernel_size
    out_hw, extra = _pool_geometry(x.shape[2:], kernel_size, stride, padding, (1, 1), ceil_mode)
    xp = _pad(x, padding, 0.0, extra)
    total = np.zeros(x.shape[:2] + out_hw, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            total += xp[(slice(None), slice(None)) + _window_slices(i, j, out_hw, stride)]
    return total / _avg_divisors(x.shape[2:], out_hw, kernel_size, stride, padding, count_include_pad,
                                 divisor_override, x.dtype)


def avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    n, c, h, w = input_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    out_hw, (eh, ew) = _pool_geometry((h, w), kernel_size, stride, padding, (1, 1), ceil_mode)
    share = dout / _avg_divisors((h, w), out_hw, kernel_size, stride, padding, count_include_pad,
                                 divisor_override, dout.dtype)
    dxp = np.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[(slice(None), slice(None)) + _window_slices(i, j, out_hw, stride)] += share
    return np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])


def _adaptive_windows(size, out):
    """[start, end) of each of torch's adaptive windows along one axis."""
    i = np.arange(out, dtype=np.int64)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def adaptive_avg_pool2d(x, output_size):
    # Separable: sum each window's rows (for every column), then each window's columns, both in
    # increasing position order (the compiled kernel's order); then divide by the window size.
    (oh, ow), (h, w) = output_size, x.shape[2:]
    (h0, h1), (w0, w1) = _adaptive_windows(h, oh), _adaptive_windows(w, ow)
    row_sums = np.zeros(x.shape[:2] + (oh, w), dtype=x.dtype)
    for i in range(oh):
        for r in range(h0[i], h1[i]):
            row_sums[:, :, i] += x[:, :, r]
    total = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for j in range(ow):
        for q in range(w0[j], w1[j]):
            total[:, :, :, j] += row_sums[:, :, :, q]
    return total / ((h1 - h0)[:, None] * (w1 - w0)[None, :]).astype(x.dtype)


def adaptive_avg_pool2d_backward(dout, input_shape):
    n, c, h, w = input_shape
    oh, ow = dout.shape[2:]
    (h0, h1), (w0, w1) = _adaptive_windows(h, oh), _adaptive_windows(w, ow)
    share = dout / ((h1 - h0)[:, None] * (w1 - w0)[None, :]).astype(dout.dtype)
    # Spread each share over its window's columns, then each such row over the window's rows.
    spread = np.zeros((n, c, oh, w), dtype=dout.dtype)
    for j in range(ow):
        spread[:, :, :, w0[j]:w1[j]] += share[:, :, :, j, None]
    dx = np.zeros(input_shape, dtype=dout.dtype)
    for i in range(oh):
        dx[:, :, h0[i]:h1[i]] += spread[:, :, i, None]
    return dx


# ----------------------------------------------------------------------------------------------
# Channels-last (NHWC): the NCHW kernels above on transposed copies, results transposed back
# ----------------------------------------------------------------------------------------------
# This is the oracle, so it takes the obviously right way, not a fast one: API.md defines the
# channels-last functions as "results equal the NCHW ones transposed", and that is what these
# compute. Images are (N, H, W, C), convolution weights (KH, KW, C // groups, F) ("HWIO"), max
# pooling's indices h*W + w (unchanged by the transposition: they index a plane). The compiled
# backend computes them natively (fastconv._ext._conv_nhwc, _depthwise_nhwc, and the NHWC
# kernels of _max_pool and _avg_pool).

def _to_nchw(a):
    """(N, H, W, C) -> a C-contiguous (N, C, H, W) copy."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _to_nhwc(a):
    """(N, C, H, W) -> a C-contiguous (N, H, W, C) copy."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _weights_oihw(w):
    """(KH, KW, C // groups, F) -> (F, C // groups, KH, KW)."""
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def _weights_hwio(w):
    """(F, C // groups, KH, KW) -> (KH, KW, C // groups, F)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _shape_nchw(shape):
    n, h, w, c = shape
    return (n, c, h, w)


def conv2d_nhwc(x, w, b, stride, padding, dilation, groups):
    return _to_nhwc(conv2d(_to_nchw(x), _weights_oihw(w), b, stride, padding, dilation, groups))


def conv2d_backward_nhwc(dout, x, w, stride, padding, dilation, groups):
    dx, dw, db = conv2d_backward(_to_nchw(dout), _to_nchw(x), _weights_oihw(w), stride, padding,
                                      dilation, groups)
    return _to_nhwc(dx), _weights_hwio(dw), db


def max_pool2d_nhwc(x, kernel_size, stride, padding, dilation, ceil_mode):
    y, indices = max_pool2d(_to_nchw(x), kernel_size, stride, padding, dilation, ceil_mode)
    return _to_nhwc(y), _to_nhwc(indices)


def max_pool2d_backward_nhwc(dout, indices, input_shape):
    return _to_nhwc(max_pool2d_backward(_to_nchw(dout), _to_nchw(indices), _shape_nchw(input_shape)))


def avg_pool2d_nhwc(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _to_nhwc(avg_pool2d(_to_nchw(x), kernel_size, stride, padding, ceil_mode, count_include_pad,
                                    divisor_override))


def avg_pool2d_backward_nhwc(dout, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                             divisor_override):
    return _to_nhwc(avg_pool2d_backward(_to_nchw(dout), _shape_nchw(input_shape), kernel_size, stride,
                                             padding, ceil_mode, count_include_pad, divisor_override))


# ----------------------------------------------------------------------------------------------
# fastconv.nn's dense layers and optimizers (not public functions: the layers check their
# arguments). The optimizer updates compute per element in the parameter's dtype with every
# constant rounded to it once, in the compiled kernels' order (fastconv._ext._optim).
# ----------------------------------------------------------------------------------------------

def linear(x, w, b):
    y = x @ w.T
    if b is not None:
        y += b
    return y


def linear_backward(dout, x, w, grad_w, grad_b):
    grad_w += dout.T @ x
    if grad_b is not None:
        grad_b += dout.sum(axis=0)
    return dout @ w


def sgd_update(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov, first):
    t = param.dtype.type
    g = grad + t(weight_decay) * param if weight_decay else grad
    if momentum_buffer is not None:
        if first:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= t(momentum)
            momentum_buffer += g
        g = g + t(momentum) * momentum_buffer if nesterov else momentum_buffer
    param -= t(lr) * g


def adam_update(param, grad, exp_avg, exp_avg_sq, step_size, beta1, beta2, bias_correction2_sqrt,
                eps, weight_decay):
    t = param.dtype.type
    g = grad + t(weight_decay) * param if weight_decay else grad
    exp_avg *= t(beta1)
    exp_avg += t(1.0 - beta1) * g
    exp_avg_sq *= t(beta2)
    exp_avg_sq += t(1.0 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq) / t(bias_correction2_sqrt) + t(eps)
    param -= t(step_size) * (exp_avg / denom)


# ----------------------------------------------------------------------------------------------
# The drop-ins' patch matrix and affine layer (fastconv.dlfs, fastconv.cs231n)
# ----------------------------------------------------------------------------------------------

def im2row(x, kernel_size, stride, padding):
    """The book's layout: each image's im2col matrix transposed, images stacked."""
    cols = im2col(x, kernel_size, stride, padding, (1, 1))
    return np.ascontiguousarray(cols.transpose(0, 2, 1)).reshape(-1, cols.shape[1])


def row2im(rows, input_shape, kernel_size, stride, padding):
    n, length = input_shape[0], rows.shape[1]
    cols = rows.reshape(n, -1, length).transpose(0, 2, 1)
    return col2im(np.ascontiguousarray(cols), input_shape, kernel_size, stride, padding, (1, 1))


def affine(x, w, b):
    y = x @ w
    if b is not None:
        y += b
    return y


def affine_backward(dout, x, w):
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)
