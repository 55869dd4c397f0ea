"""Compiled 2-D pooling kernels: max pooling (value + argmax) and average pooling, forward and
backward, for float32 and float64.

The Python layer has already checked every argument: inputs are C-contiguous arrays of the
computation dtype, hyper-parameters are valid (h, w) pairs, padding <= kernel // 2 (so every
window holds at least one real element) and max-pool indices lie inside their input plane.
The kernels below therefore never raise and never check bounds.

Determinism: every output element is computed by exactly one thread, in a fixed order that does
not depend on the thread count, so results are bitwise identical for any `num_threads`.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.string cimport memset

import numpy as np

# Below this many input elements a call runs on one thread: starting a parallel region costs
# a few microseconds, more than pooling a few tens of kilobytes.
cdef Py_ssize_t SERIAL_ELEMENTS = 1 << 15


cdef inline int _threads_for(Py_ssize_t work_items, Py_ssize_t elements, int num_threads) noexcept nogil:
    """Threads worth starting: 1 for small problems, never more than the work items."""
    if elements < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    if num_threads > work_items:
        return <int>work_items
    return num_threads


# ----------------------------------------------------------------------------------------------
# Max pooling, forward
# ----------------------------------------------------------------------------------------------
# Selection rule (PyTorch's and fastconv.reference's): the first real element of the window, in
# row-major order, starts the maximum; a later element takes over when it is strictly greater
# or is NaN. So ties keep the earliest position and NaN wins. Padding is never looked at.

cdef inline void _max_row_generic(
    const floating* plane, floating* y, int64_t* idx,
    Py_ssize_t W, Py_ssize_t OW, Py_ssize_t hs, Py_ssize_t he,
    Py_ssize_t KW, Py_ssize_t SW, Py_ssize_t PW,
) noexcept nogil:
    """One output row for any window: rows [hs, he) of the plane, columns clipped per window."""
    cdef Py_ssize_t ow, h, w, ws, we, best_pos
    cdef floating best, v
    for ow in range(OW):
        ws = ow * SW - PW
        we = ws + KW
        if ws < 0:
            ws = 0
        if we > W:
            we = W
        best = plane[hs * W + ws]
        best_pos = hs * W + ws
        for h in range(hs, he):
            for w in range(ws, we):
                v = plane[h * W + w]
                if v > best or v != v:
                    best = v
                    best_pos = h * W + w
        y[ow] = best
        idx[ow] = best_pos


cdef inline void _max_row_2x2s2(
    const floating* plane, floating* y, int64_t* idx, Py_ssize_t W, Py_ssize_t OW, Py_ssize_t h0,
) noexcept nogil:
    """One output row of a 2x2, stride 2, unpadded pool: rows h0 and h0 + 1, no clipping.

    Written without data-dependent branches (selects only) so the compiler can vectorise it.
    """
    cdef const floating* r0 = plane + h0 * W
    cdef const floating* r1 = r0 + W
    cdef int64_t base = h0 * W
    cdef Py_ssize_t ow
    cdef floating a, b, c, d, best
    cdef int64_t pos
    for ow in range(OW):
        a = r0[2 * ow]
        b = r0[2 * ow + 1]
        c = r1[2 * ow]
        d = r1[2 * ow + 1]
        best = a
        pos = 0
        if b > best or b != b:
            best = b
            pos = 1
        if c > best or c != c:
            best = c
            pos = W
        if d > best or d != d:
            best = d
            pos = W + 1
        y[ow] = best
        idx[ow] = base + 2 * ow + pos


cdef void _max_pool_forward(
    const floating* x, floating* y, int64_t* idx,
    Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
    int num_threads,
) noexcept nogil:
    # Work item = one output row of one plane: enough items to balance two threads even for a
    # single image, and every output row is independent.
    cdef Py_ssize_t rows = NC * OH
    cdef Py_ssize_t r, p, oh, hs, he
    cdef bint tile2x2 = KH == 2 and KW == 2 and SH == 2 and SW == 2 and PH == 0 and PW == 0
    cdef int nt = _threads_for(rows, NC * H * W, num_threads)
    for r in prange(rows, schedule='static', num_threads=nt):
        p = r // OH
        oh = r - p * OH
        if tile2x2:
            _max_row_2x2s2(x + p * H * W, y + r * OW, idx + r * OW, W, OW, 2 * oh)
        else:
            hs = oh * SH - PH
            he = hs + KH
            if hs < 0:
                hs = 0
            if he > H:
                he = H
            _max_row_generic(x + p * H * W, y + r * OW, idx + r * OW, W, OW, hs, he, KW, SW, PW)


# ----------------------------------------------------------------------------------------------
# Max pooling, backward
# ----------------------------------------------------------------------------------------------

cdef void _max_pool_backward(
    const floating* dout, const int64_t* idx, floating* dx,
    Py_ssize_t NC, Py_ssize_t plane_in, Py_ssize_t plane_out, int num_threads,
) noexcept nogil:
    # One thread owns a whole (n, c) plane: overlapping windows may share a maximum, and the
    # scatter-add into that position must not race. The plane is zeroed by its owner (first
    # touch happens on the thread that writes it) and stays in cache for the scatter.
    cdef Py_ssize_t p, k
    cdef floating* d
    cdef const floating* g
    cdef const int64_t* ix
    cdef int nt = _threads_for(NC, NC * plane_in, num_threads)
    for p in prange(NC, schedule='static', num_threads=nt):
        d = dx + p * plane_in
        g = dout + p * plane_out
        ix = idx + p * plane_out
        memset(d, 0, plane_in * sizeof(floating))
        for k in range(plane_out):
            d[ix[k]] += g[k]


# ----------------------------------------------------------------------------------------------
# Average pooling (count_include_pad=True: the divisor is always KH*KW)
# ----------------------------------------------------------------------------------------------

cdef void _avg_pool_forward(
    const floating* x, floating* y,
    Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
    int num_threads,
) noexcept nogil:
    cdef Py_ssize_t rows = NC * OH
    cdef Py_ssize_t r, p, oh, ow, hs, he, ws, we, h, w
    cdef const floating* plane
    cdef floating total
    # Divide (not multiply by a reciprocal) so the result matches sum / (KH*KW) exactly.
    cdef floating divisor = <floating>(KH * KW)
    cdef int nt = _threads_for(rows, NC * H * W, num_threads)
    for r in prange(rows, schedule='static', num_threads=nt):
        p = r // OH
        oh = r - p * OH
        plane = x + p * H * W
        hs = oh * SH - PH
        he = hs + KH
        if hs < 0:
            hs = 0
        if he > H:
            he = H
        for ow in range(OW):
            ws = ow * SW - PW
            we = ws + KW
            if ws < 0:
                ws = 0
            if we > W:
                we = W
            # Padded zeros add nothing: summing only the real elements, in row-major order
            # from +0.0, gives the same bits as summing the padded window.
            total = 0
            for h in range(hs, he):
                for w in range(ws, we):
                    total = total + plane[h * W + w]
            y[r * OW + ow] = total / divisor


cdef void _avg_pool_backward(
    const floating* dout, floating* dx,
    Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
    int num_threads,
) noexcept nogil:
    # Scatter each output's share over its window, one thread per plane (windows may overlap).
    cdef Py_ssize_t p, oh, ow, hs, he, ws, we, h, w
    cdef floating* d
    cdef const floating* g
    cdef floating share
    cdef floating divisor = <floating>(KH * KW)
    cdef int nt = _threads_for(NC, NC * H * W, num_threads)
    for p in prange(NC, schedule='static', num_threads=nt):
        d = dx + p * H * W
        g = dout + p * OH * OW
        memset(d, 0, H * W * sizeof(floating))
        for oh in range(OH):
            hs = oh * SH - PH
            he = hs + KH
            if hs < 0:
                hs = 0
            if he > H:
                he = H
            for ow in range(OW):
                ws = ow * SW - PW
                we = ws + KW
                if ws < 0:
                    ws = 0
                if we > W:
                    we = W
                share = g[oh * OW + ow] / divisor
                for h in range(hs, he):
                    for w in range(ws, we):
                        d[h * W + w] += share


# ----------------------------------------------------------------------------------------------
# Python entry points: allocate the outputs, call the kernel without the GIL.
# ----------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p):
    return (size + 2 * p - k) // s + 1


def max_pool2d(const floating[:, :, :, ::1] x, kernel_size, stride, padding, int num_threads):
    """Max pooling of x (N, C, H, W) -> (y, idx); idx (int64) is h*W + w in the input plane."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t SH = stride[0], SW = stride[1], PH = padding[0], PW = padding[1]
    cdef Py_ssize_t OH = _out_size(H, KH, SH, PH), OW = _out_size(W, KW, SW, PW)
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((N, C, OH, OW), dtype=dtype)
    idx_arr = np.empty((N, C, OH, OW), dtype=np.int64)
    cdef floating[:, :, :, ::1] y = y_arr
    cdef int64_t[:, :, :, ::1] idx = idx_arr
    if y_arr.size:
        with nogil:
            _max_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &idx[0, 0, 0, 0], N * C, H, W, OH, OW,
                              KH, KW, SH, SW, PH, PW, num_threads)
    return y_arr, idx_arr


def max_pool2d_backward(const floating[:, :, :, ::1] dout, const int64_t[:, :, :, ::1] idx,
                        input_shape, int num_threads):
    """Scatter-add dout at idx into zeros of input_shape (indices already validated)."""
    cdef Py_ssize_t N = input_shape[0], C = input_shape[1], H = input_shape[2], W = input_shape[3]
    dtype = np.float32 if floating is float else np.float64
    # np.empty, not np.zeros: each plane is zeroed by the thread that owns it.
    dx_arr = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_arr
    if dout.shape[2] * dout.shape[3] == 0:  # no windows: nothing to scatter
        dx_arr.fill(0)
    elif dx_arr.size:
        with nogil:
            _max_pool_backward(&dout[0, 0, 0, 0], &idx[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, H * W,
                               dout.shape[2] * dout.shape[3], num_threads)
    return dx_arr


def avg_pool2d(const floating[:, :, :, ::1] x, kernel_size, stride, padding, int num_threads):
    """Average pooling of x (N, C, H, W), padded zeros counted in the divisor."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t SH = stride[0], SW = stride[1], PH = padding[0], PW = padding[1]
    cdef Py_ssize_t OH = _out_size(H, KH, SH, PH), OW = _out_size(W, KW, SW, PW)
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((N, C, OH, OW), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_arr
    if y_arr.size:
        with nogil:
            _avg_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], N * C, H, W, OH, OW,
                              KH, KW, SH, SW, PH, PW, num_threads)
    return y_arr


def avg_pool2d_backward(const floating[:, :, :, ::1] dout, input_shape, kernel_size, stride, padding,
                        int num_threads):
    """Gradient of avg_pool2d: each output's dout / (KH*KW) added over its window."""
    cdef Py_ssize_t N = input_shape[0], C = input_shape[1], H = input_shape[2], W = input_shape[3]
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t SH = stride[0], SW = stride[1], PH = padding[0], PW = padding[1]
    cdef Py_ssize_t OH = dout.shape[2], OW = dout.shape[3]
    dtype = np.float32 if floating is float else np.float64
    dx_arr = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_arr
    if dx_arr.size:
        with nogil:
            _avg_pool_backward(&dout[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, H, W, OH, OW,
                               KH, KW, SH, SW, PH, PW, num_threads)
    return dx_arr
