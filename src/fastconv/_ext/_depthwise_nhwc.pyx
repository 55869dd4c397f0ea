"""Direct channels-last depthwise convolution (groups == C, one input channel per group).

x is (N, H, W, C), w (KH, KW, 1, F) with F = C*m (m = F // C, the channel multiplier:
filter f = c*m + k reads input channel c), y and dout (N, OH, OW, F). A depthwise layer does
KH*KW multiply-adds per output, far too little per GEMM call to pay for im2col and BLAS;
channels are contiguous in NHWC, so every loop here runs over one pixel's channels and the
compiler vectorises it, with no im2col:

    forward   one task per output row (n, oh): the row starts from the bias, then every kernel
              offset (i, j), in row-major order, adds x's pixel times w[i, j] to each output
              pixel of the row.
    dx        one task per input row (n, ih), which gathers dout * w from every (kernel offset,
              output pixel) that reads it, offset by offset: no two tasks write one element.
    dw, db    partials over parts of the batch's output rows, summed in part order.

The parts are fixed by the shape, so results are bitwise identical for every thread count.
Padding is read as a row of zeros, not skipped: a non-finite weight (forward) or output
gradient (weight gradient) meets it as inf*0 = NaN, as in the im2col + GEMM kernels and the
NumPy reference, which multiply the padding too; the data gradient never reads padding.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._im2col cimport valid_range

# Parts of the output rows for the weight and bias gradients (one partial each).
cdef index_t MAX_PARTS = 8
# Below this many multiply-adds a call runs on one thread: starting threads costs more.
cdef double SERIAL_MACS = 2.0e5


ctypedef struct Plan:
    Window2D g            # g.channels = C (the input's channels)
    index_t n_images      # N
    index_t filters       # F = C * multiplier
    index_t multiplier    # m
    index_t kk            # KH*KW
    int threads


cdef Plan make_plan(tuple x_shape, tuple w_shape, stride, padding, dilation, int num_threads) except *:
    """x (N, H, W, C), w (KH, KW, 1, F); padding ((top, bottom), (left, right))."""
    cdef Plan p
    cdef Window2D* g = &p.g
    (top, bottom), (left, right) = padding
    p.n_images, g.height, g.width, g.channels = x_shape
    g.kernel_h, g.kernel_w, _, p.filters = w_shape
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = top, left
    g.dilation_h, g.dilation_w = dilation
    g.out_h = (g.height + top + bottom - g.dilation_h * (g.kernel_h - 1) - 1) // g.stride_h + 1
    g.out_w = (g.width + left + right - g.dilation_w * (g.kernel_w - 1) - 1) // g.stride_w + 1
    p.multiplier = p.filters // g.channels
    p.kk = g.kernel_h * g.kernel_w
    cdef double macs = <double>p.n_images * g.out_h * g.out_w * p.filters * p.kk
    p.threads = num_threads if num_threads >= 1 and macs >= SERIAL_MACS else 1
    return p


cdef inline void multiply_add(floating* acc, const floating* a, const floating* b, index_t m,
                              index_t channels) noexcept nogil:
    """acc[c*m + k] += a[c] * b[c*m + k] for every channel c and k < m."""
    cdef index_t c, k
    if m == 1:
        for c in range(channels):
            acc[c] = acc[c] + a[c] * b[c]
    else:
        for c in range(channels):
            for k in range(m):
                acc[c * m + k] = acc[c * m + k] + a[c] * b[c * m + k]


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

cdef void forward_row(const Plan* p, index_t row, const floating* x, const floating* w,
                      const floating* b, floating* y, const floating* zeros) noexcept nogil:
    """Output row `row` = (n, oh) of y: OW pixels of F values."""
    cdef const Window2D* g = &p.g
    cdef index_t n = row // g.out_h, oh = row - (row // g.out_h) * g.out_h
    cdef index_t F = p.filters, C = g.channels, OW = g.out_w, W = g.width
    cdef index_t i, j, ow, f, ih, iw
    cdef floating* out = y + row * OW * F
    cdef const floating* x_row
    cdef const floating* src
    cdef const floating* taps
    cdef bint inside_h
    for ow in range(OW):
        for f in range(F):
            out[ow * F + f] = 0 if b == NULL else b[f]
    for i in range(g.kernel_h):
        ih = oh * g.stride_h - g.pad_h + i * g.dilation_h
        inside_h = 0 <= ih < g.height
        x_row = x + (n * g.height + ih) * W * C if inside_h else zeros
        for j in range(g.kernel_w):
            taps = w + (i * g.kernel_w + j) * F
            for ow in range(OW):
                iw = ow * g.stride_w - g.pad_w + j * g.dilation_w
                src = x_row + iw * C if inside_h and 0 <= iw < W else zeros
                multiply_add(out + ow * F, src, taps, p.multiplier, C)


cdef void forward(const Plan* p, const floating* x, const floating* w, const floating* b,
                  floating* y, const floating* zeros) noexcept nogil:
    cdef index_t rows = p.n_images * p.g.out_h, r
    cdef int threads = p.threads if p.threads < rows else <int>rows
    if threads <= 1:
        for r in range(rows):
            forward_row(p, r, x, w, b, y, zeros)
    else:
        for r in prange(rows, schedule='dynamic', num_threads=threads):
            forward_row(p, r, x, w, b, y, zeros)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef void data_row(const Plan* p, index_t row, const floating* dout, const floating* w,
                   floating* dx) noexcept nogil:
    """Input row `row` = (n, ih) of dx: every (kernel offset (i, j), output pixel) whose tap
    lands in it, offset by offset (each offset reaches an input pixel at most once)."""
    cdef const Window2D* g = &p.g
    cdef index_t n = row // g.height, ih = row - (row // g.height) * g.height
    cdef index_t F = p.filters, C = g.channels, m = p.multiplier, OW = g.out_w
    cdef index_t i, j, t, oh, ow, lo, hi, c, k
    cdef floating* dst = dx + row * g.width * C
    cdef floating* o
    cdef const floating* d_row
    cdef const floating* d
    cdef const floating* taps
    memset(dst, 0, g.width * C * sizeof(floating))
    for i in range(g.kernel_h):
        t = ih + g.pad_h - i * g.dilation_h    # = oh * stride_h for the output row oh reading ih
        if t < 0 or t % g.stride_h != 0 or t // g.stride_h >= g.out_h:
            continue
        oh = t // g.stride_h
        d_row = dout + (n * g.out_h + oh) * OW * F
        for j in range(g.kernel_w):
            taps = w + (i * g.kernel_w + j) * F
            valid_range(g.width, OW, g.stride_w, j * g.dilation_w - g.pad_w, &lo, &hi)
            for ow in range(lo, hi):
                o = dst + (ow * g.stride_w - g.pad_w + j * g.dilation_w) * C
                d = d_row + ow * F
                if m == 1:
                    for c in range(C):
                        o[c] = o[c] + d[c] * taps[c]
                else:
                    for c in range(C):
                        for k in range(m):
                            o[c] = o[c] + d[c * m + k] * taps[c * m + k]


cdef void weight_part(const Plan* p, index_t part, index_t n_parts, const floating* dout,
                      const floating* x, floating* acc, const floating* zeros) noexcept nogil:
    """acc = (dw (KH*KW*F), db (F)) of output rows part*R/n_parts .. (R = N*OH), pixel by
    pixel in row-major order."""
    cdef const Window2D* g = &p.g
    cdef index_t rows = p.n_images * g.out_h
    cdef index_t F = p.filters, C = g.channels, W = g.width, OW = g.out_w
    cdef index_t row, n, oh, ow, i, j, ih, iw, f
    cdef floating* db = acc + p.kk * F
    cdef const floating* d
    cdef const floating* x_row
    cdef const floating* src
    cdef bint inside_h
    memset(acc, 0, (p.kk + 1) * F * sizeof(floating))
    for row in range(part * rows // n_parts, (part + 1) * rows // n_parts):
        n = row // g.out_h
        oh = row - n * g.out_h
        for ow in range(OW):
            d = dout + (row * OW + ow) * F
            for f in range(F):
                db[f] = db[f] + d[f]
            for i in range(g.kernel_h):
                ih = oh * g.stride_h - g.pad_h + i * g.dilation_h
                inside_h = 0 <= ih < g.height
                x_row = x + (n * g.height + ih) * W * C if inside_h else zeros
                for j in range(g.kernel_w):
                    iw = ow * g.stride_w - g.pad_w + j * g.dilation_w
                    src = x_row + iw * C if inside_h and 0 <= iw < W else zeros
                    multiply_add(acc + (i * g.kernel_w + j) * F, src, d, p.multiplier, C)


cdef void backward(const Plan* p, const floating* dout, const floating* x, const floating* w,
                   floating* dx, floating* dw, floating* db, floating* parts, index_t n_parts,
                   const floating* zeros) noexcept nogil:
    cdef index_t in_rows = p.n_images * p.g.height, r, k, e
    cdef index_t size = (p.kk + 1) * p.filters, dw_size = p.kk * p.filters
    cdef int threads = p.threads if p.threads < in_rows else <int>in_rows
    if threads <= 1:
        for r in range(in_rows):
            data_row(p, r, dout, w, dx)
    else:
        for r in prange(in_rows, schedule='dynamic', num_threads=threads):
            data_row(p, r, dout, w, dx)
    threads = p.threads if p.threads < n_parts else <int>n_parts
    if threads <= 1:
        for k in range(n_parts):
            weight_part(p, k, n_parts, dout, x, parts + k * size, zeros)
    else:
        for k in prange(n_parts, schedule='dynamic', num_threads=threads):
            weight_part(p, k, n_parts, dout, x, parts + k * size, zeros)
    # The partials in part order.
    for e in range(dw_size):
        dw[e] = parts[e]
    for e in range(p.filters):
        db[e] = parts[dw_size + e]
    for k in range(1, n_parts):
        for e in range(dw_size):
            dw[e] = dw[e] + parts[k * size + e]
        for e in range(p.filters):
            db[e] = db[e] + parts[k * size + dw_size + e]


# ----------------------------------------------------------------------------------------------
# Entry points (arguments checked by fastconv._validation: C-contiguous, non-empty batch,
# w.shape[2] == 1 and F a multiple of C)
# ----------------------------------------------------------------------------------------------

cdef inline tuple shape4(const floating[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


cdef inline const floating* optional(const floating[::1] b):
    """The data of a bias that may be None (then NULL)."""
    if b is None:
        return NULL
    return &b[0]


def depthwise_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                      const floating[::1] b, stride, padding, dilation, int num_threads):
    """y (N, OH, OW, F) = conv2d(x, w, b, groups=C) for x (N, H, W, C), w (KH, KW, 1, F)."""
    cdef Plan p = make_plan(shape4(x), shape4(w), stride, padding, dilation, num_threads)
    dtype = np.float32 if floating is float else np.float64
    y_array = np.empty((p.n_images, p.g.out_h, p.g.out_w, p.filters), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_array
    cdef floating[::1] zeros = np.zeros(p.g.channels, dtype=dtype)
    cdef const floating* bias = optional(b)
    with nogil:
        forward(&p, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0], &zeros[0])
    return y_array


def depthwise_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                       const floating[:, :, :, ::1] w, stride, padding, dilation, int num_threads):
    """(dx, dw, db) of depthwise_forward for upstream gradient dout (N, OH, OW, F)."""
    cdef Plan p = make_plan(shape4(x), shape4(w), stride, padding, dilation, num_threads)
    dtype = np.float32 if floating is float else np.float64
    # Parts fixed by the shape alone (never by the thread count).
    cdef index_t n_parts = min(MAX_PARTS, p.n_images * p.g.out_h)
    dx_array = np.empty(shape4(x), dtype=dtype)
    dw_array = np.empty(shape4(w), dtype=dtype)
    db_array = np.empty(p.filters, dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_array
    cdef floating[:, :, :, ::1] dw = dw_array
    cdef floating[::1] db = db_array
    cdef floating[::1] parts = np.empty(n_parts * (p.kk + 1) * p.filters, dtype=dtype)
    cdef floating[::1] zeros = np.zeros(p.g.channels, dtype=dtype)
    with nogil:
        backward(&p, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0],
                 &dw[0, 0, 0, 0], &db[0], &parts[0], n_parts, &zeros[0])
    return dx_array, dw_array, db_array
