"""Group normalisation kernels (layer normalisation is its one-group case), float32 and float64.

x is a C-contiguous (N, G, M) array: row (n, g) is group g of image n, M = (C/G)*inner elements
made of the C/G contiguous planes of `inner` elements of channels g*C/G ... (g+1)*C/G - 1
(NCHW group norm: inner = H*W; layer norm over (N, D) features: G = 1, inner = 1, a channel
per feature). Each row is normalised by its own mean and biased variance; channel c is then
scaled by weight[c] and shifted by bias[c] (None: ones, zeros).

Statistics are float64: per row two passes (the mean, then the squared deviations from it)
with the fixed-order lane sums of fastconv._ext._lane_sums. The elementwise passes use the mean
and invstd rounded to the data's dtype, as fastconv.batch_norm does.

Determinism: a row is always reduced by one thread. The backward's per-channel sums (dweight,
dbias) run over the images: images are split into tasks by the shape only, each task keeps
per-channel partials, and the partials are added in task order, so every result is bitwise
identical for every thread count. Tasks are handed out dynamically.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

from fastconv._ext._lane_sums cimport gradient_sums, lane_sum, squared_deviations

import numpy as np

# Below this many elements a call runs on one thread: starting threads costs more.
cdef Py_ssize_t SERIAL_ELEMENTS = 1 << 15
# Elements of one backward task (a task is never smaller, unless the array is).
cdef Py_ssize_t TASK_ELEMENTS = 1 << 15
# At most this many backward tasks: each holds 2*C partial sums.
cdef Py_ssize_t MAX_TASKS = 64
# Planes shorter than this are summed element by element (the lane sums' set-up costs more).
cdef Py_ssize_t LANE_MIN = 8


cdef inline int _threads_for(Py_ssize_t tasks, Py_ssize_t elements, int num_threads) noexcept nogil:
    if elements < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    return <int>tasks if tasks < num_threads else num_threads


cdef inline Py_ssize_t _rows_per_chunk(Py_ssize_t row_length) noexcept nogil:
    """Rows handed to a thread at a time: about 16K elements."""
    return (1 << 14) // row_length if (1 << 14) // row_length > 1 else 1


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

cdef void _normalise_row(const floating* x, floating* y, Py_ssize_t M, Py_ssize_t inner,
                         Py_ssize_t first_channel, const floating* weight, const floating* bias,
                         double eps, floating* mean_out, floating* invstd_out) noexcept nogil:
    cdef double m = lane_sum(x, M) / M
    cdef double var = squared_deviations(x, M, m) / M
    cdef floating mean = <floating>m
    cdef floating invstd = <floating>(1.0 / sqrt(var + eps))
    cdef Py_ssize_t planes = M // inner, p, i, c
    cdef floating k, b
    cdef const floating* src
    cdef floating* dst
    mean_out[0] = mean
    invstd_out[0] = invstd
    if inner == 1:
        for i in range(M):
            k = invstd if weight == NULL else invstd * weight[first_channel + i]
            b = 0 if bias == NULL else bias[first_channel + i]
            y[i] = (x[i] - mean) * k + b
        return
    for p in range(planes):
        c = first_channel + p
        k = invstd if weight == NULL else invstd * weight[c]
        b = 0 if bias == NULL else bias[c]
        src = x + p * inner
        dst = y + p * inner
        for i in range(inner):
            dst[i] = (src[i] - mean) * k + b


def group_norm_forward(const floating[:, :, ::1] x, weight, bias, Py_ssize_t inner, double eps,
                       int num_threads):
    """(y, mean, invstd) of x (N, G, M): y like x, mean and invstd (N, G) in x's dtype.

    weight and bias: (C,) arrays of x's dtype (C = G*M/inner) or None. N >= 1.
    """
    cdef Py_ssize_t N = x.shape[0], G = x.shape[1], M = x.shape[2], rows = N * G, r
    cdef Py_ssize_t channels_per_group = M // inner
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((N, G, M), dtype=dtype)
    mean_arr = np.empty((N, G), dtype=dtype)
    invstd_arr = np.empty((N, G), dtype=dtype)
    cdef floating[:, :, ::1] y = y_arr
    cdef floating[:, ::1] mean = mean_arr
    cdef floating[:, ::1] invstd = invstd_arr
    cdef const floating[::1] w_view
    cdef const floating[::1] b_view
    cdef const floating* w_ptr = NULL
    cdef const floating* b_ptr = NULL
    if weight is not None:
        w_view = weight
        w_ptr = &w_view[0]
    if bias is not None:
        b_view = bias
        b_ptr = &b_view[0]
    cdef const floating* x_ptr = &x[0, 0, 0]
    cdef floating* y_ptr = &y[0, 0, 0]
    cdef floating* mean_ptr = &mean[0, 0]
    cdef floating* invstd_ptr = &invstd[0, 0]
    cdef int nt = _threads_for(rows, rows * M, num_threads)
    with nogil:
        for r in prange(rows, schedule='dynamic', chunksize=_rows_per_chunk(M), num_threads=nt):
            _normalise_row(x_ptr + r * M, y_ptr + r * M, M, inner, (r % G) * channels_per_group,
                           w_ptr, b_ptr, eps, mean_ptr + r, invstd_ptr + r)
    return y_arr, mean_arr, invstd_arr


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef void _row_gradient(const floating* dy, const floating* x, floating* dx, Py_ssize_t M,
                        Py_ssize_t inner, Py_ssize_t first_channel, const floating* weight,
                        floating mean, floating invstd, double* sum_dy, double* sum_dy_xhat) noexcept nogil:
    """dx of one row, and its planes' sum(dy) and sum(dy * xhat) added to the task's per-channel
    partials sum_dy[c] and sum_dy_xhat[c].

    With g = dy * w and xhat = (x - mean) * invstd:
    dx = (g - mean(g) - (x - mean) * invstd * mean(g * xhat)) * invstd.
    """
    cdef Py_ssize_t planes = M // inner, p, i, c
    cdef double s0, s1, w, row_g = 0, row_gx = 0
    cdef double m = mean
    cdef floating k, mean_g, projection, wc
    cdef const floating* g_src
    cdef const floating* x_src
    cdef floating* dst
    for p in range(planes):
        c = first_channel + p
        g_src = dy + p * inner
        x_src = x + p * inner
        s0 = 0
        s1 = 0
        if inner >= LANE_MIN:
            gradient_sums(g_src, x_src, inner, m, &s0, &s1)
        else:
            for i in range(inner):
                s0 += g_src[i]
                s1 += g_src[i] * (<double>x_src[i] - m)
        w = 1.0 if weight == NULL else weight[c]
        row_g += w * s0
        row_gx += w * s1
        sum_dy[c] += s0
        sum_dy_xhat[c] += s1 * invstd
    mean_g = <floating>(row_g / M)
    projection = <floating>(<double>invstd * invstd * row_gx / M)
    for p in range(planes):
        c = first_channel + p
        wc = 1 if weight == NULL else weight[c]
        g_src = dy + p * inner
        x_src = x + p * inner
        dst = dx + p * inner
        for i in range(inner):
            dst[i] = (g_src[i] * wc - mean_g - (x_src[i] - mean) * projection) * invstd


def group_norm_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] x, weight,
                        const floating[:, ::1] mean, const floating[:, ::1] invstd, Py_ssize_t inner,
                        int num_threads):
    """(dx, dweight, dbias) of group_norm_forward: dx (N, G, M), dweight and dbias (C,).

    dweight[c] = sum(dout * xhat) and dbias[c] = sum(dout) over the images and c's plane.
    """
    cdef Py_ssize_t N = x.shape[0], G = x.shape[1], M = x.shape[2], row_size = G * M
    cdef Py_ssize_t channels_per_group = M // inner, C = G * channels_per_group
    cdef Py_ssize_t tasks = N * row_size // TASK_ELEMENTS, t, n, g, c, r
    if tasks > MAX_TASKS:
        tasks = MAX_TASKS
    if tasks > N:
        tasks = N
    if tasks < 1:
        tasks = 1
    dtype = np.float32 if floating is float else np.float64
    dx_arr = np.empty((N, G, M), dtype=dtype)
    cdef floating[:, :, ::1] dx = dx_arr
    partials_arr = np.zeros((tasks, 2, C), dtype=np.float64)
    cdef double[:, :, ::1] partials = partials_arr
    cdef const floating[::1] w_view
    cdef const floating* w_ptr = NULL
    if weight is not None:
        w_view = weight
        w_ptr = &w_view[0]
    cdef const floating* dy_ptr = &dout[0, 0, 0]
    cdef const floating* x_ptr = &x[0, 0, 0]
    cdef floating* dx_ptr = &dx[0, 0, 0]
    cdef const floating* mean_ptr = &mean[0, 0]
    cdef const floating* invstd_ptr = &invstd[0, 0]
    cdef double* partial_ptr = &partials[0, 0, 0]
    cdef int nt = _threads_for(tasks, N * row_size, num_threads)
    with nogil:
        for t in prange(tasks, schedule='dynamic', num_threads=nt):
            for n in range(N * t // tasks, N * (t + 1) // tasks):
                for g in range(G):
                    r = n * G + g
                    _row_gradient(dy_ptr + r * M, x_ptr + r * M, dx_ptr + r * M, M, inner,
                                  g * channels_per_group, w_ptr, mean_ptr[r], invstd_ptr[r],
                                  partial_ptr + t * 2 * C, partial_ptr + t * 2 * C + C)
    dweight_arr = np.empty(C, dtype=dtype)
    dbias_arr = np.empty(C, dtype=dtype)
    cdef floating[::1] dweight = dweight_arr
    cdef floating[::1] dbias = dbias_arr
    cdef double sum_dy, sum_dy_xhat
    for c in range(C):
        sum_dy = 0
        sum_dy_xhat = 0
        for t in range(tasks):
            sum_dy += partials[t, 0, c]
            sum_dy_xhat += partials[t, 1, c]
        dweight[c] = <floating>sum_dy_xhat
        dbias[c] = <floating>sum_dy
    return dx_arr, dweight_arr, dbias_arr
