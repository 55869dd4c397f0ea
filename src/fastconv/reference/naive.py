"""Loop implementations that read like the mathematics: the oracle for tests on tiny shapes.

Every function has the kernel signature of ``fastconv.reference._vectorised`` (see
``fastconv._backend``): arguments are already checked, arrays are C-contiguous float32 or
float64, hyper-parameters are ``(h, w)`` tuples of ints (a convolution's padding is a
``(before, after)`` pair per axis). Nothing here is fast and nothing is
clever: each output element is written as the sum (or maximum) that defines it, with explicit
loops over the batch, channels, output positions and kernel offsets.

The arrays are turned into nested lists of Python floats first so that every sum is
accumulated in double precision whatever the input dtype (NumPy float32 scalars would round
after every addition); the result is rounded once, to the input dtype, when it is stored.
These functions are meant for shapes with at most a few thousand multiply-adds.
"""

import math

import numpy as np


def _out_size(size, k, s, p, d):
    """The output length of API.md: (size + 2p - d(k-1) - 1) // s + 1."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _inside(h, w, height, width):
    """Whether (h, w) is a real input position (not in the zero or -inf padding)."""
    return 0 <= h < height and 0 <= w < width


# ----------------------------------------------------------------------------------------------
# Convolution with groups G (F filters and C channels in G blocks; filter f belongs to group
# g = f // (F/G) and reads only the channels g*C/G .. (g+1)*C/G - 1, c_local = c - g*C/G):
#   y[n, f, oh, ow] = b[f] + sum_{c_local, i, j} w[f, c_local, i, j] * x[n, c, oh*sh - pt + i*dh,
#                                                                          ow*sw - pl + j*dw]
# (terms whose input position lies in the padding are zero; padding is ((pt, pb), (pl, pr)),
# and OH = (H + pt + pb - dh*(KH-1) - 1) // sh + 1)
# ----------------------------------------------------------------------------------------------

def conv2d(x, w, b, stride, padding, dilation, groups):
    """2-D cross-correlation with zero padding and groups (torch.nn.functional.conv2d)."""
    N, C, H, W = x.shape
    F, CG, KH, KW = w.shape
    FG = F // groups
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = stride, padding, dilation
    OH, OW = _out_size(H + pt + pb, KH, sh, 0, dh), _out_size(W + pl + pr, KW, sw, 0, dw)
    xs, ws = x.tolist(), w.tolist()
    bs = None if b is None else b.tolist()
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            first_channel = f // FG * CG
            for oh in range(OH):
                for ow in range(OW):
                    total = 0.0
                    for c in range(CG):
                        for i in range(KH):
                            for j in range(KW):
                                h, v = oh * sh - pt + i * dh, ow * sw - pl + j * dw
                                if _inside(h, v, H, W):
                                    total += ws[f][c][i][j] * xs[n][first_channel + c][h][v]
                    if bs is not None:
                        total += bs[f]
                    y[n, f, oh, ow] = total
    return y


def conv2d_backward(dout, x, w, stride, padding, dilation, groups):
    """Gradients (dx, dw, db) of conv2d for upstream gradient dout, from the definition.

    db[f]                = sum_{n, oh, ow} dout[n, f, oh, ow]
    dw[f, c_local, i, j] = sum_{n, oh, ow} dout[n, f, oh, ow] * x[n, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw]
    dx[n, c, h, v]       = sum_{f in c's group, i, j} dout[n, f, oh, ow] * w[f, c_local, i, j]
                           over the (i, j) for which oh = (h + pt - i*dh) / sh and
                           ow = (v + pl - j*dw) / sw are integers inside the output.
    """
    N, C, H, W = x.shape
    F, CG, KH, KW = w.shape
    FG = F // groups
    _, _, OH, OW = dout.shape
    (sh, sw), ((pt, _), (pl, _)), (dh, dw) = stride, padding, dilation
    gs, xs, ws = dout.tolist(), x.tolist(), w.tolist()

    db = np.empty(F, dtype=dout.dtype)
    for f in range(F):
        db[f] = sum(gs[n][f][oh][ow] for n in range(N) for oh in range(OH) for ow in range(OW))

    dw_ = np.empty(w.shape, dtype=dout.dtype)
    for f in range(F):
        first_channel = f // FG * CG
        for c in range(CG):
            for i in range(KH):
                for j in range(KW):
                    total = 0.0
                    for n in range(N):
                        for oh in range(OH):
                            for ow in range(OW):
                                h, v = oh * sh - pt + i * dh, ow * sw - pl + j * dw
                                if _inside(h, v, H, W):
                                    total += gs[n][f][oh][ow] * xs[n][first_channel + c][h][v]
                    dw_[f, c, i, j] = total

    dx = np.empty(x.shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            group, c_local = divmod(c, CG)
            for h in range(H):
                for v in range(W):
                    total = 0.0
                    for i in range(KH):
                        oh, rem_h = divmod(h + pt - i * dh, sh)
                        if rem_h or not 0 <= oh < OH:
                            continue
                        for j in range(KW):
                            ow, rem_w = divmod(v + pl - j * dw, sw)
                            if rem_w or not 0 <= ow < OW:
                                continue
                            for f in range(group * FG, (group + 1) * FG):
                                total += gs[n][f][oh][ow] * ws[f][c_local][i][j]
                    dx[n, c, h, v] = total
    return dx, dw_, db


# ----------------------------------------------------------------------------------------------
# Transposed convolution with groups G (w is (C, F/G, KH, KW); input channel c belongs to
# group g = c // (C/G) and writes only the outputs g*F/G .. (g+1)*F/G - 1, f = g*F/G + f_local):
#   y[n, f, h*sh - ph + i*dh, v*sw - pw + j*dw] += x[n, c, h, v] * w[c, f_local, i, j]
# over every input position and kernel offset, starting from b[f]; contributions that land
# outside the (OH, OW) output are dropped, OH = (H - 1)*sh - 2*ph + dh*(KH - 1) + oph + 1.
# ----------------------------------------------------------------------------------------------

def _transposed_targets(h, v, shape, stride, padding, dilation, out_hw):
    """((i, j, oh, ow), ...): the output positions that input (h, v) reaches with offset (i, j)."""
    KH, KW = shape
    (sh, sw), (ph, pw), (dh, dw), (OH, OW) = stride, padding, dilation, out_hw
    for i in range(KH):
        for j in range(KW):
            oh, ow = h * sh - ph + i * dh, v * sw - pw + j * dw
            if 0 <= oh < OH and 0 <= ow < OW:
                yield i, j, oh, ow


def conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """2-D transposed convolution (torch.nn.functional.conv_transpose2d), from the definition."""
    N, C, H, W = x.shape
    _, FG, KH, KW = w.shape
    CG, F = C // groups, FG * groups
    OH, OW = ((size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, k, s, p, op, d in
              zip((H, W), (KH, KW), stride, padding, output_padding, dilation))
    xs, ws = x.tolist(), w.tolist()
    total = [[[[0.0 if b is None else float(b[f])] * OW for _ in range(OH)] for f in range(F)]
             for _ in range(N)]
    for n in range(N):
        for c in range(C):
            first_filter = c // CG * FG
            for h in range(H):
                for v in range(W):
                    for i, j, oh, ow in _transposed_targets(h, v, (KH, KW), stride, padding, dilation, (OH, OW)):
                        for f in range(FG):
                            total[n][first_filter + f][oh][ow] += xs[n][c][h][v] * ws[c][f][i][j]
    return np.array(total, dtype=x.dtype).reshape(N, F, OH, OW)


def conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups, dilation):
    """Gradients (dx, dw, db) of conv_transpose2d, from the definition:

    db[f]                = sum_{n, oh, ow} dout[n, f, oh, ow]
    dx[n, c, h, v]       = sum_{f_local, (i, j, oh, ow)} dout[n, f, oh, ow] * w[c, f_local, i, j]
    dw[c, f_local, i, j] = sum_{n, (h, v) reaching (oh, ow) with (i, j)} x[n, c, h, v] * dout[n, f, oh, ow]
    """
    N, C, H, W = x.shape
    _, FG, KH, KW = w.shape
    CG = C // groups
    _, F, OH, OW = dout.shape
    gs, xs, ws = dout.tolist(), x.tolist(), w.tolist()
    db = np.array([sum(gs[n][f][oh][ow] for n in range(N) for oh in range(OH) for ow in range(OW))
                   for f in range(F)], dtype=dout.dtype)
    dx = np.empty(x.shape, dtype=dout.dtype)
    dw_ = [[[[0.0] * KW for _ in range(KH)] for _ in range(FG)] for _ in range(C)]
    for n in range(N):
        for c in range(C):
            first_filter = c // CG * FG
            for h in range(H):
                for v in range(W):
                    total = 0.0
                    for i, j, oh, ow in _transposed_targets(h, v, (KH, KW), stride, padding, dilation, (OH, OW)):
                        for f in range(FG):
                            total += gs[n][first_filter + f][oh][ow] * ws[c][f][i][j]
                            dw_[c][f][i][j] += xs[n][c][h][v] * gs[n][first_filter + f][oh][ow]
                    dx[n, c, h, v] = total
    return dx, np.array(dw_, dtype=dout.dtype).reshape(w.shape), db


# ----------------------------------------------------------------------------------------------
# im2col / col2im:  cols[n, c*KH*KW + i*KW + j, oh*OW + ow] = x[n, c, oh*sh - ph + i*dh,
#                                                                ow*sw - pw + j*dw]   (0 in padding)
# ----------------------------------------------------------------------------------------------

def im2col(x, kernel_size, stride, padding, dilation):
    """Unfold every window into a column (torch.nn.functional.unfold layout)."""
    N, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _out_size(H, KH, sh, ph, dh), _out_size(W, KW, sw, pw, dw)
    xs = x.tolist()
    cols = np.zeros((N, C * KH * KW, OH * OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    row = c * KH * KW + i * KW + j
                    for oh in range(OH):
                        for ow in range(OW):
                            h, v = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                            if _inside(h, v, H, W):
                                cols[n, row, oh * OW + ow] = xs[n][c][h][v]
    return cols


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """Fold columns back into an image (torch.nn.functional.fold): the adjoint of im2col.

    x[n, c, h, v] is the sum of every column entry that im2col would have read from (h, v);
    entries that im2col would have read from the padding are dropped.
    """
    N, C, H, W = input_shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _out_size(H, KH, sh, ph, dh), _out_size(W, KW, sw, pw, dw)
    cs = cols.tolist()
    total = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    row = c * KH * KW + i * KW + j
                    for oh in range(OH):
                        for ow in range(OW):
                            h, v = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                            if _inside(h, v, H, W):
                                total[n][c][h][v] += cs[n][row][oh * OW + ow]
    return np.array(total, dtype=cols.dtype).reshape(N, C, H, W)


# ----------------------------------------------------------------------------------------------
# Pooling (window of output (oh, ow) = rows oh*sh - ph + i*dh, columns ow*sw - pw + j*dw)
# ----------------------------------------------------------------------------------------------

def _pool_out_size(size, k, s, p, d, ceil_mode):
    """torch's pooling output length: (size + 2p - d(k-1) - 1) / s + 1 rounded down, or up with
    ceil_mode, where a last window starting in the right padding is dropped."""
    room = size + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return room // s + 1
    out = -(-room // s) + 1  # rounded up
    if (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling with the flat argmax h*W + v in the unpadded plane, exactly as PyTorch:

    the padding is -inf and never selected; the window is scanned in row-major order and the
    first real element starts it; a later element replaces the current maximum when it is
    strictly larger or is NaN. So ties keep the first maximum, a NaN beats every number, and
    among several NaNs the last one wins (checked against torch 2.x: the window
    [1, nan, 3, nan] gives index 3).
    """
    N, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _pool_out_size(H, KH, sh, ph, dh, ceil_mode), _pool_out_size(W, KW, sw, pw, dw, ceil_mode)
    xs = x.tolist()
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, best_index = -math.inf, None
                    for i in range(KH):
                        for j in range(KW):
                            h, v = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                            if not _inside(h, v, H, W):
                                continue
                            value = xs[n][c][h][v]
                            if best_index is None or value > best or math.isnan(value):
                                best, best_index = value, h * W + v
                    # Validation refuses windows without a real element.
                    y[n, c, oh, ow] = best
                    indices[n, c, oh, ow] = best_index
    return y, indices


def max_pool2d_backward(dout, indices, input_shape):
    """dx[n, c] = sum over outputs (oh, ow) of dout[n, c, oh, ow] placed at indices[n, c, oh, ow]."""
    N, C, H, W = input_shape
    _, _, OH, OW = dout.shape
    gs, ks = dout.tolist(), indices.tolist()
    total = [[[0.0] * (H * W) for _ in range(C)] for _ in range(N)]
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    total[n][c][ks[n][c][oh][ow]] += gs[n][c][oh][ow]
    return np.array(total, dtype=dout.dtype).reshape(N, C, H, W)


def _avg_divisor(oh, ow, H, W, kernel_size, stride, padding, count_include_pad, divisor_override):
    """The divisor of output (oh, ow): divisor_override, else the number of window positions
    inside the padded input (count_include_pad; ceil_mode's last windows may reach past the
    padding) or inside the input."""
    if divisor_override is not None:
        return divisor_override
    (KH, KW), (sh, sw), (ph, pw) = kernel_size, stride, padding
    lo_h, lo_w = (-ph, -pw) if count_include_pad else (0, 0)
    hi_h, hi_w = (H + ph, W + pw) if count_include_pad else (H, W)
    count = 0
    for i in range(KH):
        for j in range(KW):
            h, v = oh * sh - ph + i, ow * sw - pw + j
            count += lo_h <= h < hi_h and lo_w <= v < hi_w
    return count


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Sum of each window's input elements (padding adds zeros) over its divisor (_avg_divisor)."""
    N, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = _pool_out_size(H, KH, sh, ph, 1, ceil_mode), _pool_out_size(W, KW, sw, pw, 1, ceil_mode)
    xs = x.tolist()
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    total = 0.0
                    for i in range(KH):
                        for j in range(KW):
                            h, v = oh * sh - ph + i, ow * sw - pw + j
                            if _inside(h, v, H, W):
                                total += xs[n][c][h][v]
                    y[n, c, oh, ow] = total / _avg_divisor(oh, ow, H, W, kernel_size, stride, padding,
                                                           count_include_pad, divisor_override)
    return y


def avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    """dx[n, c, h, v] = sum over the windows (oh, ow) that contain (h, v) of dout / divisor."""
    N, C, H, W = input_shape
    _, _, OH, OW = dout.shape
    (KH, KW), (sh, sw), (ph, pw) = kernel_size, stride, padding
    gs = dout.tolist()
    divisors = [[_avg_divisor(oh, ow, H, W, kernel_size, stride, padding, count_include_pad, divisor_override)
                 for ow in range(OW)] for oh in range(OH)]
    dx = np.empty(input_shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for v in range(W):
                    total = 0.0
                    for oh in range(OH):
                        for ow in range(OW):
                            i, j = h - (oh * sh - ph), v - (ow * sw - pw)
                            if 0 <= i < KH and 0 <= j < KW:
                                total += gs[n][c][oh][ow] / divisors[oh][ow]
                    dx[n, c, h, v] = total
    return dx


def _adaptive_window(i, out, size):
    """torch's adaptive window of output i: input positions floor(i*size/out) to
    ceil((i+1)*size/out) - 1, as a range."""
    return range((i * size) // out, -(-((i + 1) * size) // out))


def adaptive_avg_pool2d(x, output_size):
    """Mean of each adaptive window (rows and columns as _adaptive_window)."""
    N, C, H, W = x.shape
    OH, OW = output_size
    xs = x.tolist()
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    rows, cols = _adaptive_window(oh, OH, H), _adaptive_window(ow, OW, W)
                    total = sum(xs[n][c][h][v] for h in rows for v in cols)
                    y[n, c, oh, ow] = total / (len(rows) * len(cols))
    return y


def adaptive_avg_pool2d_backward(dout, input_shape):
    """dx[n, c, h, v] = sum over the adaptive windows that contain (h, v) of dout / window size."""
    N, C, H, W = input_shape
    _, _, OH, OW = dout.shape
    gs = dout.tolist()
    total = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    rows, cols = _adaptive_window(oh, OH, H), _adaptive_window(ow, OW, W)
                    for h in rows:
                        for v in cols:
                            total[n][c][h][v] += gs[n][c][oh][ow] / (len(rows) * len(cols))
    return np.array(total, dtype=dout.dtype).reshape(input_shape)
# ----------------------------------------------------------------------------------------------
# Batch normalisation over (outer, C, inner) operands: channel c holds x[n, c, i] for every n, i.
#   y = (x - mean_c) * invstd_c * w_c + b_c
# ----------------------------------------------------------------------------------------------

def _channel_values(xs, c):
    return [v for plane in xs for v in plane[c]]


def batch_norm_statistics(x):
    """Per-channel mean and biased variance (float64), from the definitions."""
    xs = x.tolist()
    mean, var = [], []
    for c in range(x.shape[1]):
        values = _channel_values(xs, c)
        m = math.fsum(values) / len(values)
        mean.append(m)
        var.append(math.fsum((v - m) ** 2 for v in values) / len(values))
    return np.array(mean), np.array(var)


def batch_norm_forward(x, weight, bias, mean, invstd):
    outer, C, inner = x.shape
    xs = x.tolist()
    y = np.empty(x.shape, dtype=x.dtype)
    for n in range(outer):
        for c in range(C):
            w = 1.0 if weight is None else float(weight[c])
            b = 0.0 if bias is None else float(bias[c])
            for i in range(inner):
                y[n, c, i] = (xs[n][c][i] - float(mean[c])) * float(invstd[c]) * w + b
    return y


def batch_norm_backward(dout, x, weight, mean, invstd, training):
    """Gradients from the Jacobian of y_j = w (x_j - mean) s + b within a channel of m values:

    in training mean and s = 1/sqrt(var + eps) are the batch's, so
    dy_j/dx_i = w s (delta_ij - 1/m - xhat_i xhat_j / m) with xhat = (x - mean) s;
    in evaluation dy_j/dx_i = w s delta_ij. dx_i = sum_j dout_j dy_j/dx_i,
    dweight = sum_j dout_j xhat_j, dbias = sum_j dout_j.
    """
    outer, C, inner = x.shape
    gs, xs = dout.tolist(), x.tolist()
    dx = np.empty(x.shape, dtype=x.dtype)
    dweight = np.empty(C, dtype=x.dtype)
    dbias = np.empty(C, dtype=x.dtype)
    for c in range(C):
        s, w = float(invstd[c]), 1.0 if weight is None else float(weight[c])
        g = _channel_values(gs, c)
        xhat = [(v - float(mean[c])) * s for v in _channel_values(xs, c)]
        m = len(g)
        dweight[c] = math.fsum(gj * hj for gj, hj in zip(g, xhat))
        dbias[c] = math.fsum(g)
        for i in range(m):
            if training:
                total = math.fsum(g[j] * w * s * ((i == j) - 1 / m - xhat[i] * xhat[j] / m) for j in range(m))
            else:
                total = g[i] * w * s
            dx[i // inner, c, i % inner] = total
    return dx, dweight, dbias


# ----------------------------------------------------------------------------------------------
# Elementwise: ReLU, Dropout's masking
# ----------------------------------------------------------------------------------------------

def relu(x, out=None):
    """y = x unless x < 0 (then +0): NaN and -0.0 pass through, as torch.relu."""
    y = np.array([0.0 if v < 0 else v for v in x.tolist()], dtype=x.dtype)
    if out is None:
        return y
    out[...] = y
    return out


def relu_backward(dout, y, out=None):
    """dout where y > 0 (NaN is not), else 0."""
    dx = np.array([g if v > 0 else 0.0 for g, v in zip(dout.tolist(), y.tolist())], dtype=dout.dtype)
    if out is None:
        return dx
    out[...] = dx
    return out


def dropout(x, u, p, scale, out=None):
    """keep = u >= p; y = x * scale where kept, x * 0 elsewhere (so a dropped NaN stays NaN)."""
    keep = np.array([v >= p for v in u.tolist()], dtype=bool)
    factor = x.dtype.type(scale)
    y = np.array([v * (factor if k else x.dtype.type(0)) for v, k in zip(x, keep)], dtype=x.dtype)
    if out is None:
        return y, keep
    out[0][...], out[1][...] = y, keep
    return out


def dropout_backward(dout, keep, scale):
    factor = dout.dtype.type(scale)
    return np.array([g * (factor if k else dout.dtype.type(0)) for g, k in zip(dout, keep)], dtype=dout.dtype)


# ----------------------------------------------------------------------------------------------
# Softmax cross-entropy:  loss = -(1/N) sum_n sum_k t[n, k] log softmax(z[n])[k]
# ----------------------------------------------------------------------------------------------

def softmax_cross_entropy(logits, target):
    """The loss and d loss / d logits = (softmax(z) * sum_k t - t) / N, row by row; labels are
    one-hot targets. Each row's log-sum-exp is taken around its maximum."""
    N, K = logits.shape
    zs = logits.tolist()
    if target.ndim == 1:
        ts = [[1.0 if k == label else 0.0 for k in range(K)] for label in target.tolist()]
    else:
        ts = target.tolist()
    losses = []
    dlogits = np.empty((N, K), dtype=logits.dtype)
    for n in range(N):
        top = max(zs[n])
        log_z = top + math.log(math.fsum(math.exp(v - top) for v in zs[n]))
        losses.append(-math.fsum(t * (v - log_z) for t, v in zip(ts[n], zs[n])))
        t_sum = math.fsum(ts[n])
        for k in range(K):
            dlogits[n, k] = (math.exp(zs[n][k] - log_z) * t_sum - ts[n][k]) / N
    return math.fsum(losses) / N, dlogits
