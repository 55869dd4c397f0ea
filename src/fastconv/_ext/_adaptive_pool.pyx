"""Compiled adaptive 2-D average pooling (torch's windows), forward and backward, for float32
and float64.

Output (i, j) averages rows floor(i*H/OH) to ceil((i+1)*H/OH) - 1 and columns floor(j*W/OW) to
ceil((j+1)*W/OW) - 1. The Python layer has checked the arguments, including that these products
fit in 64 bits; every window lies inside the plane and holds at least one element.

The work is separable, which keeps every inner loop a unit-stride sweep over a row (vectorised,
and fast for global average pooling, where a window is the whole plane):
* forward, per output row i: column sums of the window's rows, then each output's sum of its
  columns, divided by the window size;
* backward, per plane and output row i: each output's share spread over its columns, then that
  row added into each of the window's rows.
Both sum in increasing position order, as fastconv.reference does. Every output element (every
dx plane) is computed by one thread in a fixed order: results are bitwise identical for any
`num_threads`.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memset

import numpy as np

from fastconv._ext._typedefs cimport index_t
from fastconv._ext._openmp cimport omp_get_thread_num
from fastconv._ext._pool_common cimport threads_for


cdef struct Windows:
    index_t size, out     # input size and output size along one axis
    const index_t* start  # output o averages input positions [start[o], end[o])
    const index_t* end


cdef Windows _windows(index_t[::1] bounds, index_t size, index_t out):
    """torch's adaptive windows along one axis, stored in `bounds` (2 * out entries)."""
    cdef Windows w
    cdef index_t o
    for o in range(out):
        bounds[o] = (o * size) // out
        bounds[out + o] = ((o + 1) * size + out - 1) // out
    w.size, w.out = size, out
    w.start, w.end = &bounds[0], &bounds[out]
    return w


cdef void _forward_row(const floating* plane, floating* out, floating* column_sums, index_t oh,
                       const Windows* rows, const Windows* cols) noexcept nogil:
    cdef index_t W = cols.size, h, w, ow
    cdef index_t h0 = rows.start[oh], h1 = rows.end[oh]
    cdef const floating* src
    cdef floating total
    for w in range(W):
        column_sums[w] = 0
    for h in range(h0, h1):
        src = plane + h * W
        for w in range(W):
            column_sums[w] = column_sums[w] + src[w]
    for ow in range(cols.out):
        total = 0
        for w in range(cols.start[ow], cols.end[ow]):
            total = total + column_sums[w]
        out[ow] = total / <floating>((h1 - h0) * (cols.end[ow] - cols.start[ow]))


cdef void _backward_plane(const floating* dout, floating* dx, floating* spread,
                          const Windows* rows, const Windows* cols) noexcept nogil:
    cdef index_t W = cols.size, oh, ow, h, w, kh
    cdef floating share
    cdef floating* dst
    memset(dx, 0, rows.size * W * sizeof(floating))
    for oh in range(rows.out):
        kh = rows.end[oh] - rows.start[oh]
        for w in range(W):
            spread[w] = 0
        for ow in range(cols.out):
            share = dout[oh * cols.out + ow] / <floating>(kh * (cols.end[ow] - cols.start[ow]))
            for w in range(cols.start[ow], cols.end[ow]):
                spread[w] = spread[w] + share
        for h in range(rows.start[oh], rows.end[oh]):
            dst = dx + h * W
            for w in range(W):
                dst[w] = dst[w] + spread[w]


cdef void _adaptive_forward(const floating* x, floating* y, floating* scratch, index_t planes,
                            const Windows* rows, const Windows* cols, int threads) noexcept nogil:
    # Work item = one output row of one plane; each thread sums columns into its own W entries.
    cdef index_t plane = rows.size * cols.size, items = planes * rows.out, r, p
    cdef floating* column_sums = NULL  # (initialised: OpenMP copies it into each thread)
    if threads == 1:
        for r in range(items):
            p = r // rows.out
            _forward_row(x + p * plane, y + r * cols.out, scratch, r - p * rows.out, rows, cols)
        return
    with parallel(num_threads=threads):
        column_sums = scratch + omp_get_thread_num() * cols.size
        for r in prange(items, schedule='static'):
            p = r // rows.out
            _forward_row(x + p * plane, y + r * cols.out, column_sums, r - p * rows.out, rows, cols)


cdef void _adaptive_backward(const floating* dout, floating* dx, floating* scratch, index_t planes,
                             const Windows* rows, const Windows* cols, int threads) noexcept nogil:
    # One thread per plane: windows overlap when OH does not divide H (or OW, W).
    cdef index_t plane = rows.size * cols.size, out_plane = rows.out * cols.out, p
    cdef floating* spread = NULL  # (initialised: OpenMP copies it into each thread)
    if threads == 1:
        for p in range(planes):
            _backward_plane(dout + p * out_plane, dx + p * plane, scratch, rows, cols)
        return
    with parallel(num_threads=threads):
        spread = scratch + omp_get_thread_num() * cols.size
        for p in prange(planes, schedule='static'):
            _backward_plane(dout + p * out_plane, dx + p * plane, spread, rows, cols)


# ----------------------------------------------------------------------------------------------
# Python entry points: allocate the outputs, call the kernel without the GIL.
# ----------------------------------------------------------------------------------------------

def adaptive_avg_pool2d(const floating[:, :, :, ::1] x, output_size, int num_threads):
    """Adaptive average pooling of x (N, C, H, W) to output_size (OH, OW)."""
    cdef index_t planes = x.shape[0] * x.shape[1], OH = output_size[0], OW = output_size[1]
    cdef index_t[::1] bounds = np.empty(2 * (OH + OW), dtype=np.intp)
    cdef Windows rows = _windows(bounds[:2 * OH], x.shape[2], OH)
    cdef Windows cols = _windows(bounds[2 * OH:], x.shape[3], OW)
    cdef int threads = threads_for(planes * OH, planes * x.shape[2] * x.shape[3], num_threads)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] scratch = np.empty(threads * x.shape[3], dtype=dtype)
    y_arr = np.empty((x.shape[0], x.shape[1], OH, OW), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_arr
    if y_arr.size:
        with nogil:
            _adaptive_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &scratch[0], planes, &rows, &cols, threads)
    return y_arr


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] dout, input_shape, int num_threads):
    """Gradient of adaptive_avg_pool2d; the output size is dout's (OH, OW)."""
    cdef index_t N = input_shape[0], C = input_shape[1], H = input_shape[2], W = input_shape[3]
    cdef index_t planes = N * C, OH = dout.shape[2], OW = dout.shape[3]
    cdef index_t[::1] bounds = np.empty(2 * (OH + OW), dtype=np.intp)
    cdef Windows rows = _windows(bounds[:2 * OH], H, OH)
    cdef Windows cols = _windows(bounds[2 * OH:], W, OW)
    cdef int threads = threads_for(planes, planes * H * W, num_threads)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] scratch = np.empty(threads * W, dtype=dtype)
    dx_arr = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_arr
    if dx_arr.size:
        with nogil:
            _adaptive_backward(&dout[0, 0, 0, 0], &dx[0, 0, 0, 0], &scratch[0], planes, &rows, &cols,
                               threads)
    return dx_arr
