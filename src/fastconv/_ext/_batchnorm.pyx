"""Batch normalisation kernels: per-channel batch statistics, the normalising affine map, and
its backward, for float32 and float64.

Every kernel sees x as a C-contiguous (outer, C, inner) array: NCHW input is (N, C, H*W),
channels-last input (and 2-D input) is (N*H*W, C, 1). So there are two memory patterns:

* planar (inner > 1): each channel is `outer` contiguous segments of `inner` elements;
* channels-last (inner == 1): rows of C channels; a channel is a column.

Determinism: the per-channel reductions (mean and variance, and the backward's two sums) are
split into tasks decided by the shape only, each a contiguous stretch of memory: a range of
(image, channel) planes (planar) or a block of rows (channels-last). Each task keeps its own
partial result per channel, and the partials are combined serially in task order, so results
are bitwise identical for every thread count.
Tasks (and the rows of the elementwise passes) are handed out dynamically: which thread runs
one does not change what it computes, and a preempted thread does not hold up a fixed share.
Sums accumulate in float64 (also for float32 data): along a contiguous run in eight
interleaved lanes added up in a fixed order (fastconv._ext._lane_sums), across a
channels-last row block one channel per lane.

Variance: each piece of at most PIECE elements (a piece of a segment, or a block of rows) is
reduced in two passes, its mean first and then the squared deviations from it, both from
cache; pieces and partials are merged with Chan's formula. That is the two-pass algorithm's
accuracy (no cancellation when the mean is large compared with the spread) for one pass
over memory.
"""

from cython cimport floating
from cython.parallel cimport prange

from fastconv._ext._lane_sums cimport gradient_sums, lane_sum, squared_deviations

import numpy as np

# Below this many elements a call runs on one thread: starting threads costs more.
cdef Py_ssize_t SERIAL_ELEMENTS = 1 << 15
# Elements of one task of a reduction (a task is never smaller, unless the array is).
cdef Py_ssize_t TASK_ELEMENTS = 1 << 15
# At most this many tasks per reduction: each holds a few C-sized partials.
cdef Py_ssize_t MAX_TASKS = 64
# Elements reduced from cache in two passes before merging (16 KB of float64).
cdef Py_ssize_t PIECE = 2048
# Elements of work an elementwise pass hands to a thread at a time.
cdef Py_ssize_t CHUNK = 1 << 14


cdef inline int _threads_for(Py_ssize_t tasks, Py_ssize_t elements, int num_threads) noexcept nogil:
    """Threads worth starting: 1 for small problems, never more than the tasks."""
    if elements < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    if num_threads > tasks:
        return <int>tasks
    return num_threads


cdef inline void _merge(double* count, double* mean, double* m2,
                        double n_b, double mean_b, double m2_b) noexcept nogil:
    """Chan et al.: fold a part with n_b elements, mean mean_b and M2 m2_b into (count, mean, m2)."""
    cdef double total = count[0] + n_b
    cdef double delta = mean_b - mean[0]
    mean[0] += delta * (n_b / total)
    m2[0] += m2_b + delta * delta * (count[0] * n_b / total)
    count[0] = total


# ----------------------------------------------------------------------------------------------
# How a reduction is split into tasks (from the shape only)
# ----------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _tasks(Py_ssize_t items, Py_ssize_t item_elements) noexcept nogil:
    """Tasks for a reduction over `items` rows or planes of item_elements each: at least
    TASK_ELEMENTS elements per task, at most MAX_TASKS tasks and one per item."""
    cdef Py_ssize_t tasks = items * item_elements // TASK_ELEMENTS
    if tasks > MAX_TASKS:
        tasks = MAX_TASKS
    if tasks > items:
        tasks = items
    return tasks if tasks > 1 else 1


cdef inline Py_ssize_t _rows_per_chunk(Py_ssize_t row_length) noexcept nogil:
    """Rows (or planes) an elementwise pass hands out at a time: about CHUNK elements."""
    return CHUNK // row_length if CHUNK // row_length > 1 else 1


cdef inline Py_ssize_t _split(Py_ssize_t total, Py_ssize_t parts, Py_ssize_t k) noexcept nogil:
    """Start of part k of total items cut into `parts` near-equal contiguous parts."""
    return total * k // parts


# ----------------------------------------------------------------------------------------------
# Statistics: batch mean and biased variance per channel
# ----------------------------------------------------------------------------------------------

cdef void _planar_statistics(const floating* x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                             double* mean, double* var, double* partials, int num_threads) noexcept nogil:
    # Task t: planes [p0, p1) of the outer * C planes (plane p is channel p % C), piece by piece.
    # partials: tasks x 3 x C doubles (count, mean, M2 per channel).
    cdef Py_ssize_t planes = outer * C
    cdef Py_ssize_t tasks = _tasks(planes, inner)
    cdef Py_ssize_t t, p, c, piece, start, length
    cdef double piece_mean, count, mu, m2
    cdef const floating* plane
    cdef double* own
    cdef int nt = _threads_for(tasks, planes * inner, num_threads)
    for t in prange(tasks, schedule='dynamic', num_threads=nt):
        own = partials + t * 3 * C
        for c in range(3 * C):
            own[c] = 0
        for p in range(_split(planes, tasks, t), _split(planes, tasks, t + 1)):
            c = p % C
            plane = x + p * inner
            for piece in range((inner + PIECE - 1) // PIECE):
                start = piece * PIECE
                length = inner - start if inner - start < PIECE else PIECE
                piece_mean = lane_sum(plane + start, length) / length
                _merge(&own[c], &own[C + c], &own[2 * C + c], <double>length, piece_mean,
                       squared_deviations(plane + start, length, piece_mean))
    for c in range(C):
        count = 0
        mu = 0
        m2 = 0
        for t in range(tasks):
            own = partials + t * 3 * C
            if own[c] > 0:  # a task may not meet every channel
                _merge(&count, &mu, &m2, own[c], own[C + c], own[2 * C + c])
        mean[c] = mu
        var[c] = m2 / count


cdef void _row_block_statistics(const floating* x, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C,
                                double* mu, double* m2, double* block_mean, double* block_m2) noexcept nogil:
    """Channels-last rows [r0, r1): per-channel mean mu and M2 m2, block of rows by block."""
    cdef Py_ssize_t rows_per_block = PIECE // C if PIECE // C > 1 else 1
    cdef Py_ssize_t r, c, block, start, stop
    cdef double count = 0, n_b, total, delta, f_mean, f_m2, d
    cdef const floating* row
    for c in range(C):
        mu[c] = 0
        m2[c] = 0
    for block in range((r1 - r0 + rows_per_block - 1) // rows_per_block):
        start = r0 + block * rows_per_block
        stop = start + rows_per_block if start + rows_per_block < r1 else r1
        n_b = stop - start
        for c in range(C):
            block_mean[c] = 0
            block_m2[c] = 0
        for r in range(start, stop):
            row = x + r * C
            for c in range(C):
                block_mean[c] += row[c]
        for c in range(C):
            block_mean[c] /= n_b
        for r in range(start, stop):
            row = x + r * C
            for c in range(C):
                d = row[c] - block_mean[c]
                block_m2[c] += d * d
        # _merge for every channel at once: the counts are the same for all of them.
        total = count + n_b
        f_mean = n_b / total
        f_m2 = count * n_b / total
        for c in range(C):
            delta = block_mean[c] - mu[c]
            mu[c] += delta * f_mean
            m2[c] += block_m2[c] + delta * delta * f_m2
        count = total


cdef void _rows_statistics(const floating* x, Py_ssize_t rows, Py_ssize_t C,
                           double* mean, double* var, double* partials, int num_threads) noexcept nogil:
    # partials: tasks x 4 x C doubles (mean, M2, and two scratch rows per task).
    cdef Py_ssize_t tasks = _tasks(rows, C)
    cdef Py_ssize_t t, c
    cdef double count, n_b
    cdef double* own
    cdef int nt = _threads_for(tasks, rows * C, num_threads)
    for t in prange(tasks, schedule='dynamic', num_threads=nt):
        own = partials + t * 4 * C
        _row_block_statistics(x, _split(rows, tasks, t), _split(rows, tasks, t + 1), C,
                              own, own + C, own + 2 * C, own + 3 * C)
    for c in range(C):
        count = 0
        mean[c] = 0
        var[c] = 0
        for t in range(tasks):
            n_b = _split(rows, tasks, t + 1) - _split(rows, tasks, t)
            _merge(&count, &mean[c], &var[c], n_b, partials[t * 4 * C + c], partials[t * 4 * C + C + c])
        var[c] /= count


def batch_norm_statistics(const floating[:, :, ::1] x, int num_threads):
    """(mean, var): float64 (C,) batch mean and biased variance of x (outer, C, inner)."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    mean_arr = np.empty(C, dtype=np.float64)
    var_arr = np.empty(C, dtype=np.float64)
    cdef double[::1] mean = mean_arr
    cdef double[::1] var = var_arr
    cdef double[::1] partials
    if x.size == 0:  # the caller never asks (an empty batch has no statistics)
        mean_arr.fill(np.nan)
        var_arr.fill(np.nan)
        return mean_arr, var_arr
    if inner == 1:
        partials = np.empty(_tasks(outer, C) * 4 * C, dtype=np.float64)
        with nogil:
            _rows_statistics(&x[0, 0, 0], outer, C, &mean[0], &var[0], &partials[0], num_threads)
    else:
        partials = np.empty(_tasks(outer * C, inner) * 3 * C, dtype=np.float64)
        with nogil:
            _planar_statistics(&x[0, 0, 0], outer, C, inner, &mean[0], &var[0], &partials[0], num_threads)
    return mean_arr, var_arr


# ----------------------------------------------------------------------------------------------
# Elementwise passes: y = (x - mean) * scale + shift, and the backward's dx
# ----------------------------------------------------------------------------------------------

cdef void _affine(const floating* x, floating* y, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                  const floating* mean, const floating* scale, const floating* shift,
                  int num_threads) noexcept nogil:
    cdef Py_ssize_t s, c, i
    cdef floating m, k, b
    cdef const floating* src
    cdef floating* dst
    cdef int nt
    if inner == 1:
        nt = _threads_for(outer, outer * C, num_threads)
        for s in prange(outer, schedule='dynamic', chunksize=_rows_per_chunk(C), num_threads=nt):
            src = x + s * C
            dst = y + s * C
            for c in range(C):
                dst[c] = (src[c] - mean[c]) * scale[c] + shift[c]
        return
    nt = _threads_for(outer * C, outer * C * inner, num_threads)
    for s in prange(outer * C, schedule='dynamic', chunksize=_rows_per_chunk(inner), num_threads=nt):
        c = s % C
        m = mean[c]
        k = scale[c]
        b = shift[c]
        src = x + s * inner
        dst = y + s * inner
        for i in range(inner):
            dst[i] = (src[i] - m) * k + b


cdef void _input_gradient(const floating* dy, const floating* x, floating* dx,
                          Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, bint training,
                          const floating* mean, const floating* mean_dy, const floating* projection,
                          const floating* scale, int num_threads) noexcept nogil:
    """Training: dx = (dy - mean_dy - (x - mean) * projection) * scale; else dx = dy * scale."""
    cdef Py_ssize_t s, c, i
    cdef floating m, a, p, k
    cdef Py_ssize_t offset
    cdef int nt
    if inner == 1:
        nt = _threads_for(outer, outer * C, num_threads)
        for s in prange(outer, schedule='dynamic', chunksize=_rows_per_chunk(C), num_threads=nt):
            offset = s * C
            if training:
                for c in range(C):
                    dx[offset + c] = (dy[offset + c] - mean_dy[c]
                                      - (x[offset + c] - mean[c]) * projection[c]) * scale[c]
            else:
                for c in range(C):
                    dx[offset + c] = dy[offset + c] * scale[c]
        return
    nt = _threads_for(outer * C, outer * C * inner, num_threads)
    for s in prange(outer * C, schedule='dynamic', chunksize=_rows_per_chunk(inner), num_threads=nt):
        c = s % C
        offset = s * inner
        k = scale[c]
        if training:
            m = mean[c]
            a = mean_dy[c]
            p = projection[c]
            for i in range(inner):
                dx[offset + i] = (dy[offset + i] - a - (x[offset + i] - m) * p) * k
        else:
            for i in range(inner):
                dx[offset + i] = dy[offset + i] * k


def batch_norm_forward(const floating[:, :, ::1] x, weight, bias, const floating[::1] mean,
                       const floating[::1] invstd, int num_threads):
    """y = (x - mean) * (invstd * weight) + bias per channel of x (outer, C, inner).

    weight and bias are (C,) arrays of x's dtype or None (ones, zeros).
    """
    dtype = np.float32 if floating is float else np.float64
    scale_arr = np.asarray(invstd) if weight is None else np.multiply(invstd, weight)
    shift_arr = np.zeros(x.shape[1], dtype=dtype) if bias is None else bias
    cdef const floating[::1] scale = scale_arr
    cdef const floating[::1] shift = shift_arr
    y_arr = np.empty((x.shape[0], x.shape[1], x.shape[2]), dtype=dtype)
    cdef floating[:, :, ::1] y = y_arr
    if y_arr.size:
        with nogil:
            _affine(&x[0, 0, 0], &y[0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
                    &mean[0], &scale[0], &shift[0], num_threads)
    return y_arr


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef void _planar_gradient_sums(const floating* dy, const floating* x, Py_ssize_t outer, Py_ssize_t C,
                                Py_ssize_t inner, const floating* mean, double* sum_dy,
                                double* sum_dy_xmu, double* partials, int num_threads) noexcept nogil:
    # Tasks as in _planar_statistics; partials: tasks x 2 x C doubles.
    cdef Py_ssize_t planes = outer * C
    cdef Py_ssize_t tasks = _tasks(planes, inner)
    cdef Py_ssize_t t, p, c
    cdef double* own
    cdef int nt = _threads_for(tasks, planes * inner, num_threads)
    for t in prange(tasks, schedule='dynamic', num_threads=nt):
        own = partials + t * 2 * C
        for c in range(2 * C):
            own[c] = 0
        for p in range(_split(planes, tasks, t), _split(planes, tasks, t + 1)):
            c = p % C
            gradient_sums(dy + p * inner, x + p * inner, inner, mean[c], &own[c], &own[C + c])
    _add_partials(partials, tasks, C, sum_dy, sum_dy_xmu)


cdef void _add_partials(const double* partials, Py_ssize_t tasks, Py_ssize_t C,
                        double* sum_dy, double* sum_dy_xmu) noexcept nogil:
    """The tasks' (2, C) partial sums, added in task order."""
    cdef Py_ssize_t t, c
    for c in range(C):
        sum_dy[c] = 0
        sum_dy_xmu[c] = 0
        for t in range(tasks):
            sum_dy[c] += partials[t * 2 * C + c]
            sum_dy_xmu[c] += partials[t * 2 * C + C + c]


cdef void _rows_gradient_sums(const floating* dy, const floating* x, Py_ssize_t rows, Py_ssize_t C,
                              const floating* mean, double* sum_dy, double* sum_dy_xmu,
                              double* partials, int num_threads) noexcept nogil:
    # partials: tasks x 2 x C doubles.
    cdef Py_ssize_t tasks = _tasks(rows, C)
    cdef Py_ssize_t t, r, c, offset
    cdef double* own
    cdef int nt = _threads_for(tasks, rows * C, num_threads)
    for t in prange(tasks, schedule='dynamic', num_threads=nt):
        own = partials + t * 2 * C
        for c in range(2 * C):
            own[c] = 0
        for r in range(_split(rows, tasks, t), _split(rows, tasks, t + 1)):
            offset = r * C
            for c in range(C):
                own[c] += dy[offset + c]
                own[C + c] += dy[offset + c] * (x[offset + c] - mean[c])
    _add_partials(partials, tasks, C, sum_dy, sum_dy_xmu)


def batch_norm_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] x, weight,
                        const floating[::1] mean, const floating[::1] invstd, bint training,
                        int num_threads):
    """(dx, dweight, dbias) of batch_norm_forward for x (outer, C, inner); weight may be None.

    With training, mean and invstd are functions of x (the batch statistics):
    dx = w * invstd * (dy - mean(dy) - (x - mean) * invstd**2 * mean(dy * (x - mean))).
    Otherwise the map is affine: dx = w * invstd * dy. In both, dbias = sum(dy) and
    dweight = invstd * sum(dy * (x - mean)) per channel.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], c
    cdef double count = <double>(outer * inner)
    dtype = np.float32 if floating is float else np.float64
    sums_arr = np.empty((2, C), dtype=np.float64)
    cdef double[:, ::1] sums = sums_arr
    cdef double[::1] partials = np.empty((_tasks(outer, C) if inner == 1 else _tasks(outer * C, inner)) * 2 * C,
                                         dtype=np.float64)
    if inner == 1:
        with nogil:
            _rows_gradient_sums(&dout[0, 0, 0], &x[0, 0, 0], outer, C, &mean[0], &sums[0, 0],
                                &sums[1, 0], &partials[0], num_threads)
    else:
        with nogil:
            _planar_gradient_sums(&dout[0, 0, 0], &x[0, 0, 0], outer, C, inner, &mean[0],
                                  &sums[0, 0], &sums[1, 0], &partials[0], num_threads)
    # Per-channel coefficients in float64, rounded once to the computation dtype.
    coefficients_arr = np.empty((5, C), dtype=dtype)  # dweight, dbias, scale, mean_dy, projection
    cdef floating[:, ::1] k = coefficients_arr
    cdef bint has_weight = weight is not None
    cdef const floating[::1] w_view = weight if has_weight else invstd  # (unread without weight)
    cdef double w, s
    for c in range(C):
        w = w_view[c] if has_weight else 1.0
        s = invstd[c]
        k[0, c] = <floating>(sums[1, c] * s)
        k[1, c] = <floating>sums[0, c]
        k[2, c] = <floating>(w * s)
        k[3, c] = <floating>(sums[0, c] / count)
        k[4, c] = <floating>(s * s * sums[1, c] / count)
    dx_arr = np.empty((outer, C, inner), dtype=dtype)
    cdef floating[:, :, ::1] dx = dx_arr
    with nogil:
        _input_gradient(&dout[0, 0, 0], &x[0, 0, 0], &dx[0, 0, 0], outer, C, inner, training,
                        &mean[0], &k[3, 0], &k[4, 0], &k[2, 0], num_threads)
    return dx_arr, coefficients_arr[0].copy(), coefficients_arr[1].copy()
